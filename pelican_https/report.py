"""Aggregating findings over a build into the text and the JSON report.

Pure: the plugin feeds it one ``RewriteResult`` per content object (the
pass over each article's HTML before templates run: upgrades counted once,
not once per page and feed that shows the article), one per output file
(what remains insecure is reported from there, file by file), and a function
telling which source content file a URL came from.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

from .rewrite import SUBRESOURCE, RewriteResult

# the three kinds of what remains insecure, in report order
SUBRESOURCES = "subresources"          # browsers block or flag: mixed content
OWN_DOMAIN_LINKS = "own_domain_links"  # http links to the site's own hosts
OTHER_LINKS = "other_links"            # http links to other hosts
KINDS = (SUBRESOURCES, OWN_DOMAIN_LINKS, OTHER_LINKS)

SourceOf = Callable[[str, str], "str | None"]  # (output file, url) -> source


class Remaining(NamedTuple):
    """One insecure URL left in the output.  (A named tuple: a big site has
    thousands, and a frozen dataclass is several times slower to create.)"""

    output: str        # output file, relative to OUTPUT_PATH, "/"-separated
    line: int
    url: str
    where: str
    source: str | None  # source content file, None for theme/settings/static


class Collector:
    """Findings of one build, content object by content object and output
    file by output file."""

    def __init__(self):
        self.files_scanned = 0
        self.contents_scanned = 0
        self.contents_changed = 0
        self.content_urls_upgraded = 0  # once per content object
        # The findings in the order added, column by column: no object per
        # finding outlives its file's pass.  (A big site has thousands; kept to
        # the end of the build, they were enough to set off one more full
        # garbage collection of Pelican's whole heap, at the report.)
        self._outputs: list[str] = []
        self._urls: list[str] = []
        self._kinds: list[str] = []
        self._owns: list[bool] = []
        self._wheres: list[str] = []
        self._lines: list[int] = []
        self._changed: set[str] = set()      # outputs that changed (rare after the content pass)
        self._upgraded: dict[str, int] = {}  # output -> URLs upgraded in it (template/theme URLs...)

    @property
    def files_changed(self) -> int:
        return len(self._changed)

    @property
    def urls_upgraded(self) -> int:  # in output files
        return sum(self._upgraded.values())

    def add(self, output: str, result: RewriteResult, changed: bool) -> None:
        self.files_scanned += 1
        if changed:
            self._changed.add(output)
        if result.upgraded:
            self._upgraded[output] = result.upgraded
        insecure = result.insecure
        if insecure:
            urls, kinds, owns, wheres, lines = zip(*insecure)  # Finding's fields
            self._outputs.extend([output] * len(insecure))
            self._urls.extend(urls)
            self._kinds.extend(kinds)
            self._owns.extend(owns)
            self._wheres.extend(wheres)
            self._lines.extend(lines)

    def forget(self, output: str) -> None:
        """Drop what ``add`` recorded for ``output``: the file is written
        again (Pelican's ``override_output``), and added again."""
        self.files_scanned -= 1
        self._changed.discard(output)
        self._upgraded.pop(output, None)
        keep = [i for i, kept in enumerate(self._outputs) if kept != output]
        if len(keep) < len(self._outputs):
            for column in (self._outputs, self._urls, self._kinds, self._owns,
                           self._wheres, self._lines):
                column[:] = [column[i] for i in keep]

    def add_content(self, upgraded: int) -> None:
        """One content object's HTML fields, rewritten before rendering.  Its
        findings are not kept: the output files that show the content are
        scanned too, and report them with their output file and line."""
        self.contents_scanned += 1
        self.contents_changed += upgraded > 0
        self.content_urls_upgraded += upgraded

    def report(self, source_of: SourceOf, siteurl: str | None = None,
               siteurl_insecure: bool = False, seconds: float = 0.0) -> "Report":
        remaining = {kind: RemainingList() for kind in KINDS}
        outputs, urls, kinds, owns = self._outputs, self._urls, self._kinds, self._owns
        wheres, lines = self._wheres, self._lines
        # ordered by (output, line), findings of one line in the order added:
        # two stable sorts of indices (a file's findings come in text order,
        # so the first sort only matters for a file added twice)
        order = sorted(range(len(outputs)), key=lines.__getitem__)
        order.sort(key=outputs.__getitem__)
        for i in order:
            output, url = outputs[i], urls[i]
            if kinds[i] == SUBRESOURCE:
                kind = SUBRESOURCES
            elif owns[i]:
                kind = OWN_DOMAIN_LINKS
            else:
                kind = OTHER_LINKS
            source = source_of(output, url) if kind != OTHER_LINKS else None
            remaining[kind].append(output, lines[i], url, wheres[i], source)
        return Report(self.files_scanned, self.files_changed, self.urls_upgraded,
                      remaining, siteurl, siteurl_insecure, seconds,
                      self.contents_scanned, self.contents_changed,
                      self.content_urls_upgraded)


class RemainingList(Sequence):
    """The ``Remaining`` items of one kind, stored column by column (no
    object per item: see ``Collector``); indexing and iterating give
    ``Remaining`` tuples."""

    __slots__ = ("outputs", "lines", "urls", "wheres", "sources")

    def __init__(self):
        self.outputs: list[str] = []
        self.lines: list[int] = []
        self.urls: list[str] = []
        self.wheres: list[str] = []
        self.sources: list[str | None] = []

    def append(self, output: str, line: int, url: str, where: str, source: str | None) -> None:
        self.outputs.append(output)
        self.lines.append(line)
        self.urls.append(url)
        self.wheres.append(where)
        self.sources.append(source)

    def __len__(self) -> int:
        return len(self.outputs)

    def __getitem__(self, index):
        columns = (self.outputs, self.lines, self.urls, self.wheres, self.sources)
        if isinstance(index, slice):
            return [Remaining(*item) for item in zip(*(column[index] for column in columns))]
        return Remaining(*(column[index] for column in columns))

    def __iter__(self):
        return map(Remaining, self.outputs, self.lines, self.urls, self.wheres, self.sources)

    def json_lines(self, encode: Callable[[str], str]) -> list[str]:
        """Each item as ``json.dumps(item._asdict())`` writes it (default
        separators), built from the columns: no dict per item."""
        return [
            f'{{"output": {encode(output)}, "line": {line}, "url": {encode(url)}, '
            f'"where": {encode(where)}, "source": {"null" if source is None else encode(source)}}}'
            for output, line, url, where, source
            in zip(self.outputs, self.lines, self.urls, self.wheres, self.sources)
        ]


class Report(NamedTuple):
    """The end-of-build report.  (Not a dataclass: see rewrite.Rules.)"""

    files_scanned: int
    files_changed: int
    urls_upgraded: int  # in output files only
    remaining: dict[str, RemainingList]
    siteurl: str | None = None
    siteurl_insecure: bool = False
    seconds: float = 0.0  # the plugin's own time in the build (wall clock around its code)
    contents_scanned: int = 0
    contents_changed: int = 0
    content_urls_upgraded: int = 0  # in content objects, once each

    @property
    def insecure_subresources(self) -> int:
        return len(self.remaining[SUBRESOURCES])

    def text_lines(self, max_items: int = 100) -> list[str]:
        """The report as printed at the end of the build, one line per item
        (at most ``max_items`` per kind; the JSON report lists them all)."""
        subresources = self.remaining[SUBRESOURCES]
        own_links = self.remaining[OWN_DOMAIN_LINKS]
        other_links = self.remaining[OTHER_LINKS]
        lines = [
            f"https: scanned {self.files_scanned} files and {self.contents_scanned} "
            f"content sources, upgraded {self.urls_upgraded + self.content_urls_upgraded} "
            f"http URLs: {self.content_urls_upgraded} in {self.contents_changed} content "
            f"sources, {self.urls_upgraded} in {self.files_changed} output files"
        ]
        if self.siteurl_insecure:
            lines.append(f"https: SITEURL is {self.siteurl!r}: http, not https")
        lines.append(
            f"https: {len(subresources)} insecure subresources remain "
            "(browsers block or flag them as mixed content)"
        )
        lines += _items(subresources, max_items)
        lines.append(f"https: {len(own_links)} http links to own hosts remain")
        lines += _items(own_links, max_items)
        hosts = Counter(_host_of(item.url) for item in other_links)
        summary = ", ".join(f"{host} {count}" for host, count in
                            sorted(hosts.items(), key=lambda hc: (-hc[1], hc[0]))[:5])
        lines.append(
            f"https: {len(other_links)} http links to other hosts remain"
            + (f" ({summary}{', ...' if len(hosts) > 5 else ''})" if other_links else "")
        )
        return lines

    def to_json(self, items_json: str | None = None) -> str:
        """The JSON report: the summary indented, then one line per item
        (``items_json``: what ``items_json()`` gave, if it was called already).

        Only the small summary goes through ``json.dumps(indent=...)``: with
        an indent, json encodes in pure Python, and a big site has thousands
        of items (the C encoder is about ten times faster)."""
        import json

        summary = json.dumps(
            {
                "files_scanned": self.files_scanned,
                "files_changed": self.files_changed,
                "urls_upgraded": self.urls_upgraded + self.content_urls_upgraded,
                "urls_upgraded_in_files": self.urls_upgraded,
                "contents_scanned": self.contents_scanned,
                "contents_changed": self.contents_changed,
                "urls_upgraded_in_contents": self.content_urls_upgraded,
                "siteurl": self.siteurl,
                "siteurl_insecure": self.siteurl_insecure,
                "own_seconds": round(self.seconds, 4),
                "remaining": {kind: len(items) for kind, items in self.remaining.items()},
            },
            indent=2,
            ensure_ascii=False,
        )
        if items_json is None:
            items_json = self.items_json()
        return summary[:-2] + ",\n" + items_json + "\n}\n"

    def items_json(self) -> str:
        """The JSON report's lists of items, its bulk (no figure of the
        summary in it: the plugin makes it while its own time is counted)."""
        # a string as json.dumps(..., ensure_ascii=False) writes it: the C
        # function JSONEncoder.encode calls, without that method's Python
        # call per string (four per item)
        from json.encoder import encode_basestring as encode

        lists = []
        for kind in KINDS:
            items = ",\n".join(f"    {line}" for line in self.remaining[kind].json_lines(encode))
            lists.append(f'  "{kind}": [\n{items}\n  ]' if items else f'  "{kind}": []')
        return ",\n".join(lists)


_AUTHORITY_PART = re.compile(r"[^/?#]*(?://[^/?#]*)?")  # "http://host:port"
_hosts: dict[str, str] = {}


def _host_of(url: str) -> str:
    # The host is a function of the URL up to its path: memoized by that
    # part, as a site links to many pages of the same few hosts.
    authority = _AUTHORITY_PART.match(url).group()
    host = _hosts.get(authority)
    if host is None:
        try:
            host = urlsplit(authority).hostname or "?"
        except ValueError:  # "http://[oops/": no valid host
            host = "?"
        if len(_hosts) > 100_000:
            _hosts.clear()
        _hosts[authority] = host
    return host


def _items(items: Sequence[Remaining], max_items: int) -> list[str]:
    lines = [f"https:   {_item(item)}" for item in items[:max_items]]
    if len(items) > max_items:
        lines.append(f"https:   ... and {len(items) - max_items} more (all of them in the "
                     "JSON report, see HTTPS_REPORT_PATH)")
    return lines


def _item(item: Remaining) -> str:
    source = f"from {item.source}" if item.source else "from the theme, settings or a static file"
    return f"{item.output}:{item.line}: {item.where} {item.url} ({source})"
