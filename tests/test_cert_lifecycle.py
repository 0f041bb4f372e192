"""The certificate's life on a real server: renewal timing, badNonce, a CA that forgot the account,
a certificate that does not match its key, a changed key type, domain set or CA directory, the
CA's renewal info kept on the server, `fab status`.

The first part runs on its own sandbox: Pebble issues short-lived certificates (6 days, so the
1/2 rule puts the renewal window 3 days after issuance), rejects 50 % of good nonces and requires
external account binding (EAB). Nobody waits days for a window: the renewal decision is a pure
function of the clock (``certificates.decide_group(states, settings, now, ...)``), asked here
about the real server's state at chosen times, and the one end-to-end renewal runs the real
pipeline with its clock moved into the window. The second part uses the session sandbox.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import secrets
import shutil
from pathlib import Path

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy import acme_client, ari, certificates, nginx, pipeline, state as host_state
from deploy.connection import connect_all
from deploy.errors import NginxError
from deploy.renewal import RenewalInfo, ari_cert_id, ari_renewal_time, lifetime_renewal_start
from deploy.sandbox import start_sandbox, stop_sandbox
from deploy.verify import fetch_http, fetch_https
from deploy.vhost import render_vhost

UTC = dt.timezone.utc
VALIDITY = dt.timedelta(days=6)  # under 10 days: the 1/2 rule, as for Let's Encrypt's "shortlived" profile
SECOND = dt.timedelta(seconds=1)
EAB_KID, EAB_ENV = "kid-pelican-https", "PELICAN_HTTPS_TEST_EAB_HMAC"
EAB_SETTINGS = {"DEPLOY_ACME_EAB_KID": EAB_KID, "DEPLOY_ACME_EAB_HMAC_KEY_ENV": EAB_ENV}


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    os.environ[EAB_ENV] = hmac_key  # the key reaches the settings only through the environment
    sb = start_sandbox(cert_validity_seconds=int(VALIDITY.total_seconds()), nonce_reject_percent=50,
                       eab_keys={EAB_KID: hmac_key})
    yield sb
    stop_sandbox(sb)
    os.environ.pop(EAB_ENV, None)


def _blog(tmp_path_factory, sandbox, site: str, domains: list[str], **extra):
    from conftest import EXAMPLE_SITE, Blog

    path = tmp_path_factory.mktemp(site) / "blog"
    shutil.copytree(EXAMPLE_SITE, path, ignore=shutil.ignore_patterns("output", "__pycache__"))
    blog = Blog(path, sandbox, site)
    _set(blog, DEPLOY_DOMAINS=domains, **extra)
    blog.build()
    return blog


def _set(blog, **values) -> None:
    """Change the blog's DEPLOY_ settings (what `fab` and ``blog.settings()`` read next)."""
    blog.target.write_text(json.dumps(json.loads(blog.target.read_text()) | values))


@pytest.fixture(scope="module")
def life(tmp_path_factory, short_lived):
    blog = _blog(tmp_path_factory, short_lived, "life", ["life.example.com"], **EAB_SETTINGS)
    blog.fab("deploy")
    return blog, blog.settings()


def _served(settings) -> x509.Certificate:
    return fetch_https(settings, settings.canonical_domain).certificate


def _states(settings) -> dict:
    """Every host's state as the deploy reads it (one script, one round trip per host)."""
    servers = connect_all(settings)
    try:
        return servers.each_or_raise(host_state.read, settings, stage="reading the server's state")
    finally:
        servers.close()


def _live_id(settings) -> str:
    return (Path(settings.tls_dir) / "live").readlink().name


def _clock_at(when: dt.datetime):
    """A clock for the pipeline that reads ``when`` now and runs on from there."""
    offset = when - dt.datetime.now(UTC)
    return lambda: dt.datetime.now(UTC) + offset


def test_renew_before_any_deploy_says_to_deploy_first_and_orders_nothing(tmp_path_factory, sandbox):
    blog = _blog(tmp_path_factory, sandbox, "renew-first", ["renew-first.example.com"])
    result = blog.fab("renew", check=False)
    assert result.returncode == 1
    assert "no release is live on" in result.stderr and "run `fab deploy` first" in result.stderr
    assert "Nothing was changed." in result.stderr
    tls = Path(blog.settings().tls_dir)
    assert not tls.exists() or not any(tls.rglob("*.pem"))  # no account, no order, no key made
    assert "certificate issue" in blog.fab("deploy").stdout  # and the deploy it names works


