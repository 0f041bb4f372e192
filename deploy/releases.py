"""Releases and the commit: what goes live, together, on every host, and how it goes back.

``commit`` runs ``scripts/commit.sh apply`` on every host at once: certificate, vhost and
``current`` switch together with one reload, after a journal of what was live. A host that
fails puts itself back; the hosts that had switched are put back too (``undo``), so every host
serves the old site or every host the new one. Once the site is verified, ``mark_verified``
records it in every journal; ``finish`` then forgets the journals and prunes. A commit cut short
(a killed deploy) leaves its journal: the next deploy undoes it before anything else, unless a
host's journal says it was verified: then it finishes it on every host.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import NamedTuple

from . import manifest as mf
from .connection import Server, Servers
from .errors import DeployError, RemoteCommandFailed
from .nginx import error as nginx_error, lock_path
from .settings import DeploySettings
from .vhost import Vhost

log = logging.getLogger("pelican_https.deploy")

CURRENT_NOT_A_LINK = 7  # commit.sh's exit status when `current` is a real folder


class Change(NamedTuple):
    """What the commit makes live on one host; empty fields keep what is live."""
    release_id: str = ""
    cert_id: str = ""
    vhost: Vhost | None = None  # tested and saved as vhost.conf.next beforehand (nginx.test)

    @property
    def any(self) -> bool:
        return bool(self.release_id or self.cert_id or self.vhost)


class ReleaseInfo(NamedTuple):
    id: str
    time: dt.datetime
    size: int  # bytes
    live: bool
    error_page: bool = False  # it has a 404.html (the vhost names it only for such a release)


class CommitFailed(DeployError):
    """The commit failed on some host; ``back``: the hosts known to serve what they served before."""

    def __init__(self, message: str, back: list[Server]):
        super().__init__(message)
        self.back = back


def commit(servers: Servers, settings: DeploySettings, changes: dict[Server, Change]) -> None:
    """Make every host's change live, or none: a failure on any host puts every host back."""
    result = servers.each(_apply, settings, changes)
    if not result.failed:
        return
    # Every host, the failed ones too: a script cut short (a dropped connection) may have left its
    # journal, and a failed apply may have failed to put itself back. A no-op where nothing is left.
    undone = undo(servers, settings)
    back = [s for s in servers if undone[s] is None]
    lines = []
    for server in servers:
        what = f"failed: {result.failed[server]}" if server in result.failed else "switched"
        lines.append(f"  {server}: {what}; " + ("put back" if undone[server] is None else
                     f"putting it back failed too: {undone[server]}. {UNKNOWN}"))
    failed = ", ".join(map(str, result.failed))
    if len(back) == len(servers):
        headline = f"the commit failed on {failed}, so no host switches: every host serves what it served before."
    else:
        unknown = ", ".join(str(s) for s in servers if s not in back)
        headline = (f"the commit failed on {failed}, so no host switches, but putting it back failed on {unknown}: "
                    "what it serves is unknown" + ("; the others serve what they served before." if back else "."))
    raise CommitFailed(f"{headline}\n" + "\n".join(lines) + ("" if len(back) == len(servers) else "\n" + RETRY), back)


UNKNOWN = "State unknown, its journal kept: the next deploy puts it back before anything else"
RETRY = "Fix the cause above, then `fab deploy` again (it first puts back what is left) or `fab rollback`."


def _apply(server: Server, settings: DeploySettings, changes: dict[Server, Change]) -> None:
    change = changes[server]
    try:
        server.script("commit", "apply", str(settings.remote_root), str(settings.state_dir), change.release_id,
                      change.cert_id, "yes" if change.vhost else "no", lock_path(settings), *settings.nginx, what="committing")
    except RemoteCommandFailed as exc:
        if exc.status == CURRENT_NOT_A_LINK:
            raise DeployError(f"{settings.current_link} on {server} is a folder, not the symlink pelican-https "
                              "switches: move it away (e.g. into releases/), then deploy again. Nothing was changed.") from exc
        raise nginx_error(exc, settings, server) from exc


def undo(servers: Servers, settings: DeploySettings) -> dict[Server, Exception | None]:
    """Put back what each host's journal says was live (nothing where there is no journal; a
    verified commit is kept, its journal forgotten: see scripts/commit.sh)."""
    result = servers.each(lambda s: s.script("commit", "undo", str(settings.remote_root), str(settings.state_dir), lock_path(settings),
                                             *settings.nginx, what="putting the previous site back"))
    for server, exc in result.failed.items():
        log.error("[%s] putting the previous site back failed: %s", server, exc)
    return {server: result.failed.get(server) for server in servers}


def mark_verified(servers: Servers, settings: DeploySettings, live: str) -> None:
    """Record in every host's journal that the commit was verified: from then on it is kept (the
    next deploy finishes it), never undone. ``live``: what is live, for the message on failure."""
    result = servers.each(lambda s: s.script("commit", "verified", str(settings.remote_root), str(settings.state_dir),
                                             what="recording the verification"))
    if not result.failed:
        return
    for server, exc in result.failed.items():
        log.error("[%s] recording the verification failed: %s", server, exc)
    lines = "\n".join(f"  {s}: {exc}" for s, exc in result.failed.items())
    if result.succeeded:
        then = ("the journals stay, and the next deploy finishes the switch on every host (a host that recorded it "
                "tells the others' journals are of the same verified commit).")
    else:
        then = ("no host recorded it, so the next deploy first puts the previous site back on every host (then "
                "deploys what it is given). Fix the cause above, then run the same task again.")
    raise DeployError(f"recording the verification failed on {', '.join(map(str, result.failed))}:\n{lines}\n{live}; {then}")


