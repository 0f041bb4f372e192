"""Deploy settings: one prefix (``DEPLOY_``), defaults in one place, validated loudly.

The blog's own ``publishconf.py`` (or ``pelicanconf.py``) holds them, next to Pelican's
settings. ``load_settings(path)`` reads that file the way Pelican does and returns a frozen
``DeploySettings``; every bad value fails with the setting's name, the value and what is
expected. Nothing here touches the network or the server.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import re
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .errors import DeployError, SettingsError


def _load_hostnames():
    """pelican_https.hostnames, the host-name rules the plugin shares, without running the
    ``pelican_https`` package's __init__: that imports Pelican (~0.35 s on every `fab` run) and
    the plugin. Loaded by path from the sibling package and registered under its own name, so a
    later ``import pelican_https.hostnames`` finds this same module."""
    name = "pelican_https.hostnames"
    if name in sys.modules:
        return sys.modules[name]
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "pelican_https" / "hostnames.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_hostnames = _load_hostnames()
HostNameError, normalize_host = _hostnames.HostNameError, _hostnames.normalize_host

ACME_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}

# Every setting with its default. ``None`` means "derived" (see ``_derive``) or "not used".
DEFAULTS: dict[str, Any] = {
    "DEPLOY_HOST": None,  # the server's SSH host name or address (or DEPLOY_HOSTS for several)
    "DEPLOY_HOSTS": None,  # several servers, one site: ["web1.example.com", "web2.example.com:2222", "[2001:db8::1]:22"]
    "DEPLOY_PORT": 22,  # SSH port of DEPLOY_HOST, and of each DEPLOY_HOSTS entry that names none
    "DEPLOY_USER": None,  # required: the deploy user on the server
    "DEPLOY_SSH_KEY": None,  # private key file; None: ssh-agent and ~/.ssh/id_*
    "DEPLOY_KNOWN_HOSTS": "~/.ssh/known_hosts",
    "DEPLOY_DOMAINS": None,  # default: [host of SITEURL]; the first is canonical
    "DEPLOY_SITE_NAME": None,  # default: the canonical domain; names folders and files
    "DEPLOY_OUTPUT_PATH": None,  # default: Pelican's OUTPUT_PATH
    "DEPLOY_REMOTE_ROOT": None,  # default: /srv/www/<site name>
    "DEPLOY_STATE_DIR": None,  # default: /var/lib/pelican-https/<site name>
    "DEPLOY_KEEP_RELEASES": 5,
    "DEPLOY_LOCK_TIMEOUT": 300,  # seconds a deploy waits for another one on the same site
    "DEPLOY_SKIP_UNCHANGED": True,  # nothing changed since the live release: make no new release
    "DEPLOY_ACME_DIRECTORY": "letsencrypt",
    "DEPLOY_ACME_EMAIL": None,
    "DEPLOY_ACME_CA_BUNDLE": None,  # CA file to trust for a private ACME server (Pebble)
    "DEPLOY_ACME_PROFILE": None,  # None: the CA's default; 'classic', 'tlsserver' or 'shortlived'
    "DEPLOY_KEY_TYPE": "ec-p256",  # the certificate's key: ec-p256, ec-p384, rsa2048, rsa3072, rsa4096
    "DEPLOY_ACME_EAB_KID": None,  # external account binding key id, for CAs that require one
    "DEPLOY_ACME_EAB_HMAC_KEY_ENV": None,  # name of the environment variable holding the EAB HMAC key
    "DEPLOY_DNS_RESOLVER": None,  # DNS server ('ip', 'ip:port' or '[ipv6]:port') for every lookup of a deploy; None: system resolver
    "DEPLOY_HTTP_PORT": 80,
    "DEPLOY_HTTPS_PORT": 443,
    "DEPLOY_NGINX": ["sudo", "-n", "/usr/sbin/nginx"],
    "DEPLOY_HSTS_MAX_AGE": 63072000,  # two years
    "DEPLOY_HSTS_INCLUDE_SUBDOMAINS": False,  # opt-in: every subdomain must serve https too
    "DEPLOY_HSTS_PRELOAD": False,  # opt-in: see _check_hsts_preload for the preload list's requirements
    "DEPLOY_CSP_UPGRADE_INSECURE": False,  # Content-Security-Policy: upgrade-insecure-requests (safety net)
    "DEPLOY_NGINX_DEFAULT_SERVER": False,  # make this vhost nginx's default_server (takes over unknown names)
    "DEPLOY_LISTEN": ["*", "[::]"],  # addresses nginx listens on: IPv4 and IPv6 by default
    "DEPLOY_VERIFY_ADDRESS": None,  # default: resolve the domain like any visitor
    "DEPLOY_VERIFY_CA": None,  # CA file to verify the served certificate; None: system store
}

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s;,<>\"']+@[^@\s;,<>\"']+\.[^@\s;,<>\"']+$")


class Secret:
    """A value that is never shown: its repr and str are ``<hidden>``, so settings can be printed
    or logged whole, and it is no ``str``, so it cannot be written out by accident (JSON, a
    script); ``.value`` where it is used."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


