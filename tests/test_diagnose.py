"""The challenge pre-check: each failure created for real on the sandbox, explained, and the CA not asked.

"Not asked" is read from Pebble's own request log: no POST of any kind (no account look-up, no
order, no challenge answer) reaches it after a failed pre-check. Every test uses its own domain
names, so DNS changes and extra server blocks touch no other test's site.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from deploy import certificates, diagnose, state as host_state
from deploy.connection import connect_all
from deploy.errors import ChallengeCheckFailed
from deploy.sandbox import _free_ports
from deploy.verify import fetch_https

DOMAINS = ["diag.example.com", "www.diag.example.com"]


@pytest.fixture(scope="module")
def diag(tmp_path_factory, sandbox):
    """A blog deployed once on its own names; the tests then break one thing at a time."""
    from conftest import EXAMPLE_SITE, Blog

    path = tmp_path_factory.mktemp("diag") / "blog"
    shutil.copytree(EXAMPLE_SITE, path, ignore=shutil.ignore_patterns("output", "__pycache__"))
    blog = Blog(path, sandbox, "diag")
    values = json.loads(blog.target.read_text()) | {"DEPLOY_DOMAINS": DOMAINS}
    blog.target.write_text(json.dumps(values))
    blog.build()
    blog.fab("deploy")
    settings = blog.settings()
    return blog, settings, fetch_https(settings, DOMAINS[0]).certificate.serial_number


class PebbleLog:
    """Pebble logs every request it handles: "POST /order-plz -> calling handler()"."""

    def __init__(self, sandbox):
        self.path = Path(sandbox.root) / "pebble" / "pebble.log"
        self.start = self.path.stat().st_size

    def posts(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return [line for line in f.read().decode(errors="replace").splitlines() if " POST " in line]


def _challtestsrv(sandbox, endpoint: str, body: dict) -> None:
    request = urllib.request.Request(f"{sandbox.challtestsrv_url}/{endpoint}", data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def _no_tokens_left(settings) -> bool:
    return not any(Path(settings.challenge_dir).iterdir())


def _order_refused(settings, order_settings=None) -> str:
    """Run an order (with ``order_settings``, default ``settings``) that the pre-check must stop; its message."""
    servers = connect_all(settings)
    try:
        states = servers.each_or_raise(host_state.read, settings, stage="reading the server's state")
        assert {server.address for server in servers} == {"127.0.0.1"}  # what the pre-check calls "this server"
        with pytest.raises(ChallengeCheckFailed) as err:
            certificates.obtain(servers, states, order_settings or settings)
    finally:
        servers.close()
    return str(err.value)


@pytest.fixture
def foreign_server_block(sandbox, diag):
    """Install an extra nginx server block for www.diag.example.com that comes before the site's vhost,
    as an old hand-made config or a distribution's default site would."""
    _, settings, _ = diag
    path = Path(sandbox.nginx_include_dir) / "000-test-foreign.conf"

    def install(body: str) -> None:
        path.write_text(f"server {{\n    listen 127.0.0.1:{settings.http_port};\n    server_name {DOMAINS[1]};\n"
                        f"    add_header X-Test-Foreign 1 always;\n{body}\n}}\n")
        sandbox.hosts[0].reload_nginx()
        _wait_for_foreign(settings, present=True)
    yield install
    path.unlink(missing_ok=True)
    sandbox.hosts[0].reload_nginx()
    _wait_for_foreign(settings, present=False)


def _wait_for_foreign(settings, present: bool) -> None:
    """nginx reloads asynchronously: poll until the foreign block does (or no longer does) answer."""
    import http.client
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", settings.http_port, timeout=2)
        conn.request("GET", "/.well-known/acme-challenge/none", headers={"Host": DOMAINS[1]})
        response = conn.getresponse()
        response.read()
        conn.close()
        if (response.getheader("X-Test-Foreign") == "1") == present:
            return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not {'load' if present else 'drop'} the test's server block")


def test_domain_pointing_elsewhere_is_named_and_the_ca_is_not_asked(diag, sandbox):
    blog, settings, serial = diag
    pebble = PebbleLog(sandbox)
    _challtestsrv(sandbox, "add-a", {"host": DOMAINS[0], "addresses": ["127.0.0.9"]})
    try:
        assert diagnose.resolve(DOMAINS[0], settings.dns_server) == ["127.0.0.9"]
        result = blog.fab("renew", "--force", check=False)
    finally:
        _challtestsrv(sandbox, "clear-a", {"host": DOMAINS[0]})
    assert result.returncode == 1
    assert f"{DOMAINS[0]} resolves to 127.0.0.9, but this server is 127.0.0.1" in result.stderr
    assert "Fix the domain's A/AAAA records" in result.stderr and "The CA was not asked" in result.stderr
    assert pebble.posts() == []
    assert _no_tokens_left(settings)
    assert fetch_https(settings, DOMAINS[0]).certificate.serial_number == serial


