"""The upload stage: the built output becomes a new release, incrementally and atomically.

Server layout (under DEPLOY_REMOTE_ROOT):

    releases/<id>/            a complete release (ids sort in time order)
    releases/<id>.manifest    its manifest (gzip'd JSON; beside the release, so nginx never serves it)
    releases/<id>.partial/    a release being built; never live; removed by the next deploy
    releases/.next-<id>/      a hard-linked copy of release <id> made after it went live: the
                              next upload starts from it (never served, never live)
    current -> releases/<id>  the live release, switched by one rename

How a deploy travels, in as few round trips as possible (one SSH connection, see remote.py):

1. The lock shell (``lock.DeployLock``) also runs ``probe_script``: it reports which release is
   live, the release names, whether the server has zstd, and the live release's manifest.
2. Locally (while SSH connects) every file is hashed into a manifest; the diff against the
   live manifest says what is new, changed, deleted and unchanged.
3. One script, run by the lock shell (no SSH session of its own), reads one stream, sent in
   frames (``lock.DeployLock.run``): the new manifest and the paths to delete, then the new and
   changed files as a zstd tar, tarred, compressed and sent at the same time. (Where either
   side lacks zstd, or only a few files changed: gzip, in this process, and the
   already-compressed files (.jpg, .png, .woff2 ...) travel first as a plain tar, since gzip
   would crawl through them.) The server builds ``<id>.partial`` from
   ``.next-<live id>`` (renamed: made by the last switch) or else with ``cp -al`` from the live
   release (unchanged files become hard links: no bytes move), removes deleted paths, and unpacks: GNU tar replaces an existing file by unlinking it first, so a
   hard-linked file is never written through and older releases keep their copy. It checks
   the new release on disk (every path, kind, mode, size, link target) against the manifest by
   hashing a canonical listing (``manifest.CANONICAL_FIND``) and comparing it with the digest
   the client sent in the header; it answers MATCHES, or DIFFERS and the full listing.
4. On DIFFERS the client names the problems (``manifest.check_release``): nothing missing,
   nothing extra, every kind, mode, size and target as expected. A mismatch fails the deploy
   before anything goes live, after one full-upload retry (in case the live release was
   edited by hand on the server).
5. ``activate`` renames ``<id>.partial`` to ``<id>``, switches ``current`` with one rename and
   prunes old releases, in the lock's shell (no new SSH session). In the background, under the
   lock, it deletes the pruned releases and hard-links the new live release into ``.next-<id>``
   for the next deploy.

The server needs only POSIX sh, coreutils, findutils, GNU tar, flock and gzip (zstd if present).
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from . import manifest as mf
from .errors import UploadError
from .lock import DeployLock
from .remote import Remote
from .settings import DeploySettings

if TYPE_CHECKING:  # fabric is not imported at run time: a lean upload process starts faster
    from fabric import Connection

log = logging.getLogger("pelican_https.deploy")

CHUNK = 128 * 1024  # write size into ssh's stdin
ZSTD_LEVEL = 3  # zstd's default: ~7x on HTML at hundreds of MB/s
GZIP_LEVEL = 6  # gzip's default, for servers or clients without zstd, and for small uploads
SMALL_UPLOAD = 256 * 1024  # bytes of files to send below which gzip in-process beats starting tar and zstd


# --- what the server has -----------------------------------------------------------------------

@dataclass(frozen=True)
class ServerState:
    has_zstd: bool
    current: str | None  # id of the live release
    releases: tuple[str, ...]  # complete releases, oldest first
    manifest_bytes: bytes | None  # the live release's stored manifest, when it has one

    @functools.cached_property
    def manifest(self) -> dict | None:
        """The live release's manifest (None: missing or unreadable). Parsed only when needed:
        when its bytes equal the new manifest's, nothing changed and it never is."""
        return mf.load(self.manifest_bytes) if self.manifest_bytes else None


NEXT = ".next-"  # in releases/: ".next-<id>", a complete hard-linked copy of release <id>, made ahead of time