class DeploySettings(NamedTuple):
    """Validated, immutable (``settings._replace(...)`` makes a changed copy). A named tuple, not a
    dataclass: this module is imported before the deploy's SSH connection starts, and
    ``dataclasses`` costs ~10 ms of imports there."""

    host: str  # the first of ``hosts``
    port: int
    user: str
    ssh_key: Path | None
    known_hosts: Path
    domains: tuple[str, ...]
    site_name: str
    output_path: Path
    remote_root: PurePosixPath
    state_dir: PurePosixPath
    keep_releases: int
    lock_timeout: int
    skip_unchanged: bool
    acme_directory: str
    acme_email: str | None
    acme_ca_bundle: Path | None
    http_port: int
    https_port: int
    nginx: tuple[str, ...]
    hsts_max_age: int
    listen_addresses: tuple[str, ...]
    verify_address: str | None
    verify_ca: Path | None
    # nginx vhost options (defaults keep hand-built DeploySettings valid)
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False
    csp_upgrade_insecure: bool = False
    nginx_default_server: bool = False
    # certificate options (defaults keep hand-built DeploySettings valid)
    key_type: str = "ec-p256"
    acme_profile: str | None = None
    acme_eab_kid: str | None = None
    acme_eab_hmac_key: Secret | None = None
    dns_resolver: str | None = None
    # every server of the site, in DEPLOY_HOSTS order; ((host, port),) for DEPLOY_HOST
    hosts: tuple[tuple[str, int], ...] = ()

    @property
    def canonical_domain(self) -> str:
        return self.domains[0]

    @property
    def dns_server(self) -> tuple[str, int] | None:
        """DEPLOY_DNS_RESOLVER as (address, port), port 53 when none is given; None: the system resolver."""
        return None if self.dns_resolver is None else _split_host_port(self.dns_resolver, 53)

    @property
    def https_origin(self) -> str:
        """The public https URL of the site, with the port only when it is not 443."""
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.canonical_domain}{port}"

    # Server layout: every path the deploy touches, derived in one place.
    @property
    def releases_dir(self) -> PurePosixPath:
        return self.remote_root / "releases"

    @property
    def current_link(self) -> PurePosixPath:
        return self.remote_root / "current"

    @property
    def challenge_root(self) -> PurePosixPath:
        """nginx's root for /.well-known/acme-challenge/ (outside every release)."""
        return self.remote_root / "challenges"

    @property
    def challenge_dir(self) -> PurePosixPath:
        return self.challenge_root / ".well-known" / "acme-challenge"

    @property
    def tls_dir(self) -> PurePosixPath:
        return self.state_dir / "tls"

    @property
    def accounts_dir(self) -> PurePosixPath:
        return self.state_dir / "accounts"

    @property
    def vhost_file(self) -> PurePosixPath:
        """The vhost nginx includes (the one-time set-up links it into nginx's folder)."""
        return self.state_dir / "nginx" / "vhost.conf"

    @property
    def lock_file(self) -> PurePosixPath:
        return self.state_dir / "deploy.lock"


