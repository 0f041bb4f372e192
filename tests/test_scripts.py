"""The server scripts (deploy/scripts/*.sh), each run locally against a temporary folder.

No sandbox and no root: every script is run as the server runs it (``sh SCRIPT ARGS``, values as
positional arguments, input on stdin). Where a script runs nginx, the NGINX_WORD arguments name
``fake_nginx`` below instead: it stands in for nginx ONLY in this local tier (it prints what
nginx prints and exits 0 or 1); the sandbox tier (test_faults.py and the end-to-end tests) runs
the real nginx through sudo.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from deploy import manifest as mf
from deploy.upload import write_tar

SCRIPTS = Path(__file__).resolve().parent.parent / "deploy" / "scripts"

OLD_VHOST = b"# the live vhost\nserver { listen 80; }\n"
NEW_VHOST = b"# the new vhost\nserver { listen 443 ssl; }\n"

# Stands in for nginx in this local tier only (the sandbox tier runs the real one).
# Usage as NGINX_WORD...: sh FAKE MODE LOG VHOST; the script under test appends -t or -s reload.
#   MODE ok: -t passes; fail: -t fails as nginx does on a bad directive (only while VHOST holds the
#   new vhost, when VHOST is given: the live one passes, as on a real server); sudo: -t fails as
#   sudo does without its rule; reloadfail: -t passes, -s reload fails (nginx not running).
#   Every call is logged to LOG; unless VHOST is "-", so is VHOST's content at the time of `-t`.
FAKE_NGINX = r"""#!/bin/sh
mode=$1 log=$2 vhost=$3
shift 3
printf 'nginx %s\n' "$*" >> "$log"
if [ "$1" = -t ]; then
    [ "$vhost" = - ] || { printf 'during -t:'; cat "$vhost"; } >> "$log"
    case $mode in
    fail) if [ "$vhost" = - ] || grep -q 'the new vhost' "$vhost"; then
              echo 'nginx: [emerg] unknown directive "bogus" in /etc/nginx/sites-enabled/site.conf:3' >&2
              echo 'nginx: configuration file /etc/nginx/nginx.conf test failed' >&2; exit 1
          fi;;
    sudo) echo 'sudo: a password is required' >&2; exit 1;;
    esac
    echo 'nginx: the configuration file /etc/nginx/nginx.conf syntax is ok' >&2
    echo 'nginx: configuration file /etc/nginx/nginx.conf test is successful' >&2
    exit 0
fi
if [ "$1" = -s ] && [ "$mode" = reloadfail ]; then
    echo 'nginx: [error] invalid PID number "" in "/run/nginx.pid"' >&2; exit 1
