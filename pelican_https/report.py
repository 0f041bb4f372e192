"""What a build upgraded and what stays insecure, as people act on it.  Pure.

The plugin feeds the ``Collector`` one ``RewriteResult`` per content object
(each article's and page's HTML, upgraded once before templates run) and one
per output file (what stays insecure is found there, page by page).  The
``Report`` lists each insecure URL once, with how many pages show it and the
source files it comes from, grouped by what to do about it:

- mixed content: subresources of HTML pages and CSS, which browsers block or
  flag (act on these);
- http links to the site's own hosts (act on these too);
- subresources inside feed entries: feed readers fetch them, not browsers;
- links to other hosts, counted by host, naming those that look like the
  site's own (the same registrable domain).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple
from urllib.parse import urlsplit

from .rewrite import SUBRESOURCE, Finding, RewriteResult

MIXED_CONTENT = "mixed_content"
OWN_LINKS = "own_http_links"
FEED_SUBRESOURCES = "feed_subresources"
OTHER_LINKS = "other_http_links"
CATEGORIES = (MIXED_CONTENT, OWN_LINKS, FEED_SUBRESOURCES, OTHER_LINKS)
ACT_ON = (MIXED_CONTENT, OWN_LINKS)  # logged as warnings; the rest at INFO

HEADINGS = {  # (what, where: after the count of URLs)
    MIXED_CONTENT: ("insecure subresource", "on {pages} (mixed content: browsers block or flag them)"),
    OWN_LINKS: ("http link", "to the site's own hosts on {pages}"),
    FEED_SUBRESOURCES: ("insecure subresource", "in feed entries, in {pages} (feed readers fetch them, not browsers)"),
}
# Second-level labels under which a country's registrable domains sit
# (example.co.uk): enough to tell a blog's own subdomains without the whole
# Public Suffix List.
SECOND_LEVEL_LABELS = frozenset("co com net org ac gov edu ne or go".split())

SourcesOf = Callable[[str, str], Iterable[str]]  # (output file, url) -> its source files


class Place(NamedTuple):
    output: str  # output file, relative to OUTPUT_PATH, "/"-separated
    line: int


@dataclass
class Entry:
    """One insecure URL of one category, wherever it shows."""

    url: str
    wheres: set[str] = field(default_factory=set)    # "img src", "escaped img src"...
    places: list[Place] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)   # source files, relative to PATH

    @property
    def pages(self) -> int:
        return len({place.output for place in self.places})


@dataclass
class Counts:
    files_scanned: int = 0
    files_changed: int = 0
    urls_upgraded_in_files: int = 0
    contents_scanned: int = 0
    contents_changed: int = 0
    urls_upgraded_in_contents: int = 0


class Collector:
    """The findings of one build: content object by content object, output
    file by output file (a file written again replaces what it had)."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.outputs: dict[str, tuple[bool, int, list[Finding]]] = {}  # output -> (feed, upgraded, insecure)

    def add_content(self, upgraded: int) -> None:
        self.counts.contents_scanned += 1
        self.counts.contents_changed += upgraded > 0
        self.counts.urls_upgraded_in_contents += upgraded

    def add_output(self, output: str, feed: bool, result: RewriteResult) -> None:
        self.outputs[output] = (feed, result.upgraded, result.insecure)

    def report(self, sources_of: SourcesOf, search: Callable[[str], set[str]],
               own_hosts: Iterable[str]) -> "Report":
        """``sources_of(output, url)``: the source files of a URL in an
        output file (those of the article or page it shows); ``search(url)``:
        where else to look, for a URL no such page names a source of."""
        counts = Counts(**vars(self.counts))
        counts.files_scanned = len(self.outputs)
        entries: dict[str, dict[str, Entry]] = {category: {} for category in CATEGORIES}
        for output in sorted(self.outputs):
            feed, upgraded, insecure = self.outputs[output]
            counts.files_changed += upgraded > 0
            counts.urls_upgraded_in_files += upgraded
            for finding in insecure:
                group = entries[category(finding, feed)]
                entry = group.get(finding.url)
                if entry is None:
                    entry = group[finding.url] = Entry(finding.url)
                entry.wheres.add(finding.where)
                entry.places.append(Place(output, finding.line))
        # Sources of what is to be acted on: a feed's URL is named by the
        # article's page that shows it too.  (Not of links to other hosts:
        # a big blog has thousands, and the report counts them by host.)
        sources: dict[str, set[str]] = {}
        for kind in (MIXED_CONTENT, OWN_LINKS, FEED_SUBRESOURCES):
            for entry in entries[kind].values():
                found = sources.setdefault(entry.url, set())
                for output in dict.fromkeys(place.output for place in entry.places):
                    found.update(sources_of(output, entry.url))
        for kind in (MIXED_CONTENT, OWN_LINKS, FEED_SUBRESOURCES):
            for entry in entries[kind].values():
                entry.sources = sources[entry.url] or search(entry.url)
        ordered = {category: sorted(found.values(), key=lambda e: (-e.pages, e.url))
                   for category, found in entries.items()}
        return Report(counts, ordered, frozenset(own_hosts))


def category(finding: Finding, feed: bool) -> str:
    if finding.kind == SUBRESOURCE:
        return FEED_SUBRESOURCES if feed else MIXED_CONTENT
    return OWN_LINKS if finding.own else OTHER_LINKS


