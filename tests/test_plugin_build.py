"""Real Pelican builds of tests/fixtures/rewrite_site with the plugin."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest
from pelican import Pelican
from pelican.plugins import signals
from pelican.settings import read_settings
from pelican.writers import Writer

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "rewrite_site")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_REPORT = [
    # each article's/page's own URLs are upgraded once, in its content, before
    # templates copy it into pages and feeds; the output pass upgrades the rest
    "https: scanned 19 files and 2 content sources, upgraded 10 http URLs: "
    "9 in 2 content sources, 1 in 1 output files",
    "https: 14 insecure subresources remain (browsers block or flag them as mixed content)",
    "https:   author/tester.html:39: img src http://tracker.example.io/pixel.gif (from posts/first.md)",
    "https:   author/tester.html:45: img srcset http://photos.example.io/pic@2x.png (from posts/first.md)",
    "https:   category/notes.html:39: img src http://tracker.example.io/pixel.gif (from posts/first.md)",
    "https:   category/notes.html:45: img srcset http://photos.example.io/pic@2x.png (from posts/first.md)",
    "https:   feeds/all.atom.xml:6: escaped img src http://tracker.example.io/pixel.gif (from posts/first.md)",
    "https:   feeds/all.atom.xml:12: escaped img srcset http://photos.example.io/pic@2x.png (from posts/first.md)",
    "https:   feeds/all.rss.xml:6: escaped img src http://tracker.example.io/pixel.gif (from posts/first.md)",
    "https:   feeds/all.rss.xml:12: escaped img srcset http://photos.example.io/pic@2x.png (from posts/first.md)",
    "https:   first-post.html:45: img src http://tracker.example.io/pixel.gif (from posts/first.md)",
    "https:   first-post.html:51: img srcset http://photos.example.io/pic@2x.png (from posts/first.md)",
    "https:   index.html:39: img src http://tracker.example.io/pixel.gif (from posts/first.md)",
    "https:   index.html:45: img srcset http://photos.example.io/pic@2x.png (from posts/first.md)",
    "https:   pages/about.html:24: video poster http://media.example.io/poster.jpg (from pages/about.md)",
    "https:   static/site.css:2: css url() http://fonts.example.io/a.woff2 (from static/site.css)",
    "https: 0 http links to own hosts remain",
    "https: 13 http links to other hosts remain "
    "(blog.example.com.evil.net 6, evilblog.example.com 6, www.w3.org 1)",
]

OWN_HTTP_IN_ATTRIBUTE = re.compile(
    r"""(?i)(?:href|src|srcset|poster|content)\s*=\s*["']?http://(?:www\.)?blog\.example\.com(?![\w.-])"""
)


@pytest.fixture
def site(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "site")
    return tmp_path / "site"


def build(site, **overrides):
    settings = read_settings(
        str(site / "pelicanconf.py"),
        override={"OUTPUT_PATH": str(site / "output"), **overrides},
    )
    Pelican(settings).run()
    return site / "output"


def report_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "pelican_https.report"]


@pytest.fixture
def held_batches(monkeypatch):
    """How many files each call of _Build.write_held found held."""
    from pelican_https import plugin

    batches = []
    write_held = plugin._Build.write_held

    def counting(self):
        batches.append(len(self.held))
        write_held(self)

    monkeypatch.setattr(plugin._Build, "write_held", counting)
    return batches


def bare_build(tmp_path):
    """A run's state without a Pelican run, and its empty output folder."""
    from types import SimpleNamespace

    from pelican_https import plugin

    output = tmp_path / "output"
    output.mkdir()
    return plugin._Build(SimpleNamespace(settings={
        "SITEURL": "https://blog.example.com", "OUTPUT_PATH": str(output), "PATH": str(tmp_path)})), output


def add_an_article_whose_template_fails(site):
    """An article older than the fixture's (so written after it) whose page's
    template raises; the folder for THEME_TEMPLATES_OVERRIDES."""
    (site / "content" / "posts" / "boom.md").write_text(
        "Title: Boom\nDate: 2024-01-01\nCategory: notes\n\nAn older post.\n", encoding="utf-8")
    overrides = site / "overrides"
    overrides.mkdir()
    (overrides / "article.html").write_text(
        '{% if article.title == "Boom" %}{{ article.no_such_thing() }}{% endif %}'
        '{% include "!simple/article.html" %}', encoding="utf-8")
    return overrides