def finish(servers: Servers, settings: DeploySettings, prune: bool = True, live: str = "") -> None:
    """After verification: forget the journals; prune old releases and certificates (never the live
    ones). ``live``: what is live, for the message when a host fails."""
    from .certificates import KEEP_CERTIFICATES
    keep = [str(settings.keep_releases), str(KEEP_CERTIFICATES)] if prune else []
    result = servers.each(lambda s: s.script("commit", "finish", str(settings.remote_root), str(settings.state_dir),
                                             *keep, what="finishing"))
    for server, out in result.succeeded.items():
        pruned = [line.split()[1] for line in out.decode().splitlines() if line.startswith("pruned ")]
        if pruned:
            log.info("[%s] pruned %d old release(s): %s", server, len(pruned), ", ".join(pruned))
    if result.failed:
        hosts = ", ".join(map(str, result.failed))
        lines = "\n".join(f"  {s}: {exc}" for s, exc in result.failed.items())
        raise DeployError(f"finishing failed on {hosts}:\n{lines}\n{live or 'The switch is live on every host'}; "
                          + (f"pruning old releases did not run on {hosts}; " if prune else "")
                          + "its journal is kept, marked verified: the next deploy finishes it (it is not undone).")


def forget(servers: Servers, settings: DeploySettings) -> dict[Server, Exception | None]:
    """Finish a verified commit an interrupted deploy left (no pruning): its journal is forgotten."""
    result = servers.each(lambda s: s.script("commit", "finish", str(settings.remote_root), str(settings.state_dir),
                                             what="finishing the earlier verified commit"))
    for server, exc in result.failed.items():
        log.error("[%s] finishing the earlier verified commit failed: %s", server, exc)
    return {server: result.failed.get(server) for server in servers}


def list_releases(server: Server, settings: DeploySettings) -> list[ReleaseInfo]:
    """The complete releases on one host, oldest first."""
    out = server.script("releases", str(settings.remote_root), what="listing the releases").decode()
    current = next((line.split()[1] for line in out.splitlines() if line.startswith("current ")), None)
    error_pages = {line.split()[1] for line in out.splitlines() if line.startswith("error-page ") and len(line.split()) == 2}
    found = []
    for line in out.splitlines():
        words = line.split()
        if len(words) == 2 and mf.RELEASE_ID.fullmatch(words[0]) and words[1].isdigit():
            found.append(ReleaseInfo(words[0], mf.release_time(words[0]), int(words[1]) * 1024, words[0] == current,
                                     words[0] in error_pages))
    return sorted(found)


def rollback_target(per_host: dict[Server, list[ReleaseInfo]], to: str | None) -> str:
    """The release every host switches to: ``to``, or the newest one older than the live one on the
    first host; it must exist on every host. Pure."""
    first = next(iter(per_host.values()))
    live = next((r.id for r in first if r.live), None)
    if to is None:
        if live is None:
            raise DeployError("no release is live, so there is nothing to roll back from; name one with --to ID "
                              "(`fab releases` lists them)")
        older = [r.id for r in first if r.id < live]
        if not older:
            raise DeployError(f"there is no release older than the live one ({live or 'none'}) to roll back to")
        to = older[-1]
    lacking = [str(s) for s, releases in per_host.items() if to not in {r.id for r in releases}]
    if lacking:
        raise DeployError(f"release {to} is not on {', '.join(lacking)}; nothing was changed. `fab releases` lists them")
    return to


def rollback(servers: Servers, settings: DeploySettings, to: str | None, progress=None,
             vhosts: dict[Server, str] | None = None) -> tuple[str, str | None]:
    """Switch every host to the same earlier release, or none; reloads nothing. ``progress``
    (pipeline.Progress) learns the stage, each host's live release and the target, for Ctrl-C;
    ``vhosts``: each host's live vhost, to warn when its 404 page does not fit the target."""
    enter = progress.enter if progress is not None else (lambda stage: None)
    enter("listing the releases")
    per_host = servers.each_or_raise(list_releases, settings, stage="listing the releases")
    target = rollback_target(per_host, to)
    before = next((r.id for r in next(iter(per_host.values())) if r.live), None)
    if progress is not None:
        progress.hosts = {str(s): next((r.id for r in found if r.live), None) for s, found in per_host.items()}
        progress.target = target
    for server, text in (vhosts or {}).items():
        _warn_error_page(server, target, next(r for r in per_host[server] if r.id == target).error_page, text)
    enter("switching current")
    if progress is not None:
        progress.committing = True
    commit(servers, settings, {s: Change(release_id=target) for s in servers})
    live = f"Release {target} is live on every host"
    enter("recording the switch")
    # Every host switched: recorded as done, so that a finish cut short never undoes it on one host only.
    mark_verified(servers, settings, live)
    enter("finishing")
    finish(servers, settings, prune=False, live=live)
    return target, before


def _warn_error_page(server: Server, target: str, has_page: bool, vhost_text: str) -> None:
    """A rollback switches only `current`: the vhost keeps the live release's 404 setting."""
    names_page = "error_page 404 /404.html;" in vhost_text
    if names_page and not has_page:
        log.warning("[%s] release %s has no 404.html, but the vhost still sends 404s to /404.html: visitors get "
                    "nginx's plain 404 page until the next `fab deploy`", server, target)
    elif has_page and not names_page:
        log.warning("[%s] release %s has a 404.html that the vhost does not use (nginx's plain 404 page is served) "
                    "until the next `fab deploy`", server, target)
