"""Check the challenge path the way the CA will, before asking the CA (a failed validation counts:
Let's Encrypt allows 5 per hour). Each failure is explained precisely.

The CA resolves the domain in public DNS (A and AAAA), connects to each address on port 80,
sends ``GET /.well-known/acme-challenge/<token>`` with ``Host: <domain>`` and expects the token's
key authorization as the body. ``check()`` does the same for every domain and address; the pure
``explain()`` turns what it saw into a message: the domain points elsewhere, nothing answers on
port 80 (closed or filtered), a redirect or the site instead of the token, or nginx not serving
the challenge folder.

Names are resolved with DEPLOY_DNS_RESOLVER when set (a public resolver, to see what the CA sees;
the sandbox's is the CA's own DNS), else with the system resolver.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import logging
import secrets
import socket
import struct
from dataclasses import dataclass

from .errors import ChallengeCheckFailed

log = logging.getLogger("pelican_https.deploy")

_NO_ROUTE_FROM_HERE = {errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}

FIREWALLS = ("iptables/nftables rules (iptables -L -n, nft list ruleset), ufw (ufw allow 80/tcp), "
             "firewalld (firewall-cmd --add-service=http --permanent && firewall-cmd --reload), "
             "or your cloud provider's security group / network firewall")


@dataclass(frozen=True)
class Probe:
    """What one fetch of the challenge URL at one address gave."""
    domain: str
    address: str
    port: int
    outcome: str  # "token", "refused", "timeout", "unreachable", "uncheckable", "http"
    status: int = 0
    location: str | None = None
    body: str = ""
    error: str = ""


# --- resolving like the CA ----------------------------------------------------------------

def resolve(domain: str, server: tuple[str, int] | None, timeout: float = 3.0) -> list[str]:
    """A and AAAA addresses of ``domain``: from the DNS ``server`` (``settings.dns_server``, from
    DEPLOY_DNS_RESOLVER) or the system resolver. Every lookup of a deploy goes through here."""
    if server is None:
        try:
            infos = socket.getaddrinfo(domain, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        return sorted({info[4][0] for info in infos})
    return sorted({*_query(server, domain, 1, timeout), *_query(server, domain, 28, timeout)})


def _query(server: tuple[str, int], name: str, qtype: int, timeout: float) -> list[str]:
    """One DNS query over UDP (RFC 1035), recursion desired; the A (1) or AAAA (28) records of the answer."""
    qid = secrets.randbits(16)
    question = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, server)
            reply, _ = sock.recvfrom(4096)
        except OSError:
            return []
    rid, flags, qdcount, ancount = struct.unpack("!HHHH", reply[:8])
    if rid != qid or flags & 0x000F:  # not our answer, or NXDOMAIN/SERVFAIL: no addresses
        return []
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(reply, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(reply, offset)
        rtype, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
        data = reply[offset + 10:offset + 10 + length]
        offset += 10 + length
        if rtype == qtype == 1 and length == 4:
            addresses.append(str(ipaddress.IPv4Address(data)))
        elif rtype == qtype == 28 and length == 16:
            addresses.append(str(ipaddress.IPv6Address(data)))
    return addresses


def _skip_name(packet: bytes, offset: int) -> int:
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:  # compression pointer: two bytes, end of name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


# --- fetching like the CA -----------------------------------------------------------------

def fetch(domain: str, address: str, port: int, token: str, expected: str, timeout: float = 5.0) -> Probe:
    """GET http://<domain>/.well-known/acme-challenge/<token> from ``address``, as the CA's validator would."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        # The CA sends Host without the port (it always uses 80); the sandbox's nginx matches on the name only.
        conn.request("GET", f"/.well-known/acme-challenge/{token}", headers={"Host": domain, "User-Agent": "pelican-https pre-check"})
        resp = conn.getresponse()
        body = resp.read(4096).decode("utf-8", "replace")
    except ConnectionRefusedError as exc:
        return Probe(domain, address, port, "refused", error=str(exc))
    except (socket.timeout, TimeoutError) as exc:
        return Probe(domain, address, port, "timeout", error=str(exc) or "timed out")
    except OSError as exc:
        if exc.errno in _NO_ROUTE_FROM_HERE and ":" in address:
            # This machine has no IPv6 route (GitHub-hosted runners have none): it cannot check this address.
            return Probe(domain, address, port, "uncheckable", error=f"no IPv6 route from this machine ({exc})")
        return Probe(domain, address, port, "unreachable", error=f"{exc.__class__.__name__}: {exc}")
    except http.client.HTTPException as exc:
        return Probe(domain, address, port, "unreachable", error=f"{exc.__class__.__name__}: {exc}")
    finally:
        conn.close()
    if resp.status == 200 and body.strip() == expected:
        return Probe(domain, address, port, "token", 200)
    return Probe(domain, address, port, "http", resp.status, resp.getheader("Location"), body.strip()[:200])


# --- what went wrong (pure) ----------------------------------------------------------------

