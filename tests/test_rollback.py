"""`fab rollback` interrupted, and a rollback across releases that differ in their 404 page.

Ctrl-C is sent for real to a `fab rollback` waiting for the lock; once the switch has started it
is raised by a fault hook (a ``Progress`` whose ``enter`` raises at a stage) in an in-process
rollback. What every host's `current` is afterwards is read on the sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from deploy import manifest as mf, tasks
from fault_hooks import FaultAt, interrupted
from deploy.connection import connect_all
from deploy.lock import hold
from deploy.releases import ReleaseInfo, list_releases

A, B = "20260101T000000000000Z", "20260102T000000000000Z"


class Output:
    def __init__(self, out: bytes):
        self.out = out

    def script(self, name, *args, **kwargs):
        return self.out


def test_list_releases_reads_which_release_has_a_404_page():
    from deploy.settings import settings_from_mapping
    settings = settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy"})
    found = list_releases(Output(f"{A} 1\n{B} 2\nerror-page {B}\ncurrent {B}\n".encode()), settings)
    assert found == [ReleaseInfo(A, mf.release_time(A), 1024, False, False), ReleaseInfo(B, mf.release_time(B), 2048, True, True)]


def two_releases(make_blog, name: str, *, second_has_404: bool = False):
    blog = make_blog(name, own_names=True)
    blog.build()
    blog.fab("deploy")
    settings = blog.settings()
    first = os.readlink(settings.current_link).rsplit("/", 1)[-1]
    (blog.path / "output" / "index.html").write_text("<p>second</p>")
    if second_has_404:
        (blog.path / "output" / "404.html").write_text("<p>not found, the site's own page</p>")
    blog.fab("deploy")
    second = os.readlink(settings.current_link).rsplit("/", 1)[-1]
    assert first != second
    return blog, settings, first, second


def test_ctrl_c_while_a_rollback_waits_for_the_lock_exits_130_and_says_nothing_changed(make_blog, tmp_path):
    blog, settings, first, second = two_releases(make_blog, "rollback-ctrlc")
    blog.configure(DEPLOY_LOCK_TIMEOUT=60)
    log = tmp_path / "rollback.log"
    fab = Path(sys.executable).with_name("fab")
    servers = connect_all(settings)
    try:
        with hold(servers, settings, lambda host, holder: None):
            with open(log, "wb") as err:
                proc = subprocess.Popen([str(fab), "rollback", "--settings", "sandboxconf.py"], cwd=blog.path, env=blog.env,
                                        stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 30
            while b"waiting up to" not in log.read_bytes() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130, log.read_text()
    finally:
        servers.close()
    text = log.read_text()
    assert "interrupted while taking the deploy lock. Nothing was changed" in text, text
    assert os.readlink(settings.current_link) == f"releases/{second}"


def test_ctrl_c_after_the_switch_before_it_is_recorded_names_each_hosts_current(make_blog, monkeypatch):
    blog, settings, first, second = two_releases(make_blog, "rollback-ctrlc2")
    monkeypatch.setattr(tasks, "load_settings", lambda path: settings)
    with pytest.raises(Exit) as stopped:
        tasks._rollback("sandboxconf.py", None, FaultAt("recording the switch", interrupted))
    message = stopped.value.message
    assert stopped.value.code == 130
    assert message.startswith("interrupted while recording the switch. ")
    assert f"`current` is {first} on every host" in message, message
    assert f"otherwise it puts back what each host had ({settings.host}" in message and f": {second})" in message, message
    assert os.readlink(settings.current_link) == f"releases/{first}"
    # Not recorded: the next deploy puts the release that was live back first (nothing new to deploy).
    result = blog.fab("deploy")
    assert "putting back what it left half done" in result.stderr, result.stderr
    assert os.readlink(settings.current_link) == f"releases/{second}"


def test_ctrl_c_before_the_switch_says_nothing_changed_naming_current(make_blog, monkeypatch):
    blog, settings, first, second = two_releases(make_blog, "rollback-ctrlc3")
    monkeypatch.setattr(tasks, "load_settings", lambda path: settings)
    with pytest.raises(Exit) as stopped:
        tasks._rollback("sandboxconf.py", None, FaultAt("switching current", interrupted))
    assert stopped.value.code == 130
    assert f"Nothing was changed: `current` is still what it was ({settings.host}" in stopped.value.message
    assert f": {second})" in stopped.value.message, stopped.value.message
    assert os.readlink(settings.current_link) == f"releases/{second}"
    assert not (Path(settings.state_dir) / "commit.journal").exists()


def test_a_rollback_to_a_release_without_the_404_page_the_vhost_names_warns(make_blog):
    blog, settings, first, second = two_releases(make_blog, "rollback-404", second_has_404=True)
    assert "error_page 404 /404.html;" in Path(settings.vhost_file).read_text()
    rolled = blog.fab("rollback")
    assert f"release {first} is live" in rolled.stdout
    assert f"release {first} has no 404.html, but the vhost still sends 404s to /404.html" in rolled.stderr, rolled.stderr
    assert "until the next `fab deploy`" in rolled.stderr
