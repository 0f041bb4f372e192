"""SSH to the servers: one Fabric connection per host, strict host keys, and the server's scripts.

Every stage talks to a server through the ``Server`` it is given (a Fabric ``Connection``, so
paramiko underneath): the lock, the upload, the scripts, the certificate files. The rules for
host keys and the key file are enforced here, once, identically for every task. Several hosts
form a ``Servers`` group (Fabric's ``ThreadingGroup``): a stage runs on all of them at once and
the caller decides on the whole ``GroupResult``.

What runs on a server is a file of ``deploy/scripts/`` run as ``sh -c <script> <name> ARGS``:
the script text is the package's own, every value an argument quoted by ``shlex.join``.
"""

from __future__ import annotations

import logging
import shlex
import socket
import stat
from importlib import resources
from pathlib import Path
from typing import Callable

import paramiko
from fabric import Config, Connection, ThreadingGroup
from fabric.exceptions import GroupException

from .errors import ConnectionFailed, DeployError, RemoteCommandFailed
from .known_hosts import is_revoked, read_known_hosts
from .settings import DeploySettings

log = logging.getLogger("pelican_https.deploy")

Input = bytes | Callable[[Callable[[bytes], None]], None] | None  # bytes, or a writer handed sendall

CONNECT_TIMEOUT = 15  # seconds
KEEPALIVE = 15  # seconds between SSH keepalives: a vanished network is noticed
CUT_INPUT_WAIT = 30  # seconds a script gets to end once its input was cut short
ERROR_TEXT_LIMIT = 2000  # characters of a failed script's stderr put into the error message
# A script given input always reads it to the end (the wrapper drains what the script left): the
# session then never ends while we are still sending, and our EOF never meets a closed channel.
_DRAIN = 'script=$1; shift; sh -c "$script" "$@"; status=$?; cat > /dev/null; exit "$status"'


def script_text(name: str) -> str:
    return resources.files("deploy").joinpath("scripts", name + ".sh").read_text()


class Server(Connection):
    """One host of the site: a Fabric connection that runs the project's scripts."""

    def __init__(self, host: str, port: int, settings: DeploySettings):
        connect_kwargs = {"look_for_keys": settings.ssh_key is None, "allow_agent": settings.ssh_key is None}
        if settings.ssh_key is not None:
            connect_kwargs["key_filename"] = [str(settings.ssh_key)]
        config = Config(overrides={"run": {"in_stream": False, "hide": True}, "load_ssh_configs": False})
        super().__init__(host, user=settings.user, port=port, config=config, connect_kwargs=connect_kwargs,
                         connect_timeout=CONNECT_TIMEOUT)
        self.name = host if port == 22 else f"{host}:{port}"

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        """The address this connection reached (the host's own address, for checks from outside)."""
        return self.client.get_transport().getpeername()[0]

    def call(self, func: Callable, *args):
        """``func(self, *args)``: lets Fabric's groups run any stage function on each host."""
        return func(self, *args)

    def script(self, name: str, *args: str, stdin: Input = None, what: str = "") -> bytes:
        """Run ``deploy/scripts/<name>.sh`` with ``args``; return its stdout, or raise with its stderr."""
        status, out, err = self.script_status(name, *args, stdin=stdin)
        if status != 0:
            raise RemoteCommandFailed(f"{what or name} failed on {self} (exit {status}): "
                                      f"{(err or out).decode('utf-8', 'replace').strip()[:ERROR_TEXT_LIMIT]}", status)
        return out

    def script_status(self, name: str, *args: str, stdin: Input = None) -> tuple[int, bytes, bytes]:
        """Run a script; return (exit status, stdout, stderr) whatever the status."""
        text = script_text(name)
        if stdin is None:
            command = shlex.join(["sh", "-c", text, name, *args]) + " < /dev/null"
        else:
            command = shlex.join(["sh", "-c", _DRAIN, "sh", text, name, *args])
        channel = self.open_channel()
        try:
            channel.exec_command(command)
            if callable(stdin):  # a writer: it is handed the channel's sendall
                try:
                    stdin(channel.sendall)
                except BaseException:
                    # The input is cut short: let the script end on it before anything else runs
                    # (a clean-up must not race an unpack still writing).
                    try:
                        channel.shutdown_write()
                        channel.status_event.wait(CUT_INPUT_WAIT)
                    except (OSError, EOFError, paramiko.SSHException):
                        pass  # the connection is gone: so is the script
                    raise
            elif stdin is not None:
                channel.sendall(stdin)
            if stdin is not None:
                channel.shutdown_write()
            out = channel.makefile("rb").read()
            err = channel.makefile_stderr("rb").read()
            status = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionFailed(f"the SSH connection to {self} broke while running {name}: {exc}") from exc
        finally:
            channel.close()
        return status, out, err

    def open_channel(self) -> paramiko.Channel:
        return self.client.get_transport().open_session()


