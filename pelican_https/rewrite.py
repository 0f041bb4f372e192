"""The pure core: text + rules -> upgraded text + findings.  No I/O.

How it stays byte-preserving and cheap: it never parses or re-serializes a
document.  One pass of a regular expression that starts with a literal
``:`` finds every ``http:`` + ``//`` (or JSON-escaped ``\\/\\/``), in any case,
in the text; only around such a candidate does it
look at the surroundings (the nearest ``<`` before it, that one tag's
attributes, a few characters of CSS) to decide whether the URL sits where
a browser or feed reader follows it.  An upgrade inserts one ``s`` after
``http`` (``S`` after ``HTTP``), and with a host map replaces the host; an
explicit ``:80`` port is dropped, as it is the http default and would be
wrong for https.  Every other byte is copied, so rewriting twice equals
rewriting once.

Syntaxes: ``html`` (attributes, ``<style>``, JSON in ``<script>``), ``xml``
(Atom/RSS feeds including the escaped HTML of content/summary/description,
sitemaps), ``css`` and ``json``.
"""

from __future__ import annotations

import bisect
import re
from typing import Mapping, NamedTuple

SUBRESOURCE = "subresource"  # fetched by the page itself: mixed content
LINK = "link"                # followed on click / by a reader or crawler
DATA = "data"                # a URL inside inline JSON; reported only when own


class Rules:
    """Which hosts get upgraded, compiled from the settings.  (A plain class,
    not a dataclass: making the plugin's dataclasses was a third of its
    import time, in every ``pelican`` run.)"""

    __slots__ = ("own_hosts", "host_map", "upgrade_hosts", "upgrade_suffixes", "rewrite",
                 "exact_hosts", "host_slash_prefixes")

    def __init__(self, own_hosts: frozenset[str], host_map: Mapping[str, str] | None = None,
                 upgrade_hosts: frozenset[str] = frozenset(),
                 upgrade_suffixes: tuple[str, ...] = (),  # ".example.org" matches a.example.org
                 rewrite: bool = True):  # False: only report
        self.own_hosts = own_hosts
        self.host_map = {} if host_map is None else host_map
        self.upgrade_hosts = upgrade_hosts
        self.upgrade_suffixes = upgrade_suffixes
        self.rewrite = rewrite
        # own + https-capable hosts, looked up for every candidate URL: one
        # set, built once
        exact = self.exact_hosts = own_hosts | upgrade_hosts
        # The same hosts + "/", for str.startswith: the usual URL (a host to
        # upgrade, as written, then "/") in one C call, measured 4 times
        # faster than finding the "/" and looking the host up in the set.
        # One comparison per host: for a long list, the set alone (empty).
        self.host_slash_prefixes = tuple(
            sorted(host + "/" for host in exact if host)) if len(exact) <= _MAX_PREFIX_HOSTS else ()

    @classmethod
    def from_settings(cls, s) -> "Rules":
        return cls(
            own_hosts=s.hosts,
            host_map=dict(s.host_map),
            upgrade_hosts=s.upgrade_hosts,
            upgrade_suffixes=s.upgrade_suffixes,
            rewrite=s.rewrite,
        )

    def __repr__(self) -> str:
        return (f"Rules(own_hosts={self.own_hosts!r}, host_map={self.host_map!r}, "
                f"upgrade_hosts={self.upgrade_hosts!r}, upgrade_suffixes={self.upgrade_suffixes!r}, "
                f"rewrite={self.rewrite!r})")

    def upgradable(self, host: str) -> bool:
        if host in self.exact_hosts:
            return True
        return bool(host) and any(host.endswith(suffix) for suffix in self.upgrade_suffixes)


_MAX_PREFIX_HOSTS = 12  # hosts to upgrade up to which host_slash_prefixes is used


class Finding(NamedTuple):
    """An http URL that a browser or reader follows and that stays http.

    (A named tuple: a big site has thousands, and a frozen dataclass is
    several times slower to create.)"""

    url: str
    kind: str    # SUBRESOURCE, LINK or DATA
    own: bool    # its host is one of the site's own hosts
    where: str   # e.g. "img src", "css url()", "<loc>"
    line: int    # 1-based line in the output file


class Fragment(NamedTuple):
    """A rewritten piece of HTML (an article's content) and the http URLs
    left in it, for the page that shows it verbatim: there the fragment is
    not scanned again, and each URL whose verdict depended on the fragment
    alone takes its outcome from here instead of being classified again.

    ``insecure``: (offset in ``text``, url, kind, own, where) of each URL
    left insecure whose verdict, host and URL text depend on no text outside
    the fragment (a "<" of the fragment opens their complete tag, or the
    text from it decides: see ``_Doc.local``), in text order.  ``others``:
    (offset, end of its "://") of every http URL start whose verdict may
    depend on the text around: classified in the page as usual."""

    text: str
    insecure: list
    others: list


