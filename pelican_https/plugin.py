"""Pelican's signals, wired to the rewriter (through ``build.Build``) and the report.

Receivers are module level: Pelican's signals hold weak references.  Each
``pelican`` run has its own ``Build``, made as the run starts; a run inside
another (i18n_subsites builds each language so) has its own, on top of the
stack, and the outer one goes on when it ends.
"""

from __future__ import annotations

import json
import logging
import os

from . import github
from .build import Build
from .settings import SettingsError, load

logger = logging.getLogger(__name__)
# Pelican's loggers drop a message already logged in this process, which
# would hide the report of every rebuild after the first (pelican
# --autoreload): these keep every line.
report_logger = logging.getLogger("pelican_https.report")
headline_logger = logging.getLogger("pelican_https.headline")
for _logger in (report_logger, headline_logger):
    if hasattr(_logger, "disable_filter"):
        _logger.disable_filter()

_builds: list[Build] = []  # the run under way is the last


def on_initialized(pelican) -> None:
    """A bad setting stops pelican with its message alone: SystemExit is
    the one exception Pelican's command line prints without a traceback."""
    try:
        settings = load(pelican.settings)
    except SettingsError as error:
        raise SystemExit(f"pelican_https: {error}") from None
    if settings.site_scheme == "http":
        logger.warning("https: SITEURL is %r, an http URL; set it to https://%s",
                       pelican.settings.get("SITEURL"), settings.site_host)


def on_run_start(pelican) -> None:
    # pelican --autoreload runs the same Pelican again: each run starts
    # afresh, and one that failed midway (no finalized) leaves nothing behind
    while _builds and _builds[-1].pelican_id == id(pelican):
        _builds.pop()
    _builds.append(Build(pelican.settings, id(pelican)))


def on_content_object_init(content) -> None:
    if _builds:
        _builds[-1].add_content(content)


def on_all_generators_finalized(generators) -> None:
    if _builds:
        _builds[-1].rewrite_contents()


def on_content_written(path, context) -> None:
    if _builds:
        _builds[-1].add_written(path, None, context.get("article") or context.get("page"))


def on_feed_written(path, context, feed) -> None:
    if _builds:
        _builds[-1].add_written(path, "xml", None)  # a feed, whatever its name


def on_writer_finalized(generator, writer) -> None:
    if _builds:
        _builds[-1].rewrite_written()


def on_finalized(pelican) -> None:
    if not _builds:
        return
    build = _builds.pop()
    build.rewrite_written()
    build.rewrite_rest_of_output()
    report = build.report()
    headline = report.headline(build.settings.rewrite)
    _log(headline, report.blocks(build.settings.report_path, info=report_logger.isEnabledFor(logging.INFO)))
    if build.settings.report_path:
        _write_json(build.settings.report_path, report.to_json())
    if github.in_github_actions(os.environ):
        _to_github(build, report, headline)
    if build.settings.strict and report.mixed_content:
        raise SystemExit(f"pelican_https: HTTPS_STRICT: {report.mixed_content} insecure "
                         "subresources (mixed content) remain in the output, listed above")


def _log(headline: str, blocks: list[tuple[bool, str]]) -> None:
    # The headline shows at Pelican's default verbosity (warnings) without
    # being a warning itself; -q (critical only) hides it.
    shown = logging.getLogger().getEffectiveLevel() <= logging.WARNING
    headline_logger.setLevel(logging.INFO if shown else logging.NOTSET)
    headline_logger.info("%s", headline)
    for warn, text in blocks:  # (one message per category: a logged line costs ~1 ms)
        report_logger.log(logging.WARNING if warn else logging.INFO, "%s", text)


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # A URL from a file that is not UTF-8 holds lone surrogates: written as
    # \udcXX escapes, the report stays valid UTF-8 and JSON.
    with open(path, "w", encoding="utf-8", errors="backslashreplace") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _to_github(build: Build, report, headline: str) -> None:
    for command in github.annotations(report, build.locate):
        print(command, flush=True)  # the runner reads workflow commands on stdout
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(github.step_summary(report, headline))