@dataclass
class Report:
    counts: Counts
    entries: dict[str, list[Entry]]  # category -> entries, most pages first
    own_hosts: frozenset[str]

    @property
    def mixed_content(self) -> int:
        return len(self.entries[MIXED_CONTENT])

    def headline(self, rewrite: bool = True) -> str:
        """One line saying what was upgraded, always shown."""
        c = self.counts
        upgraded = c.urls_upgraded_in_contents + c.urls_upgraded_in_files
        if rewrite and not upgraded:
            done = "no http URL to upgrade"
        elif rewrite:
            done = (f"upgraded {upgraded} http URLs: "
                    f"{c.urls_upgraded_in_contents} in {c.contents_changed} articles/pages (and every "
                    f"page and feed showing them), {c.urls_upgraded_in_files} in "
                    f"{_plural(c.files_changed, 'other file')}")
        else:
            done = "audit only (HTTPS_REWRITE = False), nothing upgraded"
        return (f"https: {done}; {_plural(c.files_scanned, 'file')} scanned; left: "
                f"{len(self.entries[MIXED_CONTENT])} mixed content, "
                f"{len(self.entries[OWN_LINKS])} own http links")

    def blocks(self, report_path: str | None = None, info: bool = True,
               max_items: int = 20) -> list[tuple[bool, str]]:
        """(warn, text) of each category below the headline, one message of
        several lines each: each insecure URL once, at most ``max_items``
        (all of them in the JSON report at ``report_path``, if there is one).
        ``info=False``: only the warnings (what is not shown is not made)."""
        blocks = []
        for kind in (MIXED_CONTENT, OWN_LINKS, FEED_SUBRESOURCES):
            entries = self.entries[kind]
            if not entries or not (info or kind in ACT_ON):
                continue
            pages = len({place.output for entry in entries for place in entry.places})
            noun = "feed" if kind == FEED_SUBRESOURCES else "page"
            what, where = HEADINGS[kind]
            lines = [f"https: {_plural(len(entries), what)} {where.format(pages=_plural(pages, noun))}:"]
            lines += [f"https:   {_item(entry, noun)}" for entry in entries[:max_items]]
            if len(entries) > max_items:
                where = f" (all of them in {report_path})" if report_path else ""
                lines.append(f"https:   ... and {len(entries) - max_items} more{where}")
            blocks.append((kind in ACT_ON, "\n".join(lines)))
        if self.entries[OTHER_LINKS] and info:
            blocks.append((False, "\n".join(self.other_hosts_lines())))
        return blocks

    def other_hosts_lines(self, shown: int = 5) -> list[str]:
        entries = self.entries[OTHER_LINKS]
        if not entries:
            return []
        hosts = Counter()
        for entry in entries:
            hosts[host_of(entry.url)] += len(entry.places)
        own_domains = {registrable_domain(host) for host in self.own_hosts}
        looks_own = [h for h in hosts if registrable_domain(h) in own_domains]
        others = [h for h in hosts if h not in looks_own]
        lines = [f"https: {len(entries)} http URLs of other hosts are linked, "
                 f"{sum(hosts.values())} times" + (f" ({_counted(others, hosts, shown)})" if others else "")]
        if looks_own:
            lines.append(f"https:   {_counted(looks_own, hosts, shown)} look like this site's own "
                         "(same domain): list those it serves in HTTPS_HOSTS, others serving https "
                         "in HTTPS_UPGRADE_HOSTS")
        return lines


    def to_json(self) -> dict:
        """The JSON report: the counts, then every insecure URL with every
        place it shows in."""
        return {
            **vars(self.counts),
            "urls_upgraded": self.counts.urls_upgraded_in_contents + self.counts.urls_upgraded_in_files,
            "remaining": {kind: len(entries) for kind, entries in self.entries.items()},
            **{kind: [{"url": entry.url, "where": sorted(entry.wheres), "pages": entry.pages,
                       "sources": sorted(entry.sources),
                       "found_in": [_place(p) for p in entry.places]}
                      for entry in entries]
               for kind, entries in self.entries.items()},
        }


def _counted(hosts: list[str], counts: Counter, shown: int) -> str:
    ordered = sorted(hosts, key=lambda h: (-counts[h], h))
    text = ", ".join(f"{host} {counts[host]}" for host in ordered[:shown])
    return text + (f", and {len(ordered) - shown} more" if len(ordered) > shown else "")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _item(entry: Entry, noun: str, shown: int = 3) -> str:
    if entry.sources:
        sources = sorted(entry.sources)
        source = ", ".join(sources[:shown]) + (f" and {len(sources) - shown} more" if len(sources) > shown else "")
    else:
        source = f"the theme or settings, e.g. {_place(entry.places[0])}"
    return f"{entry.url} ({', '.join(sorted(entry.wheres))}; {_plural(entry.pages, noun)}; from {source})"


def _place(place: Place) -> str:
    """"output:line", or the output alone when lines were not counted."""
    return f"{place.output}:{place.line}" if place.line else place.output


def host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:  # "http://[oops/": no valid host
        return "?"


def registrable_domain(host: str) -> str:
    """example.com for www.example.com; example.co.uk for a.example.co.uk."""
    labels = host.rstrip(".").split(".")
    take = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in SECOND_LEVEL_LABELS else 2
    return ".".join(labels[-take:])
