"""XML: Atom and RSS feeds (with the escaped HTML of their entries) and sitemaps.

A URL is followed in the text of an element that holds one URL (``<link>``,
``<loc>``...), in an attribute (Atom's ``<link href>``, RSS ``<enclosure url>``),
in HTML inside CDATA, and in the escaped HTML of an entry's content, summary
or description: there the escaped tag around the URL is unescaped and read
as HTML.  Identifiers (Atom ``<id>``, RSS ``<guid>``) and comments are left
alone.
"""

from __future__ import annotations

from html import unescape

from . import html
from .scan import LINK, Place

# Elements of feeds and sitemaps whose text is one URL.
URL_ELEMENTS = frozenset(
    "link loc image:loc video:content_loc video:player_loc comments uri icon logo "
    "url wfw:commentrss docs".split()
)
XML_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#34;", '"'),
                ("&#39;", "'"), ("&apos;", "'"), ("&#x27;", "'"), ("&amp;", "&"))
ESCAPED_OPEN, ESCAPED_CLOSE = "&lt;", "&gt;"
# An escaped tag is read at most this far on from its URL (an unterminated
# one would otherwise run to the end of the entry).
ESCAPED_TAG_LIMIT = 2048


def xml_unescape(text: str) -> str:
    if "&" not in text:
        return text
    for entity, char in XML_ENTITIES:
        text = text.replace(entity, char)
    return text


def classify(doc: html.Document, start: int, after: int) -> Place | None:
    """Where the URL at ``start`` of a feed or sitemap sits."""
    text = doc.text
    tag = element_before(doc, start)
    if tag is None:
        return None
    if tag.end is None or tag.end > start:  # an attribute, or HTML in CDATA
        place = html.attribute_place(text, tag, start)
    elif tag.name in URL_ELEMENTS:
        if text[tag.end:start].strip():
            return None
        end = text.find("<", start)
        url = unescape(text[start:len(text) if end < 0 else end]).strip()
        place = Place(LINK, f"<{tag.name}>", url)
    else:
        place = escaped_place(text, tag.end, start, after)
    if place is None or doc.ignored(start):
        return None
    return place


def element_before(doc: html.Document, start: int) -> html.Tag | None:
    """``html.tag_before``, but the last candidate's complete tag again when
    no "<" came since: candidates come in order, and in a feed the "<" before
    them (<content type="html">) is often a whole article back."""
    last, tag = doc.element
    if tag is not None and tag.end is not None and tag.end <= last <= start and doc.text.find("<", last, start) < 0:
        return tag
    tag = html.tag_before(doc.text, start)
    doc.element = (start, tag)
    return tag


def escaped_place(text: str, lo: int, pos: int, after: int) -> Place | None:
    """A URL in escaped HTML (the text of an element that starts at ``lo``):
    the escaped tag around it, unescaped, read as HTML."""
    opened = text.rfind(ESCAPED_OPEN, lo, pos)
    if opened < 0:
        return None
    closing = text.find(ESCAPED_CLOSE, pos, pos + ESCAPED_TAG_LIMIT)
    if closing >= 0:
        end = closing + len(ESCAPED_CLOSE)
    else:
        end = text.find("<", pos)
        end = min(len(text) if end < 0 else end, pos + ESCAPED_TAG_LIMIT)
    before = xml_unescape(text[opened:pos])  # (no entity spans pos: "http" starts there)
    snippet_pos = len(before)
    snippet = before + xml_unescape(text[pos:end])
    # (the feed's comments and textareas, escaped, are the feed's to check)
    place = html.place_at(snippet, snippet_pos, snippet_pos + after - pos)
    return Place(place.kind, f"escaped {place.where}", place.url) if place else None
