"""The certificate stage: decide, then (only if needed) run an RFC 8555 order over HTTP-01.

Pure core: ``decide()`` looks at the installed certificate, the settings and the clock and says
what to do and why. Edges: ``read_installed()`` fetches the server's certificate state in one SSH
round trip; ``obtain()`` talks to the CA, putting token files on the server; ``stage_certificate()``
writes key and chain into a new folder on the server. The ``tls/live`` symlink that nginx reads
is switched by the caller, together with the vhost, so both can be rolled back as one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import io
import json
import logging
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

import josepy as jose
from acme import challenges, client, crypto_util, errors as acme_errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fabric import Connection

from .connection import run, shell
from .errors import CertificateError
from .settings import DeploySettings

log = logging.getLogger("pelican_https.deploy")

KEY_TYPE = "ec-p256"  # DESIGN: EC P-256 by default
LIVE = "live"  # tls/live -> certs/<id>: nginx reads tls/live/{fullchain,privkey}.pem


# --- the decision (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Installed:
    """What the server has: the leaf certificate and what it was issued for."""
    certificate: x509.Certificate
    directory: str
    domains: tuple[str, ...]
    key_type: str
    cert_id: str


@dataclass(frozen=True)
class Decision:
    action: str  # "issue" (nothing usable), "renew" (due), "keep"
    reason: str
    renew_from: dt.datetime | None = None

    @property
    def needs_order(self) -> bool:
        return self.action != "keep"


def renewal_start(cert: x509.Certificate) -> dt.datetime:
    """When 1/3 of the lifetime is left (1/2 for lifetimes under 10 days): never a fixed day count."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    lifetime = end - start
    share_left = 0.5 if lifetime < dt.timedelta(days=10) else 1 / 3
    return end - lifetime * share_left