@pytest.mark.parametrize("batch", [None, 1])
def test_report_line_by_line(site, caplog, monkeypatch, batch):
    # batch 1: each file our writer is given is rewritten and written out at
    # once, instead of in batches: the same report
    if batch is not None:
        monkeypatch.setattr("pelican_https.plugin._HELD_FILES", batch)
    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    build(site, HTTPS_REPORT_PATH="reports/https.json")
    assert report_lines(caplog) == EXPECTED_REPORT

    report = json.loads((site / "reports" / "https.json").read_text(encoding="utf-8"))
    assert (report["files_scanned"], report["files_changed"], report["urls_upgraded"]) == (19, 1, 10)
    assert (report["contents_scanned"], report["contents_changed"],
            report["urls_upgraded_in_contents"], report["urls_upgraded_in_files"]) == (2, 2, 9, 1)
    assert report["remaining"] == {"subresources": 14, "own_domain_links": 0, "other_links": 13}
    assert report["siteurl_insecure"] is False
    assert report["subresources"][-1] == {
        "output": "static/site.css", "line": 2, "url": "http://fonts.example.io/a.woff2",
        "where": "css url()", "source": "static/site.css",
    }
    assert [f"https:   {item['output']}:{item['line']}: {item['where']} {item['url']} "
            f"(from {item['source']})" for item in report["subresources"]] == EXPECTED_REPORT[2:16]


def test_each_run_of_one_pelican_starts_afresh(site, caplog, monkeypatch):
    # pelican --autoreload runs the same Pelican again for every change, and
    # Pelican sends `initialized` once: the second run must rewrite and report
    # exactly as the first, not skip the files the first one handled.
    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    settings = read_settings(str(site / "pelicanconf.py"), override={
        "OUTPUT_PATH": str(site / "output"), "HTTPS_REPORT_PATH": "https.json"})
    pelican = Pelican(settings)
    outputs, reports = [], []
    for _ in range(2):
        caplog.clear()
        pelican.run()
        outputs.append({path.relative_to(site / "output"): path.read_bytes()
                        for path in (site / "output").rglob("*") if path.is_file()})
        reports.append(report_lines(caplog))
    assert reports[0] == reports[1] == EXPECTED_REPORT
    assert outputs[0] == outputs[1]
    assert not any(OWN_HTTP_IN_ATTRIBUTE.search(data.decode("utf-8", "replace"))
                   for path, data in outputs[1].items() if path.suffix == ".html")


def test_a_run_inside_another_keeps_each_ones_state(site, tmp_path, caplog, monkeypatch):
    # i18n_subsites builds each language's subsite as another Pelican run,
    # while the main run asks for its writer: each run rewrites and reports
    # its own site, and the main run goes on with its own state.
    from pelican import signals

    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    subsite = tmp_path / "subsite"
    shutil.copytree(site, subsite)
    nested = []

    def build_subsite(pelican):
        if not nested:
            nested.append(True)
            settings = read_settings(str(subsite / "pelicanconf.py"), override={
                "PATH": str(subsite / "content"), "OUTPUT_PATH": str(subsite / "output")})
            Pelican(settings).run()

    signals.get_writer.connect(build_subsite)
    try:
        output = build(site)
    finally:
        signals.get_writer.disconnect(build_subsite)
    assert nested and report_lines(caplog) == EXPECTED_REPORT * 2
    for folder in (output, subsite / "output"):
        assert b"url(https://blog.example.com/images/bg.png)" in (folder / "static" / "site.css").read_bytes()


