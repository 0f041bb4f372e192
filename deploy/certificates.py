"""The certificate stage: decide for the whole group, then (only if needed) one RFC 8555 order.

``decide_group`` looks at every host's live and staged certificates: the best one that is valid,
matches the settings and is not due is the one every host will serve (no order, even for a host
that joined later or one a failed deploy left behind). Only when none qualifies does ``obtain``
run one order over HTTP-01: the challenge token is put on every host, and fetched from every
host's address and every address the domain resolves to, before the CA is asked anything. The
new key and chain are staged on every host (``stage``); ``spread`` copies an existing
certificate to the hosts that lack it. Nothing here is live: the commit switches ``tls/live``
together with the vhost that names it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import secrets
import tarfile
import time
from pathlib import PurePosixPath
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import ari, diagnose, nginx
from .connection import Server, Servers
from .errors import CertificateError
from .renewal import Decision, Installed, RenewalInfo, ari_cert_id_or_none, decide, forced, wants_renewal_info
from .settings import DeploySettings
from .state import HostState, renewal_info_json

log = logging.getLogger("pelican_https.deploy")

KEEP_CERTIFICATES = 3  # tls/certs/<id>: the live one and the two before it (pruned after a verified commit)
ARI_CACHE = "ari.json"  # tls/ari.json: the CA's last renewal info, kept until its Retry-After
ORDER_TIMEOUT = 90.0  # seconds for one order, validation and finalization included


class CertPlan(NamedTuple):
    decision: Decision  # for the log and the summary
    certificate: Installed | None  # the certificate every host will serve; None: order one


def decide_group(states: dict[Server, HostState], settings: DeploySettings, now: dt.datetime,
                 info: RenewalInfo | None, force: bool = False) -> CertPlan:
    """Pure: which certificate the group serves after this deploy, or that an order is needed."""
    first = next(iter(states.values()))
    primary = decide(first.live, settings, now, info)
    if first.live is None and first.live_id:
        primary = dataclasses.replace(primary, reason=f"the live certificate {first.live_id} on {next(iter(states))} "
                                                      "is unreadable or incomplete: a new one is needed")
    if force:
        return CertPlan(forced(primary, first.live), None)
    candidates = {c.cert_id: c for s in states.values() for c in (s.live, s.staged) if c is not None}
    usable = [(c, d) for c in candidates.values()
              if not (d := decide(c, settings, now, info if info and info.cert_id == ari_cert_id_or_none(c.certificate)
                                  else None)).needs_order]
    if not usable:
        return CertPlan(primary, None)
    best, decision = max(usable, key=lambda cd: cd[0].certificate.not_valid_after_utc)
    if first.live is None or best.cert_id != first.live.cert_id:
        decision = dataclasses.replace(decision, reason=f"certificate {best.cert_id} (staged by an earlier deploy) is "
                                            f"{decision.reason.split(': ')[0]}: used, no new order")
    return CertPlan(decision, best)


def renewal_info(servers: Servers, states: dict[Server, HostState], settings: DeploySettings,
                 now: dt.datetime) -> RenewalInfo | None:
    """The CA's renewal window (ARI) for the first host's certificate: from the cache on the server,
    or asked of the CA when the cache is missing or past its Retry-After (then cached on every host)."""
    first = next(iter(states.values()))
    cached = first.renewal_info
    live = first.live
    info = cached if live and cached and cached.cert_id == ari_cert_id_or_none(live.certificate) else None
    if wants_renewal_info(live, settings, cached, now):
        fetched = ari.fetch_renewal_info(settings, live.certificate, _verify(settings), now)
        if fetched is not None:
            servers.each_or_raise(lambda s: s.script("write-private", str(settings.tls_dir / ARI_CACHE),
                                                     stdin=renewal_info_json(fetched)), stage="caching the renewal info")
        info = fetched or info  # the CA did not answer: its last window (if any) still stands
    return info


def _verify(settings: DeploySettings):
    return str(settings.acme_ca_bundle) if settings.acme_ca_bundle else True


# --- the order (RFC 8555) ----------------------------------------------------------------

class Issued(NamedTuple):
    cert_id: str
    fullchain_pem: bytes
    key_pem: bytes
    certificate: x509.Certificate


def new_private_key(key_type: str):
    """The certificate's key, generated in memory and written only on the servers."""
    if key_type.startswith("ec-"):
        return ec.generate_private_key({"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}[key_type])
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))


