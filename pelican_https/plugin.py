"""The thin Pelican adapter: signal receivers and file I/O.

Each article's and page's HTML (its content and formatted metadata such as
the summary) is upgraded once, after Pelican has read every content object
and before any template renders one: Pelican shows one article on its own page,
on index, category, tag, author and archive pages and in every feed, and
upgrading it there would repeat the same work on every copy.  Pelican's
pages and feeds are then rewritten in memory, just before they are
written, by ``RewritingWriter`` (offered through the ``get_writer`` signal):
the safety net for URLs from templates, settings and other plugins, and the
pass that reports what remains insecure, output file by output file.
While Pelican writes its articles, listings, feeds and pages, the writer
holds each file's text and rewrites a batch of them in one loop before
writing them out, while the CPU's caches hold the rewriter (see
``_Build.write_held``); every file is written before its generator's
``*_writer_finalized`` signal and any ``finalized`` receiver.  If another
plugin supplies the writer, the ``content_written`` / ``feed_written``
receivers rewrite those files on disk instead.  Files Pelican copies
(static files, theme CSS) or other plugins write are rewritten on disk at
``finalized``, where the report is also produced.
"""

from __future__ import annotations

import atexit
import io
import logging
import operator
import os
import shutil
import tempfile
import time

from pelican import signals
from pelican.writers import Writer

from . import settings as https_settings
from .report import Collector, Report
from .rewrite import SYNTAX_BY_EXTENSION, Fragment, Rules, rewrite

logger = logging.getLogger(__name__)
# The end-of-build report: Pelican's loggers drop a message already logged in
# this process, which would hide the report of every rebuild after the first
# one (pelican --autoreload); this logger keeps every line.
report_logger = logging.getLogger("pelican_https.report")
if hasattr(report_logger, "disable_filter"):
    report_logger.disable_filter()


class InsecureOutputError(RuntimeError):
    """HTTPS_STRICT is on and insecure subresources remain in the output."""