def test_output_is_upgraded_and_the_rest_kept(site):
    output = build(site)
    post = (output / "first-post.html").read_text(encoding="utf-8")
    assert '<a href="https://blog.example.com/about/">own link</a>' in post
    assert '<a href="https://blog.example.com/2019/post.html">old-host link</a>' in post  # mapped
    assert '<a href="HTTPS://WWW.Blog.Example.com/x/">www link</a>' in post  # :80 dropped
    assert 'src="https://cdn.example.org/img/logo.png"' in post
    assert 'src="http://tracker.example.io/pixel.gif"' in post
    assert '<a href="http://blog.example.com.evil.net/">lookalike</a>' in post
    assert '<a href="http://evilblog.example.com/">other</a>' in post
    assert "Prose mentions http://blog.example.com/ without a link." in post
    assert "&quot;http://blog.example.com/&quot;" in post  # the code sample
    assert ('srcset="https://blog.example.com/images/pic.png 1x, '
            'http://photos.example.io/pic@2x.png 2x"') in post
    assert "url('https://blog.example.com/images/bg.png')" in post
    css = (output / "static" / "site.css").read_text(encoding="utf-8")
    assert css == (
        "body { background: url(https://blog.example.com/images/bg.png); }\n"
        '.x { background: url("http://fonts.example.io/a.woff2"); }\n'
        "/* http://blog.example.com/commented.png */\n"
    )
    atom = (output / "feeds" / "all.atom.xml").read_text(encoding="utf-8")
    assert 'href="https://blog.example.com/first-post.html"' in atom
    assert 'src="https://blog.example.com/images/pic.png"' in atom
    # no own-host http URL is left in any followed attribute of any output file
    for path in output.rglob("*"):
        if path.suffix in (".html", ".xml", ".css"):
            text = path.read_text(encoding="utf-8").replace("&quot;", '"')
            text = re.sub(r"<pre.*?</pre>", "", text, flags=re.S)
            assert not OWN_HTTP_IN_ATTRIBUTE.search(text), path


def test_every_file_is_upgraded_when_pelican_writes_it(site):
    # Another plugin that reads each page or feed as it is written (on
    # content_written / feed_written): nothing is held, and it finds each
    # file written and upgraded already.
    seen = {}

    def read(path, **kwargs):
        with open(path, encoding="utf-8") as f:
            seen[path] = f.read()

    signals.content_written.connect(read)
    signals.feed_written.connect(read)
    try:
        output = build(site)
    finally:
        signals.content_written.disconnect(read)
        signals.feed_written.disconnect(read)
    assert len(seen) > 10
    for path, text in seen.items():
        assert text == open(path, encoding="utf-8").read(), path
        text = re.sub(r"<pre.*?</pre>", "", text.replace("&quot;", '"'), flags=re.S)
        assert not OWN_HTTP_IN_ATTRIBUTE.search(text), path
    assert 'src="https://blog.example.com/images/pic.png"' in seen[str(output / "feeds" / "all.atom.xml")]


def test_content_is_upgraded_once_before_templates_use_it(site):
    seen = {}

    def keep(generator):  # reads nothing yet: Pelican memoizes .content/.summary
        seen.update((article.slug, article) for article in generator.articles)

    signals.article_generator_finalized.connect(keep)
    try:
        build(site)
    finally:
        signals.article_generator_finalized.disconnect(keep)
    article = seen["first-post"]
    # what templates got: the memoized content and summary
    content, summary, metadata_summary = article.content, article.summary, article.metadata["summary"]
    assert '<a href="https://blog.example.com/about/">own link</a>' in content
    assert 'src="http://tracker.example.io/pixel.gif"' in content  # not upgradable: stays
    assert summary == metadata_summary == '<p>Links to <a href="https://blog.example.com/about/">about</a>.</p>'


def test_second_build_changes_nothing(site):
    output = build(site)
    first = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    build(site)
    second = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert second == first


def test_audit_mode_changes_no_byte_and_reports_own_links(site, caplog):
    caplog.set_level(logging.INFO)
    audited = build(site, HTTPS_REWRITE=False)
    plain = build(site, PLUGINS=[], OUTPUT_PATH=str(site / "plain"))
    for path in plain.rglob("*"):
        if path.is_file():
            assert (audited / path.relative_to(plain)).read_bytes() == path.read_bytes(), path
    lines = report_lines(caplog)
    assert lines[0] == ("https: scanned 19 files and 2 content sources, upgraded 0 http URLs: "
                        "0 in 0 content sources, 0 in 0 output files")
    own = [line for line in lines if "http links to own hosts remain" in line]
    assert own and not own[0].startswith("https: 0 ")
    assert ("https:   first-post.html:41: a href http://blog.example.com/about/ (from posts/first.md)"
            in lines)


