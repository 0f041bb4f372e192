"""DEPLOY_ settings: defaults, derived values, and a clear error for every bad value (pure, no sandbox)."""

from __future__ import annotations

import pytest

from deploy.errors import SettingsError
from deploy.settings import ACME_DIRECTORIES, settings_from_mapping

BASE = {"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy"}


def make(**overrides):
    return settings_from_mapping(BASE | overrides)


def test_defaults_and_derived_values(tmp_path):
    s = settings_from_mapping(BASE, base=tmp_path)
    assert s.domains == ("blog.example.com",)
    assert s.site_name == "blog.example.com"
    assert str(s.remote_root) == "/srv/www/blog.example.com"
    assert str(s.state_dir) == "/var/lib/pelican-https/blog.example.com"
    assert str(s.current_link) == "/srv/www/blog.example.com/current"
    assert str(s.challenge_dir) == "/srv/www/blog.example.com/challenges/.well-known/acme-challenge"
    assert s.acme_directory == ACME_DIRECTORIES["letsencrypt"]
    assert s.https_origin == "https://blog.example.com"
    assert s.output_path == tmp_path / "output"
    assert s.port == 22 and s.http_port == 80 and s.https_port == 443
    assert s.nginx == ("sudo", "-n", "/usr/sbin/nginx")


def test_domains_are_idna_encoded_and_lowercased():
    s = make(DEPLOY_DOMAINS=["Bücher.Example", "www.bücher.example"])
    assert s.domains == ("xn--bcher-kva.example", "www.xn--bcher-kva.example")


def test_https_origin_carries_a_non_default_port():
    assert make(DEPLOY_HTTPS_PORT=8443).https_origin == "https://blog.example.com:8443"


@pytest.mark.parametrize("name, value, expected", [
    ("DEPLOY_HOST", "bad host; rm -rf /", "host name or IP address"),
    ("DEPLOY_HOST", None, "host name or IP address"),
    ("DEPLOY_PORT", "22", "whole number from 1 to 65535"),
    ("DEPLOY_PORT", 70000, "whole number from 1 to 65535"),
    ("DEPLOY_USER", "root; reboot", "Unix user name"),
    ("DEPLOY_DOMAINS", ["blog.example.com;evil"], "not a valid domain name"),
    ("DEPLOY_DOMAINS", ["*.example.com"], "not a valid domain name"),
    ("DEPLOY_DOMAINS", ["blog.example.com", "blog.example.com"], "listed twice"),
    ("DEPLOY_DOMAINS", "blog.example.com", "non-empty list"),
    ("DEPLOY_DOMAINS", ["ex ample.com"], "not a valid domain name"),
    ("DEPLOY_SITE_NAME", "../etc", "letters, digits"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/my site", "absolute path"),
    ("DEPLOY_REMOTE_ROOT", "relative/path", "absolute path"),
    ("DEPLOY_REMOTE_ROOT", "/srv/../etc", "absolute path"),
    ("DEPLOY_STATE_DIR", "/var/lib/x;y", "absolute path"),
    ("DEPLOY_KEEP_RELEASES", 0, "whole number from 1"),
    ("DEPLOY_ACME_DIRECTORY", "http://insecure.example/dir", "https:// directory URL"),
    ("DEPLOY_ACME_DIRECTORY", "letsencrypt-prod", "https:// directory URL"),
    ("DEPLOY_ACME_EMAIL", "not-an-email", "e-mail address"),
    ("DEPLOY_NGINX", "sudo nginx", "list of command words"),
    ("DEPLOY_LISTEN", ["0.0.0.0;"], "not an address nginx can listen on"),
    ("DEPLOY_LISTEN", [80], "not an address nginx can listen on"),
    ("DEPLOY_HSTS_MAX_AGE", -1, "whole number"),
    ("DEPLOY_SSH_KEY", "/nonexistent/key", "no such file"),
    ("DEPLOY_HTPS_PORT", 443, "unknown setting"),
])
def test_bad_values_name_the_setting_the_value_and_what_is_expected(name, value, expected):
    with pytest.raises(SettingsError) as err:
        make(**{name: value})
    message = str(err.value)
    assert name in message
    assert expected in message
    if name != "DEPLOY_HTPS_PORT":
        # A list names its offending item; a scalar names itself.
        shown = [value, *value] if isinstance(value, list) else [value]
        assert any(repr(v) in message or str(v) in message for v in shown)


def test_missing_siteurl_and_domains_is_explained():
    with pytest.raises(SettingsError, match="DEPLOY_DOMAINS is not set and SITEURL"):
        settings_from_mapping({"DEPLOY_HOST": "h.example", "DEPLOY_USER": "deploy"})


def test_a_rehearsal_without_a_sandbox_is_a_clear_error_not_a_traceback(tmp_path):
    """`fab deploy --settings sandboxconf.py` with no sandbox named: one line saying what to do, exit 1."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import EXAMPLE_SITE

    blog = tmp_path / "blog"
    shutil.copytree(EXAMPLE_SITE, blog, ignore=shutil.ignore_patterns("output", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PELICAN_HTTPS_SANDBOX"}
    fab = os.path.join(os.path.dirname(sys.executable), "fab")
    result = subprocess.run([fab, "renew", "--settings", "sandboxconf.py"], cwd=blog, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: PELICAN_HTTPS_SANDBOX is not set" in result.stderr and "Traceback" not in result.stderr
