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
        # same text before the URL, other verdicts: the memo must tell them apart
        f'<link href="{url}" rel="{draw(st.sampled_from(["stylesheet", "canonical"]))}">',
        f'<meta content="{url}" {draw(st.sampled_from(["property=og:image", "name=description"]))}>',
        f'<img alt="a" src="{url}',  # no closing quote: not a quoted value
        f'<a title="a>b" href="{url}">',
        f'<content type="html">&lt;img src="{url}"&gt;&lt;link href="{url}" rel="icon"&gt;</content>',
        f'<summary type="html">&lt;img alt="x" src="{url}</summary>',
        # URLs inside a value or after a tag, memoized by the text before them
        f"<img srcset='a.png 1x, {url} 2x' src=\"{url}\">",
        f'<p style="a: url({url}); b: url(\'{url}\')">',
        f'<div style="x:url({url})',  # no closing quote
        f"</b> {url} <i>{url}</i>",
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


# More hosts than rewrite()'s startswith shortcut takes: hosts are then
# looked up in the set only.  Those added never occur in the documents.
MANY = frozenset(UPGRADE + [f"h{i}.example.org" for i in range(20)])
LONG_LISTS = [(RULES, Rules(own_hosts=frozenset(OWN), upgrade_hosts=MANY)),
              (MAPPED, Rules(own_hosts=frozenset(OWN), upgrade_hosts=MANY, host_map=MAPPED.host_map))]


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from(["html", "xml", "css", "json"]), st.sampled_from(LONG_LISTS))
def test_a_long_host_list_gives_what_a_short_one_gives(document, syntax, pair):
    short, long = pair
    assert short.host_slash_prefixes and not long.host_slash_prefixes
    assert rewrite(document, long, syntax) == rewrite(document, short, syntax)


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
@given(documents, st.sampled_from(["html", "xml", "css", "json"]))
def test_a_shared_cache_changes_nothing(document, syntax):
    cache = {}
    first = rewrite(document, MAPPED, syntax, cache)
    second = rewrite(document, MAPPED, syntax, cache)
    assert first == second == rewrite(document, MAPPED, syntax)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_round_trip(raw):
    text = raw.decode("utf-8", "surrogateescape")
    result = rewrite(text, RULES, "html").text
    assert result.encode("utf-8", "surrogateescape") == raw  # no URL of an own host in noise


class _NoMemo(dict):
    """A cache that never keeps anything: every verdict computed afresh."""

    def __setitem__(self, key, value):
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(documents, min_size=2, max_size=4), st.sampled_from(["html", "xml"]))
def test_a_cache_warmed_by_other_documents_changes_nothing(others, syntax):
    # The memo is keyed by the text around a URL, shared by all files of a
    # build: whatever it learned elsewhere gives the verdict of no memo at all.
    *warming, document = others
    cache = {}
    for other in warming:
        rewrite(other, MAPPED, syntax, cache)
    assert rewrite(document, MAPPED, syntax, cache) == rewrite(document, MAPPED, syntax, _NoMemo())


def test_a_tag_whose_quote_nothing_closes_teaches_the_memo_nothing():
    # Read alone, '<img srcset="a.png 1x, http://...' has no closing quote:
    # the value is read unquoted and the URL is no srcset candidate.  A later
    # file where a quote does close it must not get that verdict from the
    # memo (nor from one learned on a prefix whose earlier value is open).
    unclosed = '<img srcset="a.png 1x, http://blog.example.com/b.png 2x >'
    closed = unclosed + ' " alt="">'
    open_alt = "<img alt='x src=\"http://blog.example.com/a.png\">"
    closed_alt = open_alt + " '>"
    for first, second in ((unclosed, closed), (open_alt, closed_alt)):
        cache = {}
        rewrite(first, RULES, "html", cache)
        assert rewrite(second, RULES, "html", cache) == rewrite(second, RULES, "html", _NoMemo())
    assert "https://" in rewrite(closed, RULES, "html").text
    assert "https://" not in rewrite(closed_alt, RULES, "html").text


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="hHtTpPsS:/\\ x<>\"日", max_size=40), st.integers(0, 45), st.integers(0, 45))
@example("http://a HTTP:\\/\\/b hTtP://c https://d ftp://e http:/f", 0, 45)
def test_the_candidate_scan_finds_every_http_separator(text, lo, hi):
    # _candidates: every "http" (any case) + "://" or ":\/\/" whose separator,
    # from its ":", lies in text[lo:hi], in order; checked against the
    # plainest reading of that sentence.
    from pelican_https.rewrite import _candidates

    expected = []
    for colon in range(max(lo, 4), len(text)):
        for separator in ("://", ":\\/\\/"):
            end = colon + len(separator)
            if (text[colon - 4:colon].lower() == "http" and text.startswith(separator, colon)
                    and end <= min(hi, len(text))):
                expected.append((colon - 4, end))
    assert _candidates(text, lo, hi) == expected
    assert _candidates(text) == _candidates(text, 0, len(text))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab.-_:@;,/?#&[]()<>\"' \t\u00a0\u2003日0189", max_size=20))
