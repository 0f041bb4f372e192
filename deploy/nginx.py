"""The nginx stage's edge: read the version, install the vhost behind `nginx -t`, reload, confirm.

The text itself comes from ``vhost.render_vhost`` (pure). ``apply_config`` installs it, and with it
a new certificate, in one SSH round trip:

1. the new text is uploaded under a temporary name next to the vhost; when it equals the installed
   file and no certificate changes, nothing else happens (no reload);
2. the installed file is kept as ``vhost.conf.prev``, the new one is renamed into place and
   ``tls/live`` is switched to the new certificate;
3. ``nginx -t``; if it fails, the previous vhost and certificate are put back (also if the SSH
   session dies half-way: a trap restores them), nginx keeps running on its old config, and
   nginx's own error lines are shown;
4. ``nginx -s reload``; then, from the outside, a probe URL whose name is a hash of the new text is
   polled until nginx answers it (reload is asynchronous), which also proves nginx includes the file.
"""

from __future__ import annotations

import http.client
import io
import logging
import re
import shlex
import time
from dataclasses import dataclass

from fabric import Connection

from .certificates import LIVE
from .connection import shell
from .errors import NginxError, RemoteCommandFailed
from .settings import DeploySettings
from .vhost import Vhost, render_vhost  # noqa: F401  (render_vhost re-exported for the pipeline)

log = logging.getLogger("pelican_https.deploy")

# Exit codes of the install script, beyond 0 (done).
_TEST_FAILED, _RELOAD_FAILED, _INTERRUPTED = 3, 4, 5
_NGINX_LINE = re.compile(r"\[(emerg|alert|crit|error|warn)\]")


@dataclass(frozen=True)
class InstallOutcome:
    changed: bool  # False: the same vhost and certificate were already installed, nginx not reloaded
    warnings: tuple[str, ...]  # nginx -t's [warn] lines (e.g. a server name another site also claims)


def parse_version(text: str) -> tuple[int, ...]:
    """'nginx version: nginx/1.22.1' -> (1, 22, 1)."""
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise NginxError(f"cannot read the nginx version from {text.strip()!r}; check DEPLOY_NGINX")
    return tuple(int(x) for x in match.groups())


def read_version(conn: Connection, settings: DeploySettings) -> tuple[int, ...]:
    from .server_setup import nginx_sudo_command
    # `nginx -v` needs no root; sudo is allowed only for -t and -s reload.
    out = shell(conn, shlex.join([*nginx_sudo_command(settings), "-v"]) + " 2>&1", what="reading the nginx version")
    return parse_version(out)


def certificate_dir(settings: DeploySettings, installed) -> str | None:
    """The folder of the installed certificate (tls/certs/<id>), for the vhost to name directly."""
    cert_id = getattr(installed, "cert_id", "") if installed is not None else ""
    if not cert_id or not re.fullmatch(r"[A-Za-z0-9._-]+", cert_id) or cert_id.startswith("."):
        return None  # unknown: the renderer falls back to tls/live
    return str(settings.tls_dir / "certs" / cert_id)


def nginx_messages(output: str) -> list[str]:
    """nginx's own [emerg]/[warn]/... lines from `nginx -t` output (all lines if none is tagged)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    tagged = [line for line in lines if _NGINX_LINE.search(line)]
    return tagged or lines


def install_script(settings: DeploySettings, new_cert: str | None) -> str:
    """The server side of ``apply_config`` (reads the new vhost on stdin). Every value is quoted."""
    q = shlex.quote
    nginx = shlex.join(settings.nginx)
    vhost = q(str(settings.vhost_file))
    live = q(str(settings.tls_dir / LIVE))
    cert = q(new_cert or "")
    return f"""
set -u
vhost={vhost}; live={live}; new_cert={cert}
umask 022
cat > "$vhost.new" || exit 1
if [ -z "$new_cert" ] && [ -f "$vhost" ] && cmp -s "$vhost.new" "$vhost"; then
    rm -f "$vhost.new"
    echo unchanged
    exit 0
