"""What the commit's failure paths say, with stand-in hosts (no sandbox, no root).

``FakeServer`` answers ``script`` from a table: each (script, action) either returns output or
raises the error a real host gives (a script's non-zero exit, or a dropped SSH connection). The
same paths run on the real sandbox in test_group.py and test_faults.py; here every outcome
combination is cheap to reach.
"""

from __future__ import annotations

import logging

import pytest

from deploy import nginx, releases
from deploy.connection import Servers
from deploy.errors import CertificateError, ConnectionFailed, DeployError, RemoteCommandFailed
from deploy.settings import DeploySettings, settings_from_mapping


class FakeServer:
    def __init__(self, name: str, fails: dict[tuple[str, str], Exception] | None = None):
        self.name, self.fails, self.calls = name, fails or {}, []

    def __str__(self) -> str:
        return self.name

    def call(self, func, *args):
        return func(self, *args)

    def script(self, name: str, *args: str, stdin=None, what: str = "") -> bytes:
        self.calls.append((name, args[0]))
        exc = self.fails.get((name, args[0]))
        if exc is not None:
            raise exc
        return b""


@pytest.fixture
def settings() -> DeploySettings:
    return settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy"})


def group(*servers: FakeServer) -> Servers:
    return Servers.from_connections(list(servers))


DROPPED = ConnectionFailed("the SSH connection to web2 broke while running commit: Socket is closed")
RELOAD_FAILED = RemoteCommandFailed("committing failed on web2 (exit 4): nginx: [error] invalid PID", 4)


def test_a_commit_that_fails_on_a_dropped_connection_says_that_host_is_unknown(settings):
    web1, web2, web3 = FakeServer("web1"), FakeServer("web2", {("commit", "apply"): DROPPED, ("commit", "undo"): DROPPED}), FakeServer("web3")
    with pytest.raises(releases.CommitFailed) as failed:
        releases.commit(group(web1, web2, web3), settings, {s: releases.Change(release_id="R2") for s in (web1, web2, web3)})
    message = str(failed.value)
    assert "every host serves what it served before" not in message
    assert "putting it back failed on web2: what it serves is unknown; the others serve what they served before" in message
    assert "web2: failed: the SSH connection to web2 broke" in message
    assert "State unknown, its journal kept: the next deploy puts it back before anything else" in message
    assert "web1: switched; put back" in message and "web3: switched; put back" in message
    assert "`fab deploy` again" in message and "`fab rollback`" in message
    assert failed.value.back == [web1, web3]
    # The failed host was asked to put itself back too: its script may have run before the connection dropped.
    assert ("commit", "undo") in web2.calls


def test_a_commit_put_back_everywhere_says_so(settings):
    web1 = FakeServer("web1")
    web2 = FakeServer("web2", {("commit", "apply"): RELOAD_FAILED})
    with pytest.raises(releases.CommitFailed) as failed:
        releases.commit(group(web1, web2), settings, {s: releases.Change(release_id="R2") for s in (web1, web2)})
    message = str(failed.value)
    assert message.startswith("the commit failed on web2, so no host switches: every host serves what it served before.")
    assert "web2: failed: nginx -t passed on web2 but `nginx -s reload` failed" in message, message
    assert "State unknown" not in message
    assert failed.value.back == [web1, web2]


def test_a_finish_that_fails_says_the_site_is_live_and_what_did_not_run(settings):
    web1, web2 = FakeServer("web1"), FakeServer("web2", {("commit", "finish"): DROPPED})
    with pytest.raises(DeployError) as failed:
        releases.finish(group(web1, web2), settings, live="The new site is live and verified on every host")
    message = str(failed.value)
    assert message.startswith("finishing failed on web2:")
    assert "The new site is live and verified on every host; pruning old releases did not run on web2" in message
    assert "the next deploy finishes it (it is not undone)" in message


@pytest.mark.parametrize("others_recorded", [True, False])
def test_recording_the_verification_that_fails_says_what_the_next_deploy_does(settings, others_recorded):
    web2 = FakeServer("web2", {("commit", "verified"): DROPPED})
    web1 = FakeServer("web1", {} if others_recorded else {("commit", "verified"): DROPPED})
    with pytest.raises(DeployError) as failed:
        releases.mark_verified(group(web1, web2), settings, "The new site is live and verified on every host")
    message = str(failed.value)
    assert "The new site is live and verified on every host" in message
    if others_recorded:
        assert message.startswith("recording the verification failed on web2:")
        assert "the next deploy finishes the switch on every host" in message
    else:
        assert "the next deploy first puts the previous site back on every host" in message


def test_a_challenge_path_that_cannot_be_closed_is_named_in_the_orders_error(settings, caplog):
    web1 = FakeServer("web1")
    web2 = FakeServer("web2", {("challenge-vhost", "restore"): DROPPED})
    opened = nginx.Opened({web1: ["new.example.com"], web2: ["new.example.com", "www.new.example.com"]}, {})
    with caplog.at_level(logging.ERROR, logger="pelican_https.deploy"):
        with pytest.raises(CertificateError) as failed:
            try:
                raise CertificateError("the ACME order failed: rejected")
            finally:
                nginx.close_challenge_path(group(web1, web2), settings, opened)
    message = str(failed.value)
    assert message.startswith("the ACME order failed: rejected\n")
    assert ("The challenge path for new.example.com, www.new.example.com is still open on web2 "
            f"({DROPPED}); the next deploy removes it.") in message
    assert "web1" not in message
    assert "[web2] closing the challenge path failed" in caplog.text


def test_a_challenge_path_that_cannot_be_closed_after_a_good_order_is_logged(settings, caplog):
    web1 = FakeServer("web1", {("challenge-vhost", "restore"): DROPPED})
    with caplog.at_level(logging.ERROR, logger="pelican_https.deploy"):
        nginx.close_challenge_path(group(web1), settings, nginx.Opened({web1: ["new.example.com"]}, {}))
    assert "[web1] closing the challenge path failed" in caplog.text