def test_deploy_domains_are_the_sites_own_hosts(site):
    # the www name only in DEPLOY_DOMAINS (as a publishconf.py lists it for fab deploy)
    post = build(site, HTTPS_HOSTS=[], DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"])
    assert '<a href="HTTPS://WWW.Blog.Example.com/x/">www link</a>' in (post / "first-post.html").read_text(
        encoding="utf-8")
    post = build(site, HTTPS_HOSTS=[], DEPLOY_DOMAINS=["blog.example.com"])
    assert '<a href="HTTP://WWW.Blog.Example.com:80/x/">www link</a>' in (post / "first-post.html").read_text(
        encoding="utf-8")


def test_http_siteurl_warns(site, caplog):
    caplog.set_level(logging.INFO)
    build(site, SITEURL="http://blog.example.com")
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "pelican_https.plugin" and r.levelno == logging.WARNING]
    assert warnings == ["https: SITEURL is 'http://blog.example.com', an http URL; "
                        "set it to https://blog.example.com"]
    assert "https: SITEURL is 'http://blog.example.com': http, not https" in report_lines(caplog)
    # Pelican's own absolute links are http now, and upgraded
    index = (site / "output" / "index.html").read_text(encoding="utf-8")
    assert 'href="https://blog.example.com/theme/css/main.css"' in index


def test_another_plugins_writer_falls_back_to_rewriting_on_disk(site):
    def plain_writer(pelican):
        return Writer

    signals.get_writer.connect(plain_writer)  # connected first: Pelican picks it
    try:
        output = build(site)
    finally:
        signals.get_writer.disconnect(plain_writer)
    post = (output / "first-post.html").read_text(encoding="utf-8")
    assert '<a href="https://blog.example.com/about/">own link</a>' in post
    atom = (output / "feeds" / "all.atom.xml").read_text(encoding="utf-8")
    assert 'src="https://blog.example.com/images/pic.png"' in atom


def test_the_writer_in_memory_and_the_rewrite_on_disk_give_the_same_bytes(site, tmp_path):
    # Pages arrive at RewritingWriter in one write, feeds in many small ones
    # (the SAX writer): either way every file must be what rewriting the
    # plain writer's files on disk gives, byte for byte.
    in_memory = build(site)
    on_disk_site = tmp_path / "on-disk"
    shutil.copytree(FIXTURE, on_disk_site)

    def plain_writer(pelican):
        return Writer

    signals.get_writer.connect(plain_writer)
    try:
        on_disk = build(on_disk_site)
    finally:
        signals.get_writer.disconnect(plain_writer)
    names = sorted(str(path.relative_to(in_memory)) for path in in_memory.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(on_disk)) for path in on_disk.rglob("*") if path.is_file())
    assert any(name.endswith(".xml") for name in names) and any(name.endswith(".html") for name in names)
    for name in names:
        assert (in_memory / name).read_bytes() == (on_disk / name).read_bytes(), name


def test_a_file_named_two_ways_is_rewritten_and_reported_once(tmp_path):
    # Pelican hands the writer absolute, normalized paths, and rewrite_text
    # takes those as they are; any other spelling of the same file is made
    # absolute and normalized first, so the file is one file: written again
    # (Pelican's override_output), it is rewritten again and its report
    # replaces the earlier one's.
    build, output = bare_build(tmp_path)
    (output / "a").mkdir()
    page = '<a href="http://blog.example.com/x">x</a><img src="http://other.example.net/i.png">'
    upgraded = page.replace("http://blog", "https://blog")
    first = build.rewrite_text(str(output / "a" / "page.html"), page)
    again = build.rewrite_text(str(output / "a" / ".." / "a" / "page.html"), page)
    relative = os.path.relpath(output / "a" / "page.html")
    assert first == again == build.rewrite_text(relative, page) == upgraded
    assert build.handled == {str(output / "a" / "page.html")}
    collector = build.collector
    assert (collector.files_scanned, collector.files_changed, collector.urls_upgraded) == (1, 1, 1)
    report = collector.report(lambda output, url: None)
    assert [(item.output, item.url) for item in report.remaining["subresources"]] == [
        ("a/page.html", "http://other.example.net/i.png")]
    # written again without the image and without a change: nothing of the
    # first version is left in the report
    build.rewrite_text(str(output / "a" / "page.html"), '<a href="https://x.example.org/">x</a>')
    assert (collector.files_scanned, collector.files_changed, collector.urls_upgraded) == (1, 0, 0)
    assert not any(collector.report(lambda output, url: None).remaining.values())


