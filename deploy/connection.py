"""SSH to the server with strict host-key checking, and run commands given as argument lists.

Fabric 3 trusts any host key by default; we load known_hosts and reject unknown keys before
connecting, so a changed or unknown key stops the deploy before anything is sent.
Commands are built as lists and joined with ``shlex.join``: no setting or file name ever
reaches the remote shell unquoted.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from typing import IO, Sequence

import paramiko
from fabric import Config, Connection

from .errors import ConnectionFailed, RemoteCommandFailed
from .settings import DeploySettings


def connect(settings: DeploySettings) -> Connection:
    """Open an SSH connection that refuses any host key not in DEPLOY_KNOWN_HOSTS."""
    if not settings.known_hosts.is_file():
        raise ConnectionFailed(
            f"DEPLOY_KNOWN_HOSTS={str(settings.known_hosts)!r} does not exist. Add the server's key first, "
            f"checking its fingerprint: ssh-keyscan -p {settings.port} {settings.host} >> {settings.known_hosts}"
        )
    connect_kwargs = {"look_for_keys": settings.ssh_key is None, "allow_agent": settings.ssh_key is None}
    if settings.ssh_key is not None:
        connect_kwargs["key_filename"] = [str(settings.ssh_key)]
    # in_stream=False: never read local stdin (CI has none, pytest captures it).
    config = Config(overrides={"run": {"in_stream": False, "hide": True}, "load_ssh_configs": False})
    conn = Connection(settings.host, user=settings.user, port=settings.port, config=config,
                      connect_kwargs=connect_kwargs, connect_timeout=15)
    conn.client.load_host_keys(str(settings.known_hosts))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    where = f"{settings.user}@{settings.host}:{settings.port}"
    try:
        conn.open()
    except paramiko.BadHostKeyException as exc:
        raise ConnectionFailed(
            f"the host key of {where} does not match DEPLOY_KNOWN_HOSTS ({settings.known_hosts}): "
            "the server was reinstalled, or someone is in the middle. Nothing was changed on the server. "
            "Check the new key's fingerprint out of band, then replace its line in known_hosts."
        ) from exc
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise ConnectionFailed(
                f"{where} is not in DEPLOY_KNOWN_HOSTS ({settings.known_hosts}); unknown host keys are never accepted. "
                f"Nothing was changed on the server. Add it after checking its fingerprint: "
                f"ssh-keyscan -p {settings.port} {settings.host} >> {settings.known_hosts}"
            ) from exc
        raise ConnectionFailed(f"SSH to {where} failed: {exc}. Check DEPLOY_USER, DEPLOY_SSH_KEY and that the key is in the user's authorized_keys.") from exc
    except OSError as exc:
        raise ConnectionFailed(f"cannot reach {where}: {exc}. Check DEPLOY_HOST and DEPLOY_PORT and that sshd runs.") from exc
    # Nagle's algorithm + delayed ACKs cost ~40 ms per command (measured: 56 ms -> 13 ms per exec).
    conn.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def run(conn: Connection, argv: Sequence[str], *, stdin: IO[bytes] | None = None, what: str = "") -> str:
    """Run one command (an argument list) on the server; return its stdout or raise with its stderr."""
    return shell(conn, shlex.join(argv), stdin=stdin, what=what or argv[0])


def shell(conn: Connection, script: str, *, stdin: IO[bytes] | None = None, what: str = "") -> str:
    """Run a shell script built only from quoted parts; ``sh -c`` keeps it independent of the login shell."""
    # The session must not end before our EOF arrives. paramiko sends the EOF after releasing the
    # channel's lock: if sshd's close of a finished command is answered meanwhile, sshd meets an
    # EOF for a channel it no longer has and drops the whole connection, killing every other
    # session on it (seen: read_state cut off with exit -1 while `nginx -v` ran beside it, with
    # another thread holding the GIL). So without input no EOF is sent (stdin is /dev/null), and
    # with input the script's unread rest is drained before the session can end.
    if stdin is None:
        script = "exec </dev/null\n" + script
    else:
        script = f"(\n{script}\n)\nstatus=$?; cat >/dev/null; exit $status"
    channel = conn.client.get_transport().open_session()
    try:
        channel.exec_command(shlex.join(["sh", "-c", script]))
        if stdin is not None:
            while chunk := stdin.read(1 << 20):
                channel.sendall(chunk)
            channel.shutdown_write()
        out, err = _drain(channel)
        status = channel.recv_exit_status()
    finally:
        channel.close()
    if status != 0:
        raise RemoteCommandFailed(f"{what or 'a command'} failed on the server (exit {status}): {err.strip() or out.strip()}")
    return out


def _drain(channel: paramiko.Channel) -> tuple[str, str]:
    """Both output streams, to the channel's EOF. Not to the exit status: sshd may send that
    before the last of the output (seen with several sessions at once on a busy machine)."""
    out, err = bytearray(), bytearray()
    while True:
        if channel.recv_ready():
            out += channel.recv(1 << 16)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 16)
        elif channel.eof_received or channel.closed:
            break
        elif channel.exit_status_ready():
            time.sleep(0.001)  # the EOF is on its way
        else:
            channel.status_event.wait(0.01)  # set by the exit status (or the channel's close)
    # Anything that arrived together with the EOF.
    while channel.recv_ready():
        out += channel.recv(1 << 16)
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(1 << 16)
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class ChannelShell:
    """The deploy lock's shell on a session of an open connection (``Remote``'s interface for the lock).

    A deploy without an upload (``fab renew``) needs no OpenSSH connection: the lock shell runs
    on a session of the Fabric connection the stages use, and one SSH handshake (~0.15-0.3 s) is
    saved. Same semantics: the shell holds the lock until its stdin closes, which happens on
    ``close`` or when this process dies (the kernel closes the TCP connection, sshd the session).
    """

    def __init__(self, conn: Connection, settings: DeploySettings):
        self.conn = conn
        self.where = f"{settings.user}@{settings.host}:{settings.port}"
        self.master: _ChannelProcess | None = None

    def start_master(self, script: str) -> "_ChannelProcess":
        channel = self.conn.client.get_transport().open_session()
        channel.exec_command(shlex.join(["sh", "-c", script]))
        self.master = _ChannelProcess(channel)
        return self.master

    def close(self) -> None:
        if self.master is not None:
            self.master.stdin.close()
            self.master = None


class _ChannelProcess:
    """A session channel shaped like the parts of ``subprocess.Popen`` the lock reads and writes."""

    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        self.stdin = _ChannelStdin(channel)
        self.stdout = _ChannelReader(channel.recv)
        self.stderr = _ChannelReader(channel.recv_stderr)

    def wait(self) -> int:
        status = self.channel.recv_exit_status()
        return 255 if status == -1 else status  # -1: the connection closed without a status


class _ChannelStdin:
    def __init__(self, channel: paramiko.Channel):
        self.channel, self.closed = channel, False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        if self.closed:
            raise BrokenPipeError("the lock shell's input is closed")
        try:
            self.channel.sendall(data)
        except OSError as exc:
            raise BrokenPipeError(str(exc)) from exc

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                try:
                    self.channel.shutdown_write()
                except (OSError, EOFError):
                    pass  # the connection is gone: sshd ends the session, the lock shell exits


class _ChannelReader:
    def __init__(self, recv):
        self.recv = recv

    def read1(self, size: int = 1 << 16) -> bytes:
        try:
            return self.recv(size)
        except (OSError, EOFError):
            return b""

    def read(self) -> bytes:
        data = bytearray()
        while chunk := self.read1():
            data += chunk
        return bytes(data)
