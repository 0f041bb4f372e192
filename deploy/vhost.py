"""The nginx vhost as text: a pure function of the settings, the server's nginx build and the paths.

What it renders:

- ``render_vhost``, the site: port 80 serves ``/.well-known/acme-challenge/`` from the challenge
  folder and answers 301 to the canonical https URL for everything else (``return``, never ``if``
  or ``rewrite``); port 443 serves the live release on the canonical name with Mozilla's
  "intermediate" TLS profile (guidelines 6.0), HSTS, gzip, cache lifetimes and, when the release
  has one, the site's own 404 page; every other name (www/apex, aliases) answers 301 to the
  canonical name.
- ``render_challenge_vhost``, before an ACME order for names the live vhost does not serve yet:
  the live text unchanged, plus port-80 blocks for those names that serve the challenge folder
  and nothing else (404). It never adds or replaces a TLS server.
- in each, a probe location whose name is a hash of the whole text, so the installer can tell from
  the outside that nginx answers with *this* config (reload is asynchronous), and a header line
  naming the domains the file serves (``served_domains`` reads it back).

The TLS groups are those Mozilla's generator emits for the server's OpenSSL (``parse_nginx_build``
reads ``nginx -V``): without ``ssl_ecdh_curve``, OpenSSL 3.0 offers X448 and P-521 and, in TLS 1.3,
the finite-field ffdhe2048-8192 groups, which sslyze finds not compliant with "intermediate".

No value reaches the text unchecked: settings are validated in ``settings.py``, and every value
is checked once more here against a strict pattern (``_word``), so a hand-built or future setting
can never add a directive, a block or a variable. Nothing here talks to a server.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple, Sequence

from .errors import NginxError, SettingsError
from .settings import DeploySettings

# Mozilla "intermediate", guidelines 6.0: TLS 1.2 + 1.3; for TLS 1.2 only ECDHE key exchange with AEAD
# ciphers (no DHE cipher suites, so no dhparam). The TLS 1.3 suites are all fine and left to OpenSSL;
# TLS 1.3's key-exchange groups are set by ssl_ecdh_curve below.
INTERMEDIATE_PROTOCOLS = "TLSv1.2 TLSv1.3"
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# Key-exchange groups, as Mozilla's generator (6.0) emits them: the ML-KEM hybrid first where OpenSSL
# knows it (3.5+; an unknown group fails `nginx -t`), then the classic ECDHE groups. Without this line
# OpenSSL 3.0's defaults also offer X448, secp521r1 and, in TLS 1.3, ffdhe2048-8192 (measured:
# `openssl s_client -tls1_3 -groups ffdhe2048` got "Server Temp Key: DH, 2048 bits").
HYBRID_GROUP = "X25519MLKEM768"
HYBRID_FROM_OPENSSL = (3, 5)
CLASSIC_GROUPS = ("X25519", "prime256v1", "secp384r1")
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
HEADER = "# Managed by pelican-https: this file is replaced at every deploy.\n"
DOMAINS_LINE = "# pelican-https domains:"  # + the names this file serves, canonical first

# Anything interpolated into the config must match this: no spaces, quotes, ';', '{', '}', '$', '#', '\'.
_WORD = re.compile(r"[A-Za-z0-9._:/\[\]*@+=-]+")
_PROBE_PLACEHOLDER = "@@PROBE@@"


class NginxBuild(NamedTuple):
    """What ``nginx -V`` says about the server's nginx: its version and the OpenSSL it runs with
    (``None`` when it names none, e.g. LibreSSL or BoringSSL)."""
    version: tuple[int, ...]
    openssl: tuple[int, ...] | None


class Vhost(NamedTuple):
    """A rendered vhost: the file's text, the probe path that answers 204 once nginx runs it,
    and a name (``probe_host``) whose server block carries that probe location."""
    text: str
    probe_path: str
    probe_host: str

    @property
    def vhost_id(self) -> str:
        return self.probe_path.removeprefix(PROBE_PREFIX)


_NGINX_VERSION = re.compile(r"^nginx version: [A-Za-z0-9_.-]+/(\d+(?:\.\d+)*)", re.MULTILINE)
_RUNNING_WITH = re.compile(r"\(running with OpenSSL (\d+(?:\.\d+)*)")
_BUILT_WITH = re.compile(r"^built with OpenSSL (\d+(?:\.\d+)*)", re.MULTILINE)


def parse_nginx_build(text: str) -> NginxBuild:
    """Read ``nginx -V 2>&1``: the version, and the OpenSSL nginx *runs* with (named in parentheses
    when it differs from the one it was built with, as on Debian after an OpenSSL update)."""
    version = _NGINX_VERSION.search(text)
    if not version:
        first = text.strip().splitlines()[0] if text.strip() else "(nothing)"
        raise NginxError(f"DEPLOY_NGINX: `nginx -V` printed no 'nginx version: nginx/X.Y.Z' line (it printed {first!r}); "
                         "expected DEPLOY_NGINX to name the server's nginx, e.g. ['sudo', '-n', '/usr/sbin/nginx']")
    openssl = _RUNNING_WITH.search(text) or _BUILT_WITH.search(text)
    return NginxBuild(_numbers(version.group(1)), _numbers(openssl.group(1)) if openssl else None)


def ecdh_curves(build: NginxBuild) -> str:
    """The ``ssl_ecdh_curve`` value for this build (unknown OpenSSL: no hybrid, which every OpenSSL knows)."""
    hybrid = build.openssl is not None and build.openssl >= HYBRID_FROM_OPENSSL
    return ":".join(((HYBRID_GROUP,) if hybrid else ()) + CLASSIC_GROUPS)


def render_vhost(settings: DeploySettings, build: NginxBuild, certificate_dir: str, *, error_page: bool) -> Vhost:
    """The site's vhost: port 80 (challenges + redirect), the TLS site and the alias redirects.

    ``certificate_dir`` is the certificate's own folder (tls/certs/<id>), named in the text rather
    than a symlink: nginx opens the chain and the key one after the other, and through a symlink
    switched in between it could pair the old chain with the new key ("key values mismatch").
    Naming the folder makes the vhost's rename the one atomic switch, and a new certificate
    changes the text and its probe. ``error_page``: the release has a 404.html (without one,
    pointing nginx at it would log an error for every 404).
    """
    canonical = _word("DEPLOY_DOMAINS", settings.canonical_domain)
    aliases = [_word("DEPLOY_DOMAINS", d) for d in settings.domains if d != settings.canonical_domain]
    origin = _origin(settings, canonical)
    certificate = _word("DEPLOY_STATE_DIR", str(certificate_dir))

    parts = [HEADER, _domains_line([canonical, *aliases])]
    if settings.hsts_preload and aliases:
        # hstspreload.org: http must first redirect to https on the *same* host, so that each name
        # gets its HSTS header; the https alias server then sends it on to the canonical name.
        parts.append(_http_server(settings, [canonical], origin, default=settings.nginx_default_server))
        parts.extend(_http_server(settings, [alias], _origin(settings, alias), default=False) for alias in aliases)
    else:
        parts.append(_http_server(settings, [canonical, *aliases], origin, default=settings.nginx_default_server))
    parts.append(_tls_site_server(settings, build, canonical, certificate, error_page))
    if aliases:
        parts.append(_tls_redirect_server(settings, build, aliases, origin, certificate))
    return _finish("".join(parts), canonical)


def render_challenge_vhost(settings: DeploySettings, names: Sequence[str], live_text: str = "") -> Vhost:
    """``live_text`` (the live vhost file's text, may be "") plus port-80 blocks for ``names`` that
    serve only the challenge folder and the probe; every other path on those names answers 404.

    For an ACME order naming domains the live vhost does not serve yet (a first deploy, a domain
    added): the CA can fetch the token for them, and nothing a visitor of the live names sees
    changes. A name the live text already has a ``server_name`` for is refused (nginx would ignore
    the second block with a warning).
    """
    names = [_word("DEPLOY_DOMAINS", n) for n in names]
    if not names:
        raise ValueError("render_challenge_vhost: no names to serve challenges for")
    taken = _server_names(live_text)
    clash = [n for n in names if n in taken]
    if clash:
        raise ValueError(f"render_challenge_vhost: the live vhost already has a server for {', '.join(clash)}")
    base = live_text if live_text else HEADER + _domains_line([])
    if base and not base.endswith("\n"):
        base += "\n"
    block = _http_server(settings, names, None, default=False)
    return _finish(base + block, names[0])


def served_domains(text: str) -> tuple[str, ...]:
    """The domains a rendered vhost serves, from its header line (canonical first); () when the
    text has none (empty, a challenge-only file, or a file not written by this version)."""
    for line in text.splitlines():
        if line.startswith(DOMAINS_LINE):
            return tuple(line[len(DOMAINS_LINE):].split())
        if line and not line.startswith("#"):
            break
    return ()


def hsts_value(settings: DeploySettings) -> str:
    """Built from an integer and fixed words only."""
    value = f"max-age={_number('DEPLOY_HSTS_MAX_AGE', settings.hsts_max_age)}"
    if settings.hsts_include_subdomains:
        value += "; includeSubDomains"
    if settings.hsts_preload:
        value += "; preload"
    return value


# --- the server blocks -------------------------------------------------------------------

def _http_server(settings: DeploySettings, names: list[str], redirect_to: str | None, *, default: bool) -> str:
    """The port-80 server of ``names``: the challenge folder, the probe, and everything else 301 to
    ``redirect_to`` (None: 404, for names a certificate is being ordered for, not served yet)."""
    challenge_root = _word("DEPLOY_REMOTE_ROOT", str(settings.challenge_root))
    if redirect_to is None:
        comment, rest = "Port 80, challenge only: names a certificate is being ordered for, not served yet.", "return 404;"
    else:
        comment = "Port 80: ACME HTTP-01 challenges are served from the challenge folder; everything else goes to https."
        rest = f"return 301 {redirect_to}$request_uri;"
    return f"""
# {comment}
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
        {rest}
    }}
}}
"""


def _tls_site_server(settings: DeploySettings, build: NginxBuild, canonical: str, certificate: str, error_page: bool) -> str:
    csp = ('    # Safety net for insecure references the build could not upgrade.\n'
           '    add_header Content-Security-Policy "upgrade-insecure-requests" always;\n'
           if settings.csp_upgrade_insecure else "")
    site_root = _word("DEPLOY_REMOTE_ROOT", str(settings.current_link))
    not_found = ("    # The release's own 404.html (a release without one gets nginx's plain page).\n"
                 "    error_page 404 /404.html;\n" if error_page else "")
    not_found_location = "    location = /404.html {\n        internal;\n    }\n" if error_page else ""
    return f"""
