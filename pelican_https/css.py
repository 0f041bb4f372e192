"""CSS: a URL that ``url()`` or ``@import`` loads, in a .css file, a
``<style>`` element or a ``style`` attribute.  Everything else in CSS
(comments, strings, custom properties) is left alone."""

from __future__ import annotations

URL_FUNCTION = "url("
IMPORT = "@import"
# Quotes before a URL: CSS's own, and as written inside an HTML attribute.
QUOTES = ('"', "'", "&quot;", "&#34;", "&#39;", "&apos;", "&#x27;", "&#x22;")
WHITESPACE = " \t\r\n\f"
COMMENT_OPEN, COMMENT_CLOSE = "/*", "*/"


def css_url(text: str, pos: int, lo: int, hi: int | None = None) -> tuple[str, int] | None:
    """("url()" or "@import", end of the URL) if the URL at ``pos`` is one
    CSS loads, looking no further back than ``lo`` nor on than ``hi``."""
    hi = len(text) if hi is None else hi
    at = pos
    quote = None
    for candidate in QUOTES:
        if at - len(candidate) >= lo and text.startswith(candidate, at - len(candidate)):
            quote = candidate
            at -= len(candidate)
            break
    while at > lo and text[at - 1] in WHITESPACE:
        at -= 1
    if at - len(URL_FUNCTION) >= lo and text[at - len(URL_FUNCTION):at].lower() == URL_FUNCTION:
        where = "url()"
    elif quote and at - len(IMPORT) >= lo and text[at - len(IMPORT):at].lower() == IMPORT:
        where = "@import"
    else:
        return None
    opened = text.rfind(COMMENT_OPEN, lo, pos)
    if opened >= 0 and text.find(COMMENT_CLOSE, opened + 2, pos) < 0:
        return None  # in a CSS comment
    end = text.find(quote or ")", pos, hi)
    if end < 0:
        end = hi
    return where, end

