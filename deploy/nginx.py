"""The nginx stage: render the vhost (pure), then install it behind an `nginx -t` gate.

``render_vhost`` is a pure function of settings, the nginx version and whether a certificate
exists yet. ``apply_config`` installs the vhost (and, with it, a new certificate) in one SSH
round trip: if ``nginx -t`` fails, the previous vhost and certificate are put back, nginx keeps
running on its old config, and nginx's own message is shown.
"""

from __future__ import annotations

import io
import re
import shlex

from fabric import Connection

from .certificates import LIVE
from .connection import shell
from .errors import NginxError, RemoteCommandFailed
from .settings import DeploySettings

# Mozilla "intermediate" (guidelines 6.0): ECDHE with AEAD ciphers for TLS 1.2; TLS 1.3 suites are fixed.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
HEADER = "# Managed by pelican-https: this file is replaced at every deploy.\n"


def parse_version(text: str) -> tuple[int, ...]:
    """'nginx version: nginx/1.22.1' -> (1, 22, 1)."""
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise NginxError(f"cannot read the nginx version from {text.strip()!r}; check DEPLOY_NGINX")
    return tuple(int(x) for x in match.groups())


def render_vhost(settings: DeploySettings, nginx_version: tuple[int, ...], *, with_tls: bool) -> str:
    """The site's vhost. Without TLS (first deploy, no certificate yet) only the port-80 server."""
    canonical = settings.canonical_domain
    origin = settings.https_origin
    names = " ".join(settings.domains)
    http_listen = _listens(settings, settings.http_port, "")
    parts = [HEADER, f"""\
# Port 80: ACME HTTP-01 challenges are served, everything else goes to https (no `if`, no `rewrite`).
server {{
{http_listen}    server_name {names};
    server_tokens off;

    location ^~ /.well-known/acme-challenge/ {{
        root {settings.challenge_root};
        default_type text/plain;
        try_files $uri =404;
    }}
    location / {{
        return 301 {origin}$request_uri;
    }}
}}
"""]
    if not with_tls:
        return "".join(parts)
    modern_http2 = nginx_version >= (1, 25, 1)
    tls_listen = _listens(settings, settings.https_port, " ssl" if modern_http2 else " ssl http2")
    tls = f"""\
    {"http2 on;" if modern_http2 else "# HTTP/2 is enabled on the listen lines (nginx < 1.25.1)"}
    ssl_certificate {settings.tls_dir / LIVE / "fullchain.pem"};
    ssl_certificate_key {settings.tls_dir / LIVE / "privkey.pem"};
    # Mozilla intermediate: TLS 1.2 and 1.3, ECDHE AEAD ciphers, no dhparam, no OCSP stapling.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {INTERMEDIATE_CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:pelican_https:10m;
    ssl_session_tickets off;
    server_tokens off;
    add_header Strict-Transport-Security "max-age={settings.hsts_max_age}" always;
"""
    parts.append(f"""
server {{
{tls_listen}    server_name {canonical};
{tls}
    root {settings.current_link};
    index index.html;
    location / {{
        try_files $uri $uri/ =404;
    }}
}}
""")
    aliases = [d for d in settings.domains if d != canonical]
    if aliases:
        parts.append(f"""
# Other names redirect to the canonical one, on https too.
server {{
{tls_listen}    server_name {" ".join(aliases)};
{tls}
    return 301 {origin}$request_uri;
}}
""")
    return "".join(parts)


def _listens(settings: DeploySettings, port: int, options: str) -> str:
    return "".join(f"    listen {address}:{port}{options};\n" for address in settings.listen_addresses)


def apply_config(conn: Connection, settings: DeploySettings, vhost: str, new_cert: str | None = None) -> None:
    """Install vhost (+ new certificate), test with `nginx -t`, reload; on failure restore both and raise."""
    q = shlex.quote
    nginx = shlex.join(settings.nginx)
    vhost_file = str(settings.vhost_file)
    live = str(settings.tls_dir / LIVE)
    switch_cert = (f"ln -sfn {q(new_cert)} {q(live)}.new && mv -T {q(live)}.new {q(live)}" if new_cert else ":")
    restore_cert = (f'if [ -n "$old_cert" ]; then ln -sfn "$old_cert" {q(live)}.new && mv -T {q(live)}.new {q(live)}; '
                    f"else rm -f {q(live)}; fi") if new_cert else ":"
    script = f"""
set -e
old_cert=$(readlink {q(live)} || true)
cp -p {q(vhost_file)} {q(vhost_file)}.prev
cat > {q(vhost_file)}.new
mv -f {q(vhost_file)}.new {q(vhost_file)}
{switch_cert}
if ! {nginx} -t > {q(vhost_file)}.test 2>&1; then
    mv -f {q(vhost_file)}.prev {q(vhost_file)}
    {restore_cert}
    cat {q(vhost_file)}.test >&2
    exit 3
fi
{nginx} -s reload
"""
    try:
        shell(conn, script, stdin=io.BytesIO(vhost.encode()), what="installing the nginx vhost")
    except RemoteCommandFailed as exc:
        raise NginxError(
            f"nginx rejected the new configuration, so the previous vhost and certificate were restored and "
            f"nginx keeps running on its old config. nginx said: {exc}"
        ) from exc


def read_version(conn: Connection, settings: DeploySettings) -> tuple[int, ...]:
    from .server_setup import nginx_sudo_command
    # `nginx -v` needs no root; sudo is allowed only for -t and -s reload.
    out = shell(conn, shlex.join([*nginx_sudo_command(settings), "-v"]) + " 2>&1", what="reading the nginx version")
    return parse_version(out)
