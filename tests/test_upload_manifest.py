"""Pure parts of the release upload: manifests, the diff, the release check, ids, scripts. No server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import shlex
import subprocess
import threading

import pytest

from deploy import lock, upload
from deploy import manifest as mf
from deploy.errors import UploadError
from deploy.settings import settings_from_mapping

F, D, L = mf.FILE, mf.DIR, mf.LINK


def f(path, digest="aa", size=1):
    return mf.Entry(path, F, 0o644, size, digest)


def d(path):
    return mf.Entry(path, D, 0o755)


def link(path, target):
    return mf.Entry(path, L, 0o777, 0, target)


def m(*entries):
    return {e.path: e for e in entries}


# --- diff -------------------------------------------------------------------------------------

DIFF_CASES = [
    # (old, new, new paths, changed paths, deleted paths, unchanged, removed files, new dirs)
    ("first deploy", None, m(f("a"), d("s"), f("s/b")), ["a", "s/b"], [], [], 0, 0, ["s"]),
    ("nothing changed", m(f("a"), d("s"), f("s/b")), m(f("a"), d("s"), f("s/b")), [], [], [], 2, 0, []),
    ("one changed", m(f("a"), f("b")), m(f("a", "bb"), f("b")), [], ["a"], [], 1, 0, []),
    ("size only", m(f("a")), m(f("a", size=2)), [], ["a"], [], 0, 0, []),
    ("mode change", m(f("a")), m(mf.Entry("a", F, 0o755, 1, "aa")), [], ["a"], [], 0, 0, []),
    ("one added", m(f("a")), m(f("a"), f("b")), ["b"], [], [], 1, 0, []),
    ("one deleted", m(f("a"), f("b")), m(f("a")), [], [], ["b"], 1, 1, []),
    ("folder deleted: only the top is listed", m(f("a"), d("s"), d("s/t"), f("s/t/x"), f("s/y")), m(f("a")),
     [], [], ["s"], 1, 2, []),
    ("sibling names that share a prefix", m(d("s"), f("s/x"), f("s b")), m(f("s b")), [], [], ["s"], 1, 1, []),
    ("file becomes folder", m(f("a")), m(d("a"), f("a/x")), ["a/x"], [], ["a"], 0, 0, ["a"]),
    ("folder becomes file", m(d("a"), f("a/x")), m(f("a")), [], ["a"], ["a"], 0, 1, []),
    ("link target changed", m(link("l", "a")), m(link("l", "b")), [], ["l"], [], 0, 0, []),
    ("file becomes link", m(f("l")), m(link("l", "a")), [], ["l"], ["l"], 0, 0, []),
]


@pytest.mark.parametrize("name,old,new,added,changed,deleted,unchanged,removed,new_dirs", DIFF_CASES, ids=[c[0] for c in DIFF_CASES])
def test_diff(name, old, new, added, changed, deleted, unchanged, removed, new_dirs):
    plan = mf.diff(old, new)
    assert [e.path for e in plan.new] == added
    assert [e.path for e in plan.changed] == changed
    assert list(plan.deleted) == deleted
    assert plan.unchanged == unchanged
    assert plan.removed_files == removed
    assert [e.path for e in plan.new_dirs] == new_dirs
    assert plan.nothing_changed == (name == "nothing changed")


# --- symlinks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel,target,ok", [
    ("a", "b", True),
    ("s/a", "../b", True),
    ("s/t/a", "../../b", True),
    ("s/a", "../../b", False),
    ("a", "../b", False),
    ("a", "/etc/passwd", False),
    ("a", "", False),
    ("s/a", "./../s/../../x", False),
    ("s/a", "x/../../s/y", True),
])
def test_symlink_problem(rel, target, ok):
    assert (mf.symlink_problem(rel, target) is None) == ok


def test_scan_refuses_a_symlink_out_of_the_output(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    (out / "index.html").write_text("hi")
    (tmp_path / "secret").write_text("s")
    (out / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(UploadError, match="leak.*is a symlink to .*secret.*refusing"):
        mf.scan_output(out)
    (out / "leak").unlink()
    (out / "leak").symlink_to("../secret")
    with pytest.raises(UploadError, match="outside the output folder"):
        mf.scan_output(out)


def test_scan_records_names_modes_sizes_hashes_and_inside_links(tmp_path):
    out = tmp_path / "output"
    (out / "sub dir").mkdir(parents=True)
    (out / "index.html").write_bytes(b"<h1>hi</h1>")
    weird = ["a b.html", "quote'\".html", "new\nline.html", "caf\u00e9 \u65e5\u672c.html", "-dash.html", "back\\slash.html"]
    for name in weird:
        (out / "sub dir" / name).write_text(name)
    os.chmod(out / "index.html", 0o600)  # local modes do not matter: served files are 0644
    (out / "alias.html").symlink_to("index.html")
    entries = mf.scan_output(out)
    assert entries["index.html"] == mf.Entry("index.html", F, 0o644, 11, hashlib.sha256(b"<h1>hi</h1>").hexdigest())
    assert entries["sub dir"] == mf.Entry("sub dir", D, 0o755)
    assert entries["alias.html"] == mf.Entry("alias.html", L, 0o777, 0, "index.html")
    for name in weird:
        assert entries[f"sub dir/{name}"].size == len(name.encode())


@pytest.mark.parametrize("size", [0, 1, 65536, (1 << 20) + 7, 3 << 20])
def test_scan_hashes_files_of_any_size_whole(tmp_path, size):
    out = tmp_path / "output"
    out.mkdir()
    (out / "index.html").write_bytes(b"i")
    data = os.urandom(size)
    (out / "f.bin").write_bytes(data)
    entry = mf.scan_output(out)["f.bin"]
    assert (entry.size, entry.digest) == (size, hashlib.sha256(data).hexdigest())


def test_the_background_scan_yields_the_cpu_only_in_its_own_thread(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    (out / "index.html").write_bytes(b"i")
    seen, original = {}, mf.scan_output

    def scan_then_look(output):
        result = original(output)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return result

    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mf, "scan_output", scan_then_look)
        local = upload.start_scan(settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5",
                                                         "DEPLOY_USER": "d", "DEPLOY_OUTPUT_PATH": str(out),
                                                         "DEPLOY_KNOWN_HOSTS": str(tmp_path / "kh")})).result()
    assert local.entries == original(out)
    assert local.dumped == mf.dump(local.entries) and local.listing_digest == mf.listing_digest(local.entries)
    assert seen["nice"] >= upload.SCAN_NICENESS  # (Linux: nice values are per thread)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice


def test_scan_needs_an_index(tmp_path):
    with pytest.raises(UploadError, match="no index.html: build the site first"):
        mf.scan_output(tmp_path)


# --- storing manifests ------------------------------------------------------------------------

def test_manifest_round_trips_any_name():
    names = ["a", "sp ace", "new\nline", "caf\u00e9", os.fsdecode(b"latin1-\xe9"), "back\\slash", "q'\""]
    entries = m(*(f(n, digest=str(i), size=i) for i, n in enumerate(names)), d("dir"), link("l", "a"))
    assert mf.load(mf.dump(entries)) == entries


@pytest.mark.parametrize("data", [b"", b"garbage", mf.dump({})[:10], __import__("gzip").compress(b'{"format": 99, "entries": []}'),
                                  __import__("gzip").compress(b'{"format": 1, "entries": [["a", "x", 1, 1, ""]]}')])
def test_unreadable_manifest_means_full_upload(data):
    assert mf.load(data) is None


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.", "a/", "", "a\0b"])
def test_a_manifest_naming_a_path_outside_the_release_means_full_upload(path):
    # Its paths become deletions on the server (diff): "../x" must never be one.
    stored = mf.dump(m(f("index.html"), f("ok/b")))
    tampered = __import__("gzip").compress(__import__("gzip").decompress(stored).replace(b'"ok/b"', json.dumps(path).encode()))
    assert mf.load(stored) is not None and mf.load(tampered) is None
    assert mf.is_release_path("ok/b") and mf.is_release_path("..a/b..") and not mf.is_release_path(path)


# --- checking a built release -----------------------------------------------------------------------

def listing_bytes(rows):
    return b"".join(b"\0".join([k.encode(), f"{mode:o}".encode(), str(size).encode(), os.fsencode(target), os.fsencode(path)]) + b"\0"
                    for k, mode, size, target, path in rows)


EXPECTED = m(f("a", "h1", 3), d("s"), f("s/b b", "h2", 4), link("l", "a"))
GOOD_LISTING = [("f", 0o644, 3, "", "a"), ("d", 0o755, 4096, "", "s"), ("f", 0o644, 4, "", "s/b b"), ("l", 0o777, 1, "a", "l")]


@pytest.mark.parametrize("listing,problem", [
    (GOOD_LISTING, None),
    (GOOD_LISTING[:-1], "missing: 'l'"),
    (GOOD_LISTING + [("f", 0o644, 1, "", "extra")], "unexpected: 'extra'"),
    ([("f", 0o600, 3, "", "a")] + GOOD_LISTING[1:], "'a' has mode 600, expected 644"),
    ([("f", 0o644, 2, "", "a")] + GOOD_LISTING[1:], "'a' has 2 bytes, expected 3"),
    ([("d", 0o755, 0, "", "a")] + GOOD_LISTING[1:], "'a' is a folder, expected a file"),
    (GOOD_LISTING[:-1] + [("l", 0o777, 1, "/etc", "l")], "'l' points to '/etc', expected 'a'"),
    (GOOD_LISTING[:-1] + [("f", 0o644, 1, "", "l")], "'l' is a file, expected a symlink"),
])
def test_check_release(listing, problem):
    problems = mf.check_release(EXPECTED, mf.parse_listing(listing_bytes(listing)))
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_parse_listing_handles_newlines_and_spaces_in_names():
    parsed = mf.parse_listing(listing_bytes([("f", 0o644, 5, "", "new\nline x"), ("l", 0o777, 3, "a b", "l k")]))
    assert parsed == {"new\nline x": ("f", 0o644, 5, ""), "l k": ("l", 0o777, 3, "a b")}
    with pytest.raises(UploadError, match="truncated"):
        mf.parse_listing(b"f\0644\0")


# --- release ids ----------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 27, 9, 5, 0, 123456, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("existing,expected", [
    ([], "20261127T090500123456Z"),
    (["20261127T090000000000Z", "junk", "20261127T090500123456Z.partial"], "20261127T090500123456Z"),
    # This machine's clock is behind the one that made the last release: still sorts after it.
    (["20261201T000000000000Z"], "20261201T000000000001Z"),
    (["20261127T090500123456Z"], "20261127T090500123457Z"),
])
def test_next_release_id_sorts_after_every_release(existing, expected):
    assert mf.next_release_id(NOW, existing) == expected
    assert mf.RELEASE_ID.fullmatch(expected)


def test_release_time():
    assert mf.release_time("20261127T090500123456Z") == NOW


# --- rollback and listing -----------------------------------------------------------------------------------

def infos(*ids, live=None):
    return [upload.ReleaseInfo(i, mf.release_time(i), 0, i == live) for i in ids]


A, B, C = "20261101T000000000000Z", "20261102T000000000000Z", "20261103T000000000000Z"


@pytest.mark.parametrize("releases,to,expected", [
    (infos(A, B, C, live=C), None, B),
    (infos(A, B, C, live=B), None, A),
    (infos(A, B, C, live=C), A, A),
    (infos(A, B, C, live=A), C, C),  # roll forward again
    (infos(A, B, C, live=A), None, "nothing older"),
    (infos(A, B, C, live=C), C, "already live"),
    (infos(A, B, live=B), "20990101T000000000000Z", "there is no release"),
    (infos(A, B), None, "no release is live"),
])
def test_rollback_target(releases, to, expected):
    if mf.RELEASE_ID.fullmatch(expected):
        assert upload.rollback_target(releases, to) == expected
    else:
        with pytest.raises(UploadError, match=expected):
            upload.rollback_target(releases, to)


def test_parse_release_list():
    text = f"current releases/{B}\n123\t{A}\n456\t{B}\n7\tjunk\n"
    assert upload.parse_release_list(text) == [
        upload.ReleaseInfo(A, mf.release_time(A), 123, False), upload.ReleaseInfo(B, mf.release_time(B), 456, True)]


def test_parse_probe():
    manifest = mf.dump(m(f("a")))
    data = (f"zstd yes\ncurrent {B}\nreleases {A} {A}.manifest {B} {B}.manifest x.partial\nmanifest\n").encode() + manifest
    state = upload.parse_probe(data)
    assert state == upload.ServerState(True, B, (A, B), manifest)
    assert state.manifest == m(f("a"))
    assert upload.parse_probe(b"zstd no\ncurrent \nreleases\nmanifest none\n") == upload.ServerState(False, None, (), None)
    # `current` pointing at something this tool did not make: never linked from.
    assert upload.parse_probe(b"zstd no\ncurrent elsewhere\nreleases\nmanifest none\n").current is None
    with pytest.raises(UploadError, match="cannot read the server's release state"):
        upload.parse_probe(b"zstd no\ncurrent \n")


# --- the scripts quote everything -------------------------------------------------------------------------------

@pytest.fixture
def settings(tmp_path):
    return settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy",
                                  "DEPLOY_REMOTE_ROOT": "/srv/www/my site".replace(" ", "_"), "DEPLOY_KNOWN_HOSTS": str(tmp_path / "kh")})


def test_stage_script_and_header_take_only_release_ids(settings):
    with pytest.raises(UploadError):
        upload.stage_script(settings, "x; rm -rf /", "gzip -dc")
    with pytest.raises(UploadError):
        upload.stage_header(0, 0, 0, "../etc", False, "0" * 64)
    digest = "0123456789abcdef" * 4
    assert upload.stage_header(1, 2, 3, A, True, digest) == f"1 2 3 {A} 1 {digest}\n".encode()
    assert upload.stage_header(0, 0, 0, None, False, digest) == f"0 0 0 - 0 {digest}\n".encode()
    with pytest.raises(UploadError, match="bad listing digest"):
        upload.stage_header(0, 0, 0, None, False, "$(reboot)")
    script = upload.stage_script(settings, B, "zstd -dcq")
    assert f'cp -al -- "$base"/. {B}.partial/' in script and f'mv -T .next-"$base" {B}.partial' in script
    assert 'head -c "$n_plain" | tar -x -p --no-same-owner -f -' in script
    with pytest.raises(UploadError):
        upload.switch_script(settings, "../../etc")


def test_lock_script_quotes_the_holder_and_names_the_lock(settings):
    holder = lock.holder_info("rel'; rm -rf /")
    assert "\n" not in holder
    script = lock.lock_script(settings, holder, 7)
    assert shlex.quote(holder) in script
    assert f"flock -w 7 9" in script
    assert str(settings.lock_file) in script


def test_holder_info_names_host_pid_and_time():
    info = lock.holder_info("R1", NOW)
    assert f"pid={os.getpid()}" in info and "since=2026-11-27T09:05:00Z" in info and "release=R1" in info
    assert "host=" in info


def test_listing_digest_equals_what_gnu_find_hashes_on_the_server(tmp_path):
    """The server hashes ``CANONICAL_FIND | LC_ALL=C sort -z | sha256sum`` (GNU find, as on the server);
    the client computes the same digest from the manifest alone. Odd names included."""
    out = tmp_path / "out"
    (out / "sub dir" / "deeper").mkdir(parents=True)
    (out / "index.html").write_text("<p>hi</p>")
    names = ["sp ace.html", "new\nline.txt", "caf\u00e9 \u65e5\u672c.html", "-dash", "q'\"s", "back\\slash", "a//b".replace("//", "_")]
    for i, name in enumerate(names):
        (out / "sub dir" / name).write_bytes(b"x" * i)
    (out / os.fsdecode(b"latin1-\xe9.html")).write_bytes(b"latin-1 name")
    (out / "sub dir" / "deeper" / "z").write_bytes(b"")
    (out / "link").symlink_to("sub dir/sp ace.html")
    for path in [out, *out.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    local = mf.scan_output(out)
    server = subprocess.run(f"cd {shlex.quote(str(out))} && {mf.CANONICAL_FIND} | LC_ALL=C sort -z | sha256sum",
                            shell=True, capture_output=True, check=True).stdout.split()[0].decode()
    assert mf.listing_digest(local) == server
    # Anything the check covers changes the digest: a mode, a size, a link target, an extra entry.
    changed = dict(local)
    for path, entry in [("index.html", local["index.html"]._replace(mode=0o600)),
                        ("index.html", local["index.html"]._replace(size=1)),
                        ("link", local["link"]._replace(digest="index.html")),
                        ("extra", mf.Entry("extra", mf.FILE, 0o644, 0, ""))]:
        assert mf.listing_digest(changed | {path: entry}) != server


def test_a_few_changed_files_go_by_gzip_in_process_and_more_by_zstd_where_both_sides_have_it():
    assert upload._compression(True, upload.SMALL_UPLOAD - 1) == "gzip"
    assert upload._compression(True, upload.SMALL_UPLOAD) == ("zstd" if shutil.which("zstd") else "gzip")
    assert upload._compression(False, 10 * upload.SMALL_UPLOAD) == "gzip"