def obtain(servers: Servers, states: dict[Server, HostState], settings: DeploySettings, *,
           replaces: str | None = None) -> Issued:
    """One order for all domains, answerable by every host. The challenge path is proven on every
    host first; names the live vhost does not serve yet get a port-80 challenge server only for the
    order, removed afterwards whatever happens."""
    import requests
    from acme import errors as acme_errors, messages

    from . import acme_client

    deadline = time.monotonic() + ORDER_TIMEOUT
    addresses = {server.address for server in servers}
    opened = nginx.open_challenge_path(servers, states, settings)
    tokens: list[str] = []
    try:
        # 1. Our own probe token on every host, fetched the way the CA will: nothing is asked of the CA before.
        probe = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
        tokens = [probe[0]]
        _put_tokens(servers, settings, [probe])
        diagnose.check(settings, addresses, *probe)
        _check_every_host(servers, settings, *probe)

        # 2. RFC 8555: directory, account (looked up, registered only if unknown), new order.
        session = acme_client.open_session(settings, _account_key(servers, settings), _verify(settings))
        key = new_private_key(settings.key_type)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        order = acme_client.new_order(session, _csr(key_pem, settings), list(settings.domains),
                                      profile=settings.acme_profile, replaces=replaces)
        log.info("order %s for %s%s", order.uri, ", ".join(settings.domains), f" (replaces {replaces})" if replaces else "")

        # 3. HTTP-01 (RFC 8555 8.3): the token of each pending authorization on every host, then checked at every address.
        pending = acme_client.pending_http01(session, order)
        tokens += [token for _, _, _, token, _ in pending]
        _put_tokens(servers, settings, [(token, validation) for *_, token, validation in pending])
        for authz, _, _, token, validation in pending:
            diagnose.check_domain(settings, authz.body.identifier.value, addresses, token, validation)
            _check_every_host(servers, settings, token, validation, [authz.body.identifier.value])

        # 4. Answer, poll, finalize, download.
        for _, challb, response, _, _ in pending:
            session.acme.answer_challenge(challb, response)
        acme_client.poll_authorizations(session, [authz for authz, *_ in pending], deadline)
        chain = acme_client.finalize(session, order, deadline).encode()
    except (messages.Error, acme_errors.Error) as exc:
        detail = acme_client.explain(exc) if isinstance(exc, messages.Error) else str(exc)
        raise CertificateError(f"the ACME order failed: {detail}") from exc
    except requests.RequestException as exc:
        raise CertificateError(f"lost the connection to the CA ({settings.acme_directory}) during the order: {exc}. "
                               "Run the deploy again (the CA may be down: check its status page)") from exc
    finally:
        if tokens:
            servers.each(lambda s: s.script("tokens", "remove", str(settings.challenge_dir), *tokens))
        nginx.close_challenge_path(servers, settings, opened)
    cert = x509.load_pem_x509_certificate(chain)
    _check_issued(cert, key, settings)
    cert_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}-{cert.serial_number:x}"[:60]
    log.info("issued certificate serial %x, valid until %s", cert.serial_number, cert.not_valid_after_utc)
    return Issued(cert_id, chain, key_pem, cert)


def _check_every_host(servers: Servers, settings: DeploySettings, token: str, expected: str,
                      domains: list[str] | None = None) -> None:
    """The CA may reach any host of the group (DNS round-robin, a load balancer): every host must
    answer the token for each domain (all by default) at its own address, not only those DNS names
    today."""
    if len(servers) < 2:
        return
    addresses = sorted({server.address for server in servers})
    for domain in domains or settings.domains:
        probes = [diagnose.fetch(domain, address, settings.http_port, token, expected) for address in addresses]
        problem = diagnose.verdict(domain, addresses, probes, set(addresses), settings.http_port)
        if problem:
            raise diagnose.failed([problem])


def _csr(key_pem: bytes, settings: DeploySettings) -> bytes:
    from acme import crypto_util
    return crypto_util.make_csr(key_pem, list(settings.domains))


