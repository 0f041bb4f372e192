"""The sandbox itself: starts real services and leaves nothing behind when stopped."""

from __future__ import annotations

import datetime
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.diagnose import resolve
from deploy.sandbox import authorized_keys_dir, start_sandbox, stop_sandbox
from deploy.settings import settings_from_mapping

# Every test here starts a sandbox (some by start_sandbox itself) or uses one: root.
pytestmark = pytest.mark.sandbox


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
        # One host: the settings name it alone, nginx listens on loopback only, paths are the paths.
        values = sb.deploy_settings()
        assert (values["DEPLOY_HOST"], values["DEPLOY_PORT"]) == ("127.0.0.1", sb.ssh_port) and "DEPLOY_HOSTS" not in values
        assert values["DEPLOY_LISTEN"] == ["127.0.0.1"] and values["DEPLOY_VERIFY_ADDRESS"] == "127.0.0.1"
        assert [h.address for h in sb.hosts] == ["127.0.0.1"] and sb.hosts[0].local_path(sb.nginx_prefix) == sb.nginx_prefix
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


# --- several servers (issue 16): one group, each host its own sshd, nginx, address and files ---

def _ssh(sb, host, command: str, known_hosts=None) -> subprocess.CompletedProcess:
    """The deploy user's command on ``host``, with strict host-key checking against the sandbox's known_hosts."""
    argv = ["ssh", "-i", str(sb.ssh_key), "-o", f"UserKnownHostsFile={known_hosts or sb.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-p", str(host.ssh_port), f"{sb.ssh_user}@{host.address}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_group_settings_name_every_host(sandbox3):
    values = sandbox3.deploy_settings("site")
    assert "DEPLOY_HOST" not in values and "DEPLOY_PORT" not in values
    assert values["DEPLOY_HOSTS"] == [f"{h.address}:{h.ssh_port}" for h in sandbox3.hosts]
    assert len({h.address for h in sandbox3.hosts}) == 3 and sandbox3.hosts[0].address == "127.0.0.1"
    assert len({h.ssh_port for h in sandbox3.hosts}) == 1
    settings = settings_from_mapping(values | {"SITEURL": "https://blog.test"})
    assert settings.hosts == tuple((h.address, h.ssh_port) for h in sandbox3.hosts)
    assert settings.listen_addresses == ("*",)  # one vhost text for all; each nginx has its own network


def test_each_host_answers_with_its_own_host_key(sandbox3, tmp_path):
    lines = sandbox3.known_hosts.read_text().splitlines()
    assert lines == [f"[{h.address}]:{h.ssh_port} {h.host_key}" for h in sandbox3.hosts]
    assert len({h.host_key for h in sandbox3.hosts}) == 3
    for host in sandbox3.hosts:
        result = _ssh(sandbox3, host, "echo $SSH_CONNECTION")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[2:] == [host.address, str(host.ssh_port)]  # the server side of the connection
    # Strict checking is real: host 1's key written down for host 2 is refused.
    wrong = tmp_path / "known_hosts"
    h1, h2 = sandbox3.hosts[1], sandbox3.hosts[2]
    wrong.write_text(f"[{h2.address}]:{h2.ssh_port} {h1.host_key}\n")
    refused = _ssh(sandbox3, h2, "true", known_hosts=wrong)
    assert refused.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr


def test_each_host_has_its_own_files_at_the_same_paths(sandbox3):
    remote_root = Path(sandbox3.deploy_settings("site")["DEPLOY_REMOTE_ROOT"])
    probe = remote_root / "challenges" / "only-on-host-1.txt"
    h0, h1, h2 = sandbox3.hosts
    assert h0.local_path(probe) == probe
    h1.local_path(probe).write_text("host 1\n")
    try:
        assert not h2.local_path(probe).exists() and not h0.local_path(probe).exists()
        # What the test process sees through local_path is what the deploy user sees on each host.
        assert _ssh(sandbox3, h1, f"cat {probe}").stdout == "host 1\n"
        for host in (h0, h2):
            seen = _ssh(sandbox3, host, f"cat {probe}")
            assert seen.returncode != 0 and "No such file" in seen.stderr
        # A file the deploy user writes on host 2 lands in host 2's copy only.
        state = Path(sandbox3.deploy_settings("site")["DEPLOY_STATE_DIR"])
        assert _ssh(sandbox3, h2, f"echo two > {state}/written-on-2").returncode == 0
        assert h2.local_path(state / "written-on-2").read_text() == "two\n"
        assert not h0.local_path(state / "written-on-2").exists() and not h1.local_path(state / "written-on-2").exists()
        h2.local_path(state / "written-on-2").unlink()
        # nginx's include link is absolute: local_path follows it into the host's own copy.
        link = sandbox3.nginx_include_dir / "site.conf"
        assert h2.local_path(link / "x").parent == h2.local_path(state / "nginx" / "vhost.conf")
    finally:
        h1.local_path(probe).unlink()
    # No bind mount leaked into this machine's own mount table.
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(sandbox3.root) not in mounts


def test_nginx_t_over_ssh_tests_that_hosts_own_configuration(sandbox3):
    nginx_t = " ".join(sandbox3.nginx_command) + " -t"
    h2 = sandbox3.hosts[2]
    h2.break_nginx()
    try:
        results = [_ssh(sandbox3, host, nginx_t) for host in sandbox3.hosts]
        assert results[0].returncode == 0 and results[1].returncode == 0, results[1].stderr
        assert results[2].returncode != 0
        assert "this_is_not_an_nginx_directive" in results[2].stderr
        assert all(_alive(h.pids["nginx"]) for h in sandbox3.hosts)  # nothing reloaded, nothing stopped
    finally:
        h2.repair_nginx()
    assert _ssh(sandbox3, h2, nginx_t).returncode == 0


def test_one_host_down_and_up_again(sandbox3):
    h0, h1, h2 = sandbox3.hosts
    h1.stop_sshd()
    try:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((h1.address, h1.ssh_port)) != 0
        assert _ssh(sandbox3, h0, "true").returncode == 0 and _ssh(sandbox3, h2, "true").returncode == 0
    finally:
        sandbox3.heal()
    assert _ssh(sandbox3, h1, "true").returncode == 0  # same key: known_hosts still matches


def test_dns_answers_the_addresses_the_test_chooses(sandbox3):
    h2 = sandbox3.hosts[2]
    assert resolve("anything.sandbox.test", dns(sandbox3)) == ["127.0.0.1"]
    sandbox3.set_dns("two.sandbox.test", [h2.address])
    sandbox3.set_dns("all.sandbox.test", [h.address for h in sandbox3.hosts])
    try:
        assert resolve("two.sandbox.test", dns(sandbox3)) == [h2.address]
        assert resolve("all.sandbox.test", dns(sandbox3)) == sorted(h.address for h in sandbox3.hosts)
    finally:
        sandbox3.heal()
    assert resolve("two.sandbox.test", dns(sandbox3)) == ["127.0.0.1"]


def test_pebble_validates_http01_through_the_host_dns_names(sandbox3):
    """A name pointed only at host 2: Pebble's validation reaches host 2's nginx and no other host's.

    Set up as a deploy does: the administrator's script on every host, then, as the deploy user over
    SSH on host 2 alone, the key authorization in the challenge folder, a vhost serving it, `sudo
    nginx -t` and `-s reload`. Then a real ACME order (the acme library) against Pebble.
    """
    import josepy as jose
    from acme import challenges, client, crypto_util, errors, messages
    from deploy.acme_client import PatientNetwork

    h0, h1, h2 = sandbox3.hosts
    name = "h2probe.sandbox.test"
    values = sandbox3.add_site("h2probe")
    remote_root = Path(values["DEPLOY_REMOTE_ROOT"])
    vhost = Path(values["DEPLOY_STATE_DIR"]) / "nginx" / "vhost.conf"
    nginx = " ".join(sandbox3.nginx_command)

    account_key = ec.generate_private_key(ec.SECP256R1())
    # (Pebble rejects some good nonces on purpose: the deploy's network retries them)
    net = PatientNetwork(jose.JWKEC(key=account_key), alg=jose.ES256, verify_ssl=str(sandbox3.acme_ca_bundle),
                         user_agent="pelican-https-sandbox-test")

    acme = client.ClientV2(client.ClientV2.get_directory(sandbox3.acme_directory, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    order = acme.new_order(crypto_util.make_csr(key_pem, [name]))
    challb = next(c for c in order.authorizations[0].body.challenges if isinstance(c.chall, challenges.HTTP01))
    response, key_authorization = challb.response_and_validation(net.key)
    token = challb.chall.encode("token")
    path = f"/.well-known/acme-challenge/{token}"

    sandbox3.set_dns(name, [h2.address])
    server = (f"server {{\\n    listen *:{sandbox3.http_port};\\n    server_name {name};\\n"
              f"    location /.well-known/acme-challenge/ {{ root {remote_root / 'challenges'}; }}\\n}}\\n")
    try:
        old_workers = h2.nginx_workers()
        assert old_workers, "host 2's nginx workers not found"
        prepared = _ssh(sandbox3, h2, f"printf '%s' '{key_authorization}' > {remote_root}/challenges{path}"
                                      f" && printf '{server}' > {vhost} && {nginx} -t && {nginx} -s reload")
        assert prepared.returncode == 0, prepared.stderr
        # The reload is asynchronous, and until the old workers exit they still accept some of the
        # connections (Pebble makes three at once) with the old configuration.
        h2.wait_for_reload(old_workers)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((h2.address, sandbox3.http_port), timeout=2) as s:
                    s.sendall(f"GET {path} HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
                    if s.recv(4096).split(b"\r\n\r\n", 1)[-1] == key_authorization.encode():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "host 2's nginx did not serve the challenge after the reload"
            time.sleep(0.05)

        def served(host):  # the challenge requests in a host's own nginx access log
            log = host.local_path(sandbox3.nginx_prefix / "logs" / "access.log")
            return [line for line in (log.read_text() if log.exists() else "").splitlines() if path in line]

        acme.answer_challenge(challb, response)
        try:
            order = acme.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=60))
        except errors.ValidationError as exc:
            raise AssertionError(f"Pebble did not validate through host 2: {exc.failed_authzrs}; "
                                 f"requests seen by each host: {[served(h) for h in sandbox3.hosts]}") from exc
        cert = x509.load_pem_x509_certificate(order.fullchain_pem.encode())
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [name]
        assert [line for line in served(h2) if "Pebble" in line]  # Pebble's VA fetched it from host 2
        assert served(h0) == [] and served(h1) == []
    finally:
        _ssh(sandbox3, h2, f": > {vhost} && {nginx} -t && {nginx} -s reload")
        sandbox3.heal()


def test_group_start_and_stop_removes_namespaces_and_everything():
    sb = start_sandbox(hosts=3)
    try:
        h1, h2 = sb.hosts[1:]
        assert set(sb.pids) == {"challtestsrv", "pebble", "sshd", "nginx"}  # host 0 and the shared ones
        for host in (h1, h2):
            assert set(host.pids) == {"namespace", "sshd", "nginx"} and all(_alive(p) for p in host.pids.values())
            assert host.netns and host.netns != os.readlink("/proc/self/ns/net")
            # sshd, nginx and the deploy user's sessions run in the host's own namespaces.
            assert os.readlink(f"/proc/{host.pids['nginx']}/ns/net") == host.netns
            assert os.readlink(f"/proc/{host.pids['sshd']}/ns/mnt") == os.readlink(f"/proc/{host.pids['namespace']}/ns/mnt")
            assert Path(f"/sys/class/net/{host.veth}").exists()
        netns = [h.netns for h in (h1, h2)]
        veths = [h.veth for h in (h1, h2)]
        holders = [h.pids["namespace"] for h in (h1, h2)]
    finally:
        stop_sandbox(sb)
    assert not sb.root.exists()
    assert not any(_alive(pid) for pid in holders)
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _netns(p) in netns]
    assert not any(Path(f"/sys/class/net/{v}").exists() for v in veths)
    assert not authorized_keys_dir(sb).exists()
    assert not [p for p in Path("/etc/sudoers.d").iterdir() if sb.ssh_user in p.name]
    try:
        pwd.getpwnam(sb.ssh_user)
        raise AssertionError("the deploy user is still there")
    except KeyError:
        pass


def _netns(proc: Path) -> str:
    try:
        return os.readlink(proc / "ns" / "net")
    except OSError:
        return ""


def test_command_line_prints_what_a_client_needs_and_no_environment():
    """Issue 14: `python -m deploy.sandbox` printed the whole environment (any secret in it)."""
    secret = "s3cr3t-" + os.urandom(8).hex()
    env = dict(os.environ, PELICAN_HTTPS_TEST_SECRET=secret)
    proc = subprocess.Popen([sys.executable, "-m", "deploy.sandbox", "--hosts", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[0]
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert secret not in out and "PATH" not in out
    export = next(line for line in lines if line.startswith("export PELICAN_HTTPS_SANDBOX="))
    settings_file = Path(export.split("=", 1)[1].strip())
    assert "host 1: 10." in out
    assert not settings_file.exists()  # SIGTERM stopped the sandbox and removed its folder


def dns(sb) -> tuple[str, int]:
    """The sandbox's DNS server as deploy.diagnose.resolve takes it (settings.dns_server's form)."""
    host, port = sb.dns_server.rsplit(":", 1)
    return host, int(port)
