"""Several web servers, one site (issue 16): `fab deploy` to a group of three real hosts.

Each host of ``sandbox3`` has its own sshd, nginx, network namespace and files (deploy/sandbox.py);
one Pebble validates HTTP-01 at whatever address DNS gives. Every test asserts what every host
serves afterwards, fetched at the host's own address.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import pipeline
from fault_hooks import FaultAt, wait_for_commit_scripts
from deploy.errors import DeployError
from deploy.verify import fetch_https


def deployed(make_blog3, site: str):
    """A copy of example_site with names of its own, built and deployed once to every host."""
    blog = make_blog3(site, own_names=True)
    blog.build()
    blog.fab("deploy")
    return blog


def serving(blog) -> list[tuple[str, int, bytes]]:
    """(live release id, certificate serial, index page) of every host, fetched at its own address."""
    settings = blog.settings()
    seen = []
    for host in blog.sandbox.hosts:
        current = host.local_path(settings.current_link)
        release = os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else ""
        answer = fetch_https(settings, settings.canonical_domain, address=host.address)
        seen.append((release, answer.certificate.serial_number, answer.body))
    return seen


def test_one_order_validated_through_a_host_that_is_not_first_then_all_hosts_serve_it(make_blog3, sandbox3):
    blog = make_blog3("group-first", own_names=True)
    blog.build()
    # DNS sends the CA to the third host only: the order can succeed only if its token is there too.
    third = sandbox3.hosts[2].address
    for name in ("group-first.example.com", "www.group-first.example.com"):
        sandbox3.set_dns(name, [third])
    result = blog.fab("deploy")
    assert len(re.findall(r"order https://", result.stderr)) == 1, result.stderr
    seen = serving(blog)
    assert len({(release, serial) for release, serial, _ in seen}) == 1, seen
    assert all(b"An Example Blog" in body for *_, body in seen)
    assert "on " + ", ".join(h.ssh_target for h in sandbox3.hosts) in result.stdout

    # fab status and fab releases: one line (block) per host, the same release everywhere.
    releases = blog.fab("releases").stdout
    assert all(f"[{h.ssh_target}]" in releases for h in sandbox3.hosts) and releases.count("(live)") == 3
    status = blog.fab("status").stdout
    assert status.count("last deploy: release " + seen[0][0]) == 3, status


def test_a_host_unreachable_at_start_changes_nothing_anywhere(make_blog3, sandbox3):
    blog = deployed(make_blog3, "group-down")
    before = serving(blog)
    (blog.path / "output" / "index.html").write_text("<p>must not go live</p>")
    sandbox3.hosts[1].stop_sshd()
    result = blog.fab("deploy", check=False)
    assert result.returncode == 1
    assert sandbox3.hosts[1].ssh_target in result.stderr and "Nothing was changed" in result.stderr, result.stderr
    sandbox3.hosts[1].start_sshd()
    assert serving(blog) == before


def test_nginx_t_failing_on_one_host_means_no_host_switches(make_blog3, sandbox3):
    blog = deployed(make_blog3, "group-nginx")
    before = serving(blog)
    blog.configure(DEPLOY_HSTS_MAX_AGE=600)  # a new vhost, so nginx -t runs on every host
    (blog.path / "output" / "index.html").write_text("<p>must not go live</p>")
    sandbox3.hosts[2].break_nginx()
    result = blog.fab("deploy", check=False)
    assert result.returncode == 1 and "nginx -t" in result.stderr, result.stderr
    assert sandbox3.hosts[2].ssh_target in result.stderr
    sandbox3.hosts[2].repair_nginx()
    assert serving(blog) == before
    for host in sandbox3.hosts:
        assert not list(host.local_path(blog.settings().releases_dir).glob("*.partial"))


def test_a_commit_failing_on_one_host_switches_the_others_back(make_blog3, sandbox3):
    blog = deployed(make_blog3, "group-commit")
    before = serving(blog)
    blog.configure(DEPLOY_HSTS_MAX_AGE=600)
    (blog.path / "output" / "index.html").write_text("<p>must not go live</p>")
    # nginx -t passes on the second host (its config is fine), but its reload fails: nginx is not running.
    sandbox3.hosts[1].stop_nginx()
    result = blog.fab("deploy", check=False)
    sandbox3.hosts[1].start_nginx()
    assert result.returncode == 1
    assert "no host switches" in result.stderr and "put back" in result.stderr, result.stderr
    assert serving(blog) == before
    settings = blog.settings()
    for host in sandbox3.hosts:
        assert "max-age=600" not in host.local_path(settings.vhost_file).read_text()


def test_a_host_added_later_joins_without_a_new_order_and_rollback_moves_all(make_blog3, sandbox3):
    blog = make_blog3("group-join", own_names=True)
    blog.build()
    two = [h.ssh_target for h in sandbox3.hosts[:2]]
    conf = blog.path / "sandboxconf.py"
    base = conf.read_text()
    conf.write_text(base + f"\nDEPLOY_HOSTS = {two!r}\n")
    first = blog.fab("deploy")
    assert len(re.findall(r"order https://", first.stderr)) == 1
    conf.write_text(base)  # all three hosts
    (blog.path / "output" / "index.html").write_text("<p>version two</p>")
    joined = blog.fab("deploy")
    assert "order https://" not in joined.stderr, joined.stderr
    assert "copied from" in joined.stderr
    seen = serving(blog)
    assert len({(release, serial) for release, serial, _ in seen}) == 1 and all(b"version two" in b for *_, b in seen)

    rolled = blog.fab("rollback", check=False)
    # The third host has only the second release: a rollback to the first cannot move every host, so none moves.
    assert rolled.returncode == 1 and sandbox3.hosts[2].ssh_target in rolled.stderr, rolled.stderr
    assert serving(blog) == seen
    (blog.path / "output" / "index.html").write_text("<p>version three</p>")
    blog.fab("deploy")
    back = blog.fab("rollback")
    assert "is live" in back.stdout
    after = serving(blog)
    assert len({release for release, _, _ in after}) == 1 and all(b"version two" in b for *_, b in after)


def test_a_deploy_killed_during_the_commit_is_brought_to_one_release_everywhere(make_blog3, sandbox3, tmp_path):
    """SIGKILL to `fab deploy` once the commit has started on the hosts: whatever each host was
    left with, the next deploy undoes or finishes it, and every host ends on the same release."""
    blog = deployed(make_blog3, "group-kill")
    settings = blog.settings()
    blog.configure(DEPLOY_HSTS_MAX_AGE=600)  # vhost and release both change: a reload on every host
    (blog.path / "output" / "index.html").write_text("<p>the new site</p>")
    journals = [host.local_path(settings.state_dir) / "commit.journal" for host in sandbox3.hosts]
    fab = Path(sys.executable).with_name("fab")
    with open(tmp_path / "killed.log", "wb") as err:
        proc = subprocess.Popen([str(fab), "deploy", "--settings", "sandboxconf.py"], cwd=blog.path, env=blog.env,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not any(j.exists() for j in journals) and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert proc.poll() is None, "the deploy ended before it could be killed:\n" + (tmp_path / "killed.log").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for_commit_scripts()
    left = [host.ssh_target for host, journal in zip(sandbox3.hosts, journals) if journal.exists()]
    assert left, "no host kept its journal: the kill came too late to test anything"

    result = blog.fab("deploy")
    assert "is live" in result.stdout
    assert "an earlier deploy was interrupted on " + ", ".join(left) in result.stderr, result.stderr
    seen = serving(blog)
    assert len({(release, serial) for release, serial, _ in seen}) == 1, seen
    assert all(body == b"<p>the new site</p>" for *_, body in seen)
    for host, journal in zip(sandbox3.hosts, journals):
        assert not journal.exists(), host.ssh_target
        assert "max-age=600" in host.local_path(settings.vhost_file).read_text()


def test_a_finish_failing_on_one_host_after_verification_never_undoes_the_verified_site(make_blog3, sandbox3):
    """The site was verified on every host, then `finish` fails on the second (its state folder is
    read-only in that moment): its journal, marked verified, stays. The next run, a `fab renew`
    that switches nothing, must keep the verified release there, not put the old one back."""
    blog = deployed(make_blog3, "group-finish")
    settings = blog.settings()
    (blog.path / "output" / "index.html").write_text("<p>verified</p>")
    second = sandbox3.hosts[1]
    state = second.local_path(settings.state_dir)
    mode = stat.S_IMODE(state.stat().st_mode)
    try:
        with pytest.raises(DeployError) as failed:
            pipeline.deploy(settings, progress=FaultAt("finishing", lambda: state.chmod(0o555)))
    finally:
        state.chmod(mode)
    message = str(failed.value)
    assert f"finishing failed on {second.ssh_target}" in message, message
    assert "live and verified on every host" in message and f"pruning old releases did not run on {second.ssh_target}" in message
    assert "the next deploy finishes it" in message, message
    assert "verified=yes" in (state / "commit.journal").read_text()
    verified = serving(blog)
    assert len({(release, serial) for release, serial, _ in verified}) == 1
    assert all(body == b"<p>verified</p>" for *_, body in verified)

    renewed = blog.fab("renew")
    assert "its verified commit is kept and finished" in renewed.stderr, renewed.stderr
    assert "putting the previous site back" not in renewed.stderr
    assert serving(blog) == verified
    assert not (state / "commit.journal").exists()


def drop_ssh_sessions(host) -> None:
    """Cut every SSH connection to ``host`` as a network failure does: its sshd's per-connection
    processes die (the listener goes on, so the next deploy connects)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    doomed, todo = [], list(children.get(host.pids["sshd"], []))
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo += children.get(pid, [])
    assert doomed, "no SSH session to drop"
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_connection_dropping_during_the_commit_names_that_host_unknown_and_puts_the_others_back(make_blog3, sandbox3):
    blog = deployed(make_blog3, "group-drop")
    before = serving(blog)
    settings = blog.settings()
    (blog.path / "output" / "index.html").write_text("<p>the next site</p>")
    second = sandbox3.hosts[1]
    with pytest.raises(DeployError) as failed:
        pipeline.deploy(settings, progress=FaultAt("committing", lambda: drop_ssh_sessions(second)))
    message = str(failed.value)
    assert "every host serves what it served before" not in message, message
    assert f"putting it back failed on {second.ssh_target}: what it serves is unknown" in message, message
    assert f"{second.ssh_target}: failed: " in message and "State unknown, its journal kept" in message, message
    for host in (sandbox3.hosts[0], sandbox3.hosts[2]):
        assert f"{host.ssh_target}: switched; put back" in message, message
    assert "`fab deploy` again" in message
    assert serving(blog) == before  # the commit never reached the second host; the others went back
    result = blog.fab("deploy")
    seen = serving(blog)
    assert "is live" in result.stdout
    assert len({(release, serial) for release, serial, _ in seen}) == 1 and all(b == b"<p>the next site</p>" for *_, b in seen)


