"""The certificate's life on a real server: renewal timing, badNonce, a CA that forgot the account,
an install that breaks midway, `fab status`.

The first part runs on its own sandbox: Pebble issues 30-second certificates (so the 1/2 rule
opens the renewal window 15 s after issuance), rejects 50 % of good nonces and requires external
account binding (EAB). The second part uses the session sandbox.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import time
from pathlib import Path

import pytest
from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy import acme_client, certificates, nginx, pipeline
from deploy.connection import connect
from deploy.errors import NginxError
from deploy.renewal import lifetime_renewal_start
from deploy.sandbox import start_sandbox, stop_sandbox
from deploy.verify import fetch_https

VALIDITY = 30
EAB_KID, EAB_ENV = "kid-pelican-https", "PELICAN_HTTPS_TEST_EAB_HMAC"
EAB_SETTINGS = {"DEPLOY_ACME_EAB_KID": EAB_KID, "DEPLOY_ACME_EAB_HMAC_KEY_ENV": EAB_ENV}


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    os.environ[EAB_ENV] = hmac_key  # the key reaches the settings only through the environment
    sb = start_sandbox(cert_validity_seconds=VALIDITY, nonce_reject_percent=50, eab_keys={EAB_KID: hmac_key})
    yield sb
    stop_sandbox(sb)
    os.environ.pop(EAB_ENV, None)


def _blog(tmp_path_factory, sandbox, site: str, domains: list[str], **extra):
    from conftest import EXAMPLE_SITE, Blog

    path = tmp_path_factory.mktemp(site) / "blog"
    shutil.copytree(EXAMPLE_SITE, path, ignore=shutil.ignore_patterns("output", "__pycache__"))
    blog = Blog(path, sandbox, site)
    blog.target.write_text(json.dumps(json.loads(blog.target.read_text()) | {"DEPLOY_DOMAINS": domains} | extra))
    blog.build()
    return blog


@pytest.fixture(scope="module")
def life(tmp_path_factory, short_lived):
    blog = _blog(tmp_path_factory, short_lived, "life", ["life.example.com"], **EAB_SETTINGS)
    blog.fab("deploy")
    return blog, blog.settings()


def _served(settings):
    return fetch_https(settings, settings.canonical_domain).certificate


def test_a_ca_requiring_external_account_binding_says_what_to_set(tmp_path_factory, short_lived):
    blog = _blog(tmp_path_factory, short_lived, "no-eab", ["no-eab.example.com"])  # no EAB settings
    result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "[externalAccountRequired]" in result.stderr
    assert "set DEPLOY_ACME_EAB_KID and DEPLOY_ACME_EAB_HMAC_KEY_ENV" in result.stderr


def test_a_run_before_the_window_does_nothing_in_one_ssh_round_trip(life):
    blog, settings = life
    before = _served(settings)
    assert before.not_valid_after_utc - before.not_valid_before_utc <= dt.timedelta(seconds=VALIDITY + 1)
    result = blog.fab("renew")
    assert "certificate keep" in result.stdout
    assert "renews from" in result.stderr and "(1/2 of its lifetime left): nothing to do" in result.stderr
    assert _served(settings).serial_number == before.serial_number

    conn = connect(settings)
    transport = conn.client.get_transport()
    opened = []
    original = transport.open_session
    transport.open_session = lambda *a, **k: opened.append(1) or original(*a, **k)
    try:
        check = certificates.check(conn, settings, dt.datetime.now(dt.timezone.utc))
    finally:
        conn.close()
    assert check.decision.action == "keep" and len(opened) == check.ssh_round_trips == 1


def test_a_run_inside_the_window_renews(life):
    blog, settings = life
    before = _served(settings)
    window = lifetime_renewal_start(before)  # 1/2 of 30 s: 15 s after issuance
    time.sleep(max(0.0, (window - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.2)
    result = blog.fab("renew")
    assert "certificate renew" in result.stdout and "1/2 of its lifetime left since" in result.stderr
    after = _served(settings)
    assert after.serial_number != before.serial_number and after.not_valid_after_utc > before.not_valid_after_utc


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
    # Four certificates were issued on this site; old ones are pruned, the live one never.
    certs = sorted(p.name for p in (Path(settings.tls_dir) / "certs").iterdir())
    assert len(certs) == certificates.KEEP_CERTIFICATES
    assert (Path(settings.tls_dir) / certificates.LIVE).readlink().name == certs[-1]


# --- on the session sandbox ------------------------------------------------------------------

@pytest.fixture(scope="module")
def kept(tmp_path_factory, sandbox):
    blog = _blog(tmp_path_factory, sandbox, "kept", ["kept.example.com", "www.kept.example.com"])
    blog.fab("deploy")
    return blog, blog.settings()


def test_a_broken_install_keeps_the_old_certificate_served(kept):
    """A staged chain that does not match its key (as if the key write had gone wrong) fails
    `nginx -t` midway through the install; the old key, chain and vhost come back."""
    _, settings = kept
    old = _served(settings)
    live = Path(settings.tls_dir) / certificates.LIVE
    old_target = live.readlink()
    chain = (live / "fullchain.pem").read_bytes()
    wrong_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    broken = certificates.Issued(f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}-broken", chain, wrong_key, old)
    conn = connect(settings)
    try:
        staged = certificates.stage_certificate(conn, settings, broken)
        assert (Path(staged) / "privkey.pem").stat().st_mode & 0o777 == 0o600
        version = nginx.read_version(conn, settings)
        with pytest.raises(NginxError) as err:
            nginx.apply_config(conn, settings, nginx.render_vhost(settings, version, with_tls=True), str(staged))
    finally:
        conn.close()
    assert "key values mismatch" in str(err.value) and "put back" in str(err.value)  # nginx said why; we restored
    assert live.readlink() == old_target
    assert _served(settings).serial_number == old.serial_number


def test_status_tells_what_the_server_has_and_what_comes_next(kept):
    blog, settings = kept
    cert = _served(settings)
    out = blog.fab("status").stdout
    assert f"CA directory: {settings.acme_directory}" in out
    for domain in settings.domains:
        assert f"{domain}: issuer CN=Pebble Intermediate CA" in out
        assert f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" in out
    assert f"next renewal: {lifetime_renewal_start(cert):%Y-%m-%d %H:%M:%S} UTC (the lifetime rule)" in out
    live_release = Path(settings.current_link).readlink().name
    assert f"last deploy: release {live_release}" in out


def test_a_key_type_change_issues_a_new_certificate_of_that_type(kept):
    blog, settings = kept
    old = _served(settings)
    blog.target.write_text(json.dumps(json.loads(blog.target.read_text()) | {"DEPLOY_KEY_TYPE": "ec-p384"}))
    try:
        result = blog.fab("renew")  # no --force: the decision sees the change
        assert "certificate issue" in result.stdout and "the key type changed (ec-p256 -> ec-p384)" in result.stderr
        new = _served(settings)
        assert new.serial_number != old.serial_number and new.public_key().curve.name == "secp384r1"
        assert "certificate keep" in blog.fab("renew").stdout  # and then it is kept
    finally:
        blog.target.write_text(json.dumps(json.loads(blog.target.read_text()) | {"DEPLOY_KEY_TYPE": "ec-p256"}))


def test_status_report_names_the_ari_window():
    """The report is pure: an ARI-based decision says so, with the window and when the CA is asked again."""
    from test_renewal import INSTALLED, T0, ari, settings as make_settings
    from deploy import status
    from deploy.renewal import decide

    info = ari(40, 41)
    decision = decide(INSTALLED, make_settings(), T0 + dt.timedelta(days=1), info)
    text = status.report(status.Status(certificates.Check(INSTALLED, info, decision, 1), "20260101T000000000000Z", 3,
                                       T0), make_settings())
    assert "blog.example.com: issuer CN=test CA, serial 1234abcd, valid until 2026-04-01 00:00:00 UTC" in text
    assert f"next renewal: {decision.renew_from:%Y-%m-%d %H:%M:%S} UTC (the CA's renewal window (ARI))" in text
    assert "ARI: window 2026-02-10 00:00:00 UTC to 2026-02-11 00:00:00 UTC, ask again after 2026-04-11" in text
    assert "last deploy: release 20260101T000000000000Z (3 release(s) kept)" in text