class RewriteResult(NamedTuple):
    """(A named tuple: one per file and per content object.)"""

    text: str
    upgraded: int
    insecure: list[Finding]
    fragment: Fragment | None = None  # with rewrite(..., as_fragment=True)


# -- the candidate scan -----------------------------------------------------

# userinfo@ (rare), host, :port; stops at anything that ends a host.  The
# userinfo run is possessive (*+): it cannot contain "@", so giving characters
# back could never let the "@" match; without it, every host backtracks.  A
# port counts only where the authority ends (":80a" is no port: dropping
# ":80" there would glue the "a" onto the host).
_AUTHORITY = re.compile(
    r"(?:[^\s/\\?#\"'<>()@&\[\]]*+@)?([^\s/\\?#\"'<>()@&:;,\[\]]*)(:[0-9]*(?![\w.~%:-]))?"
)
# The host alone, where the character after it can start no userinfo
# ("@") nor port (":"), and continue no userinfo (";", ","): then it is the
# host _AUTHORITY finds, without _AUTHORITY's second pass over it.  No match
# otherwise (the run is possessive: it gives back no character to let the
# look-ahead pass).
_HOST = re.compile(r"[^\s/\\?#\"'<>()@&:;,\[\]]*+(?![@:;,])")
_URL_TEXT = re.compile(r"[^\s\"'<>()`]*")


def _locate(text: str, fragment: Fragment | None) -> tuple[list, int, Fragment | None]:
    """(candidates, lo, fragment): the (start, end of "://") of the http URL
    starts of ``text``, but for those of ``fragment`` where it is in ``text``
    (outside a comment, from ``lo``; else -1 and None): only the text around
    it is scanned."""
    lo = _fragment_at(text, fragment.text) if fragment is not None else -1
    if lo < 0:
        return _candidates(text), -1, None
    return _candidates_around(text, lo, lo + len(fragment.text), fragment.others), lo, fragment


def _authority_at(text: str, after: int):
    """(match, group of the host) of the authority after "://" at ``after``."""
    authority = _HOST.match(text, after)
    if authority is None:  # a userinfo or port may follow
        return _AUTHORITY.match(text, after), 1
    return authority, 0  # no userinfo, no port


