"""GitHub Actions: the report where people look at a commit or pull request.

In a workflow run (``GITHUB_ACTIONS=true``), each insecure subresource that
remains becomes a warning annotation on its source file and line (workflow
command ``::warning file=...,line=N::...``), and a short Markdown summary is
appended to the file named by ``GITHUB_STEP_SUMMARY``.  Pure: text in, text
out; the plugin prints and appends.
"""

from __future__ import annotations

from html import escape
from typing import Callable, Iterator

from .report import FEED_SUBRESOURCES, MIXED_CONTENT, OWN_LINKS, Report

TITLE = "Mixed content (pelican_https)"
# Where a source's text says the URL: (path for GitHub, 1-based line or None).
Locate = Callable[[str, str], "tuple[str, int | None]"]


def in_github_actions(environ) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def annotations(report: Report, locate: Locate) -> Iterator[str]:
    """One workflow command per mixed-content URL and source file it comes
    from (or one without a file, when it comes from the theme or settings)."""
    for entry in report.entries[MIXED_CONTENT]:
        message = (f"{entry.url} ({', '.join(sorted(entry.wheres))}) is loaded over http on "
                   f"{entry.pages} page{'s' if entry.pages != 1 else ''}: browsers block or flag "
                   "it. Use its https URL, or list its host in HTTPS_UPGRADE_HOSTS if it serves https.")
        if not entry.sources:
            place = entry.places[0]
            where = f"{place.output}:{place.line}" if place.line else place.output
            yield command({"title": TITLE}, f"{message} (from the theme or settings: {where})")
        for source in sorted(entry.sources):
            path, line = locate(source, entry.url)
            yield command({"file": path, "line": line, "title": TITLE}, message)


def command(properties: dict, message: str) -> str:
    """``::warning k=v,...::message``, escaped as the runner reads it."""
    shown = ",".join(f"{key}={_escape(str(value), True)}" for key, value in properties.items()
                     if value is not None)
    return f"::warning {shown}::{_escape(message, False)}"


def _escape(text: str, is_property: bool) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if is_property:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def step_summary(report: Report, headline: str, max_items: int = 20) -> str:
    """The Markdown appended to ``$GITHUB_STEP_SUMMARY``."""
    lines = ["### pelican_https", "", escape(headline.removeprefix("https: ")), ""]
    for kind, title in ((MIXED_CONTENT, "Mixed content (browsers block or flag it)"),
                        (OWN_LINKS, "http links to the site's own hosts"),
                        (FEED_SUBRESOURCES, "Insecure subresources in feed entries")):
        entries = report.entries[kind]
        if not entries:
            continue
        lines += [f"**{title}: {len(entries)}**", "", "| URL | where | pages | from |",
                  "| --- | --- | --- | --- |"]
        for entry in entries[:max_items]:
            sources = ", ".join(f"`{s}`" for s in sorted(entry.sources)) or "theme or settings"
            lines.append(f"| `{_cell(entry.url)}` | {_cell(', '.join(sorted(entry.wheres)))} "
                         f"| {entry.pages} | {_cell(sources)} |")
        if len(entries) > max_items:
            lines.append(f"| ... and {len(entries) - max_items} more | | | |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def line_of(text: str, url: str) -> int | None:
    """The first line of a source file's text that holds ``url`` (as written,
    or with "&" escaped as HTML writes it)."""
    for spelling in (url, url.replace("&", "&amp;")):
        at = text.find(spelling)
        if at >= 0:
            return text.count("\n", 0, at) + 1
    return None
