"""Commands over Fabric's connection (deploy/connection.py), on the real sandbox sshd."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from deploy.connection import connect, shell


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