def _check_issued(cert: x509.Certificate, key, settings: DeploySettings) -> None:
    """Never stage a chain that nginx would reject or that misses a name."""
    spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
    if spki(cert.public_key()) != spki(key.public_key()):
        raise CertificateError("the CA returned a certificate for another key; nothing was installed")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    missing = sorted(set(settings.domains) - set(names))
    if missing:
        raise CertificateError(f"the CA's certificate does not cover {', '.join(missing)}; nothing was installed")


def account_key_path(settings: DeploySettings) -> PurePosixPath:
    """One account key per CA directory, kept on the servers: CI runners stay stateless."""
    return settings.accounts_dir / (hashlib.sha256(settings.acme_directory.encode()).hexdigest()[:16] + ".pem")


def _account_key(servers: Servers, settings: DeploySettings) -> ec.EllipticCurvePrivateKey:
    """The account key from the first host that has one; a new one (written to every host) if none has."""
    path = str(account_key_path(settings))
    found = servers.each_or_raise(lambda s: s.script("read-file", path, what="reading the ACME account key"),
                                  stage="reading the ACME account key")
    pem = next((p for p in found.values() if b"PRIVATE KEY" in p), None)
    if pem is not None:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"the ACME account key {path} on the server is not an EC key; move it away to start a new account")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    missing = [s for s, p in found.items() if p != pem]
    if missing:  # a host that joined later gets the group's account key
        Servers.from_connections(missing).each_or_raise(
            lambda s: s.script("write-private", path, stdin=pem), stage="writing the ACME account key")
    return key


def _put_tokens(servers: Servers, settings: DeploySettings, tokens: list[tuple[str, str]]) -> None:
    # acme-tiny's lesson: the token becomes a file name, so it must be base64url only.
    for token, _ in tokens:
        if not token or not all(c.isalnum() or c in "-_" for c in token):
            raise CertificateError(f"the CA sent a token that is not base64url: {token!r}")
    args = [word for pair in tokens for word in pair]
    servers.each_or_raise(lambda s: s.script("tokens", "put", str(settings.challenge_dir), *args,
                                             what="writing the challenge tokens"), stage="writing the challenge tokens")


# --- putting it on the servers -------------------------------------------------------------

def stage(servers: Servers, settings: DeploySettings, issued: Issued) -> Installed:
    """tls/certs/<id>/ on every host (0700, key 0600): not live until the commit."""
    meta = {"id": issued.cert_id, "directory": settings.acme_directory, "domains": list(settings.domains),
            "key_type": settings.key_type, "profile": settings.acme_profile, "serial": f"{issued.certificate.serial_number:x}"}
    bundle = _bundle({"privkey.pem": issued.key_pem, "fullchain.pem": issued.fullchain_pem,
                      "meta.json": json.dumps(meta, indent=2).encode()})
    servers.each_or_raise(lambda s: s.script("cert-stage", str(settings.tls_dir), issued.cert_id, stdin=bundle,
                                             what="staging the new certificate"), stage="staging the certificate")
    return Installed(issued.certificate, settings.acme_directory, tuple(settings.domains), settings.key_type,
                     issued.cert_id, settings.acme_profile, True)


def spread(servers: Servers, states: dict[Server, HostState], settings: DeploySettings, cert: Installed) -> None:
    """Stage ``cert`` on the hosts that lack it, copied from one that has it (one order serves all)."""
    def has(state: HostState) -> bool:
        return any(c is not None and c.cert_id == cert.cert_id for c in (state.live, state.staged))
    source = next(s for s, state in states.items() if has(state))
    lacking = [s for s, state in states.items() if not has(state)]
    if not lacking:
        return
    bundle = source.script("cert-read", str(settings.tls_dir), cert.cert_id, what="reading the certificate to copy")
    log.info("certificate %s copied from %s to %s", cert.cert_id, source, ", ".join(map(str, lacking)))
    Servers.from_connections(lacking).each_or_raise(
        lambda s: s.script("cert-stage", str(settings.tls_dir), cert.cert_id, stdin=bundle, what="staging the certificate"),
        stage="staging the certificate")


def _bundle(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
