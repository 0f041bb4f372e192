"""The verify stage: look at the site from outside, the way a visitor does.

http answers 301 to the https URL; https answers 200 with the expected certificate (verified
against the system trust store, or DEPLOY_VERIFY_CA) and HSTS; every other name of the
certificate answers https with the same certificate and a 301 to the canonical URL. nginx
reloads asynchronously, so the checks poll for a few seconds before failing.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from cryptography import x509

from .errors import VerificationFailed
from .settings import DeploySettings


@dataclass(frozen=True)
class HttpsAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    certificate: x509.Certificate


def fetch_https(settings: DeploySettings, domain: str, address: str | None = None, path: str = "/") -> HttpsAnswer:
    """GET https://domain/path from the server at ``address`` (default: ``site_address``), verifying the certificate."""
    address = address or site_address(settings)
    context = _tls_context(str(settings.verify_ca) if settings.verify_ca else None)
    with socket.create_connection((address, settings.https_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=domain) as tls:
            der = tls.getpeercert(binary_form=True)
            conn = http.client.HTTPConnection(domain, settings.https_port)
            conn.sock = tls
            conn.request("GET", path, headers={"Host": _host_header(domain, settings.https_port, 443)})
            resp = conn.getresponse()
            body = resp.read()
    return HttpsAnswer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, x509.load_der_x509_certificate(der))


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str | None) -> ssl.SSLContext:
    # Loading the system's trust store takes ~10-20 ms: once per process, not once per request.
    return ssl.create_default_context(cafile=cafile)


def fetch_http(settings: DeploySettings, domain: str, address: str | None = None, path: str = "/") -> tuple[int, str | None]:
    address = address or site_address(settings)
    conn = http.client.HTTPConnection(address, settings.http_port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": _host_header(domain, settings.http_port, 80)})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Location")
    finally:
        conn.close()


STABLE_ANSWERS = 3  # consecutive answers as deployed before the deploy counts as live


def site_address(settings: DeploySettings) -> str:
    """Where a visitor reaches a single-host site: DEPLOY_VERIFY_ADDRESS, else the canonical domain
    resolved like every lookup of the deploy (DEPLOY_DNS_RESOLVER, else the system's resolver)."""
    if settings.verify_address:
        return settings.verify_address
    from .diagnose import resolve
    found = resolve(settings.canonical_domain, settings.dns_server)
    if not found:
        raise VerificationFailed(f"{settings.canonical_domain} does not resolve"
                                 + (f" at DEPLOY_DNS_RESOLVER={settings.dns_resolver}" if settings.dns_resolver else "")
                                 + ": visitors cannot reach the site. Add its A/AAAA records")
    return found[0]


def verify_site(settings: DeploySettings, expected_serial: int | None, address: str, timeout: float = 10.0) -> HttpsAnswer:
    """Poll until the site at ``address`` answers as deployed; raise VerificationFailed with what was seen."""
    deadline = time.monotonic() + timeout
    domain = settings.canonical_domain
    problem = ""
    good = 0
    while True:
        try:
            status, location = fetch_http(settings, domain, address)
            want = settings.https_origin + "/"
            if status != 301 or location != want:
                problem = f"http://{domain}/ answered {status} {location or ''} instead of 301 to {want}"
            else:
                answer = fetch_https(settings, domain, address)
                serial = answer.certificate.serial_number
                if answer.status != 200:
                    problem = f"{settings.https_origin}/ answered {answer.status} instead of 200"
                elif expected_serial is not None and serial != expected_serial:
                    problem = f"{settings.https_origin}/ still serves certificate serial {serial:x}, not {expected_serial:x}"
                else:
                    # A run of answers, not one: a reload by someone else (or one the nginx stage
                    # did not wait out) would show as an old answer among new ones.
                    good += 1
                    if good < STABLE_ANSWERS:
                        continue
                    problem = _alias_problem(settings, expected_serial, address)
                    if not problem:
                        return answer
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
        good = 0
        if time.monotonic() > deadline:
            raise VerificationFailed(f"the site at {address} does not answer as deployed: {problem}")
        time.sleep(0.1)


def _alias_problem(settings: DeploySettings, expected_serial: int | None, address: str) -> str:
    """Empty when every other name of the certificate answers https with it and a 301 to the
    canonical URL; else what one answered."""
    want = settings.https_origin + "/"
    for alias in settings.domains:
        if alias == settings.canonical_domain:
            continue
        origin = f"https://{_host_header(alias, settings.https_port, 443)}"
        try:
            answer = fetch_https(settings, alias, address)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            return f"{origin}/: {exc.__class__.__name__}: {exc}"
        location = answer.headers.get("location")
        if answer.status != 301 or location != want:
            return f"{origin}/ answered {answer.status} {location or ''} instead of 301 to {want}"
        if expected_serial is not None and answer.certificate.serial_number != expected_serial:
            return f"{origin}/ still serves certificate serial {answer.certificate.serial_number:x}, not {expected_serial:x}"
    return ""


def _host_header(domain: str, port: int, default: int) -> str:
    return domain if port == default else f"{domain}:{port}"
