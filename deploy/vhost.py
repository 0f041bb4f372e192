"""The nginx vhost as text: a pure function of the settings, the nginx version and the paths.

What it renders (``render_vhost``):

- port 80: ``/.well-known/acme-challenge/`` is served from the challenge folder, everything else
  answers 301 to the canonical https URL (``return``, never ``if`` or ``rewrite``);
- port 443 (only once a certificate exists): the canonical name serves the live release with
  Mozilla's "intermediate" TLS profile (guidelines 6.0), HSTS, gzip, cache lifetimes and the
  site's own 404 page; every other name (www/apex, aliases) answers 301 to the canonical name;
- a probe location whose name is a hash of the whole text, so the installer can tell from the
  outside that nginx answers with *this* config (reload is asynchronous).

No value reaches the text unchecked: settings are validated in ``settings.py``, and every value
is checked once more here against a strict pattern (``_word``), so a hand-built or future setting
can never add a directive, a block or a variable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .certificates import LIVE  # settings.tls_dir / LIVE -> certs/<id>: the fallback certificate path
from .errors import SettingsError
from .settings import DeploySettings

# Mozilla "intermediate", guidelines 6.0: TLS 1.2 + 1.3; for TLS 1.2 only ECDHE key exchange with AEAD
# ciphers (no DHE since 5.8, so no dhparam). The TLS 1.3 suites are all fine and left to OpenSSL.
INTERMEDIATE_PROTOCOLS = "TLSv1.2 TLSv1.3"
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# No ssl_ecdh_curve: Mozilla 6.0 lists X25519MLKEM768:X25519:prime256v1:secp384r1, but naming the
# post-quantum hybrid fails `nginx -t` on OpenSSL < 3.5 (Debian 12 has 3.0), and naming only the
# classic groups would switch it off where OpenSSL's defaults already offer it. OpenSSL's default
# groups are all ECDHE (X25519, P-256, ...), as testssl.sh confirms in tests/test_tls.py.
# One zone for every pelican-https site on the server: nginx shares a zone declared with the same
# name and size, and refuses the same name with another size (nginx -t catches that).
SESSION_CACHE = "shared:pelican_https:10m"  # about 40000 sessions

# Compressed on the fly (text/html is always included by nginx). Static text only: no secrets, no BREACH.
GZIP_TYPES = ("text/plain text/css text/xml application/xml application/atom+xml application/rss+xml "
              "application/javascript application/json image/svg+xml")
THEME_PATH = "/theme/"  # Pelican's THEME_STATIC_DIR: CSS, fonts, images of the theme
THEME_EXPIRES = "30d"  # long, but not `immutable`: theme files keep their names across theme updates
PAGE_EXPIRES = "5m"  # HTML, feeds, images: new posts show up within minutes
HTTP2_ON_FROM = (1, 25, 1)  # `http2 on;` exists from nginx 1.25.1; before, `listen ... http2`

PROBE_PREFIX = "/.well-known/acme-challenge/pelican-https-probe-"
HEADER = "# Managed by pelican-https: this file is replaced at every deploy (the previous one is kept as .prev).\n"

# Anything interpolated into the config must match this: no spaces, quotes, ';', '{', '}', '$', '#', '\'.
_WORD = re.compile(r"[A-Za-z0-9._:/\[\]*@+=-]+")
_PROBE_PLACEHOLDER = "@@PROBE@@"


@dataclass(frozen=True)
class Vhost:
    """A rendered vhost: the file's text and the probe path that answers 204 once nginx runs it."""
    text: str
    probe_path: str

    @property
    def vhost_id(self) -> str:
        return self.probe_path.removeprefix(PROBE_PREFIX)


def render_vhost(settings: DeploySettings, nginx_version: tuple[int, ...], *, with_tls: bool,
                 certificate_dir: str | None = None) -> Vhost:
    """The site's vhost. ``with_tls=False`` (first deploy, no certificate yet): only the port-80 part.

    ``certificate_dir`` is the certificate's own folder (tls/certs/<id>), named in the text rather
    than the tls/live symlink: nginx opens the chain and the key one after the other, and through a
    symlink switched in between it could pair the old chain with the new key ("key values
    mismatch"). Naming the folder makes the vhost's rename the one atomic switch, and a new
    certificate changes the text and its probe. ``None`` falls back to tls/live.
    """
    canonical = _word("DEPLOY_DOMAINS", settings.canonical_domain)
    aliases = [_word("DEPLOY_DOMAINS", d) for d in settings.domains if d != settings.canonical_domain]
    origin = _origin(settings, canonical)

    parts = [HEADER]
    if settings.hsts_preload and aliases:
        # hstspreload.org: http must first redirect to https on the *same* host, so that each name
        # gets its HSTS header; the https alias server then sends it on to the canonical name.
        parts.append(_http_server(settings, [canonical], origin, default=settings.nginx_default_server))
        parts.extend(_http_server(settings, [alias], _origin(settings, alias), default=False) for alias in aliases)
    else:
        parts.append(_http_server(settings, [canonical, *aliases], origin, default=settings.nginx_default_server))
    if with_tls:
        certificate = _word("DEPLOY_STATE_DIR", str(certificate_dir or settings.tls_dir / LIVE))
        parts.append(_tls_site_server(settings, nginx_version, canonical, certificate))
        if aliases:
            parts.append(_tls_redirect_server(settings, nginx_version, aliases, origin, certificate))
    draft = "".join(parts)
    vhost_id = hashlib.sha256(draft.encode()).hexdigest()[:16]
    return Vhost(draft.replace(_PROBE_PLACEHOLDER, vhost_id), PROBE_PREFIX + vhost_id)


