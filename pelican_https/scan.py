"""The candidate scan: where an http URL starts, and what its host is.

One pass of a regular expression that starts with the literal ``:`` finds
every ``http:`` + ``//`` (or JSON's escaped ``\\/\\/``), in any case: the re
engine looks for ``:`` in a tight C loop, and a look-behind checks ``http``.
Only around such a candidate does a syntax module look at the text to decide
whether a browser or feed reader follows the URL there.  No parse, no copy:
every byte that is not a URL scheme (or a mapped host, or ``:80``) stays as
it is.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# ":" then "//" or "\/\/", after "http" in any case.
SEPARATOR = re.compile(r":(?<=[hH][tT][tT][pP]:)(?://|\\/\\/)")
SCHEME_LENGTH = len("http")

# userinfo@ (rare), host, :port.  The userinfo run is possessive (*+): it
# cannot contain "@", so giving characters back could never let the "@"
# match.  A port counts only where the authority ends (":80a" is no port:
# dropping ":80" there would glue the "a" onto the host).
AUTHORITY = re.compile(
    r"(?:[^\s/\\?#\"'<>()@&\[\]]*+@)?([^\s/\\?#\"'<>()@&:;,\[\]]*)(:[0-9]*(?![\w.~%:-]))?"
)
HTTP_DEFAULT_PORT = ":80"  # dropped when a URL is upgraded: wrong for https


def candidates(text: str) -> list[tuple[int, int]]:
    """(start of "http", end of "://") of every http URL start, in order."""
    return [(match.start() - SCHEME_LENGTH, match.end()) for match in SEPARATOR.finditer(text)]


class Authority(NamedTuple):
    host: str         # lower case, as written otherwise
    host_start: int
    host_end: int
    port: str | None  # ":8080" as written, or None
    port_end: int


def authority_at(text: str, after: int) -> Authority:
    """The authority that starts at ``after`` (the end of "://")."""
    match = AUTHORITY.match(text, after)
    return Authority(match.group(1).lower(), match.start(1), match.end(1),
                     match.group(2), match.end())


def upgrade_pieces(text: str, start: int, authority: Authority,
                   new_host: str | None) -> tuple[list[str], int]:
    """What replaces ``text[start:end]`` to upgrade the URL at ``start``, and
    ``end``: "http" becomes "https" ("HTTPS" for "HTTP"), the host becomes
    ``new_host`` if one is given, and an explicit ":80" is dropped."""
    scheme = text[start:start + SCHEME_LENGTH]
    pieces = [scheme, "S" if scheme[-1] == "P" else "s"]
    end = start + SCHEME_LENGTH
    if new_host is not None:
        pieces += [text[end:authority.host_start], new_host]
        end = authority.host_end
    if authority.port == HTTP_DEFAULT_PORT:
        pieces.append(text[end:authority.host_end])
        end = authority.port_end
    return pieces, end


# What a browser or reader does with a URL where it sits.
SUBRESOURCE = "subresource"  # fetched by the page itself: mixed content
LINK = "link"                # followed on click, by a reader or a crawler
DATA = "data"                # a URL in inline JSON, or one a script may load


class Place(NamedTuple):
    """Where a candidate sits, when a browser or reader follows it there."""

    kind: str   # SUBRESOURCE, LINK or DATA
    where: str  # e.g. "img src", "css url()", "<loc>"
    url: str    # the URL a browser would request: entities decoded, complete


def json_string_at(text: str, start: int) -> str:
    """The URL in a JSON string that starts at ``start``: up to its closing
    quote, with JSON's escaped slashes unescaped."""
    end = text.find('"', start)
    return text[start:len(text) if end < 0 else end].replace("\\/", "/")
