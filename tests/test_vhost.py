"""The vhost renderer: golden files, the Mozilla intermediate profile, and hostile input.

Pure tests (no sandbox), plus a check that each rendered variant passes the real `nginx -t`.
Regenerate the golden files after an intended change with:  UPDATE_GOLDEN=1 pytest tests/test_vhost.py
and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from deploy.errors import NginxError, SettingsError
from deploy.settings import settings_from_mapping
from deploy.vhost import (INTERMEDIATE_CIPHERS, PROBE_PREFIX, NginxBuild, parse_nginx_build, render_challenge_vhost,
                          render_vhost, served_domains)

GOLDEN = Path(__file__).parent / "golden"
NGINX = "/usr/sbin/nginx"

BASE = {"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy"}

DEBIAN12 = NginxBuild((1, 22, 1), (3, 0, 19))

# name -> (settings, nginx build, kind): kind "site" (error_page), "site-no-404", or "challenge"
CASES = {
    "tls-nginx1.22-one-domain": ({}, DEBIAN12, "site"),
    "tls-nginx1.22-no-404": ({}, DEBIAN12, "site-no-404"),
    "tls-nginx1.25.1-aliases": ({"DEPLOY_DOMAINS": ["blog.example.com", "www.blog.example.com", "old-blog.example.org"]},
                                NginxBuild((1, 25, 1), (3, 0, 13)), "site"),
    "tls-nginx1.26-www-preload-csp-ipv4": ({
        "SITEURL": "https://www.example.com", "DEPLOY_DOMAINS": ["www.example.com", "example.com"],
        "DEPLOY_HSTS_INCLUDE_SUBDOMAINS": True, "DEPLOY_HSTS_PRELOAD": True, "DEPLOY_CSP_UPGRADE_INSECURE": True,
        "DEPLOY_LISTEN": ["203.0.113.5"]}, NginxBuild((1, 26, 3), (3, 5, 0)), "site"),
    "tls-nginx1.24-default-server-ports": ({
        "DEPLOY_NGINX_DEFAULT_SERVER": True, "DEPLOY_LISTEN": ["*"], "DEPLOY_HTTP_PORT": 8080,
        "DEPLOY_HTTPS_PORT": 8443, "DEPLOY_HSTS_MAX_AGE": 300}, NginxBuild((1, 24, 0), None), "site"),
    "challenge-nginx1.22-first-deploy": ({"DEPLOY_DOMAINS": ["blog.example.com", "www.blog.example.com"]}, DEBIAN12, "challenge"),
}


def make_settings(**overrides):
    return settings_from_mapping(BASE | overrides)


CERT_ID = "20261127T090000123456Z-4a1f00d2c3b4a5968778695a4b3c2d1e0f"


def render_case(name: str, **overrides):
    values, build, kind = CASES[name]
    settings = make_settings(**values | overrides)
    if kind == "challenge":
        return render_challenge_vhost(settings, settings.domains)
    return render_vhost(settings, build, str(settings.tls_dir / "certs" / CERT_ID), error_page=kind == "site")


def site(settings, build=DEBIAN12, certificate_dir="/var/lib/p/tls/certs/one", error_page=True):
    return render_vhost(settings, build, certificate_dir, error_page=error_page)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_vhost_matches_its_golden_file(name):
    text = render_case(name).text
    golden = GOLDEN / f"{name}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"missing {golden}: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == golden.read_text()


# --- nginx -V --------------------------------------------------------------------------

DEBIAN12_V = """nginx version: nginx/1.22.1
built with OpenSSL 3.0.22 25 Aug 2026 (running with OpenSSL 3.0.19 27 Jan 2026)
TLS SNI support enabled
configure arguments: --with-cc-opt='-g -O2' --with-http_ssl_module --with-http_v2_module
"""


@pytest.mark.parametrize("text, build", [
    (DEBIAN12_V, NginxBuild((1, 22, 1), (3, 0, 19))),  # running with wins over built with
    ("nginx version: nginx/1.27.4\nbuilt with OpenSSL 3.5.0 8 Apr 2025\nTLS SNI support enabled\n", NginxBuild((1, 27, 4), (3, 5, 0))),
    ("nginx version: nginx/1.25.3\nbuilt by gcc 12.2.0\nbuilt with LibreSSL 3.8.2\n", NginxBuild((1, 25, 3), None)),
    ("nginx version: openresty/1.21.4.3\nbuilt with OpenSSL 1.1.1w  11 Sep 2023\n", NginxBuild((1, 21, 4, 3), (1, 1, 1))),
])
def test_parse_nginx_build(text, build):
    assert parse_nginx_build(text) == build


@pytest.mark.parametrize("text", ["", "sudo: a password is required\n", "bash: /usr/sbin/nginx: No such file or directory"])
def test_parse_nginx_build_without_a_version_names_deploy_nginx(text):
    with pytest.raises(NginxError, match="DEPLOY_NGINX") as err:
        parse_nginx_build(text)
    assert "\n" not in str(err.value)


def test_the_real_nginx_v_parses():
    result = subprocess.run([NGINX, "-V"], capture_output=True, text=True)
    build = parse_nginx_build(result.stdout + result.stderr)
    assert build.version >= (1, 18) and build.openssl is not None


@pytest.mark.parametrize("openssl, curves", [
    ((3, 0, 19), "X25519:prime256v1:secp384r1"),
    ((3, 4, 9), "X25519:prime256v1:secp384r1"),
    ((3, 5, 0), "X25519MLKEM768:X25519:prime256v1:secp384r1"),
    ((3, 6, 1), "X25519MLKEM768:X25519:prime256v1:secp384r1"),
    (None, "X25519:prime256v1:secp384r1"),  # unknown library: the groups every OpenSSL knows
])
def test_ecdh_curve_as_mozilla_emits_it_for_the_openssl(openssl, curves):
    text = site(make_settings(DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"]), NginxBuild((1, 22, 1), openssl)).text
    assert text.count(f"ssl_ecdh_curve {curves};") == 2  # site + alias server


# --- the domains header ------------------------------------------------------------------

def test_served_domains_reads_back_the_header():
    settings = make_settings(DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"])
    text = site(settings).text
    assert "# pelican-https domains: blog.example.com www.blog.example.com\n" in text
    assert served_domains(text) == ("blog.example.com", "www.blog.example.com")
    assert served_domains("") == ()
    assert served_domains("# Managed by pelican-https\nserver {\n}\n# pelican-https domains: late.example\n") == ()
    assert served_domains(render_challenge_vhost(settings, ["new.example.com"]).text) == ()
    assert served_domains(render_challenge_vhost(settings, ["new.example.com"], text).text) == settings.domains


# --- the challenge-only vhost ------------------------------------------------------------

def test_challenge_vhost_for_a_first_deploy_serves_only_the_challenge():
    settings = make_settings(DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"])
    v = render_challenge_vhost(settings, settings.domains)
    assert v.probe_host == "blog.example.com"
    assert "ssl" not in v.text and "443" not in v.text and "default_server" not in v.text
    assert "server_name blog.example.com www.blog.example.com;" in v.text
    assert "location ^~ /.well-known/acme-challenge/ {\n        root /srv/www/blog.example.com/challenges;" in v.text
    assert "location / {\n        return 404;\n    }" in v.text and "301" not in v.text
    assert f"location = {v.probe_path} {{" in v.text


def test_challenge_vhost_keeps_the_live_text_and_never_touches_its_tls_servers():
    settings = make_settings()
    live = site(settings)
    v = render_challenge_vhost(settings, ["new.example.com"], live.text)
    assert v.text.startswith(live.text)
    assert v.probe_host == "new.example.com" and v.probe_path != live.probe_path
    added = v.text[len(live.text):]
    assert "server_name new.example.com;" in added and "ssl" not in added and "443" not in added
    assert f"location = {v.probe_path} {{" in added and live.probe_path in v.text
    with pytest.raises(ValueError, match="blog.example.com"):
        render_challenge_vhost(settings, ["blog.example.com"], live.text)
    with pytest.raises(SettingsError, match="refusing to write"):
        render_challenge_vhost(settings, ["new.example.com; return 200"], live.text)


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
    text = site(make_settings(), NginxBuild(version, (3, 0, 2))).text
    assert listen in text and "listen [::]:443 " in text
    assert ("http2 on;" in text) == http2_on


def test_listens_follow_deploy_listen():
    text = site(make_settings(DEPLOY_LISTEN=["192.0.2.7", "[2001:db8::7]"])).text
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
    text = site(make_settings(**values)).text
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
    block = render_case("tls-nginx1.22-one-domain").text.split("\nserver {")[2]
    assert "expires 5m;" in block
    assert "location ^~ /theme/ {\n        expires 30d;" in block
    assert "gzip on;" in block and "text/css" in block and "application/atom+xml" in block
    assert "error_page 404 /404.html;" in block and "location = /404.html {\n        internal;" in block
    assert "root /srv/www/blog.example.com/current;" in block


def test_a_release_without_404_html_gets_no_error_page():
    """nginx would log an error for every 404 if the vhost pointed at a missing 404.html."""
    text = render_case("tls-nginx1.22-no-404").text
    assert "error_page" not in text and "404.html" not in text


def test_the_vhost_names_the_certificate_folder_so_one_rename_switches_chain_and_key():
    settings = make_settings(DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"])
    one = site(settings, certificate_dir="/var/lib/p/tls/certs/one")
    two = site(settings, certificate_dir="/var/lib/p/tls/certs/two")
    assert one.probe_path != two.probe_path  # a new certificate: new text, reload, new probe
    assert one.text.count("ssl_certificate /var/lib/p/tls/certs/one/fullchain.pem;") == 2
    assert one.text.count("ssl_certificate_key /var/lib/p/tls/certs/one/privkey.pem;") == 2
    with pytest.raises(SettingsError, match="refusing to write"):
        site(settings, certificate_dir="/var/lib/p/tls/certs/x;y")


def test_probe_path_names_the_exact_text():
    a = render_case("tls-nginx1.22-one-domain")
    b = render_case("tls-nginx1.22-one-domain")
    c = render_vhost(make_settings(DEPLOY_HSTS_MAX_AGE=300), DEBIAN12, str(make_settings().tls_dir / "certs" / CERT_ID),
                     error_page=True)
    assert a == b
    assert a.probe_path.startswith(PROBE_PREFIX) and f"location = {a.probe_path} {{" in a.text
    assert a.probe_host == "blog.example.com" and a.vhost_id == a.probe_path.removeprefix(PROBE_PREFIX)
    assert c.probe_path != a.probe_path
    assert render_case("tls-nginx1.22-no-404").probe_path != a.probe_path


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
    ("hsts_max_age", "63072000; preload"),
    ("https_port", "443 default_server"),
    ("http_port", "80;"),
])
def test_renderer_refuses_values_that_bypassed_validation(field, value):
    """Defence in depth: a hand-built DeploySettings cannot smuggle a directive in either."""
    bad = make_settings()._replace(**{field: value})
    with pytest.raises(SettingsError, match="refusing to write"):
        site(bad)


@hsettings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_accepted_domain_is_a_plain_config_word(candidate):
    try:
        settings = make_settings(DEPLOY_DOMAINS=[candidate])
    except SettingsError:
        return
    text = site(settings, NginxBuild((1, 25, 1), (3, 0, 2))).text
    assert re.fullmatch(r"[a-z0-9.-]+", settings.canonical_domain)
    assert f"server_name {settings.canonical_domain};" in text


# --- the real nginx accepts every variant ----------------------------------------------

@pytest.mark.parametrize("name", [n for n in sorted(CASES) if CASES[n][1].version < (1, 25, 1)])
def test_rendered_vhost_passes_real_nginx_t(name, tmp_path):
    """nginx here is 1.22 with OpenSSL 3.0: variants for >= 1.25.1 (`http2 on;`) and OpenSSL 3.5
    (X25519MLKEM768) are covered by the golden files only."""
    assert shutil.which(NGINX), "nginx must be installed (apt-get install nginx)"
    values, build, kind = CASES[name]
    # nginx -t binds the ports it listens on: free unprivileged ones, so this runs without root.
    values = values | {"DEPLOY_REMOTE_ROOT": str(tmp_path / "www"), "DEPLOY_STATE_DIR": str(tmp_path / "state"),
                       "DEPLOY_HTTP_PORT": _free_port(), "DEPLOY_HTTPS_PORT": _free_port()}
    settings = make_settings(**values)
    certificate = tmp_path / "state" / "tls" / "certs" / CERT_ID
    certificate.mkdir(parents=True)
    _self_signed(certificate / "fullchain.pem", certificate / "privkey.pem")
    (tmp_path / "conf").mkdir()
    (tmp_path / "logs").mkdir()
    if kind == "challenge":
        text = render_challenge_vhost(settings, settings.domains).text
    else:
        live = render_vhost(settings, build, str(certificate), error_page=kind == "site")
        # ...and a challenge block for a name added later, after the live servers
        text = render_challenge_vhost(settings, ["added.example.net"], live.text).text
    (tmp_path / "conf" / "vhost.conf").write_text(text)
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET6) as probe:  # the vhost listens on [::] too
        probe.bind(("::", 0))
        return probe.getsockname()[1]