def test_a_page_written_over_the_index_is_upgraded_and_reported(site, caplog, monkeypatch):
    # A page saved as index.html is written over the blog index Pelican wrote
    # before (override_output): the file on disk is the page, upgraded, and
    # the report lists what remains in the page, not in the index it replaced.
    (site / "content" / "pages" / "home.md").write_text(
        "Title: Home\nSave_as: index.html\nURL:\n\n"
        'Welcome, <img src="http://blog.example.com/images/pic.png" alt="me">.\n',
        encoding="utf-8")
    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    output = build(site, LINKS=(("Old", "http://blog.example.com/old/"),),
                   HTTPS_REPORT_PATH="https.json")
    index = (output / "index.html").read_text(encoding="utf-8")
    assert 'Welcome, <img src="https://blog.example.com/images/pic.png" alt="me">' in index
    assert 'href="https://blog.example.com/old/"' in index  # LINKS, from the theme
    assert "pixel.gif" not in index  # (the index of posts is gone)
    assert not OWN_HTTP_IN_ATTRIBUTE.search(index)
    lines = report_lines(caplog)
    assert not [line for line in lines if line.startswith("https:   index.html:")]
    report = json.loads((site / "https.json").read_text(encoding="utf-8"))
    assert not [item for kind in ("subresources", "own_domain_links", "other_links")
                for item in report[kind] if item["output"] == "index.html"]


def test_a_write_pelican_skips_is_not_reported(site, caplog, monkeypatch):
    # An article saved as index.html is written first, with override_output;
    # Pelican then skips the blog index (it writes it to os.devnull): the
    # report is the article's, the file on disk.
    (site / "content" / "posts" / "home.md").write_text(
        "Title: Home\nDate: 2024-01-03\nCategory: notes\nSave_as: index.html\n\n"
        'Hello, <img src="http://other.example.net/a.png" alt="a">.\n', encoding="utf-8")
    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    output = build(site)
    index = (output / "index.html").read_text(encoding="utf-8")
    assert 'Hello, <img src="http://other.example.net/a.png" alt="a">' in index
    number = index[:index.index("http://other.example.net/a.png")].count("\n") + 1
    assert [line for line in report_lines(caplog) if line.startswith("https:   index.html:")] == [
        f"https:   index.html:{number}: img src http://other.example.net/a.png (from posts/home.md)"]


def test_a_file_written_twice_while_held_is_the_second_text(tmp_path, monkeypatch):
    # Two writes of one file while the writer holds files (override_output):
    # the first is written out before Pelican opens the file again, or two
    # open files would write over each other (the longer text's tail left).
    from jinja2 import Template

    from pelican_https import plugin

    build_state, output = bare_build(tmp_path)
    monkeypatch.setattr(plugin, "_build", build_state)
    settings = read_settings(None, override={"OUTPUT_PATH": str(output)})
    writer = plugin.RewritingWriter(str(output), settings=settings)
    assert build_state.holding  # (no other plugin listens in this test)
    long_page = '<a href="http://blog.example.com/long">' + "x" * 5000 + "</a>"
    writer.write_file("page.html", Template(long_page), {})
    assert build_state.held and (output / "page.html").read_bytes() == b""  # held
    writer.write_file("page.html", Template('<a href="http://blog.example.com/short">s</a>'), {},
                      override_output=True)
    build_state.write_held()
    assert (output / "page.html").read_text(encoding="utf-8") == (
        '<a href="https://blog.example.com/short">s</a>')
    assert build_state.collector.files_scanned == 1


