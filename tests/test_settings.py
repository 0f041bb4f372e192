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
    assert s.hosts == (("203.0.113.5", 22),) and s.host == "203.0.113.5"
    assert s.nginx == ("sudo", "-n", "/usr/sbin/nginx")


def test_domains_are_idna_encoded_and_lowercased():
    s = make(DEPLOY_DOMAINS=["Bücher.Example", "www.bücher.example"])
    assert s.domains == ("xn--bcher-kva.example", "www.xn--bcher-kva.example")


def test_international_names_follow_idna_2008_not_2003():
    """IDNA 2003 (Python's codec) made straße.de strasse.de: another domain, and a certificate was ordered for it."""
    assert make(DEPLOY_DOMAINS=["straße.de"]).domains == ("xn--strae-oqa.de",)
    assert make(DEPLOY_DOMAINS=["xn--strae-oqa.de"]).domains == ("xn--strae-oqa.de",)
    assert make(DEPLOY_DOMAINS=["Blog.Example.com."]).domains == ("blog.example.com",)  # trailing dot, case


def test_deploy_and_plugin_share_the_host_name_rules():
    from pelican_https.hostnames import normalize_host

    for name in ["straße.de", "Bücher.Example.", "blog.example.com"]:
        assert make(DEPLOY_DOMAINS=[name]).domains == (normalize_host("X", name),)


def test_deploy_hosts_in_order_with_ports():
    s = make(DEPLOY_HOST=None, DEPLOY_HOSTS=["web1.example.com", "web2.example.com:2222", "[2001:db8::1]:22", "2001:db8::2",
                                            "192.0.2.7:2200"])
    assert s.hosts == (("web1.example.com", 22), ("web2.example.com", 2222), ("2001:db8::1", 22), ("2001:db8::2", 22),
                       ("192.0.2.7", 2200))
    assert (s.host, s.port) == ("web1.example.com", 22)
    assert make(DEPLOY_HOST=None, DEPLOY_HOSTS=["web1.example.com"], DEPLOY_PORT=2022).hosts == (("web1.example.com", 2022),)


@pytest.mark.parametrize("host, hosts, expected", [
    (None, [], "non-empty list"),
    (None, "web1.example.com", "non-empty list"),
    (None, ["web1.example.com", "web1.example.com"], "listed twice"),
    (None, ["web1.example.com", "WEB1.example.com:22"], "listed twice"),
    ("web1.example.com", ["web1.example.com", "web2.example.com"], "both set"),
    ("web3.example.com", ["web1.example.com"], "both set"),
    (None, ["web1.example.com:0"], "port"),
    (None, ["web1.example.com:ssh"], "port"),
    (None, ["web1.example.com:70000"], "port"),
    (None, ["[2001:db8::1]:x"], "port"),
    (None, ["[web1.example.com]:22"], "not an IPv6 address"),
    (None, ["bad host; rm -rf /"], "host name or IP address"),
    (None, [22], "not a host"),
    (None, None, "DEPLOY_HOSTS"),
])
def test_bad_deploy_hosts_are_refused(host, hosts, expected):
    with pytest.raises(SettingsError) as err:
        make(DEPLOY_HOST=host, DEPLOY_HOSTS=hosts)
    message = str(err.value)
    assert "DEPLOY_HOST" in message and expected in message
    if hosts:
        shown = [hosts, *hosts] if isinstance(hosts, list) else [hosts]
        assert any(repr(v) in message for v in shown)


def test_a_settings_file_with_a_syntax_error_is_one_line_with_file_and_line(tmp_path):
    from deploy.settings import load_settings

    path = tmp_path / "publishconf_broken.py"
    path.write_text('SITEURL = "https://blog.example.com"\nDEPLOY_HOST = "203.0.113.5"\nDEPLOY_USER = "deploy\n')
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    message = str(err.value)
    assert f"{path}, line 3" in message and "\n" not in message


def test_a_settings_file_that_fails_when_run_is_one_line_with_file_and_line(tmp_path):
    from deploy.settings import load_settings

    path = tmp_path / "publishconf_fails.py"
    path.write_text('SITEURL = "https://blog.example.com"\nDEPLOY_HOST = HOST_NAME\n')
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert f"{path}, line 2: NameError" in str(err.value) and "\n" not in str(err.value)


def test_dns_server_splits_every_accepted_form():
    assert make().dns_server is None
    assert make(DEPLOY_DNS_RESOLVER="1.1.1.1").dns_server == ("1.1.1.1", 53)
    assert make(DEPLOY_DNS_RESOLVER="127.0.0.1:8053").dns_server == ("127.0.0.1", 8053)
    assert make(DEPLOY_DNS_RESOLVER="2606:4700:4700::1111").dns_server == ("2606:4700:4700::1111", 53)
    assert make(DEPLOY_DNS_RESOLVER="[2001:db8::53]:8053").dns_server == ("2001:db8::53", 8053)


def test_https_origin_carries_a_non_default_port():
    assert make(DEPLOY_HTTPS_PORT=8443).https_origin == "https://blog.example.com:8443"