def test_nothing_listening_on_port_80_names_the_firewalls(diag, sandbox):
    _, settings, serial = diag
    closed = settings._replace(http_port=_free_ports(1)[0])  # the settings say a port nginx does not use
    pebble = PebbleLog(sandbox)
    text = _order_refused(settings, closed)
    assert f"nothing answers on 127.0.0.1 port {closed.http_port} (connection refused)" in text
    assert "ufw allow 80/tcp" in text and "firewall-cmd" in text and "security group" in text
    assert pebble.posts() == []
    assert _no_tokens_left(settings)


def test_redirected_challenge_is_named(diag, sandbox, foreign_server_block):
    blog, settings, serial = diag
    foreign_server_block("    return 301 https://$host$request_uri;")
    pebble = PebbleLog(sandbox)
    result = blog.fab("renew", "--force", check=False)
    assert result.returncode == 1
    assert (f"http://{DOMAINS[1]}/.well-known/acme-challenge/<token> is redirected (301 to https://{DOMAINS[1]}/"
            in result.stderr)
    assert "Exempt /.well-known/acme-challenge/ from the redirect" in result.stderr
    assert pebble.posts() == []
    assert _no_tokens_left(settings)
    assert fetch_https(settings, DOMAINS[0]).certificate.serial_number == serial


@pytest.mark.parametrize("body, expected", [
    ("    root /nonexistent-pelican-https;", "answered 404: nginx does not serve the challenge folder for www.diag.example.com"),
    ('    location / { default_type text/html; return 200 "<html>my old site</html>"; }',
     "answered 200 with something else than the token ('<html>my old site</html>')"),
], ids=["challenge folder not served", "the site instead of the token"])
def test_wrong_answer_is_named(diag, sandbox, foreign_server_block, body, expected):
    _, settings, _ = diag
    foreign_server_block(body)
    pebble = PebbleLog(sandbox)
    text = _order_refused(settings)
    assert expected in text
    assert DOMAINS[0] not in text.replace(DOMAINS[1], "")  # the working name is not blamed
    assert pebble.posts() == []
    assert _no_tokens_left(settings)


# --- pure parts -------------------------------------------------------------------------------

def test_filtered_port_is_told_apart_from_a_closed_one():
    probe = diagnose.Probe("a.example.com", "203.0.113.5", 80, "timeout", error="timed out")
    text = diagnose.explain(probe, "a.example.com", ["203.0.113.5"], {"203.0.113.5"}, 80)
    assert "connection timed out" in text and "filtered by a firewall" in text and "iptables/nftables" in text


def test_no_address_at_all():
    text = diagnose.explain(None, "a.example.com", [], {"203.0.113.5"}, 80)
    assert "a.example.com has no A or AAAA record" in text and "203.0.113.5" in text


def test_wrong_address_behind_the_right_one_is_named():
    # One of two addresses is foreign: the CA may pick it, so it is the problem.
    probe = diagnose.Probe("a.example.com", "198.51.100.7", 80, "refused", error="refused")
    text = diagnose.explain(probe, "a.example.com", ["198.51.100.7", "203.0.113.5"], {"203.0.113.5"}, 80)
    assert "resolves to 198.51.100.7, 203.0.113.5, but this server is 203.0.113.5" in text
    assert "remove or correct 198.51.100.7" in text


def test_dns_query_reads_a_and_aaaa_records(sandbox):
    """The small DNS client against challtestsrv (the sandbox CA's DNS server)."""
    host, port = sandbox.dns_server.rsplit(":", 1)
    dns = (host, int(port))
    _challtestsrv(sandbox, "add-a", {"host": "dnsq.example.com", "addresses": ["127.0.0.7", "127.0.0.8"]})
    _challtestsrv(sandbox, "add-aaaa", {"host": "dnsq.example.com", "addresses": ["::7"]})
    try:
        assert diagnose.resolve("dnsq.example.com", dns) == ["127.0.0.7", "127.0.0.8", "::7"]
    finally:
        _challtestsrv(sandbox, "clear-a", {"host": "dnsq.example.com"})
        _challtestsrv(sandbox, "clear-aaaa", {"host": "dnsq.example.com"})
    assert diagnose.resolve("dnsq.example.com", dns) == ["127.0.0.1"]  # challtestsrv's default
    assert diagnose.resolve("localhost", None)  # the system resolver


def test_an_ipv6_address_this_machine_cannot_reach_is_left_to_the_ca(caplog):
    """GitHub-hosted runners have no IPv6: an AAAA address they cannot route to is not the server's fault."""
    good = diagnose.Probe("a.example.com", "203.0.113.5", 80, "token", 200)
    no_v6 = diagnose.Probe("a.example.com", "2001:db8::5", 80, "uncheckable", error="no IPv6 route from this machine")
    addresses, here = ["2001:db8::5", "203.0.113.5"], {"203.0.113.5", "2001:db8::5"}
    assert diagnose.verdict("a.example.com", addresses, [no_v6, good], here, 80) is None
    assert "cannot check http://a.example.com/.well-known/acme-challenge/ at 2001:db8::5" in caplog.text
    refused = diagnose.Probe("a.example.com", "2001:db8::5", 80, "refused", error="refused")
    assert "connection refused" in diagnose.verdict("a.example.com", addresses, [refused, good], here, 80)
