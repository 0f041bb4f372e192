"""(before, after) pairs for every rule of the rewriter's pure core."""

import pytest

from pelican_https.rewrite import LINK, SUBRESOURCE, Rules, rewrite, syntax_for

RULES = Rules(
    own_hosts=frozenset({"blog.example.com", "www.blog.example.com", "old.example.net"}),
    host_map={"old.example.net": "blog.example.com"},
    upgrade_hosts=frozenset({"cdn.example.org"}),
    upgrade_suffixes=(".static.example.org",),
)

H = "http://blog.example.com"
S = "https://blog.example.com"

# (id, syntax, before, after)
PAIRS = [
    # -- which URLs --------------------------------------------------------
    ("own host", "html", f'<a href="{H}/x">', f'<a href="{S}/x">'),
    ("alias host", "html", '<a href="http://www.blog.example.com/">',
     '<a href="https://www.blog.example.com/">'),
    ("host in any case", "html", '<a href="http://Blog.EXAMPLE.com/">',
     '<a href="https://Blog.EXAMPLE.com/">'),
    ("scheme in upper case", "html", '<a href="HTTP://blog.example.com/">',
     '<a href="HTTPS://blog.example.com/">'),
    ("other port kept", "html", f'<a href="{H}:8443/x">', f'<a href="{S}:8443/x">'),
    ("port 80 dropped", "html", f'<a href="{H}:80/x">', f'<a href="{S}/x">'),
    # found by hypothesis: ":80" not at the authority's end is no port to drop
    ("no port 80 before more authority", "html", f'<a href="{H}:80a">', f'<a href="{S}:80a">'),
    ("no port 80 before a colon", "html", f'<a href="{H}:80:">', f'<a href="{S}:80:">'),
    ("host without path", "html", f'<a href="{H}">', f'<a href="{S}">'),
    ("host then query", "html", f'<a href="{H}?p=1">', f'<a href="{S}?p=1">'),
    ("host then fragment", "html", f'<a href="{H}#top">', f'<a href="{S}#top">'),
    ("lookalike suffix untouched", "html", '<a href="http://blog.example.com.evil.net/">',
     '<a href="http://blog.example.com.evil.net/">'),
    ("lookalike prefix untouched", "html", '<a href="http://evilblog.example.com/">',
     '<a href="http://evilblog.example.com/">'),
    ("subdomain of own host untouched", "html", '<a href="http://x.blog.example.com/">',
     '<a href="http://x.blog.example.com/">'),
    ("userinfo lookalike untouched", "html", '<a href="http://blog.example.com@evil.net/">',
     '<a href="http://blog.example.com@evil.net/">'),
    ("old host mapped", "html", '<a href="http://old.example.net/2019/p.html">',
     '<a href="https://blog.example.com/2019/p.html">'),
    ("old host mapped, port 80 dropped", "html", '<a href="http://OLD.example.net:80/p">',
     '<a href="https://blog.example.com/p">'),
    ("https-capable external host", "html", '<img src="http://cdn.example.org/a.png">',
     '<img src="https://cdn.example.org/a.png">'),
    ("wildcard external subdomain", "html", '<img src="http://img.static.example.org/a.png">',
     '<img src="https://img.static.example.org/a.png">'),
    ("wildcard does not match apex", "html", '<img src="http://static.example.org/a.png">',
     '<img src="http://static.example.org/a.png">'),
    ("other host untouched", "html", '<img src="http://elsewhere.example.io/a.png">',
     '<img src="http://elsewhere.example.io/a.png">'),
    ("already https untouched", "html", f'<a href="{S}/">', f'<a href="{S}/">'),
    # -- where: HTML attributes ---------------------------------------------
    ("area href", "html", f'<area href="{H}/m">', f'<area href="{S}/m">'),
    ("link stylesheet", "html", f'<link rel="stylesheet" href="{H}/s.css">',
     f'<link rel="stylesheet" href="{S}/s.css">'),
    ("link canonical", "html", f'<link rel="canonical" href="{H}/p">',
     f'<link rel="canonical" href="{S}/p">'),
    ("link icon, href before rel", "html", f'<link href="{H}/i.ico" rel=icon>',
     f'<link href="{S}/i.ico" rel=icon>'),
    ("img src", "html", f'<img src="{H}/a.png" alt="">', f'<img src="{S}/a.png" alt="">'),
    ("img srcset, every candidate", "html",
     f'<img srcset="{H}/a.png 1x,{H}/b.png 2x, http://x.example.io/c.png 3x">',
     f'<img srcset="{S}/a.png 1x,{S}/b.png 2x, http://x.example.io/c.png 3x">'),
    ("picture source srcset", "html", f'<picture><source srcset="{H}/a.webp" type="image/webp">',
     f'<picture><source srcset="{S}/a.webp" type="image/webp">'),
    ("script src", "html", f'<script src="{H}/a.js"></script>', f'<script src="{S}/a.js"></script>'),
    ("iframe src", "html", f'<iframe src="{H}/e"></iframe>', f'<iframe src="{S}/e"></iframe>'),
    ("frame src", "html", f'<frame src="{H}/f">', f'<frame src="{S}/f">'),
    ("audio src", "html", f'<audio src="{H}/a.mp3">', f'<audio src="{S}/a.mp3">'),
    ("video src and poster", "html", f'<video src="{H}/v.mp4" poster="{H}/p.jpg">',
     f'<video src="{S}/v.mp4" poster="{S}/p.jpg">'),
    ("source src", "html", f'<source src="{H}/v.webm">', f'<source src="{S}/v.webm">'),
    ("track src", "html", f'<track src="{H}/t.vtt">', f'<track src="{S}/t.vtt">'),
    ("object data", "html", f'<object data="{H}/o.svg"></object>', f'<object data="{S}/o.svg"></object>'),
    ("embed src", "html", f'<embed src="{H}/e.swf">', f'<embed src="{S}/e.swf">'),
    ("input image src", "html", f'<input type="image" src="{H}/b.png">',
     f'<input type="image" src="{S}/b.png">'),
    ("form action", "html", f'<form action="{H}/search" method=get>',
     f'<form action="{S}/search" method=get>'),
    ("button formaction", "html", f'<button formaction="{H}/go">', f'<button formaction="{S}/go">'),
    ("blockquote cite", "html", f'<blockquote cite="{H}/q">', f'<blockquote cite="{S}/q">'),
    ("meta og:image", "html", f'<meta property="og:image" content="{H}/og.png">',
     f'<meta property="og:image" content="{S}/og.png">'),
    ("meta twitter:image, content first", "html", f'<meta content="{H}/t.png" name="twitter:image">',
     f'<meta content="{S}/t.png" name="twitter:image">'),
    ("meta description untouched", "html", f'<meta name="description" content="{H}/ is my blog">',
     f'<meta name="description" content="{H}/ is my blog">'),
    ("meta refresh", "html", f'<meta http-equiv="refresh" content="0; url={H}/new">',
     f'<meta http-equiv="refresh" content="0; url={S}/new">'),
    ("meta refresh, quoted URL", "html", f'<meta http-equiv="Refresh" content="5;URL=\'{H}/n\'">',
     f'<meta http-equiv="Refresh" content="5;URL=\'{S}/n\'">'),
    ("base href", "html", f'<base href="{H}/">', f'<base href="{S}/">'),
    ("legacy background", "html", f'<td background="{H}/bg.gif">', f'<td background="{S}/bg.gif">'),
    ("svg href", "html", f'<svg><image href="{H}/i.png"/></svg>', f'<svg><image href="{S}/i.png"/></svg>'),
    ("svg xlink:href", "html", f'<svg><use xlink:href="{H}/s.svg#i"/></svg>',
     f'<svg><use xlink:href="{S}/s.svg#i"/></svg>'),
    ("unquoted attribute", "html", f'<a href={H}/x>x</a>', f'<a href={S}/x>x</a>'),
    ("single quotes", "html", f"<a href='{H}/x'>", f"<a href='{S}/x'>"),
    ("spaces around =", "html", f'<a href = "{H}/x">', f'<a href = "{S}/x">'),
    ("leading space in value", "html", f'<a href=" {H}/x">', f'<a href=" {S}/x">'),
    ("entities in the value kept", "html", f'<a href="{H}/?a=1&amp;b=2">', f'<a href="{S}/?a=1&amp;b=2">'),
    ("attribute in upper case", "html", f'<A HREF="{H}/x">', f'<A HREF="{S}/x">'),
    ("> inside an earlier value", "html", f'<a title="a>b" href="{H}/x">', f'<a title="a>b" href="{S}/x">'),
    ("multi-line tag", "html", f'<img\n  alt="x"\n  src="{H}/a.png"\n/>', f'<img\n  alt="x"\n  src="{S}/a.png"\n/>'),
    # -- where: CSS ---------------------------------------------------------
    ("style attribute url()", "html", f'<div style="background:url({H}/b.png)">',
     f'<div style="background:url({S}/b.png)">'),
    ("style attribute url() with &quot;", "html", f'<div style="background:url(&quot;{H}/b.png&quot;)">',
     f'<div style="background:url(&quot;{S}/b.png&quot;)">'),
    ("style block url() and @import", "html",
     f"<style>@import '{H}/a.css';\nb{{background: URL( \"{H}/b.png\" )}}</style>",
     f"<style>@import '{S}/a.css';\nb{{background: URL( \"{S}/b.png\" )}}</style>"),
    ("style block comment untouched", "html", f"<style>/* {H}/x.png url({H}/y.png) */</style>",
     f"<style>/* {H}/x.png url({H}/y.png) */</style>"),
    ("css file", "css", f"@import url({H}/a.css);\n@import \"{H}/b.css\";\nx{{src:url('{H}/f.woff2')}}",
     f"@import url({S}/a.css);\n@import \"{S}/b.css\";\nx{{src:url('{S}/f.woff2')}}"),
    ("css comment untouched", "css", f"/* see {H}/ */ a{{}}", f"/* see {H}/ */ a{{}}"),
    # -- where: JSON ---------------------------------------------------------
    ("JSON-LD, escaped slashes", "html",
     '<script type="application/ld+json">{"url":"http:\\/\\/blog.example.com\\/p"}</script>',
     '<script type="application/ld+json">{"url":"https:\\/\\/blog.example.com\\/p"}</script>'),
    ("JSON-LD, plain slashes", "html",
     f'<script type="application/ld+json">{{"@id":"{H}/p","@context":"http://schema.org"}}</script>',
     f'<script type="application/ld+json">{{"@id":"{S}/p","@context":"http://schema.org"}}</script>'),
    ("inline JSON in a script", "html",
     '<script>var c = {"u": "http:\\/\\/blog.example.com\\/x"};</script>',
     '<script>var c = {"u": "https:\\/\\/blog.example.com\\/x"};</script>'),
    ("plain http in JavaScript untouched", "html",
     f'<script>var u = "{H}/x"; if (a < b) {{}}</script>', f'<script>var u = "{H}/x"; if (a < b) {{}}</script>'),
    ("json file", "json", '{"start_url": "http://blog.example.com/", "x": "http:\\/\\/blog.example.com"}',
     '{"start_url": "https://blog.example.com/", "x": "https:\\/\\/blog.example.com"}'),
    # -- where: feeds and sitemaps ----------------------------------------
    ("atom link href", "xml", f'<link href="{H}/" rel="alternate"/>', f'<link href="{S}/" rel="alternate"/>'),
    ("atom id untouched", "xml", f"<id>{H}/p.html</id>", f"<id>{H}/p.html</id>"),
    ("rss link text", "xml", f"<link>{H}/p.html</link>", f"<link>{S}/p.html</link>"),
    ("rss guid untouched", "xml", f'<guid isPermaLink="false">{H}/p</guid>',
     f'<guid isPermaLink="false">{H}/p</guid>'),
    ("escaped HTML in atom content", "xml",
     f'<content type="html">&lt;p&gt;&lt;a href="{H}/x"&gt;x&lt;/a&gt; &lt;img alt=&quot;&quot; src=&quot;{H}/i.png&quot; /&gt;&lt;/p&gt;</content>',
     f'<content type="html">&lt;p&gt;&lt;a href="{S}/x"&gt;x&lt;/a&gt; &lt;img alt=&quot;&quot; src=&quot;{S}/i.png&quot; /&gt;&lt;/p&gt;</content>'),
    ("escaped HTML prose untouched", "xml",
     f'<summary type="html">&lt;p&gt;see {H}/x&lt;/p&gt;</summary>',
     f'<summary type="html">&lt;p&gt;see {H}/x&lt;/p&gt;</summary>'),
    ("escaped code sample untouched", "xml",
     f'<description>&lt;pre&gt;&amp;lt;a href=&amp;quot;{H}/&amp;quot;&amp;gt;&lt;/pre&gt;</description>',
     f'<description>&lt;pre&gt;&amp;lt;a href=&amp;quot;{H}/&amp;quot;&amp;gt;&lt;/pre&gt;</description>'),
    ("CDATA HTML in a feed", "xml",
     f'<description><![CDATA[<a href="{H}/x">x</a> {H}/y]]></description>',
     f'<description><![CDATA[<a href="{S}/x">x</a> {H}/y]]></description>'),
    ("sitemap loc", "xml", f"<url><loc>\n  {H}/p.html</loc></url>", f"<url><loc>\n  {S}/p.html</loc></url>"),
    ("sitemap image:loc", "xml", f"<image:image><image:loc>{H}/i.png</image:loc>",
     f"<image:image><image:loc>{S}/i.png</image:loc>"),
    ("xhtml:link in a sitemap", "xml", f'<xhtml:link rel="alternate" hreflang="ja" href="{H}/ja/"/>',
     f'<xhtml:link rel="alternate" hreflang="ja" href="{S}/ja/"/>'),
    ("xml comment untouched", "xml", f"<!-- <loc>{H}/</loc> -->", f"<!-- <loc>{H}/</loc> -->"),
    ("escaped comment in a feed untouched", "xml",
     f'<content type="html">&lt;!-- &lt;img src="{H}/a.png"&gt; --&gt;&lt;img src="{H}/b.png"&gt;</content>',
     f'<content type="html">&lt;!-- &lt;img src="{H}/a.png"&gt; --&gt;&lt;img src="{S}/b.png"&gt;</content>'),
    # an opener inside a comment opens nothing: after an XML comment, an
    # escaped opener in it is forgotten
    ("xml comment after an escaped opener", "xml",  # escaped text holds no raw "<"
     f'&lt;!-- a <!-- b --&gt; <link>{H}/x</link> --> <link>{H}/y</link>',
     f'&lt;!-- a <!-- b --&gt; <link>{H}/x</link> --> <link>{S}/y</link>'),
    ("escaped comment left open", "xml",
     f'<content type="html">&lt;!-- x</content><link>{H}/y</link>',
     f'<content type="html">&lt;!-- x</content><link>{S}/y</link>'),
    ("escaped opener inside an xml comment", "xml",
     f'<!-- &lt;!-- --><content type="html">&lt;img src="{H}/b.png"&gt;</content>',
     f'<!-- &lt;!-- --><content type="html">&lt;img src="{S}/b.png"&gt;</content>'),
    # -- what it never touches ----------------------------------------------
    ("prose", "html", f"<p>Visit {H}/ today</p>", f"<p>Visit {H}/ today</p>"),
    ("pre/code sample", "html", f'<pre><code>&lt;a href="{H}/"&gt;</code></pre>',
     f'<pre><code>&lt;a href="{H}/"&gt;</code></pre>'),
    ("highlighted code sample", "html",
     f'<pre><span class="s">&quot;{H}/&quot;</span></pre>', f'<pre><span class="s">&quot;{H}/&quot;</span></pre>'),
    ("comment with markup", "html", f'<!-- <a href="{H}/old"> --><a href="{H}/new">',
     f'<!-- <a href="{H}/old"> --><a href="{S}/new">'),
    ("xmlns untouched", "html", '<html xmlns="http://blog.example.com/ns">', '<html xmlns="http://blog.example.com/ns">'),
    ("itemtype untouched", "html", f'<div itemscope itemtype="{H}/Thing">', f'<div itemscope itemtype="{H}/Thing">'),
    ("other data-* untouched", "html", f'<div data-url="{H}/x">', f'<div data-url="{H}/x">'),
    # lazy loading: a script copies these into src/srcset
    ("lazy data-src", "html", f'<img src="data:," data-src="{H}/a.png">',
     f'<img src="data:," data-src="{S}/a.png">'),
    ("lazy data-srcset, every candidate", "html", f'<img data-srcset="{H}/a.png 1x, {H}/b.png 2x">',
     f'<img data-srcset="{S}/a.png 1x, {S}/b.png 2x">'),
    ("lazy data-lazy-src", "html", f'<iframe data-lazy-src="{H}/e">', f'<iframe data-lazy-src="{S}/e">'),
    ("alt and title untouched", "html", f'<img alt="{H}/x" title="{H}/y" src="{S}/z">',
     f'<img alt="{H}/x" title="{H}/y" src="{S}/z">'),
    ("URL inside a query untouched", "html", f'<a href="{S}/go?to={H}/x">', f'<a href="{S}/go?to={H}/x">'),
    ("textarea untouched", "html", f"<textarea>{H}/</textarea>", f"<textarea>{H}/</textarea>"),
    # a textarea's text is text, not markup
    ("markup in a textarea untouched", "html",
     f'<TextArea rows=3><a href="{H}/x">x</a></textarea><a href="{H}/y">',
     f'<TextArea rows=3><a href="{H}/x">x</a></textarea><a href="{S}/y">'),
    ("escaped markup in a textarea in a feed untouched", "xml",
     f'<content type="html">&lt;textarea&gt;&lt;a href="{H}/x"&gt;&lt;/textarea&gt;&lt;a href="{H}/y"&gt;</content>',
     f'<content type="html">&lt;textarea&gt;&lt;a href="{H}/x"&gt;&lt;/textarea&gt;&lt;a href="{S}/y"&gt;</content>'),
    ("title untouched", "html", f"<title>{H}/</title>", f"<title>{H}/</title>"),
    ("bytes around kept: quotes, entities, <br />, order", "html",
     f"<p class='a'  id=x>caf&eacute;<br /><a  rel=nofollow href='{H}/x' >x</a></p>",
     f"<p class='a'  id=x>caf&eacute;<br /><a  rel=nofollow href='{S}/x' >x</a></p>"),
    # -- malformed input ----------------------------------------------------
    # browsers drop a tag cut off by the end of the file: left as it is
    ("unterminated tag at end of text", "html", f'<a href="{H}/x', f'<a href="{H}/x'),
    ("unterminated tag, unquoted", "html", f'<img src={H}/x', f'<img src={S}/x'),
    ("stray < in text before", "html", f'a < b <a href="{H}/x">', f'a < b <a href="{S}/x">'),
    ("no tag at all", "html", f"{H}/x", f"{H}/x"),
    ("empty host", "html", '<a href="http:///x">', '<a href="http:///x">'),
    ("scheme alone at end", "html", '<a href="http://', '<a href="http://'),
]