def test_the_host_shortcut_finds_the_host_the_authority_pattern_finds(rest):
    # rewrite() reads the host with _HOST alone unless the character after it
    # may start or continue a userinfo or port (then _HOST does not match):
    # it must be the same host (group 1) as the full _AUTHORITY pattern's,
    # with no port.
    from pelican_https.rewrite import _AUTHORITY, _HOST

    host = _HOST.match(rest)
    run = re.match(r"[^\s/\\?#\"'<>()@&:;,\[\]]*", rest).end()  # the host's characters
    assert (host is None) == (rest[run:run + 1] in ("@", ":", ";", ","))
    if host is None:
        return
    authority = _AUTHORITY.match(rest)
    assert (authority.span(1), authority.group(2)) == (host.span(), None)


# -- a fragment (an article's content) shown verbatim in a page ---------------

# what a template may put right before the content: the fragment's URLs must
# get the verdict they get there (comment, <script>, <style>, open tag...)
openers = st.sampled_from([
    "", "<div class=\"entry-content\">", "<!-- a comment -->\n", "<!-- open ", "<!-",
    "<script>", "<script type=\"application/ld+json\">", "<style>", "<a href=\"",
    "<img alt='", "<p title=\"a < b\">", "x < y ", "</p>", "htt", "http:", "http:\\",
])
endings = st.sampled_from(["", "</p>", "</div>\n", ">", " -->", "\"", "'"])


@settings(max_examples=600, deadline=None)
@given(documents, documents, documents, openers, endings, st.sampled_from([RULES, AUDIT, SUFFIXES]))
def test_a_fragment_reused_in_a_page_gives_what_a_full_scan_gives(
        content, before, after, opener, ending, rules):
    # The content pass rewrites an article's content once and keeps its URLs'
    # outcomes; the article's page shows that text verbatim and takes them
    # from there.  Whatever surrounds it, the page's result must be exactly
    # what scanning the whole page without any memo gives.
    cache = {}
    first = rewrite(content + ending, rules, "html", cache, as_fragment=True)
    page = before + opener + first.text + after
    expected = rewrite(page, rules, "html", _NoMemo())
    assert rewrite(page, rules, "html", cache, fragment=first.fragment) == expected
    if first.fragment is not None:
        assert first.fragment.text == first.text


def test_a_fragment_is_taken_from_the_page_where_it_is_outside_a_comment():
    from pelican_https.rewrite import _fragment_at

    content = ('<p><a href="http://x.example.io/a">a</a> <img src="http://blog.example.com/i.png">'
               ' <code>http://x.example.io/c</code></p>')
    first = rewrite(content, RULES, "html", as_fragment=True)
    assert first.upgraded == 1
    assert first.fragment.insecure == [  # the code sample's URL is no finding
        (first.text.index("http://x"), "http://x.example.io/a", "link", False, "a href")]
    assert first.fragment.others == []
    page = f'<html><!-- head -->\n<div class="entry-content">\n{first.text}\n</div>\n</html>'
    assert _fragment_at(page, first.fragment.text) == page.index(first.text)
    reused = rewrite(page, RULES, "html", fragment=first.fragment)
    assert reused == rewrite(page, RULES, "html")
    assert [(f.url, f.line) for f in reused.insecure] == [("http://x.example.io/a", 3)]
    in_comment = page.replace("<!-- head -->", "<!-- head")
    assert _fragment_at(in_comment, first.fragment.text) == -1
    assert rewrite(in_comment, RULES, "html", fragment=first.fragment).insecure == []


def test_no_fragment_with_a_host_map_or_from_text_that_ends_inside_a_tag():
    content = '<a href="http://x.example.io/a">a</a>'
    assert rewrite(content, RULES, "html", as_fragment=True).fragment is not None
    assert rewrite(content, MAPPED, "html", as_fragment=True).fragment is None
    assert rewrite(content + '<img src="a', RULES, "html", as_fragment=True).fragment is None
    assert rewrite(content, RULES, "xml", as_fragment=True).fragment is None


# -- the report: findings kept column by column ------------------------------

