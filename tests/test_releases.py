"""The release upload against the real sandbox server (sshd, coreutils, GNU tar, flock).

The library calls here are the ones `fab deploy` makes (see deploy/pipeline.py); the sandbox's
server is this machine, so the tests look at the release folders directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy import lock, releases, state, upload
from deploy import manifest as mf
from deploy.connection import connect_all
from deploy.errors import UploadError
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
    """The upload part of `fab deploy` on the real sandbox: lock, state, upload, commit, finish."""
    servers = connect_all(settings)
    try:
        with lock.hold(servers, settings, lambda host, holder: None):
            states = servers.each_or_raise(state.read, settings, stage="state")
            local = upload.scan(settings)
            if settings.skip_unchanged and upload.unchanged(local, list(states.values())):
                return None
            release_id = upload.new_release_id(list(states.values()))
            sent = servers.each_or_raise(lambda s: upload.send_release(s, settings, states[s], local, release_id), stage="upload")
            releases.commit(servers, settings, {s: releases.Change(release_id=release_id) for s in servers})
            releases.finish(servers, settings)
            return next(iter(sent.values()))
    finally:
        servers.close()


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
    assert "1 new, 2 changed, 1 deleted" in second.summary()
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
    # nginx derives ETag and Last-Modified from the mtime: the local one is kept.
    assert int((v2 / "b.html").stat().st_mtime) == int((out / "b.html").stat().st_mtime)


def test_nothing_changed_makes_a_release_of_links_or_nothing_per_setting(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    publish(settings)
    before = live(settings)
    again = publish(settings)
    assert again.plan.nothing_changed and again.plan.upload == () and again.bytes_sent < 20_000
    assert live(settings) != before and tree(live(settings)) == tree(before)
    assert (live(settings) / "index.html").stat().st_ino == (before / "index.html").stat().st_ino
    kept = live(settings)
    assert publish(settings_for(site, DEPLOY_SKIP_UNCHANGED=True)) is None
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
    folder = Path(settings.releases_dir)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [ids[1], f"{ids[1]}.manifest", ids[2], f"{ids[2]}.manifest"]
    # Roll back to the older one, then deploy: the live (older) release is never pruned.
    servers = connect_all(settings)
    try:
        new, old = releases.rollback(servers, settings, None)
        assert (new, old) == (ids[1], ids[2]) and live(settings).name == ids[1]
        (out / "a.html").write_text("<p>prune 3</p>")
        ids.append(publish(settings).release_id)
        assert sorted(p.name for p in folder.iterdir()) == [ids[2], f"{ids[2]}.manifest", ids[3], f"{ids[3]}.manifest"]
        listed = releases.list_releases(servers[0], settings)
    finally:
        servers.close()
    assert [(r.id, r.live) for r in listed] == [(ids[2], False), (ids[3], True)]
    assert all(r.size > 0 for r in listed)


def test_a_symlink_out_of_the_output_stops_the_deploy_before_anything_is_sent(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    publish(settings)
    before = sorted(p.name for p in Path(settings.releases_dir).iterdir())
    (out / "secret.html").symlink_to("/etc/passwd")
    try:
        with pytest.raises(UploadError, match="symlink to '/etc/passwd'"):
            publish(settings)
    finally:
        (out / "secret.html").unlink()
    assert sorted(p.name for p in Path(settings.releases_dir).iterdir()) == before


def test_a_file_that_changes_while_it_is_sent_fails_the_upload_and_leaves_nothing(site):
    out = site[1]
    write_site(out, 2)
    settings = settings_for(site)
    publish(settings)
    before = sorted(p.name for p in Path(settings.releases_dir).iterdir())
    live_before = live(settings)
    (out / "a.html").write_text("<p>as scanned</p>")
    local = upload.scan(settings)
    (out / "a.html").write_text("<p>changed after the scan, longer than it was</p>")
    servers = connect_all(settings)
    try:
        st = state.read(servers[0], settings)
        with pytest.raises(UploadError, match="changed while it was being uploaded"):
            upload.send_release(servers[0], settings, st, local, upload.new_release_id([st]))
    finally:
        servers.close()
    assert sorted(p.name for p in Path(settings.releases_dir).iterdir()) == before  # no .partial left
    assert live(settings) == live_before
