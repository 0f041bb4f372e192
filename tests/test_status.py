"""`fab status`'s text, as a pure function of what was read (no sandbox): the summary lines, and a
live certificate whose files cannot be read (issue 13: it said "no certificate installed yet")."""

from __future__ import annotations

import dataclasses
import datetime as dt

from test_renewal import CERT_90, DIRECTORY, DOMAINS, INSTALLED, T0, settings as make_settings

from deploy import status
from deploy.renewal import Installed, decide, lifetime_renewal_start
from deploy.state import HostState
from deploy.vhost import NginxBuild

RELEASE = "20260101T000000000000Z"


def state(**fields) -> HostState:
    values = dict(build=NginxBuild((1, 22, 1), (3, 0, 0)), current=RELEASE, current_is_link=True, releases=(RELEASE,),
                  vhost_text="", served=(), live_id=INSTALLED.cert_id, live=INSTALLED, staged=None, renewal_info=None,
                  manifest_bytes=None, journal="", order_pending=False)
    return HostState(**(values | fields))


def read(host: str, st: HostState, now: dt.datetime = T0 + dt.timedelta(days=1)) -> status.Status:
    """What collect() makes of one host's state (without the network: no ARI here)."""
    return status.Status(host, st, status.host_decision(host, st, make_settings(), now, None), None, now)


def test_an_unreadable_live_certificate_is_named_not_called_missing():
    """fullchain.pem damaged on the server: tls/live still names the certificate nginx serves from memory."""
    damaged = read("203.0.113.5", state(live=None, live_id="20260101-abcd"))
    text = status.report(damaged, make_settings())
    assert ("certificate 20260101-abcd: files unreadable on the server; nginx may still serve it from memory; "
            "the next deploy issues a new one") in text
    assert "none installed" not in text and "no certificate installed" not in text
    assert "decision now: issue: the live certificate 20260101-abcd on 203.0.113.5 is unreadable or incomplete" in text
    summary = status.report_all([damaged], make_settings()).splitlines()[0]
    assert summary == f"203.0.113.5: release {RELEASE}, certificate 20260101-abcd unreadable, next renewal at the next deploy (issue)"


def test_an_unreadable_live_certificate_with_a_usable_staged_one_needs_no_order():
    staged = dataclasses.replace(INSTALLED, cert_id="staged-1")
    text = status.report(read("web1", state(live=None, live_id="gone-1", staged=staged)), make_settings())
    assert "certificate gone-1: files unreadable on the server; nginx may still serve it from memory; the next deploy " \
           "puts a certificate staged earlier live instead, with no new order" in text
    assert "decision now: keep: certificate staged-1 (staged by an earlier deploy)" in text
    assert f"next renewal: {lifetime_renewal_start(CERT_90):%Y-%m-%d %H:%M:%S} UTC (the lifetime rule)" in text


def test_nothing_installed_yet_says_so():
    text = status.report(read("web1", state(live=None, live_id="", current=None, releases=())), make_settings())
    assert "certificate: none installed yet" in text and "last deploy: none (no live release)" in text


def test_one_summary_line_per_host_first():
    other = Installed(CERT_90, DIRECTORY, DOMAINS, "ec-p256", "id2", None, True)
    statuses = [read("web1.example.com", state()), read("web2.example.com:2222", state(live=other, live_id="id2")),
                read("web3.example.com", state(live=None, live_id="", current=None, releases=()))]
    text = status.report_all(statuses, make_settings())
    renew = decide(INSTALLED, make_settings(), T0 + dt.timedelta(days=1)).renew_from
    until = f"{CERT_90.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    assert text.splitlines()[:4] == [
        f"web1.example.com: release {RELEASE}, serial 1234abcd, valid until {until}, next renewal {renew:%Y-%m-%d %H:%M:%S} UTC",
        f"web2.example.com:2222: release {RELEASE}, serial 1234abcd, valid until {until}, next renewal {renew:%Y-%m-%d %H:%M:%S} UTC",
        "web3.example.com: release none, no certificate, next renewal at the next deploy (issue)",
        ""]
    assert text.count(f"last deploy: release {RELEASE}") == 2  # the per-host blocks follow, as before
    assert "[web2.example.com:2222]\nCA directory:" in text


def test_a_pending_journal_says_what_the_next_deploy_does_with_it():
    """A commit cut short is put back by the next deploy; one marked verified is finished, never undone."""
    cut = status.report(read("web1", state(journal="prev_current=a\n")), make_settings())
    assert "an interrupted deploy left changes pending: the next deploy puts them back first" in cut
    verified = status.report(read("web1", state(journal="prev_current=a\nverified=yes\n")), make_settings())
    assert "a verified deploy was not finished: the next deploy finishes it (prunes), it does not undo it" in verified
    assert "puts them back" not in verified
    assert "pending" not in status.report(read("web1", state()), make_settings())
