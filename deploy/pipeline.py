"""The deploy, stage by stage. Each stage lives in its own module; this file only orders them.

Order matters for "nothing lost": the release is uploaded but not live; the certificate is
obtained and staged but not live; the vhost and certificate go live together behind
`nginx -t`; only then does `current` switch to the new release; then the site is checked
from outside. A failure at any step leaves the live site and certificate as they were.
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import certificates, lock, nginx, verify
from .connection import ChannelShell, connect
from .settings import DeploySettings

# The upload's modules (upload, manifest, remote: ~40 ms of imports) are imported where a
# release is sent or listed: `fab renew` never needs them.

log = logging.getLogger("pelican_https.deploy")


@dataclass(frozen=True)
class DeployResult:
    release_id: str
    certificate_action: str
    certificate_reason: str
    serial: int
    not_after: dt.datetime
    url: str


def deploy(settings: DeploySettings, *, upload_site: bool = True, force_renew: bool = False) -> DeployResult:
    # The lock is held from here to the end (all stages). With an upload, the lock and the
    # upload use their own OpenSSH connection (deploy/remote.py): the lock shell opens it, in
    # parallel with Fabric's connection for the other stages, while the output is hashed.
    # Without an upload (`fab renew`), the lock shell runs on a session of Fabric's connection
    # instead: one SSH handshake fewer.
    def take_lock(remote, probe_script: str = "") -> lock.DeployLock:
        return lock.DeployLock(remote, settings, probe_script=probe_script,
                               on_wait=lambda holder: log.info("waiting up to %d s for the deploy lock held by %s",
                                                               settings.lock_timeout, holder))
    if not upload_site:
        conn = connect(settings)
        try:
            deploy_lock = take_lock(ChannelShell(conn, settings))
            with deploy_lock:
                return _deploy_locked(conn, deploy_lock, settings, None, force_renew)
        finally:
            conn.close()
    from . import upload
    from .remote import Remote

    local = upload.start_scan(settings)
    remote = Remote(settings)
    try:
        deploy_lock = take_lock(remote, upload.probe_script(settings))
        conn = connect(settings)
        try:
            with deploy_lock:
                return _deploy_locked(conn, deploy_lock, settings, local, force_renew)
        finally:
            conn.close()
    finally:
        remote.close()


def _deploy_locked(conn, deploy_lock: lock.DeployLock, settings: DeploySettings, local, force_renew: bool) -> DeployResult:
    release_id, staged = None, None
    if force_renew:  # an order will come: load the ACME machinery during the next round trips
        certificates.preload_acme()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="look") as pool:
        # Read-only and under the lock, so they run at the same time, on sessions of Fabric's
        # connection, while the release travels over OpenSSH: nginx's version, and the
        # certificate check (one SSH round trip, plus the CA's renewal info when it offers ARI).
        version_future = pool.submit(nginx.read_version, conn, settings)
        check_future = pool.submit(certificates.check, conn, settings, dt.datetime.now(dt.timezone.utc), force=force_renew)
        if local is not None:
            from . import upload
            progress = upload.ProgressBar()
            try:
                staged = upload.deliver(deploy_lock, settings, local.result(), progress)
            finally:
                progress.finish()
            log.info("%s", staged.summary())
            release_id = staged.release_id
        version, cert_check = version_future.result(), check_future.result()
    installed, decision = cert_check.installed, cert_check.decision
    log.info("certificate: %s", decision.reason)

    new_cert = None
    if decision.needs_order:
        certificates.preload_acme()  # while nginx is made ready for the challenge
        # nginx must answer the challenge for every name before the order. No certificate yet
        # (first deploy): a port-80-only vhost, since a vhost naming a missing certificate fails
        # `nginx -t`. Otherwise the full vhost on the current certificate, so that names added
        # to DEPLOY_DOMAINS are answered too. Unchanged vhost: no reload.
        nginx.apply_config(conn, settings, nginx.render_vhost(
            settings, version, with_tls=installed is not None,
            certificate_dir=nginx.certificate_dir(settings, installed)))
        issued = certificates.obtain(conn, settings, replaces=decision.replaces)
        new_cert = str(certificates.stage_certificate(conn, settings, issued))
        serial, not_after = issued.certificate.serial_number, issued.certificate.not_valid_after_utc
    else:
        serial, not_after = installed.certificate.serial_number, installed.certificate.not_valid_after_utc

    nginx.apply_config(conn, settings, nginx.render_vhost(
        settings, version, with_tls=True, certificate_dir=new_cert or nginx.certificate_dir(settings, installed)), new_cert)
    if release_id and not staged.skipped:  # (``upload`` was imported above: release_id comes from it)
        # Switch and prune in one round trip, in the lock's shell: pruning never touches the live release.
        pruned = upload.activate(deploy_lock, settings, release_id, prune=True)
        if pruned:
            log.info("pruned %d old release(s): %s", len(pruned), ", ".join(pruned))
    verify.verify_site(settings, expected_serial=serial)
    return DeployResult(release_id or "", decision.action, decision.reason, serial, not_after, settings.https_origin + "/")


def rollback(settings: DeploySettings, to: str | None = None) -> tuple[str, str | None]:
    """`fab rollback`: under the deploy lock, switch `current` to an earlier release."""
    from . import upload
    from .remote import Remote

    with Remote(settings) as remote:
        deploy_lock = lock.hold(remote, settings)
        with deploy_lock:  # the listing and the switch run in the lock's shell: no more SSH sessions
            return upload.rollback(deploy_lock, settings, to)


def list_releases(settings: DeploySettings) -> list:
    """`fab releases` (and `fab status`): the releases on the server (upload.ReleaseInfo), oldest first."""
    from . import upload
    from .remote import Remote

    with Remote(settings) as remote:
        return upload.list_releases(remote, settings)