fi
# Keep the previous file (an empty one on the very first deploy: the include must never dangle).
if [ -f "$vhost" ]; then cp -p "$vhost" "$vhost.prev" || exit 1; else : > "$vhost.prev" || exit 1; fi
old_cert=$(readlink "$live" 2>/dev/null || true)
# For a rollback after the reload (see rollback_script): which certificate to go back to.
if [ -n "$new_cert" ]; then printf '%s' "$old_cert" > "$vhost.prev-cert" || exit 1; else rm -f "$vhost.prev-cert"; fi
restore() {{
    cp -p "$vhost.prev" "$vhost.restore" && mv -f "$vhost.restore" "$vhost"
    if [ -n "$new_cert" ]; then
        if [ -n "$old_cert" ]; then ln -sfn "$old_cert" "$live.new" && mv -T "$live.new" "$live"; else rm -f "$live"; fi
    fi
}}
# A dropped SSH session must not leave an untested file in place.
trap 'restore; exit {_INTERRUPTED}' HUP INT TERM PIPE
# The certificate first: the old vhost runs fine on either certificate, the new one may need
# the new one (first deploy: tls/live does not exist before), and nginx must never see a vhost
# naming a missing certificate, not even from an `nginx -t` someone else runs meanwhile.
if [ -n "$new_cert" ]; then
    ln -sfn "$new_cert" "$live.new" && mv -T "$live.new" "$live" || {{ restore; exit 1; }}
fi
mv -f "$vhost.new" "$vhost" || {{ restore; exit 1; }}
if ! {nginx} -t > "$vhost.test" 2>&1; then
    restore
    cat "$vhost.test" >&2
    exit {_TEST_FAILED}
fi
trap - HUP INT TERM PIPE
cat "$vhost.test"
if ! {nginx} -s reload 2>&1; then
    restore
    exit {_RELOAD_FAILED}
fi
echo reloaded
"""


def rollback_script(settings: DeploySettings) -> str:
    """Put back the vhost (and certificate) the last install replaced, test, reload.

    Used when nginx accepted the new vhost but does not answer with it: a reload that failed in
    nginx's master (e.g. an address it cannot bind; `nginx -s reload` does not report that), a
    vhost nginx does not include, or one shadowed by another site. The file must not stay: the
    next nginx restart would load it.
    """
    q = shlex.quote
    nginx = shlex.join(settings.nginx)
    return f"""
set -u
vhost={q(str(settings.vhost_file))}; live={q(str(settings.tls_dir / LIVE))}
[ -f "$vhost.prev" ] || exit 1
if [ -f "$vhost.prev-cert" ]; then
    old_cert=$(cat "$vhost.prev-cert")
    if [ -n "$old_cert" ]; then ln -sfn "$old_cert" "$live.new" && mv -T "$live.new" "$live"; else rm -f "$live"; fi
    rm -f "$vhost.prev-cert"
