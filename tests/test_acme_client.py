"""The ACME client: `replaces` in the signed newOrder, renewal info (ARI), CA errors explained.

Pebble 2.4.0 has no ARI (no `renewalInfo` in its directory). The ARI paths therefore run against
a small ARI-capable TEST DOUBLE defined below: an HTTPS server on 127.0.0.1 that serves Pebble's
directory plus a `renewalInfo` URL, and answers renewalInfo requests with a window the test sets.
Everything else (accounts, orders, challenges, certificates) is the real Pebble of the sandbox.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import ssl
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import josepy as jose
import pytest
import requests
from acme import jws as acme_jws, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy import acme_client, ari, certificates, pipeline
from deploy.renewal import ari_cert_id
from deploy.verify import fetch_https

UTC = dt.timezone.utc


# --- the signed newOrder carries `replaces` ----------------------------------------------------

def _signed(body, key) -> dict:
    net = acme_client.network(key, verify=True)
    net.account = messages.RegistrationResource(uri="https://ca.example/acct/7", body=messages.Registration())
    jws = acme_jws.JWS.json_loads(net._wrap_in_jws(body, b"nonce-123", "https://ca.example/new-order"))
    assert jws.verify(jose.JWKEC(key=key.public_key()))  # signed by the account key
    header = jws.signature.combined
    return {"kid": header.kid, "url": header.url, "payload": json.loads(jws.payload)}


def test_new_order_payload_has_replaces_and_is_signed():
    key = ec.generate_private_key(ec.SECP256R1())
    body = acme_client.NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="blog.example.com")],
                                replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", profile="tlsserver")
    signed = _signed(body, key)
    assert signed["kid"] == "https://ca.example/acct/7" and signed["url"] == "https://ca.example/new-order"
    assert signed["payload"] == {"identifiers": [{"type": "dns", "value": "blog.example.com"}],
                                 "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", "profile": "tlsserver"}


def test_new_order_without_replaces_omits_the_field():
    body = acme_client.NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="a.example.com")])
    assert "replaces" not in _signed(body, ec.generate_private_key(ec.SECP256R1()))["payload"]


# --- CA problems explained (real messages.Error objects, through the real response check) ------

def _problem_response(status: int, problem: dict, headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update({"Content-Type": "application/problem+json", **(headers or {})})
    response._content = json.dumps(problem).encode()
    return response


def test_rate_limit_says_when_to_retry_from_retry_after():
    response = _problem_response(429, {"type": "urn:ietf:params:acme:error:rateLimited",
                                       "detail": "too many certificates (5) already issued for this exact set of identifiers"},
                                 {"Retry-After": "Thu, 01 Jan 2026 03:00:00 GMT"})
    with pytest.raises(messages.Error) as err:
        acme_client.PatientNetwork._check_response(response)
    text = acme_client.explain(err.value, now=dt.datetime(2026, 1, 1, tzinfo=UTC))
    assert "too many certificates (5)" in text  # the CA's own detail
    assert "retry after 2026-01-01 03:00:00 UTC" in text
    assert "rate limit" in text and "letsencrypt-staging" in text  # cause and fix


def test_rate_limit_with_retry_after_in_seconds():
    response = _problem_response(429, {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"},
                                 {"Retry-After": "3600"})
    with pytest.raises(messages.Error) as err:
        acme_client.PatientNetwork._check_response(response)
    assert "retry after 2026-01-01 01:00:00 UTC" in acme_client.explain(err.value, now=dt.datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("code, detail, cause, fix", [
    ("unauthorized", "Invalid response from http://blog.example.com/.well-known/acme-challenge/x: 404",
     "did not get the token", "A/AAAA records"),
    ("dns", "DNS problem: NXDOMAIN looking up A for blog.example.com", "could not resolve the domain", "dig @1.1.1.1"),
    ("connection", "Timeout during connect (likely firewall problem)", "could not connect to port 80", "ufw allow 80/tcp"),
    ("caa", "CAA record for example.com prevents issuance", "CAA", "0 issue"),
])
def test_ca_errors_get_cause_and_fix(code, detail, cause, fix):
    error = messages.Error.with_code(code, detail=detail)
    text = acme_client.explain(error)
    assert text.startswith(detail) and f"[{code}]" in text
    assert cause in text.split("Likely cause:")[1] and fix in text.split("Fix:")[1]


def test_codes_the_library_does_not_know_are_kept():
    error = messages.Error(typ="urn:ietf:params:acme:error:alreadyReplaced", detail="already replaced")
    assert error.code is None  # the library loses it ...
    assert acme_client.problem_code(error) == "alreadyReplaced"  # ... we do not


# --- the ARI test double ---------------------------------------------------------------------

class AriDouble:
    """TEST DOUBLE (Pebble 2.4.0 has no ARI): Pebble's directory + renewalInfo, over HTTPS on 127.0.0.1."""

    def __init__(self, sandbox):
        self.pebble_directory = sandbox.acme_directory
        self.cafile = str(sandbox.acme_ca_bundle)
        self.window: tuple[dt.datetime, dt.datetime] | None = None
        self.retry_after: str | None = "3600"
        self.status = 200
        self.requests: list[str] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/dir":
                    ctx = ssl.create_default_context(cafile=double.cafile)
                    with urllib.request.urlopen(double.pebble_directory, context=ctx) as resp:
                        directory = json.loads(resp.read())
                    directory["renewalInfo"] = f"{double.url}/renewal-info"
                    return self._send(200, directory)
                if self.path.startswith("/renewal-info/"):
                    double.requests.append(self.path.rsplit("/", 1)[1])
                    start, end = double.window
                    headers = {"Retry-After": double.retry_after} if double.retry_after else {}
                    return self._send(double.status, {"suggestedWindow": {
                        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
                        "explanationURL": "https://ca.example/why"}, headers)
                self._send(404, {"type": "urn:ietf:params:acme:error:malformed"})

            def _send(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # Pebble's own API certificate (for 127.0.0.1), which the client already trusts via DEPLOY_ACME_CA_BUNDLE.
        pebble = Path(sandbox.acme_ca_bundle).parent
        ctx.load_cert_chain(pebble / "api-cert.pem", pebble / "api-key.pem")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def directory(self) -> str:
        return self.url + "/dir"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ari_double(sandbox):
    double = AriDouble(sandbox)
    yield double
    double.stop()


def _blog(make_blog, site: str, **overrides):
    """A copy of example_site on its own site and its own domain names (no clash with other tests)."""
    blog = make_blog(site)
    values = json.loads(blog.target.read_text())
    values.update(overrides)
    blog.target.write_text(json.dumps(values))
    return blog


def test_renewal_info_window_and_retry_after_are_read(sandbox, ari_double):
    from deploy.settings import settings_from_mapping
    values = sandbox.deploy_settings() | {"DEPLOY_ACME_DIRECTORY": ari_double.directory, "DEPLOY_DOMAINS": ["x.example.com"]}
    settings = settings_from_mapping(values)
    cert = _any_cert()
    now = dt.datetime.now(UTC).replace(microsecond=0)
    ari_double.window = (now + dt.timedelta(days=1), now + dt.timedelta(days=2))
    ari_double.retry_after = email.utils.format_datetime(now + dt.timedelta(hours=3), usegmt=True)
    ari_double.requests.clear()
    info = ari.fetch_renewal_info(settings, cert, str(sandbox.acme_ca_bundle), now)
    assert ari_double.requests == [ari_cert_id(cert)]
    assert (info.window_start, info.window_end) == ari_double.window
    assert info.retry_at == now + dt.timedelta(hours=3) and info.explanation_url == "https://ca.example/why"

    ari_double.retry_after = "5"  # RFC 9773 4.3.2: unreasonably short values are clamped (here: to a minute)
    assert ari.fetch_renewal_info(settings, cert, str(sandbox.acme_ca_bundle), now).retry_at == now + dt.timedelta(minutes=1)
    ari_double.status = 500  # a broken ARI answer never blocks a deploy: the lifetime rule applies
    try:
        assert ari.fetch_renewal_info(settings, cert, str(sandbox.acme_ca_bundle), now) is None
    finally:
        ari_double.status = 200
    # The real Pebble offers no renewalInfo: no ARI.
    plain = settings_from_mapping(sandbox.deploy_settings() | {"DEPLOY_DOMAINS": ["x.example.com"]})
    assert ari.fetch_renewal_info(plain, cert, str(sandbox.acme_ca_bundle), now) is None


def _any_cert() -> x509.Certificate:
    from test_renewal import make_cert
    return make_cert()


def test_ari_renewal_end_to_end_sends_replaces(make_blog, sandbox, ari_double, monkeypatch):
    """Deploy (issue), then: window in the future -> keep, asked once (Retry-After honoured);
    window open -> renew, and the signed newOrder names the old certificate in `replaces`."""
    blog = _blog(make_blog, "ari", DEPLOY_ACME_DIRECTORY=ari_double.directory, DEPLOY_DOMAINS=["ari.example.com"])
    blog.build()
    assert "certificate issue" in blog.fab("deploy").stdout
    settings = blog.settings()
    old = fetch_https(settings, settings.canonical_domain).certificate
    old_id = ari_cert_id(old)

    now = dt.datetime.now(UTC)
    ari_double.window = (now + dt.timedelta(days=30), now + dt.timedelta(days=31))
    ari_double.retry_after = "3600"
    ari_double.requests.clear()
    first = pipeline.deploy(settings, upload_site=False)
    assert first.certificate_action == "keep" and "renewal window (ARI)" in first.certificate_reason
    second = pipeline.deploy(settings, upload_site=False)
    assert second.certificate_action == "keep" and second.serial == old.serial_number
    assert ari_double.requests == [old_id]  # the second run used the cached answer: Retry-After honoured

    # An hour later (the cache's Retry-After has passed) the CA has opened the window.
    cache = Path(settings.tls_dir) / certificates.ARI_CACHE
    cached = json.loads(cache.read_text())
    cached["retry_at"] = (now - dt.timedelta(minutes=1)).isoformat()
    cache.write_text(json.dumps(cached))
    ari_double.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))

    sent = []
    original = acme_client.PatientNetwork._wrap_in_jws
    def record(net, obj, nonce, url):
        data = original(net, obj, nonce, url)
        sent.append((url, data))
        return data
    monkeypatch.setattr(acme_client.PatientNetwork, "_wrap_in_jws", record)
    renewed = pipeline.deploy(settings, upload_site=False)
    assert renewed.certificate_action == "renew" and renewed.serial != old.serial_number
    assert ari_double.requests == [old_id, old_id]
    assert fetch_https(settings, settings.canonical_domain).certificate.serial_number == renewed.serial

    # One order; Pebble rejects 5 % of nonces, so a badNonce retry may sign the same order again.
    new_orders = [data for url, data in sent if url.endswith("/order-plz")]
    assert new_orders
    account_key = serialization.load_pem_private_key(
        Path(certificates.account_key_path(settings)).read_bytes(), password=None)
    payloads = set()
    for signed in new_orders:
        jws = acme_jws.JWS.json_loads(signed)
        assert jws.verify(jose.JWKEC(key=account_key.public_key()))
        payloads.add(jws.payload)
    assert len(payloads) == 1
    assert json.loads(payloads.pop())["replaces"] == old_id


