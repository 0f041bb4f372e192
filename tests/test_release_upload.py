"""The release upload against the real sandbox server (sshd, coreutils, GNU tar, flock).

The library calls here are the ones `fab deploy` makes (see deploy/pipeline.py); the sandbox's
server is this machine, so the tests look at the release folders directly.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shlex
import tarfile
import threading
import time
from pathlib import Path

import pytest

from deploy import lock, upload
from deploy import manifest as mf
from deploy.errors import ConnectionFailed, LockError, RemoteCommandFailed, UploadError
from deploy.remote import Remote
from deploy.settings import settings_from_mapping

WEIRD = ["sp ace.html", "quote'\"s.html", "new\nline.html", "caf\u00e9 \u65e5\u672c.html", "-dash.html", "back\\slash.html", "$(touch pwned).html"]


def write_site(out: Path, version: int) -> None:
    """v1 -> v2: a.html and photo.jpg change, sub/deep goes, b.html comes, the rest stays."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text("<h1>index</h1>" * 50)
    (out / "a.html").write_text(f"<p>a version {version}</p>")
    (out / "img").mkdir(exist_ok=True)
    (out / "img" / "photo.jpg").write_bytes(os.urandom(40_000) if version == 2 else b"\xff\xd8" + bytes(range(256)) * 100)
    (out / "img" / "same.png").write_bytes(b"\x89PNG" + bytes(5000))
    for name in WEIRD:
        (out / name).write_text(f"weird {name!r}")
    if version == 1:
        (out / "sub" / "deep").mkdir(parents=True)
        (out / "sub" / "deep" / "x.html").write_text("x")
        (out / "link.html").symlink_to("a.html")
    else:
        import shutil
        shutil.rmtree(out / "sub", ignore_errors=True)
        (out / "b.html").write_text("<p>b</p>")
        if not (out / "link.html").is_symlink():
            (out / "link.html").symlink_to("a.html")


@pytest.fixture(scope="module")
def site(sandbox, tmp_path_factory):
    work = tmp_path_factory.mktemp("upload")
    values = sandbox.add_site("upload")
    values |= {"SITEURL": "https://upload.example", "DEPLOY_OUTPUT_PATH": str(work / "output"), "DEPLOY_SKIP_UNCHANGED": False}
    return values, work / "output"


def settings_for(site, **extra):
    values, _ = site
    return settings_from_mapping(values | extra)


def publish(settings):
    """The upload part of `fab deploy`: lock (+ probe), stage, check, switch, prune."""
    with Remote(settings) as remote:
        deploy_lock = lock.DeployLock(remote, settings, probe_script=upload.probe_script(settings))
        local = mf.scan_output(settings.output_path)
        with deploy_lock as held:
            staged = upload.deliver(deploy_lock, settings, local)
            if not staged.skipped:
                upload.activate(deploy_lock, settings, staged.release_id, prune=True)
            return staged


def lock_once(settings) -> None:
    """Take the lock and let go: returns once every earlier deploy's background work is done."""
    with Remote(settings) as remote, lock.hold(remote, settings):
        pass


def live(settings) -> Path:
    return Path(settings.current_link).resolve()


def tree(root: Path) -> dict:
    result = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            result[rel] = ("l", os.readlink(path))
        elif path.is_dir():
            result[rel] = ("d",)
        else:
            result[rel] = ("f", path.read_bytes())
    return result


