"""The pure core: text + rules -> upgraded text + what stays insecure.  No I/O.

It never parses or re-serializes a document.  The candidate scan (``scan``)
finds every ``http://``; the syntax module of the text (``html``, ``feeds``,
``css``, or JSON here) decides from the text around a candidate whether a
browser or feed reader follows it there.  An upgrade inserts one ``s`` after
``http`` (``S`` after ``HTTP``), with a host map replaces the host, and drops
an explicit ``:80``.  Every other byte is copied, so rewriting twice equals
rewriting once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from . import feeds, html
from .css import css_url
from .scan import DATA, LINK, SUBRESOURCE, Place, authority_at, candidates, json_string_at, upgrade_pieces

__all__ = ["DATA", "LINK", "SUBRESOURCE", "Finding", "RewriteResult", "Rules", "rewrite", "syntax_for"]


@dataclass(frozen=True)
class Rules:
    """Which hosts get upgraded."""

    own_hosts: frozenset[str]
    host_map: Mapping[str, str] = field(default_factory=dict)  # old host -> new host
    upgrade_hosts: frozenset[str] = frozenset()  # external hosts known to serve https
    upgrade_suffixes: tuple[str, ...] = ()  # ".example.org" matches a.example.org
    rewrite: bool = True  # False: only report

    @classmethod
    def from_settings(cls, settings) -> "Rules":
        return cls(own_hosts=settings.hosts, host_map=dict(settings.host_map),
                   upgrade_hosts=settings.upgrade_hosts,
                   upgrade_suffixes=settings.upgrade_suffixes, rewrite=settings.rewrite)

    def upgradable(self, host: str) -> bool:
        if host in self.own_hosts or host in self.upgrade_hosts:
            return True
        return bool(host) and host.endswith(self.upgrade_suffixes) if self.upgrade_suffixes else False


class Finding(NamedTuple):
    """An http URL that a browser or reader follows and that stays http."""

    url: str    # as a browser would request it
    kind: str   # SUBRESOURCE, LINK or DATA
    own: bool   # its host is one of the site's own hosts
    where: str  # e.g. "img src", "css url()", "<loc>"
    line: int   # 1-based line in the text


class RewriteResult(NamedTuple):
    text: str
    upgraded: int
    insecure: list[Finding]


def classify_css(doc: html.Document, start: int, after: int) -> Place | None:
    found = css_url(doc.text, start, 0)
    return Place(SUBRESOURCE, f"css {found[0]}", doc.text[start:found[1]].strip()) if found else None


def classify_json(doc: html.Document, start: int, after: int) -> Place | None:
    if start and doc.text[start - 1] == '"':
        return Place(DATA, "json", json_string_at(doc.text, start))
    return None


CLASSIFIERS = {"html": html.classify, "xml": feeds.classify, "css": classify_css, "json": classify_json}

SYNTAX_BY_EXTENSION = {
    ".html": "html", ".htm": "html", ".xhtml": "html", ".shtml": "html",
    ".xml": "xml", ".atom": "xml", ".rss": "xml", ".xsl": "xml", ".svg": "xml",
    ".css": "css",
    ".json": "json", ".webmanifest": "json", ".jsonld": "json",
}


def syntax_for(path: str) -> str | None:
    """The syntax of an output file by its name, None for files not scanned."""
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return SYNTAX_BY_EXTENSION.get(path[dot:].lower())


def rewrite(text: str, rules: Rules, syntax: str, report: bool = True,
            lines: bool = True) -> RewriteResult:
    """Upgrade the followed http URLs of ``text`` (html, xml, css or json).
    ``report=False``: list nothing insecure, and so look only at the URLs of
    hosts to upgrade.  ``lines=False``: the findings' lines are 0 (counting
    them is a pass over the text)."""
    classify = CLASSIFIERS[syntax]
    found = candidates(text)
    doc = html.Document(text, escaped=syntax == "xml", last=found[-1][0] if found else 0)
    pieces: list[str] = []
    copied_to = upgraded = 0
    insecure: list[tuple[int, Place, bool]] = []
    for start, after in found:
        authority = authority_at(text, after)
        upgrade = rules.rewrite and rules.upgradable(authority.host)
        if not upgrade and not report:
            continue
        place = classify(doc, start, after)
        if place is None:
            continue  # prose, a code sample, a comment, an identifier...
        if upgrade:
            new, end = upgrade_pieces(text, start, authority, rules.host_map.get(authority.host))
            pieces.append(text[copied_to:start])
            pieces += new
            copied_to = end
            upgraded += 1
        else:
            own = authority.host in rules.own_hosts
            if place.kind != DATA or own:  # other hosts' URLs in JSON are no concern
                insecure.append((start, place, own))
    if upgraded:
        pieces.append(text[copied_to:])
        text = "".join(pieces)
    return RewriteResult(text, upgraded, _findings(doc.text, insecure, lines))


def _findings(text: str, insecure: list[tuple[int, Place, bool]], lines: bool) -> list[Finding]:
    findings = []
    line, counted_to = 1, 0
    for start, place, own in insecure:
        if lines:
            line += text.count("\n", counted_to, start)
            counted_to = start
        findings.append(Finding(place.url, place.kind, own, place.where, line if lines else 0))
    return findings
