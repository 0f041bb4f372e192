"""`fab deploy`, `fab rollback` and `fab releases` as a user runs them, against the real sandbox:
a deploy killed for real in the middle of its upload, two deploys at once, rollback, odd file
names served by nginx, the progress bar on a real terminal (a pty)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import contextlib

from deploy import lock
from deploy.connection import connect_all
from deploy.verify import fetch_https

WEIRD = ["sp ace.html", "quote'\"s.html", "caf\u00e9 \u65e5\u672c.html", "-dash.html", "per%cent.html", "new\nline.txt"]


def own_blog(make_blog, name: str):
    """A copy of example_site on its own site of the sandbox, with its own domain (nginx refuses
    two vhosts claiming the same name on one port)."""
    blog = make_blog(name)
    blog.target.write_text(json.dumps(json.loads(blog.target.read_text()) | {"DEPLOY_DOMAINS": [f"{name}.example.com"]}))
    return blog


def deployed_with_short_lock_timeout(make_blog, name: str):
    """A blog deployed once, whose next runs wait at most 1 s for the deploy lock."""
    blog = own_blog(make_blog, name)
    blog.build()
    blog.fab("deploy")
    blog.configure(DEPLOY_LOCK_TIMEOUT=1)
    return blog


def fab_process(blog, *args: str, log: Path) -> subprocess.Popen:
    fab = Path(sys.executable).with_name("fab")
    return subprocess.Popen([str(fab), *args, "--settings", "sandboxconf.py"], cwd=blog.path, env=blog.env,
                            stdout=subprocess.PIPE, stderr=open(log, "wb"))


@contextlib.contextmanager
def held_lock(settings):
    """Hold the site's deploy lock from this process, as another deploy would."""
    servers = connect_all(settings)
    try:
        with lock.hold(servers, settings, lambda host, holder: None):
            yield
    finally:
        servers.close()


def live_id(settings) -> str:
    return os.readlink(settings.current_link).rsplit("/", 1)[-1]


def test_a_deploy_killed_midway_leaves_the_site_live_and_the_next_deploy_cleans_up(make_blog, tmp_path):
    blog = own_blog(make_blog, "release-killed")
    blog.build()
    blog.fab("deploy")
    settings = blog.settings()
    before = live_id(settings)
    old_index = fetch_https(settings, settings.canonical_domain).body
    # A big, incompressible file makes the upload last long enough to be killed in the middle.
    output = blog.path / "output"
    (output / "big.jpg").write_bytes(os.urandom(150 * 1024 * 1024))
    (output / "index.html").write_text("<p>the new index that must not go live</p>")
    proc = fab_process(blog, "deploy", log=tmp_path / "killed.log")
    releases = Path(settings.releases_dir)
    deadline = time.monotonic() + 120
    partial = None
    while time.monotonic() < deadline and proc.poll() is None:
        partial = next((p for p in releases.glob("*.partial") if (p / "big.jpg").is_file()), None)
        if partial and (partial / "big.jpg").stat().st_size > 4 * 1024 * 1024:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the deploy ended before it could be killed: " + (tmp_path / "killed.log").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial is not None and (partial / "big.jpg").stat().st_size < 150 * 1024 * 1024
    # The live site is untouched.
    assert live_id(settings) == before
    assert fetch_https(settings, settings.canonical_domain).body == old_index
    # The dead deploy's lock went with its connection.
    started = time.monotonic()
    with held_lock(settings):
        assert time.monotonic() - started < 30
    # The next deploy removes the partial release and goes live.
    (output / "big.jpg").unlink()
    result = blog.fab("deploy")
    assert "is live" in result.stdout
    assert not list(releases.glob("*.partial*"))
    assert live_id(settings) != before
    assert b"the new index that must not go live" in fetch_https(settings, settings.canonical_domain).body