def test_a_ca_requiring_external_account_binding_says_what_to_set(tmp_path_factory, short_lived):
    blog = _blog(tmp_path_factory, short_lived, "no-eab", ["no-eab.example.com"])  # no EAB settings
    result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "[externalAccountRequired]" in result.stderr
    assert "set DEPLOY_ACME_EAB_KID and DEPLOY_ACME_EAB_HMAC_KEY_ENV" in result.stderr


def test_a_run_before_the_window_does_nothing_and_reads_the_server_in_one_round_trip(life):
    blog, settings = life
    before = _served(settings)
    assert before.not_valid_after_utc - before.not_valid_before_utc <= VALIDITY + SECOND
    result = blog.fab("renew")
    assert "certificate keep" in result.stdout
    assert "renews from" in result.stderr and "(1/2 of its lifetime left): nothing to do" in result.stderr  # the decision, logged
    assert _served(settings).serial_number == before.serial_number

    servers = connect_all(settings)
    [server] = list(servers)
    opened = []
    original = server.open_channel
    server.open_channel = lambda: opened.append(1) or original()
    try:
        state = host_state.read(server, settings)
    finally:
        servers.close()
    assert len(opened) == 1  # everything the decision needs, in one SSH round trip
    plan = certificates.decide_group({server: state}, settings, dt.datetime.now(UTC), None)
    assert plan.decision.action == "keep" and plan.certificate.cert_id == state.live.cert_id
    assert plan.decision.renew_from == lifetime_renewal_start(before)


def test_the_window_of_a_short_lived_certificate_opens_at_half_its_lifetime(life):
    """The decision over the certificate the server really has, asked at chosen times."""
    _, settings = life
    states = _states(settings)
    cert = next(iter(states.values())).live.certificate
    half = cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) / 2
    assert lifetime_renewal_start(cert) == half

    just_before = certificates.decide_group(states, settings, half - SECOND, None)
    assert just_before.decision.action == "keep" and just_before.certificate is not None
    opened = certificates.decide_group(states, settings, half, None)
    assert opened.decision.action == "renew" and opened.certificate is None  # None: order one
    assert "1/2 of its lifetime left since" in opened.decision.reason and opened.decision.replaces is None
    expired = certificates.decide_group(states, settings, cert.not_valid_after_utc, None)
    assert expired.decision.action == "issue" and "expired" in expired.decision.reason
    forced = certificates.decide_group(states, settings, half - SECOND, None, force=True)
    assert forced.decision.action == "renew" and forced.certificate is None


def test_a_run_inside_the_window_renews(life, caplog):
    blog, settings = life
    before = _served(settings)
    clock = _clock_at(lifetime_renewal_start(before) + dt.timedelta(minutes=1))
    with caplog.at_level(logging.INFO, logger="pelican_https.deploy"):
        result = pipeline.deploy(settings, upload_site=False, clock=clock)
    assert result.certificate_action == "renew" and "1/2 of its lifetime left since" in result.certificate_reason
    assert f"certificate: {result.certificate_reason}" in caplog.text  # the decision, logged
    after = _served(settings)
    assert after.serial_number == result.serial != before.serial_number
    assert after.not_valid_after_utc > before.not_valid_after_utc
    assert "certificate keep" in blog.fab("renew").stdout  # today, the new one is not due


