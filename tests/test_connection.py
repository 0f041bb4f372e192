"""Commands over Fabric's connection (deploy/connection.py), on the real sandbox sshd."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy.connection import connect, shell
from deploy.errors import RemoteCommandFailed


def test_output_is_complete_with_several_sessions_at_once(make_blog):
    """The deploy runs sessions side by side on one connection (nginx's version and the
    certificate check, while the lock shell holds its own). sshd may send a command's exit status
    before the last of its output: reading up to the exit status lost output (47 of 400 here, before
    the fix); reading to the channel's EOF loses none."""
    settings = make_blog("connection-sessions").settings()
    conn = connect(settings)
    try:
        script = "printf 'first line\\n'; printf 'to stderr\\n' >&2; head -c 100000 /dev/zero | tr '\\0' x; echo; echo last"
        with ThreadPoolExecutor(max_workers=4) as pool:
            outputs = list(pool.map(lambda _: shell(conn, script), range(200)))
    finally:
        conn.close()
    expected = "first line\n" + "x" * 100000 + "\nlast\n"
    assert [i for i, out in enumerate(outputs) if out != expected] == []


def test_a_finished_command_never_ends_the_connection(make_blog, monkeypatch):
    """paramiko builds a channel's EOF under the channel's lock and sends it after: a thread
    switched out in between (another thread holding the GIL) sent it once sshd had closed that
    channel, and sshd dropped the whole connection ("ieof packet referred to nonexistent channel"),
    cutting off the certificate check beside it with exit -1. The pause below stands for that switch."""
    import io
    import time

    import paramiko

    def late_shutdown(channel, how):
        with channel.lock:
            message = channel._send_eof()
        time.sleep(0.3)
        if message is not None:
            channel.transport._send_user_message(message)
    monkeypatch.setattr(paramiko.Channel, "shutdown", late_shutdown)
    settings = make_blog("connection-late-eof").settings()
    conn = connect(settings)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            slow = pool.submit(shell, conn, "echo one; sleep 0.8; echo two")
            quick = pool.submit(shell, conn, "true")
            failing = pool.submit(shell, conn, "echo reason >&2; exit 3", stdin=io.BytesIO(b"unread input"))
            assert quick.result() == ""
            with pytest.raises(RemoteCommandFailed, match=r"\(exit 3\): reason"):
                failing.result()
            assert slow.result() == "one\ntwo\n"
        assert conn.client.get_transport().is_active()
    finally:
        conn.close()