def test_a_rewrite_that_fails_leaves_no_file_empty(tmp_path, monkeypatch):
    # If rewriting a held file raises, the error goes on to Pelican, and every
    # held file is still written: the ones before rewritten, the rest as
    # Pelican gave them.
    build_state, output = bare_build(tmp_path)
    page = '<a href="http://blog.example.com/x">x</a>'
    names = ["a.html", "b.html", "c.html"]
    for name in names:
        path = str(output / name)
        build_state.held.append((open(path, "w", encoding="utf-8"), path, page, None))
    rewrite_text = build_state.rewrite_text

    def failing(path, text, content=None):
        if path.endswith("b.html"):
            raise RuntimeError("boom")
        return rewrite_text(path, text, content)

    monkeypatch.setattr(build_state, "rewrite_text", failing)
    with pytest.raises(RuntimeError, match="boom"):
        build_state.write_held()
    assert [(output / name).read_text(encoding="utf-8") for name in names] == [
        page.replace("http:", "https:"), page, page]
    assert not build_state.held


def test_a_file_that_cannot_be_written_leaves_the_others_written(tmp_path):
    build_state, output = bare_build(tmp_path)

    class Full:  # a file whose write fails (a full disk)
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

        def write(self, text):
            raise OSError(28, "No space left on device")

    page = '<a href="http://blog.example.com/x">x</a>'
    for name in ("a.html", "b.html", "c.html"):
        path = str(output / name)
        file = Full() if name == "b.html" else open(path, "w", encoding="utf-8")
        build_state.held.append((file, path, page, None))
    with pytest.raises(OSError, match="No space"):
        build_state.write_held()
    assert [(output / name).read_text(encoding="utf-8") for name in ("a.html", "c.html")] == [
        page.replace("http:", "https:")] * 2


def test_a_template_error_in_a_run_writes_out_what_was_held(site, monkeypatch, held_batches):
    # In process (as pelican --autoreload runs): the error goes on to the
    # caller, and the files held by then are written out, upgraded.
    from pelican_https import plugin

    monkeypatch.setattr(plugin, "_build", None)  # (the failed run's state: not left to other tests)
    overrides = add_an_article_whose_template_fails(site)
    with pytest.raises(Exception, match="no_such_thing"):
        build(site, THEME_TEMPLATES_OVERRIDES=[str(overrides)])
    assert held_batches and held_batches[-1] > 1  # files were held when the error came
    assert not plugin._build.held
    post = (site / "output" / "first-post.html").read_text(encoding="utf-8")
    assert '<a href="https://blog.example.com/about/">own link</a>' in post


def test_files_held_by_a_run_that_failed_elsewhere_are_written_at_exit(tmp_path):
    # An error outside the writer (in a generator between two files, say)
    # leaves files held: they are written out as the process exits.
    output = tmp_path / "output"
    output.mkdir()
    script = f"""
import sys
from types import SimpleNamespace
from pelican_https import plugin
build = plugin._Build(SimpleNamespace(settings={{
    "SITEURL": "https://blog.example.com", "OUTPUT_PATH": {str(output)!r}, "PATH": {str(tmp_path)!r}}}))
path = {str(output / "a.html")!r}
build.held.append((open(path, "w", encoding="utf-8"), path,
                   '<a href="http://blog.example.com/x">x</a>', None))
plugin._build = build
sys.exit("a generator failed")
"""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "a generator failed" in result.stderr
    assert (output / "a.html").read_text(encoding="utf-8") == '<a href="https://blog.example.com/x">x</a>'


def test_held_files_are_all_written_before_any_finalized_receiver(site, held_batches):
    # With nothing listening for each file, the writer holds files and writes
    # them out in batches: all of them before the run's end, where other
    # plugins look at the output (a finalized receiver that runs before ours).
    from pelican_https import plugin

    seen = {}

    def look(pelican):
        seen["held"] = len(plugin._build.held)
        seen["files"] = {path.name: path.read_text(encoding="utf-8")
                         for path in (site / "output").rglob("*.html")}
        plugin.on_finalized(pelican)  # ours, after this look

    signals.finalized.disconnect(plugin.on_finalized)
    signals.finalized.connect(look)
    try:
        output = build(site)
    finally:
        signals.finalized.disconnect(look)
        signals.finalized.connect(plugin.on_finalized)
    assert max(held_batches) > 1  # held, then written out together
    assert seen["held"] == 0
    assert seen["files"] == {path.name: path.read_text(encoding="utf-8")
                             for path in output.rglob("*.html")}
    assert "first-post.html" in seen["files"] and all(seen["files"].values())


