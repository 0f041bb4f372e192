"""The deploy, stage by stage: prepare on every host, then commit on every host, or on none.

Preparing changes nothing a visitor of the live names can see: the release is built and checked
under ``releases/``; the certificate is chosen for the group, or ordered once and staged on
every host; the new vhost is checked with ``nginx -t`` without going live. Then one commit per
host makes certificate, vhost and release live together with one reload, and the site is
verified from outside on every host. A failed commit or verification puts every host back.
Pruning comes only after a verified commit. Each stage lives in its own module; this one only
orders them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

from . import certificates, lock, nginx, releases, state as host_state, upload, verify
from .connection import Server, Servers, connect_all, group_error
from .errors import DeployError, VerificationFailed
from .releases import Change
from .renewal import Installed
from .settings import DeploySettings
from .vhost import render_vhost

log = logging.getLogger("pelican_https.deploy")


class DeployResult(NamedTuple):
    release_id: str
    certificate_action: str
    certificate_reason: str
    serial: int
    not_after: dt.datetime
    url: str
    hosts: tuple[str, ...]


class Progress:
    """What the task layer shows and needs to know when interrupted: the stage now running, and
    whether the live site may have changed (the commit started). ``sent`` reports upload bytes."""

    def __init__(self, sent: Callable[[str, int], None] | None = None):
        self.stage, self.committing, self.sent = "connecting", False, sent
        self.hosts: dict[str, str | None] = {}  # a rollback: each host's live release before it
        self.target = ""  # a rollback: the release every host switches to

    def enter(self, stage: str) -> None:
        self.stage = stage


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def deploy(settings: DeploySettings, *, upload_site: bool = True, force_renew: bool = False,
           progress: Progress | None = None, clock: Callable[[], dt.datetime] = utc_now) -> DeployResult:
    """``clock`` is when the certificate decision is taken (tests move it instead of sleeping)."""
    progress = progress or Progress()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan") as pool:
        scanned = pool.submit(upload.scan, settings) if upload_site else None  # hashing while SSH connects
        servers = connect_all(settings)
        try:
            with hold(servers, settings, progress):
                states = read_states(servers, settings, progress)
                return _deploy_locked(servers, states, settings, scanned and scanned.result(), force_renew, progress, clock)
        finally:
            servers.close()


def hold(servers: Servers, settings: DeploySettings, progress: Progress):
    progress.enter("taking the deploy lock")
    return lock.hold(servers, settings, lambda host, holder: log.info(
        "[%s] waiting up to %d s for the deploy lock held by %s", host, settings.lock_timeout, holder))


class EarlierDeployPending(DeployError):
    """What an interrupted deploy left could not be put back or finished: the message says each host's state."""


def read_states(servers: Servers, settings: DeploySettings, progress: Progress) -> dict[Server, host_state.HostState]:
    """Every host's state; first, what an interrupted deploy left pending is finished or undone."""
    progress.enter("reading the servers' state")
    states = servers.each_or_raise(host_state.read, settings, stage="reading the server's state")
    if any(st.journal or st.order_pending for st in states.values()):
        _resolve_interrupted(servers, states, settings)
        states = servers.each_or_raise(host_state.read, settings, stage="reading the server's state")
    for server, st in states.items():
        if not st.current_is_link:
            raise DeployError(f"{settings.current_link} on {server} is a folder, not the symlink pelican-https switches: "
                              "move it away (e.g. into releases/), then deploy again. Nothing was changed.")
    return states


def _resolve_interrupted(servers: Servers, states: dict, settings: DeploySettings) -> None:
    """Close an interrupted order's challenge path; then its commit: verified on any host (that is
    recorded only once every host was verified), it is kept and finished on every host; else undone."""
    pending = [s for s, st in states.items() if st.journal or st.order_pending]
    journals = [s for s in pending if states[s].journal]
    verified = any(states[s].journal_verified for s in journals)
    log.warning("an earlier deploy was interrupted on %s: %s", ", ".join(map(str, pending)),
                "its verified commit is kept and finished" if verified else "putting back what it left half done")
    closed = Servers.from_connections(pending).each(
        lambda s: states[s].order_pending and nginx.restore_live_vhost(s, settings, what="closing its challenge path"))
    done: dict = {}
    if journals:
        group = Servers.from_connections(journals)
        done = releases.forget(group, settings) if verified else releases.undo(group, settings)
    if not closed.failed and not any(done.values()):
        return
    lines = []
    for server in pending:
        if server in done:
            ok = ("finished: serves the verified new site" if verified else
                  "put back: serves what it served before the interrupted deploy")
            lines.append(f"  {server}: " + (ok if done[server] is None else
                         f"{'finishing' if verified else 'putting it back'} failed: {done[server]}; journal kept, "
                         + ("it serves the verified new site" if verified else "what it serves is unknown")))
        if server in closed.failed:
            lines.append(f"  {server}: closing its challenge path failed: {closed.failed[server]}")
    raise EarlierDeployPending(
        "reading the servers' state: an earlier deploy was interrupted, and what it left could not be "
        + ("finished" if verified else "put back") + " everywhere:\n" + "\n".join(lines)
        + "\nNothing of this deploy was uploaded or switched. Fix the cause above, then `fab deploy` again "
        "(it tries this first) or `fab rollback`.")