def explain(probe: Probe | None, domain: str, addresses: list[str], server_addresses: set[str], port: int) -> str:
    """One precise sentence (or three) for a failed check of ``domain``; ``probe`` None means no address."""
    url = f"http://{domain}/.well-known/acme-challenge/"
    if not addresses:
        return (f"{domain} has no A or AAAA record, so the CA cannot reach this server. "
                f"Add an A record (and AAAA if the server has IPv6) pointing to {_list(server_addresses)} at your DNS provider")
    assert probe is not None
    foreign = [a for a in addresses if a not in server_addresses]
    if probe.address in foreign and server_addresses:
        return (f"{domain} resolves to {', '.join(addresses)}, but this server is {_list(server_addresses)}: "
                f"the CA would ask {probe.address}, which did not serve the token ({_seen(probe)}). "
                f"Fix the domain's A/AAAA records at your DNS provider (remove or correct {', '.join(foreign)}), "
                "then wait for the old records' TTL")
    where = f"{probe.address} port {port}"
    if probe.outcome == "refused":
        return (f"nothing answers on {where} (connection refused): nginx is not running or not listening on port {port} "
                f"there (check DEPLOY_LISTEN and DEPLOY_HTTP_PORT), or a firewall rejects it: {FIREWALLS}")
    if probe.outcome == "timeout":
        return (f"no answer from {where} (connection timed out): the port is filtered by a firewall: {FIREWALLS}. "
                f"Port {port} must be open to the whole internet: the CA validates from several places")
    if probe.outcome == "unreachable":
        return f"cannot reach {where}: {probe.error}. Check the server's network and the domain's address"
    if 300 <= probe.status < 400:
        return (f"{url}<token> is redirected ({probe.status} to {probe.location or '?'}) instead of answering the token: "
                "another nginx server block or a redirect rule takes the challenge path. "
                f"Exempt /.well-known/acme-challenge/ from the redirect (the vhost pelican-https installs does)")
    if probe.status == 404:
        return (f"{url}<token> answered 404: nginx does not serve the challenge folder for {domain}. The vhost from "
                f"pelican-https is not loaded for this name (check that nginx includes it and that no other server "
                f"block with server_name {domain} on port {port} comes first)")
    if probe.status == 200:
        return (f"{url}<token> answered 200 with something else than the token ({probe.body[:60]!r}): the site (or another "
                f"server block) answers instead of the challenge folder. Check the nginx server blocks for {domain} on port {port}")
    return f"{url}<token> answered {probe.status} instead of the token ({probe.body[:60]!r}). Check nginx's error log"


def _seen(probe: Probe) -> str:
    if probe.outcome == "http":
        return f"it answered {probe.status}"
    return {"refused": "connection refused", "timeout": "connection timed out"}.get(probe.outcome, probe.error)


def _list(addresses: set[str]) -> str:
    return ", ".join(sorted(addresses)) or "this server's address"


# --- the check ------------------------------------------------------------------------------

def check(settings, server_addresses: set[str], token: str, expected: str) -> None:
    """Fetch the token for every domain at every address the CA would use; raise with the reasons
    if any fetch does not return it."""
    problems = [p for domain in settings.domains if (p := _problem(settings, domain, server_addresses, token, expected))]
    if problems:
        raise failed(problems)


def check_domain(settings, domain: str, server_addresses: set[str], token: str, expected: str) -> None:
    problem = _problem(settings, domain, server_addresses, token, expected)
    if problem:
        raise failed([problem])


def _problem(settings, domain: str, server_addresses: set[str], token: str, expected: str) -> str | None:
    addresses = resolve(domain, settings.dns_server)
    probes = [fetch(domain, address, settings.http_port, token, expected) for address in addresses]
    return verdict(domain, addresses, probes, server_addresses, settings.http_port)


def verdict(domain: str, addresses: list[str], probes: list[Probe], server_addresses: set[str], port: int) -> str | None:
    """The first real problem among the probes of one domain, or None. Pure.

    An address this machine cannot reach at all (IPv6 from an IPv4-only CI runner) is not a
    problem of the server: it is skipped with a warning, and the CA will check it itself."""
    if not addresses:
        return explain(None, domain, addresses, server_addresses, port)
    for probe in probes:
        if probe.outcome == "uncheckable":
            log.warning("cannot check http://%s/.well-known/acme-challenge/ at %s: %s; the CA will try it",
                        domain, probe.address, probe.error)
        elif probe.outcome != "token":
            return explain(probe, domain, addresses, server_addresses, port)
    return None


def failed(problems: list[str]) -> ChallengeCheckFailed:
    return ChallengeCheckFailed(
        "checked the challenge URL the way the CA will, before asking it: " + "; ".join(problems)
        + ". The CA was not asked, so no failed validation was spent (Let's Encrypt allows 5 per hour)")


def server_addresses(settings, ssh_peer: str | None) -> set[str]:
    """This server's addresses as the client knows them: the SSH peer, DEPLOY_HOST resolved, DEPLOY_VERIFY_ADDRESS."""
    found = {a for a in (ssh_peer, settings.verify_address) if a}
    try:
        found |= {info[4][0] for info in socket.getaddrinfo(settings.host, None, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        pass
    return found
