"""HTTPS_* settings: defaults in one place, every value validated."""

import pytest

from pelican_https import settings
from pelican_https.settings import DEFAULTS, SettingsError, load


def test_defaults():
    loaded = load({"SITEURL": "https://blog.example.com"})
    assert loaded.hosts == {"blog.example.com"}
    assert dict(loaded.host_map) == {}
    assert loaded.upgrade_hosts == frozenset() and loaded.upgrade_suffixes == ()
    assert loaded.rewrite is True and loaded.strict is False
    assert loaded.report_path is None
    assert loaded.file_extensions == DEFAULTS["HTTPS_FILE_EXTENSIONS"]
    assert all(name.startswith(settings.PREFIX) for name in DEFAULTS)


def test_hosts_collected_and_lower_cased():
    loaded = load({
        "SITEURL": "http://Blog.Example.com:8000/sub",
        "HTTPS_HOSTS": ["WWW.blog.example.com"],
        "HTTPS_HOST_MAP": {"Old.Example.net": "blog.example.com"},
        "HTTPS_UPGRADE_HOSTS": ["cdn.example.org", "*.Static.example.org"],
    })
    assert loaded.site_scheme == "http" and loaded.site_host == "blog.example.com"
    assert loaded.hosts == {"blog.example.com", "www.blog.example.com", "old.example.net"}
    assert dict(loaded.host_map) == {"old.example.net": "blog.example.com"}
    assert loaded.upgrade_hosts == {"cdn.example.org"}
    assert loaded.upgrade_suffixes == (".static.example.org",)


def test_deploy_domains_are_own_hosts():
    loaded = load({
        "SITEURL": "https://blog.example.com",
        "DEPLOY_DOMAINS": ["blog.example.com", "WWW.Blog.example.com", "blog.example.org"],
        "HTTPS_HOSTS": ["old.example.net"],
    })
    assert loaded.hosts == {"blog.example.com", "www.blog.example.com", "blog.example.org",
                            "old.example.net"}
    assert load({"SITEURL": "https://blog.example.com", "DEPLOY_DOMAINS": None}).hosts == {
        "blog.example.com"}


def test_internationalized_names_match_in_both_spellings():
    loaded = load({"SITEURL": "", "DEPLOY_DOMAINS": ["Bücher.example"],
                   "HTTPS_HOSTS": ["xn--caf-dma.example"]})
    assert loaded.hosts == {"xn--bcher-kva.example", "bücher.example",
                            "xn--caf-dma.example", "café.example"}


@pytest.mark.parametrize("siteurl", ["", "/", "..", None])
def test_relative_siteurl_has_no_host(siteurl):
    loaded = load({"SITEURL": siteurl, "HTTPS_HOSTS": ["example.com"]})
    assert loaded.site_host is None and loaded.hosts == {"example.com"}


@pytest.mark.parametrize("name, value, expected", [
    ("HTTPS_HOSTS", "www.example.com", "a list of host names"),
    ("HTTPS_HOST_MAP", ["old.example.com"], "a dict of old host -> canonical host"),
    ("HTTPS_REWRITE", "yes", "True or False"),
    ("HTTPS_STRICT", 1, "True or False"),
    ("HTTPS_REPORT_PATH", "", "None or a file path"),
    ("HTTPS_REPORT_PATH", 3, "None or a file path"),
    ("HTTPS_FILE_EXTENSIONS", ["html"], "a list of file name endings"),
    ("HTTPS_FILE_EXTENSIONS", ".html", "a list of file name endings"),
    ("DEPLOY_DOMAINS", "blog.example.com", "a list of host names"),
])
def test_bad_value_names_setting_value_and_expectation(name, value, expected):
    with pytest.raises(SettingsError) as error:
        load({"SITEURL": "https://example.com", name: value})
    message = str(error.value)
    assert message.startswith(f"{name} = {value!r} is invalid: expected ")
    assert expected in message


# A bad host name in a list: hostnames.normalize_host's message (the deploy's
# own), naming the setting and the name.
@pytest.mark.parametrize("name, item", [
    ("HTTPS_HOSTS", "http://www.example.com"),
    ("HTTPS_HOSTS", "www.example.com/blog"),
    ("HTTPS_HOSTS", "example.com:8080"),
    ("HTTPS_HOSTS", "*.example.com"),
    ("HTTPS_HOSTS", 42),
    ("HTTPS_HOSTS", "blog example.com"),
    ("DEPLOY_DOMAINS", "https://blog.example.com"),
    ("DEPLOY_DOMAINS", "blog.example.com:443"),
    ("DEPLOY_DOMAINS", "*.example.com"),
    ("DEPLOY_DOMAINS", None),
    ("HTTPS_UPGRADE_HOSTS", "cdn.*.org"),
])
def test_bad_host_name_names_setting_and_value(name, item):
    with pytest.raises(SettingsError) as error:
        load({"SITEURL": "https://example.com", name: [item]})
    message = str(error.value)
    assert message.startswith(f"{name}: {item!r} ") and "expected" in message


def test_host_map_host_is_checked():
    with pytest.raises(SettingsError, match="HTTPS_HOST_MAP: 'https://example.com' "):
        load({"HTTPS_HOST_MAP": {"old.example.com": "https://example.com"}})


def test_host_names_are_spelled_as_the_deploy_spells_them():
    # IDNA 2008 (not 2003's "strasse"), a trailing dot dropped, one case
    loaded = load({"SITEURL": "https://Blog.Example.com./", "HTTPS_HOSTS": ["straße.de", "WWW.example.com."],
                   "HTTPS_HOST_MAP": {"Old.Example.net.": "blog.example.com"}})
    assert loaded.site_host == "blog.example.com"
    assert {"xn--strae-oqa.de", "straße.de", "www.example.com", "old.example.net"} <= loaded.hosts
    assert dict(loaded.host_map) == {"old.example.net": "blog.example.com"}


def test_unknown_setting_with_the_prefix_is_an_error():
    with pytest.raises(SettingsError, match="HTTPS_HOST is not a setting of pelican_https; expected one of"):
        load({"HTTPS_HOST": ["example.com"]})