def _reference_remaining(adds, source_of):
    """The report's items as a plain version builds them: one Remaining per
    finding, files in name order, each file's findings by line."""
    from pelican_https.report import KINDS, OTHER_LINKS, OWN_DOMAIN_LINKS, SUBRESOURCES, Remaining
    from pelican_https.rewrite import SUBRESOURCE

    found: dict = {}
    for output, findings in adds:
        found.setdefault(output, []).extend(findings)
    remaining = {kind: [] for kind in KINDS}
    for output in sorted(found):
        for f in sorted(found[output], key=lambda f: f.line):
            kind = SUBRESOURCES if f.kind == SUBRESOURCE else OWN_DOMAIN_LINKS if f.own else OTHER_LINKS
            source = source_of(output, f.url) if kind != OTHER_LINKS else None
            remaining[kind].append(Remaining(output, f.line, f.url, f.where, source))
    return remaining


report_texts = st.text(alphabet=st.sampled_from(list('ab/.:"\\\n\t\x00\x7f\u00e9日\udcff\U0001f600')), max_size=6)


@st.composite
def findings_added(draw):
    from pelican_https.rewrite import DATA, LINK, SUBRESOURCE, Finding

    finding = st.builds(Finding, report_texts, st.sampled_from([SUBRESOURCE, LINK, DATA]),
                        st.booleans(), report_texts, st.integers(1, 5))
    # a file may be added twice (its findings then interleave by line)
    return draw(st.lists(st.tuples(st.sampled_from(["b.html", "a.html", "a/b.html", "日.xml"]),
                                   st.lists(finding, max_size=4)), max_size=6))


@settings(max_examples=300, deadline=None)
@given(findings_added())
def test_the_report_lists_what_one_item_per_finding_lists(adds):
    import json

    from pelican_https.report import KINDS, Collector
    from pelican_https.rewrite import RewriteResult

    collector = Collector()
    for output, findings in adds:
        collector.add(output, RewriteResult("", 0, sorted(findings, key=lambda f: f.line)), False)

    def source_of(output, url):
        return None if "a" in url else f"{output}<{url}"

    report = collector.report(source_of)
    expected = _reference_remaining(
        [(output, sorted(findings, key=lambda f: f.line)) for output, findings in adds], source_of)
    encode = json.JSONEncoder(ensure_ascii=False).encode
    for kind in KINDS:
        items = report.remaining[kind]
        assert list(items) == expected[kind]
        assert len(items) == len(expected[kind])
        assert items[:2] == expected[kind][:2]
        assert [items[i] for i in range(len(items))] == expected[kind]
        # each JSON line as json.dumps(item._asdict()) writes it
        assert items.json_lines(encode) == [encode(item._asdict()) for item in expected[kind]]
    assert report.text_lines(max_items=3)[1:] == type(report)(
        0, 0, 0, expected).text_lines(max_items=3)[1:]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(
    ["&", "&quot;", "&#39;", "&#34;", "&apos;", "&gt;", "&lt;", "&amp;", "a", "/", "\\/", ",", ";", "q"]),
    max_size=12).map("".join))
def test_a_url_is_cut_where_the_first_escaped_quote_or_bracket_starts(rest):
    # _url_at looks at each "&" once; the same cut as one search per stop,
    # each cutting what the ones before left
    from pelican_https.rewrite import _URL_TEXT, _url_at

    text = "x http://h/" + rest + ' "'
    url = _URL_TEXT.match(text, 2).group().replace("\\/", "/")
    for stop in ("&quot;", "&#39;", "&#34;", "&apos;", "&gt;", "&lt;"):
        cut = url.find(stop)
        if cut >= 0:
            url = url[:cut]
    assert _url_at(text, 2) == url.rstrip(",;")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/a.", max_size=12))
def test_a_path_taken_as_normalized_is_what_abspath_gives(path):
    # the plugin skips os.path.abspath for such paths (a content's source)
    import os

    from pelican_https.plugin import _normalized

    if _normalized(path):
        assert os.path.abspath(path) == path


@settings(max_examples=400, deadline=None)
@given(st.lists(documents, min_size=1, max_size=3).map("\n".join), st.sampled_from([RULES, MAPPED]))
def test_an_xml_element_read_once_for_its_urls_gives_what_reading_it_per_url_gives(document, rules):
    # _classify_xml keeps the start tag the last URL's text was in (the
    # next URL is usually in the same <content>): the same result as when
    # each URL's element is read again
    import pelican_https.rewrite as rewrite_module

    kept = rewrite(document, rules, "xml")
    classify = rewrite_module._CLASSIFIERS["xml"]

    def forgetting(doc, pos, escaped_slashes):
        doc.element = (-1, -1, None)
        return classify(doc, pos, escaped_slashes)

    rewrite_module._CLASSIFIERS["xml"] = forgetting
    try:
        again = rewrite(document, rules, "xml")
    finally:
        rewrite_module._CLASSIFIERS["xml"] = classify
    assert kept == again
