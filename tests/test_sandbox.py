"""The sandbox itself: starts real services and leaves nothing behind when stopped."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from pathlib import Path

from deploy.sandbox import authorized_keys_dir, start_sandbox, stop_sandbox


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_start_gives_working_services_and_stop_removes_everything():
    sb = start_sandbox()
    try:
        pids = dict(sb.pids)
        assert set(pids) == {"challtestsrv", "pebble", "sshd", "nginx"}
        assert all(_alive(pid) for pid in pids.values())
        # sshd answers with the host key in known_hosts, and the deploy user may run exactly nginx -t.
        ssh = ["ssh", "-i", str(sb.ssh_key), "-o", f"UserKnownHostsFile={sb.known_hosts}", "-o", "StrictHostKeyChecking=yes",
               "-o", "BatchMode=yes", "-p", str(sb.ssh_port), f"{sb.ssh_user}@{sb.ssh_host}"]
        ok = subprocess.run([*ssh, " ".join(sb.nginx_command) + " -t"], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert "test is successful" in ok.stderr
        denied = subprocess.run([*ssh, "sudo -n /usr/bin/id"], capture_output=True, text=True, timeout=30)
        assert denied.returncode != 0  # no other sudo
        assert (sb.ssh_key.stat().st_mode & 0o777) == 0o600
        pwd.getpwnam(sb.ssh_user)
        sudoers = [p for p in Path("/etc/sudoers.d").iterdir() if sb.ssh_user in p.name]
        assert sudoers
        # sshd runs with StrictModes (its default): the key file is not below world-writable /tmp.
        assert "StrictModes yes" in (sb.root / "sshd" / "sshd_config").read_text().splitlines()
        assert (authorized_keys_dir(sb) / sb.ssh_user).is_file()
    finally:
        stop_sandbox(sb)
    assert not any(_alive(pid) for pid in pids.values())
    assert not sb.root.exists()
    assert not authorized_keys_dir(sb).exists()
    assert not [p for p in Path("/etc/sudoers.d").iterdir() if sb.ssh_user in p.name]
    try:
        pwd.getpwnam(sb.ssh_user)
        raise AssertionError("the deploy user is still there")
    except KeyError:
        pass
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", sb.ssh_port)) != 0