@pytest.mark.parametrize("syntax, before, after", [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_pair(syntax, before, after):
    assert rewrite(before, RULES, syntax).text == after


@pytest.mark.parametrize("syntax, before, after", [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_pair_is_idempotent(syntax, before, after):
    assert rewrite(after, RULES, syntax).text == after


def test_ids_are_unique():
    assert len({p[0] for p in PAIRS}) == len(PAIRS)


def test_audit_mode_changes_nothing_and_reports_own_links():
    audit = Rules(own_hosts=RULES.own_hosts, rewrite=False)
    result = rewrite(f'<a href="{H}/x">x</a>\n<img src="{H}/i.png">', audit, "html")
    assert result.text == f'<a href="{H}/x">x</a>\n<img src="{H}/i.png">'
    assert result.upgraded == 0
    assert [(f.url, f.kind, f.own, f.where, f.line) for f in result.insecure] == [
        (f"{H}/x", LINK, True, "a href", 1),
        (f"{H}/i.png", SUBRESOURCE, True, "img src", 2),
    ]


def test_findings_name_kind_place_and_line():
    html = (
        '<link rel="stylesheet" href="http://x.example.io/s.css">\n'
        '<p>prose http://x.example.io/</p>\n'
        '<a href="http://x.example.io/p">p</a>\n'
        '<img srcset="https://ok.example.io/a 1x, http://x.example.io/b.png 2x">\n'
        '<div style="background:url(&quot;http://x.example.io/c.png&quot;)"></div>\n'
        f'<img src="{H}/ok.png">\n'
    )
    result = rewrite(html, RULES, "html")
    assert result.upgraded == 1
    assert [(f.url, f.kind, f.own, f.where, f.line) for f in result.insecure] == [
        ("http://x.example.io/s.css", SUBRESOURCE, False, "link[rel=stylesheet] href", 1),
        ("http://x.example.io/p", LINK, False, "a href", 3),
        ("http://x.example.io/b.png", SUBRESOURCE, False, "img srcset", 4),
        ("http://x.example.io/c.png", SUBRESOURCE, False, "style attribute url()", 5),
    ]


def test_escaped_feed_finding_url_stops_at_the_entity():
    xml = '<content type="html">&lt;img src=&quot;http://x.example.io/a.png&quot;&gt;</content>'
    [finding] = rewrite(xml, RULES, "xml").insecure
    assert (finding.url, finding.kind, finding.where) == (
        "http://x.example.io/a.png", SUBRESOURCE, "escaped img src")


# (syntax, text, the URL a browser requests): entities decoded, the whole value
REPORTED_URLS = [
    ("html", '<img src="http://x.example.io/MOPy&amp;Plant.JPG">', "http://x.example.io/MOPy&Plant.JPG"),
    ("html", '<a href="http://en.example.io/wiki/The_Shining_(film)">', "http://en.example.io/wiki/The_Shining_(film)"),
    ("html", '<a href="http://x.example.io/a file.html">', "http://x.example.io/a file.html"),
    ("html", "<a href=http://x.example.io/a?b=1&amp;c=2>", "http://x.example.io/a?b=1&c=2"),
    ("html", '<img srcset="http://x.example.io/a.png 1x, http://x.example.io/b(1).png 2x">',
     ["http://x.example.io/a.png", "http://x.example.io/b(1).png"]),
    ("html", '<div style="background:url(&quot;http://x.example.io/b (1).png&quot;)">', "http://x.example.io/b (1).png"),
    ("html", '<meta http-equiv="refresh" content="0; url=\'http://x.example.io/n\'">', "http://x.example.io/n"),
    ("css", "a{b:url( http://x.example.io/c.png )}", "http://x.example.io/c.png"),
    ("xml", '<content type="html">&lt;img src="http://x.example.io/MOPy&amp;amp;Plant.JPG"&gt;</content>',
     "http://x.example.io/MOPy&Plant.JPG"),
    ("xml", '<summary type="html">&lt;img src=&quot;http://x.example.io/a(b).png&quot;&gt;</summary>',
     "http://x.example.io/a(b).png"),
    ("xml", "<link>http://x.example.io/?a=1&amp;b=2</link>", "http://x.example.io/?a=1&b=2"),
]


@pytest.mark.parametrize("syntax, text, url", REPORTED_URLS)
def test_the_reported_url_is_the_one_a_browser_requests(syntax, text, url):
    urls = [url] if isinstance(url, str) else url
    assert [finding.url for finding in rewrite(text, RULES, syntax).insecure] == urls


def test_json_urls_of_other_hosts_are_not_reported():
    html = '<script type="application/ld+json">{"@context": "http://schema.org"}</script>'
    assert rewrite(html, RULES, "html").insecure == []


def test_non_utf8_bytes_round_trip():
    raw = b'<p>caf\xe9 \xff</p><a href="http://blog.example.com/x">\x80</a>'
    text = raw.decode("utf-8", "surrogateescape")
    out = rewrite(text, RULES, "html").text.encode("utf-8", "surrogateescape")
    assert out == raw.replace(b"http://", b"https://")


def test_large_file():
    chunk = f'<p>日本語のテキスト {H}/prose</p><a href="{H}/x">x</a><img src="http://x.example.io/i.png">\n'
    text = chunk * 50_000  # about 5 MB
    result = rewrite(text, RULES, "html")
    assert result.upgraded == 50_000
    assert len(result.insecure) == 50_000
    assert result.text == text.replace(f'href="{H}', f'href="{S}')


@pytest.mark.parametrize("path, syntax", [
    ("index.html", "html"), ("a/B.HTM", "html"), ("feeds/all.atom.xml", "xml"),
    ("sitemap.xml", "xml"), ("theme/css/main.css", "css"), ("manifest.webmanifest", "json"),
    ("images/a.png", None), ("README", None),
])
def test_syntax_by_file_name(path, syntax):
    assert syntax_for(path) == syntax