def test_bad_nonce_is_retried_until_it_gets_through(life, monkeypatch):
    _, settings = life
    before = _served(settings)
    rejected, spent, replayed = [], [], []
    original_post, original_nonce = acme_client.PatientNetwork._post_once, acme_client.PatientNetwork._get_nonce

    def counting(net, *args, **kwargs):
        try:
            return original_post(net, *args, **kwargs)
        except messages.Error as error:
            if error.code == "badNonce":
                rejected.append(error)
            raise

    # Pebble rejects 50 % of good nonces at random, so a run may see none: to make the rejections
    # certain, the second POST is sent three times with a nonce the CA has already seen, which it
    # must reject (RFC 8555 section 6.5). Three in a row is more than the library's one retry.
    def replaying(net, *args, **kwargs):
        if spent and len(replayed) < 3:
            replayed.append(spent[0])
            return spent[0]
        nonce = original_nonce(net, *args, **kwargs)
        spent.append(nonce)
        return nonce
    monkeypatch.setattr(acme_client.PatientNetwork, "_post_once", counting)
    monkeypatch.setattr(acme_client.PatientNetwork, "_get_nonce", replaying)
    result = pipeline.deploy(settings, upload_site=False, force_renew=True)
    assert len(replayed) == 3 and len(rejected) >= 3  # the CA rejected every replayed nonce ...
    assert result.serial != before.serial_number  # ... and the order still went through
    assert _served(settings).serial_number == result.serial


def test_a_ca_that_forgot_the_account_gets_the_same_key_again(life, short_lived):
    blog, settings = life
    key_file = Path(certificates.account_key_path(settings))
    key_before = key_file.read_bytes()
    log = Path(short_lived.root) / "pebble" / "pebble.log"
    short_lived.restart_pebble()  # Pebble keeps accounts in memory: now it knows none
    offset = log.stat().st_size
    blog.fab("renew", "--force")
    assert key_file.read_bytes() == key_before  # never a new account key per run
    assert list(key_file.parent.iterdir()) == [key_file]
    account_posts = [line for line in log.read_text()[offset:].splitlines() if "POST /sign-me-up" in line]
    assert len(account_posts) >= 2  # the look-up (accountDoesNotExist), then the registration of the same key
    assert (key_file.stat().st_mode & 0o777) == 0o600


def test_old_certificates_are_pruned_after_a_verified_renewal_never_the_live_one(life):
    """Four certificates were issued on this site by now (deploy, renewal, badNonce, forgotten
    account), all by renewals: the server keeps the newest few, the live one among them."""
    _, settings = life
    certs = sorted(p.name for p in (Path(settings.tls_dir) / "certs").iterdir())
    assert _live_id(settings) == certs[-1]
    assert len(certs) == certificates.KEEP_CERTIFICATES, certs


# --- on the session sandbox ------------------------------------------------------------------

KEPT = ["kept.example.com", "www.kept.example.com"]


@pytest.fixture(scope="module")
def kept(tmp_path_factory, sandbox):
    blog = _blog(tmp_path_factory, sandbox, "kept", KEPT)
    blog.fab("deploy")
    return blog, blog.settings()


def test_a_certificate_that_does_not_match_its_key_never_goes_live(kept):
    """A staged chain with another key (as if the key had been damaged) fails `nginx -t` before
    anything is live; the server's state marks it unusable, so no deploy ever picks it."""
    blog, settings = kept
    old = _served(settings)
    live_before = _live_id(settings)
    live = Path(settings.tls_dir) / "live"
    chain = (live / "fullchain.pem").read_bytes()
    wrong_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    broken = certificates.Issued(f"{dt.datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-broken", chain, wrong_key, old)
    staged = Path(settings.tls_dir) / "certs" / broken.cert_id
    servers = connect_all(settings)
    try:
        certificates.stage(servers, settings, broken)
        assert (staged / "privkey.pem").stat().st_mode & 0o777 == 0o600
        states = servers.each_or_raise(host_state.read, settings, stage="reading the server's state")
        [(server, state)] = states.items()
        assert state.staged.cert_id == broken.cert_id and state.staged.key_matches is False
        plan = certificates.decide_group(states, settings, dt.datetime.now(UTC), None)
        assert plan.certificate.cert_id == live_before  # the live one is kept; the broken one is never used
        vhost = render_vhost(settings, state.build, str(staged), error_page=False)
        with pytest.raises(NginxError) as err:
            nginx.test(server, settings, vhost)
    finally:
        servers.close()
    message = str(err.value)
    assert "key values mismatch" in message and "nginx keeps running on the live one" in message  # nginx said why
    try:
        assert _live_id(settings) == live_before
        assert _served(settings).serial_number == old.serial_number
        result = blog.fab("renew")
        assert "certificate keep" in result.stdout and _served(settings).serial_number == old.serial_number
        # nginx named this site's own certificate: not another site's configuration.
        assert "another site's configuration" not in message, message
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def test_status_tells_what_the_server_has_and_what_comes_next(kept):
    blog, settings = kept
    cert = _served(settings)
    out = blog.fab("status").stdout
    assert f"CA directory: {settings.acme_directory}" in out
    for domain in settings.domains:
        assert f"{domain}: issuer CN=Pebble Intermediate CA" in out
        assert f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" in out
    assert f"next renewal: {lifetime_renewal_start(cert):%Y-%m-%d %H:%M:%S} UTC (the lifetime rule)" in out
    assert "key: ec-p256, profile: CA default" in out
    live_release = Path(settings.current_link).readlink().name
    assert f"last deploy: release {live_release}" in out


