"""Fabric tasks: thin wrappers that read settings, call the library, and print a summary.

A blog's ``fabfile.py`` imports them:  ``from deploy.tasks import deploy, renew, server_setup``.
Errors of the project (DeployError) are caught only here: the message is printed and the
task exits 1, without a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
import time

from fabric import task
from invoke.exceptions import Exit

from . import pipeline
from .errors import DeployError
from .server_setup import admin_script, remove_script
from .settings import load_settings

DEFAULT_SETTINGS = "publishconf.py"


def _cli_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        logging.getLogger("paramiko").setLevel(logging.WARNING)
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            raise Exit(f"error: {exc}", code=1) from exc
    return wrapper


class _UploadMeter:
    """Bytes sent per host, on one line that rewrites itself, only on a terminal (CI logs get the summary)."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.sent, self.shown = stream, {}, 0.0

    def __call__(self, host: str, total: int) -> None:
        self.sent[host] = total
        now = time.monotonic()
        if now - self.shown >= 0.2:
            self.shown = now
            self.stream.write("\r  uploading: " + ", ".join(f"{h} {n / 1e6:.1f} MB" for h, n in self.sent.items()) + "\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _run(settings_file: str, **kwargs) -> pipeline.DeployResult:
    """The deploy with a progress object, so that Ctrl-C can say what was interrupted and where the site stands."""
    meter = _UploadMeter() if sys.stderr.isatty() else None
    progress = pipeline.Progress(sent=meter)
    try:
        return pipeline.deploy(load_settings(settings_file), progress=progress, **kwargs)
    except KeyboardInterrupt:
        raise Exit(f"interrupted while {progress.stage}. {_interrupted_state(progress)}", code=130) from None
    except DeployError as exc:
        if (progress.committing or progress.stage in ("connecting", "taking the deploy lock")
                or isinstance(exc, pipeline.EarlierDeployPending)):
            raise  # these messages say what was put back or where each host stands; nothing was touched before the lock
        raise Exit(f"error: {exc}\nThe deploy stopped while {progress.stage}. Nothing went live: the site serves "
                   "what it served before.", code=1) from exc
    finally:
        if meter:
            meter.close()


# Reading the state also settles what an earlier interrupted deploy left: Ctrl-C may cut that short.
_EARLIER = {"reading the servers' state": " If an earlier interrupted deploy was being put back or finished, the "
                                          "next deploy does that again first."}


def _interrupted_state(progress: pipeline.Progress) -> str:
    """Where the live site stands after Ctrl-C, from the stage the deploy was in."""
    if progress.stage == "finishing":
        return ("The new site is live and verified, and recorded so: the next deploy finishes it (prunes), it does "
                "not undo it.")
    if progress.stage == "recording the verification":
        return ("The new site was verified live. If a host recorded that, the next deploy keeps it and finishes it; "
                "otherwise it puts the previous site back first.")
    if progress.committing:
        return ("The commit had started: the live site may be half switched on some host; the next deploy "
                "(or `fab rollback`) puts it back first.")
    return "Nothing went live: the site serves what it served before." + _EARLIER.get(progress.stage, "")


@task(help={"settings": f"Pelican settings file with the DEPLOY_ settings (default {DEFAULT_SETTINGS})"})
@_cli_errors
def deploy(c, settings=DEFAULT_SETTINGS):
    """Upload the built site as a new release, make sure the certificate is valid, install the vhost, go live."""
    _summary(_run(settings))


@task(help={"settings": f"Pelican settings file (default {DEFAULT_SETTINGS})", "force": "issue a new certificate even if none is due"})
@_cli_errors
def renew(c, settings=DEFAULT_SETTINGS, force=False):
    """The certificate stage alone (no upload): renew when due, or always with --force."""
    _summary(_run(settings, upload_site=False, force_renew=force))


@task(help={"settings": f"Pelican settings file (default {DEFAULT_SETTINGS})",
            "to": "release id to switch to (default: the one before the live release)"})
@_cli_errors
def rollback(c, settings=DEFAULT_SETTINGS, to=None):
    """Switch the live site back to the previous release (or --to ID), atomically; reloads nothing."""
    new, old = _rollback(settings, to)
    print(f"release {new} is live (was {old or 'none'})")


def _rollback(settings_file: str, to: str | None, progress: pipeline.Progress | None = None) -> tuple[str, str | None]:
    """The rollback; Ctrl-C says where each host's `current` stands."""
    progress = progress or pipeline.Progress()
    try:
        return pipeline.rollback(load_settings(settings_file), to, progress)
    except KeyboardInterrupt:
        raise Exit(f"interrupted while {progress.stage}. {_rollback_state(progress)}", code=130) from None


def _rollback_state(progress: pipeline.Progress) -> str:
    """Where each host's `current` stands after Ctrl-C, from the rollback's stage."""
    was = ", ".join(f"{host}: {rid or 'none'}" for host, rid in progress.hosts.items())
    if progress.stage == "finishing":
        return f"`current` is {progress.target} on every host, recorded: the next deploy keeps it."
    if progress.stage == "recording the switch":
        return (f"`current` is {progress.target} on every host. If a host recorded the switch, the next deploy keeps "
                f"it; otherwise it puts back what each host had ({was}).")
    if progress.committing:
        return (f"The switch had started: on each host `current` is either what it was ({was}) or {progress.target}; "
                "the next `fab deploy` or `fab rollback` first puts every host back to what it was.")
    if was:
        return f"Nothing was changed: `current` is still what it was ({was})."
    return "Nothing was changed: each host's `current` is what it was (`fab releases` lists it)." + _EARLIER.get(progress.stage, "")


@task(help={"settings": f"Pelican settings file (default {DEFAULT_SETTINGS})"})
@_cli_errors
def releases(c, settings=DEFAULT_SETTINGS):
    """List the releases on the server: id, time, size, and which one is live."""
    per_host = pipeline.list_releases(load_settings(settings))
    for host, found in per_host.items():
        if len(per_host) > 1:
            print(f"[{host}]")
        for r in found:
            print(f"{'*' if r.live else ' '} {r.id}  {r.time:%Y-%m-%d %H:%M:%S} UTC  {r.size / 1e6:8.2f} MB{'  (live)' if r.live else ''}")


@task(help={"settings": f"Pelican settings file (default {DEFAULT_SETTINGS})"})
@_cli_errors
def status(c, settings=DEFAULT_SETTINGS):
    """Per domain: issuer, serial, valid until; next renewal and why; CA directory; last deploy. Changes nothing."""
    from . import status as status_module
    values = load_settings(settings)
    print(status_module.report_all(status_module.collect(values), values))


@task(name="server-setup", help={"settings": f"Pelican settings file (default {DEFAULT_SETTINGS})",
                                  "remove": "print the script that removes the site from the server instead"})
@_cli_errors
def server_setup(c, settings=DEFAULT_SETTINGS, remove=False):
    """Print the one-time set-up script for the server's administrator (run it as root), or with --remove its undoing."""
    print((remove_script if remove else admin_script)(load_settings(settings)))


def _summary(result: pipeline.DeployResult) -> None:
    release = f"release {result.release_id} is live; " if result.release_id else ""
    hosts = f" on {', '.join(result.hosts)}" if len(result.hosts) > 1 else ""
    print(f"{release}certificate {result.certificate_action} (serial {result.serial:x}, valid until "
          f"{result.not_after:%Y-%m-%d %H:%M} UTC){hosts}: {result.url}")