def test_nothing_is_held_when_another_plugin_waits_for_a_generators_end(site):
    # Another plugin's receiver of article_writer_finalized may look at the
    # articles' files, and may run before ours: then each file is written out
    # as Pelican writes it.
    from pelican_https import plugin

    seen = []

    def look(generator, writer):
        seen.append((type(generator).__name__, plugin._build.holding,
                     (site / "output" / "first-post.html").read_text(encoding="utf-8")))

    signals.article_writer_finalized.connect(look)
    try:
        build(site)
    finally:
        signals.article_writer_finalized.disconnect(look)
    [(generator, holding, post)] = seen
    assert (generator, holding) == ("ArticlesGenerator", False)
    assert '<a href="https://blog.example.com/about/">own link</a>' in post


def test_the_writers_file_takes_text_only_and_nothing_once_closed(tmp_path):
    from pelican_https.plugin import _RewriteOnClose

    target = tmp_path / "page.html"
    stream = _RewriteOnClose()  # as RewritingWriter makes it
    stream._file, stream._path, stream._content = open(target, "w", encoding="utf-8"), str(target), None
    assert stream.write("<p>\r\n") == 5
    with pytest.raises(TypeError):
        stream.write(b"bytes")
    stream.write("</p>")
    stream.close()
    # no build: written as is (line ends too: the real file translates them, if at all)
    assert target.read_bytes() == b"<p>\r\n</p>"
    with pytest.raises(ValueError):
        stream.write("late")


def test_linked_static_files_do_not_change_their_source(site):
    source = site / "content" / "static" / "site.css"
    before = source.read_bytes()
    output = build(site, STATIC_CREATE_LINKS=True)
    assert source.read_bytes() == before
    assert b"url(https://blog.example.com/images/bg.png)" in (output / "static" / "site.css").read_bytes()


def test_non_utf8_static_css_round_trips(site):
    (site / "content" / "static" / "latin1.css").write_bytes(
        b"/* caf\xe9 */ a { background: url(http://blog.example.com/\xe9.png) }\n")
    output = build(site)
    assert (output / "static" / "latin1.css").read_bytes() == (
        b"/* caf\xe9 */ a { background: url(https://blog.example.com/\xe9.png) }\n")


def test_insecure_url_in_a_non_utf8_file_is_reported(site, monkeypatch):
    monkeypatch.chdir(site)
    (site / "content" / "static" / "latin1.css").write_bytes(
        b"a { background: url(http://fonts.example.io/caf\xe9.png) }\n")
    build(site, HTTPS_REPORT_PATH="https.json")
    report = json.loads((site / "https.json").read_bytes().decode("utf-8"))
    assert {"output": "static/latin1.css", "line": 1, "url": "http://fonts.example.io/caf\udce9.png",
            "where": "css url()", "source": "static/latin1.css"} in report["subresources"]


def run_pelican(site, *overrides):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               COLUMNS="400")
    command = [sys.executable, "-m", "pelican", "content", "-s", "pelicanconf.py", "-o", "output"]
    if overrides:
        command += ["-e", *overrides]
    return subprocess.run(command, cwd=site, env=env, capture_output=True, text=True)


def test_strict_mode_fails_the_pelican_command(site):
    assert run_pelican(site).returncode == 0
    strict = run_pelican(site, "HTTPS_STRICT=true")
    assert strict.returncode != 0
    assert "HTTPS_STRICT: 14 insecure subresources remain in the output" in strict.stdout + strict.stderr


def test_strict_mode_passes_when_nothing_insecure_remains(site):
    result = run_pelican(site, "HTTPS_STRICT=true", 'HTTPS_UPGRADE_HOSTS=["*.example.io", "cdn.example.org"]')
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_setting_fails_the_pelican_command_with_a_clear_error(site):
    result = run_pelican(site, 'HTTPS_HOSTS="www.blog.example.com"')
    assert result.returncode != 0
    assert ("HTTPS_HOSTS = 'www.blog.example.com' is invalid: expected a list of host names"
            in result.stdout + result.stderr)


