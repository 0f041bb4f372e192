"""DEPLOY_KNOWN_HOSTS: @revoked honoured, a damaged line named in one line (pure, no sandbox)."""

from __future__ import annotations

import base64

import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from deploy.errors import ConnectionFailed
from deploy.known_hosts import is_revoked, load_known_hosts, read_known_hosts, revoked_keys


def public_line(kind: str = "ed25519") -> str:
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def pkey(line: str) -> paramiko.PKey:
    key_type, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))


def write(tmp_path, *lines: str):
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plain_port_and_hashed_entries_are_found(tmp_path):
    a, b, c = public_line(), public_line("ecdsa"), public_line()
    hashed = paramiko.HostKeys.hash_host("[hashed.example]:2222")
    path = write(tmp_path, "# a comment", "", f"web1.example.com,203.0.113.5 {a} a comment", f"[127.0.0.1]:2222 {b}",
                 f"{hashed} {c}")
    keys = load_known_hosts(path)
    assert keys.lookup("web1.example.com")["ssh-ed25519"] == pkey(a)
    assert keys.lookup("203.0.113.5")["ssh-ed25519"] == pkey(a)
    assert keys.lookup("[127.0.0.1]:2222")["ecdsa-sha2-nistp256"] == pkey(b)
    assert keys.lookup("[hashed.example]:2222")["ssh-ed25519"] == pkey(c)
    assert keys.lookup("other.example") is None
    assert revoked_keys(path) == frozenset()


def test_a_revoked_key_is_collected_and_never_trusted(tmp_path):
    good, bad = public_line(), public_line()
    path = write(tmp_path, f"web1.example.com {bad}", f"@revoked * {bad}", f"web2.example.com {good}")
    known = read_known_hosts(path)
    assert is_revoked(pkey(bad), known.revoked) and not is_revoked(pkey(good), known.revoked)
    assert known.host_keys.lookup("web1.example.com") is None  # listed as good too: revoked wins
    assert known.host_keys.lookup("web2.example.com")["ssh-ed25519"] == pkey(good)


def test_cert_authority_lines_and_unknown_key_types_are_skipped(tmp_path):
    ca, good = public_line(), public_line()
    sk_blob = (len(b"sk-ssh-ed25519@openssh.com").to_bytes(4, "big") + b"sk-ssh-ed25519@openssh.com"
               + (32).to_bytes(4, "big") + bytes(32) + (14).to_bytes(4, "big") + b"ssh:pelican-ht")
    sk = "sk-ssh-ed25519@openssh.com " + base64.b64encode(sk_blob).decode()
    path = write(tmp_path, f"@cert-authority *.example.com {ca}", f"web1.example.com {sk}", f"web1.example.com {good}")
    keys = load_known_hosts(path)
    assert dict(keys.lookup("web1.example.com")) == {"ssh-ed25519": pkey(good)}


@pytest.mark.parametrize("bad_line, complaint", [
    ("web1.example.com ssh-ed25519", "expected 'host-patterns key-type base64-key"),
    ("@revoked web1.example.com", "after @revoked"),
    ("@trusted web1.example.com {key}", "unknown marker '@trusted'"),
    ("web1.example.com {cut}", "not valid base64"),
    ("web1.example.com ssh-rsa {blob}", "does not match 'ssh-rsa'"),
    ("web1.example.com ssh-ed25519 AAAA", "does not match"),
])
def test_a_damaged_line_is_one_line_naming_the_file_and_line(tmp_path, bad_line, complaint):
    key = public_line()
    line = bad_line.format(key=key, cut=key[:-7], blob=key.split()[1])
    path = write(tmp_path, "# first", f"web2.example.com {public_line()}", line)
    with pytest.raises(ConnectionFailed) as err:
        load_known_hosts(path)
    message = str(err.value)
    assert f"{path}, line 3:" in message and complaint in message
    assert "\n" not in message and "Traceback" not in message


def test_a_missing_file_is_explained(tmp_path):
    with pytest.raises(ConnectionFailed, match="does not exist"):
        load_known_hosts(tmp_path / "nope")