def rewrite(text: str, rules: Rules, syntax: str, cache: dict | None = None,
            lines: bool = True, *, fragment: Fragment | None = None,
            as_fragment: bool = False) -> RewriteResult:
    """Upgrade the followed http URLs of ``text`` (html, xml, css or json).

    ``cache`` (optional, any dict, shared across the files of a build) memoizes
    verdicts by the text they depend on: the text from a tag's "<" up to a
    URL where that text decides (``<a href="``: the same in every article),
    else the whole tag.  Tags recur across pages, listings and feeds.
    ``lines=False``: the findings' lines are not counted (all 0).

    ``as_fragment`` (html): the result also carries a ``Fragment`` of the
    rewritten text (None when none can be made: no http URL left, a host
    map, a text that does not end with a tag).  ``fragment`` (html): such a
    fragment, perhaps shown verbatim in ``text``: where it is, outside a
    comment, it is not scanned again and its URLs' outcomes are taken from
    it.  Either way the result is the same as without them.
    """
    html = syntax == "html"
    candidates, lo, fragment = _locate(text, fragment if html else None)  # lo: where ``fragment`` is in ``text``
    if lo >= 0:
        known = [(lo + offset, *outcome) for offset, *outcome in fragment.insecure]
        if not candidates:  # (an https theme: nothing but the fragment's)
            return _result(text, text, 0, known, lines, None)
    else:
        known = None
        if not candidates:  # most files of a site that is already https
            return RewriteResult(text, 0, [])
    # A fragment's URLs are those of the rewritten text, at these offsets:
    # without a host map, an upgrade makes no new http URL start.
    keeping = (as_fragment and html and not rules.host_map  # every URL there ends inside:
               and (text[-64:].rstrip() or text.rstrip()).endswith(">"))  # (no copy)
    kept: list = []  # the Fragment's insecure
    others: list = []
    shift = 0  # text[i] lands at i + shift in the rewritten text
    classify = _CLASSIFIERS[syntax]
    pieces: list[str] = []
    append = pieces.append
    insecure: list[tuple[int, str, str, bool, str]] = []
    copied_to = 0
    upgraded = 0
    if cache is None:
        cache = {}
    last_url = candidates[-1][0] + 1
    doc = None  # the _Doc, made at the first URL whose verdict is not memoized
    rewriting = rules.rewrite
    exact = rules.exact_hosts
    own_hosts = rules.own_hosts
    suffixes = rules.upgrade_suffixes
    host_map = rules.host_map
    memo = cache.get
    prefixes = rules.host_slash_prefixes
    rfind = text.rfind
    find = text.find
    startswith = text.startswith
    if html:  # (a quote closes a value at ``start`` iff one comes later)
        last_double, last_single = rfind('"'), rfind("'")
    # a memoized verdict is checked against the comments, if any is before
    # the last URL (as _Doc.in_comment finds them)
    comments_possible = html and find("<!--", 0, last_url) >= 0
    for start, after in candidates:
        # The common case of _classify_html, inline (one call less per URL):
        # an http:// URL whose verdict is memoized by the text from its
        # tag's "<" (see _html_context).
        context = _MISS
        local = True  # a memoized verdict depends on the text from "<" on
        if html and after - start == 7:
            nearest = rfind("<", 0, start)
            if nearest >= 0 and start - nearest < 2048:
                memoized = memo(text[nearest:start])
                if memoized is not None:
                    context, quote = memoized
                    # the memo holds for a value that a later quote closes
                    if quote and start > (last_double if quote == '"' else last_single):
                        context = _MISS
                    elif context is not None and comments_possible:
                        if doc is None:
                            doc = _Doc(text, cache, syntax, last_url)
                        if doc.in_comment(start):
                            context = None
        if context is _MISS:
            if doc is None:
                doc = _Doc(text, cache, syntax, last_url)
            context = classify(doc, start, after - start > 7)
            local = doc.local
        if context is None:
            if keeping and not local:
                others.append((start + shift, after + shift))
            continue  # prose, code sample, comment, identifier attribute...
        # Most often the host is one to upgrade, as written, and a "/"
        # follows it: then it is what _HOST finds (no stop character in it,
        # none of "@:;," after it), for one startswith.
        if prefixes and rewriting and startswith(prefixes, after):
            upgraded += 1
            append(text[copied_to:start + 4])
            append("S" if text[start + 3] == "P" else "s")
            copied_to = start + 4
            shift += 1
            if host_map:
                slash = find("/", after)
                new_host = host_map.get(text[after:slash])
                if new_host is not None:
                    append(text[copied_to:after])
                    append(new_host)
                    copied_to = slash
            continue
        authority, host_group = _authority_at(text, after)
        host = authority.group(host_group).lower()
        if rewriting and (host in exact or (suffixes and rules.upgradable(host))):
            upgraded += 1
            append(text[copied_to:start + 4])
            append("S" if text[start + 3] == "P" else "s")
            copied_to = start + 4
            shift += 1
            new_host = host_map.get(host) if host_map else None
            if new_host is not None:
                append(text[copied_to:authority.start(host_group)])
                append(new_host)
                copied_to = authority.end(host_group)
            if host_group and authority.group(2) == ":80":
                append(text[copied_to:authority.start(2)])
                copied_to = authority.end(2)
                shift -= 3
        else:
            kind, where = context
            own = host in own_hosts
            if keeping and not local:
                others.append((start + shift, after + shift))
            if kind == DATA and not own:
                continue
            url = _url_at(text, start)
            insecure.append((start, url, kind, own, where))
            if keeping and local:
                kept.append((start + shift, url, kind, own, where))
    if copied_to:
        append(text[copied_to:])
        text_out = "".join(pieces)
    else:
        text_out = text
    made = Fragment(text_out, kept, others) if keeping and (kept or others) else None
    if known:  # the fragment's, then these, in text order
        insecure = sorted(known + insecure) if insecure else known
    return _result(text, text_out, upgraded, insecure, lines, made)


def _result(text: str, text_out: str, upgraded: int, insecure: list, lines: bool,
            fragment: Fragment | None) -> RewriteResult:
    """The RewriteResult, from the (start in ``text``, url, kind, own, where)
    of each URL left insecure, in text order."""
    if not lines:
        findings = [Finding(url, kind, own, where, 0) for _, url, kind, own, where in insecure]
    else:
        findings = []
        line, counted_to = 1, 0
        for start, url, kind, own, where in insecure:
            line += text.count("\n", counted_to, start)
            counted_to = start
            findings.append(Finding(url, kind, own, where, line))
    return RewriteResult(text_out, upgraded, findings, fragment)