# The site, on its canonical name.
server {{
{_tls_head(settings, build, [canonical], settings.nginx_default_server, certificate)}{csp}
    root {site_root};
    index index.html;
    charset utf-8;
    gzip on;
    gzip_vary on;
    gzip_min_length 256;
    gzip_types {GZIP_TYPES};
    # Caching uses `expires` only: an add_header inside a location would drop the server's HSTS header.
    expires {PAGE_EXPIRES};
{not_found}
    location / {{
        try_files $uri $uri/ =404;
    }}
    location ^~ {THEME_PATH} {{
        expires {THEME_EXPIRES};
        try_files $uri =404;
    }}
{not_found_location}}}
"""


def _tls_redirect_server(settings: DeploySettings, build: NginxBuild, aliases: list[str], origin: str,
                         certificate: str) -> str:
    return f"""
# Every other name redirects to the canonical one, on https too (with HSTS for the name itself).
server {{
{_tls_head(settings, build, aliases, False, certificate)}
    return 301 {origin}$request_uri;
}}
"""


def _tls_head(settings: DeploySettings, build: NginxBuild, names: list[str], default: bool,
              certificate: str) -> str:
    nginx_version = tuple(build.version)
    modern_http2 = nginx_version >= HTTP2_ON_FROM
    options = ["ssl"] if modern_http2 else ["ssl", "http2"]
    http2 = "http2 on;" if modern_http2 else f"# HTTP/2 is switched on in the listen lines (nginx {_version(nginx_version)} < 1.25.1)"
    return f"""\
{_listens(settings, settings.https_port, options, default)}    server_name {" ".join(names)};
    {http2}
    server_tokens off;

    ssl_certificate {certificate}/fullchain.pem;
    ssl_certificate_key {certificate}/privkey.pem;
    # Mozilla intermediate (guidelines 6.0): TLS 1.2 and 1.3, ECDHE AEAD ciphers, the client picks
    # (all are strong); key exchange only over the groups named here (OpenSSL's defaults add X448,
    # P-521 and finite-field DH groups); no dhparam; no OCSP stapling (Let's Encrypt ended OCSP in 2025).
    ssl_protocols {INTERMEDIATE_PROTOCOLS};
    ssl_ecdh_curve {ecdh_curves(build)};
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


def _finish(draft: str, probe_host: str) -> Vhost:
    vhost_id = hashlib.sha256(draft.encode()).hexdigest()[:16]
    return Vhost(draft.replace(_PROBE_PLACEHOLDER, vhost_id), PROBE_PREFIX + vhost_id, probe_host)


def _domains_line(names: list[str]) -> str:
    return (DOMAINS_LINE + "".join(" " + n for n in names)).rstrip() + "\n"


def _server_names(text: str) -> set[str]:
    return {name for match in re.finditer(r"^\s*server_name\s+([^;]*);", text, re.MULTILINE) for name in match.group(1).split()}


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


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