def load_settings(path: str | os.PathLike) -> DeploySettings:
    """Read a Pelican settings file and return validated deploy settings."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"settings file {str(path)!r} does not exist; expected a Pelican settings file such as publishconf.py")
    return settings_from_mapping(read_settings_file(path), base=path.resolve().parent)


def read_settings_file(path: Path) -> dict[str, Any]:
    """The upper-case names of a settings file, loaded the way Pelican loads it.

    Not through ``pelican.settings``: importing Pelican costs ~0.35 s on every `fab` run, and the
    deploy needs none of its defaults (OUTPUT_PATH falls back to "output" here).
    """
    # publishconf.py usually does `from pelicanconf import *`: make its folder importable.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import importlib.util  # only `fab` reads a settings file

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # as Pelican does, so later imports of it find this one
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(path.stem, None)
        where = f"{exc.filename or path}, line {exc.lineno}" if exc.lineno else str(exc.filename or path)
        raise SettingsError(f"settings file {where}: {exc.msg}; fix the Python syntax there") from None
    except DeployError:  # the file asked the project for something (a rehearsal's sandbox): its own message
        sys.modules.pop(path.stem, None)
        raise
    except Exception as exc:  # the file runs code: any error in it is the file's, told in one line
        sys.modules.pop(path.stem, None)
        raise SettingsError(f"settings file {_where(exc, path)}: {type(exc).__name__}: {exc}") from exc
    return {name: value for name, value in vars(module).items() if name.isupper()}


def _where(exc: BaseException, path: Path) -> str:
    """'file, line N' of the innermost frame in a file of the blog (the settings file or one it imports)."""
    import traceback

    folder = str(path.resolve().parent)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(folder)]
    frame = frames[-1] if frames else None
    return f"{frame.filename}, line {frame.lineno}" if frame else str(path)


def settings_from_mapping(raw: dict[str, Any], base: Path | None = None) -> DeploySettings:
    """Validate ``raw`` (Pelican settings plus DEPLOY_*) into DeploySettings. Pure."""
    unknown = sorted(k for k in raw if k.startswith("DEPLOY_") and k not in DEFAULTS)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]}; known DEPLOY_ settings are: {', '.join(sorted(DEFAULTS))}")
    values = {k: raw.get(k, d) for k, d in DEFAULTS.items()}
    base = base or Path.cwd()

    hosts = _hosts(values["DEPLOY_HOST"], values["DEPLOY_HOSTS"], _port("DEPLOY_PORT", values["DEPLOY_PORT"]))
    domains = _domains(values["DEPLOY_DOMAINS"], raw.get("SITEURL") or "")
    site_name = _site_name(values["DEPLOY_SITE_NAME"] or domains[0])
    output = values["DEPLOY_OUTPUT_PATH"] or raw.get("OUTPUT_PATH") or "output"
    http_port = _port("DEPLOY_HTTP_PORT", values["DEPLOY_HTTP_PORT"])
    https_port = _port("DEPLOY_HTTPS_PORT", values["DEPLOY_HTTPS_PORT"])
    verify_address = values["DEPLOY_VERIFY_ADDRESS"]
    return DeploySettings(
        host=hosts[0][0],
        port=hosts[0][1],
        hosts=hosts,
        user=_user(values["DEPLOY_USER"]),
        ssh_key=_local_file("DEPLOY_SSH_KEY", values["DEPLOY_SSH_KEY"], base),
        known_hosts=_local_path("DEPLOY_KNOWN_HOSTS", values["DEPLOY_KNOWN_HOSTS"], base),
        domains=domains,
        site_name=site_name,
        output_path=Path(output) if Path(output).is_absolute() else base / output,
        **_server_paths(values, site_name),
        keep_releases=_int("DEPLOY_KEEP_RELEASES", values["DEPLOY_KEEP_RELEASES"], 1, 1000),
        lock_timeout=_int("DEPLOY_LOCK_TIMEOUT", values["DEPLOY_LOCK_TIMEOUT"], 0, 86400),
        skip_unchanged=_bool("DEPLOY_SKIP_UNCHANGED", values["DEPLOY_SKIP_UNCHANGED"]),
        acme_directory=_acme_directory(values["DEPLOY_ACME_DIRECTORY"]),
        acme_email=_email(values["DEPLOY_ACME_EMAIL"]),
        acme_ca_bundle=_local_file("DEPLOY_ACME_CA_BUNDLE", values["DEPLOY_ACME_CA_BUNDLE"], base),
        http_port=http_port,
        https_port=https_port,
        nginx=_nginx_command(values["DEPLOY_NGINX"]),
        listen_addresses=_listen_addresses(values["DEPLOY_LISTEN"]),
        verify_address=None if verify_address is None else _host("DEPLOY_VERIFY_ADDRESS", verify_address),
        verify_ca=_local_file("DEPLOY_VERIFY_CA", values["DEPLOY_VERIFY_CA"], base),
        csp_upgrade_insecure=_bool("DEPLOY_CSP_UPGRADE_INSECURE", values["DEPLOY_CSP_UPGRADE_INSECURE"]),
        nginx_default_server=_bool("DEPLOY_NGINX_DEFAULT_SERVER", values["DEPLOY_NGINX_DEFAULT_SERVER"]),
        **_hsts(values, http_port, https_port),
        **_certificate_options(values),
    )


def _domains(domains: Any, siteurl: str) -> tuple[str, ...]:
    if domains is None:
        siteurl_host = urlsplit(siteurl).hostname if siteurl else None
        if not siteurl_host:
            raise SettingsError(f"DEPLOY_DOMAINS is not set and SITEURL={siteurl!r} names no host; set SITEURL = 'https://blog.example.com' or DEPLOY_DOMAINS = ['blog.example.com']")
        domains = [siteurl_host]
    if not isinstance(domains, (list, tuple)) or not domains:
        raise SettingsError(f"DEPLOY_DOMAINS={domains!r}: expected a non-empty list of domain names, canonical first")
    domains = tuple(validate_domain("DEPLOY_DOMAINS", d) for d in domains)
    if len(set(domains)) != len(domains):
        raise SettingsError(f"DEPLOY_DOMAINS={list(domains)!r}: a domain is listed twice")
    return domains


def _site_name(site_name: Any) -> str:
    if not isinstance(site_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", site_name):
        raise SettingsError(f"DEPLOY_SITE_NAME={site_name!r}: expected letters, digits, '.', '_' or '-' (it names folders on the server)")
    return site_name


def _acme_directory(value: Any) -> str:
    url = ACME_DIRECTORIES.get(value, value) if isinstance(value, str) else value
    if not isinstance(url, str) or urlsplit(url).scheme != "https" or not urlsplit(url).hostname:
        raise SettingsError(f"DEPLOY_ACME_DIRECTORY={value!r}: expected 'letsencrypt', 'letsencrypt-staging' or an https:// directory URL")
    return url


def _email(email: Any) -> str | None:
    if email is not None and (not isinstance(email, str) or not _EMAIL.fullmatch(email)):
        raise SettingsError(f"DEPLOY_ACME_EMAIL={email!r}: expected an e-mail address such as 'you@example.com', or None")
    return email


def _nginx_command(nginx: Any) -> tuple[str, ...]:
    if isinstance(nginx, str) or not isinstance(nginx, (list, tuple)) or not nginx or not all(isinstance(a, str) and a and "\n" not in a for a in nginx):
        raise SettingsError(f"DEPLOY_NGINX={nginx!r}: expected a list of command words such as ['sudo', '-n', '/usr/sbin/nginx']")
    return tuple(nginx)


def _user(user: Any) -> str:
    if not isinstance(user, str) or not _USER_NAME.fullmatch(user):
        raise SettingsError(f"DEPLOY_USER={user!r}: expected a Unix user name such as 'deploy'")
    if user == "root":
        raise SettingsError("DEPLOY_USER='root': the deploy never runs as root; expected a user of its own such as 'deploy' "
                            "(fab server-setup prints what root sets up for it once)")
    return user


def _hsts(values: dict[str, Any], http_port: int, https_port: int) -> dict[str, Any]:
    max_age = _int("DEPLOY_HSTS_MAX_AGE", values["DEPLOY_HSTS_MAX_AGE"], 0, 10 * 365 * 86400)
    include_subdomains = _bool("DEPLOY_HSTS_INCLUDE_SUBDOMAINS", values["DEPLOY_HSTS_INCLUDE_SUBDOMAINS"])
    preload = _bool("DEPLOY_HSTS_PRELOAD", values["DEPLOY_HSTS_PRELOAD"])
    if preload:
        _check_hsts_preload(max_age, include_subdomains, http_port, https_port)
    return {"hsts_max_age": max_age, "hsts_include_subdomains": include_subdomains, "hsts_preload": preload}


def _server_paths(values: dict[str, Any], site_name: str) -> dict[str, PurePosixPath]:
    """The site folder and the state folder: two folders apart, neither inside the other."""
    remote_root = _remote_path("DEPLOY_REMOTE_ROOT", values["DEPLOY_REMOTE_ROOT"] or f"/srv/www/{site_name}")
    state_dir = _remote_path("DEPLOY_STATE_DIR", values["DEPLOY_STATE_DIR"] or f"/var/lib/pelican-https/{site_name}")
    root = f"DEPLOY_REMOTE_ROOT={str(remote_root)!r}" + ("" if values["DEPLOY_REMOTE_ROOT"] else " (its default)")
    state = f"DEPLOY_STATE_DIR={str(state_dir)!r}" + ("" if values["DEPLOY_STATE_DIR"] else " (its default)")
    apart = "expected two folders apart, such as the defaults /srv/www/<site> and /var/lib/pelican-https/<site>"
    if state_dir == remote_root or remote_root in state_dir.parents:
        raise SettingsError(f"{state} is inside {root}, the tree nginx serves: it holds the certificate key and ACME "
                            f"account keys; {apart}")
    if state_dir in remote_root.parents:
        raise SettingsError(f"{root} is inside {state}, the deploy user's private folder (0700, which nginx cannot read; "
                            f"removing the site would take one with the other); {apart}")
    return {"remote_root": remote_root, "state_dir": state_dir}


def validate_domain(name: str, value: Any) -> str:
    """Return the ASCII form of a domain (IDNA 2008, the rules the plugin shares), or fail: it ends
    up in nginx configs and CSRs. No IP addresses, wildcards or underscores: CAs certify names."""
    try:
        return normalize_host(name, value)
    except HostNameError as exc:
        raise SettingsError(f"{exc} (not a valid domain name)") from None


def _host(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value) and ".." not in value:
            return value
    raise SettingsError(f"{name}={value!r}: expected a host name or IP address such as 'blog.example.com' or '203.0.113.5'")


def _hosts(host: Any, hosts: Any, default_port: int) -> tuple[tuple[str, int], ...]:
    """DEPLOY_HOST (one server) or DEPLOY_HOSTS (several, each 'name', 'name:port' or '[v6]:port')."""
    if hosts is None:
        if host is None:
            raise SettingsError("DEPLOY_HOST=None: expected a host name or IP address such as 'blog.example.com' or "
                                "'203.0.113.5' (or DEPLOY_HOSTS = [...] for several servers)")
        return ((_host("DEPLOY_HOST", host), default_port),)
    if host is not None:
        raise SettingsError(f"DEPLOY_HOST={host!r} and DEPLOY_HOSTS={hosts!r} are both set; expected one of them: "
                            "DEPLOY_HOST for one server, or DEPLOY_HOSTS listing every server (put the first one there too)")
    expected = "a non-empty list such as ['web1.example.com', 'web2.example.com:2222', '[2001:db8::1]:22']"
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)) or not hosts:
        raise SettingsError(f"DEPLOY_HOSTS={hosts!r}: expected {expected}")
    result: list[tuple[str, int]] = []
    for entry in hosts:
        if not isinstance(entry, str):
            raise SettingsError(f"DEPLOY_HOSTS: {entry!r} is not a host; expected {expected}")
        try:
            name, port = _split_host_port(entry, default_port)
        except ValueError as exc:
            raise SettingsError(f"DEPLOY_HOSTS: {entry!r} has {exc}; expected 'name', 'name:port' or '[ipv6]:port' "
                                "with a port from 1 to 65535") from None
        pair = (_host("DEPLOY_HOSTS", name).lower(), port)
        if pair in result:
            raise SettingsError(f"DEPLOY_HOSTS: {entry!r} is listed twice (as {pair[0]} port {pair[1]}); expected each server once")
        result.append(pair)
    return tuple(result)


def _split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', 'ipv4:port', '[ipv6]' or '[ipv6]:port'; a bare IPv6 address has no port."""
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an unclosed '[' or text after ']'")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(f"{address!r} in brackets, which is not an IPv6 address") from None
        host = address
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host, port_text = value, None  # a name, an IPv4 address or a bare IPv6 address
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"a bad port {port_text!r}")
    return host, int(port_text)


