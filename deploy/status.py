"""`fab status`: what the server has and what the next deploy will do, without changing anything.

Per domain: the certificate covering it (issuer, serial, valid until); the next renewal time and
why (ARI window or lifetime rule); the CA directory; the last deploy. ``report()`` is a pure
function of what ``collect()`` read (one SSH round trip for the certificate, one for the releases,
and the CA's renewal info when it offers ARI).
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass

from cryptography import x509

from . import certificates, upload
from .connection import connect, shell
from .settings import DeploySettings


@dataclass(frozen=True)
class Status:
    check: certificates.Check
    last_release: str | None  # id of the live release (names sort in time order)
    release_count: int | None  # None: unknown (no release listing available)
    now: dt.datetime


def collect(settings: DeploySettings, now: dt.datetime | None = None) -> Status:
    now = now or dt.datetime.now(dt.timezone.utc)
    conn = connect(settings)
    try:
        # Read-only: the ARI answer is not cached by a status query.
        check = certificates.check(conn, settings, now, save_renewal_info=False)
        lister = getattr(upload, "list_releases", None)
        if lister is not None:
            releases = lister(conn, settings)
            live = next((r.id for r in releases if r.live), None)
            return Status(check, live, len(releases), now)
        target = shell(conn, f"readlink {shlex.quote(str(settings.current_link))} || true", what="reading the live release")
        return Status(check, target.strip().rsplit("/", 1)[-1] or None, None, now)
    finally:
        conn.close()


def report(status: Status, settings: DeploySettings) -> str:
    """The text `fab status` prints. Pure."""
    check = status.check
    installed, decision = check.installed, check.decision
    lines = [f"CA directory: {settings.acme_directory}"]
    if installed is None:
        lines.append("certificate: none installed yet")
        names: list[str] = []
    else:
        cert = installed.certificate
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        issuer = cert.issuer.rfc4514_string()
        for domain in settings.domains:
            if domain in names:
                lines.append(f"{domain}: issuer {issuer}, serial {cert.serial_number:x}, "
                             f"valid until {_t(cert.not_valid_after_utc)}")
            else:
                lines.append(f"{domain}: not covered by the installed certificate (the next deploy issues one that is)")
        lines.append(f"key: {installed.key_type}, profile: {installed.profile or 'CA default'}")
    if decision.action == "keep":
        why = ("the CA's renewal window (ARI)" if decision.basis == "ari" else "the lifetime rule")
        lines.append(f"next renewal: {_t(decision.renew_from)} ({why})")
    else:
        lines.append(f"next renewal: at the next deploy or `fab renew` ({decision.action}: {decision.reason})")
    lines.append(f"decision now: {decision.action}: {decision.reason}")
    if check.renewal_info is not None:
        info = check.renewal_info
        lines.append(f"ARI: window {_t(info.window_start)} to {_t(info.window_end)}, ask again after {_t(info.retry_at)}"
                     + (f", explanation {info.explanation_url}" if info.explanation_url else ""))
    if status.last_release:
        count = f" ({status.release_count} release(s) kept)" if status.release_count is not None else ""
        lines.append(f"last deploy: release {status.last_release}{count}")
    else:
        lines.append("last deploy: none (no live release)")
    return "\n".join(lines)


def _t(when: dt.datetime | None) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else "unknown"
