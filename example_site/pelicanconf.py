# Pelican settings for writing locally (`pelican -lr content`). Deploy settings live in publishconf.py.
AUTHOR = "Ada Example"
SITENAME = "An Example Blog"
SITEURL = ""
PATH = "content"
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
STATIC_PATHS = ["images"]
DEFAULT_PAGINATION = 5
RELATIVE_URLS = True

# The https rewriter: upgrades this blog's own http:// links and assets at build time.
PLUGINS = ["pelican_https"]