def test_an_interrupted_deploy_that_cannot_be_put_back_names_each_hosts_state(make_blog3, sandbox3):
    """The deploy dies during verification (journals left, not verified); the next one must put
    every host back first, but the second host's nginx is down: it says where each host stands
    and what to do, never that nothing went live."""
    blog = deployed(make_blog3, "group-stuck")
    settings = blog.settings()
    blog.configure(DEPLOY_HSTS_MAX_AGE=600)  # a new vhost: putting it back reloads nginx
    (blog.path / "output" / "index.html").write_text("<p>the next site</p>")

    def die() -> None:
        raise SystemExit("killed by the test")
    with pytest.raises(SystemExit):
        pipeline.deploy(blog.settings(), progress=FaultAt("verifying the site", die))
    second = sandbox3.hosts[1]
    second.stop_nginx()
    result = blog.fab("deploy", check=False)
    second.start_nginx()
    assert result.returncode == 1
    message = result.stderr[result.stderr.index("error: "):]
    assert "an earlier deploy was interrupted, and what it left could not be put back everywhere" in message, message
    assert f"{second.ssh_target}: putting it back failed: " in message and "what it serves is unknown" in message, message
    for host in (sandbox3.hosts[0], sandbox3.hosts[2]):
        assert f"{host.ssh_target}: put back: serves what it served before the interrupted deploy" in message, message
    assert "then `fab deploy` again" in message and "`fab rollback`" in message, message
    assert "Nothing went live" not in message, message
    assert (second.local_path(settings.state_dir) / "commit.journal").exists()
    again = blog.fab("deploy")
    assert "is live" in again.stdout
    seen = serving(blog)
    assert len({(release, serial) for release, serial, _ in seen}) == 1 and all(b == b"<p>the next site</p>" for *_, b in seen)
    for host in sandbox3.hosts:
        assert "max-age=600" in host.local_path(settings.vhost_file).read_text()


