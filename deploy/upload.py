"""The upload stage: the built output becomes a new, complete, checked release on every host.

Scan: every local file is hashed into a manifest (``manifest.py``). Pack: per host, the diff
against that host's live manifest says what it lacks; those files travel as one plain tar
stream on the host's SSH connection (already-compressed images dominate big sites, and
paramiko carries plain bytes faster than anything could compress them). Send, in two scripts:

1. ``release-start.sh`` makes ``releases/<id>.partial`` a copy of the live release made of hard
   links (no bytes move) and removes the paths that went away;
2. ``release-unpack.sh`` unpacks the tar into it (with the manifest beside it, never served),
   checks the release on disk against the manifest's listing digest, and completes it as
   ``releases/<id>``.

Nothing here is live: only the commit switches ``current``. A failed upload removes its partial
release before it returns (``release-abort.sh``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from . import manifest as mf
from .connection import Server
from .errors import RemoteCommandFailed, UploadError
from .settings import DeploySettings
from .state import HostState

log = logging.getLogger("pelican_https.deploy")

TAR_BUFFER = 256 * 1024  # bytes tarfile gathers before each write to the SSH channel
READ_SIZE = 1024 * 1024
ANSWER_TEXT_LIMIT = 300  # characters of an unexpected server answer shown in the error

Progress = Callable[[str, int], None]  # (host, bytes sent so far)


class Sent(NamedTuple):
    release_id: str
    plan: mf.Plan
    bytes_sent: int
    seconds: float

    def summary(self) -> str:
        return (f"release {self.release_id}: {mf.summary_counts(self.plan)} files; "
                f"{self.bytes_sent / 1e6:.1f} MB sent in {self.seconds:.2f} s")


def scan(settings: DeploySettings) -> mf.Prepared:
    return mf.prepare(mf.scan_output(settings.output_path))


def unchanged(local: mf.Prepared, states: list[HostState]) -> bool:
    """Every host's live release already has exactly this output."""
    return all(s.current and (s.manifest_bytes == local.dumped or s.manifest == local.entries) for s in states)


def new_release_id(states: list[HostState]) -> str:
    """One id for every host (rollback moves all hosts to the same id), after all of their releases."""
    return mf.next_release_id(dt.datetime.now(dt.timezone.utc), [r for s in states for r in s.releases])


def send_release(server: Server, settings: DeploySettings, state: HostState, local: mf.Prepared, release_id: str,
                 progress: Progress | None = None, cancel: threading.Event | None = None) -> Sent:
    """Build and check ``releases/<id>`` on one host from what it lacks; not live. ``cancel`` set
    (Ctrl-C) stops the stream; the partial release is removed either way."""
    started = time.monotonic()
    old = state.manifest if state.current else None
    meter = _Meter(str(server), progress, cancel or threading.Event())
    try:
        plan, sent = _send(server, settings, old and state.current, old, local, release_id, meter)
        if plan is None:  # the copy of the live release did not match (edited by hand?): everything
            log.warning("[%s] the release built from %s does not match its manifest: uploading everything", server, state.current)
            plan, more = _send(server, settings, None, None, local, release_id, meter)
            sent += more
            if plan is None:
                raise UploadError(f"the new release {release_id} on {server} does not match what was sent. Nothing went "
                                  "live. Did the output change during the deploy (pelican still writing)? Deploy again.")
    except BaseException:
        abort(server, settings, release_id)
        raise
    return Sent(release_id, plan, sent, time.monotonic() - started)


def abort(server: Server, settings: DeploySettings, release_id: str) -> None:
    """Remove a release that will not go live (its partial folder too), so a full disk is freed."""
    try:
        server.script("release-abort", str(settings.remote_root), release_id, what="removing the unfinished release")
    except Exception as exc:  # noqa: BLE001 - the first error is the one to report
        log.warning("[%s] could not remove the unfinished release %s: %s (the next deploy does)", server, release_id, exc)


