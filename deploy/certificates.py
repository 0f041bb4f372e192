"""The certificate stage: decide, then (only if needed) run an RFC 8555 order over HTTP-01.

The stage reads the server's certificate state in one SSH round trip, asks the CA for its
renewal window when it offers ARI (honouring Retry-After through a small cache on the server),
and decides with the pure ``renewal.decide()``. When an order is needed: the challenge path is
checked the way the CA will (``diagnose``) before the CA is asked anything, the order runs
through ``acme_client``, and key and chain are staged in a new folder tls/certs/<id>/.
The ``tls/live`` symlink that nginx reads is switched by the caller, together with the vhost,
so both can be rolled back as one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import secrets
import shlex
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fabric import Connection

from . import ari, diagnose
from .connection import shell
from .errors import CertificateError
from .renewal import Decision, Installed, RenewalInfo, decide, forced  # noqa: F401 (re-exported)
from .renewal import ari_cert_id_or_none, wants_renewal_info
from .settings import DeploySettings

log = logging.getLogger("pelican_https.deploy")

LIVE = "live"  # tls/live -> certs/<id>: nginx reads tls/live/{fullchain,privkey}.pem
KEEP_CERTIFICATES = 3  # tls/certs/<id>: the new one, the live one, one more
ARI_CACHE = "ari.json"  # tls/ari.json: the CA's last renewal info, kept until its Retry-After


# --- reading the server's state (one round trip) ----------------------------------------

_MARK = "----8<---- pelican-https ----8<----"


@dataclass(frozen=True)
class Check:
    """The outcome of the certificate check: what is installed, what the CA suggests, what to do."""
    installed: Installed | None
    renewal_info: RenewalInfo | None
    decision: Decision
    ssh_round_trips: int


def read_state(conn: Connection, settings: DeploySettings) -> tuple[Installed | None, RenewalInfo | None]:
    """meta.json, the chain, the key's public half (computed on the server: the private key never
    travels) and the cached renewal info, in one SSH round trip."""
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    live = settings.tls_dir / LIVE
    key = live / "privkey.pem"
    script = "; ".join([
        f"cat {q(live / 'meta.json')} 2>/dev/null", f"echo {q(_MARK)}",
        f"cat {q(live / 'fullchain.pem')} 2>/dev/null", f"echo {q(_MARK)}",
        f"if [ ! -e {q(key)} ]; then echo NO-KEY; elif command -v openssl >/dev/null; "
        f"then openssl pkey -in {q(key)} -pubout 2>/dev/null; else echo NO-OPENSSL; fi", f"echo {q(_MARK)}",
        f"cat {q(settings.tls_dir / ARI_CACHE)} 2>/dev/null", "true",
    ])
    parts = shell(conn, script, what="reading the installed certificate").split(_MARK + "\n")
    meta_text, chain, public_key, ari_text = (parts + ["", "", "", ""])[:4]
    return _parse_installed(meta_text, chain, public_key), _parse_ari_cache(ari_text)


def _parse_installed(meta_text: str, chain: str, public_key: str) -> Installed | None:
    if not meta_text.strip() or "BEGIN CERTIFICATE" not in chain:
        return None
    try:
        meta = json.loads(meta_text)
        cert = x509.load_pem_x509_certificate(chain.encode())
        if "NO-OPENSSL" in public_key:
            matches = None  # cannot tell without openssl on the server; nginx -t still checks at install
        elif "PUBLIC KEY" in public_key:
            served = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            matches = serialization.load_pem_public_key(public_key.encode()).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == served
        else:
            matches = False  # no key, or openssl could not read it
        return Installed(cert, meta["directory"], tuple(meta["domains"]), meta.get("key_type", "ec-p256"),
                         meta.get("id", ""), meta.get("profile"), matches)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("the installed certificate's files are unreadable (%s): a new one will be issued", exc)
        return None


def _parse_ari_cache(text: str) -> RenewalInfo | None:
    try:
        raw = json.loads(text)
        return RenewalInfo(raw["cert_id"], dt.datetime.fromisoformat(raw["window_start"]),
                           dt.datetime.fromisoformat(raw["window_end"]), dt.datetime.fromisoformat(raw["retry_at"]),
                           raw.get("explanation_url"))
    except (ValueError, KeyError, TypeError):
        return None  # no cache yet, or unreadable: ask the CA


def _ari_cache_json(info: RenewalInfo) -> bytes:
    return json.dumps({"cert_id": info.cert_id, "window_start": info.window_start.isoformat(),
                       "window_end": info.window_end.isoformat(), "retry_at": info.retry_at.isoformat(),
                       "explanation_url": info.explanation_url}, indent=2).encode()


def check(conn: Connection, settings: DeploySettings, now: dt.datetime, *, force: bool = False,
          save_renewal_info: bool = True) -> Check:
    """Read the server's state, ask the CA for its renewal window if due, and decide.
    One SSH round trip; a second one only when a fresh ARI answer is cached (once per Retry-After)."""
    installed, cached = read_state(conn, settings)
    trips = 1
    info = cached if installed and cached and cached.cert_id == ari_cert_id_or_none(installed.certificate) else None
    if wants_renewal_info(installed, settings, cached, now):
        fetched = ari.fetch_renewal_info(settings, installed.certificate, _verify(settings), now)
        if fetched is not None and save_renewal_info:
            write_private_file(conn, settings.tls_dir / ARI_CACHE, _ari_cache_json(fetched))
            trips += 1
        info = fetched or info  # the CA did not answer: its last window (if any) still stands
    decision = decide(installed, settings, now, info)
    if force:
        decision = forced(decision, installed)
    return Check(installed, info, decision, trips)


def _verify(settings: DeploySettings):
    return str(settings.acme_ca_bundle) if settings.acme_ca_bundle else True


# --- the ACME order (RFC 8555) ----------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    cert_id: str
    fullchain_pem: bytes
    key_pem: bytes
    certificate: x509.Certificate


def new_private_key(key_type: str):
    """The certificate's key, generated in memory and written only on the server."""
    if key_type.startswith("ec-"):
        return ec.generate_private_key({"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}[key_type])
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))


