"""pelican_https: upgrade the site's http:// URLs to https in Pelican's output.

Enable with ``PLUGINS = ["pelican_https"]``.  It upgrades http URLs of the
site's own host names (SITEURL's host plus HTTPS_HOSTS) and of listed
https-capable external hosts wherever a browser or feed reader follows them:
HTML link attributes (href, src, srcset, poster, action, meta og:/twitter:
content, meta refresh, SVG href, ...), CSS url()/@import in style attributes,
<style> blocks and .css files, JSON in <script>, Atom/RSS feeds (including
the escaped HTML of entries) and sitemaps.  Prose, code samples, comments and
identifiers (xmlns, itemtype, Atom ids) are left alone; no other byte changes.

Settings (defaults in pelican_https/settings.py):

HTTPS_HOSTS = []            Other host names of this site (www/apex twin, old
                            host names).  SITEURL's host is always included.
                            Matched exactly, in any case, with or without port.
DEPLOY_DOMAINS              (the deploy's setting, read when present) The
                            domains ``fab deploy`` serves count as own hosts
                            too: list the blog's names once.
HTTPS_HOST_MAP = {}         {"old.example.com": "example.com"}: the old hosts'
                            http URLs become https URLs on the new host.
HTTPS_UPGRADE_HOSTS = []    External hosts known to serve https; "*.example.org"
                            means every subdomain of example.org.
HTTPS_REWRITE = True        False: audit only, report without changing a byte.
HTTPS_REPORT_PATH = None    Path of a JSON report (relative to the directory
                            pelican runs in), e.g. "https-report.json".
HTTPS_STRICT = False        True: pelican exits non-zero while insecure
                            subresources (mixed content) remain.
HTTPS_FILE_EXTENSIONS = [".html", ".htm", ".xhtml", ".css", ".xml", ".atom",
                         ".rss", ".json", ".webmanifest"]
                            Output files scanned on disk at the end of the
                            build (static files, theme CSS, other plugins').

An explicit ":80" port is dropped when a URL is upgraded (it is http's
default port and would be wrong for https); other ports are kept.
"""

from pelican import signals

from . import plugin


def register() -> None:
    # Check the settings once Pelican is configured: a bad one stops it.
    signals.initialized.connect(plugin.on_initialized)
    # A new state as each run starts (pelican --autoreload runs again).
    signals.get_generators.connect(plugin.on_run_start)
    # Every content object, for the content pass and to name each copied
    # static file's source in the report.
    signals.content_object_init.connect(plugin.on_content_object_init)
    # Every content object is read and no template has run: upgrade each
    # article's and page's HTML once here, not in every page and feed showing it.
    signals.all_generators_finalized.connect(plugin.on_all_generators_finalized)
    # Each page and feed as Pelican writes it (whichever writer writes it):
    # rewritten in place, and scanned for what stays insecure.  A feed is a
    # feed whatever its name (FEED_RSS = "feed").
    signals.content_written.connect(plugin.on_content_written)
    signals.feed_written.connect(plugin.on_feed_written)
    signals.article_writer_finalized.connect(plugin.on_writer_finalized)
    signals.page_writer_finalized.connect(plugin.on_writer_finalized)
    # All output exists: rewrite copied static files, theme CSS and other
    # plugins' files, then report (strict mode stops pelican here).
    signals.finalized.connect(plugin.on_finalized)
