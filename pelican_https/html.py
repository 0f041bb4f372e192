"""HTML: whether a candidate URL sits where a browser follows it.

Only the tag around a candidate is read: the nearest ``<`` before it opens
the start tag whose attribute value the URL is in (``<img src="``), or the
element whose text it is in (``<style>``, a JSON ``<script>``).  Comments and
the text of a ``<textarea>`` are text, never markup.
"""

from __future__ import annotations

import bisect
import re
from html import unescape

from .css import css_url
from .scan import DATA, LINK, SUBRESOURCE, Place, json_string_at

TAG_NAME = re.compile(r"<([A-Za-z][^\s/>]*)")
# One step through a start tag: its ">", or an attribute's name and value
# (in double quotes, in single quotes, or none).
TAG_STEP = re.compile(r"""[\s/]*(?:(>)|([^\s/>][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*)))?)""")
WANTS_EVERY_ATTRIBUTE = frozenset({"link", "meta"})  # rel, property... may follow the URL
# A "<" that opens no start tag (a stray one inside an attribute value): look
# this many "<" back at most.
TAG_LOOKBACK = 3
NOT_A_START_TAG = ("</", "<!", "<?")

SUBRESOURCE_RELS = frozenset(
    "stylesheet icon apple-touch-icon apple-touch-icon-precomposed mask-icon "
    "preload modulepreload prefetch manifest".split()
)
SVG_SUBRESOURCE_ELEMENTS = frozenset({"image", "use", "feimage", "script"})
SUBRESOURCE_ATTRIBUTES = frozenset({"src", "poster", "background", "formaction", "manifest"})
SRCSET_ATTRIBUTES = frozenset({"srcset", "imagesrcset"})
LINK_ATTRIBUTES = frozenset({"cite", "longdesc", "url"})  # url: RSS <enclosure>
# Lazy loading: a script copies these into src/srcset.  Own hosts' URLs are
# upgraded there; other hosts' are not reported (the page may load no script).
LAZY_ATTRIBUTES = frozenset({"data-src", "data-lazy-src", "data-original"})
LAZY_SRCSET_ATTRIBUTES = frozenset({"data-srcset", "data-lazy-srcset"})
META_LINK_PREFIXES = ("og:", "twitter:")
REFRESH_URL = re.compile(r"(?i)url\s*=\s*['\"]?$")
WHITESPACE = re.compile(r"\s")

COMMENT = ("<!--", "-->")
ESCAPED_COMMENT = ("&lt;!--", "--&gt;")
TEXTAREA = (re.compile(r"(?i)<textarea\b[^>]*>"), re.compile(r"(?i)</textarea"))
ESCAPED_TEXTAREA = (re.compile(r"(?i)&lt;textarea\b.*?&gt;", re.S), re.compile(r"(?i)&lt;/textarea"))


class Tag:
    __slots__ = ("name", "attributes", "end")

    def __init__(self, name: str, attributes: dict, end: int | None):
        self.name = name              # lower case
        self.attributes = attributes  # name -> (value start, value end); the first wins
        self.end = end                # index after ">"; None: the text ends first, or not read

    def value(self, text: str, name: str) -> str:
        span = self.attributes.get(name)
        return text[span[0]:span[1]].strip().lower() if span else ""


def parse_tag(text: str, start: int, until: int | None = None) -> Tag | None:
    """The start tag at ``start``, or None if no start tag opens there.

    ``until``: stop at the attribute whose value holds that position (then
    ``end`` is None, as for a tag the text cuts off), but for elements whose
    other attributes say what a URL is (``rel``, ``property``...)."""
    opened = TAG_NAME.match(text, start)
    if opened is None:
        return None
    name = opened.group(1).lower()
    if name in WANTS_EVERY_ATTRIBUTE:
        until = None
    attributes: dict[str, tuple[int, int]] = {}
    for step in TAG_STEP.finditer(text, opened.end()):  # (contiguous: every step matches)
        group = step.lastindex  # 1: ">", 2: a name alone, 3-5: a name and its value
        if group == 1:
            return Tag(name, attributes, step.end())
        if group > 2:
            value_start, value_end = step.span(group)
            attributes.setdefault(step.group(2).lower(), (value_start, value_end))
            if until is not None and value_start <= until < value_end:
                return Tag(name, attributes, None)
    return Tag(name, attributes, None)  # the text ends


