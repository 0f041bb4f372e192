"""DEPLOY_KNOWN_HOSTS read the way OpenSSH reads it, with a one-line error for a damaged line.

paramiko's own ``HostKeys.load`` stops with a traceback on a ``@revoked`` line (it takes the
marker for a host name) and on a line whose key is not valid base64. Here every line is checked
first; a ``@revoked`` key is collected so the connection can refuse it by name (and it is kept
out of the returned ``HostKeys`` even when another line lists it as good); ``@cert-authority``
lines are skipped (paramiko cannot check host certificates: such a host needs a plain key line);
key types paramiko does not know (e.g. security-key types) are skipped as OpenSSH skips what it
cannot use. Pure: reads one local file.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import NamedTuple, NoReturn

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from .errors import ConnectionFailed


class KnownHosts(NamedTuple):
    host_keys: paramiko.HostKeys  # trusted keys (revoked ones removed)
    revoked: frozenset[bytes]  # public key blobs (``PKey.asbytes()``) marked @revoked


def load_known_hosts(path: str | os.PathLike) -> paramiko.HostKeys:
    """The trusted host keys of ``path``; a revoked key is never among them."""
    return read_known_hosts(path).host_keys


def revoked_keys(path: str | os.PathLike) -> frozenset[bytes]:
    """The key blobs ``path`` marks ``@revoked``: a server presenting one must be refused."""
    return read_known_hosts(path).revoked


def is_revoked(key: paramiko.PKey, revoked: frozenset[bytes]) -> bool:
    return key.asbytes() in revoked


def read_known_hosts(path: str | os.PathLike) -> KnownHosts:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ConnectionFailed(f"known_hosts file {path} does not exist; expected the server's key in it "
                               "(ssh-keyscan, checked against the fingerprint the server shows)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectionFailed(f"known_hosts file {path} cannot be read: {exc}") from None

    entries: list[HostKeyEntry] = []
    revoked: set[bytes] = set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker not in (None, "@revoked", "@cert-authority"):
            _damaged(path, number, f"unknown marker {marker!r} (OpenSSH knows @revoked and @cert-authority)")
        if len(fields) < 3:
            _damaged(path, number, "expected 'host-patterns key-type base64-key [comment]'"
                     + (f" after {marker}" if marker else ""))
        hosts, key_type, blob_text = fields[:3]
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except (binascii.Error, ValueError):
            _damaged(path, number, f"the {key_type} key is not valid base64 (a line cut short or joined with another?)")
        if not _blob_names(blob, key_type):
            _damaged(path, number, f"the key's own type does not match {key_type!r} (a line edited by hand?)")
        if marker == "@cert-authority":
            continue
        if marker == "@revoked":
            revoked.add(blob)
            continue
        try:
            entry = HostKeyEntry.from_line(f"{hosts} {key_type} {blob_text}", number)
        except (InvalidHostKey, paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
            _damaged(path, number, f"the {key_type} key cannot be read ({exc or type(exc).__name__})")
        if entry is None:  # a key type paramiko does not know: OpenSSH would skip what it cannot use too
            continue
        entries.append(entry)

    host_keys = paramiko.HostKeys()
    for entry in entries:
        if entry.key.asbytes() in revoked:
            continue
        for host in entry.hostnames:
            host_keys.add(host, entry.key.get_name(), entry.key)
    return KnownHosts(host_keys, frozenset(revoked))


def _blob_names(blob: bytes, key_type: str) -> bool:
    """An SSH public key blob starts with its own type name (uint32 length + name)."""
    if len(blob) < 4:
        return False
    length = int.from_bytes(blob[:4], "big")
    return blob[4:4 + length] == key_type.encode("ascii", "replace")


def _damaged(path: str, number: int, what: str) -> NoReturn:
    raise ConnectionFailed(f"known_hosts file {path}, line {number}: {what}; fix or delete that line "
                           "(ssh-keygen -R HOST removes a host's lines)")