def preload_acme() -> None:
    """Import the ACME machinery in a background thread (~0.1 s of imports: requests, acme).

    ``obtain`` imports it lazily, so that a deploy with nothing due never pays for it; when an
    order is known to come (``--force``, or the check said so), this overlaps those imports with
    the SSH round trips before the order. Importing twice is safe: Python's import lock makes
    ``obtain`` wait for a module the thread is still importing.
    """
    global _preloading
    if _preloading is None:
        _preloading = threading.Thread(target=_import_acme, name="preload-acme", daemon=True)
        _preloading.start()


_preloading: threading.Thread | None = None


def _import_acme() -> None:
    import requests  # noqa: F401
    from acme import challenges, crypto_util, messages  # noqa: F401

    from . import acme_client  # noqa: F401


def obtain(conn: Connection, settings: DeploySettings, *, replaces: str | None = None, timeout: float = 90.0) -> Issued:
    """Run one order for all domains. The challenge path is checked with a probe token before the CA
    is asked anything; token files live in the challenge folder only while needed."""
    # The ACME machinery is loaded only when an order is due (a deploy with nothing due starts faster).
    import requests
    from acme import challenges, crypto_util, errors as acme_errors, messages

    from . import acme_client

    deadline = time.monotonic() + timeout
    peer = conn.client.get_transport().getpeername()[0]
    here = diagnose.server_addresses(settings, peer)

    # 1. One round trip: put a probe token in the challenge folder and read the account key.
    probe_token, probe_value = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    account_key = _prepare(conn, settings, probe_token, probe_value)
    tokens: list[str] = [probe_token]
    try:
        # 2. The challenge path works for every domain and address, or we stop here: the CA is not asked.
        diagnose.check(settings, here, probe_token, probe_value)

        # 3. RFC 8555: directory, account (looked up, registered only if unknown), new order.
        session = acme_client.open_session(settings, account_key, _verify(settings))
        key = new_private_key(settings.key_type)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        csr_pem = crypto_util.make_csr(key_pem, list(settings.domains))
        order = acme_client.new_order(session, csr_pem, list(settings.domains), profile=settings.acme_profile, replaces=replaces)
        log.info("order %s for %s%s", order.uri, ", ".join(settings.domains), f" (replaces {replaces})" if replaces else "")

        # 4. HTTP-01 (RFC 8555 8.3): one token file per pending authorization, all in one round trip.
        pending = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # RFC 8555 7.1.4: an authorization the account already holds
            challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise CertificateError(f"the CA offers no HTTP-01 challenge for {authz.body.identifier.value}")
            response, validation = challb.response_and_validation(session.net.key)
            pending.append((authz, challb, response, challb.chall.encode("token"), validation))
        _put_tokens(conn, settings, [(t, v) for *_, t, v in pending], remove=[probe_token])
        tokens = [t for *_, t, _ in pending]
        for authz, _, _, token, validation in pending:  # the real token, at the same addresses: cheap insurance
            diagnose.check_domain(settings, authz.body.identifier.value, here, token, validation)

        # 5. Answer, poll, finalize, download.
        for authz, challb, response, _, _ in pending:
            session.acme.answer_challenge(challb, response)
        acme_client.poll_authorizations(session, [authz for authz, *_ in pending], deadline)
        chain = acme_client.finalize(session, order, deadline).encode()
    except (messages.Error, acme_errors.Error) as exc:
        detail = acme_client.explain(exc) if isinstance(exc, messages.Error) else str(exc)
        raise CertificateError(f"the ACME order failed: {detail}") from exc
    except requests.RequestException as exc:  # the CA went away mid-order: nothing was installed
        raise CertificateError(f"lost the connection to the CA ({settings.acme_directory}) during the order: {exc}. "
                               "Nothing was installed; run the deploy again (the CA may be down: check its status page)") from exc
    finally:
        if tokens:  # whatever happened: no token file stays behind
            shell(conn, "rm -f -- " + " ".join(shlex.quote(str(settings.challenge_dir / t)) for t in tokens),
                  what="removing challenge tokens")
    cert = x509.load_pem_x509_certificate(chain)
    _check_issued(cert, key, settings)
    cert_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}-{cert.serial_number:x}"[:60]
    log.info("issued certificate serial %x, valid until %s", cert.serial_number, cert.not_valid_after_utc)
    return Issued(cert_id, chain, key_pem, cert)


