"""The one-time set-up finds the distribution's nginx layout and links the vhost into it.

The set-up's layout lines run with `sh` against folder trees shaped like a Debian server (this
machine's own /etc/nginx/nginx.conf, which includes both sites-enabled and conf.d), an nginx.org
package (conf.d only), and a config that includes neither.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.server_setup import admin_script, nginx_link_script
from deploy.settings import settings_from_mapping

DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")


def make_settings(tmp_path: Path):
    return settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5",
                                  "DEPLOY_USER": "deploy", "DEPLOY_STATE_DIR": str(tmp_path / "state")})


def run_link(settings, conf_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-eu", "-c", nginx_link_script(settings, str(conf_dir))], capture_output=True, text=True)


@pytest.fixture
def vhost_settings(tmp_path):
    settings = make_settings(tmp_path)
    Path(settings.vhost_file).parent.mkdir(parents=True)
    Path(settings.vhost_file).write_text("# the vhost\n")
    return settings


def test_debian_layout_uses_sites_available_and_a_relative_enable_link(tmp_path, vhost_settings):
    assert DEBIAN_NGINX_CONF.is_file(), "the nginx Debian package provides /etc/nginx/nginx.conf"
    conf = tmp_path / "etc-nginx"
    (conf / "sites-enabled").mkdir(parents=True)
    (conf / "conf.d").mkdir()
    (conf / "nginx.conf").write_text(DEBIAN_NGINX_CONF.read_text().replace("/etc/nginx", str(conf)))
    for _ in range(2):  # running the set-up again changes nothing
        result = run_link(vhost_settings, conf)
        assert result.returncode == 0, result.stderr
        assert "sites-available + sites-enabled" in result.stdout
    enabled = conf / "sites-enabled" / "blog.example.com.conf"
    assert os.readlink(enabled) == "../sites-available/blog.example.com.conf"
    assert os.readlink(conf / "sites-available" / "blog.example.com.conf") == str(vhost_settings.vhost_file)
    assert enabled.read_text() == "# the vhost\n"
    assert list((conf / "conf.d").iterdir()) == []  # linked once, not twice


def test_conf_d_layout(tmp_path, vhost_settings):
    conf = tmp_path / "etc-nginx"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "nginx.conf").write_text(f"events {{}}\nhttp {{\n    include {conf}/mime.types;\n    include {conf}/conf.d/*.conf;\n}}\n")
    result = run_link(vhost_settings, conf)
    assert result.returncode == 0, result.stderr
    assert (conf / "conf.d" / "blog.example.com.conf").read_text() == "# the vhost\n"
    assert not (conf / "sites-available").exists()


def test_a_sites_enabled_folder_nginx_does_not_include_is_not_used(tmp_path, vhost_settings):
    conf = tmp_path / "etc-nginx"
    (conf / "sites-enabled").mkdir(parents=True)  # left over, but nginx.conf does not include it
    (conf / "conf.d").mkdir()
    (conf / "nginx.conf").write_text(f"http {{\n    include {conf}/conf.d/*.conf;\n}}\n")
    assert run_link(vhost_settings, conf).returncode == 0
    assert (conf / "conf.d" / "blog.example.com.conf").exists()
    assert list((conf / "sites-enabled").iterdir()) == []


def test_no_known_include_stops_with_what_to_add(tmp_path, vhost_settings):
    conf = tmp_path / "etc-nginx"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "nginx.conf").write_text("http {\n    server { listen 80; }\n}\n")
    result = run_link(vhost_settings, conf)
    assert result.returncode == 1
    assert f"add `include {conf}/conf.d/*.conf;` to its http block" in result.stderr
    assert list((conf / "conf.d").iterdir()) == []


def test_admin_script_uses_detection_unless_given_an_include_dir(tmp_path):
    settings = make_settings(tmp_path)
    assert "sites-available" in admin_script(settings)
    explicit = admin_script(settings, nginx_include_dir="/opt/nginx/sites")
    assert "sites-available" not in explicit and "/opt/nginx/sites/blog.example.com.conf" in explicit
