"""Installing the vhost on the real sandbox nginx: first deploy, no-reload, and breaking it on purpose.

One blog (its own site and domains on the session sandbox) is deployed from scratch while another
site's server block already answers on the same nginx, and while a watcher runs `nginx -t` over
the whole configuration in a loop: no moment may fail it. Then each test tries to break the
server (a conflicting block from another site, a duplicate default_server, a broken vhost, a
dropped session, a hostile setting) and checks that the site still answers exactly as before.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
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

from deploy import nginx, pipeline
from deploy.connection import connect
from deploy.errors import NginxError
from deploy.sandbox import NGINX
from deploy.settings import settings_from_mapping
from deploy.verify import fetch_http, fetch_https
from deploy.vhost import Vhost, render_vhost

SITE = "nginx-install"
DOMAINS = ["nginx-test.example.com", "www.nginx-test.example.com"]
NOT_FOUND_TEXT = "This page went missing (site's own 404)"


def root_nginx(sandbox, *args: str) -> subprocess.CompletedProcess:
    """nginx as the server's administrator runs it (root), on the sandbox's prefix."""
    return subprocess.run([NGINX, "-p", str(sandbox.nginx_prefix), "-c", "conf/nginx.conf", *args],
                          capture_output=True, text=True)


def local_version() -> tuple[int, ...]:
    return nginx.parse_version(subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr)


def worker_pids(sandbox) -> set[int]:
    out = subprocess.run(["ps", "--ppid", str(sandbox.pids["nginx"]), "-o", "pid="], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


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
    assert root_nginx(sandbox, "-s", "reload").returncode == 0
    yield name
    conf.unlink()
    root_nginx(sandbox, "-s", "reload")


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
    with open(path / "sandboxconf.py", "a") as f:
        f.write(f"\nDEPLOY_DOMAINS = {DOMAINS!r}\n")
    blog = Blog(path, sandbox, SITE)
    blog.build()
    settings = blog.settings()
    assert settings.domains == tuple(DOMAINS)
    assert Path(settings.vhost_file).read_text() == ""  # bare: the set-up's empty placeholder
    assert not (Path(settings.tls_dir) / "live").exists()
    put_release(settings, blog.path / "output")
    with NginxTWatcher(sandbox) as watcher:
        result = pipeline.deploy(settings, upload_site=False)
    return blog, settings, result, watcher


def put_release(settings, output: Path) -> None:
    """The built site as the live release, placed the way the upload stage leaves it.

    The upload stage has its own tests; here only the nginx and certificate stages run, so a
    change in how releases are sent cannot hide (or cause) an nginx failure.
    """
    release = Path(settings.releases_dir) / "00000000T000000Z-nginx-test"
    shutil.copytree(output, release)
    subprocess.run(["chown", "-R", f"{settings.user}:{settings.user}", str(settings.remote_root)], check=True)
    release.chmod(0o755)
    Path(settings.current_link).symlink_to(release.relative_to(settings.remote_root))


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


@pytest.fixture
def unchanged_site(deployed, sandbox, other_site):
    """Snapshot of what the site serves now; after the test, the very same must still be served."""
    _, settings, *_ = deployed
    vhost_before = Path(settings.vhost_file).read_bytes()
    live_before = Path(settings.tls_dir / "live").resolve()
    status, headers, body, cert = settled_answer(settings, sandbox, vhost_before)
    yield settings
    assert Path(settings.vhost_file).read_bytes() == vhost_before
    assert Path(settings.tls_dir / "live").resolve() == live_before
    expected = (status, body, cert.serial_number, headers.get("content-security-policy"))
    for _ in range(50):  # a test may end with a reload of its own (asynchronous): poll
        after = get_https(settings, sandbox, settings.canonical_domain)
        seen = (after[0], after[2], after[3].serial_number, after[1].get("content-security-policy"))
        if seen == expected:
            break
        time.sleep(0.1)
    assert seen == expected
    assert other_site_answers(settings, other_site)


def live_dir(settings) -> str:
    return str(Path(settings.tls_dir / "live").resolve())


def changed_vhost(settings, **changes) -> Vhost:
    """A different (valid) vhost for the same site, so that the install really has work to do."""
    return render_vhost(settings._replace(**changes), local_version(), with_tls=True,
                        certificate_dir=live_dir(settings))


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


def test_unchanged_vhost_and_certificate_do_not_reload(deployed, sandbox):
    _, settings, result, _ = deployed
    before = worker_pids(sandbox)
    vhost = render_vhost(settings, local_version(), with_tls=True, certificate_dir=live_dir(settings))
    conn = connect(settings)
    try:
        outcome = nginx.apply_config(conn, settings, vhost)
    finally:
        conn.close()
    assert not outcome.changed
    assert worker_pids(sandbox) == before


def test_a_changed_vhost_reloads_and_is_confirmed_live(deployed, sandbox):
    _, settings, result, _ = deployed
    before = worker_pids(sandbox)
    conn = connect(settings)
    try:
        outcome = nginx.apply_config(conn, settings, changed_vhost(settings, csp_upgrade_insecure=True))
        csp = get_https(settings, sandbox, settings.canonical_domain)[1].get("content-security-policy")
        back = nginx.apply_config(conn, settings, render_vhost(settings, local_version(), with_tls=True,
                                                               certificate_dir=live_dir(settings)))
    finally:
        conn.close()
    assert outcome.changed and back.changed
    assert csp == "upgrade-insecure-requests"  # live as soon as apply_config returned
    assert worker_pids(sandbox) - before, "a reload starts new workers"
    assert "upgrade-insecure-requests" in Path(str(settings.vhost_file) + ".prev").read_text()  # previous file kept


# --- breaking it on purpose -----------------------------------------------------------

def apply_expecting_failure(settings, vhost: Vhost, **kwargs) -> str:
    conn = connect(settings)
    try:
        with pytest.raises(NginxError) as err:
            nginx.apply_config(conn, settings, vhost, **kwargs)
    finally:
        conn.close()
    return str(err.value)


@contextlib.contextmanager
def another_site_conf(sandbox, filename: str, text: str, *, loaded: bool):
    """Another site's file in nginx's include folder, for the block; ``loaded``: nginx is reloaded
    with it first, and without it afterwards."""
    conf = sandbox.nginx_include_dir / filename
    conf.write_text(text)
    try:
        if loaded:
            assert root_nginx(sandbox, "-s", "reload").returncode == 0
        yield conf
    finally:
        conf.unlink()
        if loaded:
            root_nginx(sandbox, "-s", "reload")


def test_conflicting_block_from_another_site_is_refused_and_the_server_keeps_running(unchanged_site, sandbox):
    settings = unchanged_site
    # Another site reuses our session cache zone name with another size: nginx -t fails.
    with another_site_conf(sandbox, "zz-conflict.conf", f"server {{\n    listen 127.0.0.1:{sandbox.http_port};\n"
                           f"    server_name conflict.test;\n    ssl_session_cache shared:pelican_https:20m;\n"
                           f"    return 200;\n}}\n", loaded=False):
        message = apply_expecting_failure(settings, changed_vhost(settings, csp_upgrade_insecure=True))
    assert "nginx -t rejected the new configuration" in message and "keeps running on its old config" in message
    assert "[emerg]" in message and 'shared memory zone "pelican_https"' in message
    assert "zz-conflict.conf" in message and "another site's configuration fails" in message


def test_duplicate_default_server_is_refused(unchanged_site, sandbox):
    settings = unchanged_site
    with another_site_conf(sandbox, "zz-default.conf", f"server {{\n    listen 127.0.0.1:{sandbox.http_port} default_server;\n"
                           f"    server_name default.test;\n    return 200;\n}}\n", loaded=True):
        message = apply_expecting_failure(settings, changed_vhost(settings, nginx_default_server=True))
    assert "[emerg]" in message and "duplicate default server" in message


def test_a_vhost_nginx_rejects_is_rolled_back_with_nginx_own_words(unchanged_site):
    settings = unchanged_site
    good = changed_vhost(settings, csp_upgrade_insecure=True)
    broken = Vhost(good.text + "\nbogus_directive on;\n", good.probe_path)  # stands for a renderer bug
    message = apply_expecting_failure(settings, broken)
    assert 'unknown directive "bogus_directive"' in message
    assert "another site's configuration" not in message  # nginx named our own file
    assert f"{SITE}.conf:{broken.text.count(chr(10))}" in message  # nginx's own file:line, through the include link


def test_a_dropped_session_during_nginx_t_restores_the_previous_vhost(unchanged_site):
    settings = unchanged_site
    # The "nginx" here kills the install script (its parent) the moment it would test the config,
    # like an SSH session dropping half-way: the trap must put the previous file back.
    dying = settings._replace(nginx=("sh", "-c", "kill -TERM $PPID", "nginx"))
    message = apply_expecting_failure(dying, changed_vhost(settings, csp_upgrade_insecure=True))
    assert "interrupted" in message and "put back" in message


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


def test_a_vhost_nginx_does_not_include_is_reported(sandbox):
    values = sandbox.add_site("nginx-unlinked")
    settings = settings_from_mapping(values | {"DEPLOY_DOMAINS": ["unlinked.example.com"]}, base=sandbox.root)
    (sandbox.nginx_include_dir / "nginx-unlinked.conf").unlink()  # as if the set-up link were missing
    vhost = render_vhost(settings, local_version(), with_tls=False)
    conn = connect(settings)
    try:
        with pytest.raises(NginxError) as err:
            nginx.apply_config(conn, settings, vhost, confirm_timeout=1.0)
    finally:
        conn.close()
    assert "did not answer 204" in str(err.value) and "includes" in str(err.value)
    assert "were put back" in str(err.value)
    assert Path(settings.vhost_file).read_text() == ""  # the set-up's placeholder again: a restart stays safe


def test_another_site_claiming_our_name_is_detected_and_undone(unchanged_site, sandbox):
    """nginx only warns about a duplicate server_name and serves the first block it read: the
    probe sees the other site answer, so the install is undone and the warning shown."""
    settings = unchanged_site
    with another_site_conf(sandbox, "aaa-shadow.conf",  # read before ours
                           f"server {{\n    listen 127.0.0.1:{sandbox.http_port};\n"
                           f"    server_name {settings.canonical_domain};\n    return 200 shadow;\n}}\n", loaded=True):
        message = apply_expecting_failure(settings, changed_vhost(settings, csp_upgrade_insecure=True), confirm_timeout=1.0)
    assert "did not answer 204" in message and "were put back" in message
    assert f'conflicting server name "{settings.canonical_domain}"' in message


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