def _check_issued(cert: x509.Certificate, key, settings: DeploySettings) -> None:
    """Never stage a chain that nginx would reject or that misses a name."""
    spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
    if spki(cert.public_key()) != spki(key.public_key()):
        raise CertificateError("the CA returned a certificate for another key; nothing was installed")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    missing = sorted(set(settings.domains) - set(names))
    if missing:
        raise CertificateError(f"the CA's certificate does not cover {', '.join(missing)}; nothing was installed")


def _prepare(conn: Connection, settings: DeploySettings, probe_token: str, probe_value: str) -> ec.EllipticCurvePrivateKey:
    """Write the probe token and read the account key (one per CA directory, 0600) in one round trip."""
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    path = account_key_path(settings)
    pem = shell(conn, f"umask 022 && cat > {q(settings.challenge_dir / probe_token)} && (cat {q(path)} 2>/dev/null || true)",
                stdin=io.BytesIO(probe_value.encode()), what="preparing the challenge check")
    if "PRIVATE KEY" in pem:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"the ACME account key {path} on the server is not an EC key; move it away to start a new account")
        return key
    # First order against this CA: the key is made here and kept on the server, never per run.
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_file(conn, path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return key


def account_key_path(settings: DeploySettings) -> PurePosixPath:
    return settings.accounts_dir / (hashlib.sha256(settings.acme_directory.encode()).hexdigest()[:16] + ".pem")


def write_private_file(conn: Connection, path: PurePosixPath, data: bytes) -> None:
    """Write a 0600 file atomically: temporary name, then rename. The data travels on stdin only."""
    q = shlex.quote
    tmp = f"{path}.tmp"
    shell(conn, f"umask 077 && mkdir -p {q(str(path.parent))} && cat > {q(tmp)} && mv -f {q(tmp)} {q(str(path))}",
          stdin=io.BytesIO(data), what=f"writing {path}")


def _put_tokens(conn: Connection, settings: DeploySettings, tokens: list[tuple[str, str]], remove: list[str]) -> None:
    # acme-tiny's lesson: the token becomes a file name, so it must be base64url only.
    for token, _ in tokens:
        if not token or not all(c.isalnum() or c in "-_" for c in token):
            raise CertificateError(f"the CA sent a token that is not base64url: {token!r}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for token, validation in tokens:
            info = tarfile.TarInfo(token)
            info.size, info.mode, info.mtime = len(validation.encode()), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(validation.encode()))
    buf.seek(0)
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    removals = "".join(f"rm -f -- {q(settings.challenge_dir / t)}; " for t in remove)
    shell(conn, f"{removals}umask 022 && tar -xf - -C {q(settings.challenge_dir)} --no-same-owner",
          stdin=buf, what="writing the challenge tokens")


# --- putting it on the server -----------------------------------------------------------

def stage_certificate(conn: Connection, settings: DeploySettings, issued: Issued) -> PurePosixPath:
    """Write key, chain and metadata into a new folder tls/certs/<id>/ (0700, key 0600). Not live yet."""
    meta = {"id": issued.cert_id, "directory": settings.acme_directory, "domains": list(settings.domains),
            "key_type": settings.key_type, "profile": settings.acme_profile, "serial": f"{issued.certificate.serial_number:x}"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("privkey.pem", issued.key_pem), ("fullchain.pem", issued.fullchain_pem),
                           ("meta.json", json.dumps(meta, indent=2).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    target = settings.tls_dir / "certs" / issued.cert_id
    q = shlex.quote
    # Same round trip: drop leftovers of interrupted stagings, and old certificates beyond the newest
    # KEEP_CERTIFICATES (never the live one: it is what a failed install goes back to).
    shell(conn, f"umask 077 && mkdir -p {q(str(target.parent))} && cd {q(str(target.parent))} && rm -rf -- *.partial "
                f"&& mkdir {q(target.name)}.partial && tar -xf - -C {q(target.name)}.partial "
                f"&& mv {q(target.name)}.partial {q(target.name)} "
                f"&& live=$(basename \"$(readlink ../{LIVE} 2>/dev/null || echo none)\") "
                f"&& ls -1 | sort | head -n -{KEEP_CERTIFICATES} | while read -r old; do "
                f"[ \"$old\" = \"$live\" ] || rm -rf -- \"$old\"; done",
          stdin=buf, what="installing the new certificate")
    return target
