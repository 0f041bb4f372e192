"""Settings of the https rewriter: one prefix, defaults in one place, validation.

Every setting starts with ``HTTPS_``.  ``DEFAULTS`` is the single source of the
default values; ``load(settings)`` validates the user's values and returns an
immutable ``HttpsSettings``.  Each error names the setting, shows the bad value
and says what is expected.

The site's own hosts are SITEURL's host, ``HTTPS_HOSTS``, the old hosts of
``HTTPS_HOST_MAP`` and, when the settings have it, ``DEPLOY_DOMAINS``: the
list of domain names (canonical first) that ``fab deploy`` serves and gets
the certificate for.  So a blog lists its names once, for both halves of the
project.  Every host name is spelled as the deploy spells it
(``hostnames.normalize_host``: IDNA 2008, lower case, no trailing dot), and
``DEPLOY_DOMAINS`` is held to the deploy's own rules.  Internationalized names
may be written in Unicode: both their Unicode and their ASCII ("xn--") form
are own hosts, as a page may spell a URL either way.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, NamedTuple
from urllib.parse import urlsplit

from . import hostnames

PREFIX = "HTTPS_"
# Not ours, read when present: the deploy's domain names are own hosts too.
DEPLOY_DOMAINS = "DEPLOY_DOMAINS"

DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        # Extra host names of this site besides SITEURL's host (www/apex twin,
        # host names the blog used before).  Matched exactly, any case/port.
        "HTTPS_HOSTS": (),
        # Old host -> canonical host.  Keys count as own hosts; their http
        # URLs become https URLs on the mapped host.
        "HTTPS_HOST_MAP": {},
        # External hosts known to serve https ("cdn.example.org", or
        # "*.example.org" for every subdomain of example.org, not the apex).
        "HTTPS_UPGRADE_HOSTS": (),
        # False: audit only -- scan and report, change no byte.
        "HTTPS_REWRITE": True,
        # Where to write the JSON report (relative to the directory pelican
        # runs in); None writes none.
        "HTTPS_REPORT_PATH": None,
        # True: the build fails (pelican exits non-zero) while insecure
        # subresources remain in the output.
        "HTTPS_STRICT": False,
        # Files in the output scanned at the end of the build (static files,
        # theme CSS, files written by other plugins).  Pelican's own pages and
        # feeds are rewritten in memory before they are written.
        "HTTPS_FILE_EXTENSIONS": (
            ".html", ".htm", ".xhtml", ".css", ".xml", ".atom", ".rss",
            ".json", ".webmanifest",
        ),
    }
)


class SettingsError(ValueError):
    """A ``HTTPS_*`` setting has a value the plugin cannot use."""


class HttpsSettings(NamedTuple):
    site_host: str | None          # SITEURL's host, None for a relative SITEURL
    site_scheme: str | None        # "http" / "https" / None
    hosts: frozenset[str]          # every own host, lower case (+ DEPLOY_DOMAINS)
    host_map: Mapping[str, str]
    upgrade_hosts: frozenset[str]  # exact external hosts
    upgrade_suffixes: tuple[str, ...]  # ".example.org" from "*.example.org"
    rewrite: bool
    report_path: str | None
    strict: bool
    file_extensions: tuple[str, ...]


def _error(name: str, value: Any, expected: str) -> SettingsError:
    return SettingsError(f"{name} = {value!r} is invalid: expected {expected}")


_HOST_HINT = "a list of host names, e.g. ['www.example.com']"


def _host(name: str, value: Any, wildcard: bool = False) -> str:
    """The host's one spelling (hostnames.normalize_host: IDNA 2008, lower
    case, no trailing dot), as the deploy spells it; "*." kept for a wildcard.
    The plugin's hosts may be single labels (localhost) and carry "_" (no
    certificate names them); DEPLOY_DOMAINS follows the deploy's own rules."""
    prefix = "*." if wildcard and isinstance(value, str) and value.startswith("*.") else ""
    ours = name != DEPLOY_DOMAINS
    try:
        return prefix + hostnames.normalize_host(
            name, value[len(prefix):] if prefix else value,
            allow_underscore=ours, require_dot=not ours or bool(prefix))
    except hostnames.HostNameError as error:
        hint = " ('*.example.org' means every subdomain of example.org)" if wildcard else ""
        raise SettingsError(f"{error}{hint}") from None


