"""Pure parts of the release upload: manifests, the diff, the release check, ids, the rollback target,
the server state and release list as read, the tar that travels. No server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import io
import os
import subprocess
import tarfile

import pytest

from deploy import lock, upload
from deploy import manifest as mf
from deploy import state as host_state
from deploy.errors import DeployError, UploadError
from deploy.releases import ReleaseInfo, list_releases, rollback_target
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


def test_scan_prepares_what_the_upload_sends_and_expects(tmp_path):
    """upload.scan: the entries, their stored form and the listing digest, all computed before the lock."""
    out = tmp_path / "output"
    out.mkdir()
    (out / "index.html").write_bytes(b"i")
    (out / "sub").mkdir()
    (out / "sub" / "a.css").write_bytes(b"a{}")
    local = upload.scan(settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5",
                                               "DEPLOY_USER": "d", "DEPLOY_OUTPUT_PATH": str(out),
                                               "DEPLOY_KNOWN_HOSTS": str(tmp_path / "kh")}))
    assert local.entries == mf.scan_output(out)
    assert local.dumped == mf.dump(local.entries) and local.listing_digest == mf.listing_digest(local.entries)
    assert mf.load(local.dumped) == local.entries


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
    return [ReleaseInfo(i, mf.release_time(i), 0, i == live) for i in ids]


A, B, C = "20261101T000000000000Z", "20261102T000000000000Z", "20261103T000000000000Z"


@pytest.mark.parametrize("releases,to,expected", [
    (infos(A, B, C, live=C), None, B),
    (infos(A, B, C, live=B), None, A),
    (infos(A, B, C, live=C), A, A),
    (infos(A, B, C, live=A), C, C),  # roll forward again
    (infos(A, B, C, live=A), None, "no release older than the live one"),
    (infos(A, B, live=B), "20990101T000000000000Z", "release 20990101T000000000000Z is not on one"),
])
def test_rollback_target(releases, to, expected):
    per_host = {"one": releases}  # hosts are any hashable keys
    if mf.RELEASE_ID.fullmatch(expected):
        assert rollback_target(per_host, to) == expected
    else:
        with pytest.raises(DeployError, match=expected):
            rollback_target(per_host, to)


def test_rollback_target_is_one_release_every_host_has():
    """Every host switches to the same release: the target is chosen on the first host and must be on all."""
    both = {"one": infos(A, B, C, live=C), "two": infos(A, B, C, live=C)}
    assert rollback_target(both, None) == B
    lacking = {"one": infos(A, B, C, live=C), "two": infos(A, C, live=C), "three": infos(C, live=C)}
    with pytest.raises(DeployError, match=f"release {B} is not on two, three; nothing was changed"):
        rollback_target(lacking, None)
    assert rollback_target(lacking, C) == C


class ScriptOutput:
    """Stands for a Server: ``script`` returns the given output, as the real script would print it."""

    def __init__(self, out: bytes):
        self.out, self.calls = out, []

    def script(self, name, *args, **kwargs):
        self.calls.append((name, args))
        return self.out


def test_list_releases_reads_ids_sizes_and_the_live_one(settings):
    server = ScriptOutput(f"{A} 123\n{B} 456\njunk 7\n{C}.partial 9\ncurrent {B}\n".encode())
    assert list_releases(server, settings) == [ReleaseInfo(A, mf.release_time(A), 123 * 1024, False),
                                               ReleaseInfo(B, mf.release_time(B), 456 * 1024, True)]
    assert server.calls == [("releases", (str(settings.remote_root),))]
    assert list_releases(ScriptOutput(b""), settings) == []


def sections(**parts: bytes) -> bytes:
    """state.sh's output: its sections (nginx's version first, as the script prints it)."""
    parts = {"nginx": b"nginx version: nginx/1.22.1\n"} | parts
    return b"".join(host_state.MARK + name.replace("_", "-").encode() + b"\n" + body for name, body in parts.items())


def test_state_parse_reads_the_live_release_and_its_manifest():
    manifest = mf.dump(m(f("a")))
    data = sections(current=f"{B}\n".encode(),
                    releases=f"{A}\n{B}\n{C}.partial\n".encode(), vhost=b"", manifest=manifest)
    state = host_state.parse(data)
    assert (state.current, state.releases, state.current_is_link) == (B, (A, B), True)
    assert state.manifest_bytes == manifest and state.manifest == m(f("a"))
    assert (state.live, state.staged, state.journal, state.order_pending) == (None, None, "", False)


def test_state_parse_never_links_from_what_this_tool_did_not_make():
    # `current` pointing at something that is not one of the complete releases: no base for the next one.
    assert host_state.parse(sections(current=b"elsewhere\n", releases=f"{A}\n".encode())).current is None
    assert host_state.parse(sections(current=f"{B}\n".encode(), releases=f"{A}\n".encode())).current is None
    # `current` as a real folder (copied by hand): the deploy refuses to switch it.
    assert host_state.parse(sections(current=b"NOT-A-LINK\n", releases=b"")).current_is_link is False
    # nothing at all (a bare server): nothing live, nothing to undo.
    bare = host_state.parse(sections())
    assert (bare.current, bare.releases, bare.manifest, bare.journal) == (None, (), None, "")


def test_state_parse_reads_what_an_interrupted_deploy_left():
    state = host_state.parse(sections(journal=b"release=releases/x\ncert=\nreload=yes\n", order_pending=b"yes\n"))
    assert state.journal and state.order_pending


# --- what travels: plain arguments and a tar rooted at the releases folder ------------------------------------------

@pytest.fixture
def settings(tmp_path):
    return settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy",
                                  "DEPLOY_REMOTE_ROOT": "/srv/www/my site".replace(" ", "_"), "DEPLOY_KNOWN_HOSTS": str(tmp_path / "kh")})


def test_the_tar_holds_the_manifest_and_only_members_of_the_partial_release(tmp_path):
    out = tmp_path / "output"
    (out / "s").mkdir(parents=True)
    (out / "index.html").write_bytes(b"<p>hi</p>")
    (out / "s" / "q'\"; rm -rf x.html").write_bytes(b"odd")
    (out / "alias.html").symlink_to("index.html")
    local = mf.prepare(mf.scan_output(out))
    chunks = []
    upload.write_tar(out, B, sorted(local.entries.values(), key=lambda e: e.path), local.dumped, chunks.append)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        members = {t.name: t for t in tar.getmembers()}
        assert tar.extractfile(f"{B}.manifest").read() == local.dumped
        assert tar.extractfile(f"{B}.partial/s/q'\"; rm -rf x.html").read() == b"odd"
    assert set(members) == {f"{B}.manifest", f"{B}.partial/index.html", f"{B}.partial/s",
                            f"{B}.partial/s/q'\"; rm -rf x.html", f"{B}.partial/alias.html"}
    assert members[f"{B}.partial/alias.html"].issym() and members[f"{B}.partial/alias.html"].linkname == "index.html"
    assert members[f"{B}.partial/index.html"].mode == 0o644 and members[f"{B}.partial/s"].mode == 0o755


def test_holder_info_is_one_printable_line_naming_host_pid_and_time(monkeypatch):
    monkeypatch.setenv("USER", "me'; rm -rf /\nx")
    info = lock.holder_info(NOW.timestamp())
    assert "\n" not in info and all(0x20 <= ord(c) < 0x7f for c in info)
    assert f"pid={os.getpid()}" in info and "since=2026-11-27T09:05:00Z" in info and "host=" in info


def test_listing_digest_equals_what_gnu_find_hashes_on_the_server(tmp_path):
    """release-unpack.sh hashes the release's listing with GNU find, as on the server; the client
    computes the same digest from the manifest alone. Odd names included. (The folder is made here
    as the release, and the script run on it with an empty tar: it answers MATCHES only when the
    digests agree.)"""
    out = tmp_path / "releases" / "R.partial"
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
    empty_tar = io.BytesIO()
    tarfile.open(fileobj=empty_tar, mode="w").close()

    def unpack(digest: str) -> bytes:
        return subprocess.run(["sh", "deploy/scripts/release-unpack.sh", str(out.parent), "R", digest],
                              input=empty_tar.getvalue(), capture_output=True, check=True).stdout

    changed = dict(local)
    for path, entry in [("index.html", local["index.html"]._replace(mode=0o600)),
                        ("index.html", local["index.html"]._replace(size=1)),
                        ("link", local["link"]._replace(digest="index.html")),
                        ("extra", mf.Entry("extra", mf.FILE, 0o644, 0, ""))]:
        assert unpack(mf.listing_digest(changed | {path: entry})).startswith(b"DIFFERS\n")
    assert unpack(mf.listing_digest(local)) == b"MATCHES\n"