def _fragment_at(text: str, fragment: str) -> int:
    """Where ``fragment`` first appears in ``text`` (looked for by its first
    characters, then compared whole), or -1 if nowhere or inside a comment
    (one opened before it makes its URLs comment; one that opens inside it
    is the fragment's own)."""
    probe = fragment[:64]
    at = text.find(probe) if probe else -1
    for _ in range(3):
        if at < 0 or text.startswith(fragment, at):
            break
        at = text.find(probe, at + 1)
    else:
        return -1
    if at < 0:
        return -1
    opened = text.rfind("<!--", 0, at + 3)  # + 3: one that straddles its start
    if opened >= 0:
        closed = text.find("-->", opened + 4)
        if closed < 0 or closed + 3 > at:
            return -1
    return at


def _candidates_around(text: str, lo: int, hi: int, others: list):
    """_candidates(text) where text[lo:hi] is a fragment whose URL starts are
    known, but for those of the fragment's URLs that are not (``others``):
    only the text around it is scanned.  (_candidates' loop, with its
    bounds, twice: the tested spec of both.  Loops, not comprehensions: on
    CPython 3.11 each comprehension is one more function call, once per page.)"""
    found = []
    append = found.append
    for separator in _SEPARATOR.finditer(text, 0, lo + 8):  # + 8: "http:\/\/" from before lo
        start = separator.start() - 4
        if start < lo:
            append((start, separator.end()))
    for offset, end in others:
        append((lo + offset, lo + end))
    last, first_after = (found[-1][0] if found else -1), len(found)
    for separator in _SEPARATOR.finditer(text, hi):
        append((separator.start() - 4, separator.end()))
    if len(found) > first_after and found[first_after][0] < last:  # (one after the fragment starts in it)
        found.sort()
    return found


# An http URL's separator: "://" or JSON's ":\\/\\/" after "http" in any case.
# The pattern starts with the literal ":", which the re engine looks for in a
# tight loop: one pass over the text, measured 1.4 to 1.8 times faster than
# str.rfind of "p://", then "P://", then a backslash (CPython 3.11, the
# benchmark's pages and articles); a look-behind then checks "http".
_SEPARATOR = re.compile(r":(?<=[hH][tT][tT][pP]:)(?://|\\/\\/)")