def probe_script(settings: DeploySettings) -> str:
    """Run by the lock shell right after locking; output parsed by ``parse_probe``."""
    q = shlex.quote
    root, releases = str(settings.remote_root), str(settings.releases_dir)
    return "\n".join([
        "if command -v zstd >/dev/null 2>&1; then echo zstd yes; else echo zstd no; fi",
        f"cur=$(readlink {q(root + '/current')} 2>/dev/null || true); cur=${{cur##*/}}",
        'printf "current %s\\n" "$cur"',
        # Release ids only (any other name, a newline in it perhaps, would not parse).
        f"printf releases; for f in {q(releases)}/*; do case ${{f##*/}} in {_ID_GLOB}) printf ' %s' \"${{f##*/}}\";; esac; done; echo",
        # Last: the live release's manifest, as the rest of the output.
        f'm={q(releases)}/"$cur".manifest',
        'if [ -n "$cur" ] && [ -f "$m" ]; then echo manifest; exec cat "$m"; else echo "manifest none"; fi',
    ])


def parse_probe(data: bytes) -> ServerState:
    lines = {}
    rest = data
    for _ in range(4):
        line, _, rest = rest.partition(b"\n")
        key, _, value = line.decode("utf-8", "replace").partition(" ")
        lines[key] = value.strip()
    if lines.get("manifest") not in ("", "none"):
        raise UploadError(f"cannot read the server's release state: {data[:300]!r}")
    names = lines.get("releases", "").split()
    complete = sorted(n for n in names if mf.RELEASE_ID.fullmatch(n))
    current = lines.get("current") or None
    if current and not mf.RELEASE_ID.fullmatch(current):
        current = None  # `current` points at something this tool did not make: no linking from it
    return ServerState(lines.get("zstd") == "yes", current if current in complete else None, tuple(complete),
                       rest if lines["manifest"] == "" else None)


def new_release_id(existing: Iterable[str] = ()) -> str:
    """Now, in UTC, to the microsecond; later than every existing release."""
    return mf.next_release_id(dt.datetime.now(dt.timezone.utc), existing)


# --- local side ----------------------------------------------------------------------------------

SCAN_NICENESS = 10  # the hashing thread's nice value on Linux (see _scan_politely)