def _open_strictly(server: Server, settings: DeploySettings) -> Server:
    """Open one connection that refuses any host key not in DEPLOY_KNOWN_HOSTS."""
    where = f"{settings.user}@{server}"
    known = read_known_hosts(settings.known_hosts)  # (paramiko's own loader stops at lines it cannot parse)
    trusted = server.client.get_host_keys()
    trusted.clear()  # DEPLOY_KNOWN_HOSTS only: never keys Fabric or paramiko found elsewhere
    for host, keys in known.host_keys.items():
        for key_type, key in keys.items():
            trusted.add(host, key_type, key)
    server.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    scan = f"ssh-keyscan -p {server.port} {server.host} >> {settings.known_hosts}"
    try:
        server.open()
    except paramiko.BadHostKeyException as exc:
        raise ConnectionFailed(
            f"the host key of {where} does not match DEPLOY_KNOWN_HOSTS ({settings.known_hosts}): the server was "
            "reinstalled, or someone is in the middle. Nothing was changed on the server. Check the new key's "
            "fingerprint out of band, then replace its line in known_hosts.") from exc
    except paramiko.SSHException as exc:
        presented = server.client.get_transport() and server.client.get_transport().get_remote_server_key()
        if presented is not None and is_revoked(presented, known.revoked):
            raise ConnectionFailed(f"the host key of {where} is marked @revoked in DEPLOY_KNOWN_HOSTS "
                                   f"({settings.known_hosts}): refused. Nothing was changed on the server.") from exc
        if "not found in known_hosts" in str(exc):
            raise ConnectionFailed(
                f"{where} is not in DEPLOY_KNOWN_HOSTS ({settings.known_hosts}); unknown host keys are never accepted. "
                f"Nothing was changed on the server. Add it after checking its fingerprint: {scan}") from exc
        raise ConnectionFailed(f"SSH to {where} failed: {exc}. Check DEPLOY_USER, DEPLOY_SSH_KEY and that the key is "
                               "in the user's authorized_keys. Nothing was changed on the server.") from exc
    except OSError as exc:
        raise ConnectionFailed(f"cannot reach {where}: {exc}. Check the host name and port and that sshd runs there. "
                               "Nothing was changed on the server.") from exc
    transport = server.client.get_transport()
    transport.set_keepalive(KEEPALIVE)
    # Nagle's algorithm with delayed ACKs adds ~40 ms to every short command.
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server


def check_key_file(path: Path | None) -> None:
    """OpenSSH's rule, for every task alike: a private key others can read is refused."""
    if path is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConnectionFailed(f"DEPLOY_SSH_KEY={str(path)!r} cannot be read: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConnectionFailed(f"DEPLOY_SSH_KEY={str(path)!r} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                               f"a private key must be private: chmod 600 {path}")


class Servers(ThreadingGroup):
    """The site's hosts, in DEPLOY_HOSTS order. ``each`` runs a stage on all of them at once."""

    def each(self, func: Callable, *args):
        """``func(server, *args)`` on every host in parallel (Fabric's threads): the GroupResult,
        with each host's return value or exception; never raises for a host's failure."""
        try:
            return self._do("call", func, *args)
        except GroupException as exc:
            return exc.result

    def each_or_raise(self, func: Callable, *args, stage: str) -> dict:
        """Like ``each``, then raise one error naming every host that failed (the first's type)."""
        result = self.each(func, *args)
        failed = result.failed
        if failed:
            raise group_error(failed, stage)
        return {server: result[server] for server in self}


def group_error(failed: dict, stage: str) -> DeployError:
    """One error for the hosts that failed a stage: the host's own error when one failed, else
    one line per host (of the errors' common type when they share one)."""
    errors = list(failed.values())
    if len(errors) == 1 and isinstance(errors[0], DeployError):
        return errors[0]
    lines = "\n".join(f"  {server}: {exc}" for server, exc in failed.items())
    kind = type(errors[0]) if all(type(e) is type(errors[0]) for e in errors) and isinstance(errors[0], DeployError) else DeployError
    return kind(f"{stage} failed on {len(failed)} host(s):\n{lines}")


def connect_all(settings: DeploySettings) -> Servers:
    """Connect to every host at once; if any cannot be reached, close the others and raise naming it:
    nothing has been changed anywhere yet."""
    check_key_file(settings.ssh_key)
    hosts = getattr(settings, "hosts", None) or ((settings.host, settings.port),)
    servers = Servers.from_connections([Server(host, port, settings) for host, port in hosts])
    result = servers.each(_open_strictly, settings)
    if result.failed:
        servers.close()
        raise group_error(result.failed, "connecting")
    return servers
