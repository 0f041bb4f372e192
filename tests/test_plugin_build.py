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

HEADLINE = (
    # each article's/page's own URLs are upgraded once, in its content, before
    # templates copy it into pages and feeds; the output pass upgrades the rest
    "https: upgraded 11 http URLs: 10 in 2 articles/pages (and every page and feed showing them), "
    "1 in 1 other file; 21 files scanned; left: 4 mixed content, 0 own http links"
)
# (level, line) below the headline: each insecure URL once, most pages first
EXPECTED_REPORT = [
    ("WARNING", "https: 4 insecure subresources on 6 pages (mixed content: browsers block or flag them):"),
    ("WARNING", "https:   http://photos.example.io/pic@2x.png (img srcset; 4 pages; from posts/first.md)"),
    ("WARNING", "https:   http://tracker.example.io/pixel.gif (img src; 4 pages; from posts/first.md)"),
    ("WARNING", "https:   http://fonts.example.io/a.woff2 (css url(); 1 page; from static/site.css)"),
    ("WARNING", "https:   http://media.example.io/poster.jpg (video poster; 1 page; from pages/about.md)"),
    # feed readers, not browsers, fetch these: a category of their own, not a warning
    ("INFO", "https: 2 insecure subresources in feed entries, in 4 feeds (feed readers fetch them, not browsers):"),
    ("INFO", "https:   http://photos.example.io/pic@2x.png (escaped img srcset; 4 feeds; from posts/first.md)"),
    ("INFO", "https:   http://tracker.example.io/pixel.gif (escaped img src; 4 feeds; from posts/first.md)"),
    ("INFO", "https: 5 http URLs of other hosts are linked, 33 times "
             "(blog.example.com.evil.net 8, en.example.io 8, photos.example.io 8, www.w3.org 1)"),
    ("INFO", "https:   evilblog.example.com 8 look like this site's own (same domain): list those it "
             "serves in HTTPS_HOSTS, others serving https in HTTPS_UPGRADE_HOSTS"),
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


def without_text_samples(text):
    """The text (a feed's escaped HTML unescaped), without code samples and
    textareas (http text on purpose)."""
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
    return re.sub(r"<(pre|textarea).*?</\1>", "", text, flags=re.S)


def report_records(caplog):
    """(level, line) of the report's messages (one message per category)."""
    return [(r.levelname, line) for r in caplog.records if r.name.startswith("pelican_https.")
            and r.name != "pelican_https.plugin" for line in r.getMessage().splitlines()]


def report_lines(caplog):
    return [message for _, message in report_records(caplog)]


def run_pelican(site, *overrides, env=None, options=()):
    """``pelican`` as a command; outside GitHub Actions unless ``env`` says so."""
    if env is None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    env = dict(env, COLUMNS="400", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "pelican", "content", "-s", "pelicanconf.py", "-o", "output", *options]
    if overrides:
        command += ["-e", *overrides]
    return subprocess.run(command, cwd=site, env=env, capture_output=True, text=True)


def test_report_line_by_line(site, caplog, monkeypatch):
    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    build(site)
    assert report_records(caplog) == [("INFO", HEADLINE)] + EXPECTED_REPORT


def test_report_at_default_verbosity_is_the_headline_and_what_to_act_on(site):
    # One line says what was upgraded (not a warning); warnings only for what
    # to act on; no word of a JSON report that was not asked for.
    result = run_pelican(site)
    assert result.returncode == 0, result.stderr
    # Pelican's console: "[time] LEVEL    message    file.py:line", a
    # message's further lines indented below it
    shown, level = [], None
    for line in (result.stdout + result.stderr).splitlines():
        match = re.match(r"(?:\[[\d:]+\])? *(INFO|WARNING)? +(https:.*?)(?: +\w+\.py:\d+)? *$", line)
        if match:
            level = match.group(1) or level
            shown.append((level, match.group(2)))
    assert shown == [("INFO", HEADLINE)] + [item for item in EXPECTED_REPORT if item[0] == "WARNING"]
    assert "JSON" not in result.stdout + result.stderr and "HTTPS_REPORT_PATH" not in result.stdout + result.stderr


def test_quiet_pelican_prints_no_report(site):
    result = run_pelican(site, options=["-q"])
    assert result.returncode == 0 and "https:" not in result.stdout + result.stderr


def test_json_report_lists_every_place(site, monkeypatch):
    monkeypatch.chdir(site)
    build(site, HTTPS_REPORT_PATH="reports/https.json")
    report = json.loads((site / "reports" / "https.json").read_text(encoding="utf-8"))
    assert (report["files_scanned"], report["files_changed"], report["urls_upgraded"]) == (21, 1, 11)
    assert (report["contents_scanned"], report["contents_changed"],
            report["urls_upgraded_in_contents"], report["urls_upgraded_in_files"]) == (2, 2, 10, 1)
    assert report["remaining"] == {"mixed_content": 4, "own_http_links": 0, "feed_subresources": 2,
                                   "other_http_links": 5}
    assert report["mixed_content"][1] == {
        "url": "http://tracker.example.io/pixel.gif", "where": ["img src"], "pages": 4,
        "sources": ["posts/first.md"],
        "found_in": ["author/tester.html:39", "category/notes.html:39", "first-post.html:45", "index.html:39"]}
    assert report["feed_subresources"][1]["found_in"] == [
        "category/notes/feed:6", "feed:6", "feeds/all.atom.xml:6", "feeds/all.rss.xml:6"]


def test_reported_urls_are_what_a_browser_requests(site, monkeypatch):
    # entities decoded ("&amp;", "&amp;amp;" in feeds), not cut at "(", and
    # the content source for feed entries too
    monkeypatch.chdir(site)
    build(site, HTTPS_REPORT_PATH="https.json")
    report = json.loads((site / "https.json").read_text(encoding="utf-8"))
    links = {item["url"]: item for item in report["other_http_links"]}
    assert links["http://photos.example.io/MOPy&Plant.JPG"]["where"] == ["a href", "escaped a href"]
    assert links["http://en.example.io/wiki/The_Shining_(film)"]["pages"] == 8
    assert all(item["sources"] == ["posts/first.md"] for item in report["feed_subresources"])


def test_extensionless_feeds_are_feeds(site, monkeypatch):
    # FEED_RSS = "feed", CATEGORY_FEED_RSS = "category/{slug}/feed" (the
    # fixture's): Pelican wrote them as feeds, so they are rewritten and
    # scanned as feeds, whatever their names
    monkeypatch.chdir(site)
    output = build(site, FEED_DOMAIN="http://blog.example.com", HTTPS_REPORT_PATH="https.json")
    for name in ("feed", "category/notes/feed"):
        feed = (output / name).read_text(encoding="utf-8")
        assert f'<atom:link href="https://blog.example.com/{name}" rel="self"' in feed, name
        assert "&lt;img alt=\"own image\" src=\"https://blog.example.com/images/pic.png\"" in feed, name
    report = json.loads((site / "https.json").read_text(encoding="utf-8"))
    assert "category/notes/feed:6" in report["feed_subresources"][1]["found_in"]


def test_lazy_loading_own_urls_are_upgraded_and_textarea_text_is_left_alone(site):
    post = (build(site) / "first-post.html").read_text(encoding="utf-8")
    assert 'data-src="https://blog.example.com/images/lazy.png"' in post
    assert '<textarea><a href="http://blog.example.com/in-a-textarea/">text, not markup</a></textarea>' in post


def test_github_actions_annotations_and_step_summary(site, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier steps\n", encoding="utf-8")
    env = dict(os.environ, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), GITHUB_WORKSPACE=str(site))
    result = run_pelican(site, env=env)
    assert result.returncode == 0, result.stderr
    source = (site / "content" / "posts" / "first.md").read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(source, 1) if "tracker.example.io/pixel.gif" in text)
    annotations = [text for text in result.stdout.splitlines() if text.startswith("::warning ")]
    assert len(annotations) == 4  # one per mixed-content URL and source file
    assert (f"::warning file=content/posts/first.md,line={line},title=Mixed content (pelican_https)::"
            "http://tracker.example.io/pixel.gif (img src) is loaded over http on 4 pages: browsers block "
            "or flag it. Use its https URL, or list its host in HTTPS_UPGRADE_HOSTS if it serves https."
            ) in annotations
    assert any(text.startswith("::warning file=content/static/site.css,line=2,") for text in annotations)
    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("earlier steps\n### pelican_https\n")
    assert "| `http://tracker.example.io/pixel.gif` | img src | 4 | `posts/first.md` |" in markdown