def _send(server: Server, settings: DeploySettings, base: str | None, old: dict | None, local: mf.Prepared,
          release_id: str, meter: _Meter) -> tuple[mf.Plan | None, int]:
    plan = mf.diff(old, local.entries)
    releases = str(settings.releases_dir)
    deleted = b"".join(os.fsencode("./" + p) + b"\0" for p in plan.deleted)
    server.script("release-start", releases, release_id, base or "", stdin=deleted, what="starting the release")
    meter.total = 0
    members = sorted(plan.upload + plan.new_dirs, key=lambda e: e.path)
    try:
        out = server.script("release-unpack", releases, release_id, local.listing_digest,
                            stdin=lambda write: write_tar(settings.output_path, release_id, members, local.dumped,
                                                          meter.wrap(write)),
                            what="unpacking the release")
    except RemoteCommandFailed as exc:
        raise UploadError(f"uploading release {release_id} failed: {exc}. Nothing went live; the unfinished release "
                          "was removed. Is the server's disk full (df -h)?") from exc
    meter.check()
    if out.startswith(b"MATCHES"):
        return plan, meter.total
    if out.startswith(b"DIFFERS\n"):
        problems = mf.check_release(local.entries, mf.parse_listing(out[len(b"DIFFERS\n"):]))
        log.info("[%s] release check: %s", server, "; ".join(problems[:5]) or "listing digest differs")
        return None, meter.total
    raise UploadError(f"unexpected answer from {server} after the upload: {out[:ANSWER_TEXT_LIMIT]!r}")


def write_tar(output: Path, release_id: str, entries: list[mf.Entry], manifest_bytes: bytes,
              write: Callable[[bytes], None]) -> None:
    """A tar rooted at the releases folder: ``<id>.manifest`` and ``<id>.partial/<path>`` for each entry."""
    with tarfile.open(fileobj=_Writer(write), mode="w|", bufsize=TAR_BUFFER, format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        info = _info(f"{release_id}.manifest", 0o644, int(time.time()))
        info.size = len(manifest_bytes)
        tar.addfile(info, _BytesReader(manifest_bytes))
        prefix = f"{release_id}.partial/"
        for entry in entries:
            info = _info(prefix + entry.path, entry.mode, int(time.time()))
            if entry.kind == mf.DIR:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == mf.LINK:
                info.type, info.linkname = tarfile.SYMTYPE, entry.digest
                tar.addfile(info)
            else:
                local = output / entry.path
                info.size, info.mtime = entry.size, int(local.lstat().st_mtime)  # nginx's ETag and Last-Modified
                with open(local, "rb") as f:
                    reader = _CheckedReader(f, entry, local)
                    tar.addfile(info, reader)
                    reader.check()


def _info(name: str, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = mode, 0, 0, "", "", mtime
    return info


class _CheckedReader:
    """Reads a file for tarfile, hashing as it goes: a file that changed since the scan (pelican
    still writing?) fails the upload instead of making the manifest lie."""

    def __init__(self, f, entry: mf.Entry, path: Path):
        self.f, self.entry, self.path = f, entry, path
        self.digest, self.size = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def check(self) -> None:
        if self.f.read(1) or self.size != self.entry.size or self.digest.hexdigest() != self.entry.digest:
            raise UploadError(f"{self.path} changed while it was being uploaded (is pelican still writing the output?): "
                              "deploy again")


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        chunk, self.at = self.data[self.at:end], min(end, len(self.data))
        return chunk


class _Writer:
    def __init__(self, write: Callable[[bytes], None]):
        self.write_chunk = write

    def write(self, data: bytes) -> int:
        self.write_chunk(bytes(data))
        return len(data)


class _Meter:
    """Counts the bytes sent (for the progress display) and stops the stream once ``cancel`` is set."""

    def __init__(self, host: str, progress: Progress | None, cancel: threading.Event):
        self.host, self.progress, self.cancel, self.total = host, progress, cancel, 0

    def check(self) -> None:
        if self.cancel.is_set():
            raise UploadError("the upload was interrupted")

    def wrap(self, write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def counted(data: bytes) -> None:
            self.check()
            write(data)
            self.total += len(data)
            if self.progress:
                self.progress(self.host, self.total)
        return counted

