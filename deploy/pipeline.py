"""The deploy, stage by stage. Each stage lives in its own module; this file only orders them.

Order matters for "nothing lost": the release is uploaded but not live; the certificate is
obtained and staged but not live; the vhost and certificate go live together behind
`nginx -t`; only then does `current` switch to the new release; then the site is checked
from outside. A failure at any step leaves the live site and certificate as they were.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from . import certificates, nginx, upload, verify
from .connection import connect
from .settings import DeploySettings

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
    conn = connect(settings)
    try:
        release_id = None
        if upload_site:
            release_id = upload.upload_release(conn, settings, upload.new_release_id())
            log.info("uploaded release %s", release_id)

        version = nginx.read_version(conn, settings)
        # One SSH round trip (plus the CA's renewal info when it offers ARI); decide() is pure.
        cert_check = certificates.check(conn, settings, dt.datetime.now(dt.timezone.utc), force=force_renew)
        installed, decision = cert_check.installed, cert_check.decision
        log.info("certificate: %s", decision.reason)

        new_cert = None
        if decision.needs_order:
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
        if release_id:
            upload.activate(conn, settings, release_id)
        verify.verify_site(settings, expected_serial=serial)
        if release_id:
            pruned = upload.prune(conn, settings)
            if pruned:
                log.info("pruned %d old release(s)", len(pruned))
        return DeployResult(release_id or "", decision.action, decision.reason, serial, not_after, settings.https_origin + "/")
    finally:
        conn.close()
