"""The report and the GitHub Actions output as pure functions of findings."""

from pelican_https import github
from pelican_https.report import Collector, registrable_domain
from pelican_https.rewrite import Rules, rewrite

RULES = Rules(own_hosts=frozenset({"blog.example.com"}), rewrite=True)


def report_of(pages, feeds=(), sources=None):
    collector = Collector()
    for output, text in pages:
        collector.add_output(output, False, rewrite(text, RULES, "html"))
    for output, text in feeds:
        collector.add_output(output, True, rewrite(text, RULES, "xml"))
    return collector.report(lambda output, url: (sources or {}).get(output, set()),
                            lambda url: set(), RULES.own_hosts)


def test_each_insecure_url_once_with_its_pages_and_at_most_max_items():
    page = "".join(f'<img src="http://x.example.io/{i}.png">\n' for i in range(5))
    report = report_of([("a.html", page), ("b.html", page)], sources={"a.html": {"posts/a.md"}})
    [(warn, block)] = report.blocks(max_items=2)
    assert warn and block.splitlines() == [
        "https: 5 insecure subresources on 2 pages (mixed content: browsers block or flag them):",
        "https:   http://x.example.io/0.png (img src; 2 pages; from posts/a.md)",
        "https:   http://x.example.io/1.png (img src; 2 pages; from posts/a.md)",
        "https:   ... and 3 more",
    ]
    [(_, block)] = report.blocks(report_path="https.json", max_items=2)
    assert block.endswith("... and 3 more (all of them in https.json)")


def test_one_of_each_is_said_in_the_singular_and_the_theme_is_named():
    report = report_of([("index.html", '<img src="http://x.example.io/a.png">')])
    assert report.blocks()[0][1].splitlines() == [
        "https: 1 insecure subresource on 1 page (mixed content: browsers block or flag them):",
        "https:   http://x.example.io/a.png (img src; 1 page; from the theme or settings, e.g. index.html:1)",
    ]
    assert report.headline() == ("https: no http URL to upgrade; 1 file scanned; "
                                 "left: 1 mixed content, 0 own http links")


def test_feed_subresources_are_information_and_other_hosts_are_counted_by_host():
    feed = '<content type="html">&lt;img src="http://x.example.io/a.png"&gt;</content>'
    links = '<a href="http://www.blog.example.com/">a</a><a href="http://elsewhere.example.org/">b</a>'
    report = report_of([("index.html", links)], feeds=[("feed", feed)])
    blocks = report.blocks()
    assert [warn for warn, _ in blocks] == [False, False]
    assert blocks[0][1].startswith("https: 1 insecure subresource in feed entries, in 1 feed ")
    assert blocks[1][1].splitlines() == [
        "https: 2 http URLs of other hosts are linked, 2 times (elsewhere.example.org 1)",
        "https:   www.blog.example.com 1 look like this site's own (same domain): list those it serves "
        "in HTTPS_HOSTS, others serving https in HTTPS_UPGRADE_HOSTS",
    ]
    assert report.blocks(info=False) == []  # (made only when shown)


def test_registrable_domain():
    assert registrable_domain("resume.blog.example.com") == "example.com"
    assert registrable_domain("www.example.co.uk") == "example.co.uk"
    assert registrable_domain("localhost") == "localhost"


def test_workflow_command_escapes_as_the_runner_reads_it():
    assert github.command({"file": "content/a,b:c.md", "line": 3, "title": None}, "100% done\nnext") == (
        "::warning file=content/a%2Cb%3Ac.md,line=3::100%25 done%0Anext")


def test_line_of_a_url_in_a_source_file():
    text = "Title: x\n\nSee ![a](http://x.example.io/a?b=1&c=2)\n<img src=\"http://x.example.io/z?b=1&amp;c=2\">\n"
    assert github.line_of(text, "http://x.example.io/a?b=1&c=2") == 3
    assert github.line_of(text, "http://x.example.io/z?b=1&c=2") == 4
    assert github.line_of(text, "http://nowhere.example.io/") is None