@pytest.mark.parametrize("remote_root, state_dir, inner, outer", [
    ("/srv/www/blog", "/srv/www/blog/state", "DEPLOY_STATE_DIR='/srv/www/blog/state'", "DEPLOY_REMOTE_ROOT='/srv/www/blog'"),
    ("/srv/www/blog", "/srv/www/blog", "DEPLOY_STATE_DIR='/srv/www/blog'", "DEPLOY_REMOTE_ROOT='/srv/www/blog'"),
    ("/home/deploy/state/www", "/home/deploy/state", "DEPLOY_REMOTE_ROOT='/home/deploy/state/www'",
     "DEPLOY_STATE_DIR='/home/deploy/state'"),
    ("/var/lib/pelican-https/blog.example.com/www", None, "DEPLOY_REMOTE_ROOT='/var/lib/pelican-https/blog.example.com/www'",
     "DEPLOY_STATE_DIR='/var/lib/pelican-https/blog.example.com' (its default)"),
])
def test_the_site_folder_and_the_state_folder_never_contain_one_another(remote_root, state_dir, inner, outer):
    """Either way round: the state folder inside the served tree exposes the keys; the site folder
    inside the private state folder is unreadable to nginx, and removing one takes the other."""
    with pytest.raises(SettingsError) as err:
        make(DEPLOY_REMOTE_ROOT=remote_root, DEPLOY_STATE_DIR=state_dir)
    assert f"{inner} is inside {outer}" in str(err.value)
    assert "expected two folders apart" in str(err.value)
    # neighbours are fine, also with a shared prefix
    make(DEPLOY_REMOTE_ROOT="/srv/www/blog", DEPLOY_STATE_DIR="/srv/www/blog-state")


@pytest.mark.parametrize("name, value, expected", [
    ("DEPLOY_HOST", "bad host; rm -rf /", "host name or IP address"),
    ("DEPLOY_HOST", None, "host name or IP address"),
    ("DEPLOY_PORT", "22", "whole number from 1 to 65535"),
    ("DEPLOY_PORT", 70000, "whole number from 1 to 65535"),
    ("DEPLOY_USER", "root; reboot", "Unix user name"),
    ("DEPLOY_USER", "root", "never runs as root"),
    ("DEPLOY_DOMAINS", ["203.0.113.5"], "is an IP address"),
    ("DEPLOY_DOMAINS", ["blog.example.com", "[2001:db8::1]"], "is an IP address"),
    ("DEPLOY_DOMAINS", ["blog.example.com", "2001:db8::1"], "is an IP address"),
    ("DEPLOY_DOMAINS", ["😀.example.com"], "emoji"),
    ("DEPLOY_DOMAINS", ["under_score.example.com"], "not a valid domain name"),
    ("DEPLOY_DOMAINS", ["localhost"], "single label"),
    ("DEPLOY_REMOTE_ROOT", "/srv/./www", "'.' or '..' segment"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/..", "'.' or '..' segment"),
    ("DEPLOY_REMOTE_ROOT", "/srv//www", "empty segment"),
    ("DEPLOY_STATE_DIR", "/var/lib/./x", "'.' or '..' segment"),
    ("DEPLOY_STATE_DIR", "/srv/www/blog.example.com/state", "inside DEPLOY_REMOTE_ROOT"),
    ("DEPLOY_STATE_DIR", "/srv/www/blog.example.com", "inside DEPLOY_REMOTE_ROOT"),
    ("DEPLOY_STATE_DIR", "/srv/www", "DEPLOY_REMOTE_ROOT='/srv/www/blog.example.com' (its default) is inside"),
    ("DEPLOY_STATE_DIR", "/srv", "is inside DEPLOY_STATE_DIR='/srv', the deploy user's private folder"),
    ("DEPLOY_DNS_RESOLVER", 123, "IP address as a string"),
    ("DEPLOY_DNS_RESOLVER", "123", "IP address as a string"),
    ("DEPLOY_DNS_RESOLVER", "dns.example.com", "IP address as a string"),
    ("DEPLOY_DNS_RESOLVER", "1.1.1.1:99999", "IP address as a string"),
    ("DEPLOY_DNS_RESOLVER", "[1.1.1.1]:53", "IP address as a string"),
    ("DEPLOY_DNS_RESOLVER", "2001:db8::53:x", "IP address as a string"),
    ("DEPLOY_DOMAINS", ["blog.example.com;evil"], "not a valid domain name"),
    ("DEPLOY_DOMAINS", ["*.example.com"], "not a valid domain name"),
    ("DEPLOY_DOMAINS", ["blog.example.com", "blog.example.com"], "listed twice"),
    ("DEPLOY_DOMAINS", "blog.example.com", "non-empty list"),
    ("DEPLOY_DOMAINS", ["ex ample.com"], "not a valid domain name"),
    ("DEPLOY_SITE_NAME", "../etc", "letters, digits"),
    ("DEPLOY_REMOTE_ROOT", "/srv/www/my site", "absolute path"),
    ("DEPLOY_REMOTE_ROOT", "relative/path", "absolute path"),
    ("DEPLOY_REMOTE_ROOT", "/srv/../etc", "'.' or '..' segment"),
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
