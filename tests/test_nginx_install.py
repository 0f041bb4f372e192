"""The nginx stage on the real sandbox nginx: first deploy, testing a vhost without making it live,
no reload when nothing changed, and breaking it on purpose.

One blog (its own site and domains on the session sandbox) is deployed from scratch while another
site's server block already answers on the same nginx, and while a watcher runs `nginx -t` over
the whole configuration in a loop: no moment may fail it. Then each test tries to break the
server (another site's broken or conflicting file, a duplicate default_server, a broken vhost, a
sudo rule gone, a dropped session, a hostile setting, a vhost edited by hand) and checks that the
site still answers exactly as before, or, for the hand edit, as the deploy renders it.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from deploy import nginx, pipeline, state as host_state
from deploy.connection import connect_all
from deploy.errors import NginxError
from deploy.sandbox import NGINX
from deploy.server_setup import sudoers_file
from deploy.verify import fetch_https
from deploy.vhost import Vhost, render_vhost

SITE = "nginx-install"
DOMAINS = ["nginx-test.example.com", "www.nginx-test.example.com"]
NOT_FOUND_TEXT = "This page went missing (site's own 404)"


def root_nginx(sandbox, *args: str) -> subprocess.CompletedProcess:
    """nginx as the server's administrator runs it (root), on the sandbox's prefix."""
    return subprocess.run([NGINX, "-p", str(sandbox.nginx_prefix), "-c", "conf/nginx.conf", *args],
                          capture_output=True, text=True)


def get_http(settings, host: str, path: str = "/") -> tuple[int, str, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", settings.http_port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), resp.getheader("Location")
    finally:
        conn.close()


def get_https(settings, sandbox, host: str, path: str = "/", headers: dict | None = None):
    """GET over TLS verified against the sandbox's root; returns (status, headers, raw body, cert)."""
    ctx = ssl.create_default_context(cafile=str(sandbox.served_root_ca))
    with socket.create_connection(("127.0.0.1", settings.https_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            conn = http.client.HTTPConnection(host, settings.https_port)
            conn.sock = tls
            conn.request("GET", path, headers={"Host": f"{host}:{settings.https_port}", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(), cert


class NginxTWatcher:
    """Runs the real `nginx -t` over the whole server config in a loop; records every failure."""

    def __init__(self, sandbox):
        self.sandbox, self.runs, self.failures = sandbox, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            result = root_nginx(self.sandbox, "-t", "-q")
            self.runs += 1
            if result.returncode != 0:
                self.failures.append(result.stderr)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def other_site(sandbox):
    """Another site's server block, already serving on the same nginx before our first deploy."""
    name = f"other-{secrets.token_hex(3)}.test"
    conf = sandbox.nginx_include_dir / f"{name}.conf"
    conf.write_text(f'server {{\n    listen 127.0.0.1:{sandbox.http_port};\n    server_name {name};\n'
                    f'    location / {{ return 200 "the other site\\n"; }}\n}}\n')
    assert root_nginx(sandbox, "-t").returncode == 0
    sandbox.hosts[0].reload_nginx()
    yield name
    conf.unlink()
    sandbox.hosts[0].reload_nginx()


def other_site_answers(settings, name: str) -> bool:
    for _ in range(50):  # a reload may be in flight
        if get_http(settings, name)[:2] == (200, "the other site\n"):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, sandbox, other_site):
    """A bare site, first deploy (no certificate yet) under the nginx -t watcher."""
    from conftest import EXAMPLE_SITE, Blog

    path = tmp_path_factory.mktemp("nginx-install") / "blog"
    shutil.copytree(EXAMPLE_SITE, path, ignore=shutil.ignore_patterns("output", "__pycache__"))
    (path / "content" / "pages" / "404.md").write_text(
        f"Title: Not found\nSave_as: 404.html\nStatus: hidden\n\n{NOT_FOUND_TEXT}\n")
    blog = Blog(path, sandbox, SITE)
    set_values(blog, DEPLOY_DOMAINS=DOMAINS)
    blog.build()
    settings = blog.settings()
    assert settings.domains == tuple(DOMAINS)
    assert Path(settings.vhost_file).read_text() == ""  # bare: the set-up's empty placeholder
    assert not (Path(settings.tls_dir) / "live").exists()
    with NginxTWatcher(sandbox) as watcher:
        result = pipeline.deploy(settings)
    return blog, settings, result, watcher


def set_values(blog, **values) -> None:
    """Change the blog's DEPLOY_ settings (what `fab` and ``blog.settings()`` read next)."""
    blog.target.write_text(json.dumps(json.loads(blog.target.read_text()) | values))


def settled_answer(settings, sandbox, vhost: bytes):
    """What the site serves once the vhost on disk is what every worker answers with.

    A previous test may end with a reload: old workers still accept for a moment after it (see
    verify.py), so a single answer could come from the config before. Wait for three answers in a
    row that agree with the file (its CSP header is the visible difference between the tests).
    """
    want_csp = "upgrade-insecure-requests" if b"upgrade-insecure-requests" in vhost else None
    in_a_row = 0
    for _ in range(100):
        answer = get_https(settings, sandbox, settings.canonical_domain)
        in_a_row = in_a_row + 1 if answer[1].get("content-security-policy") == want_csp else 0
        if in_a_row == 3:
            return answer
        time.sleep(0.05)
    raise AssertionError(f"the site never settled on its vhost (expected CSP {want_csp!r})")


def served(settings, sandbox) -> tuple:
    status, headers, body, cert = get_https(settings, sandbox, settings.canonical_domain)
    return status, body, cert.serial_number, headers.get("content-security-policy"), headers.get("x-hand-edit")


@pytest.fixture
def unchanged_site(deployed, sandbox, other_site):
    """Snapshot of what the site serves now; after the test, the very same must still be served."""
    _, settings, *_ = deployed
    vhost_before = Path(settings.vhost_file).read_bytes()
    live_before = Path(settings.tls_dir / "live").resolve()
    current_before = Path(settings.current_link).resolve()
    releases_before = sorted(p.name for p in Path(settings.releases_dir).iterdir())
    status, headers, body, cert = settled_answer(settings, sandbox, vhost_before)
    yield settings
    assert Path(settings.vhost_file).read_bytes() == vhost_before
    assert Path(settings.tls_dir / "live").resolve() == live_before
    assert Path(settings.current_link).resolve() == current_before
    assert sorted(p.name for p in Path(settings.releases_dir).iterdir()) == releases_before
    expected = (status, body, cert.serial_number, headers.get("content-security-policy"), None)
    for _ in range(50):  # a test may end with a reload of its own (asynchronous): poll
        seen = served(settings, sandbox)
        if seen == expected:
            break
        time.sleep(0.1)
    assert seen == expected
    assert other_site_answers(settings, other_site)


@contextlib.contextmanager
def the_server(settings):
    """The site's one server and its state, as the deploy reads them."""
    servers = connect_all(settings)
    try:
        [server] = list(servers)
        yield server, host_state.read(server, settings)
    finally:
        servers.close()


def rendered(settings, state, **changes) -> Vhost:
    """The vhost the deploy renders for the live certificate (with ``changes`` to the settings)."""
    cert_dir = str(settings.tls_dir / "certs" / state.live.cert_id)
    return render_vhost(settings._replace(**changes), state.build, cert_dir, error_page=True)


def refused_by_nginx_test(settings, vhost_of) -> str:
    """nginx.test of ``vhost_of(state)`` must fail: its message."""
    with the_server(settings) as (server, state):
        with pytest.raises(NginxError) as err:
            nginx.test(server, settings, vhost_of(state))
    return str(err.value)


# --- first deploy ---------------------------------------------------------------------

def test_first_deploy_never_leaves_a_config_that_fails_nginx_t(deployed):
    *_, result, watcher = deployed
    assert result.certificate_action == "issue"
    assert watcher.runs >= 3, "the watcher should have run nginx -t several times during the deploy"
    assert watcher.failures == []


def test_first_deploy_serves_https_and_redirects(deployed, sandbox):
    _, settings, result, _ = deployed
    answer = fetch_https(settings, settings.canonical_domain)
    assert answer.status == 200 and answer.certificate.serial_number == result.serial
    for host in DOMAINS:
        status, _, location = get_http(settings, host, "/a/b?c=d")
        assert (status, location) == (301, f"{settings.https_origin}/a/b?c=d")
    status, headers, _, cert = get_https(settings, sandbox, DOMAINS[1], "/x?y=1")
    assert (status, headers["location"]) == (301, f"{settings.https_origin}/x?y=1")
    assert headers["strict-transport-security"] == "max-age=63072000"


def test_another_site_on_the_server_kept_answering(deployed, other_site):
    _, settings, *_ = deployed
    assert other_site_answers(settings, other_site)


def test_site_404_cache_lifetimes_gzip_and_headers(deployed, sandbox):
    _, settings, *_ = deployed
    host = settings.canonical_domain
    status, headers, body, _ = get_https(settings, sandbox, host, "/no/such/page.html")
    assert status == 404 and NOT_FOUND_TEXT in body.decode()
    assert headers["strict-transport-security"] == "max-age=63072000"
    assert get_https(settings, sandbox, host, "/404.html")[0] == 404  # internal only

    status, headers, body, _ = get_https(settings, sandbox, host, "/theme/css/main.css", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip" and b"{" in gzip.decompress(body)
    assert headers["cache-control"] == "max-age=2592000"
    assert headers["strict-transport-security"] == "max-age=63072000"  # not lost in the location

    status, headers, body, _ = get_https(settings, sandbox, host, "/", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["cache-control"] == "max-age=300" and headers["content-encoding"] == "gzip"
    assert headers["server"] == "nginx"  # server_tokens off: no version


# --- testing a vhost changes nothing live ----------------------------------------------

def test_nginx_test_leaves_the_live_vhost_byte_identical_and_reloads_nothing(unchanged_site, sandbox):
    settings = unchanged_site
    live_text = Path(settings.vhost_file).read_bytes()
    before = sandbox.hosts[0].nginx_workers()
    with the_server(settings) as (server, state):
        new = rendered(settings, state, csp_upgrade_insecure=True)
        assert new.text.encode() != live_text
        warnings = nginx.test(server, settings, new)
    assert warnings == ()
    assert Path(settings.vhost_file).read_bytes() == live_text
    assert Path(str(settings.vhost_file) + ".next").read_text() == new.text  # kept for the commit, not live
    assert not sandbox.hosts[0].nginx_workers() - before, "no reload: a reload starts new workers"
    assert served(settings, sandbox)[3] is None  # nginx still serves the live vhost (no CSP)


def test_a_deploy_with_the_same_vhost_does_not_reload_nginx(deployed, sandbox):
    """Nothing to do, then a new release alone: neither touches nginx (commit.sh reloads only for a new vhost)."""
    blog, settings, *_ = deployed
    before = sandbox.hosts[0].nginx_workers()
    again = pipeline.deploy(settings)
    assert (again.release_id, again.certificate_action) == ("", "keep")  # nothing changed: no release either
    extra = blog.path / "output" / "only-a-new-release.html"
    extra.write_text("<p>a new release, the same vhost</p>")
    try:
        release = pipeline.deploy(settings)
        assert release.release_id and Path(settings.current_link).resolve().name == release.release_id
        assert fetch_https(settings, settings.canonical_domain, path="/only-a-new-release.html").status == 200
    finally:
        extra.unlink()
    assert not sandbox.hosts[0].nginx_workers() - before, "no reload: a reload starts new workers"


def test_a_changed_vhost_goes_live_with_one_reload(deployed, sandbox):
    blog, settings, *_ = deployed
    before = sandbox.hosts[0].nginx_workers()
    set_values(blog, DEPLOY_CSP_UPGRADE_INSECURE=True)
    try:
        blog.fab("deploy")
        assert served(settings, sandbox)[3] == "upgrade-insecure-requests"  # live as soon as the deploy returned
        assert sandbox.hosts[0].nginx_workers() - before, "a reload starts new workers"
    finally:
        set_values(blog, DEPLOY_CSP_UPGRADE_INSECURE=False)
    blog.fab("deploy")
    assert served(settings, sandbox)[3] is None


def test_a_vhost_edited_by_hand_is_replaced_by_ours_at_the_next_deploy(deployed, sandbox):
    blog, settings, *_ = deployed
    vhost = Path(settings.vhost_file)
    ours = vhost.read_bytes()
    hand = f"hand.{DOMAINS[0]}"
    vhost.write_bytes(ours + (f"server {{\n    listen 127.0.0.1:{settings.http_port};\n    server_name {hand};\n"
                              f'    return 200 "edited by hand\\n";\n}}\n').encode())
    sandbox.hosts[0].reload_nginx()  # the administrator edits the file and reloads nginx
    assert get_http(settings, hand)[:2] == (200, "edited by hand\n")
    workers = sandbox.hosts[0].nginx_workers()
    blog.fab("deploy")
    assert vhost.read_bytes() == ours
    # The deploy cannot see this reload take effect: the edited file kept our probe, so it answered
    # as ours already.
    sandbox.hosts[0].wait_for_reload(workers)
    assert get_http(settings, hand)[:2] != (200, "edited by hand\n")  # nginx runs ours again
    assert all(get_http(settings, d)[2] == f"{settings.https_origin}/" for d in DOMAINS)


# --- breaking it on purpose -----------------------------------------------------------

@contextlib.contextmanager
def another_site_conf(sandbox, filename: str, text: str, *, loaded: bool):
    """Another site's file in nginx's include folder, for the block; ``loaded``: nginx is reloaded
    with it first, and without it afterwards."""
    conf = sandbox.nginx_include_dir / filename
    conf.write_text(text)
    try:
        if loaded:
            sandbox.hosts[0].reload_nginx()
        yield conf
    finally:
        conf.unlink()
        if loaded:
            sandbox.hosts[0].reload_nginx()


def test_another_sites_broken_file_is_named_and_nothing_changes(unchanged_site, sandbox):
    settings = unchanged_site
    before = sandbox.hosts[0].nginx_workers()
    sandbox.hosts[0].break_nginx()  # an unknown directive in another file of nginx's include folder
    try:
        message = refused_by_nginx_test(settings, lambda state: rendered(settings, state, csp_upgrade_insecure=True))
    finally:
        sandbox.hosts[0].repair_nginx()
    assert "nginx -t on" in message and "rejected the configuration; nginx keeps running on the live one" in message
    assert 'unknown directive "this_is_not_an_nginx_directive"' in message
    assert "another site's configuration fails `nginx -t`" in message
    assert not sandbox.hosts[0].nginx_workers() - before, "no reload: a reload starts new workers"


def test_conflicting_block_from_another_site_is_refused_and_the_server_keeps_running(unchanged_site, sandbox):
    settings = unchanged_site
    # Another site reuses our session cache zone name with another size: nginx -t fails.
    with another_site_conf(sandbox, "zz-conflict.conf", f"server {{\n    listen 127.0.0.1:{sandbox.http_port};\n"
                           f"    server_name conflict.test;\n    ssl_session_cache shared:pelican_https:20m;\n"
                           f"    return 200;\n}}\n", loaded=False):
        message = refused_by_nginx_test(settings, lambda state: rendered(settings, state, csp_upgrade_insecure=True))
    assert "rejected the configuration; nginx keeps running on the live one" in message
    assert "[emerg]" in message and 'shared memory zone "pelican_https"' in message
    assert "zz-conflict.conf" in message and "another site's configuration fails" in message


def test_a_deploy_while_another_site_is_broken_leaves_everything_as_it_was(deployed, unchanged_site, sandbox):
    """Through `fab deploy`, with a new release and a new vhost: refused before the commit; the new
    release is removed again, and nothing live changed."""
    blog = deployed[0]
    extra = blog.path / "output" / "must-not-go-live.html"
    extra.write_text("<p>not live</p>")
    set_values(blog, DEPLOY_CSP_UPGRADE_INSECURE=True)
    sandbox.hosts[0].break_nginx()
    try:
        result = blog.fab("deploy", check=False)
    finally:
        sandbox.hosts[0].repair_nginx()
        set_values(blog, DEPLOY_CSP_UPGRADE_INSECURE=False)
        extra.unlink()
    assert result.returncode == 1
    assert "another site's configuration fails `nginx -t`" in result.stderr and "Traceback" not in result.stderr


def test_duplicate_default_server_is_refused(unchanged_site, sandbox):
    settings = unchanged_site
    with another_site_conf(sandbox, "zz-default.conf", f"server {{\n    listen 127.0.0.1:{sandbox.http_port} default_server;\n"
                           f"    server_name default.test;\n    return 200;\n}}\n", loaded=True):
        message = refused_by_nginx_test(settings, lambda state: rendered(settings, state, nginx_default_server=True))
    assert "[emerg]" in message and "duplicate default server" in message


def test_a_vhost_nginx_rejects_is_named_with_nginx_own_words(unchanged_site):
    settings = unchanged_site
    holder = {}

    def broken(state):
        good = rendered(settings, state, csp_upgrade_insecure=True)
        holder["vhost"] = good._replace(text=good.text + "\nbogus_directive on;\n")  # stands for a renderer bug
        return holder["vhost"]
    message = refused_by_nginx_test(settings, broken)
    assert 'unknown directive "bogus_directive"' in message
    assert "another site's configuration" not in message  # nginx named our own file
    assert f"{SITE}.conf:{holder['vhost'].text.count(chr(10))}" in message  # nginx's own file:line, through the include link


def test_a_missing_sudo_rule_says_the_deploy_user_may_not_run_nginx(unchanged_site):
    settings = unchanged_site
    rule = Path(sudoers_file(settings))
    assert rule.is_file()
    # Every site of the sandbox has the same deploy user and nginx command, so each site's rule
    # allows this one's too: the rule is gone only when all of them are (set aside, then put back).
    rules = sorted(rule.parent.glob(f"pelican-https-{settings.user}-*"))
    saved = {path: (path.read_bytes(), path.stat().st_mode & 0o777) for path in rules}
    for path in rules:
        path.unlink()
    try:
        message = refused_by_nginx_test(settings, lambda state: rendered(settings, state, csp_upgrade_insecure=True))
    finally:
        for path, (data, mode) in saved.items():
            path.write_bytes(data)
            path.chmod(mode)
    assert f"the deploy user {settings.user} may not run" in message
    assert "Run `fab server-setup` and apply its sudoers file" in message
    assert "sudo" in message.split("sudo said:")[-1]  # sudo's own words follow


def test_a_dropped_session_during_nginx_t_puts_the_live_vhost_back(unchanged_site):
    settings = unchanged_site
    # The "nginx" here kills the test script the moment it would test the config, like an SSH
    # session dropping half-way: its trap must put the live file back.
    dying = settings._replace(nginx=("sh", "-c", "kill -TERM $PPID", "nginx"))
    with the_server(settings) as (server, state):
        with pytest.raises(NginxError):
            nginx.test(server, dying, rendered(settings, state, csp_upgrade_insecure=True))


@pytest.mark.parametrize("line, setting", [
    ('DEPLOY_DOMAINS = ["nginx-test.example.com;"]', "DEPLOY_DOMAINS"),
    ('DEPLOY_DOMAINS = ["nginx-test.example.com", "www.example.com { return 200; }"]', "DEPLOY_DOMAINS"),
    ('DEPLOY_LISTEN = ["127.0.0.1 default_server"]', "DEPLOY_LISTEN"),
    ('DEPLOY_CSP_UPGRADE_INSECURE = "upgrade-insecure-requests; script-src *"', "DEPLOY_CSP_UPGRADE_INSECURE"),
    ('DEPLOY_HSTS_MAX_AGE = "63072000; preload"', "DEPLOY_HSTS_MAX_AGE"),
])
def test_hostile_setting_through_fab_deploy_writes_nothing(deployed, unchanged_site, line, setting):
    blog = deployed[0]
    conf = blog.path / "sandboxconf.py"
    original = conf.read_text()
    conf.write_text(original + line + "\n")
    try:
        result = blog.fab("deploy", check=False)
    finally:
        conf.write_text(original)
    assert result.returncode == 1
    assert f"error: {setting}" in result.stderr and "expected" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_vhost_nginx_does_not_include_is_reported(make_blog, sandbox):
    """The first deploy of a site whose set-up link is missing: the challenge path never answers,
    so nothing is ordered, and the vhost is the set-up's empty placeholder again."""
    blog = make_blog("nginx-unlinked")
    set_values(blog, DEPLOY_DOMAINS=["unlinked.example.com"])
    settings = blog.settings()
    (sandbox.nginx_include_dir / "nginx-unlinked.conf").unlink()  # as if the set-up link were missing
    blog.build()
    result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "did not answer 204" in result.stderr and "Check that nginx includes" in result.stderr
    assert not Path(str(settings.vhost_file) + ".before-order").exists()  # the challenge path was closed
    assert Path(settings.vhost_file).read_text() == ""  # the set-up's placeholder again: a restart stays safe
    assert not (Path(settings.tls_dir) / "live").exists()


def test_another_site_claiming_our_name_is_detected_and_undone(deployed, unchanged_site, sandbox):
    """nginx only warns about a duplicate server_name and serves the first block it read: the
    probe sees the other site answer, so the commit is undone and nginx's warning shown."""
    blog = deployed[0]
    settings = unchanged_site
    set_values(blog, DEPLOY_CSP_UPGRADE_INSECURE=True)
    try:
        with another_site_conf(sandbox, "aaa-shadow.conf",  # read before ours
                               f"server {{\n    listen 127.0.0.1:{sandbox.http_port};\n"
                               f"    server_name {settings.canonical_domain};\n    return 200 shadow;\n}}\n", loaded=True):
            result = blog.fab("deploy", check=False)
    finally:
        set_values(blog, DEPLOY_CSP_UPGRADE_INSECURE=False)
    assert result.returncode == 1
    assert "did not answer 204" in result.stderr and "were put back" in result.stderr
    assert f'conflicting server name "{settings.canonical_domain}"' in result.stderr


# --- last: it changes the site's domains ----------------------------------------------

def test_adding_a_name_answers_its_challenge_and_never_fails_nginx_t(deployed, sandbox, other_site):
    """A renewal with a new alias: the running vhost must answer the new name's challenge first."""
    _, settings, first, _ = deployed
    wider = settings._replace(domains=(*settings.domains, "new.nginx-test.example.com"))
    with NginxTWatcher(sandbox) as watcher:
        result = pipeline.deploy(wider, upload_site=False)
    assert watcher.failures == []
    assert result.certificate_action == "issue" and result.serial != first.serial
    status, headers, _, cert = get_https(wider, sandbox, "new.nginx-test.example.com", "/p")
    assert (status, headers["location"]) == (301, f"{wider.https_origin}/p")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "new.nginx-test.example.com" in names
    assert other_site_answers(settings, other_site)
