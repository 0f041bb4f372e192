"""The upload stage: the built output becomes a new release, switched live atomically.

``releases/<id>/`` ids sort in time order; the release is unpacked under ``<id>.partial`` and
renamed when complete, so a half-uploaded release is never live; ``current`` is switched by
one rename. The whole output travels as one compressed tar stream on the SSH channel's stdin
(never one SFTP put per file).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shlex
import tarfile
from pathlib import Path

from fabric import Connection

from .connection import shell
from .errors import UploadError
from .settings import DeploySettings


def new_release_id(now: dt.datetime | None = None) -> str:
    """UTC time to the microsecond: sorts in time order as plain text."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def check_output(output: Path) -> None:
    if not (output / "index.html").is_file():
        raise UploadError(f"{output} has no index.html: build the site first (pelican content -s publishconf.py)")
    for path in output.rglob("*"):
        if path.is_symlink():
            target = (path.parent / os.readlink(path)).resolve()
            if not target.is_relative_to(output.resolve()):
                raise UploadError(f"{path} is a symlink to {target}, outside the output folder: refusing to upload it")


def build_archive(output: Path) -> io.BytesIO:
    """A gzip tar of the output with plain relative names and world-readable modes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        def readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.isdir() else 0o644  # served by nginx's unprivileged workers
            return info
        for path in sorted(output.iterdir()):
            tar.add(path, arcname=path.name, filter=readable)
    buf.seek(0)
    return buf


def upload_release(conn: Connection, settings: DeploySettings, release_id: str) -> str:
    """Upload the output as releases/<id>; not live until ``activate``."""
    check_output(settings.output_path)
    archive = build_archive(settings.output_path)
    q = shlex.quote
    releases = str(settings.releases_dir)
    partial = f"{releases}/{release_id}.partial"
    # Leftovers of an interrupted upload are removed first; they were never live.
    script = (f"set -e; mkdir -p {q(releases)}; rm -rf {q(releases)}/*.partial; mkdir {q(partial)}; "
              f"tar -xzf - -C {q(partial)} --no-same-owner; mv {q(partial)} {q(releases + '/' + release_id)}")
    shell(conn, script, stdin=archive, what="uploading the release")
    return release_id


def activate(conn: Connection, settings: DeploySettings, release_id: str) -> None:
    """Switch ``current`` to the release with one atomic rename."""
    q = shlex.quote
    current = str(settings.current_link)
    shell(conn, f"ln -sfn releases/{q(release_id)} {q(current)}.new && mv -T {q(current)}.new {q(current)}",
          what="switching the live release")


def prune(conn: Connection, settings: DeploySettings) -> list[str]:
    """Keep the newest DEPLOY_KEEP_RELEASES by name (never by mtime: tar restores old mtimes), never `current`."""
    q = shlex.quote
    releases = str(settings.releases_dir)
    listing = shell(conn, f"ls -1 {q(releases)}; echo; readlink {q(str(settings.current_link))} || true", what="listing releases")
    names, _, live = listing.partition("\n\n")
    live = live.strip().rsplit("/", 1)[-1]
    complete = sorted(n for n in names.split("\n") if n and not n.endswith(".partial"))
    doomed = [n for n in complete[:-settings.keep_releases] if n != live]
    if doomed:
        shell(conn, "rm -rf -- " + " ".join(q(f"{releases}/{n}") for n in doomed), what="pruning old releases")
    return doomed