def test_no_annotations_outside_github_actions(site):
    result = run_pelican(site)
    assert "::warning" not in result.stdout + result.stderr


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
        reports.append(report_records(caplog))
    assert reports[0] == reports[1] == [("INFO", HEADLINE)] + EXPECTED_REPORT
    assert outputs[0] == outputs[1]
    assert not any(OWN_HTTP_IN_ATTRIBUTE.search(without_text_samples(data.decode("utf-8", "replace")))
                   for path, data in outputs[1].items() if path.suffix == ".html")


def test_a_run_that_fails_midway_leaves_the_next_run_its_own_state(site, caplog, monkeypatch):
    # pelican --autoreload after a template error: the failed run never
    # reached finalized; the next run of the same Pelican reports afresh
    from pelican_https import plugin

    monkeypatch.chdir(site)
    caplog.set_level(logging.INFO)
    settings = read_settings(str(site / "pelicanconf.py"), override={"OUTPUT_PATH": str(site / "output")})
    pelican = Pelican(settings)
    boom = site / "content" / "posts" / "boom.md"
    boom.write_text("Title: Boom\nDate: 2024-01-01\nCategory: notes\n\nx\n", encoding="utf-8")
    overrides = site / "overrides"
    overrides.mkdir()
    (overrides / "article.html").write_text(
        '{% if article.title == "Boom" %}{{ article.no_such_thing() }}{% endif %}'
        '{% include "!simple/article.html" %}', encoding="utf-8")
    pelican.settings["THEME_TEMPLATES_OVERRIDES"] = [str(overrides)]
    with pytest.raises(Exception, match="no_such_thing"):
        pelican.run()
    assert len(plugin._builds) == 1
    boom.unlink()
    pelican.settings["THEME_TEMPLATES_OVERRIDES"] = []
    caplog.clear()
    pelican.run()
    assert not plugin._builds
    assert report_records(caplog) == [("INFO", HEADLINE)] + EXPECTED_REPORT


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
    assert nested and report_records(caplog) == ([("INFO", HEADLINE)] + EXPECTED_REPORT) * 2
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
            text = without_text_samples(text)
            assert not OWN_HTTP_IN_ATTRIBUTE.search(text), path


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