def start_scan(settings: DeploySettings) -> Future:
    """Hash the output in a thread while the SSH connection is made (hashlib releases the GIL);
    the future's result is an ``mf.Prepared`` (the manifest, its stored form, the listing digest)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-output")
    future = pool.submit(_scan_politely, settings.output_path)
    pool.shutdown(wait=False)
    return future


def _scan_politely(output: Path) -> mf.Prepared:
    """The scan, at a lower priority on Linux: it then takes the CPU that ssh and sshd leave idle
    during the handshake instead of slowing it down (the handshake is the critical path; on two
    cores the deploy was locked ~60 ms later with the scan at the same priority). Linux nice values
    are per thread: only this pool thread, which ends with the scan, is lowered. (Elsewhere
    PRIO_PROCESS would take a thread id for a process id: left alone.)"""
    if sys.platform.startswith("linux"):
        try:
            thread = threading.get_native_id()
            if os.getpriority(os.PRIO_PROCESS, thread) < SCAN_NICENESS:  # never raises its priority
                os.setpriority(os.PRIO_PROCESS, thread, SCAN_NICENESS)
        except OSError:
            pass
    return mf.prepare(mf.scan_output(output))


def deliver(deploy_lock: DeployLock, settings: DeploySettings, local: mf.Prepared | mf.Manifest,
            progress: Callable[[int, int], None] | None = None) -> Staged:
    """The upload stage as the pipeline runs it, once the lock (and its probe) is held."""
    state = parse_probe(deploy_lock.wait().probe_output)
    return stage_release(deploy_lock, settings, state, local, new_release_id(state.releases), progress=progress)


@dataclass(frozen=True)
class Staged:
    release_id: str
    plan: mf.Plan | None  # None: nothing changed and DEPLOY_SKIP_UNCHANGED (no new release)
    bytes_sent: int
    seconds: float
    compression: str

    @property
    def skipped(self) -> bool:
        return self.plan is None

    def summary(self) -> str:
        if self.plan is None:
            return f"upload: nothing changed since release {self.release_id} (live); no new release (DEPLOY_SKIP_UNCHANGED)"
        return (f"upload: release {self.release_id}: {mf.summary_counts(self.plan)} files; "
                f"{_human(self.bytes_sent)} sent ({self.compression}) in {self.seconds:.2f} s")


def stage_release(deploy_lock: DeployLock, settings: DeploySettings, state: ServerState, local: mf.Prepared | mf.Manifest,
                  release_id: str, *, progress: Callable[[int, int], None] | None = None) -> Staged:
    """Build ``releases/<id>.partial`` on the server and check it; not live until ``activate``.
    The release travels through the lock's shell, as the input of ``stage_script``: no SSH
    session of its own (each costs ~20-30 ms)."""
    started = time.monotonic()
    prepared = local if isinstance(local, mf.Prepared) else mf.prepare(local)
    # Same stored bytes, same manifest (``dump`` is deterministic): no need to parse the old one.
    same = state.manifest_bytes == prepared.dumped
    old = prepared.entries if same else state.manifest
    previous = state.current if old is not None else None
    if settings.skip_unchanged and previous and (same or old == prepared.entries):
        return Staged(previous, None, 0, time.monotonic() - started, "none")
    sent = 0
    for base in ([previous, None] if previous else [None]):
        plan = mf.diff(old if base else None, prepared.entries)
        compression = _compression(state.has_zstd, sum(e.size for e in plan.upload))
        script = stage_script(settings, release_id, "zstd -dcq" if compression == "zstd" else "gzip -dc")
        n, listing = _send_release(deploy_lock, script, settings, base, plan, prepared, compression, progress)
        sent += n
        problems = [] if listing is None else (mf.check_release(prepared.entries, listing)
                                               or ["its listing does not hash to the manifest's, yet no entry differs"])
        if not problems:
            return Staged(release_id, plan, sent, time.monotonic() - started, compression)
        detail = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        if base:
            log.warning("the release built from %s does not match its manifest (%s): uploading everything instead", base, detail)
            continue
        raise UploadError(f"the new release {release_id} on the server does not match what was sent: {detail}. "
                          "Nothing went live; the partial release is removed by the next deploy. "
                          "Did the output change during the deploy (pelican still writing)? Deploy again.")
    raise AssertionError("unreachable")


def _compression(server_has_zstd: bool, upload_bytes: int) -> str:
    """zstd (tar and zstd in processes of their own, on the other core) when both sides have it
    and there is enough to send; gzip in this process otherwise: a few changed pages are packed
    before the two processes would have started."""
    if server_has_zstd and upload_bytes >= SMALL_UPLOAD and shutil.which("zstd"):
        return "zstd"
    return "gzip"


def _send_release(deploy_lock: DeployLock, script: str, settings: DeploySettings, base: str | None, plan: mf.Plan,
                  local: mf.Prepared, compression: str, progress: Callable[[int, int], None] | None) -> tuple[int, dict | None]:
    """Send one release build; return bytes sent and None when the server found the release
    matching the manifest, else the server's listing of it."""
    output = settings.output_path
    # Already-compressed files (images, fonts, archives) skip gzip, which crawls through them
    # (~30 MB/s). zstd passes incompressible blocks through at hundreds of MB/s on another core,
    # so with zstd they join its stream: cheaper than a tar of their own made by Python here
    # (measured on 30 MB of images: 0.08 s of zstd CPU against ~0.4 s for the separate tar).
    separate = (lambda e: e.kind == mf.FILE and mf.is_compressed(e.path)) if compression != "zstd" else (lambda e: False)
    packed = [e for e in plan.upload + plan.new_dirs if not separate(e)]
    plain = [e for e in plan.upload if separate(e)]
    manifest_bytes = local.dumped
    deleted = b"".join(os.fsencode("./" + p) + b"\0" for p in plan.deleted)
    plain_size = _tar_size(plain) if plain else 0
    header = stage_header(len(manifest_bytes), len(deleted), plain_size, base, bool(packed), local.listing_digest)
    # The compressed size is known only at the end: estimate it for the bar (HTML shrinks ~6x).
    estimate = len(header) + len(manifest_bytes) + len(deleted) + plain_size + sum(e.size for e in packed) // 6
    meter = _Meter(estimate, progress)

    def body(write: Callable[[bytes], None]) -> None:
        for part in (header, manifest_bytes, deleted):
            for i in range(0, len(part), CHUNK):
                write(part[i:i + CHUNK])
        if plain:
            writer = _ChunkWriter(write)
            _write_tar(output, plain, writer)
            writer.flush()  # tarfile never closes a file object it was given
        if packed:
            _send_compressed(output, packed, compression, write)

    out = deploy_lock.run(script, "uploading the release", body=body, sent=meter.add)
    if out == b"MATCHES\n":
        return meter.done, None
    try:
        if not out.startswith(b"DIFFERS\n"):
            raise ValueError("neither MATCHES nor DIFFERS")
        listing = mf.parse_listing(gzip.decompress(out[len(b"DIFFERS\n"):]))
    except (ValueError, OSError, EOFError) as exc:
        raise UploadError(f"unexpected answer from the server after the upload: {out[:300]!r}") from exc
    return meter.done, listing


