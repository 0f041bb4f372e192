"""Property-based tests of the core: the only bytes that change are URL
schemes (and hosts where a host map applies, and an explicit :80), other
hosts never change, and rewriting twice equals rewriting once."""

import re

from hypothesis import example, given, settings, strategies as st

from pelican_https.rewrite import Rules, rewrite

OWN = ["blog.example.com", "www.blog.example.com", "old.example.net"]
UPGRADE = ["cdn.example.org"]
OTHER = ["x.example.io", "blog.example.com.evil.net", "evilblog.example.com", ""]
RULES = Rules(own_hosts=frozenset(OWN), upgrade_hosts=frozenset(UPGRADE))
MAPPED = Rules(own_hosts=frozenset(OWN), upgrade_hosts=frozenset(UPGRADE),
               host_map={"old.example.net": "blog.example.com"})
AUDIT = Rules(own_hosts=frozenset(OWN), upgrade_hosts=frozenset(UPGRADE), rewrite=False)
SUFFIXES = Rules(own_hosts=frozenset(OWN), upgrade_suffixes=(".example.io",))

schemes = st.sampled_from(["http", "HTTP", "Http", "https"])
hosts = st.sampled_from(OWN + UPGRADE + OTHER).flatmap(
    lambda h: st.sampled_from([h, h.upper(), h.title()]))
ports = st.sampled_from(["", "", ":80", ":8080", ":"])
paths = st.sampled_from(["", "/", "/a.png", "/p?a=1&amp;b=2", "#x", "/日本語.html", "\\/x"])
slashes = st.sampled_from(["//", "//", "\\/\\/"])


@st.composite
def urls(draw):
    return draw(schemes) + ":" + draw(slashes) + draw(hosts) + draw(ports) + draw(paths)


@st.composite
def fragments(draw):
    url = draw(urls())
    quote = draw(st.sampled_from(['"', "'", ""]))
    attribute = draw(st.sampled_from(
        ["href", "src", "srcset", "poster", "content", "style", "alt", "data-x", "xmlns", "action"]))
    element = draw(st.sampled_from(["a", "img", "link", "meta", "video", "form", "div", "source"]))
    return draw(st.sampled_from([
        f"<{element} {attribute}={quote}{url}{quote}>",
        f'<{element} class="c" {attribute} = {quote}{url}{quote} />',
        f'<img srcset="{url} 1x, {url} 2x">',
        f'<meta property="og:image" content="{url}">',
        f'<div style="background:url({url})">',
        f"<style>a{{b:url('{url}')}} /* {url} */</style>",
        f'<script type="application/ld+json">{{"u":"{url}"}}</script>',
        f"<p>prose {url} more</p>",
        f"<pre><code>&lt;a href=&quot;{url}&quot;&gt;</code></pre>",
        f"<!-- <a href='{url}'> -->",
        f"<link>{url}</link><loc>{url}</loc><id>{url}</id>",
        f'<content type="html">&lt;a href=&quot;{url}&quot;&gt;{url}&lt;/a&gt;</content>',
        f"@import '{url}'; x{{y:url({url})}}",
        # the same text before the URL, other verdicts
        f'<link href="{url}" rel="{draw(st.sampled_from(["stylesheet", "canonical"]))}">',
        f'<meta content="{url}" {draw(st.sampled_from(["property=og:image", "name=description"]))}>',
        f'<img alt="a" src="{url}',  # no closing quote: not a quoted value
        f'<a title="a>b" href="{url}">',
        f'<content type="html">&lt;img src="{url}"&gt;&lt;link href="{url}" rel="icon"&gt;</content>',
        f'<summary type="html">&lt;img alt="x" src="{url}</summary>',
        # URLs inside a value or after a tag
        f"<img srcset='a.png 1x, {url} 2x' src=\"{url}\">",
        f'<p style="a: url({url}); b: url(\'{url}\')">',
        f'<div style="x:url({url})',  # no closing quote
        f"</b> {url} <i>{url}</i>",
        f'<img data-src="{url}" data-srcset="{url} 2x">',
        f'<textarea><a href="{url}">{url}</a></textarea>',
        f'<content type="html">&lt;textarea&gt;&lt;a href="{url}"&gt;&lt;/textarea&gt;</content>',
    ]))


noise = st.text(alphabet='<>"\'=/ :\\htpsa&;#\n日', max_size=12)
documents = st.lists(st.one_of(fragments(), noise), max_size=12).map("".join)

# a port only where the authority ends: ":80a" or ":80:" is no port (and
# its ":80" must not be dropped)
TOKEN = re.compile(
    r"(?i)(https?)(:(?://|\\/\\/))([^\s/\\?#\"'<>()@&:;,\[\]]*)(:[0-9]*(?![\w.~%:-]))?"
)


