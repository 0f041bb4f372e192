"""`fab deploy`, `fab rollback` and `fab releases` as a user runs them, against the real sandbox:
a deploy killed for real in the middle of its upload, two deploys at once, rollback, odd file
names served by nginx, the progress bar on a real terminal (a pty)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from deploy import lock, upload
from deploy.remote import Remote
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
    with open(blog.path / "sandboxconf.py", "a") as f:
        f.write("\nDEPLOY_LOCK_TIMEOUT = 1\n")
    return blog


def fab_process(blog, *args: str, log: Path) -> subprocess.Popen:
    fab = Path(sys.executable).with_name("fab")
    return subprocess.Popen([str(fab), *args, "--settings", "sandboxconf.py"], cwd=blog.path, env=blog.env,
                            stdout=subprocess.PIPE, stderr=open(log, "wb"))


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
    socket_dirs_before = set(Path("/tmp").glob("phs-ssh-*"))
    proc = fab_process(blog, "deploy", log=tmp_path / "killed.log")
    releases = Path(settings.releases_dir)
    deadline = time.monotonic() + 120
    partial = None
    while time.monotonic() < deadline and proc.poll() is None:
        partial = next((p for p in releases.glob("*.partial") if (p / "big.jpg").is_file()), None)
        if partial and (p := partial / "big.jpg").stat().st_size > 4 * 1024 * 1024:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the deploy ended before it could be killed: " + (tmp_path / "killed.log").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A SIGKILLed client cannot remove its private ssh control-socket folder: the test does.
    for leftover in set(Path("/tmp").glob("phs-ssh-*")) - socket_dirs_before:
        shutil.rmtree(leftover, ignore_errors=True)
    assert partial is not None and (partial / "big.jpg").stat().st_size < 150 * 1024 * 1024
    # The live site is untouched.
    assert live_id(settings) == before
    assert fetch_https(settings, settings.canonical_domain).body == old_index
    # The dead deploy's lock went with its connection (its ssh children notice the closed pipes).
    with Remote(settings) as remote:
        assert lock.DeployLock(remote, settings).wait().waited < 30
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
    with Remote(settings) as remote, lock.hold(remote, settings, release_id="GATE"):
        procs = [fab_process(blog, "deploy", log=log) for log in logs]
        deadline = time.monotonic() + 120
        while not all("waiting up to" in log.read_text() for log in logs) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.05)
        texts = [log.read_text() for log in logs]
        assert all(f"held by host=" in t and f"pid={os.getpid()} " in t and "release=GATE" in t for t in texts), texts
    for p in procs:
        p.wait(timeout=300)
    texts = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], texts
    # They took turns: the second one's look at the server came after the first one's release
    # went live, so it found nothing new to ship (DEPLOY_SKIP_UNCHANGED).
    assert sum("0 new, 1 changed" in t for t in texts) == 1, texts
    assert sum("nothing changed since release" in t for t in texts) == 1, texts
    assert not list(Path(settings.releases_dir).glob("*.partial*"))
    assert b"both deploys ship this" in fetch_https(settings, settings.canonical_domain).body


def test_a_deploy_that_cannot_get_the_lock_fails_naming_the_holder(make_blog):
    blog = deployed_with_short_lock_timeout(make_blog, "release-locked")
    settings = blog.settings()
    before = live_id(settings)
    (blog.path / "output" / "index.html").write_text("<p>never live</p>")
    with Remote(settings) as remote, lock.hold(remote, settings, release_id="HOLDER-TEST"):
        result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert "another deploy holds the lock" in result.stderr and f"pid={os.getpid()}" in result.stderr
    assert "release=HOLDER-TEST" in result.stderr and "DEPLOY_LOCK_TIMEOUT" in result.stderr
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
    assert re.search(r"upload: release \d{8}T\d{12}Z: \d+ new, 0 changed, 0 deleted, 0 unchanged files; [\d.]+ [KM]?B sent \(\w+\) in [\d.]+ s",
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
    assert bad.returncode == 1 and "there is no release '20000101T000000000000Z'" in bad.stderr
    assert live_id(settings) == v2


def test_progress_bar_on_a_terminal_and_silence_elsewhere():
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            bar = upload.ProgressBar(tty)
            assert bar.enabled
            bar(0, 2_000_000)
            bar.last = 0  # the bar redraws at most every 0.1 s
            bar(1_000_000, 2_000_000)
            bar(2_000_000, 2_000_000)
            bar.finish()
        shown = b""
        while select.select([master], [], [], 0.5)[0]:  # a pty hands the bytes over in pieces
            shown += os.read(master, 65536)
        shown = shown.decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "upload [" in shown and "1.0 MB / 2.0 MB" in shown and "2.0 MB / 2.0 MB" in shown
    assert "#" * 15 + "." * 15 in shown and "\r" in shown
    log = Path(os.devnull).open("w")
    quiet = upload.ProgressBar(log)
    assert not quiet.enabled
    quiet(1, 2)
    log.close()


def test_renew_takes_the_same_lock_on_its_one_connection(make_blog, tmp_path):
    """`fab renew` (no upload) holds the deploy lock on a session of its Fabric connection, not on
    an OpenSSH connection of its own: a deploy waits for it, it waits for a deploy, and a renewal
    killed while holding it frees it for the next one."""
    from deploy.connection import ChannelShell, connect

    blog = deployed_with_short_lock_timeout(make_blog, "renew-lock")
    settings = blog.settings()

    # A renewal waits for a deploy's lock (OpenSSH) and gives up naming it.
    with Remote(settings) as remote, lock.hold(remote, settings, release_id="DEPLOY-HOLDS"):
        result = blog.fab("renew", check=False)
    assert result.returncode == 1 and "release=DEPLOY-HOLDS" in result.stderr, result.stderr

    # A deploy waits for a lock held on a Fabric session, and gives up naming it.
    conn = connect(settings)
    try:
        with lock.hold(ChannelShell(conn, settings), settings, release_id="RENEW-HOLDS") as held:
            assert held.holder.endswith("release=RENEW-HOLDS")
            result = blog.fab("deploy", check=False)
    finally:
        conn.close()
    assert result.returncode == 1 and "release=RENEW-HOLDS" in result.stderr, result.stderr

    # A renewal killed while it holds the lock: the kernel closes its TCP connection, sshd the
    # session, the lock shell sees its stdin end and the lock is free again.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from deploy import lock\n"
         "from deploy.connection import ChannelShell, connect\n"
         "from deploy.settings import load_settings\n"
         "settings = load_settings('sandboxconf.py')\n"
         "conn = connect(settings)\n"
         "lock.hold(ChannelShell(conn, settings), settings, release_id='KILLED').wait()\n"
         "print('LOCKED', flush=True)\n"
         "time.sleep(600)\n"],
        cwd=blog.path, env=blog.env, stdout=subprocess.PIPE, stderr=open(tmp_path / "holder.log", "wb"))
    assert holder.stdout.readline() == b"LOCKED\n", (tmp_path / "holder.log").read_text()
    holder_file = Path(str(settings.lock_file) + ".holder")
    assert "release=KILLED" in holder_file.read_text()
    holder.kill()
    holder.wait()
    with Remote(settings) as remote:
        assert lock.DeployLock(remote, settings).wait().waited < 30
    assert "certificate keep" in blog.fab("renew").stdout
