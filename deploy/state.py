"""What one host has, read in one round trip by ``scripts/state.sh``: nginx's build, the live
release and the others, the live vhost, the live and staged certificates, the CA's cached
renewal info, the live release's manifest, and what an interrupted deploy left pending.

``parse`` is pure: the sections of the script's output become a ``HostState``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import manifest as mf
from .connection import Server
from .renewal import Installed, RenewalInfo
from .server_setup import nginx_sudo_command
from .settings import DeploySettings
from .vhost import NginxBuild, parse_nginx_build, served_domains

log = logging.getLogger("pelican_https.deploy")

MARK = b"\n==pelican-https== "
CERT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a certificate folder's name, as certificates.obtain makes it


class HostState(NamedTuple):
    build: NginxBuild
    current: str | None  # the live release id
    current_is_link: bool  # False: `current` is a folder someone made by hand
    releases: tuple[str, ...]  # complete releases, oldest first
    vhost_text: str  # the live vhost ("" before the first deploy)
    served: tuple[str, ...]  # the names the live vhost serves
    live_id: str  # the folder tls/live points to ("" when none): set while ``live`` may be None (unreadable)
    live: Installed | None  # the live certificate (tls/live)
    staged: Installed | None  # the newest certificate staged but not live
    renewal_info: RenewalInfo | None  # the CA's last ARI answer, cached
    manifest_bytes: bytes | None  # the live release's stored manifest
    journal: str  # a commit not finished ("" when none): undone by the next deploy unless verified
    order_pending: bool  # a challenge vhost left in place by an order cut short

    @property
    def journal_verified(self) -> bool:
        """The journal's commit was verified (scripts/commit.sh verified): it is kept, never undone."""
        return "verified=yes" in self.journal.splitlines()

    @property
    def manifest(self) -> dict | None:
        return mf.load(self.manifest_bytes) if self.manifest_bytes else None


def read(server: Server, settings: DeploySettings) -> HostState:
    out = server.script("state", str(settings.remote_root), str(settings.state_dir), *nginx_sudo_command(settings),
                        what="reading the server's state")
    return parse(out)


def sections(data: bytes) -> dict[str, bytes]:
    parts = data.split(MARK)
    found = {}
    for part in parts[1:]:
        name, _, body = part.partition(b"\n")
        found[name.decode()] = body
    return found


def parse(data: bytes) -> HostState:
    s = sections(data)
    text = {k: v.decode("utf-8", "replace") for k, v in s.items() if k != "manifest"}
    current_lines = text.get("current", "").split()
    current = next((c for c in current_lines if mf.RELEASE_ID.fullmatch(c)), None)
    releases = tuple(sorted(r for r in text.get("releases", "").split() if mf.RELEASE_ID.fullmatch(r)))
    vhost_text = text.get("vhost", "")
    return HostState(
        build=parse_nginx_build(text.get("nginx", "")),
        current=current if current in releases else None,
        current_is_link="NOT-A-LINK" not in current_lines,
        releases=releases,
        vhost_text=vhost_text,
        served=served_domains(vhost_text),
        live_id=text.get("live-id", "").strip(),
        live=certificate(text, "live", text.get("live-id", "").strip()),
        staged=certificate(text, "staged", text.get("staged-id", "").strip()),
        renewal_info=_renewal_info(text.get("ari", "")),
        manifest_bytes=s.get("manifest") or None,
        journal=text.get("journal", "").strip(),
        order_pending=text.get("order-pending", "").strip() == "yes",
    )


def certificate(text: dict[str, str], which: str, cert_id: str) -> Installed | None:
    """A certificate folder's meta.json, chain and public key, as the renewal decision needs them."""
    meta_text, chain, public_key = (text.get(f"{which} {part}", "") for part in ("meta", "chain", "key"))
    if not CERT_ID.fullmatch(cert_id) or not meta_text.strip() or "BEGIN CERTIFICATE" not in chain:
        return None
    try:
        meta = json.loads(meta_text)
        # Every block of the chain, not just the leaf: a chain cut short must not count as usable.
        blocks = x509.load_pem_x509_certificates(chain.encode())
        if len(blocks) != chain.count("-----BEGIN CERTIFICATE-----") or len(blocks) < 2:
            raise ValueError(f"the chain holds {len(blocks)} readable certificate(s), expected the leaf and its issuer")
        cert = blocks[0]
        if "NO-OPENSSL" in public_key:
            matches = None  # cannot tell without openssl on the server; nginx -t still checks
        else:
            matches = "PUBLIC KEY" in public_key and _spki(serialization.load_pem_public_key(public_key.encode())) == \
                _spki(cert.public_key())
        return Installed(cert, meta["directory"], tuple(meta["domains"]), meta.get("key_type", "ec-p256"),
                         cert_id, meta.get("profile"), matches)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("the %s certificate's files (%s) are unreadable (%s): they will not be used", which, cert_id, exc)
        return None


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _renewal_info(text: str) -> RenewalInfo | None:
    try:
        raw = json.loads(text)
        return RenewalInfo(raw["cert_id"], dt.datetime.fromisoformat(raw["window_start"]),
                           dt.datetime.fromisoformat(raw["window_end"]), dt.datetime.fromisoformat(raw["retry_at"]),
                           raw.get("explanation_url"))
    except (ValueError, KeyError, TypeError):
        return None  # no cache yet, or unreadable: ask the CA


def renewal_info_json(info: RenewalInfo) -> bytes:
    return json.dumps({"cert_id": info.cert_id, "window_start": info.window_start.isoformat(),
                       "window_end": info.window_end.isoformat(), "retry_at": info.retry_at.isoformat(),
                       "explanation_url": info.explanation_url}, indent=2).encode()
