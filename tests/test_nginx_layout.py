"""The set-up finds the distribution's nginx layout and links the vhost into it.

The real set-up script runs with `sh`, as root, against folder trees shaped like a Debian server
(this machine's own /etc/nginx/nginx.conf, which includes both sites-enabled and conf.d) and an
nginx.org package (conf.d only, maybe with a left-over sites-enabled). The harm-nothing rules and
the other layouts are tested in tests/test_server_setup.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_server_setup import SITE, Server

pytestmark = pytest.mark.sandbox  # the set-up runs as root

DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")


def make_tree(tmp_path: Path, nginx_conf: str | None, *folders: str) -> Server:
    assert os.geteuid() == 0, "the set-up runs as root (./run tests)"
    server = Server(tmp_path / "host")
    for folder in folders:
        (server.conf / folder).mkdir(parents=True)
    server.sudoers_dir.mkdir(parents=True)
    text = nginx_conf if nginx_conf is not None else DEBIAN_NGINX_CONF.read_text()
    (server.conf / "nginx.conf").write_text(text.replace("/etc/nginx", str(server.conf)))
    return server


def test_debian_layout_uses_sites_available_and_a_relative_enable_link(tmp_path):
    assert DEBIAN_NGINX_CONF.is_file(), "the nginx Debian package provides /etc/nginx/nginx.conf"
    server = make_tree(tmp_path, None, "sites-enabled", "conf.d")  # no sites-available yet: made as Debian's
    result = server.run(server.setup_script())
    assert result.returncode == 0, result.stderr
    assert "nginx layout: sites-available + sites-enabled" in result.stdout
    enabled = server.conf / "sites-enabled" / SITE
    assert os.readlink(enabled) == f"../sites-available/{SITE}"
    assert os.readlink(server.conf / "sites-available" / SITE) == str(server.settings.vhost_file)
    assert oct((server.conf / "sites-available").stat().st_mode & 0o7777) == "0o755"
    assert enabled.read_text() == ""  # resolves to the (empty) vhost
    assert list((server.conf / "conf.d").iterdir()) == []  # linked once, not twice


def test_a_sites_enabled_folder_nginx_does_not_include_is_not_used(tmp_path):
    server = make_tree(tmp_path, "http {\n    include /etc/nginx/conf.d/*.conf;\n}\n", "sites-enabled", "conf.d")
    result = server.run(server.setup_script())
    assert result.returncode == 0, result.stderr
    assert "nginx layout: conf.d" in result.stdout
    assert os.readlink(server.conf / "conf.d" / SITE) == str(server.settings.vhost_file)
    assert list((server.conf / "sites-enabled").iterdir()) == []
    assert not (server.conf / "sites-available").exists()