def test_incremental_release_links_unchanged_files_and_never_writes_through_them(site):
    settings = settings_for(site)
    out = settings.output_path
    write_site(out, 1)
    first = publish(settings)
    assert first.plan.unchanged == 0 and len(first.plan.new) == len(WEIRD) + 6
    v1 = live(settings)
    assert v1.name == first.release_id
    assert tree(v1) == tree(out)
    old_a, old_photo = (v1 / "a.html").read_bytes(), (v1 / "img" / "photo.jpg").read_bytes()

    write_site(out, 2)
    second = publish(settings)
    plan = second.plan
    assert sorted(e.path for e in plan.new) == ["b.html"]
    assert sorted(e.path for e in plan.changed) == ["a.html", "img/photo.jpg"]
    assert plan.deleted == ("sub",) and plan.removed_files == 1
    assert plan.unchanged == len(WEIRD) + 3  # index.html, same.png, link.html
    assert "0 new" not in second.summary() and "1 deleted" in second.summary()
    v2 = live(settings)
    assert v2 != v1 and v2.name == second.release_id
    assert tree(v2) == tree(out)
    # Unchanged files are the same inodes (hard links); changed ones are new files, and the
    # previous release still has its own bytes (tar replaced the link, never wrote through it).
    assert (v2 / "index.html").stat().st_ino == (v1 / "index.html").stat().st_ino
    assert (v2 / WEIRD[2]).stat().st_ino == (v1 / WEIRD[2]).stat().st_ino
    assert (v2 / "a.html").stat().st_ino != (v1 / "a.html").stat().st_ino
    assert (v1 / "a.html").read_bytes() == old_a and (v1 / "img" / "photo.jpg").read_bytes() == old_photo
    assert (v1 / "sub" / "deep" / "x.html").exists() and not (v2 / "sub").exists()
    # Served files are readable by nginx's unprivileged workers; nothing is writable by others.
    for path in [v2, *v2.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    # Each release has its manifest beside it (not inside the served folder).
    assert (v2.parent / f"{v2.name}.manifest").is_file() and not list(v2.glob("*.manifest"))
    assert mf.load((v2.parent / f"{v2.name}.manifest").read_bytes()) == mf.scan_output(out)
    assert not list(v2.parent.glob("*.partial*"))
    assert not Path("pwned").exists() and not (v2 / "pwned").exists()


def test_nothing_changed_makes_a_release_of_links_or_nothing_per_setting(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    publish(settings)
    before = live(settings)
    again = publish(settings)
    assert again.plan.nothing_changed and again.plan.upload == ()
    assert live(settings) != before and tree(live(settings)) == tree(before)
    skipping = settings_for(site, DEPLOY_SKIP_UNCHANGED=True)
    kept = live(settings)
    result = publish(skipping)
    assert result.skipped and result.release_id == kept.name
    assert "nothing changed since release" in result.summary()
    assert live(settings) == kept


def test_a_release_changed_by_hand_on_the_server_is_replaced_by_a_full_upload(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    publish(settings)
    # Someone edits the live release in place (it is shared by hard links with older ones).
    (live(settings) / "b.html").write_text("<p>edited on the server, longer than before</p>")
    (out / "a.html").write_text("<p>a version 3</p>")
    staged = publish(settings)
    assert staged.plan.unchanged == 0  # the retry sent everything
    assert tree(live(settings)) == tree(out)


def test_prune_keeps_the_newest_and_the_live_release_by_name(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site, DEPLOY_KEEP_RELEASES=2)
    ids = []
    for n in range(3):
        (out / "a.html").write_text(f"<p>prune {n}</p>")
        ids.append(publish(settings).release_id)
    releases = Path(settings.releases_dir)
    lock_once(settings)  # pruned releases are removed in the background, before the lock is released
    names = sorted(p.name for p in releases.iterdir() if not p.name.startswith("."))
    assert names == [ids[1], f"{ids[1]}.manifest", ids[2], f"{ids[2]}.manifest"]
    # Roll back to the older one, then deploy: the live (older) release is never pruned.
    with Remote(settings) as remote:
        deploy_lock = lock.hold(remote, settings)
        with deploy_lock:
            new, old = upload.rollback(deploy_lock, settings)
    assert (new, old) == (ids[1], ids[2]) and live(settings).name == ids[1]
    (out / "a.html").write_text("<p>prune 3</p>")
    ids.append(publish(settings).release_id)
    lock_once(settings)
    assert sorted(p.name for p in releases.iterdir() if not p.name.startswith(".")) == \
        [ids[2], f"{ids[2]}.manifest", ids[3], f"{ids[3]}.manifest"]
    assert not list(releases.glob(".doomed-*"))
    with Remote(settings) as remote:
        listed = upload.list_releases(remote, settings)
    assert [(r.id, r.live) for r in listed] == [(ids[2], False), (ids[3], True)]
    assert all(r.size > 0 for r in listed)


def test_a_hostile_archive_cannot_write_outside_the_release(site, tmp_path):
    """Our own archives never contain such members; GNU tar on the server must still refuse them."""
    settings = settings_for(site)
    releases = Path(settings.releases_dir)
    marker = f"escape-{os.getpid()}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data=b"x", **kw):
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
        add(f"../{marker}-dotdot")
        add(f"/tmp/{marker}-absolute")
        add(f"a/../../{marker}-inner")
        add("evil", type=tarfile.SYMTYPE, linkname=str(tmp_path))
        add(f"evil/{marker}-through-link")
        add("hard", type=tarfile.LNKTYPE, linkname="/etc/passwd")
    archive = buf.getvalue()
    release_id = upload.new_release_id(p.name for p in releases.iterdir())
    script = upload.stage_script(settings, release_id, "gzip -dc")
    stream = upload.stage_header(0, 0, len(archive), None, False, "0" * 64) + archive
    with Remote(settings) as remote:
        deploy_lock = lock.hold(remote, settings)
        with deploy_lock, pytest.raises(RemoteCommandFailed):
            deploy_lock.run(script, "a hostile upload", body=lambda write: write(stream))
    outside = [releases / f"{marker}-dotdot", Path(f"/tmp/{marker}-absolute"), releases.parent / f"{marker}-inner",
               tmp_path / f"{marker}-through-link", Path(settings.remote_root) / f"{marker}-inner"]
    assert [p for p in outside if p.exists()] == []
    assert Path("/etc/passwd").stat().st_nlink == 1
    # The next deploy removes what was left of it; it was never live.
    assert (releases / f"{release_id}.partial").exists()
    publish(settings)
    assert not list(releases.glob("*.partial*"))


def test_the_second_deploy_waits_for_the_lock_then_fails_naming_the_holder(site):
    settings = settings_for(site, DEPLOY_LOCK_TIMEOUT=1)
    with Remote(settings) as first:
        held = lock.DeployLock(first, settings, release_id="R-first").wait()
        assert f"pid={os.getpid()}" in held.holder
        waits = []
        with Remote(settings) as second:
            with pytest.raises(LockError) as failure:
                lock.DeployLock(second, settings, on_wait=waits.append).wait()
        message = str(failure.value)
        assert "another deploy holds the lock" in message and f"pid={os.getpid()}" in message and "release=R-first" in message
        assert "DEPLOY_LOCK_TIMEOUT" in message
        assert waits and f"pid={os.getpid()}" in waits[0]
    # Released with the connection: the next one gets it (at once, or as soon as the first
    # lock shell has exited), and then the holder file goes.
    with Remote(settings) as third:
        assert "release=" not in lock.DeployLock(third, settings).wait().holder
    holder_file = Path(str(settings.lock_file) + ".holder")
    deadline = time.monotonic() + 10
    while holder_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not holder_file.exists()


def test_the_lock_shell_runs_scripts_under_the_lock_and_never_a_truncated_one(site):
    settings = settings_for(site)
    marker = Path(settings.remote_root) / f"truncated-{os.getpid()}"
    with Remote(settings) as remote:
        deploy_lock = lock.DeployLock(remote, settings)
        odd = "two\nlines 'quoted' $(not run)"
        assert deploy_lock.run(f"printf %s {shlex.quote(odd)}") == odd.encode()
        assert deploy_lock.run("echo out; echo err >&2") == b"out\nerr\n"
        with pytest.raises(RemoteCommandFailed, match="exit 3"):
            deploy_lock.run("echo why >&2; exit 3", what="a test script")
        assert deploy_lock.run("echo still there") == b"still there\n"
        # A script cut short (the client died while sending it) never runs, not even its first line.
        deploy_lock.proc.stdin.write(f"RUN 3 0123abcd\ntouch {shlex.quote(str(marker))}\n".encode())
        deploy_lock.proc.stdin.flush()
        deploy_lock.release()
    lock_once(settings)
    assert not marker.exists()


def test_the_lock_shell_passes_a_scripts_input_exactly_and_stays_in_step(site):
    """The upload's path: a script's input in frames through the lock shell (``run(body=...)``)."""
    settings = settings_for(site)
    data = bytes(range(256)) * (lock.FRAME // 256 * 2 + 7) + b"\nRUN 1 0123abcd\n0\n"  # > 2 frames, no newline at the end
    pieces = [data[i:i + 100_000] for i in range(0, len(data), 100_000)]
    counted = []
    with Remote(settings) as remote:
        deploy_lock = lock.DeployLock(remote, settings)
        assert deploy_lock.run("cat", body=lambda write: [write(p) for p in pieces], sent=counted.append) == data
        assert sum(counted) == len(data) and len(counted) > 1  # several frames
        # A script that reads none of it: the rest is drained, the next command still runs.
        assert deploy_lock.run("echo ignored", body=lambda write: write(data)) == b"ignored\n"
        # A failing one: its stderr, apart from stdout, makes the message.
        with pytest.raises(RemoteCommandFailed, match="(?s)exit 4.*head only.*the reason"):
            deploy_lock.run("head -c 3 >/dev/null; echo head only; echo the reason >&2; exit 4",
                            body=lambda write: write(data))
        assert deploy_lock.run("wc -c", body=lambda write: None) == b"0\n"
        assert deploy_lock.run("echo still there") == b"still there\n"


def test_without_an_ssh_client_the_deploy_says_what_to_install(site, monkeypatch, tmp_path):
    settings = settings_for(site)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `ssh` there
    with Remote(settings) as remote:
        control_dir = Path(remote._dir)
        assert control_dir.is_dir() and control_dir.stat().st_mode & 0o777 == 0o700
        with pytest.raises(ConnectionFailed, match="openssh-client"):
            lock.DeployLock(remote, settings)
    assert not control_dir.exists()


def test_input_cut_short_by_the_client_is_never_taken_for_commands(site):
    """A body that fails mid-way (e.g. a file changed while it was sent) ends the deploy: what it
    sent is never read as a command, and the lock is released."""
    settings = settings_for(site)
    marker = Path(settings.remote_root) / f"injected-{os.getpid()}"
    command = f"\nRUN 1 0123abcd\ntouch {shlex.quote(str(marker))}\n0\n".encode()

    def body(write):
        write(command * (lock.FRAME // len(command) + 1))  # one whole frame goes out
        write(command)
        raise UploadError("changed while it was being uploaded")

    holder_file = Path(str(settings.lock_file) + ".holder")
    with Remote(settings) as remote:
        deploy_lock = lock.DeployLock(remote, settings)
        with pytest.raises(UploadError, match="changed while"):
            deploy_lock.run("cat > /dev/null", body=body)
        with pytest.raises(LockError, match="not held any more"):
            deploy_lock.run("echo too late")
    # The lock shell winds down on its own (it is not cut off): its holder file goes.
    deadline = time.monotonic() + 10
    while holder_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not holder_file.exists()
    lock_once(settings)
    assert not marker.exists()


def test_a_script_that_answers_before_reading_all_its_input_does_not_hang_the_upload(site):
    """Its output is read while its input is written: neither side waits for the other's pipe."""
    settings = settings_for(site)
    answer = []
    with Remote(settings) as remote:
        deploy_lock = lock.DeployLock(remote, settings)
        big = b"x" * (8 << 20)
        worker = threading.Thread(target=lambda: answer.append(deploy_lock.run(
            "head -c 4000000 /dev/zero; wc -c", body=lambda write: write(big))), daemon=True)
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "the upload hung"
        assert answer == [bytes(4_000_000) + b"%d\n" % len(big)]


def test_release_folder_names_that_are_not_releases_do_not_confuse_the_deploy(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    publish(settings)
    odd = Path(settings.releases_dir) / "notes\nfrom the admin"
    odd.write_text("left here by hand")
    try:
        staged = publish(settings)
        assert live(settings).name == staged.release_id and odd.exists()
    finally:
        odd.unlink()


def test_the_next_upload_starts_from_a_copy_made_at_the_last_switch(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    releases = Path(settings.releases_dir)
    first = publish(settings)
    lock_once(settings)  # the copy is made in the background, before the lock is released
    assert sorted(p.name for p in releases.glob(".next-*")) == [f".next-{first.release_id}"]
    copy = releases / f".next-{first.release_id}"
    assert (copy / "index.html").stat().st_ino == (live(settings) / "index.html").stat().st_ino
    (out / "a.html").write_text("<p>from the copy</p>")
    second = publish(settings)
    assert second.plan.unchanged > 0 and tree(live(settings)) == tree(out)
    lock_once(settings)
    assert sorted(p.name for p in releases.glob(".next-*")) == [f".next-{second.release_id}"]
    # A copy that does not match what it claims to be is caught by the check before the switch.
    bogus = releases / f".next-{second.release_id}"
    (bogus / "extra.html").write_text("not in any manifest")
    (out / "a.html").write_text("<p>after a bogus copy</p>")
    third = publish(settings)
    assert third.plan.unchanged == 0  # the retry sent everything
    assert tree(live(settings)) == tree(out) and not (live(settings) / "extra.html").exists()


def test_a_symlink_out_of_the_output_stops_the_deploy_before_anything_is_sent(site):
    out = site[1]
    write_site(out, 2)
    (out / "leak.html").symlink_to("/etc/passwd")
    settings = settings_for(site)
    before = live(settings)
    try:
        with pytest.raises(UploadError, match="leak.html is a symlink to '/etc/passwd'.*refusing"):
            publish(settings)
    finally:
        (out / "leak.html").unlink()
    assert live(settings) == before


def test_a_bad_stream_header_is_refused_before_anything_is_built(site):
    settings = settings_for(site)
    releases = Path(settings.releases_dir)
    release_id = upload.new_release_id()
    script = upload.stage_script(settings, release_id, "gzip -dc")
    with Remote(settings) as remote:
        deploy_lock = lock.hold(remote, settings)
        with deploy_lock:
            for header in [b"1 2 3 ../../etc 0\n", b"1; rm -rf / 0 0 - 0\n", b"0 0 0 - x\n"]:
                with pytest.raises(RemoteCommandFailed, match="bad upload header"):
                    deploy_lock.run(script, "a bad header", body=lambda write: write(header))
            assert not (releases / f"{release_id}.partial").exists()


@pytest.mark.parametrize("has_zstd,gnu_tar", [(False, True), (True, False)], ids=["gzip (server without zstd)", "zstd, no GNU tar here"])
def test_fallbacks_build_the_same_release(site, monkeypatch, has_zstd, gnu_tar):
    out = site[1]
    write_site(out, 2)
    (out / "a.html").write_text(f"<p>fallback {has_zstd} {gnu_tar}</p>")
    settings = settings_for(site)
    if not gnu_tar:
        monkeypatch.setattr(upload, "_gnu_tar", lambda: None)  # as on macOS without gtar: Python's tarfile
    monkeypatch.setattr(upload, "SMALL_UPLOAD", 0)  # zstd even for these few bytes, where the server has it
    with Remote(settings) as remote:
        deploy_lock = lock.DeployLock(remote, settings, probe_script=upload.probe_script(settings))
        local = mf.scan_output(out)
        with deploy_lock as held:
            state = upload.parse_probe(held.probe_output)
            # A full upload (no previous manifest), as the server without zstd would get it.
            state = dataclasses.replace(state, has_zstd=has_zstd, manifest_bytes=None)
            staged = upload.stage_release(deploy_lock, settings, state, local, upload.new_release_id(state.releases))
            upload.activate(deploy_lock, settings, staged.release_id)
    assert staged.compression == ("zstd" if has_zstd else "gzip")
    assert staged.plan.unchanged == 0
    assert tree(live(settings)) == tree(out)