def _deploy_locked(servers: Servers, states: dict, settings: DeploySettings, local, force: bool,
                   progress: Progress, clock: Callable[[], dt.datetime]) -> DeployResult:
    release_id = ""
    if local is not None:
        release_id = _upload(servers, states, settings, local, progress)
    else:  # renew: the certificate is verified on the live site, so there must be one
        bare = [str(s) for s, st in states.items() if st.current is None]
        if bare:
            raise DeployError(f"no release is live on {', '.join(bare)}: `fab renew` renews the certificate of a "
                              "deployed site; run `fab deploy` first (it obtains the certificate too). "
                              "Nothing was changed.")
    try:
        progress.enter("preparing the certificate")
        cert, decision = _certificate(servers, states, settings, force, clock())
        progress.enter("testing the nginx vhost")
        changes = _changes(servers, states, settings, local, release_id, cert)
    except BaseException:
        if release_id:
            servers.each(upload.abort, settings, release_id)
        raise
    previous = {s: nginx.installed_vhost(st.vhost_text) for s, st in states.items()}
    _commit_and_verify(servers, settings, changes, previous, cert, progress)
    return DeployResult(release_id, decision.action, decision.reason, cert.certificate.serial_number,
                        cert.certificate.not_valid_after_utc, settings.https_origin + "/", tuple(map(str, servers)))


def _upload(servers: Servers, states: dict, settings: DeploySettings, local, progress: Progress) -> str:
    progress.enter("uploading the release")
    if settings.skip_unchanged and upload.unchanged(local, list(states.values())):
        log.info("upload: nothing changed since the live release; no new release (DEPLOY_SKIP_UNCHANGED)")
        return ""
    release_id = upload.new_release_id(list(states.values()))
    cancel = threading.Event()
    with _interrupt_sets(cancel):  # Ctrl-C stops the streams; each host then removes its partial release
        result = servers.each(lambda s: upload.send_release(s, settings, states[s], local, release_id, progress.sent, cancel))
    if cancel.is_set():
        raise KeyboardInterrupt
    if result.failed:
        servers.each(upload.abort, settings, release_id)
        raise group_error(result.failed, "uploading the release")
    for server, sent in result.succeeded.items():
        log.info("[%s] upload: %s", server, sent.summary())
    return release_id