fi
exit 0
"""


def run(script: str, *args: str | os.PathLike, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPTS / f"{script}.sh"), *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def nginx(tmp_path):
    """nginx(mode, vhost=None) -> the NGINX_WORD arguments of the stand-in; .calls is its call log."""
    fake = tmp_path / "fake-nginx"
    fake.write_text(FAKE_NGINX)
    log = tmp_path / "nginx-calls.log"
    log.touch()

    class Nginx:
        def __call__(self, mode: str, vhost: Path | None = None) -> list[str]:
            # NGINX_LOCK (any readable file: the stand-in itself), then the NGINX_WORDs.
            return [str(fake), "sh", str(fake), mode, str(log), str(vhost or "-")]

        @property
        def calls(self) -> str:
            return log.read_text()

    nginx = Nginx()
    nginx.log = log
    return nginx


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every path below ``folder``: file bytes, or 'dir', or 'link -> target'."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_bytes()
    return found


# --- release-start.sh ---------------------------------------------------------------------

def make_release(releases: Path, rid: str, files: dict[str, bytes]) -> Path:
    folder = releases / rid
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_release_start_hard_links_the_base_and_deletes_the_listed_paths(tmp_path):
    releases = tmp_path / "releases"
    base = make_release(releases, "R1", {"index.html": b"index", "sub/a.css": b"css", "gone.html": b"gone",
                                         "old/x.txt": b"x"})
    (releases / "R0.partial").mkdir()  # an interrupted deploy's leftover
    (releases / "R0.partial" / "half.jpg").write_bytes(b"half")
    result = run("release-start", releases, "R2", "R1", stdin=b"./gone.html\0./old\0")
    assert result.returncode == 0, result.stderr
    new = releases / "R2.partial"
    assert sorted(p.name for p in releases.iterdir()) == ["R1", "R2.partial"]  # the leftover went first
    assert listing(new) == {"index.html": b"index", "sub": "dir", "sub/a.css": b"css"}
    # Hard links: no byte was copied, and the base is untouched.
    assert (new / "index.html").stat().st_ino == (base / "index.html").stat().st_ino
    assert (new / "sub" / "a.css").stat().st_ino == (base / "sub" / "a.css").stat().st_ino
    assert listing(base)["gone.html"] == b"gone" and listing(base)["old/x.txt"] == b"x"


def test_release_start_deletes_a_path_with_a_newline_as_one_path(tmp_path):
    """The list is NUL-separated because names may hold any other byte: a site that once had
    'new\\nline.txt' (the upload supports such names) must be able to delete it, and a name such as
    'x\\n./index.html' must never delete index.html."""
    releases = tmp_path / "releases"
    make_release(releases, "R1", {"new\nline.txt": b"odd", "x\n./index.html": b"odd too", "index.html": b"index",
                                  "line.txt": b"keep"})
    result = run("release-start", releases, "R2", "R1", stdin=b"./new\nline.txt\0./x\n./index.html\0")
    assert result.returncode == 0, result.stderr
    # ('x\n.' is the folder that held the second odd name: not listed, so kept, now empty.)
    assert listing(releases / "R2.partial") == {"index.html": b"index", "line.txt": b"keep", "x\n.": "dir"}


def test_release_start_without_a_base_makes_an_empty_release(tmp_path):
    releases = tmp_path / "site" / "releases"  # made when missing
    result = run("release-start", releases, "R1")
    assert result.returncode == 0, result.stderr
    assert list(releases.iterdir()) == [releases / "R1.partial"]
    assert not list((releases / "R1.partial").iterdir())
    assert stat.S_IMODE((releases / "R1.partial").stat().st_mode) == 0o755


@pytest.mark.parametrize("bad", [b"gone.html", b"/etc/hostname", b"../R1/index.html"])
def test_release_start_refuses_a_path_not_starting_with_dot_slash(tmp_path, bad):
    releases = tmp_path / "releases"
    base = make_release(releases, "R1", {"index.html": b"index", "gone.html": b"gone"})
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not the release's")
    result = run("release-start", releases, "R2", "R1", stdin=bad + b"\0")
    assert result.returncode != 0
    assert b"refusing to delete " + bad in result.stderr
    assert listing(base) == {"index.html": b"index", "gone.html": b"gone"}
    assert outside.read_bytes() == b"not the release's"


# --- release-unpack.sh --------------------------------------------------------------------

@pytest.fixture
def output(tmp_path) -> Path:
    """A small built site: files, a folder, a symlink, an odd name, an executable file."""
    out = tmp_path / "output"
    (out / "theme" / "css").mkdir(parents=True)
    (out / "index.html").write_text("<p>index</p>")
    (out / "theme" / "css" / "main.css").write_text("body{}")
    (out / "sp ace & caf\u00e9.html").write_text("odd")
    (out / "big.bin").write_bytes(os.urandom(300_000))
    (out / "run.sh").write_text("#!/bin/sh\n")
    (out / "run.sh").chmod(0o755)
    (out / "home.html").symlink_to("index.html")
    return out


def tar_of(output: Path, release_id: str, prepared: mf.Prepared, old: dict | None = None) -> bytes:
    plan = mf.diff(old, prepared.entries)
    members = sorted(plan.upload + plan.new_dirs, key=lambda e: e.path)
    buf = io.BytesIO()
    write_tar(output, release_id, members, prepared.dumped, buf.write)
    return buf.getvalue()


def test_release_unpack_checks_the_release_against_the_manifest_and_completes_it(tmp_path, output):
    releases = tmp_path / "releases"
    rid = "20261207T050000000000Z"
    prepared = mf.prepare(mf.scan_output(output))
    assert run("release-start", releases, rid).returncode == 0
    result = run("release-unpack", releases, rid, prepared.listing_digest, stdin=tar_of(output, rid, prepared))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"MATCHES\n"
    assert sorted(p.name for p in releases.iterdir()) == [rid, f"{rid}.manifest"]
    assert (releases / f"{rid}.manifest").read_bytes() == prepared.dumped
    assert listing(releases / rid) == listing(output)
    # Modes are the manifest's (files 0644, folders 0755), whatever they were locally.
    assert stat.S_IMODE((releases / rid / "run.sh").stat().st_mode) == mf.FILE_MODE
    assert stat.S_IMODE((releases / rid / "theme").stat().st_mode) == mf.DIR_MODE


def test_release_unpack_on_a_hard_linked_base_never_writes_through_to_the_old_release(tmp_path, output):
    releases = tmp_path / "releases"
    r1, r2 = "20261207T050000000000Z", "20261207T050100000000Z"
    first = mf.prepare(mf.scan_output(output))
    run("release-start", releases, r1)
    assert run("release-unpack", releases, r1, first.listing_digest, stdin=tar_of(output, r1, first)).stdout == b"MATCHES\n"
    (output / "index.html").write_text("<p>the new index</p>")
    (output / "sp ace & caf\u00e9.html").unlink()
    second = mf.prepare(mf.scan_output(output))
    plan = mf.diff(first.entries, second.entries)
    deleted = b"".join(os.fsencode("./" + p) + b"\0" for p in plan.deleted)
    assert run("release-start", releases, r2, r1, stdin=deleted).returncode == 0
    result = run("release-unpack", releases, r2, second.listing_digest, stdin=tar_of(output, r2, second, first.entries))
    assert result.stdout == b"MATCHES\n", result.stderr
    assert (releases / r2 / "index.html").read_text() == "<p>the new index</p>"
    assert (releases / r1 / "index.html").read_text() == "<p>index</p>"  # the old release kept its copy
    assert (releases / r2 / "big.bin").stat().st_ino == (releases / r1 / "big.bin").stat().st_ino
    assert (releases / r1 / "sp ace & caf\u00e9.html").exists() and not (releases / r2 / "sp ace & caf\u00e9.html").exists()


def test_release_unpack_says_differs_with_the_listing_and_leaves_the_release_unfinished(tmp_path, output):
    releases = tmp_path / "releases"
    rid = "20261207T050000000000Z"
    prepared = mf.prepare(mf.scan_output(output))
    assert run("release-start", releases, rid).returncode == 0
    # A stray file in the partial release (an edited base, say): the listing no longer matches.
    (releases / f"{rid}.partial" / "stray.html").write_text("not in the manifest")
    result = run("release-unpack", releases, rid, prepared.listing_digest, stdin=tar_of(output, rid, prepared))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"DIFFERS\n")
    problems = mf.check_release(prepared.entries, mf.parse_listing(result.stdout[len(b"DIFFERS\n"):]))
    assert problems == ["unexpected: 'stray.html'"]
    assert (releases / f"{rid}.partial").is_dir() and not (releases / rid).exists()


def test_release_unpack_with_a_tampered_listing_digest_says_differs(tmp_path, output):
    releases = tmp_path / "releases"
    rid = "20261207T050000000000Z"
    prepared = mf.prepare(mf.scan_output(output))
    run("release-start", releases, rid)
    tampered = mf.listing_digest({**prepared.entries, "extra.html": prepared.entries["index.html"]._replace(path="extra.html")})
    result = run("release-unpack", releases, rid, tampered, stdin=tar_of(output, rid, prepared))
    assert result.stdout.startswith(b"DIFFERS\n")
    assert mf.check_release(prepared.entries, mf.parse_listing(result.stdout[len(b"DIFFERS\n"):])) == []
    assert not (releases / rid).exists()


def test_release_unpack_refuses_a_release_that_was_not_started(tmp_path, output):
    releases = tmp_path / "releases"
    releases.mkdir()
    prepared = mf.prepare(mf.scan_output(output))
    result = run("release-unpack", releases, "R9", prepared.listing_digest, stdin=tar_of(output, "R9", prepared))
    assert result.returncode == 1 and b"R9.partial is missing" in result.stderr
    assert not list(releases.iterdir())


# --- release-abort.sh ---------------------------------------------------------------------

def test_release_abort_removes_an_unfinished_or_unswitched_release_but_never_the_live_one(tmp_path):
    root = tmp_path / "site"
    releases = root / "releases"
    for rid in ("R1", "R2", "R3.partial"):
        make_release(releases, rid, {"index.html": rid.encode()})
    for rid in ("R1", "R2"):
        (releases / f"{rid}.manifest").write_bytes(b"manifest")
    (root / "current").symlink_to("releases/R1")
    assert run("release-abort", root, "R1").returncode == 0  # live: kept
    assert run("release-abort", root, "R2").returncode == 0  # complete, never switched to: removed
    assert run("release-abort", root, "R3").returncode == 0  # partial: removed
    assert run("release-abort", root, "R4").returncode == 0  # not there: nothing to do
    assert sorted(p.name for p in releases.iterdir()) == ["R1", "R1.manifest"]
    assert os.readlink(root / "current") == "releases/R1"


# --- commit.sh ----------------------------------------------------------------------------

class Server:
    """A remote root and a state folder as the server has them: releases R1 (live) and R2, certs C1
    (live) and C2 (staged), the live vhost and a tested vhost.conf.next."""

    def __init__(self, tmp: Path):
        self.root, self.state = tmp / "srv", tmp / "state"
        for rid in ("R1", "R2"):
            make_release(self.root / "releases", rid, {"index.html": rid.encode()})
        (self.root / "current").symlink_to("releases/R1")
        for cid in ("C1", "C2"):
            (self.state / "tls" / "certs" / cid).mkdir(parents=True)
            (self.state / "tls" / "certs" / cid / "fullchain.pem").write_text(cid)
        (self.state / "tls" / "live").symlink_to("certs/C1")
        (self.state / "nginx").mkdir()
        self.vhost.write_bytes(OLD_VHOST)
        self.vhost.with_name("vhost.conf.next").write_bytes(NEW_VHOST)

    @property
    def vhost(self) -> Path:
        return self.state / "nginx" / "vhost.conf"

    @property
    def journal(self) -> Path:
        return self.state / "commit.journal"

    def live(self) -> tuple[str, str, bytes]:
        """(current's target, tls/live's target, the vhost's bytes): what visitors get after a reload."""
        return os.readlink(self.root / "current"), os.readlink(self.state / "tls" / "live"), self.vhost.read_bytes()

    def commit(self, action: str, *args: str) -> subprocess.CompletedProcess:
        return run("commit", action, self.root, self.state, *args)


OLD = ("releases/R1", "certs/C1", OLD_VHOST)
NEW = ("releases/R2", "certs/C2", NEW_VHOST)


def test_commit_apply_switches_certificate_vhost_and_release_together_after_a_journal(tmp_path, nginx):
    server = Server(tmp_path)
    result = server.commit("apply", "R2", "C2", "yes", *nginx("ok", vhost=server.vhost))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"committed\n"
    assert server.live() == NEW
    # The journal says what was live before, until `finish` forgets it.
    assert server.journal.read_text() == "release=releases/R1\ncert=certs/C1\nreload=yes\n"
    assert server.vhost.with_name("vhost.conf.committed-prev").read_bytes() == OLD_VHOST
    assert not server.vhost.with_name("vhost.conf.next").exists()
    # One test, of the new vhost, then one reload.
    assert nginx.calls == "nginx -t\nduring -t:" + NEW_VHOST.decode() + "nginx -s reload\n"


def test_commit_apply_with_a_failing_nginx_test_leaves_everything_as_before(tmp_path, nginx):
    server = Server(tmp_path)
    result = server.commit("apply", "R2", "C2", "yes", *nginx("fail", vhost=server.vhost))
    assert result.returncode == 3
    assert b'[emerg] unknown directive "bogus"' in result.stderr
    assert server.live() == OLD
    assert not server.journal.exists()
    assert not server.vhost.with_name("vhost.conf.committed-prev").exists()
    # The new vhost was tested and refused, never reloaded; the live one was tested again and reloaded.
    assert nginx.calls == ("nginx -t\nduring -t:" + NEW_VHOST.decode() +
                           "nginx -t\nduring -t:" + OLD_VHOST.decode() + "nginx -s reload\n")
    assert sorted(p.name for p in (server.root / "releases").iterdir()) == ["R1", "R2"]


@pytest.mark.parametrize(("mode", "status", "said"), [("sudo", 6, b"sudo: a password is required"),
                                                       ("reloadfail", 4, b"invalid PID number")])
def test_commit_apply_when_nginx_may_not_run_or_reload_fails_puts_the_files_back(tmp_path, nginx, mode, status, said):
    server = Server(tmp_path)
    result = server.commit("apply", "R2", "C2", "yes", *nginx(mode))
    assert result.returncode == status
    assert said in result.stderr
    assert server.live() == OLD


def test_commit_undo_after_a_successful_apply_restores_all_three(tmp_path, nginx):
    server = Server(tmp_path)
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    result = server.commit("undo", *nginx("ok", vhost=server.vhost))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"undone\n"
    assert server.live() == OLD
    assert not server.journal.exists()
    assert not server.vhost.with_name("vhost.conf.committed-prev").exists()
    assert nginx.calls.endswith("nginx -t\nduring -t:" + OLD_VHOST.decode() + "nginx -s reload\n")


def test_commit_undo_without_a_journal_changes_nothing(tmp_path, nginx):
    server = Server(tmp_path)
    result = server.commit("undo", *nginx("ok"))
    assert (result.returncode, result.stdout) == (0, b"undone\n")
    assert server.live() == OLD
    assert nginx.calls == ""


def test_commit_of_the_first_deploy_is_undone_to_nothing(tmp_path, nginx):
    server = Server(tmp_path)
    (server.root / "current").unlink()
    (server.state / "tls" / "live").unlink()
    server.vhost.write_bytes(b"")
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    assert server.live() == NEW
    assert server.commit("undo", *nginx("ok")).returncode == 0
    assert not os.path.lexists(server.root / "current") and not os.path.lexists(server.state / "tls" / "live")
    assert server.vhost.read_bytes() == b""


def test_commit_apply_of_a_release_alone_reloads_nothing(tmp_path, nginx):
    """`fab rollback` and content-only deploys: only `current` switches."""
    server = Server(tmp_path)
    result = server.commit("apply", "R2", "", "no", *nginx("fail"))  # nginx is not even run
    assert result.returncode == 0, result.stderr
    assert server.live() == ("releases/R2", "certs/C1", OLD_VHOST)
    assert nginx.calls == ""
    assert server.journal.read_text() == "release=releases/R1\ncert=certs/C1\nreload=no\n"
    assert server.commit("undo", *nginx("fail")).returncode == 0
    assert server.live() == OLD


def test_commit_apply_finds_a_journal_left_by_a_killed_commit_and_undoes_it_first(tmp_path, nginx):
    server = Server(tmp_path)
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    # ...the client was killed here: the journal stays. The next deploy's commit (a release alone):
    result = server.commit("apply", "R1", "", "no", *nginx("ok"))
    assert result.returncode == 0, result.stderr
    assert server.live() == OLD
    assert server.journal.read_text() == "release=releases/R1\ncert=certs/C1\nreload=no\n"


def test_commit_apply_refuses_current_as_a_real_folder(tmp_path, nginx):
    server = Server(tmp_path)
    (server.root / "current").unlink()
    (server.root / "current").mkdir()
    (server.root / "current" / "index.html").write_text("copied by hand")
    result = server.commit("apply", "R2", "C2", "yes", *nginx("ok"))
    assert result.returncode == 7
    assert b"is not a symlink" in result.stderr
    assert (server.root / "current" / "index.html").read_text() == "copied by hand"
    assert os.readlink(server.state / "tls" / "live") == "certs/C1"
    assert server.vhost.read_bytes() == OLD_VHOST
    assert not server.journal.exists() and nginx.calls == ""


def test_commit_finish_forgets_the_journal_and_prunes_by_name_never_the_live_ones(tmp_path, nginx):
    root, state = tmp_path / "srv", tmp_path / "state"
    ids = [f"2026120{d}T050000000000Z" for d in range(1, 6)]  # oldest first
    for rid in ids:
        make_release(root / "releases", rid, {"index.html": rid.encode()})
        (root / "releases" / f"{rid}.manifest").write_bytes(b"m")
        # mtimes in the opposite order: tar restores old mtimes, so only the name may count
        t = time.time() - 86400 * int(rid[7])
        os.utime(root / "releases" / rid, (t, t))
    (root / "releases" / "20261209T050000000000Z.partial").mkdir()  # another deploy's: not ours to prune
    (root / "current").symlink_to(f"releases/{ids[0]}")  # rolled back to the oldest
    certs = [f"2026120{d}T050000000000Z-{d:x}" for d in range(1, 6)]
    for cid in certs:
        (state / "tls" / "certs" / cid).mkdir(parents=True)
    (state / "tls" / "live").symlink_to(f"certs/{certs[1]}")
    (state / "nginx").mkdir()
    (state / "commit.journal").write_text("release=\ncert=\nreload=no\n")
    (state / "nginx" / "vhost.conf.committed-prev").write_text("old")
    result = run("commit", "finish", root, state, "2", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[-1] == "finished"
    assert sorted(line for line in result.stdout.decode().splitlines() if line.startswith("pruned")) == \
        [f"pruned {ids[1]}", f"pruned {ids[2]}"]
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted(
        [ids[0], f"{ids[0]}.manifest", ids[3], f"{ids[3]}.manifest", ids[4], f"{ids[4]}.manifest",
         "20261209T050000000000Z.partial"])
    assert sorted(p.name for p in (state / "tls" / "certs").iterdir()) == sorted([certs[1], certs[3], certs[4]])
    assert not (state / "commit.journal").exists()
    assert not (state / "nginx" / "vhost.conf.committed-prev").exists()


def test_commit_finish_without_numbers_prunes_nothing(tmp_path, nginx):
    server = Server(tmp_path)
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    result = server.commit("finish")
    assert (result.returncode, result.stdout) == (0, b"finished\n")
    assert not server.journal.exists()
    assert server.live() == NEW
    assert sorted(p.name for p in (server.root / "releases").iterdir()) == ["R1", "R2"]
    assert sorted(p.name for p in (server.state / "tls" / "certs").iterdir()) == ["C1", "C2"]


def test_commit_verified_marks_the_journal_and_a_verified_commit_is_never_undone(tmp_path, nginx):
    server = Server(tmp_path)
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    result = server.commit("verified")
    assert (result.returncode, result.stdout) == (0, b"verified\n")
    assert server.journal.read_text() == "release=releases/R1\ncert=certs/C1\nreload=yes\nverified=yes\n"
    # An undo (a deploy that finds the journal, say after `finish` failed) forgets it instead.
    result = server.commit("undo", *nginx("ok"))
    assert (result.returncode, result.stdout) == (0, b"undone\n")
    assert server.live() == NEW
    assert not server.journal.exists()
    assert not server.vhost.with_name("vhost.conf.committed-prev").exists()
    assert "reload" not in nginx.calls.split("nginx -s reload", 1)[1]  # only the apply's reload


def test_commit_apply_keeps_a_verified_commit_it_finds_and_commits_on_top(tmp_path, nginx):
    server = Server(tmp_path)
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    assert server.commit("verified").returncode == 0
    # ...`finish` never ran. The next commit (a release alone) journals the verified state as the one to put back.
    result = server.commit("apply", "R1", "", "no", *nginx("ok"))
    assert result.returncode == 0, result.stderr
    assert server.live() == ("releases/R1", "certs/C2", NEW_VHOST)
    assert server.journal.read_text() == "release=releases/R2\ncert=certs/C2\nreload=no\n"


def test_commit_verified_without_a_journal_changes_nothing(tmp_path):
    server = Server(tmp_path)
    result = server.commit("verified")
    assert (result.returncode, result.stdout) == (0, b"verified\n")
    assert not server.journal.exists()


def test_commit_finish_fails_when_the_journal_cannot_be_removed(tmp_path, nginx):
    server = Server(tmp_path)
    assert server.commit("apply", "R2", "", "no", *nginx("ok")).returncode == 0
    server.journal.unlink()
    server.journal.mkdir()  # rm -f cannot remove it: finish must say so, not claim it finished
    (server.journal / "x").touch()
    result = server.commit("finish")
    assert result.returncode == 1 and b"finished" not in result.stdout


def test_commit_apply_after_a_challenge_path_left_open_closes_it_and_puts_back_the_vhost_before_it(tmp_path, nginx):
    """The order's challenge path could not be closed (vhost.conf.before-order stays): the commit's
    new vhost replaces it, and an undo puts back the vhost from before the order, not the challenge one."""
    server = Server(tmp_path)
    before_order = server.vhost.with_name("vhost.conf.before-order")
    before_order.write_bytes(OLD_VHOST)
    server.vhost.write_bytes(b"# the challenge vhost\n")
    assert server.commit("apply", "R2", "C2", "yes", *nginx("ok")).returncode == 0
    assert server.live() == NEW and not before_order.exists()
    assert server.commit("undo", *nginx("ok")).returncode == 0
    assert server.live() == OLD and not before_order.exists()


# --- nginx-test.sh ------------------------------------------------------------------------

def test_nginx_test_checks_the_new_vhost_and_puts_the_live_file_back_byte_identical(tmp_path, nginx):
    vhost = tmp_path / "vhost.conf"
    vhost.write_bytes(OLD_VHOST)
    vhost.chmod(0o640)
    before = vhost.stat()
    result = run("nginx-test", vhost, *nginx("ok", vhost=vhost), stdin=NEW_VHOST)
    assert result.returncode == 0, result.stderr
    assert b"test is successful" in result.stdout
    assert nginx.calls == "nginx -t\nduring -t:" + NEW_VHOST.decode()  # tested with the new text, never reloaded
    assert vhost.read_bytes() == OLD_VHOST
    assert stat.S_IMODE(vhost.stat().st_mode) == 0o640 and vhost.stat().st_mtime == before.st_mtime
    assert (tmp_path / "vhost.conf.next").read_bytes() == NEW_VHOST  # kept for the commit
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("vhost")) == ["vhost.conf", "vhost.conf.next"]


def test_nginx_test_failure_exits_3_with_nginx_message_and_the_live_file_unchanged(tmp_path, nginx):
    vhost = tmp_path / "vhost.conf"
    vhost.write_bytes(OLD_VHOST)
    result = run("nginx-test", vhost, *nginx("fail"), stdin=NEW_VHOST)
    assert result.returncode == 3
    assert b'nginx: [emerg] unknown directive "bogus"' in result.stderr
    assert vhost.read_bytes() == OLD_VHOST
    assert "reload" not in nginx.calls


def test_nginx_test_says_6_when_sudo_refuses(tmp_path, nginx):
    vhost = tmp_path / "vhost.conf"
    vhost.write_bytes(OLD_VHOST)
    result = run("nginx-test", vhost, *nginx("sudo"), stdin=NEW_VHOST)
    assert result.returncode == 6
    assert b"sudo: a password is required" in result.stderr
    assert vhost.read_bytes() == OLD_VHOST


def test_nginx_test_before_the_first_deploy_leaves_the_vhost_empty(tmp_path, nginx):
    vhost = tmp_path / "vhost.conf"
    result = run("nginx-test", vhost, *nginx("ok", vhost=vhost), stdin=NEW_VHOST)
    assert result.returncode == 0, result.stderr
    assert vhost.read_bytes() == b""
    assert NEW_VHOST.decode() in nginx.calls


# --- challenge-vhost.sh -------------------------------------------------------------------

CHALLENGE_VHOST = OLD_VHOST + b"server { listen 80; server_name new.example.com; }\n"


def test_challenge_vhost_apply_then_restore_puts_the_live_vhost_back(tmp_path, nginx):
    vhost = tmp_path / "vhost.conf"
    vhost.write_bytes(OLD_VHOST)
    result = run("challenge-vhost", "apply", vhost, *nginx("ok", vhost=vhost), stdin=CHALLENGE_VHOST)
    assert result.returncode == 0, result.stderr
    assert vhost.read_bytes() == CHALLENGE_VHOST
    assert (tmp_path / "vhost.conf.before-order").read_bytes() == OLD_VHOST  # what state.sh sees as "order pending"
    assert nginx.calls == "nginx -t\nduring -t:" + CHALLENGE_VHOST.decode() + "nginx -s reload\n"
    result = run("challenge-vhost", "restore", vhost, *nginx("ok", vhost=vhost))
    assert result.returncode == 0, result.stderr
    assert vhost.read_bytes() == OLD_VHOST
    assert not (tmp_path / "vhost.conf.before-order").exists()
    assert nginx.calls.endswith("during -t:" + OLD_VHOST.decode() + "nginx -s reload\n")
    # A second restore (the next deploy's clean-up) has nothing to do.
    assert run("challenge-vhost", "restore", vhost, *nginx("fail")).returncode == 0
    assert vhost.read_bytes() == OLD_VHOST


def test_challenge_vhost_restore_that_cannot_reload_keeps_the_order_pending(tmp_path, nginx):
    """nginx still runs the challenge vhost: before-order stays, so the next deploy restores again."""
    vhost = tmp_path / "vhost.conf"
    vhost.write_bytes(OLD_VHOST)
    assert run("challenge-vhost", "apply", vhost, *nginx("ok", vhost=vhost), stdin=CHALLENGE_VHOST).returncode == 0
    result = run("challenge-vhost", "restore", vhost, *nginx("reloadfail", vhost=vhost))
    assert result.returncode == 4
    assert vhost.read_bytes() == OLD_VHOST
    assert (tmp_path / "vhost.conf.before-order").read_bytes() == OLD_VHOST
    assert run("challenge-vhost", "restore", vhost, *nginx("ok", vhost=vhost)).returncode == 0
    assert not (tmp_path / "vhost.conf.before-order").exists() and not (tmp_path / "vhost.conf.restore").exists()
    assert nginx.calls.endswith("nginx -s reload\n")


def test_challenge_vhost_apply_failing_nginx_test_puts_the_live_vhost_back(tmp_path, nginx):
    vhost = tmp_path / "vhost.conf"
    vhost.write_bytes(OLD_VHOST)
    result = run("challenge-vhost", "apply", vhost, *nginx("fail"), stdin=CHALLENGE_VHOST)
    assert result.returncode == 3
    assert b"[emerg]" in result.stderr
    assert vhost.read_bytes() == OLD_VHOST
    assert not (tmp_path / "vhost.conf.before-order").exists()


# --- tokens.sh ----------------------------------------------------------------------------

def test_tokens_put_and_remove(tmp_path):
    folder = tmp_path / "challenges" / ".well-known" / "acme-challenge"
    assert run("tokens", "put", folder, "tok-1_A", "tok-1_A.thumb", "t2", "t2.thumb").returncode == 0
    assert (folder / "tok-1_A").read_text() == "tok-1_A.thumb"
    assert stat.S_IMODE((folder / "t2").stat().st_mode) == 0o644  # nginx's workers read it
    assert run("tokens", "remove", folder, "tok-1_A", "t2").returncode == 0
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("bad", ["../../etc/owned", "a/b", "x.y", "", "tok en", "$(id)"])
def test_tokens_refuses_a_token_that_is_not_base64url(tmp_path, bad):
    folder = tmp_path / "acme-challenge"
    result = run("tokens", "put", folder, bad, "value")
    assert result.returncode == 1
    assert f"bad token {bad}".encode() in result.stderr
    assert list(folder.iterdir()) == []
    assert not (tmp_path / "etc").exists()


# --- cert-stage.sh ------------------------------------------------------------------------

def bundle(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CERT_FILES = {"privkey.pem": b"-----BEGIN PRIVATE KEY-----\n", "fullchain.pem": b"-----BEGIN CERTIFICATE-----\n",
              "meta.json": b"{}"}


def test_cert_stage_makes_a_private_certificate_folder(tmp_path):
    tls = tmp_path / "tls"
    (tls / "certs" / "C0.partial").mkdir(parents=True)  # an interrupted staging
    result = run("cert-stage", tls, "C1", stdin=bundle(CERT_FILES))
    assert result.returncode == 0, result.stderr
    folder = tls / "certs" / "C1"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == CERT_FILES
    assert stat.S_IMODE((folder / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in (tls / "certs").iterdir()) == ["C1"]
    assert not os.path.lexists(tls / "live")  # staged, not live
    # Staging it again (another host's copy, a retry) keeps the first.
    again = run("cert-stage", tls, "C1", stdin=bundle({**CERT_FILES, "fullchain.pem": b"other"}))
    assert (again.returncode, again.stdout) == (0, b"already staged\n")
    assert (folder / "fullchain.pem").read_bytes() == CERT_FILES["fullchain.pem"]


@pytest.mark.parametrize("missing", sorted(CERT_FILES))
def test_cert_stage_refuses_a_bundle_missing_a_file(tmp_path, missing):
    tls = tmp_path / "tls"
    files = {k: v for k, v in CERT_FILES.items() if k != missing}
    result = run("cert-stage", tls, "C1", stdin=bundle(files))
    assert result.returncode == 1
    assert f"{missing} missing from the staged certificate".encode() in result.stderr
    assert not (tls / "certs" / "C1").exists()


def test_cert_read_gives_the_bundle_cert_stage_takes(tmp_path):
    tls, other = tmp_path / "tls", tmp_path / "other-host-tls"
    assert run("cert-stage", tls, "C1", stdin=bundle(CERT_FILES)).returncode == 0
    out = run("cert-read", tls, "C1")
    assert out.returncode == 0, out.stderr
    assert run("cert-stage", other, "C1", stdin=out.stdout).returncode == 0
    assert {p.name: p.read_bytes() for p in (other / "certs" / "C1").iterdir()} == CERT_FILES
    assert stat.S_IMODE((other / "certs" / "C1" / "privkey.pem").stat().st_mode) == 0o600


# --- lock.sh ------------------------------------------------------------------------------

def lock_holder(lock: Path, holder: str, timeout: int) -> subprocess.Popen:
    return subprocess.Popen(["sh", str(SCRIPTS / "lock.sh"), str(lock), holder, str(timeout)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_lock_a_second_holder_waits_then_times_out_naming_the_first(tmp_path):
    lock = tmp_path / "deploy.lock"
    first = lock_holder(lock, "host=a pid=1 user=ann", 5)
    try:
        assert first.stdout.readline() == b"LOCKED\n"
        started = time.monotonic()
        second = subprocess.run(["sh", str(SCRIPTS / "lock.sh"), str(lock), "host=b pid=2 user=bob", "1"],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        waited = time.monotonic() - started
        assert second.returncode == 75
        assert second.stdout == b"WAIT host=a pid=1 user=ann\nTIMEOUT host=a pid=1 user=ann\n"
        assert 0.9 < waited < 10
        assert (tmp_path / "deploy.lock.holder").read_text() == "host=a pid=1 user=ann\n"  # still the first's
    finally:
        first.stdin.close()
        first.wait(timeout=10)
    assert first.returncode == 0
    assert not (tmp_path / "deploy.lock.holder").exists()


def test_lock_is_freed_when_the_first_holder_stdin_closes(tmp_path):
    lock = tmp_path / "deploy.lock"
    first = lock_holder(lock, "first", 5)
    assert first.stdout.readline() == b"LOCKED\n"
    second = lock_holder(lock, "second", 20)
    try:
        assert second.stdout.readline() == b"WAIT first\n"
        first.stdin.close()  # the first deploy ended, or its SSH session did
        assert first.wait(timeout=10) == 0
        assert second.stdout.readline() == b"LOCKED\n"
        assert (tmp_path / "deploy.lock.holder").read_text() == "second\n"
    finally:
        second.stdin.close()
        second.wait(timeout=10)
    assert second.returncode == 0


def test_lock_a_killed_holder_frees_it(tmp_path):
    """sshd ends a dead client's session: the kernel frees the flock with its last holder."""
    lock = tmp_path / "deploy.lock"
    first = subprocess.Popen(["sh", str(SCRIPTS / "lock.sh"), str(lock), "first", "5"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, start_new_session=True)
    assert first.stdout.readline() == b"LOCKED\n"
    os.killpg(first.pid, signal.SIGKILL)  # the script and its `cat`
    first.wait(timeout=10)
    second = subprocess.run(["sh", str(SCRIPTS / "lock.sh"), str(lock), "second", "1"], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=30)
    assert (second.returncode, second.stdout) == (0, b"LOCKED\n")


# --- the other small ones ---------------------------------------------------------------

def test_write_private_and_read_file(tmp_path):
    target = tmp_path / "accounts" / "key.pem"
    assert run("write-private", target, stdin=b"secret").returncode == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["key.pem"]
    assert run("read-file", target).stdout == b"secret"
    missing = run("read-file", tmp_path / "nothing.pem")
    assert (missing.returncode, missing.stdout) == (0, b"")


def test_releases_lists_complete_releases_and_the_live_one(tmp_path):
    root = tmp_path / "site"
    make_release(root / "releases", "R1", {"a": b"x" * 5000})
    make_release(root / "releases", "R2.partial", {"a": b"x"})
    (root / "releases" / "R1.manifest").write_bytes(b"m")
    (root / "current").symlink_to("releases/R1")
    lines = run("releases", root).stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == ["R1", "current"]
    assert lines[1] == "current R1" and int(lines[0].split()[1]) >= 4
    # A release with a 404.html is named as such (a rollback warns when the vhost's 404 setting does not fit).
    make_release(root / "releases", "R2", {"404.html": b"<p>not here</p>"})
    lines = run("releases", root).stdout.decode().splitlines()
    assert lines[-3:] == [lines[-3], "error-page R2", "current R1"] and lines[-3].startswith("R2 ")


def test_the_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: ./run installs the Debian package shellcheck"
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    assert len(scripts) >= 13
    result = subprocess.run([shellcheck, "-s", "sh", *scripts], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