def test_text_report_lists_at_most_max_items_per_kind():
    from pelican_https.report import Collector
    from pelican_https.rewrite import Rules, rewrite

    collector = Collector()
    page = "".join(f'<img src="http://x.example.io/{i}.png">\n' for i in range(5))
    collector.add("page.html", rewrite(page, Rules(own_hosts=frozenset()), "html"), False)
    lines = collector.report(lambda output, url: None).text_lines(max_items=2)
    assert lines == [
        "https: scanned 1 files and 0 content sources, upgraded 0 http URLs: "
        "0 in 0 content sources, 0 in 0 output files",
        "https: 5 insecure subresources remain (browsers block or flag them as mixed content)",
        "https:   page.html:1: img src http://x.example.io/0.png (from the theme, settings or a static file)",
        "https:   page.html:2: img src http://x.example.io/1.png (from the theme, settings or a static file)",
        "https:   ... and 3 more (all of them in the JSON report, see HTTPS_REPORT_PATH)",
        "https: 0 http links to own hosts remain",
        "https: 0 http links to other hosts remain",
    ]


def test_report_names_no_host_for_a_url_whose_host_cannot_be_parsed():
    # urlsplit raises ValueError on "http://[oops/": the report must not crash
    from pelican_https.report import Collector
    from pelican_https.rewrite import Rules, rewrite

    collector = Collector()
    page = '<a href="http://[oops/x">x</a>\n<a href="http://example.net:8080/a?b#c">y</a>\n'
    collector.add("page.html", rewrite(page, Rules(own_hosts=frozenset()), "html"), False)
    report = collector.report(lambda output, url: None)
    assert report.text_lines()[-1] == "https: 2 http links to other hosts remain (? 1, example.net 1)"
    assert json.loads(report.to_json())["other_links"][0] == {
        "output": "page.html", "line": 1, "url": "http://[oops/x", "where": "a href", "source": None}


def test_an_article_page_taken_around_its_content_reports_what_a_full_scan_reports(
        site, caplog, monkeypatch, tmp_path):
    # The content pass keeps each article's rewritten HTML with its URLs'
    # outcomes; the article's page, which shows that HTML verbatim, is scanned
    # around it.  (Not with a host map: the fixture's own settings have one,
    # so its old host is listed as an own host here instead.)  Same report,
    # JSON included, as a build whose pages are scanned whole.
    import pelican_https.rewrite as rewrite_module

    found = []
    fragment_at = rewrite_module._fragment_at

    def spy(text, fragment):
        found.append(fragment_at(text, fragment))
        return found[-1]

    def reports(**overrides):
        caplog.clear()
        build(site, HTTPS_HOST_MAP={}, HTTPS_HOSTS=["www.blog.example.com", "old-blog.example.net"],
              HTTPS_REPORT_PATH="report.json", **overrides)
        report = json.loads((site / "report.json").read_text(encoding="utf-8"))
        del report["own_seconds"]
        return report_lines(caplog), report

    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(rewrite_module, "_fragment_at", spy)
    around = reports()
    assert any(at >= 0 for at in found)  # the page of posts/first.md
    monkeypatch.setattr(rewrite_module, "_fragment_at", lambda text, fragment: -1)
    shutil.rmtree(site / "output")
    assert reports() == around
    assert "https:   first-post.html:45: img src http://tracker.example.io/pixel.gif (from posts/first.md)" in around[0]


def test_a_build_that_fails_leaves_no_held_file_empty(site):
    # A template error in the middle of the articles: pelican exits non-zero,
    # and the files the writer held by then (the feeds, the first article,
    # written first) are written out, upgraded, as the process exits.
    overrides = add_an_article_whose_template_fails(site)
    result = run_pelican(site, f'THEME_TEMPLATES_OVERRIDES=["{overrides}"]')
    assert result.returncode != 0 and "no_such_thing" in result.stdout + result.stderr
    output = site / "output"
    assert not (output / "boom.html").exists() or not (output / "boom.html").read_bytes()
    post = (output / "first-post.html").read_text(encoding="utf-8")
    assert '<a href="https://blog.example.com/about/">own link</a>' in post
    atom = (output / "feeds" / "all.atom.xml").read_text(encoding="utf-8")
    assert atom.rstrip().endswith("</feed>") and 'src="https://blog.example.com/images/pic.png"' in atom