def _candidates(text: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """(start of "http", end of "://") of each http URL start, in order (of
    those whose separator, from its ":", lies in text[lo:hi])."""
    found = []
    for separator in _SEPARATOR.finditer(text, lo, len(text) if hi is None else hi):
        found.append((separator.start() - 4, separator.end()))
    return found


_URL_STOPS = ("&quot;", "&#39;", "&#34;", "&apos;", "&gt;", "&lt;")  # escaped quotes, brackets


def _url_at(text: str, start: int) -> str:
    """The URL text at ``start``, cut at the first escaped quote or bracket
    (an escaped attribute value ends there)."""
    url = _URL_TEXT.match(text, start).group()
    if "\\" in url:
        url = url.replace("\\/", "/")
    amp = url.find("&")
    while amp >= 0:  # (one look per "&", not one search per stop)
        if url.startswith(_URL_STOPS, amp):
            url = url[:amp]
            break
        amp = url.find("&", amp + 1)
    return url.rstrip(",;")


class _Doc:
    """The text being scanned, with facts computed once and only if needed."""

    __slots__ = ("text", "cache", "syntax", "last_url", "local", "_comments", "_lt_before",
                 "_lt_at", "element")

    def __init__(self, text: str, cache: dict, syntax: str = "html", last_url: int | None = None):
        self.text = text
        self.cache = cache
        self.syntax = syntax
        self.last_url = len(text) if last_url is None else last_url  # no URL after this
        # set by each html verdict: True when it depends on no text before
        # the "<" that opens the URL's tag nor after that tag's end (the tag
        # is complete and its parse fixed), so it holds wherever this text
        # reappears verbatim outside a comment (see Fragment)
        self.local = False
        self._comments = None  # sorted (start, end) of every comment before last_url
        self._lt_before = 0    # the last "<" before this position is at _lt_at
        self._lt_at = -1
        # xml: (its "<", its ">", name) of the complete start tag that the
        # last URL's text is in: the next URL's, in the same element, too
        self.element = (-1, -1, None)

    def in_comment(self, pos: int) -> bool:
        comments = self._comments
        if comments is None:
            comments = self._comments = _comment_spans(
                self.text, self.syntax == "xml", self.last_url)
        if not comments:
            return False
        index = bisect.bisect(comments, (pos, pos)) - 1
        return index >= 0 and comments[index][1] > pos

    def last_lt(self, pos: int) -> int:
        """text.rfind("<", 0, pos), searching back only to the previous
        call's position: URLs come in order, and in a feed the "<" before
        them (<content type="html">) can be a whole article back."""
        if pos < self._lt_before:
            return self.text.rfind("<", 0, pos)
        found = self.text.rfind("<", self._lt_before, pos)
        if found >= 0:
            self._lt_at = found
        self._lt_before = pos
        return self._lt_at


def _comment_spans(text: str, escaped_too: bool, end_of_search: int) -> list[tuple[int, int]]:
    """(start, end) of the comments that open before ``end_of_search``, in
    order; ``escaped_too`` (a feed): HTML comments escaped in an entry's text
    (``&lt;!-- --&gt;``) as well.  A comment is skipped whole: an opener inside
    it opens nothing.  Escaped text holds no raw "<": an escaped comment ends
    at the first one (so an XML comment or tag after it counts, and one left
    open does not hide the rest of the feed).  Both kinds are found in one
    pass, by their "!--" (two passes over a feed, one per opener, were a
    third of its report's time)."""
    find = text.find
    spans = []
    if not escaped_too:
        at = find("<!--", 0, end_of_search)
        while at >= 0:
            end = find("-->", at + 4)
            end = len(text) if end < 0 else end + 3
            spans.append((at, end))
            at = find("<!--", end, end_of_search)
        return spans
    at = find("!--", 0, end_of_search)
    while at >= 0:
        if at >= 1 and text[at - 1] == "<":
            start, closer = at - 1, "-->"
        elif at >= 4 and text.startswith("&lt;", at - 4):
            start, closer = at - 4, "--&gt;"
        else:
            at = find("!--", at + 3, end_of_search)
            continue
        end = find(closer, at + 3)
        end = len(text) if end < 0 else end + len(closer)
        if closer == "--&gt;":
            raw = find("<", at + 3, end)
            if raw >= 0:
                end = raw
        spans.append((start, end))
        at = find("!--", end, end_of_search)
    return spans


# -- tags -------------------------------------------------------------------

_TAG_NAME = re.compile(r"<([A-Za-z][^\s/>]*)")
_ATTRIBUTE = re.compile(
    r"""[\s/]*([^\s/>][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*)))?"""
)
_TAG_END = re.compile(r"[\s/]*>")


class _Tag:
    __slots__ = ("name", "attributes", "end", "loose")

    def __init__(self, name, attributes, end, loose=False):
        self.name = name              # lower case
        self.attributes = attributes  # name -> (value_start, value_end); first wins
        self.end = end                # index after ">", or None if unterminated
        # a value opens a quote that nothing after it closes (so it was read
        # unquoted): a quote anywhere later in the text would change this
        # parse, so no verdict on this tag is memoized
        self.loose = loose

    def value(self, text: str, name: str) -> str:
        span = self.attributes.get(name)
        return text[span[0]:span[1]].strip().lower() if span else ""


def _parse_tag(text: str, start: int) -> _Tag | None:
    opened = _TAG_NAME.match(text, start)
    if opened is None:
        return None
    attributes: dict[str, tuple[int, int]] = {}
    pos = opened.end()
    loose = False
    while True:
        closed = _TAG_END.match(text, pos)
        if closed is not None:
            return _Tag(opened.group(1).lower(), attributes, closed.end(), loose)
        attribute = _ATTRIBUTE.match(text, pos)
        if attribute is None or attribute.end() == pos:
            return _Tag(opened.group(1).lower(), attributes, None, loose)  # end of text
        name = attribute.group(1).lower()
        for group in (2, 3, 4):
            if attribute.start(group) >= 0:
                attributes.setdefault(name, attribute.span(group))
                if group == 4 and text.startswith(('"', "'"), attribute.start(4)):
                    loose = True
                break
        pos = attribute.end()


def _tag_before(text: str, pos: int) -> tuple[int, _Tag | None]:
    """The start tag that ``pos`` is inside of or follows; (-1, None) if none.

    A ``<`` that opens no start tag (``</p>``, ``<!``, ``a < b``) means text,
    except a stray ``<`` inside an attribute value: then look one further back.
    """
    at = pos
    for _ in range(3):
        at = text.rfind("<", 0, at)
        if at < 0:
            return -1, None
        tag = _parse_tag(text, at)
        if tag is not None:
            return at, tag
        if text.startswith(("</", "<!", "<?"), at):
            return at, None
    return -1, None


# -- what each attribute holds ----------------------------------------------

_SUBRESOURCE_RELS = frozenset(
    "stylesheet icon apple-touch-icon apple-touch-icon-precomposed mask-icon "
    "preload modulepreload prefetch manifest".split()
)
_SVG_SUBRESOURCE_ELEMENTS = frozenset({"image", "use", "feimage", "script"})
_SUBRESOURCE_ATTRIBUTES = frozenset({"src", "poster", "background", "formaction", "manifest"})
_LINK_ATTRIBUTES = frozenset({"cite", "longdesc", "url"})  # url: RSS <enclosure>
_REFRESH_URL = re.compile(r"(?i)url\s*=\s*['\"]?$")
_QUOTES = ('"', "'", "&quot;", "&#34;", "&#39;", "&apos;", "&#x27;", "&#x22;")


def _attribute_context(text: str, tag: _Tag, name: str, span, pos: int):
    value_start, _ = span
    at_start = not text[value_start:pos].strip()
    element = tag.name
    if name in ("href", "xlink:href"):
        if not at_start:
            return None
        if element == "link":
            rel = tag.value(text, "rel")
            kind = SUBRESOURCE if _SUBRESOURCE_RELS.intersection(rel.split()) else LINK
            return kind, f"link[rel={rel}] href" if rel else "link href"
        if element == "base" or element in _SVG_SUBRESOURCE_ELEMENTS:
            return SUBRESOURCE, f"{element} {name}"
        return LINK, f"{element} {name}"
    if name in _SUBRESOURCE_ATTRIBUTES:
        return (SUBRESOURCE, f"{element} {name}") if at_start else None
    if name in ("srcset", "imagesrcset"):
        before = text[value_start:pos].rstrip()
        if not before or before.endswith(","):
            return SUBRESOURCE, f"{element} {name}"
        return None
    if name == "action":
        return (SUBRESOURCE, "form action") if at_start and element == "form" else None
    if name == "data":
        return (SUBRESOURCE, "object data") if at_start and element == "object" else None
    if name in _LINK_ATTRIBUTES:
        return (LINK, f"{element} {name}") if at_start else None
    if name == "content" and element == "meta":
        meta = tag.value(text, "property") or tag.value(text, "name")
        if at_start and meta.startswith(("og:", "twitter:")):
            return LINK, f"meta {meta}"
        if tag.value(text, "http-equiv") == "refresh" and _REFRESH_URL.search(text, value_start, pos):
            return LINK, "meta refresh"
        return None
    if name == "style":
        css = _css_context(text, pos, value_start)
        return (SUBRESOURCE, f"style attribute {css}") if css else None
    return None  # identifiers (xmlns, itemtype...), data-*, alt, title...


# -- CSS ---------------------------------------------------------------------

def _css_context(text: str, pos: int, lo: int) -> str | None:
    """'url()' or '@import' if ``pos`` starts a URL there, else None."""
    at = pos
    quoted = False
    for quote in _QUOTES:
        if text.startswith(quote, at - len(quote)) and at - len(quote) >= lo:
            at -= len(quote)
            quoted = True
            break
    while at > lo and text[at - 1] in " \t\r\n\f":
        at -= 1
    if at - 4 >= lo and text[at - 4:at].lower() == "url(":
        where = "url()"
    elif quoted and at - 7 >= lo and text[at - 7:at].lower() == "@import":
        where = "@import"
    else:
        return None
    opened = text.rfind("/*", lo, pos)
    if opened >= 0 and text.find("*/", opened + 2, pos) < 0:
        return None  # in a CSS comment
    return where


# -- the syntaxes ------------------------------------------------------------

_MISS = object()
_CACHE_LIMIT = 200_000


def _classify_html(doc: _Doc, pos: int, escaped_slashes: bool):
    verdict = _html_context(doc, pos, escaped_slashes)
    if verdict is not None and doc.in_comment(pos):
        return None  # checked last: most candidates are no URL a browser follows
    return verdict


def _html_context(doc: _Doc, pos: int, escaped_slashes: bool):
    text = doc.text
    cache = doc.cache
    nearest = text.rfind("<", 0, pos)
    if nearest < 0 or escaped_slashes or pos - nearest >= 2048:
        at, tag = _tag_before(text, pos)
        # escaped slashes: JSON in a <script> opened anywhere before
        doc.local = not escaped_slashes and at >= 0 and _fixed(tag)
        return _html_verdict(text, pos, escaped_slashes, tag)
    doc.local = True  # a memoized verdict is a function of text from "<" on
    # Most URLs sit in a quoted attribute value (<a href=", <img srcset="a 1x,
    # ) or in text after a complete tag.  Then the verdict is a function of
    # the text from the tag's "<" to the URL, the same for every article,
    # provided the value's quote closes after the URL (see _prefix_decides):
    # memoized by that text, with that quote.
    memoized = cache.get(text[nearest:pos])
    if memoized is not None:
        verdict, quote = memoized
        if not quote or text.find(quote, pos) >= 0:
            return verdict
    # Otherwise the verdict is a function of the text from that "<" to the
    # first ">" after the URL when that ">" ends the tag: memoize it by that.
    key = None
    closing = text.find(">", pos)
    if closing >= 0 and closing - nearest < 2048:
        key = (text[nearest:closing + 1], pos - nearest)
        verdict = cache.get(key, _MISS)
        if verdict is not _MISS:
            return verdict
    at, tag = _tag_before(text, pos)
    verdict = _html_verdict(text, pos, escaped_slashes, tag)
    doc.local = at >= 0 and _fixed(tag)
    if at != nearest:
        return verdict  # a "<" inside a value: the verdict looked further back
    quote = _prefix_decides(text, tag, pos)
    if quote is not None:
        key, verdict_kept = text[nearest:pos], (verdict, quote)
    elif tag is not None and tag.loose:
        return verdict  # its parse depends on the text after it
    elif key is None or not (
        tag is None or tag.end is None or tag.end <= pos or tag.end == closing + 1
    ):
        return verdict
    else:
        verdict_kept = verdict
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    cache[key] = verdict_kept
    return verdict


def _prefix_decides(text: str, tag: _Tag | None, pos: int) -> str | None:
    """Whether the verdict on a URL is a function of the text from its tag's
    "<" (the one ``tag`` was read from) up to it, and on which condition:
    None if it is not; else the quote that must close the URL's value
    somewhere after it ("" if none must).

    It is when the parse of everything before the URL is fixed (no quoted
    value before it runs on past it, as in a loose tag) and either the URL
    is in the text after the complete tag, or it is in a value of the tag:
    quoted (the value runs to its closing quote, whichever URL it holds) or
    not (it runs at least through the URL).  Not for a <link> or <meta>,
    whose rel, property, name or http-equiv may follow the URL.  A "<" that
    opens an end tag, a comment or a declaration (no ``tag``): the verdict
    is "not followed", whatever follows."""
    if tag is None:
        return ""
    if tag.loose:
        return None
    if tag.end is not None and tag.end <= pos:
        return ""
    if tag.name == "link" or tag.name == "meta":
        return None
    for start, end in tag.attributes.values():
        if start <= pos < end:
            quote = text[start - 1]
            return quote if quote == '"' or quote == "'" else ""
    return None  # not in a value: what follows decides what it is


def _fixed(tag: _Tag | None) -> bool:
    """Whether a tag's parse depends on its own text only (or there is no
    tag: the "<" opens an end tag, a comment or a declaration)."""
    return tag is None or (tag.end is not None and not tag.loose)


def _html_verdict(text: str, pos: int, escaped_slashes: bool, tag):
    if tag is not None and (tag.end is None or tag.end > pos):
        for name, span in tag.attributes.items():
            if span[0] <= pos < span[1]:
                return _attribute_context(text, tag, name, span, pos)
        return None  # inside a tag but not in a value (a stray "http:" name)
    # text between tags
    if escaped_slashes:  # http:\/\/ : JSON in a <script>, nowhere else
        script = text.rfind("<script", 0, pos)
        if script >= 0 and text.find("</script", script, pos) < 0 and text[pos - 1] == '"':
            return DATA, "script json"
        return None
    if tag is None:
        return None
    if tag.name == "style":
        css = _css_context(text, pos, tag.end)
        return (SUBRESOURCE, f"style {css}") if css else None
    if tag.name == "script" and "json" in tag.value(text, "type") and text[pos - 1] == '"':
        return DATA, "script json"
    return None  # prose, <pre>/<code>, <title>, <textarea>...


# elements of feeds and sitemaps whose text is one URL
_XML_URL_ELEMENTS = frozenset(
    "link loc image:loc video:content_loc video:player_loc comments uri icon logo "
    "url wfw:commentrss docs".split()
)
_XML_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#34;", '"'),
                 ("&#39;", "'"), ("&apos;", "'"), ("&#x27;", "'"), ("&amp;", "&"))