def test_deploy_domains_are_the_sites_own_hosts(site):
    # the www name only in DEPLOY_DOMAINS (as a publishconf.py lists it for fab deploy)
    post = build(site, HTTPS_HOSTS=[], DEPLOY_DOMAINS=["blog.example.com", "www.blog.example.com"])
    assert '<a href="HTTPS://WWW.Blog.Example.com/x/">www link</a>' in (post / "first-post.html").read_text(
        encoding="utf-8")
    post = build(site, HTTPS_HOSTS=[], DEPLOY_DOMAINS=["blog.example.com"])
    assert '<a href="HTTP://WWW.Blog.Example.com:80/x/">www link</a>' in (post / "first-post.html").read_text(
        encoding="utf-8")


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
    assert {"url": "http://fonts.example.io/caf\udce9.png", "where": ["css url()"], "pages": 1,
            "sources": ["static/latin1.css"], "found_in": ["static/latin1.css:1"]} in report["mixed_content"]




def test_every_page_and_feed_is_upgraded_before_the_next_generator_runs(site):
    # The articles' pages and feeds are rewritten as their generator ends
    # (article_writer_finalized): the pages' generator and every later
    # receiver find them upgraded.
    seen = {}

    def read(generator, writer):
        for path in (site / "output").rglob("*"):
            if path.is_file() and path.suffix in (".html", ".xml", "") and "pages" not in path.parts:
                seen[path] = path.read_text(encoding="utf-8", errors="replace")

    signals.page_writer_finalized.connect(read)
    try:
        build(site)
    finally:
        signals.page_writer_finalized.disconnect(read)
    assert len(seen) > 10 and site / "output" / "feed" in seen
    for path, text in seen.items():
        text = without_text_samples(text.replace("&quot;", '"'))
        assert not OWN_HTTP_IN_ATTRIBUTE.search(text), path


def test_another_plugins_writer_is_rewritten_too(site):
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


def test_the_texts_kept_in_memory_and_the_files_read_back_give_the_same_bytes(site, tmp_path):
    # With the plugin's writer, each page's and feed's text is handed on as
    # Pelican writes it; with another writer, the file is read back: the
    # same bytes either way.
    in_memory = build(site)
    other_site = tmp_path / "read-back"
    shutil.copytree(FIXTURE, other_site)

    def plain_writer(pelican):
        return Writer

    signals.get_writer.connect(plain_writer)  # connected first: Pelican picks it
    try:
        read_back = build(other_site)
    finally:
        signals.get_writer.disconnect(plain_writer)
    names = sorted(str(path.relative_to(in_memory)) for path in in_memory.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(read_back)) for path in read_back.rglob("*") if path.is_file())
    assert "feed" in names and "first-post.html" in names
    for name in names:
        assert (in_memory / name).read_bytes() == (read_back / name).read_bytes(), name


