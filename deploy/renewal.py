"""The renewal decision: a pure function of the installed certificate, the settings, the CA's
renewal info (ARI, RFC 9773) and the clock. No network, no server, no randomness.

``decide()`` says what to do ("issue", "renew" or "keep"), why (one sentence for the log), and
when the answer will change. Renewal is never "a fixed number of days before expiry":
inside the CA's suggested window when it offers one (ARI), otherwise once 1/3 of the lifetime
is left (1/2 for lifetimes under 10 days, such as 6-day "shortlived" certificates).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .settings import KEY_TYPES, PROFILES  # noqa: F401 (re-exported; defined there so settings need no cryptography)
DEFAULT_ARI_RETRY = dt.timedelta(hours=6)  # RFC 9773 4.3.3: when the CA sends no usable Retry-After


@dataclass(frozen=True)
class Installed:
    """What the server has: the leaf certificate and what it was issued for (from meta.json)."""
    certificate: x509.Certificate
    directory: str
    domains: tuple[str, ...]
    key_type: str
    cert_id: str
    profile: str | None = None
    key_matches: bool | None = None  # None: could not be checked (no openssl on the server)


@dataclass(frozen=True)
class RenewalInfo:
    """The CA's suggested renewal window for one certificate (RFC 9773 section 4.2)."""
    cert_id: str  # the ARI certificate identifier it was fetched for
    window_start: dt.datetime
    window_end: dt.datetime
    retry_at: dt.datetime  # do not ask the CA again before this (its Retry-After)
    explanation_url: str | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # "issue" (nothing usable), "renew" (due), "keep"
    reason: str
    renew_from: dt.datetime | None = None  # when "keep" turns into "renew"
    not_after: dt.datetime | None = None
    replaces: str | None = None  # ARI cert id of the certificate a renewal replaces (RFC 9773 section 5)
    basis: str = ""  # "ari", "lifetime" or "" (issue: no renewal schedule applies)

    @property
    def needs_order(self) -> bool:
        return self.action != "keep"


def key_type_of(public_key) -> str:
    """The DEPLOY_KEY_TYPE name of a public key ('ec-p256', 'rsa2048', ...), or a description."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name, f"ec-{public_key.curve.name}")
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    return type(public_key).__name__


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(DER serial number bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    serial = cert.serial_number
    # The DER INTEGER content: big-endian, two's complement, so a leading 0x00 when the top bit is set.
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    b64 = lambda b: base64.urlsafe_b64encode(b).decode("ascii").rstrip("=")  # noqa: E731
    return f"{b64(aki)}.{b64(serial_bytes)}"


def ari_cert_id_or_none(cert: x509.Certificate) -> str | None:
    try:
        return ari_cert_id(cert)
    except x509.ExtensionNotFound:
        return None


def lifetime_renewal_start(cert: x509.Certificate) -> dt.datetime:
    """When 1/3 of the lifetime is left (1/2 for lifetimes under 10 days): never a fixed day count."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    lifetime = end - start
    share_left = 0.5 if lifetime < dt.timedelta(days=10) else 1 / 3
    return end - lifetime * share_left


def ari_renewal_time(info: RenewalInfo) -> dt.datetime:
    """A point inside the window, as RFC 9773 4.2 asks ("uniformly at random"), but derived from the
    certificate id so that every run (and `fab status`) agrees on it and CAs still see renewals spread."""
    span = max(info.window_end - info.window_start, dt.timedelta(0))
    fraction = int.from_bytes(hashlib.sha256(info.cert_id.encode()).digest()[:8], "big") / 2**64
    return info.window_start + span * fraction


def wants_renewal_info(installed: Installed | None, settings, cached: RenewalInfo | None,
                       now: dt.datetime) -> bool:
    """Whether to ask the CA for ARI now: only for a certificate that could be kept, only from its own
    CA, never after expiry (RFC 9773 4.3), and not before the CA's Retry-After (then the cache serves)."""
    if installed is None or _must_issue(installed, settings, now):
        return False
    try:
        cert_id = ari_cert_id(installed.certificate)
    except x509.ExtensionNotFound:  # no Authority Key Identifier: not from an ACME CA, no ARI for it
        return False
    return cached is None or cached.cert_id != cert_id or now >= cached.retry_at


def _must_issue(installed: Installed, settings, now: dt.datetime) -> str | None:
    """Why the installed certificate cannot be kept at all, or None."""
    cert = installed.certificate
    if installed.directory != settings.acme_directory:
        return f"the CA directory changed ({installed.directory} -> {settings.acme_directory})"
    if tuple(sorted(installed.domains)) != tuple(sorted(settings.domains)):
        return f"the domain set changed ({', '.join(installed.domains)} -> {', '.join(settings.domains)})"
    actual_key_type = key_type_of(cert.public_key())
    if installed.key_type != settings.key_type or actual_key_type != settings.key_type:
        return f"the key type changed ({actual_key_type} -> {settings.key_type})"
    if (installed.profile or None) != (settings.acme_profile or None):
        return f"the ACME profile changed ({installed.profile or 'CA default'} -> {settings.acme_profile or 'CA default'})"
    if installed.key_matches is False:
        return "the installed certificate does not match the installed private key"
    if now >= cert.not_valid_after_utc:
        return f"the certificate expired on {_t(cert.not_valid_after_utc)}"
    return None


def decide(installed: Installed | None, settings, now: dt.datetime,
           renewal_info: RenewalInfo | None = None) -> Decision:
    """What to do with the certificate, and why. ``settings`` needs acme_directory, domains,
    key_type and acme_profile; ``renewal_info`` is the CA's ARI answer for the installed certificate."""
    if installed is None:
        return Decision("issue", "no certificate installed yet")
    cert = installed.certificate
    not_after = cert.not_valid_after_utc
    why = _must_issue(installed, settings, now)
    if why:
        return Decision("issue", why, not_after=not_after)

    if renewal_info is not None and renewal_info.cert_id == ari_cert_id_or_none(cert):
        renew_from = ari_renewal_time(renewal_info)
        window = f"the CA's renewal window (ARI) is {_t(renewal_info.window_start)} to {_t(renewal_info.window_end)}"
        if now >= renew_from:
            return Decision("renew", f"valid until {_t(not_after)}, {window}, renewing (from {_t(renew_from)})",
                            renew_from, not_after, replaces=renewal_info.cert_id, basis="ari")
        return Decision("keep", f"valid until {_t(not_after)}, renews from {_t(renew_from)} ({window}): nothing to do",
                        renew_from, not_after, basis="ari")

    renew_from = lifetime_renewal_start(cert)
    share = "1/2" if not_after - cert.not_valid_before_utc < dt.timedelta(days=10) else "1/3"
    if now >= renew_from:
        return Decision("renew", f"valid until {_t(not_after)}, {share} of its lifetime left since {_t(renew_from)}: renewing",
                        renew_from, not_after, basis="lifetime")
    return Decision("keep", f"valid until {_t(not_after)}, renews from {_t(renew_from)} ({share} of its lifetime left): nothing to do",
                    renew_from, not_after, basis="lifetime")


def forced(decision: Decision, installed: Installed | None) -> Decision:
    """`fab renew --force`: an order even though none is due (a renewal of the same certificate)."""
    if decision.needs_order:
        return decision
    return Decision("renew", "renewal forced (--force)", decision.renew_from, decision.not_after, basis=decision.basis)


def _t(when: dt.datetime) -> str:
    return f"{when.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