def decide(installed: Installed | None, settings: DeploySettings, now: dt.datetime) -> Decision:
    if installed is None:
        return Decision("issue", "no certificate installed yet")
    cert = installed.certificate
    if installed.directory != settings.acme_directory:
        return Decision("issue", f"the CA directory changed ({installed.directory} -> {settings.acme_directory})")
    if tuple(sorted(installed.domains)) != tuple(sorted(settings.domains)):
        return Decision("issue", f"the domain set changed ({', '.join(installed.domains)} -> {', '.join(settings.domains)})")
    if installed.key_type != KEY_TYPE:
        return Decision("issue", f"the key type changed ({installed.key_type} -> {KEY_TYPE})")
    if now >= cert.not_valid_after_utc:
        return Decision("issue", f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    renew_from = renewal_start(cert)
    if now >= renew_from:
        return Decision("renew", f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, renewal window opened {renew_from:%Y-%m-%d %H:%M} UTC", renew_from)
    return Decision("keep", f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, renews from {renew_from:%Y-%m-%d %H:%M} UTC: nothing to do", renew_from)


# --- reading the server's state (one round trip) ----------------------------------------

_MARK = "----8<---- pelican-https ----8<----"


def read_installed(conn: Connection, settings: DeploySettings) -> Installed | None:
    live = settings.tls_dir / LIVE
    script = (f"cat {shlex.quote(str(live / 'meta.json'))} 2>/dev/null; echo {shlex.quote(_MARK)}; "
              f"cat {shlex.quote(str(live / 'fullchain.pem'))} 2>/dev/null; true")
    meta_text, _, chain = shell(conn, script, what="reading the installed certificate").partition(_MARK + "\n")
    if not meta_text.strip() or "BEGIN CERTIFICATE" not in chain:
        return None
    try:
        meta = json.loads(meta_text)
        cert = x509.load_pem_x509_certificate(chain.encode())
        return Installed(cert, meta["directory"], tuple(meta["domains"]), meta.get("key_type", ""), meta.get("id", ""))
    except (ValueError, KeyError) as exc:
        log.warning("the installed certificate's files are unreadable (%s): a new one will be issued", exc)
        return None


# --- the ACME order (RFC 8555) ----------------------------------------------------------

class PatientNetwork(client.ClientNetwork):
    """ClientNetwork that retries badNonce more than once (RFC 8555 section 6.5: always retryable)."""

    def post(self, *args, **kwargs):
        for attempt in range(10):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == 9:
                    raise
                log.debug("badNonce, retrying with a fresh nonce")


@dataclass(frozen=True)
class Issued:
    cert_id: str
    fullchain_pem: bytes
    key_pem: bytes
    certificate: x509.Certificate


def obtain(conn: Connection, settings: DeploySettings, *, timeout: float = 90.0) -> Issued:
    """Run one order for all domains; token files live in the challenge folder only while needed."""
    deadline = time.monotonic() + timeout
    acme = _client(conn, settings)
    key = ec.generate_private_key(ec.SECP256R1())  # generated in memory, written only on the server
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    csr_pem = crypto_util.make_csr(key_pem, list(settings.domains))
    try:
        order = acme.new_order(csr_pem)
    except messages.Error as exc:
        raise CertificateError(f"the CA refused the new order for {', '.join(settings.domains)}: {exc}") from exc
    log.info("order %s for %s", order.uri, ", ".join(settings.domains))

    tokens: list[str] = []
    try:
        pending = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # RFC 8555 7.1.4: an authorization the account already holds
            challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise CertificateError(f"the CA offers no HTTP-01 challenge for {authz.body.identifier.value}")
            response, validation = challb.response_and_validation(acme.net.key)
            token = challb.chall.encode("token")
            _put_token(conn, settings, token, validation)
            tokens.append(token)
            _self_check(settings, authz.body.identifier.value, token, validation)
            pending.append((authz, challb, response))
        for authz, challb, response in pending:
            acme.answer_challenge(challb, response)
        for authz, _, _ in pending:
            _poll_authorization(acme, authz, deadline)
        order = _finalize(acme, order, deadline)
    except (messages.Error, acme_errors.Error) as exc:
        raise CertificateError(f"the ACME order failed: {exc}") from exc
    finally:
        if tokens:
            run(conn, ["rm", "-f", "--", *[str(settings.challenge_dir / t) for t in tokens]], what="removing challenge tokens")
    chain = order.fullchain_pem.encode()
    cert = x509.load_pem_x509_certificate(chain)
    cert_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{cert.serial_number:x}"[:60]
    log.info("issued certificate serial %x, valid until %s", cert.serial_number, cert.not_valid_after_utc)
    return Issued(cert_id, chain, key_pem, cert)


def _client(conn: Connection, settings: DeploySettings) -> client.ClientV2:
    account_key = _account_key(conn, settings)
    jwk = jose.JWKEC(key=account_key)
    verify = str(settings.acme_ca_bundle) if settings.acme_ca_bundle else True
    net = PatientNetwork(jwk, alg=jose.ES256, verify_ssl=verify, user_agent="pelican-https")
    try:
        directory = client.ClientV2.get_directory(settings.acme_directory, net)
    except Exception as exc:  # requests raises many kinds; all mean "the CA is not reachable"
        raise CertificateError(f"cannot read the ACME directory {settings.acme_directory}: {exc}") from exc
    acme = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(email=settings.acme_email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
        log.info("registered a new ACME account")
    except acme_errors.ConflictError as exists:
        # RFC 8555 7.3.1: the key is already registered; the Location header names the account.
        net.account = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
    return acme


def _account_key(conn: Connection, settings: DeploySettings) -> ec.EllipticCurvePrivateKey:
    """The account key lives on the server (0600), one per CA directory: CI runners stay stateless."""
    path = settings.accounts_dir / (hashlib.sha256(settings.acme_directory.encode()).hexdigest()[:16] + ".pem")
    pem = shell(conn, f"cat {shlex.quote(str(path))} 2>/dev/null || true", what="reading the ACME account key")
    if "PRIVATE KEY" in pem:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"the ACME account key {path} on the server is not an EC key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private_file(conn, path, data)
    return key


def write_private_file(conn: Connection, path: PurePosixPath, data: bytes) -> None:
    """Write a 0600 file atomically: temporary name, then rename. The data travels on stdin only."""
    q = shlex.quote
    tmp = f"{path}.tmp"
    shell(conn, f"umask 077 && mkdir -p {q(str(path.parent))} && cat > {q(tmp)} && mv -f {q(tmp)} {q(str(path))}",
          stdin=io.BytesIO(data), what=f"writing {path}")


def _put_token(conn: Connection, settings: DeploySettings, token: str, validation: str) -> None:
    # acme-tiny's lesson: the token becomes a file name, so it must be base64url only.
    if not token or not all(c.isalnum() or c in "-_" for c in token):
        raise CertificateError(f"the CA sent a token that is not base64url: {token!r}")
    q = shlex.quote
    path = settings.challenge_dir / token
    shell(conn, f"umask 022 && cat > {q(str(path))}", stdin=io.BytesIO(validation.encode()), what="writing a challenge token")


def _self_check(settings: DeploySettings, domain: str, token: str, expected: str) -> None:
    """Fetch the token the way the CA will before asking it to: a failure here costs no CA attempt."""
    address = settings.verify_address or domain
    deadline = time.monotonic() + 5
    problem = ""
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(address, settings.http_port, timeout=5)
            conn.request("GET", f"/.well-known/acme-challenge/{token}", headers={"Host": domain})
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace").strip()
            conn.close()
            if resp.status == 200 and body == expected:
                return
            problem = f"it answered {resp.status} {resp.getheader('Location') or body[:80]!r} instead of the token"
        except OSError as exc:
            problem = f"nothing answered on {address}:{settings.http_port} ({exc})"
        time.sleep(0.1)  # nginx may still be reloading
    raise CertificateError(
        f"self-check before asking the CA: http://{domain}/.well-known/acme-challenge/{token}: {problem}. "
        "The CA was not asked (no failed validation spent). Check that the domain points to this server, "
        "that port 80 is open, and that nginx serves the challenge folder."
    )


def _poll_authorization(acme: client.ClientV2, authz: messages.AuthorizationResource, deadline: float) -> None:
    delay = 0.05  # the library's own polling sleeps a whole second; the CA answers in milliseconds
    while time.monotonic() < deadline:
        authz, _ = acme.poll(authz)
        status = authz.body.status
        if status == messages.STATUS_VALID:
            return
        if status == messages.STATUS_INVALID:  # RFC 8555 7.1.6: the challenge failed, final
            detail = next((c.error for c in authz.body.challenges if c.error), None)
            raise CertificateError(f"the CA could not validate {authz.body.identifier.value}: {detail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise CertificateError("timed out waiting for the CA to validate the challenges")


def _finalize(acme: client.ClientV2, order: messages.OrderResource, deadline: float) -> messages.OrderResource:
    order = acme.begin_finalization(order)
    delay = 0.05
    while time.monotonic() < deadline:
        body = order.body
        if body.status == messages.STATUS_VALID and body.certificate:  # RFC 8555 7.4: issued
            chain = acme._post_as_get(body.certificate).text
            return order.update(fullchain_pem=chain)
        if body.status == messages.STATUS_INVALID:  # the order is abandoned
            raise CertificateError(f"the CA refused to issue the certificate: {body.error}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
        response = acme._post_as_get(order.uri)  # "processing": poll the order
        order = order.update(body=messages.Order.from_json(response.json()))
    raise CertificateError("timed out waiting for the CA to issue the certificate")


# --- putting it on the server -----------------------------------------------------------

def stage_certificate(conn: Connection, settings: DeploySettings, issued: Issued) -> PurePosixPath:
    """Write key, chain and metadata into a new folder tls/certs/<id>/ (0700, key 0600). Not live yet."""
    meta = {"id": issued.cert_id, "directory": settings.acme_directory, "domains": list(settings.domains),
            "key_type": KEY_TYPE, "serial": f"{issued.certificate.serial_number:x}"}
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
    shell(conn, f"umask 077 && mkdir -p {q(str(target))}.partial && tar -xf - -C {q(str(target))}.partial "
                f"&& mv {q(str(target))}.partial {q(str(target))}", stdin=buf, what="installing the new certificate")
    return target


def live_target(conn: Connection, settings: DeploySettings) -> str | None:
    out = shell(conn, f"readlink {shlex.quote(str(settings.tls_dir / LIVE))} || true", what="reading tls/live")
    return out.strip() or None


def switch_live(conn: Connection, settings: DeploySettings, target: str) -> None:
    """Point tls/live at a certificate folder in one rename (key and chain switch together)."""
    q = shlex.quote
    live = str(settings.tls_dir / LIVE)
    shell(conn, f"ln -sfn {q(target)} {q(live)}.new && mv -T {q(live)}.new {q(live)}", what="switching the live certificate")