def tag_before(text: str, pos: int) -> Tag | None:
    """The start tag that ``pos`` is inside of or follows; None if the
    nearest "<" opens an end tag, a comment or a declaration, or none."""
    at = pos
    for _ in range(TAG_LOOKBACK):
        at = text.rfind("<", 0, at)
        if at < 0:
            return None
        tag = parse_tag(text, at, pos)
        if tag is not None:
            return tag
        if text.startswith(NOT_A_START_TAG, at):
            return None
    return None


class Document:
    """A text being scanned, and its spans that are text whatever they hold
    (comments, a textarea's text), found once, the first time one is asked.

    ``last``: no position after it is asked about (the last candidate URL):
    spans are looked for up to there only.  In the benchmarks' pages the last
    http URL sits on average at a third of the page (the theme's footer and
    scripts follow)."""

    __slots__ = ("text", "escaped", "last", "_spans", "element")

    def __init__(self, text: str, escaped: bool = False, last: int | None = None):
        self.text = text
        self.escaped = escaped  # a feed: its entries' escaped HTML counts too
        self.last = len(text) if last is None else last
        self._spans: list[tuple[int, int]] | None = None
        self.element: tuple[int, Tag | None] = (0, None)  # see feeds.element_before

    def ignored(self, pos: int) -> bool:
        if self._spans is None:
            self._spans = ignored_spans(self.text, self.escaped, self.last + 1)
        index = bisect.bisect(self._spans, (pos, pos)) - 1
        return index >= 0 and self._spans[index][1] > pos


def ignored_spans(text: str, escaped: bool, before: int | None = None) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) of the comments and textarea
    texts of ``text`` (``escaped``: also those in escaped HTML) that start
    before ``before`` (all of them if None): those that hold any position
    before it.  (A textarea's text starts after its start tag's ">": a tag
    that ``before`` cuts holds no such position.)"""
    before = len(text) if before is None else before
    spans = _comment_spans(text, *COMMENT, before)
    spans += _element_text_spans(text, *TEXTAREA, before)
    if escaped:
        spans += _comment_spans(text, *ESCAPED_COMMENT, before)
        spans += _element_text_spans(text, *ESCAPED_TEXTAREA, before)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _comment_spans(text: str, opener: str, closer: str, before: int) -> list[tuple[int, int]]:
    """A comment runs to its closer (or the end): an opener inside it opens
    nothing.  Escaped text holds no raw "<": an escaped comment ends at the
    first one (one left open does not hide the rest of a feed)."""
    spans = []
    at = text.find(opener, 0, before + len(opener) - 1)
    while at >= 0:
        end = text.find(closer, at + len(opener))
        end = len(text) if end < 0 else end + len(closer)
        if opener == ESCAPED_COMMENT[0]:
            raw = text.find("<", at, end)
            end = end if raw < 0 else raw
        spans.append((at, end))
        at = text.find(opener, end, before + len(opener) - 1)
    return spans


def _element_text_spans(text: str, opener: re.Pattern, closer: re.Pattern,
                        before: int) -> list[tuple[int, int]]:
    spans = []
    for opened in opener.finditer(text, 0, before):  # (start tags ending by then)
        closed = closer.search(text, opened.end())
        spans.append((opened.end(), len(text) if closed is None else closed.start()))
    return spans


def classify(doc: Document, start: int, after: int) -> Place | None:
    """Where the URL at ``start`` (its "://" ends at ``after``) sits."""
    place = place_at(doc.text, start, after)
    if place is None or doc.ignored(start):
        return None  # (checked last: most candidates are prose)
    return place


def place_at(text: str, start: int, after: int) -> Place | None:
    """``classify`` for text known to hold no comment nor textarea."""
    tag = tag_before(text, start)
    if tag is not None and (tag.end is None or tag.end > start):
        return attribute_place(text, tag, start)
    return text_place(text, tag, start, escaped_slashes=after - start > len("http://"))


def text_place(text: str, tag: Tag | None, pos: int, escaped_slashes: bool) -> Place | None:
    """A URL in the text after ``tag``: CSS in <style>, a string of JSON."""
    if escaped_slashes:  # http:\/\/ : a string of JSON in a <script>, nowhere else
        script = text.rfind("<script", 0, pos)
        if script >= 0 and text.find("</script", script, pos) < 0 and text[pos - 1] == '"':
            return Place(DATA, "script json", json_string_at(text, pos))
        return None
    if tag is None:
        return None
    if tag.name == "style":
        found = css_url(text, pos, tag.end)
        return Place(SUBRESOURCE, f"style {found[0]}", text[pos:found[1]].strip()) if found else None
    if tag.name == "script" and "json" in tag.value(text, "type") and text[pos - 1] == '"':
        return Place(DATA, "script json", json_string_at(text, pos))
    return None  # prose, <pre>/<code>, <title>...


def attribute_place(text: str, tag: Tag, pos: int) -> Place | None:
    """A URL in one of ``tag``'s attribute values."""
    for name, (start, end) in tag.attributes.items():
        if start <= pos < end:
            break
    else:
        return None  # inside a tag but in no value
    found = _attribute_kind(text, tag, name, start, pos)
    if found is None:
        return None
    kind, where = found
    if name == "style":
        css = css_url(text, pos, start, end)
        if css is None:
            return None
        return Place(kind, f"{where} {css[0]}", unescape(text[pos:css[1]]).strip())
    if name in SRCSET_ATTRIBUTES or name in LAZY_SRCSET_ATTRIBUTES:
        blank = WHITESPACE.search(text, pos, end)
        return Place(kind, where, unescape(text[pos:blank.start() if blank else end]).rstrip(","))
    url = unescape(text[pos:end]).strip()
    if where == "meta refresh":
        url = url.rstrip("'\"")
    return Place(kind, where, url)


