"""The nginx stage's edge: test a new vhost without making it live, open the challenge path for
names not served yet, and confirm from outside that nginx runs a given vhost.

The text comes from ``vhost.py`` (pure). ``scripts/nginx-test.sh`` checks a vhost with
``nginx -t`` and keeps it as ``vhost.conf.next`` for the commit; nginx reads its files only at
a reload, and only the commit (``scripts/commit.sh``) and the challenge path reload it.
"""

from __future__ import annotations

import http.client
import logging
import re
import sys
import time

from .connection import Server, Servers, group_error
from .errors import DeployError, NginxError, RemoteCommandFailed
from .server_setup import nginx_sudo_command
from .settings import DeploySettings
from .state import HostState
from .vhost import PROBE_PREFIX, Vhost, render_challenge_vhost, served_domains

log = logging.getLogger("pelican_https.deploy")

TEST_FAILED, RELOAD_FAILED, INTERRUPTED, NOT_PERMITTED = 3, 4, 5, 6  # exit codes of the scripts
CONFIRM_TIMEOUT = 10.0  # seconds for nginx to answer with a new config after a reload
# nginx's master starts the new workers, waits 100 ms, then tells the old ones to stop accepting
# (src/os/unix/ngx_process_cycle.c): until then a connection may still reach the old config.
NGINX_HANDOVER = 0.13
_NGINX_LINE = re.compile(r"\[(emerg|alert|crit|error|warn)\]")


def installed_vhost(text: str) -> Vhost | None:
    """The vhost a host had (read back from its file), with the probe that tells when nginx runs it again."""
    probe = re.search(re.escape(PROBE_PREFIX) + r"[0-9a-f]+", text)
    names = served_domains(text)
    return Vhost(text, probe.group(), names[0]) if probe and names else None


def lock_path(settings: DeploySettings) -> str:
    """The file every pelican-https site of a server locks around its nginx steps (scripts/nginx-test.sh):
    the nginx executable, which every deploy user can open read-only, whatever the site."""
    return nginx_sudo_command(settings)[0]


def test(server: Server, settings: DeploySettings, vhost: Vhost) -> tuple[str, ...]:
    """``nginx -t`` with the new vhost in place for the test only; returns nginx's warnings."""
    try:
        out = server.script("nginx-test", str(settings.vhost_file), lock_path(settings), *settings.nginx, stdin=vhost.text.encode(),
                            what="testing the new vhost")
    except RemoteCommandFailed as exc:
        raise error(exc, settings, server) from exc
    warnings = tuple(line for line in messages(out.decode("utf-8", "replace")) if "[warn]" in line)
    for line in warnings:
        log.warning("[%s] nginx -t: %s", server, line)
    return warnings


class Opened(list):
    """The hosts ``open_challenge_path`` opened it on (a list of them): for which names, with which
    vhost (None: not known to have been applied)."""

    def __init__(self, names: dict[Server, list[str]], vhosts: dict[Server, Vhost | None]):
        super().__init__(names)
        self.names, self.vhosts = names, vhosts


def open_challenge_path(servers: Servers, states: dict[Server, HostState], settings: DeploySettings) -> Opened:
    """On each host whose live vhost does not serve every domain yet: the live vhost plus port-80
    challenge servers for the missing names, reloaded and confirmed. Returns those hosts."""
    def apply(server: Server) -> tuple[list[str], Vhost | None]:
        state = states[server]
        missing = [d for d in settings.domains if d not in state.served]
        if not missing:
            return [], None
        vhost = render_challenge_vhost(settings, missing, state.vhost_text)
        try:
            server.script("challenge-vhost", "apply", str(settings.vhost_file), lock_path(settings), *settings.nginx,
                          stdin=vhost.text.encode(), what="opening the challenge path")
        except RemoteCommandFailed as exc:
            raise error(exc, settings, server) from exc
        confirm(server, settings, vhost)
        log.info("[%s] challenge path open for %s (port 80 only, until the order ends)", server, ", ".join(missing))
        return missing, vhost
    result = servers.each(apply)
    if result.failed:  # a host may have opened it and failed to confirm: close it everywhere (a no-op where closed)
        close_challenge_path(servers, settings, Opened({s: [d for d in settings.domains if d not in states[s].served]
                                                         for s in servers}, {}))
        raise group_error(result.failed, "opening the challenge path")
    opened = {s: value for s, value in result.succeeded.items() if value[0]}
    return Opened({s: names for s, (names, _) in opened.items()}, {s: vhost for s, (_, vhost) in opened.items()})


def restore_live_vhost(server: Server, settings: DeploySettings, what: str = "closing the challenge path") -> None:
    """Put back the vhost that was live before a challenge path was opened (a no-op where none is open)."""
    server.script("challenge-vhost", "restore", str(settings.vhost_file), lock_path(settings), *settings.nginx, what=what)