def hsts_value(settings: DeploySettings) -> str:
    """Built from an integer and fixed words only."""
    value = f"max-age={_number('DEPLOY_HSTS_MAX_AGE', settings.hsts_max_age)}"
    if settings.hsts_include_subdomains:
        value += "; includeSubDomains"
    if settings.hsts_preload:
        value += "; preload"
    return value


# --- the server blocks -------------------------------------------------------------------

def _http_server(settings: DeploySettings, names: list[str], redirect_to: str, *, default: bool) -> str:
    challenge_root = _word("DEPLOY_REMOTE_ROOT", str(settings.challenge_root))
    return f"""
# Port 80: ACME HTTP-01 challenges are served from the challenge folder; everything else goes to https.
server {{
{_listens(settings, settings.http_port, [], default)}    server_name {" ".join(names)};
    server_tokens off;

    location ^~ /.well-known/acme-challenge/ {{
        root {challenge_root};
        default_type text/plain;
        try_files $uri =404;
    }}
    # Answers only while nginx runs this very file: the deploy polls it after a reload.
    location = {PROBE_PREFIX}{_PROBE_PLACEHOLDER} {{
        return 204;
    }}
    location / {{
        return 301 {redirect_to}$request_uri;
    }}
}}
"""


def _tls_site_server(settings: DeploySettings, nginx_version: tuple[int, ...], canonical: str, certificate: str) -> str:
    csp = ('    # Safety net for insecure references the build could not upgrade.\n'
           '    add_header Content-Security-Policy "upgrade-insecure-requests" always;\n'
           if settings.csp_upgrade_insecure else "")
    site_root = _word("DEPLOY_REMOTE_ROOT", str(settings.current_link))
    return f"""
# The site, on its canonical name.
server {{
{_tls_head(settings, nginx_version, [canonical], settings.nginx_default_server, certificate)}{csp}
    root {site_root};
    index index.html;
    charset utf-8;
    gzip on;
    gzip_vary on;
    gzip_min_length 256;
    gzip_types {GZIP_TYPES};
    # Caching uses `expires` only: an add_header inside a location would drop the server's HSTS header.
    expires {PAGE_EXPIRES};
    # The site's own 404.html when the release has one; nginx's plain page when it has not.
    error_page 404 /404.html;

    location / {{
        try_files $uri $uri/ =404;
    }}
    location ^~ {THEME_PATH} {{
        expires {THEME_EXPIRES};
        try_files $uri =404;
    }}
    location = /404.html {{
        internal;
    }}
}}
"""


def _tls_redirect_server(settings: DeploySettings, nginx_version: tuple[int, ...], aliases: list[str], origin: str,
                         certificate: str) -> str:
    return f"""
# Every other name redirects to the canonical one, on https too (with HSTS for the name itself).
server {{
{_tls_head(settings, nginx_version, aliases, False, certificate)}
    return 301 {origin}$request_uri;
}}
"""


def _tls_head(settings: DeploySettings, nginx_version: tuple[int, ...], names: list[str], default: bool,
              certificate: str) -> str:
    modern_http2 = tuple(nginx_version) >= HTTP2_ON_FROM
    options = ["ssl"] if modern_http2 else ["ssl", "http2"]
    http2 = "http2 on;" if modern_http2 else f"# HTTP/2 is switched on in the listen lines (nginx {_version(nginx_version)} < 1.25.1)"
    return f"""\
{_listens(settings, settings.https_port, options, default)}    server_name {" ".join(names)};
    {http2}
    server_tokens off;

    ssl_certificate {certificate}/fullchain.pem;
    ssl_certificate_key {certificate}/privkey.pem;
    # Mozilla intermediate (guidelines 6.0): TLS 1.2 and 1.3, ECDHE AEAD ciphers, the client picks
    # (all are strong), no dhparam (no DHE), no OCSP stapling (Let's Encrypt ended OCSP in 2025).
    ssl_protocols {INTERMEDIATE_PROTOCOLS};
    ssl_ciphers {INTERMEDIATE_CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache {SESSION_CACHE};
    # Tickets off: nginx would keep one ticket key until restart, weakening forward secrecy.
    ssl_session_tickets off;

    add_header Strict-Transport-Security "{hsts_value(settings)}" always;
"""


def _listens(settings: DeploySettings, port: int, options: list[str], default: bool) -> str:
    words = [*options, "default_server"] if default else options
    suffix = "".join(" " + w for w in words)
    port = _number("DEPLOY_HTTP_PORT/DEPLOY_HTTPS_PORT", port)
    return "".join(f"    listen {_word('DEPLOY_LISTEN', address)}:{port}{suffix};\n" for address in settings.listen_addresses)


def _origin(settings: DeploySettings, domain: str) -> str:
    port = _number("DEPLOY_HTTPS_PORT", settings.https_port)
    return f"https://{domain}" + ("" if port == 443 else f":{port}")


def _version(version: tuple[int, ...]) -> str:
    return ".".join(str(int(x)) for x in version)


def _number(setting: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError(f"{setting}: refusing to write {value!r} into the nginx config; expected a whole number")
    return value


def _word(setting: str, value: str) -> str:
    """Last line of defence: a value that could change the config's structure never gets in."""
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise SettingsError(f"{setting}: refusing to write {value!r} into the nginx config; "
                            "expected letters, digits and . _ : / [ ] * @ + = - only (no spaces, quotes, ';', '{', '}' or '$')")
    return value