def _host_list(name: str, value: Any, wildcard: bool = False) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise _error(name, value, _HOST_HINT)
    return [_host(name, item, wildcard) for item in value]


def _with_unicode_forms(hosts: set[str]) -> set[str]:
    """``hosts`` plus the Unicode spelling of each internationalized one: a
    page may spell a URL either way."""
    return hosts | {hostnames.unicode_form(host) for host in hosts}


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _error(name, value, "True or False")
    return value


def site_host_of(siteurl: Any) -> tuple[str | None, str | None]:
    """(scheme, host) of SITEURL; (None, None) when it is relative or empty."""
    if not isinstance(siteurl, str) or "://" not in siteurl:
        return None, None
    parts = urlsplit(siteurl.strip())
    host = parts.hostname or None
    if host:
        try:
            host = hostnames.normalize_host("SITEURL", host, allow_underscore=True, require_dot=False)
        except hostnames.HostNameError:
            pass  # an IP address (a local preview): as written, in lower case
    return parts.scheme.lower() or None, host


def load(settings: Mapping[str, Any]) -> HttpsSettings:
    """Validate the ``HTTPS_*`` values of Pelican's settings dict."""
    unknown = sorted(
        key for key in settings if key.startswith(PREFIX) and key not in DEFAULTS
    )
    if unknown:
        raise SettingsError(
            f"{unknown[0]} is not a setting of pelican_https; "
            f"expected one of {', '.join(sorted(DEFAULTS))}"
        )
    value = {key: settings.get(key, default) for key, default in DEFAULTS.items()}

    hosts = set(_host_list("HTTPS_HOSTS", value["HTTPS_HOSTS"]))
    if settings.get(DEPLOY_DOMAINS) is not None:
        hosts.update(_host_list(DEPLOY_DOMAINS, settings[DEPLOY_DOMAINS]))

    raw_map = value["HTTPS_HOST_MAP"]
    if not isinstance(raw_map, Mapping):
        raise _error(
            "HTTPS_HOST_MAP", raw_map,
            "a dict of old host -> canonical host, e.g. {'old.example.com': 'example.com'}",
        )
    host_map = {
        _host("HTTPS_HOST_MAP", old): _host("HTTPS_HOST_MAP", new)
        for old, new in raw_map.items()
    }

    upgrade = _host_list("HTTPS_UPGRADE_HOSTS", value["HTTPS_UPGRADE_HOSTS"], wildcard=True)

    report_path = value["HTTPS_REPORT_PATH"]
    if report_path is not None and (not isinstance(report_path, str) or not report_path.strip()):
        raise _error("HTTPS_REPORT_PATH", report_path, "None or a file path such as 'https-report.json'")

    extensions = value["HTTPS_FILE_EXTENSIONS"]
    if isinstance(extensions, str) or not isinstance(extensions, (list, tuple, set, frozenset)) or not all(
        isinstance(ext, str) and ext.startswith(".") and len(ext) > 1 for ext in extensions
    ):
        raise _error("HTTPS_FILE_EXTENSIONS", extensions, "a list of file name endings such as ['.html', '.css']")

    scheme, site_host = site_host_of(settings.get("SITEURL"))
    if site_host:
        hosts.add(site_host)
    hosts.update(host_map)
    return HttpsSettings(
        site_host=site_host,
        site_scheme=scheme,
        hosts=frozenset(_with_unicode_forms(hosts)),
        host_map=MappingProxyType(host_map),
        upgrade_hosts=frozenset(h for h in upgrade if not h.startswith("*.")),
        upgrade_suffixes=tuple(h[1:] for h in upgrade if h.startswith("*.")),
        rewrite=_bool("HTTPS_REWRITE", value["HTTPS_REWRITE"]),
        report_path=report_path,
        strict=_bool("HTTPS_STRICT", value["HTTPS_STRICT"]),
        file_extensions=tuple(ext.lower() for ext in extensions),
    )
