"""The deploy lock: one deploy, renewal or rollback at a time per site, on every host.

``scripts/lock.sh`` holds a ``flock`` on the server for as long as its SSH session lives: the
lock is released when we close the session's input, or when our connection drops (a killed
deploy, a lost network: sshd ends the session). No stale lock files, no PID guessing. The lock
only locks: nothing else travels through its session.

With several hosts the locks are taken one host after another in DEPLOY_HOSTS order, so two
deploys of the same group never hold one host each and wait for the other forever.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import time
from typing import Callable, Iterator

import paramiko

from .connection import Server, Servers, script_text
from .errors import LockError
from .settings import DeploySettings

TIMEOUT_EXIT = 75  # EX_TEMPFAIL, from lock.sh
HOLDER_TEXT_LIMIT = 300  # characters of the holder line a waiting deploy shows


def holder_info(now: float | None = None) -> str:
    """One printable line naming this deploy: it is written beside the lock and shown to a waiting deploy."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    user = os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or str(os.getuid())
    run = f" run={os.environ['GITHUB_RUN_ID']}" if os.environ.get("GITHUB_RUN_ID") else ""
    text = f"host={os.uname().nodename} pid={os.getpid()} user={user} since={since}{run}"
    return re.sub(r"[^\x21-\x7e ]", "?", text)[:HOLDER_TEXT_LIMIT]


class HostLock:
    """The lock on one host: ``acquire`` blocks until held (or raises), ``release`` frees it."""

    def __init__(self, server: Server, settings: DeploySettings):
        self.server, self.settings = server, settings
        self.channel: paramiko.Channel | None = None

    def acquire(self, on_wait: Callable[[str, str], None]) -> None:
        settings = self.settings
        self.channel = self.server.open_channel()
        self.channel.exec_command(shlex.join(["sh", "-c", script_text("lock"), "lock", str(settings.lock_file),
                                              holder_info(), str(settings.lock_timeout)]))
        lines = self.channel.makefile("r")
        while True:
            line = lines.readline()
            word, _, holder = line.strip().partition(" ")
            if word == "LOCKED":
                return
            if word == "WAIT":
                on_wait(str(self.server), holder or "unknown")
                continue
            status = self.channel.recv_exit_status()
            error = self.channel.makefile_stderr("r").read().strip()
            self.channel.close()
            self.channel = None
            if word == "TIMEOUT" or status == TIMEOUT_EXIT:
                raise LockError(
                    f"another deploy holds the lock on {self.server} ({holder or 'holder unknown'}); gave up after "
                    f"{settings.lock_timeout} s (DEPLOY_LOCK_TIMEOUT). Nothing was changed. Wait for it to finish, then "
                    "deploy again; a killed deploy frees the lock as soon as its SSH connection closes.")
            raise LockError(f"taking the deploy lock {settings.lock_file} failed on {self.server} (exit {status}): "
                            f"{error or line.strip() or 'no message'}. Nothing was changed. Check that the one-time "
                            f"server set-up made {settings.state_dir} and that `flock` (util-linux) is installed.")

    def release(self) -> None:
        if self.channel is not None:
            try:
                self.channel.shutdown_write()  # lock.sh's `cat` ends; the script frees the lock
                self.channel.recv_exit_status()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the connection is gone: sshd ended the session, the kernel freed the lock
            self.channel.close()
            self.channel = None


@contextlib.contextmanager
def hold(servers: Servers, settings: DeploySettings, on_wait: Callable[[str, str], None]) -> Iterator[None]:
    """Hold the lock on every host for the block; on any failure, free the ones already held."""
    locks = [HostLock(server, settings) for server in servers]
    held = []
    try:
        for lock in locks:  # one after another, in DEPLOY_HOSTS order: no deadlock between two deploys
            lock.acquire(on_wait)
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