def test_status_names_a_live_certificate_whose_files_are_unreadable(kept):
    """Issue 13: with the live fullchain.pem damaged (nginx still serves it from memory), `fab
    status` said "none installed yet"."""
    blog, settings = kept
    live_id = _live_id(settings)
    chain = Path(settings.tls_dir) / "certs" / live_id / "fullchain.pem"
    saved = chain.read_bytes()
    try:
        chain.write_bytes(saved[:100])
        out = blog.fab("status").stdout
    finally:
        chain.write_bytes(saved)
    assert f"certificate {live_id}: files unreadable on the server; nginx may still serve it from memory; the next " in out
    assert "none installed" not in out and "no certificate installed" not in out
    assert f"certificate {live_id} unreadable" in out.splitlines()[0], out


def test_the_cas_renewal_window_is_kept_on_the_server_until_its_retry_after(kept, monkeypatch):
    """ARI: the CA's last answer (tls/ari.json) decides without asking it again before its
    Retry-After; after it, the CA is asked, and when it does not answer, the last window stands."""
    _, settings = kept
    now = dt.datetime.now(UTC)
    cert = _served(settings)
    cert_id = ari_cert_id(cert)
    window = RenewalInfo(cert_id, now - dt.timedelta(hours=2), now - dt.timedelta(hours=1), now + dt.timedelta(hours=6))
    asked = []
    monkeypatch.setattr(ari, "fetch_renewal_info", lambda *args: asked.append(args[1].serial_number))
    cache = Path(settings.tls_dir) / certificates.ARI_CACHE
    servers = connect_all(settings)
    try:
        [server] = list(servers)
        server.script("write-private", str(cache), stdin=host_state.renewal_info_json(window))  # as a deploy caches it
        states = servers.each_or_raise(host_state.read, settings, stage="reading the server's state")
        assert next(iter(states.values())).renewal_info == window
        info = certificates.renewal_info(servers, states, settings, now)
        assert info == window and asked == []  # before its Retry-After: the cache, the CA not asked
        plan = certificates.decide_group(states, settings, now, info)
        assert plan.decision.action == "renew" and plan.decision.basis == "ari" and plan.decision.replaces == cert_id
        assert plan.certificate is None and "renewal window (ARI)" in plan.decision.reason
        assert plan.decision.renew_from == ari_renewal_time(window)

        later = window.retry_at + SECOND
        assert certificates.renewal_info(servers, states, settings, later) == window  # asked; no answer: it stands
        assert asked == [cert.serial_number]
    finally:
        servers.close()
        cache.unlink(missing_ok=True)


def test_a_key_type_change_issues_a_new_certificate_of_that_type_and_back_reuses_the_old(kept):
    blog, settings = kept
    old = _served(settings)
    _set(blog, DEPLOY_KEY_TYPE="ec-p384")
    try:
        result = blog.fab("renew")  # no --force: the decision sees the change
        assert "certificate issue" in result.stdout and "the key type changed (ec-p256 -> ec-p384)" in result.stderr
        new = _served(settings)
        assert new.serial_number != old.serial_number and new.public_key().curve.name == "secp384r1"
        assert "certificate keep" in blog.fab("renew").stdout  # and then it is kept
    finally:
        _set(blog, DEPLOY_KEY_TYPE="ec-p256")
    # Back to ec-p256: the ec-p256 certificate still on the server is valid and matches: no new order.
    result = blog.fab("renew")
    assert "staged by an earlier deploy" in result.stderr and "used, no new order" in result.stderr, result.stderr
    assert _served(settings).serial_number == old.serial_number


