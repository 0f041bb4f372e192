"""The renewal decision (pure): a table covering every branch, the ARI certificate id, the settings.

Certificates here are made with `cryptography` (a real X.509 chain with AKI), no server needed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from deploy.ari import retry_after_time
from deploy.errors import SettingsError
from deploy.renewal import (Installed, RenewalInfo, ari_cert_id, ari_renewal_time, decide, forced, key_type_of,
                            lifetime_renewal_start, wants_renewal_info)
from deploy.settings import settings_from_mapping

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
DIRECTORY = "https://acme.example/dir"
DOMAINS = ("blog.example.com", "www.blog.example.com")
_CA_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(not_before=T0, lifetime=dt.timedelta(days=90), key=None, serial=0x1234ABCD) -> x509.Certificate:
    key = key or ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAINS[0])]))
            .issuer_name(issuer).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_before + lifetime)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(_CA_KEY.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in DOMAINS]), critical=False)
            .sign(_CA_KEY, hashes.SHA256()))


def settings(**overrides):
    raw = {"DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy", "DEPLOY_DOMAINS": list(DOMAINS),
           "DEPLOY_ACME_DIRECTORY": DIRECTORY, "DEPLOY_KNOWN_HOSTS": "/nonexistent/known_hosts"}
    raw.update(overrides)
    return settings_from_mapping(raw)


CERT_90 = make_cert()  # 90 days: renews at 60 days (1/3 left)
CERT_6 = make_cert(lifetime=dt.timedelta(days=6))  # shortlived: renews at 3 days (1/2 left)
INSTALLED = Installed(CERT_90, DIRECTORY, DOMAINS, "ec-p256", "id1", None, True)
ARI_ID = ari_cert_id(CERT_90)


def ari(start_days, end_days, cert_id=ARI_ID):
    return RenewalInfo(cert_id, T0 + dt.timedelta(days=start_days), T0 + dt.timedelta(days=end_days),
                       T0 + dt.timedelta(days=100))


DAY = dt.timedelta(days=1)

# (name, installed, settings overrides, now, renewal info, expected action, words in the reason)
CASES = [
    ("no certificate", None, {}, T0, None, "issue", "no certificate installed"),
    ("CA directory changed (staging -> production)", replace(INSTALLED, directory="https://acme-staging.example/dir"),
     {}, T0 + DAY, None, "issue", "CA directory changed"),
    ("domain added", replace(INSTALLED, domains=DOMAINS[:1]), {}, T0 + DAY, None, "issue", "domain set changed"),
    ("domain order does not matter", replace(INSTALLED, domains=DOMAINS[::-1]), {}, T0 + DAY, None, "keep", "nothing to do"),
    ("key type setting changed", INSTALLED, {"DEPLOY_KEY_TYPE": "rsa2048"}, T0 + DAY, None, "issue", "key type changed (ec-p256 -> rsa2048)"),
    ("meta says EC but the certificate is RSA", replace(INSTALLED, certificate=make_cert(key=rsa.generate_private_key(65537, 2048))),
     {}, T0 + DAY, None, "issue", "key type changed (rsa2048 -> ec-p256)"),
    ("profile changed", INSTALLED, {"DEPLOY_ACME_PROFILE": "tlsserver"}, T0 + DAY, None, "issue", "profile changed"),
    ("certificate does not match its key", replace(INSTALLED, key_matches=False), {}, T0 + DAY, None, "issue", "does not match"),
    ("key match unknown (no openssl) is not a reason", replace(INSTALLED, key_matches=None), {}, T0 + DAY, None, "keep", "nothing to do"),
    ("expired", INSTALLED, {}, T0 + 91 * DAY, None, "issue", "expired"),
    ("expired wins over an ARI window", INSTALLED, {}, T0 + 91 * DAY, ari(95, 96), "issue", "expired"),
    ("1/3 rule: before", INSTALLED, {}, T0 + 59 * DAY, None, "keep", "renews from 2026-03-02 00:00:00 UTC (1/3"),
    ("1/3 rule: at the start", INSTALLED, {}, T0 + 60 * DAY, None, "renew", "1/3 of its lifetime left"),
    ("1/2 rule under 10 days: before", replace(INSTALLED, certificate=CERT_6), {}, T0 + 2 * DAY, None, "keep", "(1/2 of its lifetime"),
    ("1/2 rule under 10 days: inside", replace(INSTALLED, certificate=CERT_6), {}, T0 + 3 * DAY, None, "renew", "1/2 of its lifetime"),
    ("ARI window in the future (before the 1/3 point too)", INSTALLED, {}, T0 + 30 * DAY, ari(40, 41), "keep", "renewal window (ARI)"),
    ("ARI window later than the 1/3 point: ARI wins", INSTALLED, {}, T0 + 61 * DAY, ari(70, 72), "keep", "renewal window (ARI)"),
    ("ARI window open: past the chosen point", INSTALLED, {}, T0 + 41 * DAY, ari(40, 41), "renew", "renewing"),
    ("ARI window already over (e.g. revocation): renew now", INSTALLED, {}, T0 + 10 * DAY, ari(1, 2), "renew", "renewing"),
    ("ARI answer for another certificate is ignored", INSTALLED, {}, T0 + 30 * DAY, ari(1, 2, cert_id="other.AQ"), "keep", "1/3"),
]


@pytest.mark.parametrize("name, installed, overrides, now, info, action, words", CASES, ids=[c[0] for c in CASES])
def test_decision_table(name, installed, overrides, now, info, action, words):
    decision = decide(installed, settings(**overrides), now, info)
    assert decision.action == action
    assert words in decision.reason
    assert decision.needs_order == (action != "keep")


def test_keep_says_until_when_and_from_when_in_one_line():
    decision = decide(INSTALLED, settings(), T0 + DAY)
    assert decision.reason == ("valid until 2026-04-01 00:00:00 UTC, renews from 2026-03-02 00:00:00 UTC "
                               "(1/3 of its lifetime left): nothing to do")
    assert decision.renew_from == T0 + 60 * DAY and decision.not_after == T0 + 90 * DAY
    assert "\n" not in decision.reason


def test_ari_renewal_sends_replaces_and_lifetime_renewal_does_not():
    by_ari = decide(INSTALLED, settings(), T0 + 41 * DAY, ari(40, 41))
    assert (by_ari.basis, by_ari.replaces) == ("ari", ARI_ID)
    by_lifetime = decide(INSTALLED, settings(), T0 + 61 * DAY)
    assert (by_lifetime.basis, by_lifetime.replaces) == ("lifetime", None)


def test_ari_point_is_inside_the_window_and_stable_per_certificate():
    info = ari(40, 42)
    point = ari_renewal_time(info)
    assert info.window_start <= point <= info.window_end
    assert point == ari_renewal_time(info)  # every run and `fab status` agree
    others = {ari_renewal_time(replace(info, cert_id=f"x.{i}")) for i in range(20)}
    assert len(others) > 10  # but certificates spread over the window


def test_forced_renewal_only_changes_keep():
    keep = decide(INSTALLED, settings(), T0 + DAY)
    assert forced(keep, INSTALLED).action == "renew" and "forced" in forced(keep, INSTALLED).reason
    issue = decide(None, settings(), T0)
    assert forced(issue, None) is issue


def test_lifetime_rule_is_never_a_fixed_day_count():
    for days, left in ((90, 30), (45, 15), (6, 3), (1, 0.5)):
        cert = make_cert(lifetime=dt.timedelta(days=days))
        assert cert.not_valid_after_utc - lifetime_renewal_start(cert) == dt.timedelta(days=left)


def test_ari_is_asked_only_when_it_can_change_the_answer():
    s = settings()
    now = T0 + DAY
    fresh = replace(ari(40, 41), retry_at=now + dt.timedelta(hours=1))
    assert wants_renewal_info(INSTALLED, s, None, now)  # nothing cached
    assert not wants_renewal_info(INSTALLED, s, fresh, now)  # honour Retry-After
    assert wants_renewal_info(INSTALLED, s, fresh, now + dt.timedelta(hours=2))  # Retry-After passed
    assert wants_renewal_info(INSTALLED, s, replace(fresh, cert_id="other.AQ"), now)  # cached for another cert
    assert not wants_renewal_info(None, s, None, now)
    assert not wants_renewal_info(INSTALLED, s, None, T0 + 91 * DAY)  # RFC 9773: never after expiry
    assert not wants_renewal_info(replace(INSTALLED, directory="https://other/dir"), s, None, now)


def test_ari_cert_id_matches_rfc_9773_example():
    # RFC 9773 section 4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 00:87:65:43:21.
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    ext = x509.AuthorityKeyIdentifier(aki, None, None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(0x87654321)
            .not_valid_before(T0).not_valid_after(T0 + DAY).add_extension(ext, critical=False).sign(key, hashes.SHA256()))
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_key_type_names():
    assert key_type_of(ec.generate_private_key(ec.SECP384R1()).public_key()) == "ec-p384"
    assert key_type_of(rsa.generate_private_key(65537, 3072).public_key()) == "rsa3072"


def test_retry_after_seconds_date_and_garbage():
    now = T0
    default = dt.timedelta(hours=6)
    assert retry_after_time("120", now, default) == now + dt.timedelta(seconds=120)
    assert retry_after_time("Thu, 01 Jan 2026 03:00:00 GMT", now, default) == T0 + dt.timedelta(hours=3)
    assert retry_after_time("soon", now, default) == now + default
    assert retry_after_time(None, now, default) == now + default


# --- the settings of this stage ---------------------------------------------------------------

def test_certificate_settings_defaults():
    s = settings()
    assert (s.key_type, s.acme_profile, s.acme_eab_kid, s.acme_eab_hmac_key, s.dns_resolver) == ("ec-p256", None, None, None, None)


@pytest.mark.parametrize("name, value, expected", [
    ("DEPLOY_KEY_TYPE", "ed25519", "DEPLOY_KEY_TYPE='ed25519': expected one of 'ec-p256'"),
    ("DEPLOY_KEY_TYPE", "rsa1024", "DEPLOY_KEY_TYPE='rsa1024': expected one of"),
    ("DEPLOY_ACME_PROFILE", "fast", "DEPLOY_ACME_PROFILE='fast': expected None (the CA's default) or one of 'classic', 'tlsserver', 'shortlived'"),
    ("DEPLOY_DNS_RESOLVER", "dns.google", "DEPLOY_DNS_RESOLVER='dns.google': expected a DNS server's IP address"),
    ("DEPLOY_DNS_RESOLVER", "1.1.1.1:99999", "expected a DNS server's IP address"),
    ("DEPLOY_ACME_EAB_KID", "kid-1", "DEPLOY_ACME_EAB_HMAC_KEY_ENV=None: expected the name of an environment variable"),
    ("DEPLOY_ACME_EAB_HMAC_KEY_ENV", "EAB_KEY", "DEPLOY_ACME_EAB_KID=None"),
])
def test_certificate_settings_are_validated(name, value, expected):
    with pytest.raises(SettingsError) as err:
        settings(**{name: value})
    assert expected in str(err.value)  # the message names the setting, shows the bad value, says what is expected


def test_eab_key_comes_from_the_environment_and_is_never_shown(monkeypatch):
    secret = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"
    monkeypatch.delenv("TEST_EAB_KEY", raising=False)
    with pytest.raises(SettingsError, match="TEST_EAB_KEY is not set"):
        settings(DEPLOY_ACME_EAB_KID="kid-1", DEPLOY_ACME_EAB_HMAC_KEY_ENV="TEST_EAB_KEY")
    monkeypatch.setenv("TEST_EAB_KEY", "not base64 !")
    with pytest.raises(SettingsError) as err:
        settings(DEPLOY_ACME_EAB_KID="kid-1", DEPLOY_ACME_EAB_HMAC_KEY_ENV="TEST_EAB_KEY")
    assert "not a base64url key" in str(err.value) and "not base64 !" not in str(err.value)
    monkeypatch.setenv("TEST_EAB_KEY", secret)
    s = settings(DEPLOY_ACME_EAB_KID="kid-1", DEPLOY_ACME_EAB_HMAC_KEY_ENV="TEST_EAB_KEY")
    assert s.acme_eab_hmac_key.value == secret
    # Never shown with the settings, and never written out by accident.
    assert secret not in repr(s) and secret not in str(s) and secret not in f"{s}" and secret not in str(s._asdict())
    with pytest.raises(TypeError):
        json.dumps(s)


def test_resolver_with_port_and_ipv6():
    assert settings(DEPLOY_DNS_RESOLVER="127.0.0.1:8053").dns_resolver == "127.0.0.1:8053"
    assert settings(DEPLOY_DNS_RESOLVER="2606:4700:4700::1111").dns_resolver == "2606:4700:4700::1111"
