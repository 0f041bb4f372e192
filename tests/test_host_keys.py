"""Strict host-key checking: an unknown or changed host key stops `fab deploy` before anything changes."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def _server_state(settings) -> dict:
    root = Path(settings.remote_root)
    return {
        "files": sorted(str(p.relative_to(root)) for p in root.rglob("*")),
        "vhost": Path(settings.vhost_file).read_text(),
        "state": sorted(str(p) for p in Path(settings.state_dir).rglob("*")),
    }


def test_changed_host_key_fails_clearly_and_changes_nothing(make_blog):
    blog = make_blog("hostkey-changed")
    blog.build()
    settings = blog.settings()
    before = _server_state(settings)
    impostor = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    known_hosts = blog.path / "known_hosts_changed"
    known_hosts.write_text(f"[{settings.host}]:{settings.port} {impostor}\n")
    _point_known_hosts(blog, known_hosts)

    result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "does not match DEPLOY_KNOWN_HOSTS" in result.stderr
    assert "Nothing was changed on the server" in result.stderr
    assert "Traceback" not in result.stderr
    assert _server_state(settings) == before


def test_unknown_host_is_never_auto_accepted(make_blog):
    blog = make_blog("hostkey-unknown")
    blog.build()
    settings = blog.settings()
    before = _server_state(settings)
    empty = blog.path / "known_hosts_empty"
    empty.write_text("")
    _point_known_hosts(blog, empty)

    result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "is not in DEPLOY_KNOWN_HOSTS" in result.stderr
    assert "ssh-keyscan" in result.stderr
    assert _server_state(settings) == before
    assert empty.read_text() == ""  # nothing was added to known_hosts


def test_a_revoked_host_key_is_refused_by_name(make_blog):
    blog = make_blog("hostkey-revoked")
    blog.build()
    settings = blog.settings()
    before = _server_state(settings)
    real = settings.known_hosts.read_text().split()
    revoked = blog.path / "known_hosts_revoked"
    # The server's real key, once trusted and once revoked: OpenSSH refuses it, and so do we.
    revoked.write_text(f"{' '.join(real)}\n@revoked {' '.join(real)}\n")
    _point_known_hosts(blog, revoked)

    for task in ("deploy", "status"):
        result = blog.fab(task, check=False)
        assert result.returncode == 1, result.stdout
        assert "revoked" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert _server_state(settings) == before


def _point_known_hosts(blog, path: Path) -> None:
    """Override DEPLOY_KNOWN_HOSTS in the blog copy's sandboxconf.py, like a user editing settings."""
    conf = blog.path / "sandboxconf.py"
    conf.write_text(conf.read_text() + f"\nDEPLOY_KNOWN_HOSTS = {os.fspath(path)!r}\n")