fi
cp -p "$vhost.prev" "$vhost.restore" && mv -f "$vhost.restore" "$vhost" || exit 1
{nginx} -t 2>&1 && {nginx} -s reload 2>&1
"""


def apply_config(conn: Connection, settings: DeploySettings, vhost: Vhost, new_cert: str | None = None,
                 *, confirm_timeout: float = 10.0) -> InstallOutcome:
    """Install vhost (+ switch to new_cert), gate on `nginx -t`, reload, confirm; restore both on failure."""
    try:
        out = shell(conn, install_script(settings, new_cert), stdin=io.BytesIO(vhost.text.encode()),
                    what="installing the nginx vhost")
    except RemoteCommandFailed as exc:
        raise _install_error(exc, settings) from exc
    if out.strip().endswith("unchanged"):
        # Same file, same certificate: no reload. Still make sure nginx runs it (a previous deploy
        # may have stopped after writing it); if not, reload it now.
        if _wait_until_live(settings, vhost, timeout=1.0, reloaded=False):
            log.info("nginx vhost unchanged: no reload")
            return InstallOutcome(False, ())
        log.info("nginx vhost unchanged on disk but not running yet: reloading")
        return _reload_only(conn, settings, vhost, confirm_timeout)
    warnings = tuple(line for line in nginx_messages(out) if "[warn]" in line)
    for line in warnings:
        log.warning("nginx -t: %s", line)
    try:
        confirm_live(settings, vhost, timeout=confirm_timeout, warnings=warnings)
    except NginxError as exc:
        try:
            shell(conn, rollback_script(settings), what="putting the previous vhost back")
            undone = "The previous vhost and certificate were put back."
        except RemoteCommandFailed as undo:
            undone = f"Putting the previous vhost back failed too: {undo}"
        raise NginxError(f"{exc}\n{undone}") from exc
    log.info("nginx vhost installed and live (%s)", vhost.vhost_id)
    return InstallOutcome(True, warnings)


def _reload_only(conn: Connection, settings: DeploySettings, vhost: Vhost, timeout: float) -> InstallOutcome:
    nginx = shlex.join(settings.nginx)
    try:
        shell(conn, f"out=$({nginx} -t 2>&1) || {{ echo \"$out\" >&2; exit {_TEST_FAILED}; }}; "
                    f"{nginx} -s reload 2>&1 || exit {_RELOAD_FAILED}", what="reloading nginx")
    except RemoteCommandFailed as exc:
        raise _install_error(exc, settings) from exc
    confirm_live(settings, vhost, timeout=timeout)
    return InstallOutcome(True, ())


def confirm_live(settings: DeploySettings, vhost: Vhost, timeout: float = 10.0, warnings: tuple[str, ...] = ()) -> None:
    """Poll the vhost's probe URL on port 80 until nginx answers it: the new config is running.

    This also catches a vhost nginx does not include, and one shadowed by another site's server
    block claiming the same name on the same port (nginx only warns about that).
    """
    if not _wait_until_live(settings, vhost, timeout):
        warned = "".join(f"\n    nginx -t warned: {line}" for line in warnings)
        raise NginxError(
            f"nginx accepted and reloaded the new vhost, but http://{settings.canonical_domain}:{settings.http_port}"
            f"{vhost.probe_path} did not answer 204 within {timeout:.0f} s. Check that nginx includes "
            f"{settings.vhost_file} (`fab server-setup` links it into sites-enabled or conf.d), that no other "
            f"site claims the same server_name on the same port, that nginx could apply it (nginx's error log "
            f"tells, e.g. an address of DEPLOY_LISTEN it cannot listen on, such as [::] without IPv6), and that "
            f"{settings.verify_address or settings.canonical_domain} reaches this server on port {settings.http_port}."
            + warned
        )


# nginx's master starts the new workers, sleeps 100 ms, and only then tells the old ones to stop
# accepting (src/os/unix/ngx_process_cycle.c, "allow new processes to start"). Until then a
# connection may still land on a worker with the old config.
NGINX_HANDOVER = 0.1
HANDOVER_MARGIN = 0.03


def _wait_until_live(settings: DeploySettings, vhost: Vhost, timeout: float, reloaded: bool = True) -> bool:
    """True once nginx runs ``vhost`` for every new connection.

    The first 204 on the vhost's own probe path comes from a new worker: the config is loaded.
    After a reload, old workers still accept for up to NGINX_HANDOVER after that; wait it out
    and ask once more, so that when the deploy says "live", every visitor gets the new config.
    """
    deadline = time.monotonic() + timeout
    if not _probe_until(settings, vhost, deadline):
        return False
    if not reloaded:
        return True
    time.sleep(NGINX_HANDOVER + HANDOVER_MARGIN)
    return _probe_until(settings, vhost, deadline)  # (nginx may have been reloaded again meanwhile)


def _probe_until(settings: DeploySettings, vhost: Vhost, deadline: float) -> bool:
    while not _probe_answers(settings, vhost):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _probe_answers(settings: DeploySettings, vhost: Vhost) -> bool:
    address = settings.verify_address or settings.canonical_domain
    host = settings.canonical_domain + ("" if settings.http_port == 80 else f":{settings.http_port}")
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


def _install_error(exc: RemoteCommandFailed, settings: DeploySettings) -> NginxError:
    text = str(exc)
    status = re.search(r"\(exit (\d+)\)", text)
    code = int(status.group(1)) if status else None
    said = "\n    ".join(nginx_messages(text.split(": ", 1)[-1])) if ": " in text else text
    if code == _TEST_FAILED:
        ours = (str(settings.vhost_file), f"/{settings.site_name}.conf:")
        elsewhere = ("" if any(mark in said for mark in ours) else
                     "\nThe file nginx names is not this site's vhost: another site's configuration fails "
                     "`nginx -t` (alone or together with ours); it must be fixed before any reload is safe.")
        return NginxError(
            "nginx -t rejected the new configuration, so the previous vhost and certificate were put back "
            "and nginx keeps running on its old config. nginx said:\n    " + said + elsewhere)
    if code == _RELOAD_FAILED:
        return NginxError(
            "nginx -t accepted the new vhost but `nginx -s reload` failed (is nginx running?); the previous "
            "vhost and certificate were put back. nginx said:\n    " + said)
    if code == _INTERRUPTED:
        return NginxError("the vhost installation was interrupted; the previous vhost and certificate were put back")
    return NginxError(f"installing the nginx vhost failed; nothing was changed: {text}")