@contextlib.contextmanager
def _interrupt_sets(event: threading.Event):
    """While the block runs, SIGINT sets ``event`` instead of raising in the middle of Fabric's threads."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _certificate(servers: Servers, states: dict, settings: DeploySettings, force: bool, now: dt.datetime):
    info = certificates.renewal_info(servers, states, settings, now)
    plan = certificates.decide_group(states, settings, now, info, force)
    log.info("certificate: %s", plan.decision.reason)
    if plan.certificate is None:
        issued = certificates.obtain(servers, states, settings, replaces=plan.decision.replaces)
        return certificates.stage(servers, settings, issued), plan.decision
    certificates.spread(servers, states, settings, plan.certificate)
    return plan.certificate, plan.decision


def _changes(servers: Servers, states: dict, settings: DeploySettings, local, release_id: str,
             cert: Installed) -> dict[Server, Change]:
    """What the commit changes on each host; every new vhost checked with nginx -t, not live."""
    cert_dir = str(settings.tls_dir / "certs" / cert.cert_id)
    changes = {}
    for server, st in states.items():
        error_page = "404.html" in (local.entries if local is not None else (st.manifest or {}))
        vhost = render_vhost(settings, st.build, cert_dir, error_page=error_page)
        live_cert = st.live.cert_id if st.live else ""
        changes[server] = Change(release_id, cert.cert_id if cert.cert_id != live_cert else "",
                                 vhost if vhost.text != st.vhost_text else None)
    servers.each_or_raise(lambda s: changes[s].vhost and nginx.test(s, settings, changes[s].vhost),
                          stage="testing the nginx vhost")
    return changes


def _commit_and_verify(servers: Servers, settings: DeploySettings, changes: dict[Server, Change],
                       previous: dict, cert: Installed, progress: Progress) -> None:
    changing = any(c.any for c in changes.values())
    if changing:
        progress.enter("committing")
        progress.committing = True
        try:
            releases.commit(servers, settings, changes)
        except releases.CommitFailed as exc:
            _settle(Servers.from_connections(exc.back), settings, changes, previous)  # wait until they serve so
            raise
        log.info("committed on %s: %s", ", ".join(map(str, servers)), _what(next(iter(changes.values()))))
    progress.enter("verifying the site")
    try:
        servers.each_or_raise(_confirm_and_verify, settings, changes, cert, stage="verifying the site")
    except BaseException as exc:
        if not changing:
            raise
        _put_back(servers, settings, changes, previous, exc)
    if changing:
        live = f"The new site is live and verified on {'every host' if len(servers) > 1 else str(next(iter(servers)))}"
        progress.enter("recording the verification")
        releases.mark_verified(servers, settings, live)
        progress.enter("finishing")
        releases.finish(servers, settings, live=live)
    progress.committing = False


def _put_back(servers: Servers, settings: DeploySettings, changes: dict[Server, Change], previous: dict,
              exc: BaseException) -> None:
    """A failed verification: every host back to what it served before; raise saying where each stands."""
    undone = releases.undo(servers, settings)
    back = [s for s in servers if undone[s] is None]
    _settle(Servers.from_connections(back), settings, changes, previous)
    if not isinstance(exc, Exception):
        raise exc
    if len(back) == len(servers):
        state = "every host serves what it served before"
    else:
        state = "putting it back FAILED on " + "; ".join(f"{s} ({e}): {releases.UNKNOWN}" for s, e in undone.items() if e)
    raise VerificationFailed(f"{exc}\nThe new release, vhost and certificate were put back: {state}. "
                             "A certificate issued in this deploy stays staged for the next one."
                             + ("" if len(back) == len(servers) else "\n" + releases.RETRY)) from exc


def _settle(servers: Servers, settings: DeploySettings, changes: dict[Server, Change], previous: dict) -> None:
    """After putting a host back: wait until nginx answers with the previous vhost again (a reload
    takes effect a moment later), and remove the release that never went live."""
    def settle(server: Server) -> None:
        if changes[server].vhost and previous[server]:
            nginx.confirm(server, settings, previous[server])
        if changes[server].release_id:
            upload.abort(server, settings, changes[server].release_id)
    for server, exc in servers.each(settle).failed.items():
        log.warning("[%s] after putting it back: %s", server, exc)


def _confirm_and_verify(server: Server, settings: DeploySettings, changes: dict[Server, Change], cert: Installed) -> None:
    if changes[server].vhost:
        nginx.confirm(server, settings, changes[server].vhost)
    single = len(changes) == 1
    address = verify.site_address(settings) if single else server.address
    verify.verify_site(settings, cert.certificate.serial_number, address)


def _what(change: Change) -> str:
    parts = [f"release {change.release_id}" if change.release_id else "",
             f"certificate {change.cert_id}" if change.cert_id else "", "vhost" if change.vhost else ""]
    return ", ".join(p for p in parts if p) or "nothing"


def rollback(settings: DeploySettings, to: str | None = None, progress: Progress | None = None) -> tuple[str, str | None]:
    """`fab rollback`: under the lock, every host to the same earlier release, or none."""
    progress = progress or Progress()
    servers = connect_all(settings)
    try:
        with hold(servers, settings, progress):
            states = read_states(servers, settings, progress)
            return releases.rollback(servers, settings, to, progress, {s: st.vhost_text for s, st in states.items()})
    finally:
        servers.close()


def list_releases(settings: DeploySettings) -> dict[str, list[releases.ReleaseInfo]]:
    """`fab releases`: each host's releases, oldest first."""
    servers = connect_all(settings)
    try:
        found = servers.each_or_raise(releases.list_releases, settings, stage="listing the releases")
        return {str(s): found[s] for s in servers}
    finally:
        servers.close()