def _listen_addresses(value: Any) -> tuple[str, ...]:
    """'*', an IPv4 address or a bracketed IPv6 address: each becomes an nginx `listen` line."""
    expected = "a non-empty list of '*', IPv4 addresses or bracketed IPv6 addresses such as ['*', '[::]']"
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise SettingsError(f"DEPLOY_LISTEN={value!r}: expected {expected}")
    for address in value:
        try:
            if isinstance(address, str) and (
                address == "*"
                or (address.startswith("[") and address.endswith("]") and ipaddress.IPv6Address(address[1:-1]))
                or ipaddress.IPv4Address(address)
            ):
                continue
        except ValueError:
            pass
        raise SettingsError(f"DEPLOY_LISTEN: {address!r} is not an address nginx can listen on; expected {expected}")
    return tuple(value)


def _check_hsts_preload(max_age: int, include_subdomains: bool, http_port: int, https_port: int) -> None:
    """The requirements of https://hstspreload.org that the settings decide.

    Preloading is hard to undo (removal takes months to reach browsers) and covers the whole
    registrable domain: every subdomain, also ones not on this server, must serve https.
    """
    why = ("DEPLOY_HSTS_PRELOAD=True: the HSTS preload list (hstspreload.org) requires {}. "
           "Preloading covers every subdomain of the registrable domain and is slow to undo; "
           "leave DEPLOY_HSTS_PRELOAD=False unless all of them serve https")
    if max_age < 31536000:
        raise SettingsError(why.format(f"DEPLOY_HSTS_MAX_AGE of at least 31536000 (one year), not {max_age!r}"))
    if not include_subdomains:
        raise SettingsError(why.format("DEPLOY_HSTS_INCLUDE_SUBDOMAINS=True (the header must carry includeSubDomains)"))
    if (http_port, https_port) != (80, 443):
        raise SettingsError(why.format(f"the standard ports (browsers check http on 80 and https on 443), "
                                       f"not DEPLOY_HTTP_PORT={http_port!r} and DEPLOY_HTTPS_PORT={https_port!r}"))