def stage_header(n_manifest: int, n_deleted: int, n_plain: int, base: str | None, packed: bool, listing_digest: str) -> bytes:
    """The first line of the upload stream: section sizes, the release to link from, whether a
    compressed tar follows, and the digest the built release's listing must have. Pure."""
    if base is not None and not mf.RELEASE_ID.fullmatch(base):
        raise UploadError(f"bad release id {base!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", listing_digest):
        raise UploadError(f"bad listing digest {listing_digest!r}")
    return f"{int(n_manifest)} {int(n_deleted)} {int(n_plain)} {base or '-'} {int(packed)} {listing_digest}\n".encode()


_ID_GLOB = "[0-9]" * 8 + "T" + "[0-9]" * 12 + "Z"


def stage_script(settings: DeploySettings, release_id: str, decompress: str) -> str:
    """The server side of the upload, as one POSIX sh script reading the stream on stdin. Pure.

    The stream: ``stage_header``'s line; the manifest; the NUL-separated paths to delete; the
    plain tar; the compressed tar (if any), to the end.
    """
    q = shlex.quote
    if not mf.RELEASE_ID.fullmatch(release_id):
        raise UploadError(f"bad release id {release_id!r}")
    rel, manifest = q(release_id + ".partial"), q(release_id + ".manifest")
    deleted, failed = q(release_id + ".partial-deleted"), q(release_id + ".partial-failed")
    # GNU tar replaces an existing file by unlinking it first (it opens with O_EXCL and unlinks on
    # EEXIST), so a hard-linked file is never written through: older releases keep their copy.
    # -p applies the archive's modes exactly (0644/0755) whatever the umask; GNU tar strips
    # leading '/' and refuses members containing '..'.
    untar = "tar -x -p --no-same-owner -f -"
    return "\n".join([
        "set -eu",
        "umask 022",
        # (Builtins where they do: every process costs a few ms on a busy server.)
        f"[ -d {q(str(settings.releases_dir))} ] || mkdir -p {q(str(settings.releases_dir))}",
        f"cd {q(str(settings.releases_dir))}",
        # Leftovers of an interrupted deploy: never live, and we hold the lock.
        'for f in ./*.partial ./*.partial-* ./.doomed-* ./.prelinked*; do [ ! -e "$f" ] || rm -rf -- "$f"; done',
        'for m in ./*.manifest; do [ ! -e "$m" ] || [ -d "${m%.manifest}" ] || rm -f -- "$m"; done',
        # The header (sh's `read` takes a pipe byte by byte: it never reads past the line).
        "read -r n_manifest n_deleted n_plain base packed digest",
        'for n in "$n_manifest" "$n_deleted" "$n_plain" "$packed"; do case $n in ""|*[!0-9]*) echo "bad upload header" >&2; exit 1;; esac; done',
        f'case $base in -) base=;; {_ID_GLOB}) ;; *) echo "bad upload header" >&2; exit 1;; esac',
        'case $digest in *[!0-9a-f]*|"") echo "bad upload header" >&2; exit 1;; esac',
        # Unchanged files: hard links to the live release (no bytes copied, no bytes sent). The
        # last switch made them ahead of time (``switch_script``): .next-<base> exists only once
        # complete, and the lock was not released before that. Otherwise they are made now.
        'if [ -n "$base" ]; then',
        f'  if [ -d {NEXT}"$base" ]; then mv -T {NEXT}"$base" {rel}; else mkdir {rel} && cp -al -- "$base"/. {rel}/; fi',
        "else",
        f"  mkdir {rel}",
        "fi",
        f'for f in {NEXT}*; do [ ! -e "$f" ] || rm -rf -- "$f"; done',
        'take() { head -c "$1" > "$2"; [ "$(wc -c < "$2")" -eq "$1" ] || { echo "the upload stream was cut short" >&2; exit 1; }; }',
        # The manifest under its final name: a release is renamed to its id only with it, and
        # `prune` removes one an interrupted deploy left without its release.
        f'take "$n_manifest" {manifest}',
        f"cd {rel}",
        f'if [ "$n_deleted" -gt 0 ]; then take "$n_deleted" ../{deleted}; xargs -0 -r rm -rf -- < ../{deleted}; rm -f ../{deleted}; fi',
        f'if [ "$n_plain" -gt 0 ]; then head -c "$n_plain" | {untar}; fi',
        f'if [ "$packed" = 1 ]; then {{ {decompress} || echo failed > ../{failed}; }} | {untar}; fi',
        f"[ ! -e ../{failed} ] || {{ echo 'the compressed upload is damaged' >&2; exit 1; }}",
        # The answer: does the release on disk hash to the manifest's listing (``mf.CANONICAL_FIND``)?
        # If not, the whole listing, for the client to name what differs.
        f"listed=$({mf.CANONICAL_FIND} | LC_ALL=C sort -z | sha256sum)",
        'if [ "${listed%% *}" = "$digest" ]; then echo MATCHES; else',
        "  echo DIFFERS; find . -mindepth 1 -printf '%y\\0%m\\0%s\\0%l\\0%P\\0' | gzip -1",
        "fi",
    ])


