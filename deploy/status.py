"""`fab status`: what each host has and what the next deploy will do, without changing anything.

First one summary line per host (release, serial, valid until, next renewal), then per host: the
live release, and per domain the certificate covering it (issuer, serial, valid until); the next
renewal time and why (ARI window or lifetime rule); the CA directory; a deploy left half done.
``report()`` and ``report_all()`` are pure functions of what ``collect()`` read (one SSH round
trip per host, at once, and the CA's renewal info when it offers ARI; nothing is cached or
changed). The decision is the deploy's own (``certificates.decide_group``): a live certificate
whose files are unreadable, or a certificate staged by a deploy that failed later, count as they
will at the next deploy.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from cryptography import x509

from . import ari
from .certificates import decide_group
from .connection import connect_all
from .renewal import Decision, RenewalInfo, ari_cert_id_or_none, wants_renewal_info
from .settings import DeploySettings
from .state import HostState, read


class Status(NamedTuple):
    host: str
    state: HostState
    decision: Decision
    renewal_info: RenewalInfo | None
    now: dt.datetime


def collect(settings: DeploySettings, now: dt.datetime | None = None) -> list[Status]:
    now = now or dt.datetime.now(dt.timezone.utc)
    servers = connect_all(settings)
    try:
        states = servers.each_or_raise(read, settings, stage="reading the server's state")
    finally:
        servers.close()
    found = []
    for server, st in states.items():
        info = st.renewal_info if st.live and st.renewal_info and st.renewal_info.cert_id == ari_cert_id_or_none(
            st.live.certificate) else None
        if wants_renewal_info(st.live, settings, st.renewal_info, now):
            verify = str(settings.acme_ca_bundle) if settings.acme_ca_bundle else True
            info = ari.fetch_renewal_info(settings, st.live.certificate, verify, now) or info
        found.append(Status(str(server), st, host_decision(server, st, settings, now, info), info, now))
    return found


def host_decision(server, state: HostState, settings: DeploySettings, now: dt.datetime,
                  info: RenewalInfo | None) -> Decision:
    """What the next deploy decides for this host's certificate: the deploy's own decision."""
    return decide_group({server: state}, settings, now, info).decision


def report_all(statuses: list[Status], settings: DeploySettings) -> str:
    """One summary line per host, then each host's report."""
    summary = "\n".join(summary_line(s) for s in statuses)
    if len(statuses) == 1:
        return summary + "\n\n" + report(statuses[0], settings)
    return summary + "\n\n" + "\n\n".join(f"[{s.host}]\n" + report(s, settings) for s in statuses)


def summary_line(status: Status) -> str:
    """``HOST: release ID, serial S, valid until T, next renewal T``. Pure."""
    state, decision = status.state, status.decision
    if state.live is not None:
        cert = state.live.certificate
        certificate = f"serial {cert.serial_number:x}, valid until {_t(cert.not_valid_after_utc)}"
    elif state.live_id:
        certificate = f"certificate {state.live_id} unreadable"
    else:
        certificate = "no certificate"
    renewal = _t(decision.renew_from) if decision.action == "keep" else f"at the next deploy ({decision.action})"
    return f"{status.host}: release {state.current or 'none'}, {certificate}, next renewal {renewal}"


def report(status: Status, settings: DeploySettings) -> str:
    """The text `fab status` prints. Pure."""
    installed, decision = status.state.live, status.decision
    lines = [f"CA directory: {settings.acme_directory}"]
    if installed is None and status.state.live_id:
        then = ("the next deploy issues a new one" if decision.needs_order else
                "the next deploy puts a certificate staged earlier live instead, with no new order")
        lines.append(f"certificate {status.state.live_id}: files unreadable on the server; nginx may still serve it "
                     f"from memory; {then}")
        names: list[str] = []
    elif installed is None:
        lines.append("certificate: none installed yet")
        names = []
    else:
        cert = installed.certificate
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        issuer = cert.issuer.rfc4514_string()
        for domain in settings.domains:
            if domain in names:
                lines.append(f"{domain}: issuer {issuer}, serial {cert.serial_number:x}, "
                             f"valid until {_t(cert.not_valid_after_utc)}")
            else:
                lines.append(f"{domain}: not covered by the installed certificate (the next deploy issues one that is)")
        lines.append(f"key: {installed.key_type}, profile: {installed.profile or 'CA default'}")
    if decision.action == "keep":
        why = ("the CA's renewal window (ARI)" if decision.basis == "ari" else "the lifetime rule")
        lines.append(f"next renewal: {_t(decision.renew_from)} ({why})")
    else:
        lines.append(f"next renewal: at the next deploy or `fab renew` ({decision.action}: {decision.reason})")
    lines.append(f"decision now: {decision.action}: {decision.reason}")
    if status.renewal_info is not None:
        info = status.renewal_info
        lines.append(f"ARI: window {_t(info.window_start)} to {_t(info.window_end)}, ask again after {_t(info.retry_at)}"
                     + (f", explanation {info.explanation_url}" if info.explanation_url else ""))
    releases = status.state.releases
    if status.state.current:
        lines.append(f"last deploy: release {status.state.current} ({len(releases)} release(s) kept)")
    else:
        lines.append("last deploy: none (no live release)")
    if status.state.journal_verified:
        lines.append("a verified deploy was not finished: the next deploy finishes it (prunes), it does not undo it")
    elif status.state.journal or status.state.order_pending:
        lines.append("an interrupted deploy left changes pending: the next deploy puts them back first")
    return "\n".join(lines)


def _t(when: dt.datetime | None) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else "unknown"
