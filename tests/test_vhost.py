"""The vhost renderer: golden files, the Mozilla intermediate profile, and hostile input.

Pure tests (no sandbox), plus a check that each rendered variant passes the real `nginx -t`.
Regenerate the golden files after an intended change with:  UPDATE_GOLDEN=1 pytest tests/test_vhost.py
and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from deploy import certificates, vhost as vhost_module
from deploy.errors import SettingsError
from deploy.settings import settings_from_mapping
from deploy.vhost import INTERMEDIATE_CIPHERS, PROBE_PREFIX, render_vhost

GOLDEN = Path(__file__).parent / "golden"
NGINX = "/usr/sbin/nginx"

BASE = {"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy"}

# name -> (settings, nginx version, with_tls)
CASES = {
    "tls-nginx1.22-one-domain": ({}, (1, 22, 1), True),
    "tls-nginx1.25.1-aliases": ({"DEPLOY_DOMAINS": ["blog.example.com", "www.blog.example.com", "old-blog.example.org"]},
                                (1, 25, 1), True),
    "tls-nginx1.26-www-preload-csp-ipv4": ({
        "SITEURL": "https://www.example.com", "DEPLOY_DOMAINS": ["www.example.com", "example.com"],
        "DEPLOY_HSTS_INCLUDE_SUBDOMAINS": True, "DEPLOY_HSTS_PRELOAD": True, "DEPLOY_CSP_UPGRADE_INSECURE": True,
        "DEPLOY_LISTEN": ["203.0.113.5"]}, (1, 26, 3), True),
    "tls-nginx1.24-default-server-ports": ({
        "DEPLOY_NGINX_DEFAULT_SERVER": True, "DEPLOY_LISTEN": ["*"], "DEPLOY_HTTP_PORT": 8080,
        "DEPLOY_HTTPS_PORT": 8443, "DEPLOY_HSTS_MAX_AGE": 300}, (1, 24, 0), True),
    "http-only-nginx1.22-aliases": ({"DEPLOY_DOMAINS": ["blog.example.com", "www.blog.example.com"]}, (1, 22, 1), False),
}


def make_settings(**overrides):
    return settings_from_mapping(BASE | overrides)


CERT_ID = "20261127T090000123456Z-4a1f00d2c3b4a5968778695a4b3c2d1e0f"


def render_case(name: str, **overrides):
    values, version, with_tls = CASES[name]
    settings = make_settings(**values | overrides)
    return render_vhost(settings, version, with_tls=with_tls,
                        certificate_dir=str(settings.tls_dir / "certs" / CERT_ID) if with_tls else None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_vhost_matches_its_golden_file(name):
    text = render_case(name).text
    golden = GOLDEN / f"{name}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"missing {golden}: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == golden.read_text()


def test_renderer_and_certificate_stage_agree_on_the_live_folder():
    assert vhost_module.LIVE == certificates.LIVE


# --- the TLS profile and the shape of the config ---------------------------------------

def test_mozilla_intermediate_profile():
    text = render_case("tls-nginx1.25.1-aliases").text
    assert text.count("ssl_protocols TLSv1.2 TLSv1.3;") == 2  # canonical + alias server
    assert f"ssl_ciphers {INTERMEDIATE_CIPHERS};" in text
    ciphers = INTERMEDIATE_CIPHERS.split(":")
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20-POLY1305" in c) for c in ciphers)
    assert "ssl_prefer_server_ciphers off;" in text
    assert "ssl_session_timeout 1d;" in text and "ssl_session_cache shared:pelican_https:10m;" in text
    for absent in ("ssl_dhparam", "ssl_stapling", "TLSv1.1", "TLSv1 ", ":DHE-", "SHA1", "CBC"):
        assert absent not in text
    assert text.count("server_tokens off;") == 3  # every server block


@pytest.mark.parametrize("version, listen, http2_on", [
    ((1, 22, 1), "listen *:443 ssl http2;", False),
    ((1, 25, 0), "listen *:443 ssl http2;", False),
    ((1, 25, 1), "listen *:443 ssl;", True),
    ((1, 27, 0), "listen *:443 ssl;", True),
])
def test_http2_syntax_follows_the_nginx_version(version, listen, http2_on):
    text = render_vhost(make_settings(), version, with_tls=True).text
    assert listen in text and "listen [::]:443 " in text
    assert ("http2 on;" in text) == http2_on


def test_listens_follow_deploy_listen():
    text = render_vhost(make_settings(DEPLOY_LISTEN=["192.0.2.7", "[2001:db8::7]"]), (1, 22, 1), with_tls=True).text
    assert re.findall(r"listen (\S+):80;", text) == ["192.0.2.7", "[2001:db8::7]"]
    assert re.findall(r"listen (\S+):443 ", text) == ["192.0.2.7", "[2001:db8::7]"]
    assert "*:" not in text


def test_never_if_rewrite_or_default_server_unless_asked():
    for name in CASES:
        text = render_case(name).text
        directives = {line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}
        assert not directives & {"if", "rewrite", "set"}, name
        assert ("default_server" in text) == ("default-server" in name), name


def test_http_server_serves_the_challenge_and_redirects_the_rest():
    text = render_case("tls-nginx1.25.1-aliases").text
    http_server = text.split("\nserver {")[1]
    assert "server_name blog.example.com www.blog.example.com old-blog.example.org;" in http_server
    assert "location ^~ /.well-known/acme-challenge/ {\n        root /srv/www/blog.example.com/challenges;" in http_server
    assert "return 301 https://blog.example.com$request_uri;" in http_server
    alias_server = text.split("\nserver {")[3]
    assert "server_name www.blog.example.com old-blog.example.org;" in alias_server
    assert "return 301 https://blog.example.com$request_uri;" in alias_server


def test_first_deploy_vhost_names_no_certificate():
    text = render_case("http-only-nginx1.22-aliases").text
    assert "ssl" not in text and "443" not in text
    assert "/.well-known/acme-challenge/" in text


def test_non_standard_https_port_is_kept_in_redirects():
    text = render_case("tls-nginx1.24-default-server-ports").text
    assert "return 301 https://blog.example.com:8443$request_uri;" in text


def test_hsts_on_every_tls_response_and_never_dropped_by_a_location():
    text = render_case("tls-nginx1.25.1-aliases").text
    assert text.count('add_header Strict-Transport-Security "max-age=63072000" always;') == 2
    # nginx inherits add_header into a location only if the location has none of its own.
    for block in re.findall(r"location [^{]*\{[^}]*\}", text):
        assert "add_header" not in block, block


@pytest.mark.parametrize("values, header", [
    ({}, "max-age=63072000"),
    ({"DEPLOY_HSTS_MAX_AGE": 0}, "max-age=0"),
    ({"DEPLOY_HSTS_INCLUDE_SUBDOMAINS": True}, "max-age=63072000; includeSubDomains"),
    ({"DEPLOY_HSTS_INCLUDE_SUBDOMAINS": True, "DEPLOY_HSTS_PRELOAD": True, "DEPLOY_HTTP_PORT": 80, "DEPLOY_HTTPS_PORT": 443},
     "max-age=63072000; includeSubDomains; preload"),
])
def test_hsts_variants(values, header):
    text = render_vhost(make_settings(**values), (1, 22, 1), with_tls=True).text
    assert f'add_header Strict-Transport-Security "{header}" always;' in text


def test_csp_upgrade_insecure_is_opt_in():
    assert "Content-Security-Policy" not in render_case("tls-nginx1.25.1-aliases").text
    text = render_case("tls-nginx1.26-www-preload-csp-ipv4").text
    assert text.count('add_header Content-Security-Policy "upgrade-insecure-requests" always;') == 1


def test_preload_redirects_http_to_the_same_name_first():
    text = render_case("tls-nginx1.26-www-preload-csp-ipv4").text
    http_blocks = [b for b in text.split("\nserver {")[1:] if "listen 203.0.113.5:80;" in b]
    assert len(http_blocks) == 2
    assert "server_name www.example.com;" in http_blocks[0] and "return 301 https://www.example.com$request_uri;" in http_blocks[0]
    assert "server_name example.com;" in http_blocks[1] and "return 301 https://example.com$request_uri;" in http_blocks[1]
    # ...and https://example.com then goes to the canonical name, with the HSTS header.
    alias = text.split("\nserver {")[-1]
    assert "server_name example.com;" in alias and "return 301 https://www.example.com$request_uri;" in alias
    assert "includeSubDomains; preload" in alias


@pytest.mark.parametrize("values, complaint", [
    ({"DEPLOY_HSTS_PRELOAD": True}, "DEPLOY_HSTS_INCLUDE_SUBDOMAINS=True"),
    ({"DEPLOY_HSTS_PRELOAD": True, "DEPLOY_HSTS_INCLUDE_SUBDOMAINS": True, "DEPLOY_HSTS_MAX_AGE": 86400}, "at least 31536000"),
    ({"DEPLOY_HSTS_PRELOAD": True, "DEPLOY_HSTS_INCLUDE_SUBDOMAINS": True, "DEPLOY_HTTPS_PORT": 8443}, "standard ports"),
])
def test_preload_requirements_are_checked_and_explained(values, complaint):
    with pytest.raises(SettingsError) as err:
        make_settings(**values)
    assert "DEPLOY_HSTS_PRELOAD=True" in str(err.value) and "hstspreload.org" in str(err.value)
    assert complaint in str(err.value)


def test_site_server_caching_gzip_and_404():
    site = render_case("tls-nginx1.22-one-domain").text.split("\nserver {")[2]
    assert "expires 5m;" in site
    assert "location ^~ /theme/ {\n        expires 30d;" in site
    assert "gzip on;" in site and "text/css" in site and "application/atom+xml" in site
    assert "error_page 404 /404.html;" in site and "location = /404.html {\n        internal;" in site
    assert "root /srv/www/blog.example.com/current;" in site


def test_the_vhost_names_the_certificate_folder_so_one_rename_switches_chain_and_key():
    settings = make_settings(DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"])
    one = render_vhost(settings, (1, 22, 1), with_tls=True, certificate_dir="/var/lib/p/tls/certs/one")
    two = render_vhost(settings, (1, 22, 1), with_tls=True, certificate_dir="/var/lib/p/tls/certs/two")
    assert one.probe_path != two.probe_path  # a new certificate: new text, reload, new probe
    assert one.text.count("ssl_certificate /var/lib/p/tls/certs/one/fullchain.pem;") == 2
    assert one.text.count("ssl_certificate_key /var/lib/p/tls/certs/one/privkey.pem;") == 2
    fallback = render_vhost(settings, (1, 22, 1), with_tls=True).text
    assert "ssl_certificate /var/lib/pelican-https/blog.example.com/tls/live/fullchain.pem;" in fallback
    with pytest.raises(SettingsError, match="refusing to write"):
        render_vhost(settings, (1, 22, 1), with_tls=True, certificate_dir="/var/lib/p/tls/certs/x;y")


def test_probe_path_names_the_exact_text():
    a = render_case("tls-nginx1.22-one-domain")
    b = render_case("tls-nginx1.22-one-domain")
    c = render_vhost(make_settings(DEPLOY_HSTS_MAX_AGE=300), (1, 22, 1), with_tls=True)
    assert a == b
    assert a.probe_path.startswith(PROBE_PREFIX) and f"location = {a.probe_path} {{" in a.text
    assert c.probe_path != a.probe_path
    assert render_case("http-only-nginx1.22-aliases").probe_path != render_vhost(
        make_settings(DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"]), (1, 22, 1), with_tls=True).probe_path


# --- input cannot become config --------------------------------------------------------

HOSTILE = ["blog.example.com;", "blog.example.com{", "blog}.example.com", 'blog".example.com', "blog'.example.com",
           "$host", "blog.example.com\nlisten 80", "blog .example.com", "blog.example.com #", "exa\\mple.com"]


@pytest.mark.parametrize("setting, value", [
    *[("DEPLOY_DOMAINS", [v]) for v in HOSTILE],
    ("DEPLOY_DOMAINS", ["blog.example.com", "www.example.com; return 200 owned"]),
    ("DEPLOY_LISTEN", ["127.0.0.1:80 default_server"]),
    ("DEPLOY_LISTEN", ["*;"]),
    ("DEPLOY_LISTEN", ["[::1] reuseport"]),
    ("DEPLOY_LISTEN", ["$server_addr"]),
    ("DEPLOY_LISTEN", "*"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/a;b"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/a b"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/$document_root"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/a}"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/a\n"),
    ("DEPLOY_STATE_DIR", "/var/lib/x'y"),
    ("DEPLOY_STATE_DIR", '/var/lib/x"y'),
    ("DEPLOY_HSTS_MAX_AGE", "63072000; includeSubDomains"),
    ("DEPLOY_HSTS_MAX_AGE", -1),
    ("DEPLOY_HSTS_MAX_AGE", True),
    ("DEPLOY_HSTS_INCLUDE_SUBDOMAINS", "yes"),
    ("DEPLOY_HSTS_PRELOAD", 1),
    ("DEPLOY_CSP_UPGRADE_INSECURE", "upgrade-insecure-requests; script-src *"),
    ("DEPLOY_NGINX_DEFAULT_SERVER", "default_server"),
    ("DEPLOY_HTTP_PORT", "80; listen 81"),
    ("DEPLOY_HTTPS_PORT", 0),
    ("DEPLOY_SITE_NAME", "a;b"),
    ("DEPLOY_USER", "deploy\n"),  # `$` in a pattern matches before a final newline: fullmatch only
])
def test_hostile_settings_are_refused_with_name_and_value(setting, value):
    with pytest.raises(SettingsError) as err:
        make_settings(**{setting: value})
    message = str(err.value)
    assert setting in message
    shown = value[-1] if isinstance(value, list) else value
    assert repr(shown) in message or repr(value) in message


@pytest.mark.parametrize("field, value", [
    ("domains", ("blog.example.com;",)),
    ("domains", ("blog.example.com", "www.example.com { return 200; }")),
    ("listen_addresses", ("* default_server",)),
    ("remote_root", Path("/srv/www/a;b")),
    ("state_dir", Path("/var/lib/$x")),
    ("hsts_max_age", "63072000; preload"),
    ("https_port", "443 default_server"),
    ("http_port", "80;"),
])
def test_renderer_refuses_values_that_bypassed_validation(field, value):
    """Defence in depth: a hand-built DeploySettings cannot smuggle a directive in either."""
    bad = make_settings()._replace(**{field: value})
    with pytest.raises(SettingsError, match="refusing to write"):
        render_vhost(bad, (1, 22, 1), with_tls=True)


@hsettings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_accepted_domain_is_a_plain_config_word(candidate):
    try:
        settings = make_settings(DEPLOY_DOMAINS=[candidate])
    except SettingsError:
        return
    text = render_vhost(settings, (1, 25, 1), with_tls=True).text
    assert re.fullmatch(r"[a-z0-9.-]+", settings.canonical_domain)
    assert f"server_name {settings.canonical_domain};" in text


# --- the real nginx accepts every variant ----------------------------------------------

@pytest.mark.parametrize("name", [n for n in sorted(CASES) if CASES[n][1] < (1, 25, 1)])
def test_rendered_vhost_passes_real_nginx_t(name, tmp_path):
    """nginx here is 1.22: variants for >= 1.25.1 (`http2 on;`) are covered by the golden files only."""
    assert shutil.which(NGINX), "nginx must be installed (apt-get install nginx)"
    values, version, with_tls = CASES[name]
    values = values | {"DEPLOY_REMOTE_ROOT": str(tmp_path / "www"), "DEPLOY_STATE_DIR": str(tmp_path / "state")}
    settings = make_settings(**values)
    certificate = tmp_path / "state" / "tls" / "certs" / CERT_ID
    certificate.mkdir(parents=True)
    _self_signed(certificate / "fullchain.pem", certificate / "privkey.pem")
    (tmp_path / "conf").mkdir()
    (tmp_path / "logs").mkdir()
    vhost = render_vhost(settings, version, with_tls=with_tls, certificate_dir=str(certificate))
    (tmp_path / "conf" / "vhost.conf").write_text(vhost.text)
    (tmp_path / "conf" / "nginx.conf").write_text(f"""\
pid {tmp_path}/logs/nginx.pid;
error_log {tmp_path}/logs/error.log;
events {{ }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {tmp_path}/t1; proxy_temp_path {tmp_path}/t2; fastcgi_temp_path {tmp_path}/t3;
    uwsgi_temp_path {tmp_path}/t4; scgi_temp_path {tmp_path}/t5;
    include {tmp_path}/conf/vhost.conf;
}}
""")
    result = subprocess.run([NGINX, "-p", str(tmp_path), "-c", "conf/nginx.conf", "-t"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def _self_signed(cert_path: Path, key_path: Path) -> None:
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "blog.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
