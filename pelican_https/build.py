"""One ``pelican`` run's state: the rewriter applied to content objects and
output files (the file I/O), and what the report needs to name sources."""

from __future__ import annotations

import os
import shutil
import tempfile

from . import settings as https_settings
from .github import line_of
from .report import Collector, Report
from .rewrite import Rules, rewrite, syntax_for

ENCODING, ERRORS = "utf-8", "surrogateescape"  # bytes that are not UTF-8 round-trip
# Pages and feeds rewritten in one loop: written during a template's work,
# one at a time, they cost the rewriter twice as much (cold caches).  The
# loop runs as each generator ends, or once this many wait.
BATCH = 200


class Build:
    def __init__(self, pelican_settings: dict, pelican_id: int = 0):
        self.pelican_id = pelican_id  # the Pelican object whose run this is
        self.settings = https_settings.load(pelican_settings)  # raises SettingsError
        self.rules = Rules.from_settings(self.settings)
        self.output_path = os.path.abspath(pelican_settings["OUTPUT_PATH"])
        self.content_path = os.path.abspath(pelican_settings["PATH"])
        # HTML metadata Pelican renders like the content (summary...)
        self.formatted_fields = tuple(pelican_settings.get("FORMATTED_FIELDS", ("summary",)))
        self.collector = Collector()
        self.contents: list = []                       # every content object read
        self.static_sources: dict[str, str] = {}       # output -> source, of copied static files
        self.content_of: dict[str, object] = {}        # output -> the article or page it shows
        self.handled: set[str] = set()                 # output files rewritten (absolute)
        # (path, syntax, content) of the pages and feeds Pelican wrote, not yet rewritten
        self.written: list[tuple[str, str | None, object]] = []

    def source_name(self, source_path: str) -> str:
        """A source file as the report names it: relative to PATH."""
        return _relative(os.path.abspath(source_path), self.content_path)

    def add_written(self, path: str, syntax: str | None, content) -> None:
        """A page or feed Pelican wrote (``syntax``: by its name if None)."""
        self.written.append((path, syntax, content))
        if len(self.written) >= BATCH:
            self.rewrite_written()

    def add_content(self, content) -> None:
        self.contents.append(content)
        if type(content).__name__ == "Static" and getattr(content, "save_as", None):
            self.static_sources[content.save_as.replace(os.sep, "/")] = self.source_name(
                content.source_path)

    def rewrite_contents(self) -> None:
        """Upgrade each article's and page's HTML once, before any template
        renders it (Pelican then copies it into pages, listings and feeds)."""
        for content in self.contents:
            if type(content).__name__ != "Static":  # copied files: rewritten on disk
                self.rewrite_content(content)

    def rewrite_content(self, content) -> None:
        """Its HTML fields, in place (the summary Pelican cuts from the
        content later is then upgraded too).  What stays insecure is found
        in the output files, and named after the content there."""
        upgraded = 0
        metadata = getattr(content, "metadata", None) or {}
        text = getattr(content, "_content", None)
        if isinstance(text, str):
            result = rewrite(text, self.rules, "html", report=False)
            content._content = result.text
            upgraded += result.upgraded
        for key in self.formatted_fields:
            text = metadata.get(key)
            if not isinstance(text, str):
                continue
            result = rewrite(text, self.rules, "html", report=False)
            upgraded += result.upgraded
            metadata[key] = result.text
            if key == "summary":  # a property; Pelican keeps the value here
                if hasattr(content, "_summary"):
                    content._summary = result.text
            else:
                setattr(content, key.lower(), result.text)
        self.collector.add_content(upgraded)

    def rewrite_output(self, path: str, syntax: str | None = None, content=None) -> None:
        """Rewrite one output file in place (``syntax``: by its name if None;
        ``content``: the article or page it shows, if any)."""
        path = os.path.abspath(path)
        syntax = syntax or syntax_for(path)
        if syntax is None:
            return
        with open(path, "rb") as f:
            text = f.read().decode(ENCODING, ERRORS)
        # (output lines are shown in the JSON report only)
        result = rewrite(text, self.rules, syntax, lines=self.settings.report_path is not None)
        if result.upgraded:
            replace_file(path, result.text.encode(ENCODING, ERRORS))
        self.handled.add(path)
        output = _relative(path, self.output_path)
        self.content_of[output] = content
        self.collector.add_output(output, syntax == "xml", result)

    def rewrite_written(self) -> None:
        written, self.written = self.written, []
        for path, syntax, content in written:
            self.rewrite_output(path, syntax, content)

    def rewrite_rest_of_output(self) -> None:
        """Files Pelican copied (static files, theme CSS) or other plugins
        wrote: rewritten by their names' extensions."""
        extensions = self.settings.file_extensions
        for directory, _, names in os.walk(self.output_path):
            for name in names:
                if name.lower().endswith(extensions):
                    path = os.path.join(directory, name)
                    if path not in self.handled and os.path.isfile(path):
                        self.rewrite_output(path)

    def sources_of(self, output: str, url: str) -> set[str]:
        """The source file of an insecure URL of an output file: a copied
        static file's, or that of the article or page the file shows, if
        the URL is in it."""
        if output in self.static_sources:
            return {self.static_sources[output]}
        content = self.content_of.get(output)
        if content is not None and _mentions(content, url):
            return {self.source_name(content.source_path)}
        return set()

    def sources_by_search(self, url: str) -> set[str]:
        """For a URL no page of an article or page shows: the contents whose
        metadata a template shows it from (an image for og:image...)."""
        return {self.source_name(content.source_path) for content in self.contents
                if getattr(content, "source_path", None) and _mentions(content, url, metadata_only=True)}

    def report(self) -> Report:
        return self.collector.report(self.sources_of, self.sources_by_search, self.settings.hosts)

    def locate(self, source: str, url: str) -> tuple[str, int | None]:
        """(path relative to the repository in GitHub Actions, else to the
        working directory; line) of ``url`` in a source file."""
        path = os.path.join(self.content_path, source)
        try:
            with open(path, "rb") as f:
                line = line_of(f.read().decode(ENCODING, ERRORS), url)
        except OSError:
            line = None
        root = os.environ.get("GITHUB_WORKSPACE") or os.getcwd()
        return os.path.relpath(path, root).replace(os.sep, "/"), line


def _relative(path: str, folder: str) -> str:
    """``path`` (absolute) relative to ``folder``, "/"-separated."""
    prefix = os.path.join(folder, "")
    relative = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, folder)
    return relative.replace(os.sep, "/")


def _mentions(content, url: str, metadata_only: bool = False) -> bool:
    """Whether a content object's text or metadata holds ``url`` (as
    written, or with "&" escaped as its HTML writes it)."""
    spellings = (url, url.replace("&", "&amp;")) if "&" in url else (url,)
    texts = [] if metadata_only else [getattr(content, "_content", None)]
    texts += (getattr(content, "metadata", None) or {}).values()
    return any(isinstance(text, str) and spelling in text for text in texts for spelling in spellings)


def replace_file(path: str, data: bytes) -> None:
    """Write via a temporary file + rename: a link Pelican made to a source
    file (STATIC_CREATE_LINKS) is replaced, never written through, and a
    crash never leaves a half-written file."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".https-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