def _members(output: Path | None, entries: Iterable[mf.Entry]):
    """(TarInfo, content) for each entry: plain relative names, fixed modes, no owner names.
    With ``output`` None the content is zeros of the manifest's size (to measure the archive).
    Each file's content is checked against the manifest as it is read: a file that changed since
    it was hashed (pelican still writing?) would make the manifest lie."""
    now = int(time.time())
    for entry in sorted(entries, key=lambda e: e.path):
        info = tarfile.TarInfo(entry.path)
        info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = entry.mode, 0, 0, "", "", now
        if entry.kind == mf.DIR:
            info.type = tarfile.DIRTYPE
            yield info, None
        elif entry.kind == mf.LINK:
            info.type, info.linkname = tarfile.SYMTYPE, entry.digest
            yield info, None
        else:
            info.size = entry.size
            if output is None:
                yield info, io.BytesIO(bytes(entry.size))
                continue
            local = output / entry.path
            data = local.read_bytes()
            if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.digest:
                raise UploadError(f"{local} changed while it was being uploaded (is pelican still writing the output?): deploy again")
            # nginx derives ETag and Last-Modified from the mtime: keep the local one.
            info.mtime = int(local.lstat().st_mtime)
            yield info, io.BytesIO(data)


def _write_tar(output: Path | None, entries: Iterable[mf.Entry], fileobj) -> None:
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        for info, content in _members(output, entries):
            tar.addfile(info, content)


def _tar_size(entries: list[mf.Entry]) -> int:
    """The exact size of the plain tar, so the server can read it with `head -c`."""
    counter = _ChunkWriter(lambda chunk: None)
    _write_tar(None, entries, counter)
    counter.flush()
    return counter.total