def test_two_deploys_at_once_take_turns(make_blog, tmp_path):
    blog = own_blog(make_blog, "release-twice")
    blog.build()
    blog.fab("deploy")
    settings = blog.settings()
    (blog.path / "output" / "index.html").write_text("<p>both deploys ship this</p>")
    logs = [tmp_path / f"deploy{i}.log" for i in range(2)]
    # Start both while this test holds the lock, so that they really are at the gate together.
    with held_lock(settings):
        procs = [fab_process(blog, "deploy", log=log) for log in logs]
        deadline = time.monotonic() + 120
        while not all("waiting up to" in log.read_text() for log in logs) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.05)
        texts = [log.read_text() for log in logs]
        assert all("held by host=" in t and f"pid={os.getpid()} " in t for t in texts), texts
    for p in procs:
        p.wait(timeout=300)
    texts = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], texts
    # They took turns: the second one's look at the server came after the first one's release
    # went live, so it found nothing new to ship (DEPLOY_SKIP_UNCHANGED).
    assert sum("0 new, 1 changed" in t for t in texts) == 1, texts
    assert sum("nothing changed since the live release" in t for t in texts) == 1, texts
    assert not list(Path(settings.releases_dir).glob("*.partial*"))
    assert b"both deploys ship this" in fetch_https(settings, settings.canonical_domain).body


def test_a_deploy_that_cannot_get_the_lock_fails_naming_the_holder(make_blog):
    blog = deployed_with_short_lock_timeout(make_blog, "release-locked")
    settings = blog.settings()
    before = live_id(settings)
    (blog.path / "output" / "index.html").write_text("<p>never live</p>")
    with held_lock(settings):
        result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "another deploy holds the lock" in result.stderr and f"pid={os.getpid()}" in result.stderr
    assert "DEPLOY_LOCK_TIMEOUT" in result.stderr and "Nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert live_id(settings) == before


def test_rollback_releases_and_odd_names_served_by_nginx(make_blog):
    blog = own_blog(make_blog, "release-rollback")
    blog.build()
    output = blog.path / "output"
    for name in WEIRD:
        (output / name).write_text(f"served: {name!r}")
    first = blog.fab("deploy")
    # CI logs get one summary line for the upload.
    assert re.search(r"upload: release \d{8}T\d{12}Z: \d+ new, 0 changed, 0 deleted, 0 unchanged files; [\d.]+ MB sent in [\d.]+ s",
                     first.stderr), first.stderr
    settings = blog.settings()
    v1 = live_id(settings)
    for name in WEIRD:
        answer = fetch_https(settings, settings.canonical_domain, path="/" + quote(name))
        assert (answer.status, answer.body.decode()) == (200, f"served: {name!r}"), name
    (output / "index.html").write_text("<p>version two</p>")
    second = blog.fab("deploy")
    assert re.search(r"0 new, 1 changed, 0 deleted, \d+ unchanged files", second.stderr), second.stderr
    v2 = live_id(settings)
    assert v2 != v1

    listing = blog.fab("releases").stdout.splitlines()
    assert [re.search(r"\d{8}T\d{12}Z", line).group() for line in listing] == [v1, v2]
    assert listing[1].startswith("*") and listing[1].endswith("(live)") and not listing[0].startswith("*")

    nginx_pid = (blog.sandbox.nginx_prefix / "logs" / "nginx.pid").read_text()
    rolled = blog.fab("rollback")
    assert rolled.stdout.strip() == f"release {v1} is live (was {v2})"
    assert live_id(settings) == v1
    assert b"version two" not in fetch_https(settings, settings.canonical_domain).body
    forward = blog.fab("rollback", "--to", v2)
    assert forward.stdout.strip() == f"release {v2} is live (was {v1})"
    assert b"version two" in fetch_https(settings, settings.canonical_domain).body
    # Nothing to reload: nginx serves `current` through the symlink.
    assert (blog.sandbox.nginx_prefix / "logs" / "nginx.pid").read_text() == nginx_pid

    bad = blog.fab("rollback", "--to", "20000101T000000000000Z", check=False)
    assert bad.returncode == 1 and "release 20000101T000000000000Z is not on" in bad.stderr
    assert live_id(settings) == v2