def assert_only_urls_changed(before: str, after: str, rules: Rules) -> None:
    """Same text between URLs; each URL either equal or upgraded."""
    pieces_before = TOKEN.split(before)
    pieces_after = TOKEN.split(after)
    assert len(pieces_before) == len(pieces_after)
    step = 5  # text, scheme, separator, host, port
    for i in range(0, len(pieces_before), step):
        assert pieces_before[i] == pieces_after[i]  # the bytes between URLs
        if i + 1 >= len(pieces_before):
            break
        scheme, separator, host, port = pieces_before[i + 1:i + 5]
        new_scheme, new_separator, new_host, new_port = pieces_after[i + 1:i + 5]
        assert separator == new_separator
        if (scheme, host, port) == (new_scheme, new_host, new_port):
            continue  # untouched
        assert scheme.lower() == "http" and new_scheme == scheme + ("S" if scheme[3] == "P" else "s")
        assert rules.upgradable(host.lower())
        assert new_host == rules.host_map.get(host.lower(), host)
        assert (new_port or "") == ("" if port == ":80" else (port or ""))


@settings(max_examples=400, deadline=None)
@given(documents, st.sampled_from(["html", "xml", "css", "json"]))
def test_only_schemes_change(document, syntax):
    result = rewrite(document, RULES, syntax)
    assert_only_urls_changed(document, result.text, RULES)


@settings(max_examples=400, deadline=None)
@given(documents, st.sampled_from(["html", "xml", "css", "json"]))
def test_only_schemes_and_mapped_hosts_change(document, syntax):
    result = rewrite(document, MAPPED, syntax)
    assert_only_urls_changed(document, result.text, MAPPED)


@settings(max_examples=400, deadline=None)
@given(documents, st.sampled_from(["html", "xml", "css", "json"]), st.sampled_from([RULES, MAPPED]))
def test_idempotent(document, syntax, rules):
    once = rewrite(document, rules, syntax).text
    assert rewrite(once, rules, syntax).text == once


@settings(max_examples=200, deadline=None)
@given(documents, st.sampled_from(["html", "xml", "css", "json"]))
def test_upgrade_count_matches_the_changes(document, syntax):
    result = rewrite(document, RULES, syntax)
    assert len(result.text) - len(document) == result.upgraded - 3 * sum(
        1 for m in TOKEN.finditer(document)
        if m.group(4) == ":80" and document[m.start():m.start() + 5].lower() == "http:"
        and m.start() in _upgraded_starts(document, result.text))


def _upgraded_starts(before: str, after: str) -> set[int]:
    starts, offset = set(), 0
    for m_before, m_after in zip(TOKEN.finditer(before), TOKEN.finditer(after)):
        if m_before.group(1) != m_after.group(1):
            starts.add(m_before.start())
    return starts


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_round_trip(raw):
    text = raw.decode("utf-8", "surrogateescape")
    result = rewrite(text, RULES, "html").text
    assert result.encode("utf-8", "surrogateescape") == raw  # no URL of an own host in noise


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="hHtTpPsS:/\\ x<>\"日", max_size=40))
@example("http://a HTTP:\\/\\/b hTtP://c https://d ftp://e http:/f")
def test_the_candidate_scan_finds_every_http_separator(text):
    # every "http" (any case) + "://" or ":\/\/", in order; checked against
    # the plainest reading of that sentence.
    from pelican_https.scan import candidates

    expected = []
    for colon in range(4, len(text)):
        for separator in ("://", ":\\/\\/"):
            if text[colon - 4:colon].lower() == "http" and text.startswith(separator, colon):
                expected.append((colon - 4, colon + len(separator)))
    assert candidates(text) == expected


# Comments and textareas are looked for only up to the last candidate URL
# (html.Document's ``last``): for every position up to there, the same answer
# as looking through the whole text.
spans_noise = st.sampled_from([
    "<!--", "-->", "<!-->", "&lt;!--", "--&gt;", "&lt;!--&gt;", "<", ">", "&gt;", " ", "x",
    "<textarea>", "<TextArea rows=3>", "<textarea", "</textarea>", "</TEXTAREA",
    "&lt;textarea&gt;", "&lt;TEXTAREA rows=1&gt;", "&lt;/textarea&gt;", "http://h/", "HTTP:\\/\\/h",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(spans_noise, max_size=16).map("".join), st.booleans())
def test_spans_up_to_the_last_candidate(text, escaped):
    from pelican_https.html import Document
    from pelican_https.scan import candidates

    whole = Document(text, escaped)
    for start, _ in candidates(text):
        assert Document(text, escaped, last=start).ignored(start) == whole.ignored(start)