# Defined here, not in deploy.renewal (which imports them from here): validating settings must
# not import cryptography (~70 ms on every upload-only process).
KEY_TYPES = ("ec-p256", "ec-p384", "rsa2048", "rsa3072", "rsa4096")
PROFILES = ("classic", "tlsserver", "shortlived")


def _certificate_options(values: dict[str, Any]) -> dict[str, Any]:
    """DEPLOY_KEY_TYPE, DEPLOY_ACME_PROFILE, external account binding and the pre-check's DNS resolver."""
    key_type = values["DEPLOY_KEY_TYPE"]
    if key_type not in KEY_TYPES:
        raise SettingsError(f"DEPLOY_KEY_TYPE={key_type!r}: expected one of {', '.join(map(repr, KEY_TYPES))}")
    profile = values["DEPLOY_ACME_PROFILE"]
    if profile is not None and profile not in PROFILES:
        raise SettingsError(f"DEPLOY_ACME_PROFILE={profile!r}: expected None (the CA's default) or one of {', '.join(map(repr, PROFILES))}")
    kid, env_name = values["DEPLOY_ACME_EAB_KID"], values["DEPLOY_ACME_EAB_HMAC_KEY_ENV"]
    hmac_key = None
    if kid is not None or env_name is not None:
        if not isinstance(kid, str) or not re.fullmatch(r"[\x21-\x7e]{1,200}", kid):
            raise SettingsError(f"DEPLOY_ACME_EAB_KID={kid!r}: expected the key id your CA gave you (printable, no spaces), set together with DEPLOY_ACME_EAB_HMAC_KEY_ENV")
        if not isinstance(env_name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
            raise SettingsError(f"DEPLOY_ACME_EAB_HMAC_KEY_ENV={env_name!r}: expected the name of an environment variable (e.g. 'ACME_EAB_HMAC_KEY') holding the HMAC key, set together with DEPLOY_ACME_EAB_KID")
        hmac_key = os.environ.get(env_name, "")
        # The key itself is never echoed: only the variable's name.
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,}={0,2}", hmac_key):
            raise SettingsError(f"DEPLOY_ACME_EAB_HMAC_KEY_ENV={env_name!r}: the environment variable {env_name} is "
                                f"{'not set' if not hmac_key else 'not a base64url key'}; expected the HMAC key your CA gave you (base64url)")
    resolver = values["DEPLOY_DNS_RESOLVER"]
    if resolver is not None:
        # A string only: ipaddress takes the number 123 for 0.0.0.123.
        try:
            if not isinstance(resolver, str):
                raise ValueError(resolver)
            ipaddress.ip_address(_split_host_port(resolver, 53)[0])
        except ValueError:
            raise SettingsError(f"DEPLOY_DNS_RESOLVER={resolver!r}: expected a DNS server's IP address as a string, optionally "
                                "with a port ('1.1.1.1', '127.0.0.1:8053', '2606:4700:4700::1111', '[2001:db8::53]:8053'), "
                                "or None for the system resolver") from None
    return {"key_type": key_type, "acme_profile": profile, "acme_eab_kid": kid,
            "acme_eab_hmac_key": Secret(hmac_key) if hmac_key else None,
            "dns_resolver": resolver}


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{name}={value!r}: expected True or False")
    return value