def _xml_unescape(text: str) -> str:
    if "&" not in text:
        return text
    for entity, char in _XML_ENTITIES:
        text = text.replace(entity, char)
    return text


def _classify_xml(doc: _Doc, pos: int, escaped_slashes: bool):
    text = doc.text
    if doc.in_comment(pos):
        return None
    nearest = doc.last_lt(pos)
    if nearest < 0:
        return None
    # Usually the URL is in the text of the element opened at ``nearest``
    # (<loc>, <link>, <content type="html">...): memoize that tag's parse.
    known_at, closing, name = doc.element
    if known_at == nearest and closing < pos:  # (the same first ">" after it)
        tag_end = closing + 1
    else:
        name = None
        closing = text.find(">", nearest, pos)
        if closing >= 0 and closing - nearest < 512:
            key = ("<", text[nearest:closing + 1])
            name = doc.cache.get(key)  # the name of a complete start tag
            if name is None:
                tag = _parse_tag(text[nearest:closing + 1], 0)
                if tag is not None and tag.end == closing + 1 - nearest:
                    name = doc.cache[key] = tag.name
            if name is not None:
                doc.element = (nearest, closing, name)
            tag_end = closing + 1
    if name is None:  # in a tag's attribute (an Atom <link href>...) or unusual
        at, tag = _tag_before(text, pos)
        if tag is None:
            return None
        if tag.end is None or tag.end > pos:
            return _classify_html(doc, pos, escaped_slashes)
        name, tag_end = tag.name, tag.end
    if name in _XML_URL_ELEMENTS:
        return (LINK, f"<{name}>") if not text[tag_end:pos].strip() else None
    # escaped HTML (Atom content/summary, RSS description): look at the
    # escaped tag around the URL, unescaped, as HTML
    opened = text.rfind("&lt;", tag_end, pos)
    if opened < 0:
        return None
    closing = text.find("&gt;", pos, pos + 2048)
    # As in _html_context: a URL that starts a quoted value is judged by the
    # (escaped) text from its tag's "&lt;" to it, whichever URL it is.
    quote = text[pos - 1]
    quoted = (not escaped_slashes and closing >= 0 and pos - opened < 2048
              and (quote == '"' or quote == "'") and text.find(quote, pos, closing) >= 0)
    if quoted:
        verdict = doc.cache.get(("&", text[opened:pos]), _MISS)
        if verdict is not _MISS:
            return verdict
    key = None
    if closing >= 0:
        key = ("&", text[opened:closing + 4], pos - opened, escaped_slashes)
        verdict = doc.cache.get(key, _MISS)
        if verdict is not _MISS:
            return verdict
        end = closing + 4
    else:
        end = text.find("<", pos)
        end = min(len(text) if end < 0 else end, pos + 2048)
    snippet = _Doc(_xml_unescape(text[opened:end]), {})
    snippet_pos = len(_xml_unescape(text[opened:pos]))
    verdict = _classify_html(snippet, snippet_pos, escaped_slashes)
    if verdict is not None:
        verdict = verdict[0], f"escaped {verdict[1]}"
    if quoted:
        at, snippet_tag = _tag_before(snippet.text, snippet_pos)
        if (at == snippet.text.rfind("<", 0, snippet_pos)
                and _prefix_decides(snippet.text, snippet_tag, snippet_pos)
                == snippet.text[snippet_pos - 1]):  # (it starts the quoted value)
            key = ("&", text[opened:pos])
    if key is not None:
        if len(doc.cache) > _CACHE_LIMIT:
            doc.cache.clear()
        doc.cache[key] = verdict
    return verdict


def _classify_css(doc: _Doc, pos: int, escaped_slashes: bool):
    css = _css_context(doc.text, pos, 0)
    return (SUBRESOURCE, f"css {css}") if css else None


def _classify_json(doc: _Doc, pos: int, escaped_slashes: bool):
    return (DATA, "json") if pos and doc.text[pos - 1] == '"' else None


_CLASSIFIERS = {
    "html": _classify_html,
    "xml": _classify_xml,
    "css": _classify_css,
    "json": _classify_json,
}

SYNTAX_BY_EXTENSION = {
    ".html": "html", ".htm": "html", ".xhtml": "html", ".shtml": "html",
    ".xml": "xml", ".atom": "xml", ".rss": "xml", ".xsl": "xml", ".svg": "xml",
    ".css": "css",
    ".json": "json", ".webmanifest": "json", ".jsonld": "json",
}


def syntax_for(path: str) -> str | None:
    """The syntax of an output file by its name, None for files not scanned."""
    dot = path.rfind(".")
    return SYNTAX_BY_EXTENSION.get(path[dot:].lower()) if dot >= 0 else None