class _Build:
    """State of one ``pelican`` run (new as each run starts: ``on_run_start``)."""

    def __init__(self, pelican):
        self.settings = https_settings.load(pelican.settings)
        self.rules = Rules.from_settings(self.settings)
        self.siteurl = pelican.settings.get("SITEURL")
        self.output_path = os.path.abspath(pelican.settings["OUTPUT_PATH"])
        self.content_path = os.path.abspath(pelican.settings["PATH"])
        self.collector = Collector()
        # Paths below are absolute (os.path.abspath, as Pelican's own
        # sanitised_join gives them), so one string identifies one file.
        self.handled: set[str] = set()          # output files done
        self.content_of_output: dict[str, object] = {}  # output (relative) -> article/page
        self.static_source: dict[str, str] = {}  # output (relative) -> source
        self.contents: list[object] = []
        # HTML metadata Pelican renders like the content (summary...)
        self.formatted_fields = tuple(pelican.settings.get("FORMATTED_FIELDS", ("summary",)))
        # insecure URLs of each content object (by id: the objects stay in
        # self.contents), and a content source of each such URL: the first
        # by name, as Pelican's reading order changes from run to run
        self.content_insecure: dict[int, set[str]] = {}
        # each content object's rewritten HTML and the http URLs left in it
        # (by id): its own page shows that HTML verbatim, and is scanned
        # around it (see rewrite.Fragment)
        self.fragments: dict[int, Fragment] = {}
        self.insecure_source: dict[str, str] = {}
        self.seconds = 0.0  # time spent in this plugin's code, for the report
        self.verdicts: dict = {}  # rewrite()'s memo, shared by all files
        self._source_by_url: dict[str, str | None] = {}
        self._displayed: dict[str, str] = {}  # source_path -> shown name
        self._output_prefix = os.path.join(self.output_path, "")
        self._content_prefix = os.path.join(self.content_path, "")
        # Output files Pelican has written to our writer and we have not yet
        # rewritten and written out: (file, path, text, content), and their
        # text's size (see write_held).  Held only while ``holding``.
        self.held: list[tuple] = []
        self.held_size = 0
        self.holding = False
        self.finished = False  # set by on_finalized

    def relative(self, path: str) -> str:
        """Output path relative to OUTPUT_PATH, "/"-separated."""
        return _relative(path, self.output_path, self._output_prefix)

    def rewrite_text(self, path: str, text: str, content=None) -> str:
        """Rewrite one output file's text (``path``: made absolute and
        normalized unless it is; ``content``: the article or page it shows,
        if any); record its findings.  A file written again (Pelican's
        ``override_output``) replaces the findings of what it held before."""
        dot = path.rfind(".")  # (syntax_for(path), inline: once per file)
        syntax = SYNTAX_BY_EXTENSION.get(path[dot:].lower()) if dot >= 0 else None
        if syntax is None:
            return text
        prefix = self._output_prefix  # (relative(path), inline: once per file)
        # (_normalized(path), inline: Pelican's paths are absolute and normalized)
        if _SLASH and path.startswith(prefix) and "//" not in path and "/." not in path:
            output = path[len(prefix):]
        else:
            path = os.path.abspath(path)
            output = self.relative(path)
        if path in self.handled:
            self.collector.forget(output)
        else:
            self.handled.add(path)
        fragment = None
        if content is not None:
            self.content_of_output[output] = content
            if syntax == "html":
                fragment = self.fragments.get(id(content))
        else:
            self.content_of_output.pop(output, None)
        result = rewrite(text, self.rules, syntax, self.verdicts, fragment=fragment)
        changed = result.text is not text and result.text != text
        self.collector.add(output, result, changed)
        return result.text

    def write_held(self) -> None:
        """Rewrite the files held, in one loop, then write them out.

        Pelican renders a template between two files it writes, which leaves
        the CPU's caches cold for the rewriter: file by file, every step costs
        several times what it costs in a loop.  (In the benchmark's build, the
        plugin's own time fell from a median of 0.50 s to 0.42 s, in the same
        runs, with the same clock.)  A
        file whose rewrite raised keeps the text Pelican gave it: no file is
        left empty, nor one that cannot be written (the error is raised
        after the others are written)."""
        held, self.held, self.held_size = self.held, [], 0
        if not held:
            return
        started = _clock()
        texts = []
        try:
            for _, path, text, content in held:
                texts.append(self.rewrite_text(path, text, content))
        finally:
            self.seconds += _clock() - started
            error = None  # (one file that cannot be written: the others still are)
            for index, (file, _, text, _) in enumerate(held):
                try:
                    with file:
                        file.write(texts[index] if index < len(texts) else text)
                except Exception as exception:
                    error = error or exception
            if error is not None:
                raise error

    def rewrite_file(self, path: str, content=None) -> None:
        """Rewrite one file on disk (``path`` absolute; ``content``: the
        article or page it shows, if any); bytes that are not UTF-8
        round-trip."""
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8", "surrogateescape")
        new_text = self.rewrite_text(path, text, content)
        if new_text is not text and new_text != text:
            _replace_file(path, new_text.encode("utf-8", "surrogateescape"))

    def rewrite_content(self, content) -> None:
        """Upgrade one content object's HTML fields in place, before any
        template renders them (the summary Pelican cuts from the content
        later is then upgraded too); remember its insecure URLs."""
        upgraded = 0
        insecure: set[str] = set()
        # lines=False: only the URLs are kept (the output files report them,
        # with their lines)
        text = getattr(content, "_content", None)
        if isinstance(text, str):
            result = rewrite(text, self.rules, "html", self.verdicts, lines=False,
                             as_fragment=True)
            content._content = result.text
            upgraded = result.upgraded
            if result.insecure:
                insecure.update(map(_URL_OF, result.insecure))
            if result.fragment is not None:
                self.fragments[id(content)] = result.fragment
        metadata = getattr(content, "metadata", None) or {}
        for key in self.formatted_fields:
            text = metadata.get(key)
            if not isinstance(text, str):
                continue
            result = rewrite(text, self.rules, "html", self.verdicts, lines=False)
            upgraded += result.upgraded
            insecure.update(map(_URL_OF, result.insecure))
            value = metadata[key] = result.text
            if key == "summary":  # a property; Pelican keeps the value here
                if hasattr(content, "_summary"):
                    content._summary = value
            else:
                setattr(content, key.lower(), value)
        self.collector.add_content(upgraded)
        if insecure and getattr(content, "source_path", None):
            self.content_insecure[id(content)] = insecure
            source = self._display(content.source_path)
            known = self.insecure_source
            for url in insecure:
                current = known.get(url)
                if current is None or source < current:
                    known[url] = source

    def source_of(self, output: str, url: str) -> str | None:
        """The source content file a URL of an output file came from."""
        if output in self.static_source:
            return self.static_source[output]
        own = self.content_of_output.get(output)
        if own is not None and (url in self.content_insecure.get(id(own), ())
                                or _mentions(own, url)):
            return self._display(own.source_path)
        source = self.insecure_source.get(url)  # found by the content pass
        if source is not None:
            return source
        # else from a template or another plugin: one search per URL, not per finding
        if url not in self._source_by_url:
            escaped = url.replace("&", "&amp;")
            self._source_by_url[url] = next(
                (self._display(content.source_path) for content in self.contents
                 if _mentions(content, url) or _mentions(content, escaped)),
                None,
            )
        return self._source_by_url[url]

    def _display(self, source_path: str) -> str:
        shown = self._displayed.get(source_path)
        if shown is None:  # the report asks per finding
            path = source_path
            if not _normalized(path):  # Pelican's are: no abspath per content
                path = os.path.abspath(path)
            shown = self._displayed[source_path] = _relative(
                path, self.content_path, self._content_prefix)
        return shown


