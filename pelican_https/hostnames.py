"""Host-name rules shared by the plugin and the deploy: one spelling of a name for both halves.

``normalize_host(setting, value)`` returns the ASCII form a name is compared, served and
certified under, or raises ``HostNameError`` naming the setting, the value and what is expected:

- International names by IDNA 2008 with UTS #46 mapping (non-transitional), as browsers and
  CAs spell them: ``straße.de`` is ``xn--strae-oqa.de`` (IDNA 2003 made it ``strasse.de``, a
  different domain). Upper case is mapped to lower case; emoji and other disallowed code points
  are refused.
- One trailing dot (the DNS root) is dropped: ``example.com.`` and ``example.com`` are one name.
- Labels are letters, digits and '-' (no leading or trailing '-', at most 63 characters, 253 in
  all). Underscores are refused unless ``allow_underscore=True``: CAs issue no certificate for
  them, but a URL of someone else's host may carry one.
- IP addresses (and names whose last label is all digits, which resolvers read as one) are not
  host names: refused, with a message saying so.

Pure, and imports nothing of ``deploy`` or Pelican: the plugin and the deploy both use it.
"""

from __future__ import annotations

import ipaddress
import re

import idna

__all__ = ["HostNameError", "is_ip_address", "normalize_host", "unicode_form"]

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_HINT = "expected a host name such as 'blog.example.com' (letters, digits and '-', international names allowed)"


class HostNameError(ValueError):
    """A value is not a usable host name. The message names the setting and the value; callers
    re-raise it as their own settings error (``raise SettingsError(str(exc)) from None``)."""


def is_ip_address(value: str) -> bool:
    """An IPv4 or IPv6 address, bracketed or not (``[2001:db8::1]``)."""
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalize_host(setting_name: str, value: object, *, allow_underscore: bool = False,
                   require_dot: bool = True) -> str:
    """The ASCII, lower-case form of a host name, without a trailing dot; or ``HostNameError``.

    ``require_dot=False`` accepts a single label (``localhost``); the deploy needs a name a
    public CA can certify, so its default asks for at least two labels.
    """
    if not isinstance(value, str) or not value or value != value.strip():
        raise HostNameError(f"{setting_name}: {value!r} is not a host name; {_HINT}")
    if is_ip_address(value):
        raise HostNameError(f"{setting_name}: {value!r} is an IP address; {_HINT}: "
                            "certificates and virtual hosts are for names")
    name = value[:-1] if value.endswith(".") else value
    if allow_underscore:
        # idna's STD3 rules refuse '_': check the rest with it replaced by a letter, then put it back.
        probe = name.replace("_", "a")
    else:
        probe = name
    try:
        ascii_name = idna.encode(probe, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise HostNameError(f"{setting_name}: {value!r} is not a valid host name ({_reason(exc)}); {_HINT}") from None
    if allow_underscore and "_" in name:
        if not all(label.isascii() for label in name.split(".") if "_" in label):
            raise HostNameError(f"{setting_name}: {value!r} mixes '_' and non-ASCII letters in one label; {_HINT}")
        ascii_name = _restore_underscores(name, ascii_name)
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise HostNameError(f"{setting_name}: {value!r} is not a valid host name (a label is empty, too long, "
                            f"or starts or ends with '-'); {_HINT}")
    if require_dot and len(labels) < 2:
        raise HostNameError(f"{setting_name}: {value!r} is a single label; expected a fully qualified name such as 'blog.example.com'")
    if labels[-1].isdigit():
        raise HostNameError(f"{setting_name}: {value!r} ends in an all-digit label, which resolvers read as an IP address; {_HINT}")
    return ascii_name


def unicode_form(ascii_name: str) -> str:
    """The Unicode spelling of an ASCII host name (``xn--strae-oqa.de`` -> ``straße.de``); the
    name itself when it has no ``xn--`` label or cannot be decoded."""
    if "xn--" not in ascii_name:
        return ascii_name
    try:
        return idna.decode(ascii_name)
    except idna.IDNAError:
        return ascii_name


def _restore_underscores(original: str, encoded: str) -> str:
    """Underscores stood in for by 'a' go back where they were (their labels are ASCII)."""
    out = []
    for before, after in zip(original.split("."), encoded.split(".")):
        out.append(before.lower() if "_" in before else after)
    return ".".join(out)


def _reason(exc: idna.IDNAError) -> str:
    text = str(exc)
    if "Codepoint" in text and "not allowed" in text:
        return "it contains a character host names may not carry, such as an emoji, '_', a space or punctuation"
    return text[:1].lower() + text[1:]