def close_challenge_path(servers: Servers, settings: DeploySettings, opened: Opened) -> None:
    """Put the live vhost back where ``open_challenge_path`` changed it (also after a failed order).
    A host where that fails is logged, and named in the error being raised, if any (this runs in
    the order's ``finally``); the next deploy closes it first, or this deploy's commit replaces it."""
    if not opened:
        return
    def restore(server: Server) -> None:
        restore_live_vhost(server, settings)
        vhost = opened.vhosts.get(server)
        if vhost is not None:
            confirm_closed(server, settings, vhost)
    result = Servers.from_connections(list(opened)).each(restore)
    if not result.failed:
        return
    names = opened.names
    still = []
    for server, exc in result.failed.items():
        log.error("[%s] closing the challenge path failed: %s", server, exc)
        still.append(f"the challenge path for {', '.join(names.get(server, [])) or 'the new names'} is still open on "
                     f"{server} ({exc}); the next deploy removes it")
    pending = sys.exc_info()[1]
    if isinstance(pending, DeployError) and pending.args:  # the error the order ends with: add it there
        pending.args = (f"{pending.args[0]}\n" + "\n".join(s[0].upper() + s[1:] + "." for s in still), *pending.args[1:])


def confirm(server: Server, settings: DeploySettings, vhost: Vhost, timeout: float = CONFIRM_TIMEOUT) -> None:
    """Poll the vhost's probe URL on port 80 of the host until nginx answers it with this config,
    then wait out nginx's hand-over so that every new connection gets it."""
    if not _await_probe(server, settings, vhost, True, timeout):
        raise NginxError(
            f"nginx on {server} accepted and reloaded the new vhost, but http://{vhost.probe_host}{vhost.probe_path} "
            f"at {probe_address(server, settings)}:{settings.http_port} did not answer 204 within {timeout:.0f} s. "
            f"Check that nginx includes {settings.vhost_file} (`fab server-setup` links it), that no other site claims "
            "the same server_name on the same port, and nginx's error log (e.g. an address of DEPLOY_LISTEN it "
            "cannot listen on).")


def confirm_closed(server: Server, settings: DeploySettings, vhost: Vhost, timeout: float = CONFIRM_TIMEOUT) -> None:
    """After the challenge vhost was replaced: poll until nginx no longer answers its probe (the
    reload takes effect a moment later), then wait out the hand-over, so that no visitor of the new
    names gets the challenge server once the deploy has said it is gone."""
    if not _await_probe(server, settings, vhost, False, timeout):
        raise NginxError(f"nginx on {server} reloaded without the challenge vhost, but still answered its probe "
                         f"http://{vhost.probe_host}{vhost.probe_path} after {timeout:.0f} s: check nginx's error log")


def _await_probe(server: Server, settings: DeploySettings, vhost: Vhost, answered: bool, timeout: float) -> bool:
    """Poll ``vhost``'s probe on the host until whether it answers is ``answered``, then wait out
    nginx's hand-over; False if that did not happen within ``timeout`` seconds."""
    address = probe_address(server, settings)
    deadline = time.monotonic() + timeout
    while _probe(address, settings, vhost) != answered:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    time.sleep(NGINX_HANDOVER)
    return True


def probe_address(server: Server, settings: DeploySettings) -> str:
    """Where to reach one host from here: DEPLOY_VERIFY_ADDRESS for a single host, else the address
    its SSH connection reached."""
    single = len(getattr(settings, "hosts", ()) or ()) <= 1
    return settings.verify_address if single and settings.verify_address else server.address


def _probe(address: str, settings: DeploySettings, vhost: Vhost) -> bool:
    host = vhost.probe_host + ("" if settings.http_port == 80 else f":{settings.http_port}")
    conn = http.client.HTTPConnection(address, settings.http_port, timeout=5)
    try:
        conn.request("GET", vhost.probe_path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status == 204
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def messages(output: str) -> list[str]:
    """nginx's own [emerg]/[warn]/... lines (all lines if none is tagged)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return [line for line in lines if _NGINX_LINE.search(line)] or lines


def error(exc: RemoteCommandFailed, settings: DeploySettings, server: Server) -> NginxError:
    """What a failed nginx step means, from the script's exit status."""
    said = "\n    ".join(messages(str(exc).split(": ", 1)[-1]))
    if exc.status == NOT_PERMITTED:
        return NginxError(
            f"the deploy user {settings.user} may not run `{' '.join(settings.nginx)} -t` on {server}: the sudo rule "
            f"from `fab server-setup` is missing or does not match DEPLOY_NGINX word for word (sudo runs "
            f"`{' '.join(nginx_sudo_command(settings))}`). Run `fab server-setup` and apply its sudoers file. sudo said:\n    {said}")
    if exc.status == TEST_FAILED:
        ours = any(mark in said for mark in (str(settings.vhost_file), f"/{settings.site_name}.conf", str(settings.state_dir)))
        elsewhere = "" if ours else (
            "\nThe file nginx names is not this site's vhost: another site's configuration fails `nginx -t`; it must be "
            "fixed before any reload is safe.")
        return NginxError(f"nginx -t on {server} rejected the configuration; nginx keeps running on the live one. "
                          f"nginx said:\n    {said}{elsewhere}")
    if exc.status == RELOAD_FAILED:
        return NginxError(f"nginx -t passed on {server} but `nginx -s reload` failed (is nginx running?). nginx said:\n    {said}")
    return NginxError(f"an nginx step failed on {server}: {exc}")