class _ChunkWriter:
    """A file object for tarfile that passes CHUNK-sized pieces on."""

    def __init__(self, write: Callable[[bytes], None]):
        self.write_chunk = write
        self.buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> int:
        self.buf += data
        self.total += len(data)
        if len(self.buf) >= CHUNK:
            self.write_chunk(bytes(self.buf))
            self.buf.clear()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            self.write_chunk(bytes(self.buf))
            self.buf.clear()

    def close(self) -> None:
        self.flush()


def _send_compressed(output: Path, entries: list[mf.Entry], compression: str, write: Callable[[bytes], None]) -> None:
    """Tar, compress and send at the same time (zstd runs on another core)."""
    if compression != "zstd":
        with gzip.GzipFile(fileobj=_ChunkWriter(write), mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
            writer = gz.fileobj
            _write_tar(output, entries, gz)
        writer.flush()
        return
    if _gnu_tar():
        _send_with_gnu_tar(output, entries, write)
        return
    # zstd's CLI (Debian/Ubuntu package `zstd`, on GitHub's runners too): no Python dependency.
    proc = subprocess.Popen(["zstd", "-q", f"-{ZSTD_LEVEL}", "-T0", "-c"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            _write_tar(output, entries, proc.stdin)
        except BaseException as exc:  # re-raised below, in the caller's thread
            failure.append(exc)
        finally:
            proc.stdin.close()

    try:
        _relay(feed, proc.stdout, write)
    finally:
        status = proc.wait()
    if failure:
        raise failure[0]
    if status != 0:
        raise UploadError(f"local zstd failed: {proc.stderr.read().decode(errors='replace').strip()}")


def _relay(feed: Callable[[], None], source, write: Callable[[bytes], None]) -> None:
    """Run ``feed`` (which fills a local compressor's input) in a thread while its output is
    copied from ``source`` to ``write``; closes ``source`` once the feeder is done."""
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        while chunk := source.read1(CHUNK):
            write(chunk)
    finally:
        feeder.join()
        source.close()


@functools.cache
def _gnu_tar() -> str | None:
    """GNU tar on this machine, if any (macOS has bsdtar, sometimes GNU tar as `gtar`)."""
    for name in ("tar", "gtar"):
        path = shutil.which(name)
        if path and b"GNU tar" in subprocess.run([path, "--version"], capture_output=True).stdout:
            return path
    return None


def _send_with_gnu_tar(output: Path, entries: list[mf.Entry], write: Callable[[bytes], None]) -> None:
    """`tar | zstd` as two processes (tar in C reads the files; zstd compresses on another core),
    the same archive as ``_write_tar``: relative names, root-owned, files 0644, folders 0755
    (`a+X` after `go=r` adds x to folders only), symlinks as symlinks. The manifest's sizes are
    checked on the server; a file rewritten in the meantime is sent again by the next deploy."""
    names = b"".join(os.fsencode(e.path) + b"\0" for e in sorted(entries, key=lambda e: e.path))
    tar = subprocess.Popen([_gnu_tar(), "-C", str(output), "--no-recursion", "--format=pax", "--owner=0", "--group=0",
                            "--numeric-owner", "--mode=u=rw,go=r,a+X", "--hard-dereference", "--null",
                            "--verbatim-files-from", "-cf", "-", "-T", "-"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    zstd = subprocess.Popen(["zstd", "-q", f"-{ZSTD_LEVEL}", "-T0", "-c"], stdin=tar.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tar.stdout.close()  # zstd owns it now
    errors = {}
    readers = [threading.Thread(target=lambda: errors.__setitem__("tar", tar.stderr.read()), daemon=True),
               threading.Thread(target=lambda: errors.__setitem__("zstd", zstd.stderr.read()), daemon=True)]
    for r in readers:
        r.start()

    def feed() -> None:
        try:
            tar.stdin.write(names)
            tar.stdin.close()
        except BrokenPipeError:
            pass

    try:
        _relay(feed, zstd.stdout, write)
    finally:
        statuses = {"tar": tar.wait(), "zstd": zstd.wait()}
        for r in readers:
            r.join()
    for name, status in statuses.items():
        if status != 0:
            raise UploadError(f"local {name} failed while packing the upload (exit {status}): "
                              f"{errors.get(name, b'').decode(errors='replace').strip()} (is pelican still writing the output?)")


# --- running commands ------------------------------------------------------------------------------

class _Meter:
    """Counts bytes sent and feeds the progress callback."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None):
        self.total, self.done, self.progress = total, 0, progress

    def add(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, max(self.total, self.done))


def _exec(conn: DeployLock | Remote | Connection, script: str, what: str) -> str:
    """Run a script without input in the held lock's shell (no new SSH session), on a Remote or on
    a Fabric connection; return its stdout."""
    if isinstance(conn, (DeployLock, Remote)):
        return conn.run(script, what=what).decode("utf-8", "replace")
    from .connection import shell  # a Fabric connection (e.g. `fab status` listing releases)
    return shell(conn, script, what=what)


# --- going live, rolling back, listing, pruning -------------------------------------------------------

def activate(deploy_lock: DeployLock, settings: DeploySettings, release_id: str, *, prune: bool = False) -> list[str]:
    """Commit the staged release (if it is still partial) and switch ``current`` with one atomic
    rename; with ``prune``, remove old releases in the same round trip. Returns the pruned ids.
    Runs in the lock's shell: under the lock, which is released only once the script is done."""
    script = switch_script(settings, release_id) + ("\n" + prune_script(settings, live=release_id) if prune else "")
    return deploy_lock.run(script, what="switching the live release").decode("utf-8", "replace").split()


def switch_script(settings: DeploySettings, release_id: str) -> str:
    """Pure. ``ln -sfn`` + ``mv -T`` is one rename(2): visitors see the old or the new release, never a mix."""
    q = shlex.quote
    if not mf.RELEASE_ID.fullmatch(release_id):
        raise UploadError(f"{release_id!r} is not a release id (expected e.g. 20261127T090500123456Z)")
    rid, partial = q(release_id), q(release_id + ".partial")
    busy = q(str(settings.lock_file) + ".busy")
    return "\n".join([
        "set -eu",
        f"cd {q(str(settings.releases_dir))}",
        f"if [ -d {partial} ]; then mv -T {partial} {rid}; fi",
        f"[ -d {rid} ] || {{ echo 'there is no release {release_id}' >&2; exit 1; }}",
        f"ln -sfn releases/{rid} ../current.new",
        "mv -T ../current.new ../current",
        # Ahead of the next upload, off its critical path: a hard-linked copy of the new live
        # release, in the background under the busy lock (the deploy lock is not released before
        # it is done). Renamed to .next-<id> only once complete; any other copy is stale.
        f'( exec 8>>{busy}; flock -s 8; for f in {NEXT}*; do [ ! -e "$f" ] || rm -rf -- "$f"; done; '
        f'cp -al -- {rid} {NEXT}tmp && mv -T {NEXT}tmp {NEXT}{rid} ) </dev/null >/dev/null 2>&1 &',
    ])


def prune_script(settings: DeploySettings, live: str | None = None) -> str:
    """Pure. Keep the newest DEPLOY_KEEP_RELEASES releases by name (never by mtime: tar restores old
    mtimes) and always the live one; remove the rest with their manifests, and manifests an
    interrupted deploy left without a release. Prints the ids it removes.

    The removal runs in the background, under the busy lock: each doomed release is renamed out
    of the way (``.doomed-<id>``, so a half-deleted one never looks like a release) and deleted;
    the deploy does not wait for thousands of unlinks, and the next deploy cannot start before
    they are done. Only builtins in the foreground (and reading ``current`` when ``live``, the
    live release's id, is not given)."""
    q = shlex.quote
    if live is not None and not mf.RELEASE_ID.fullmatch(live):
        raise UploadError(f"{live!r} is not a release id")
    busy = q(str(settings.lock_file) + ".busy")
    return "\n".join([
        f"cd {q(str(settings.releases_dir))}",
        f"live={live}" if live else 'live=; [ ! -L ../current ] || live=$(readlink ../current); live=${live##*/}',
        # The shell sorts a glob's matches; release ids sort in time order.
        f"set -- {_ID_GLOB}; [ -e \"$1\" ] || set --",
        f"excess=$(( $# - {int(settings.keep_releases)} )); doomed=",
        'for id; do',
        '  [ "$excess" -gt 0 ] || break',
        '  excess=$((excess - 1))',
        '  [ "$id" != "$live" ] || continue',
        '  doomed="$doomed $id"; echo "$id"',
        "done",
        f'[ -z "$doomed" ] || ( exec 8>>{busy}; flock -s 8; for id in $doomed; do mv -T -- "$id" ".doomed-$id"; done; '
        'for m in *.manifest; do [ ! -e "$m" ] || [ -d "${m%.manifest}" ] || rm -f -- "$m"; done; '
        'exec rm -rf -- .doomed-* ) </dev/null >/dev/null 2>&1 &',
        "true",
    ])


@dataclass(frozen=True)
class ReleaseInfo:
    id: str
    time: dt.datetime
    size: int  # bytes, counting every file of the release (hard links included)
    live: bool


def list_releases(conn: DeployLock | Remote | Connection, settings: DeploySettings) -> list[ReleaseInfo]:
    """Complete releases, oldest first, with their time, size and which one is live (one round trip)."""
    q = shlex.quote
    out = _exec(conn, "\n".join([
        f"cd {q(str(settings.releases_dir))} 2>/dev/null || exit 0",
        f"printf 'current %s\\n' \"$(readlink ../current 2>/dev/null || true)\"",
        "for d in *; do case $d in *.*) continue;; esac; [ -d \"$d\" ] && [ ! -L \"$d\" ] && du -sb -- \"$d\"; done; true",
    ]), what="listing releases")
    return parse_release_list(out)


def parse_release_list(text: str) -> list[ReleaseInfo]:
    """Parse ``current <target>`` then ``<bytes>\\t<id>`` lines. Pure."""
    current, releases = None, []
    for line in text.splitlines():
        if line.startswith("current "):
            current = line[len("current "):].strip().rsplit("/", 1)[-1] or None
        elif "\t" in line:
            size, _, name = line.partition("\t")
            if mf.RELEASE_ID.fullmatch(name) and size.isdigit():
                releases.append((name, int(size)))
    return [ReleaseInfo(n, mf.release_time(n), s, n == current) for n, s in sorted(releases)]


def rollback(deploy_lock: DeployLock, settings: DeploySettings, to: str | None = None) -> tuple[str, str | None]:
    """Switch ``current`` to the release before the live one (or ``to``); return (new, old) live ids.
    nginx serves ``current`` through the symlink, so nothing is reloaded."""
    releases = list_releases(deploy_lock, settings)
    target = rollback_target(releases, to)
    activate(deploy_lock, settings, target)
    return target, next((r.id for r in releases if r.live), None)


def rollback_target(releases: list[ReleaseInfo], to: str | None) -> str:
    """Which release a rollback switches to: ``to``, or the one before the live release. Pure."""
    ids = [r.id for r in releases]
    live = next((r.id for r in releases if r.live), None)
    if to is not None:
        if to not in ids:
            raise UploadError(f"there is no release {to!r} on the server; releases: {', '.join(ids) or 'none'}")
        if to == live:
            raise UploadError(f"release {to} is already live")
        return to
    if live is None:
        raise UploadError(f"no release is live, so there is nothing to roll back from; choose one with --to ({', '.join(ids) or 'none'})")
    older = [i for i in ids if i < live]
    if not older:
        raise UploadError(f"the live release {live} is the oldest one kept: there is nothing older to roll back to")
    return older[-1]


# --- progress ---------------------------------------------------------------------------------------

class ProgressBar:
    """A one-line bar on stderr when it is a terminal; silent otherwise (CI logs get the summary line)."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.width, self.last = width, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        filled = int(self.width * done / total) if total else self.width
        self.stream.write(f"\rupload [{'#' * filled}{'.' * (self.width - filled)}] {_human(done)} / {_human(total)} ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