def test_a_domain_set_change_issues_a_certificate_for_the_new_set(kept):
    blog, settings = kept
    old = _served(settings)
    wider = [*KEPT, "new.kept.example.com"]
    _set(blog, DEPLOY_DOMAINS=wider)
    try:
        result = blog.fab("renew")
        assert "certificate issue" in result.stdout and "the domain set changed" in result.stderr
        wide = blog.settings()
        new = _served(wide)
        names = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert sorted(names) == sorted(wider) and new.serial_number != old.serial_number
        assert fetch_http(wide, "new.kept.example.com", path="/p?q=1") == (301, f"{wide.https_origin}/p?q=1")
    finally:
        _set(blog, DEPLOY_DOMAINS=KEPT)
    result = blog.fab("renew")  # and back: a certificate for exactly the old set
    assert "the domain set changed" in result.stderr or "used, no new order" in result.stderr, result.stderr
    names = _served(settings).extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(names) == sorted(KEPT)


def test_a_ca_directory_change_staging_to_production_issues_anew_with_its_own_account(kept):
    """Another directory URL is another CA as far as the deploy knows (staging -> production):
    a new certificate, and an account key of its own beside the first one's."""
    blog, settings = kept
    old = _served(settings)
    production = settings.acme_directory + "?production"  # the same Pebble under another directory URL
    _set(blog, DEPLOY_ACME_DIRECTORY=production)
    try:
        result = blog.fab("renew")
        assert "certificate issue" in result.stdout
        assert f"the CA directory changed ({settings.acme_directory} -> {production})" in result.stderr
        moved = blog.settings()
        assert _served(moved).serial_number != old.serial_number
        first_key, second_key = Path(certificates.account_key_path(settings)), Path(certificates.account_key_path(moved))
        assert first_key != second_key and first_key.exists() and second_key.exists()
        assert (second_key.stat().st_mode & 0o777) == 0o600
        live_meta = json.loads((Path(settings.tls_dir) / "live" / "meta.json").read_text())
        assert live_meta["directory"] == production
        assert "certificate keep" in blog.fab("renew").stdout
    finally:
        _set(blog, DEPLOY_ACME_DIRECTORY=settings.acme_directory)


def test_status_report_names_the_ari_window():
    """The report is pure: an ARI-based decision says so, with the window and when the CA is asked again."""
    from test_renewal import INSTALLED, T0, ari as window, settings as make_settings
    from deploy import status
    from deploy.renewal import decide
    from deploy.vhost import NginxBuild

    info = window(40, 41)
    decision = decide(INSTALLED, make_settings(), T0 + dt.timedelta(days=1), info)
    releases = ("20251201T000000000000Z", "20251215T000000000000Z", "20260101T000000000000Z")
    state = host_state.HostState(NginxBuild((1, 22, 1), (3, 0, 0)), releases[-1], True, releases, "", (), INSTALLED.cert_id,
                                 INSTALLED, None, info, None, "", False)
    text = status.report(status.Status("203.0.113.5", state, decision, info, T0), make_settings())
    assert "blog.example.com: issuer CN=test CA, serial 1234abcd, valid until 2026-04-01 00:00:00 UTC" in text
    assert f"next renewal: {decision.renew_from:%Y-%m-%d %H:%M:%S} UTC (the CA's renewal window (ARI))" in text
    assert "ARI: window 2026-02-10 00:00:00 UTC to 2026-02-11 00:00:00 UTC, ask again after 2026-04-11" in text
    assert "last deploy: release 20260101T000000000000Z (3 release(s) kept)" in text
    assert "interrupted" not in text
    pending = status.report(status.Status("203.0.113.5", state._replace(journal="release=x"), decision, info, T0), make_settings())
    assert "an interrupted deploy left changes pending: the next deploy puts them back first" in pending