# Files held before write_held runs: a batch long enough to run warm, short
# enough to hold little memory (in characters) and few open files (each held
# file is open, as Pelican opened it: its bookkeeping and errors stay its own).
_HELD_CHARS = 4_000_000
_HELD_FILES = 100

_SLASH = os.sep == "/"  # paths need no "/" in place of os.sep
_URL_OF = operator.itemgetter(0)  # a Finding's url (no comprehension: one call fewer)


def _relative(path: str, folder: str, prefix: str | None = None) -> str:
    """``path`` (absolute) relative to ``folder`` (``prefix``: ``folder``
    with a trailing separator), "/"-separated; cut off as a prefix when it is
    one (os.path.relpath is slow, and this runs per file)."""
    if prefix is None:
        prefix = os.path.join(folder, "")
    path = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, folder)
    return path.replace(os.sep, "/")


def _normalized(path: str) -> bool:
    """Whether os.path.abspath(path) is ``path`` itself: absolute, no "//",
    no "." or ".." part (nor any part starting with a dot: checked the slow
    way), no trailing separator (POSIX paths only)."""
    return (os.sep == "/" and path.startswith("/") and "//" not in path
            and "/." not in path and not path.endswith("/"))


def _mentions(content, url: str) -> bool:
    text = getattr(content, "_content", None)
    if isinstance(text, str) and url in text:
        return True
    metadata = getattr(content, "metadata", {}) or {}
    return any(isinstance(value, str) and url in value for value in metadata.values())