def test_a_verification_failing_on_one_host_puts_every_host_back(make_blog3, sandbox3):
    """After the commit, the third host's new release loses its index.html (the hook): only its
    verification fails, and every host goes back, the two verified ones too."""
    blog = deployed(make_blog3, "group-verify")
    before = serving(blog)
    settings = blog.settings()
    (blog.path / "output" / "index.html").write_text("<p>must not stay live</p>")
    third = sandbox3.hosts[2]
    releases_before = [sorted(os.listdir(h.local_path(settings.releases_dir))) for h in sandbox3.hosts]
    with pytest.raises(DeployError) as failed:
        pipeline.deploy(settings, progress=FaultAt("verifying the site",
                                                   lambda: (third.local_path(settings.current_link) / "index.html").unlink()))
    message = str(failed.value)
    assert message.startswith(f"the site at {third.address} does not answer as deployed: "), message
    assert "put back: every host serves what it served before" in message, message
    assert serving(blog) == before
    assert [sorted(os.listdir(h.local_path(settings.releases_dir))) for h in sandbox3.hosts] == releases_before
    for host in sandbox3.hosts:
        assert not (host.local_path(settings.state_dir) / "commit.journal").exists(), host.ssh_target


def test_a_lock_held_on_a_host_that_is_not_first_waits_then_fails_naming_it(make_blog3, sandbox3):
    from deploy.connection import connect_all
    from deploy.lock import HostLock
    blog = deployed(make_blog3, "group-lock")
    before = serving(blog)
    blog.configure(DEPLOY_LOCK_TIMEOUT=1)
    settings = blog.settings()
    (blog.path / "output" / "index.html").write_text("<p>must not go live</p>")
    second = sandbox3.hosts[1]
    releases_before = [sorted(os.listdir(h.local_path(settings.releases_dir))) for h in sandbox3.hosts]
    servers = connect_all(settings)
    try:
        holder = HostLock(list(servers)[1], settings)  # another deploy holds the second host's lock only
        holder.acquire(lambda host, who: None)
        result = blog.fab("deploy", check=False)
        holder.release()
    finally:
        servers.close()
    assert result.returncode == 1
    message = result.stderr[result.stderr.index("error: "):]
    assert f"[{second.ssh_target}] waiting up to 1 s for the deploy lock held by host=" in result.stderr, result.stderr
    assert f"another deploy holds the lock on {second.ssh_target} (" in message, message
    assert f"pid={os.getpid()} " in message and "Nothing was changed" in message, message
    assert serving(blog) == before
    assert [sorted(os.listdir(h.local_path(settings.releases_dir))) for h in sandbox3.hosts] == releases_before
    # The first host's lock, taken before the wait, was freed: the same deploy now goes through.
    assert "is live" in blog.fab("deploy").stdout