def test_audit_mode_changes_no_byte_and_reports_own_links(site, caplog):
    caplog.set_level(logging.INFO)
    audited = build(site, HTTPS_REWRITE=False)
    plain = build(site, PLUGINS=[], OUTPUT_PATH=str(site / "plain"))
    for path in plain.rglob("*"):
        if path.is_file():
            assert (audited / path.relative_to(plain)).read_bytes() == path.read_bytes(), path
    lines = report_records(caplog)
    assert lines[0] == ("INFO", "https: audit only (HTTPS_REWRITE = False), nothing upgraded; 21 files scanned; "
                                "left: 8 mixed content, 4 own http links")
    assert ("WARNING", "https:   http://blog.example.com/images/bg.png (css url(), style attribute url(); "
                       "5 pages; from posts/first.md, static/site.css)") in lines
    assert ("WARNING", "https: 4 http links to the site's own hosts on 8 pages:") in lines
    assert ("WARNING", "https:   http://blog.example.com/about/ (a href, escaped a href; 8 pages; "
                       "from posts/first.md)") in lines


def test_http_siteurl_warns(site, caplog):
    caplog.set_level(logging.INFO)
    build(site, SITEURL="http://blog.example.com")
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "pelican_https.plugin" and r.levelno == logging.WARNING]
    assert warnings == ["https: SITEURL is 'http://blog.example.com', an http URL; "
                        "set it to https://blog.example.com"]
    # Pelican's own absolute links are http now, and upgraded
    index = (site / "output" / "index.html").read_text(encoding="utf-8")
    assert 'href="https://blog.example.com/theme/css/main.css"' in index


def test_a_page_written_over_the_index_is_upgraded_and_reported(site, monkeypatch):
    # A page saved as index.html is written over the blog index Pelican wrote
    # before (override_output): the file on disk is the page, upgraded, and
    # the report lists what remains in the page, not in the index it replaced.
    (site / "content" / "pages" / "home.md").write_text(
        "Title: Home\nSave_as: index.html\nURL:\n\n"
        'Welcome, <img src="http://blog.example.com/images/pic.png" alt="me">.\n',
        encoding="utf-8")
    monkeypatch.chdir(site)
    output = build(site, LINKS=(("Old", "http://blog.example.com/old/"),), HTTPS_REPORT_PATH="https.json")
    index = (output / "index.html").read_text(encoding="utf-8")
    assert 'Welcome, <img src="https://blog.example.com/images/pic.png" alt="me">' in index
    assert 'href="https://blog.example.com/old/"' in index  # LINKS, from the theme
    assert "pixel.gif" not in index  # (the index of posts is gone)
    report = json.loads((site / "https.json").read_text(encoding="utf-8"))
    assert not [place for kind in ("mixed_content", "own_http_links", "other_http_links")
                for item in report[kind] for place in item["found_in"] if place.startswith("index.html:")]


def test_a_write_pelican_skips_is_not_reported(site, monkeypatch):
    # An article saved as index.html is written first, with override_output;
    # Pelican then skips the blog index (it writes it to os.devnull): the
    # report is the article's, the file on disk.
    (site / "content" / "posts" / "home.md").write_text(
        "Title: Home\nDate: 2024-01-03\nCategory: notes\nSave_as: index.html\n\n"
        'Hello, <img src="http://other.example.net/a.png" alt="a">.\n', encoding="utf-8")
    monkeypatch.chdir(site)
    output = build(site, HTTPS_REPORT_PATH="https.json")
    index = (output / "index.html").read_text(encoding="utf-8")
    assert 'Hello, <img src="http://other.example.net/a.png" alt="a">' in index
    number = index[:index.index("http://other.example.net/a.png")].count("\n") + 1
    report = json.loads((site / "https.json").read_text(encoding="utf-8"))
    assert [place for item in report["mixed_content"] for place in item["found_in"]
            if place.startswith("index.html:")] == [f"index.html:{number}"]


def test_strict_mode_fails_the_pelican_command(site):
    assert run_pelican(site).returncode == 0
    strict = run_pelican(site, "HTTPS_STRICT=true")
    assert strict.returncode != 0
    assert "HTTPS_STRICT: 4 insecure subresources (mixed content) remain" in strict.stdout + strict.stderr


def test_bad_setting_stops_pelican_with_its_message_and_no_traceback(site):
    result = run_pelican(site, 'HTTPS_HOSTS="www.blog.example.com"')
    assert result.returncode == 1
    printed = (result.stdout + result.stderr).strip()
    assert printed == ("pelican_https: HTTPS_HOSTS = 'www.blog.example.com' is invalid: expected a list "
                       "of host names, e.g. ['www.example.com']")
    assert "Traceback" not in printed


def test_strict_mode_passes_when_nothing_insecure_remains(site):
    result = run_pelican(site, "HTTPS_STRICT=true", 'HTTPS_UPGRADE_HOSTS=["*.example.io", "cdn.example.org"]')
    assert result.returncode == 0, result.stdout + result.stderr