def _replace_file(path: str, data: bytes) -> None:
    """Write via a temporary file + rename: a hard or symbolic link that Pelican
    made to a source file (STATIC_CREATE_LINKS) is replaced, never written
    through, and a crash never leaves a half-written file."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".https-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            shutil.copymode(path, temporary)
        except OSError:
            pass
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


_build: _Build | None = None
_outer_builds: list[_Build] = []  # runs under way that a nested run started inside
import_seconds = 0.0  # time spent importing the package, until a run counts it


# The report's own-time counter: the wall clock around the plugin's code (it
# runs in Pelican's one thread).  Read twice per output file: a CPU-time clock
# is a system call, 10 times slower to read (1 µs here), a cost of its own.
_clock = time.perf_counter


def _write_out_after_failure() -> None:
    """A run that fails (an exception in a template, say) leaves no held file
    empty: written out as the error goes on (the writer), as the next run
    starts (on_run_start), or as the process exits (atexit)."""
    for build in (*_outer_builds, _build):
        if build is not None:
            try:
                build.write_held()
            except Exception:  # (the error under way is the one to see)
                logger.exception("https: could not write out the files held")


atexit.register(_write_out_after_failure)


class _RewriteOnClose(io.StringIO):
    """What ``RewritingWriter`` hands to Pelican instead of the output file:
    takes the text written to it and, on close, gives it to the run's state
    to rewrite and write out (at once, or held for a batch).  A
    StringIO, so the many small writes of a feed (one per XML element, 80,000
    in the benchmark's 16 feeds) cost a C call each: measured 4 times faster
    than a Python ``write`` keeping the pieces, and faster for pages too
    (one write each) though it copies them."""

    # No __init__ of its own: RewritingWriter sets these on the StringIO it
    # makes (one Python call fewer per file, a few µs each as Pelican writes).
    __slots__ = ("_file", "_path", "_content")
    _file: object     # the output file Pelican opened
    _path: str        # its path (made absolute, if it is not, by rewrite_text)
    _content: object  # the article or page this file shows, or None

    def close(self) -> None:
        if self.closed:
            return
        started = _clock()  # (taking the text out is the plugin's work too)
        text = self.getvalue()
        super().close()
        build = _build
        if build is None:
            with self._file:
                self._file.write(text)
            return
        build.held.append((self._file, self._path, text, self._content))
        build.held_size += len(text)
        build.seconds += _clock() - started
        if not build.holding or build.held_size > _HELD_CHARS or len(build.held) >= _HELD_FILES:
            build.write_held()


class RewritingWriter(Writer):
    """Pelican's Writer, rewriting every page and feed in memory."""

    _showing = None  # the article or page of the write_file call under way

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Every page and feed goes through this writer and is rewritten here:
        # the receivers that rewrite the files another plugin's writer wrote
        # would only return, thousands of times, a few µs each as Pelican
        # writes.  Connected again as the next run starts (on_run_start).
        signals.content_written.disconnect(on_content_written)
        signals.feed_written.disconnect(on_feed_written)
        if _build is not None:
            # Files are held (written out in batches) only where nothing else
            # could look at them before they are written: no other plugin's
            # receiver of a file written or of a generator's last file.
            _build.holding = not _others_listen()

    def write_file(self, name, template, context, *args, **kwargs):
        self._showing = kwargs.get("article") or kwargs.get("page")
        try:
            return super().write_file(name, template, context, *args, **kwargs)
        except BaseException:
            _write_out_after_failure()
            raise
        finally:
            self._showing = None

    def write_feed(self, *args, **kwargs):
        try:
            return super().write_feed(*args, **kwargs)
        except BaseException:
            _write_out_after_failure()
            raise

    def _open_w(self, filename, encoding, override=False):
        if filename in self._written_files and _build is not None:
            # Written again (override_output): what is held is written first,
            # or two open files would write over each other.
            _build.write_held()
        file = super()._open_w(filename, encoding, override)
        # (a write Pelican skips goes to os.devnull: nothing to rewrite or report)
        if _build is None or getattr(file, "name", None) == os.devnull:
            return file
        wrapped = _RewriteOnClose()
        wrapped._file, wrapped._path, wrapped._content = file, filename, self._showing
        return wrapped


# -- receivers (module level: Pelican's signals hold weak references) -------

def on_initialized(pelican) -> None:
    """Checks the settings at once (a bad one: pelican exits 1) and warns
    about an http SITEURL; each run's state is made as it starts
    (``on_run_start``)."""
    settings = https_settings.load(pelican.settings)  # raises SettingsError
    if settings.site_scheme == "http":
        logger.warning(
            "https: SITEURL is %r, an http URL; set it to https://%s",
            pelican.settings.get("SITEURL"), settings.site_host,
        )
    if _build is not None and not _build.finished:
        # A new Pelican while a run is under way: its runs are inside that
        # one (i18n_subsites builds each language's subsite so, while the
        # main site's run asks for its writer).  Kept aside until they end.
        _outer_builds.append(_build)


def on_run_start(pelican) -> None:
    """``get_generators``: sent as each run starts, before any content is
    read.  ``pelican --autoreload`` runs the same Pelican again for every
    change (``initialized`` is sent once): each run starts from a new state."""
    global _build, import_seconds
    _write_out_after_failure()  # (a run that failed may have left files held)
    _build = None  # (if the new state cannot be made, no earlier run's is left)
    _build = _Build(pelican)
    # the package's import (set by __init__), in the own time of the first run
    _build.seconds, import_seconds = import_seconds, 0.0
    # (disconnected by RewritingWriter while it is the writer)
    signals.content_written.connect(on_content_written)
    signals.feed_written.connect(on_feed_written)


def provide_writer(pelican):
    return RewritingWriter


def on_content_object_init(content) -> None:
    # Not timed, nor are the bookkeeping parts below: reading the clock twice
    # would cost more than they do.
    if _build is None:
        return
    _build.contents.append(content)
    if type(content).__name__ == "Static" and getattr(content, "save_as", None):
        _build.static_source[content.save_as.replace(os.sep, "/")] = _build._display(
            content.source_path
        )


def on_all_generators_finalized(generators) -> None:
    # Every content object is read; Pelican reads .content and .summary (and
    # memoizes them) only when it writes.  One loop over all of them, not one
    # call per content object while Pelican reads: measured three times
    # faster, as the rewriter's code and memo stay in the CPU caches.
    build = _build
    if build is None:
        return
    started = _clock()
    for content in build.contents:
        if type(content).__name__ != "Static":  # copied files: rewritten on disk
            build.rewrite_content(content)
    build.seconds += _clock() - started


def on_writer_finalized(generator, writer) -> None:
    """``article_writer_finalized`` and ``page_writer_finalized``: a generator
    has written its last file.  Pelican's articles and pages are all written
    out now, before another generator or ``finalized`` receiver can look."""
    build = _build
    if build is not None:
        build.write_held()
        if type(generator).__name__ == "PagesGenerator":
            build.holding = False


def _others_listen() -> bool:
    """Whether another plugin listens for a file Pelican writes, or for the
    end of the articles' or pages' writing.  (blinker keys a function
    receiver by its id.)"""
    ours = {id(on_content_written), id(on_feed_written), id(on_writer_finalized)}
    return any(receiver not in ours
               for signal in (signals.content_written, signals.feed_written,
                              signals.article_writer_finalized, signals.page_writer_finalized)
               for receiver in signal.receivers)


def on_content_written(path, context) -> None:
    _written_by_another_writer(path, context.get("article") or context.get("page"))


def on_feed_written(path, context, feed) -> None:
    _written_by_another_writer(path, None)


def _written_by_another_writer(path: str, content) -> None:
    """A page or feed another plugin's writer wrote (these receivers are
    disconnected while ours is the writer): rewritten on disk, once."""
    build = _build
    if build is None:
        return
    started = _clock()
    build.rewrite_file(os.path.abspath(path), content)
    build.seconds += _clock() - started


def on_finalized(pelican) -> None:
    global _build
    build = _build
    if build is None:
        return
    build.write_held()  # (none should be left: see on_writer_finalized)
    build.holding = False
    build.finished = True
    # the run this one was inside of (if any) goes on
    _build = _outer_builds.pop() if _outer_builds else None
    started = _clock()
    extensions = build.settings.file_extensions
    for directory, _, files in os.walk(build.output_path):
        for name in files:
            if name.lower().endswith(extensions):
                path = directory + os.sep + name  # (os.walk's: no separator at the end)
                if path not in build.handled and os.path.isfile(path):
                    build.rewrite_file(path)
    report = build.collector.report(
        build.source_of, build.siteurl, build.settings.site_scheme == "http")
    lines = report.text_lines()
    items = report.items_json() if build.settings.report_path else None
    # own time up to here: logging the lines and writing the file are not in it
    report = report._replace(seconds=build.seconds + _clock() - started)
    _emit(report, lines)
    if build.settings.report_path:
        _write_report(build.settings.report_path, report, items)
    if build.settings.strict and report.insecure_subresources:
        raise InsecureOutputError(
            f"HTTPS_STRICT: {report.insecure_subresources} insecure subresources "
            "remain in the output (listed above)"
        )


def _emit(report: Report, lines: list[str]) -> None:
    level = logging.WARNING if report.insecure_subresources else logging.INFO
    for line in lines:  # (report.text_lines())
        report_logger.log(level, "%s", line)


def _write_report(path: str, report: Report, items: str | None = None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A URL from a file that is not UTF-8 holds lone surrogates: written as
    # \udcXX escapes, the report stays valid UTF-8 and JSON.
    with open(path, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(report.to_json(items))