def _attribute_kind(text: str, tag: Tag, name: str, start: int, pos: int) -> tuple[str, str] | None:
    """(kind, where) of a URL at ``pos`` in attribute ``name``'s value."""
    element = tag.name
    at_start = not text[start:pos].strip()
    if name in ("href", "xlink:href"):
        if not at_start:
            return None
        if element == "link":
            rel = tag.value(text, "rel")
            kind = SUBRESOURCE if SUBRESOURCE_RELS.intersection(rel.split()) else LINK
            return kind, f"link[rel={rel}] href" if rel else "link href"
        if element == "base" or element in SVG_SUBRESOURCE_ELEMENTS:
            return SUBRESOURCE, f"{element} {name}"
        return LINK, f"{element} {name}"
    if name in SUBRESOURCE_ATTRIBUTES:
        return (SUBRESOURCE, f"{element} {name}") if at_start else None
    if name in SRCSET_ATTRIBUTES or name in LAZY_SRCSET_ATTRIBUTES:
        before = text[start:pos].rstrip()
        if before and not before.endswith(","):
            return None  # a width or density descriptor's text, not a URL
        return (SUBRESOURCE if name in SRCSET_ATTRIBUTES else DATA), f"{element} {name}"
    if name in LAZY_ATTRIBUTES:
        return (DATA, f"{element} {name}") if at_start else None
    if name == "action":
        return (SUBRESOURCE, "form action") if at_start and element == "form" else None
    if name == "data":
        return (SUBRESOURCE, "object data") if at_start and element == "object" else None
    if name in LINK_ATTRIBUTES:
        return (LINK, f"{element} {name}") if at_start else None
    if name == "content" and element == "meta":
        return _meta_kind(text, tag, start, pos, at_start)
    if name == "style":
        return SUBRESOURCE, "style attribute"
    return None  # identifiers (xmlns, itemtype...), other data-*, alt, title...


def _meta_kind(text: str, tag: Tag, start: int, pos: int, at_start: bool) -> tuple[str, str] | None:
    meta = tag.value(text, "property") or tag.value(text, "name")
    if at_start and meta.startswith(META_LINK_PREFIXES):
        return LINK, f"meta {meta}"
    if tag.value(text, "http-equiv") == "refresh" and REFRESH_URL.search(text, start, pos):
        return LINK, "meta refresh"
    return None