# --- account and profile against the real Pebble -------------------------------------------------

def _pebble_settings(sandbox, **overrides):
    from deploy.settings import settings_from_mapping
    return settings_from_mapping(sandbox.deploy_settings() | {"DEPLOY_DOMAINS": ["acct.example.com"]} | overrides)


def test_account_is_looked_up_before_it_is_registered(sandbox):
    settings = _pebble_settings(sandbox)
    key = ec.generate_private_key(ec.SECP256R1())
    log = Path(sandbox.root) / "pebble" / "pebble.log"
    offset = log.stat().st_size
    first = acme_client.open_session(settings, key, str(sandbox.acme_ca_bundle))
    second = acme_client.open_session(settings, key, str(sandbox.acme_ca_bundle))
    assert first.net.account.uri == second.net.account.uri  # same key, same account: never a new one per run
    posts = [line for line in log.read_text()[offset:].splitlines() if "POST /sign-me-up" in line]
    # First run: look-up (unknown) + registration; second run: look-up only. badNonce retries may add some.
    assert 3 <= len(posts)


def test_a_profile_the_ca_does_not_offer_is_refused_before_ordering(sandbox):
    settings = _pebble_settings(sandbox, DEPLOY_ACME_PROFILE="tlsserver")
    session = acme_client.open_session(settings, ec.generate_private_key(ec.SECP256R1()), str(sandbox.acme_ca_bundle))
    log = Path(sandbox.root) / "pebble" / "pebble.log"
    offset = log.stat().st_size
    with pytest.raises(acme_client.CertificateError) as err:
        acme_client.new_order(session, b"", ["acct.example.com"], profile="tlsserver")
    assert "DEPLOY_ACME_PROFILE='tlsserver': the CA at" in str(err.value) and "offers no profiles" in str(err.value)
    assert "POST /order-plz" not in log.read_text()[offset:]


def test_a_ca_that_is_down_never_blocks_a_deploy_that_needs_no_certificate(sandbox, caplog):
    from deploy.sandbox import _free_ports
    down = _pebble_settings(sandbox, DEPLOY_ACME_DIRECTORY=f"https://127.0.0.1:{_free_ports(1)[0]}/dir")
    assert ari.fetch_renewal_info(down, _any_cert(), str(sandbox.acme_ca_bundle), dt.datetime.now(UTC)) is None
    assert "cannot read the ACME directory" in caplog.text and "1/3-lifetime rule" in caplog.text


def test_rfc3339_times_from_go_servers_parse():
    from deploy.ari import parse_rfc3339
    assert parse_rfc3339("2025-01-02T03:04:05.123456789Z") == dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert parse_rfc3339("2025-01-02T03:04:05+02:00") == dt.datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC)


def test_a_deploy_with_nothing_due_does_not_load_the_acme_machinery():
    import subprocess
    import sys
    code = "import sys, deploy.pipeline; print(sorted(m for m in ('acme', 'josepy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"
