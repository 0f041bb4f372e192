"""Commands for the lock and the upload, over the system's OpenSSH client, on one connection.

Why not the Fabric/paramiko connection the other stages use: paramiko encrypts and frames every
packet in Python, on the deploy's own core, and needs ~0.2-0.4 s of imports; `ssh` (which rsync
uses too) does it in C, in a process of its own, so hashing, tar and zstd run on the other core
meanwhile. The first command (the lock) opens the connection as a ControlMaster; every later
command is multiplexed over it (no new handshake, ~10 ms each).

Security is the same as ``deploy.connection``: host keys only from DEPLOY_KNOWN_HOSTS
(``StrictHostKeyChecking=yes``, no global file, no user ssh_config), the key from DEPLOY_SSH_KEY
or else ssh-agent and the default keys, no password prompts (BatchMode). Scripts reach the
server as ``sh -c <quoted script>``; every value inside them is quoted by their builders.

If the deploy process is killed, its ``ssh`` children see their stdin close: the remote lock
shell and any upload end, and the lock is released (see ``deploy.lock``).
"""

from __future__ import annotations

import os
import shlex
import subprocess

from .errors import ConnectionFailed, RemoteCommandFailed
from .settings import DeploySettings

class Remote:
    """One SSH connection to the deploy user, shared by every command of one deploy."""

    def __init__(self, settings: DeploySettings):
        if not settings.known_hosts.is_file():
            raise ConnectionFailed(
                f"DEPLOY_KNOWN_HOSTS={str(settings.known_hosts)!r} does not exist. Add the server's key first, "
                f"checking its fingerprint: ssh-keyscan -p {settings.port} {settings.host} >> {settings.known_hosts}")
        self.settings = settings
        self._dir = _private_dir()
        self.where = f"{settings.user}@{settings.host}:{settings.port}"
        self._base = ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                      "-o", f"UserKnownHostsFile={settings.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                      "-o", f"ControlPath={self._dir}/cm", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
                      "-p", str(settings.port), "-l", settings.user]
        if settings.ssh_key is not None:
            self._base += ["-i", str(settings.ssh_key), "-o", "IdentitiesOnly=yes"]
        self.master: subprocess.Popen | None = None

    def _argv(self, script: str, master: bool) -> list[str]:
        mode = ["-o", "ControlMaster=yes", "-o", "ControlPersist=no"] if master else ["-o", "ControlMaster=no"]
        return self._base + mode + [self.settings.host, "--", shlex.join(["sh", "-c", script])]

    def start_master(self, script: str) -> subprocess.Popen:
        """Open the connection running ``script``; its stdin stays open until ``close``."""
        self.master = _ssh(self._argv(script, master=True))
        return self.master

    def run(self, script: str, what: str = "a command") -> bytes:
        """Run ``script`` (no input), multiplexed over the master if one is open; return its
        stdout, or raise with its stderr. (The upload and the switch run in the lock's shell.)"""
        proc = _ssh(self._argv(script, master=False))
        out, err_bytes = proc.communicate()
        err = err_bytes.decode("utf-8", "replace").strip()
        if proc.returncode == 255:
            raise ConnectionFailed(f"SSH to {self.where} failed while {what}: {err}")
        if proc.returncode != 0:
            raise RemoteCommandFailed(f"{what} failed on the server (exit {proc.returncode}): "
                                      f"{err or out.decode('utf-8', 'replace').strip()[:500]}")
        return out

    def close(self) -> None:
        """End the master's command: the lock shell sees its stdin close, finishes (its background
        clean-up included) and exits, then ssh closes the connection. Nothing waits for that here:
        the next deploy does, through the lock."""
        if self.master is not None:
            try:
                self.master.stdin.close()
            except OSError:
                pass
            for stream in (self.master.stdout, self.master.stderr):
                stream.close()
            self.master = None
        import shutil  # (not needed before the connection starts)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _private_dir() -> str:
    """A new folder only this user can enter, for ssh's control socket: short (unix socket paths
    are limited to ~100 bytes), so in /tmp rather than $TMPDIR. (``tempfile`` would do it, but it
    is ~6 ms of imports before the connection starts.)"""
    parent = "/tmp" if os.path.isdir("/tmp") else os.path.expanduser("~")
    while True:
        path = os.path.join(parent, "phs-ssh-" + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def _ssh(argv: list[str]) -> subprocess.Popen:
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise ConnectionFailed("the OpenSSH client `ssh` is not installed on this machine "
                               "(Debian/Ubuntu: apt-get install openssh-client)") from None