def _port(name: str, value: Any) -> int:
    return _int(name, value, 1, 65535)


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{name}={value!r}: expected a whole number from {low} to {high}")
    return value


def _local_path(name: str, value: Any, base: Path) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise SettingsError(f"{name}={value!r}: expected a file path")
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else base / path


def _local_file(name: str, value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    path = _local_path(name, value, base)
    if not path.is_file():
        raise SettingsError(f"{name}={str(value)!r}: no such file ({path})")
    return path


def _remote_path(name: str, value: Any) -> PurePosixPath:
    # These paths reach shell commands (quoted) and the nginx config: allow only plain characters,
    # and no '.' or '..' segment (the server would resolve them; the deploy compares paths as written).
    expected = "expected an absolute path of letters, digits and . _ - / @ + (no spaces, quotes, '.' or '..' segments), such as '/srv/www/blog'"
    if not isinstance(value, str) or not _SAFE_PATH.fullmatch(value) or value.rstrip("/") == "":
        raise SettingsError(f"{name}={value!r}: {expected}")
    segments = value.rstrip("/").split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        raise SettingsError(f"{name}={value!r}: a '.' or '..' segment; {expected}")
    if "" in segments:
        raise SettingsError(f"{name}={value!r}: an empty segment ('//'); {expected}")
    return PurePosixPath(value)
