"""A real server on this machine: Pebble (ACME) + its DNS, sshd with a deploy user, nginx.

``start_sandbox()`` starts everything under a fresh temporary folder, on free ports, and returns
a ``Sandbox`` with what a client needs; ``stop_sandbox()`` stops every process it started (by
PID) and removes what it made (folder, user, sudoers file, namespaces). The demo, the tests (as
session fixtures) and a blogger rehearsing a deploy all use it.

It needs root (it creates the deploy user and runs sshd) and the Debian packages
pebble, nginx, openssh-server and sudo. The server side is prepared by the same one-time
set-up script a real server's administrator runs (``server_setup.admin_script``), so the
sandbox is one more target, not a special case.

Several servers: ``start_sandbox(hosts=3)`` starts a group of hosts behind one Pebble and one DNS.
Each host has its own sshd, its own nginx, its own address and its own files, while the ports and
every absolute path are the same on all of them, as on a real group of servers deployed with one
set of settings (``DEPLOY_REMOTE_ROOT``, ``DEPLOY_STATE_DIR``, ``DEPLOY_NGINX`` and the vhost text
are shared by the group):

- Host 0 is this machine as in a one-host sandbox: 127.0.0.1, the paths as they are.
- Host i (i >= 1) lives in a network namespace and a mount namespace of its own, held open by one
  ``unshare --net --mount ... sleep infinity`` process; its sshd and nginx are started inside them
  with ``nsenter``, so the deploy user's sessions, ``sudo nginx -t``/``-s reload`` and nginx itself
  all see that host's network and files. Network: a veth pair, ``10.A.B.1`` on this side and
  ``10.A.B.(i+1)`` inside (point-to-point /32 addresses; A.B is chosen per sandbox so that two
  sandboxes never share addresses and no address of this machine is touched). Files: the host's
  copies ``root/hosts/<i>/{srv,var,nginx,home}`` are bind-mounted over ``root/{srv,var,nginx,home}``
  inside its mount namespace; ``SandboxHost.local_path`` maps a server path to the copy the test
  process sees.

  Why a network namespace and not just 127.0.0.(i+1): the vhost text is the same on every host, so
  its ``listen`` lines are too. Hosts sharing one network cannot all bind the same ports (nginx
  cannot bind another host's address, and ``*:PORT`` can be bound once); in namespaces each nginx
  listens on ``*`` like on a real server (a group's ``DEPLOY_LISTEN`` is ``["*"]``). A 127.x address
  cannot be routed into a namespace without changing this machine's own loopback routes, which
  other sandboxes and tests use: hence 10.A.B.x, reachable only from this machine.
- With several hosts, host 0's nginx also listens on ``*`` (its ports are random and unused).

DNS: pebble-challtestsrv answers every name with 127.0.0.1 (host 0); ``set_dns(name, addresses)``
makes a name resolve to the addresses a test chooses, and Pebble validates HTTP-01 there.

Faults for tests, per host: ``stop_sshd()`` (new connections refused), ``stop_nginx()`` (its
``nginx -s reload`` then fails), ``break_nginx()`` (``nginx -t`` fails there, nothing reloaded);
each has its opposite, and ``Sandbox.heal()`` undoes all of them and every ``set_dns``.

``python -m deploy.sandbox [--hosts N]`` runs one until Ctrl-C (or SIGTERM) and prints what a
client needs: addresses, ports, the files to trust and the settings file (never the environment).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from .errors import SandboxError
from .server_setup import admin_script
from .settings import settings_from_mapping

SITE_NAME = "site"  # names the sandbox's folders; the blog's own domains come from its settings
NGINX = "/usr/sbin/nginx"
SSHD = "/usr/sbin/sshd"
REQUIRED = {"pebble": "pebble", "pebble-challtestsrv": "pebble", NGINX: "nginx", SSHD: "openssh-server", "sudo": "sudo"}
REQUIRED_FOR_GROUPS = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux"}
MAX_HOSTS = 8
# Server folders each extra host has its own copy of (bind-mounted over root/<name> in its namespace).
HOST_OWN_FOLDERS = ("srv", "var", "nginx", "home")
NET_LOCK = Path("/run/lock/pelican-https-sandbox-net.lock")  # two sandboxes never pick one subnet
BROKEN_CONF = "00-pelican-https-sandbox-broken.conf"
# The sandbox CA refuses to issue for this name (and its subdomains), as a real CA refuses a name
# its policy forbids: tests of an order the CA rejects use it.
CA_REFUSED_DOMAIN = "refused-by-the-ca.example.net"


@dataclass(eq=False)
class SandboxHost:
    """One server of the sandbox: its own sshd, nginx, address and files; same ports and paths as the others."""

    index: int
    address: str  # where its sshd and nginx answer (127.0.0.1 for host 0)
    ssh_port: int
    host_key: str = ""  # its sshd's public host key ("ssh-ed25519 AAAA...")
    files: Path | None = None  # root/hosts/<i>: this host's copies of HOST_OWN_FOLDERS (None: host 0, the paths themselves)
    pids: dict[str, int] = field(default_factory=dict)  # "namespace" (extra hosts), "sshd", "nginx"
    netns: str = ""  # its network namespace ("net:[inode]"); "" for host 0 (this machine's)
    veth: str = ""  # this side of its veth pair
    sandbox: Sandbox | None = field(default=None, repr=False)

    @property
    def ssh_target(self) -> str:
        """``address:port``, as DEPLOY_HOSTS lists it."""
        return f"{self.address}:{self.ssh_port}"

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a command on this host (in its namespaces); empty for host 0."""
        if self.files is None:
            return []
        return ["nsenter", f"--target={self.pids['namespace']}", "--net", "--mount", "--"]

    @property
    def sshd_dir(self) -> Path:
        return self._root / "sshd" if self.files is None else self.files / "sshd"

    @property
    def _root(self) -> Path:
        return self.sandbox.root

    def local_path(self, remote: str | os.PathLike) -> Path:
        """Where the test process reads and writes this host's copy of the server path ``remote``.

        Host 0: the path itself. Other hosts: paths below root/{srv,var,nginx,home} map to
        root/hosts/<i>/...; other paths (/etc/sudoers.d, root/client) are shared by all hosts.
        Symbolic links among the parents are followed as the host sees them (an absolute link
        such as nginx's sites-enabled/<site>.conf points into the host's own copy); the last
        component is left as it is, as lstat() does: os.readlink() of the result gives the link's text.
        """
        remote = Path(remote)
        if not remote.is_absolute():
            raise ValueError(f"local_path needs an absolute server path, got {remote}")
        if self.files is None:
            return remote
        pending = list(remote.parts[1:])
        done = Path("/")
        hops = 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                done = done.parent
                continue
            candidate = done / name
            mapped = self._map(candidate)
            if pending and mapped.is_symlink():
                hops += 1
                if hops > 40:
                    raise SandboxError(f"too many symbolic links below {remote} on host {self.index}")
                target = Path(os.readlink(mapped))
                if target.is_absolute():
                    done = Path("/")
                    pending = list(target.parts[1:]) + pending
                else:
                    pending = list(target.parts) + pending
                continue
            done = candidate
        return self._map(done)

    def _map(self, path: Path) -> Path:
        for name in HOST_OWN_FOLDERS:
            try:
                rest = path.relative_to(self._root / name)
            except ValueError:
                continue
            return self.files / name / rest
        return path

    def run(self, argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command as root on this host (inside its namespaces) and return its result."""
        result = subprocess.run([*self.enter, *argv], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise SandboxError(f"host {self.index} ({self.address}): {' '.join(argv)} exited {result.returncode}: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    # --- faults, for tests: each can be undone, and Sandbox.heal() undoes them all ---

    def stop_sshd(self) -> None:
        """Stop this host's sshd listener (new connections are refused; open sessions go on, as on
        a real server whose sshd is stopped)."""
        pid = self.pids.pop("sshd", None)
        if pid:
            _terminate(pid)

    def start_sshd(self) -> None:
        """Start this host's sshd again (same host key, port and address)."""
        if "sshd" in self.pids and _alive(self.pids["sshd"]):
            return
        d = self.sshd_dir
        self.pids["sshd"] = _spawn([*self.enter, SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")], d / "sshd.out")
        _wait_for_port(self.ssh_port, f"sshd of host {self.index}", d / "sshd.log", self.address)

    def stop_nginx(self) -> None:
        pid = self.pids.pop("nginx", None)
        if pid:
            _terminate(pid)

    def start_nginx(self) -> None:
        if "nginx" in self.pids and _alive(self.pids["nginx"]):
            return
        sb = self.sandbox
        pid_file = self.local_path(sb.nginx_prefix / "logs" / "nginx.pid")
        pid_file.unlink(missing_ok=True)
        self.run([NGINX, "-p", str(sb.nginx_prefix), "-c", "conf/nginx.conf"])  # nginx daemonizes
        _wait_for(lambda: pid_file.read_text().strip() or None, f"nginx of host {self.index}",
                  self.nginx_error_log)
        self.pids["nginx"] = int(pid_file.read_text())

    @property
    def nginx_error_log(self) -> Path:
        return self.local_path(self.sandbox.nginx_prefix / "logs" / "error.log")

    def nginx_workers(self) -> set[int]:
        """The worker processes of this host's nginx master (a reload replaces them; the old
        ones keep accepting connections, with the old configuration, until they exit)."""
        pid = self.pids.get("nginx")
        try:
            return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
        except (OSError, ValueError):
            return set()

    def reload_nginx(self) -> None:
        """``nginx -s reload`` as root, returning once nginx has applied it (see ``wait_for_reload``)."""
        old_workers = self.nginx_workers()
        self.run([NGINX, "-p", str(self.sandbox.nginx_prefix), "-c", "conf/nginx.conf", "-s", "reload"])
        self.wait_for_reload(old_workers)

    def wait_for_reload(self, old_workers: set[int], timeout: float = 30) -> None:
        """Wait until ``old_workers`` (``nginx_workers()`` before a reload) have exited: ``-s reload``
        only signals the master, and until they exit they answer some new connections with the old
        configuration. A loaded machine took seconds."""
        deadline = time.monotonic() + timeout
        while old_workers & self.nginx_workers():
            if time.monotonic() > deadline:
                raise SandboxError(f"host {self.index}: nginx's old workers {sorted(old_workers)} still run "
                                   f"{timeout:g} s after a reload; its log says:\n{self.nginx_error_log.read_text()[-3000:]}")
            time.sleep(0.02)

    def break_nginx(self) -> None:
        """Make ``nginx -t`` fail on this host only (a bad file in its include folder). The running
        nginx keeps serving: nothing is reloaded."""
        path = self.local_path(self.sandbox.nginx_include_dir) / BROKEN_CONF
        path.write_text("# put here by SandboxHost.break_nginx() for a fault test\nthis_is_not_an_nginx_directive;\n")

    def repair_nginx(self) -> None:
        (self.local_path(self.sandbox.nginx_include_dir) / BROKEN_CONF).unlink(missing_ok=True)


@dataclass(eq=False)
class Sandbox:
    root: Path
    ssh_host: str  # host 0's address and port (one-host settings)
    ssh_port: int  # the same on every host
    ssh_user: str
    ssh_key: Path
    known_hosts: Path  # one line per host
    acme_directory: str
    acme_ca_bundle: Path  # trust this for Pebble's own API
    served_root_ca: Path  # Pebble's issuing root: verifies the certificates nginx serves
    http_port: int  # the same on every host
    https_port: int
    nginx_prefix: Path  # the same path on every host (each sees its own copy)
    nginx_include_dir: Path
    nginx_command: tuple[str, ...]
    challtestsrv_url: str
    pebble_mgmt_url: str
    services: dict[str, int] = field(default_factory=dict)  # the shared processes: pebble, challtestsrv
    dns_server: str = ""  # challtestsrv's DNS ("127.0.0.1:PORT"): the names as the CA resolves them
    hosts: list[SandboxHost] = field(default_factory=list)
    pebble_argv: list = field(default_factory=list, repr=False)
    pebble_env: dict = field(default_factory=dict, repr=False)
    dns_names: set = field(default_factory=set, repr=False)  # names set_dns() changed

    @property
    def pids(self) -> dict[str, int]:
        """The shared processes and host 0's ("sshd", "nginx"); other hosts' are in ``hosts[i].pids``."""
        return {**self.services, **(self.hosts[0].pids if self.hosts else {})}

    def deploy_settings(self, site: str = SITE_NAME) -> dict:
        """The DEPLOY_* values that point a blog at this sandbox (its domains stay the blog's own).

        One host: DEPLOY_HOST and DEPLOY_PORT. Several: DEPLOY_HOSTS ("address:port" each, host 0
        first) and nginx listening on "*" (the vhost is the same on every host; each host's nginx
        has its own network namespace); each host is then verified at its own address.
        """
        return self._settings(site, self.hosts)

    def _settings(self, site: str, hosts: list[SandboxHost]) -> dict:
        values = {
            "DEPLOY_SITE_NAME": site,
            "DEPLOY_HOST": self.ssh_host,
            "DEPLOY_PORT": self.ssh_port,
            "DEPLOY_USER": self.ssh_user,
            "DEPLOY_SSH_KEY": str(self.ssh_key),
            "DEPLOY_KNOWN_HOSTS": str(self.known_hosts),
            "DEPLOY_REMOTE_ROOT": str(self.root / "srv" / "www" / site),
            "DEPLOY_STATE_DIR": str(self.root / "var" / "lib" / "pelican-https" / site),
            "DEPLOY_ACME_DIRECTORY": self.acme_directory,
            "DEPLOY_ACME_CA_BUNDLE": str(self.acme_ca_bundle),
            "DEPLOY_HTTP_PORT": self.http_port,
            "DEPLOY_HTTPS_PORT": self.https_port,
            "DEPLOY_NGINX": list(self.nginx_command),
            "DEPLOY_LISTEN": ["127.0.0.1"],
            "DEPLOY_VERIFY_ADDRESS": "127.0.0.1",
            "DEPLOY_DNS_RESOLVER": self.dns_server or None,  # the challenge pre-check resolves like the CA
            "DEPLOY_VERIFY_CA": str(self.served_root_ca),
        }
        if len(hosts) > 1:
            del values["DEPLOY_HOST"], values["DEPLOY_PORT"], values["DEPLOY_VERIFY_ADDRESS"]
            values["DEPLOY_HOSTS"] = [host.ssh_target for host in hosts]
            values["DEPLOY_LISTEN"] = ["*"]
        return values

    def write_settings_file(self) -> Path:
        """A JSON file of deploy_settings(), read by example_site/sandboxconf.py via $PELICAN_HTTPS_SANDBOX."""
        path = self.root / "sandbox.json"
        path.write_text(json.dumps(self.deploy_settings(), indent=2))
        return path

    def add_site(self, site: str) -> dict:
        """Prepare another site on every host (as its administrator would) and return its settings.

        Several sites share one nginx per host, like on a real server; each has its own folders
        and vhost. The administrator's script is the same for every host and runs on each.
        """
        # The set-up needs no domain (any placeholder passes) and no host: one host's settings do.
        settings = settings_from_mapping(self._settings(site, self.hosts[:1]) | {"SITEURL": "https://site.invalid"}, base=self.root)
        script = self.root / f"admin-setup-{site}.sh"
        script.write_text(admin_script(settings, nginx_include_dir=str(self.nginx_include_dir)))
        for host in self.hosts:
            host.run(["sh", str(script)])
        return self.deploy_settings(site)

    def set_dns(self, name: str, addresses: list[str]) -> None:
        """Make ``name`` resolve (A records, as Pebble and DEPLOY_DNS_RESOLVER see it) to ``addresses``."""
        host = name.rstrip(".") + "."
        self._challtestsrv("/clear-a", {"host": host})
        self._challtestsrv("/add-a", {"host": host, "addresses": list(addresses)})
        self.dns_names.add(host)

    def clear_dns(self, name: str) -> None:
        """Back to the default answer for ``name`` (127.0.0.1, host 0)."""
        host = name.rstrip(".") + "."
        self._challtestsrv("/clear-a", {"host": host})
        self.dns_names.discard(host)

    def _challtestsrv(self, path: str, body: dict) -> None:
        request = urllib.request.Request(self.challtestsrv_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            if resp.status != 200:
                raise SandboxError(f"pebble-challtestsrv {path} {body}: HTTP {resp.status}")

    def heal(self) -> None:
        """Undo every fault and DNS change: each host's sshd and nginx running, nginx -t passing."""
        for host in self.hosts:
            host.repair_nginx()
            host.start_sshd()
            host.start_nginx()
        for name in list(self.dns_names):
            self.clear_dns(name)

    def restart_pebble(self) -> None:
        """Stop and start Pebble (same ports and config): it forgets every account, order and root."""
        log = self.root / "pebble" / "pebble.log"
        _terminate(self.services.pop("pebble"))
        self.services["pebble"] = _spawn(self.pebble_argv, log, env=self.pebble_env)
        _wait_for(lambda: _get(self.acme_directory, self.acme_ca_bundle), "Pebble", log)
        self.refresh_served_root()

    def refresh_served_root(self) -> None:
        """Pebble makes a new root at every start: fetch the current one."""
        self.served_root_ca.write_bytes(_get(self.pebble_mgmt_url + "/roots/0", self.acme_ca_bundle))


def rehearsal_settings(siteurl: str, sandbox_file: str | os.PathLike | None = None) -> dict:
    """Settings that send a blog's deploy to a running sandbox instead of its real server.

    The blog keeps its own domains (the sandbox's DNS answers every name with 127.0.0.1);
    SITEURL gains the sandbox's https port. Used by example_site/sandboxconf.py.
    """
    from urllib.parse import urlsplit, urlunsplit

    path = sandbox_file or os.environ.get("PELICAN_HTTPS_SANDBOX")
    if not path:
        raise SandboxError("PELICAN_HTTPS_SANDBOX is not set: start a sandbox first (python -m deploy.sandbox) and export it")
    values = json.loads(Path(path).read_text())
    parts = urlsplit(siteurl)
    # The sandbox's host or hosts replace the blog's own: one of DEPLOY_HOST and DEPLOY_HOSTS only.
    values.setdefault("DEPLOY_HOST", None)
    values.setdefault("DEPLOY_HOSTS", None)
    values["SITEURL"] = urlunsplit(("https", f"{parts.hostname}:{values['DEPLOY_HTTPS_PORT']}", parts.path, "", ""))
    return values


def start_sandbox(*, hosts: int = 1, cert_validity_seconds: int | None = None, nonce_reject_percent: int = 5,
                  authz_reuse_percent: int | None = None, eab_keys: dict[str, str] | None = None) -> Sandbox:
    """Start Pebble, pebble-challtestsrv, and per host sshd and nginx; prepare each host like an admin would."""
    if os.geteuid() != 0:
        raise SandboxError("the sandbox must run as root: it creates a deploy user and runs sshd")
    if not 1 <= hosts <= MAX_HOSTS:
        raise SandboxError(f"hosts={hosts!r}: expected 1 to {MAX_HOSTS}")
    required = REQUIRED | (REQUIRED_FOR_GROUPS if hosts > 1 else {})
    missing = sorted({pkg for cmd, pkg in required.items() if not shutil.which(cmd)})
    if missing:
        raise SandboxError(f"the sandbox needs the Debian packages {', '.join(missing)}: apt-get install -y {' '.join(missing)}")

    root = Path(tempfile.mkdtemp(prefix="pelican-https-sandbox-"))
    root.chmod(0o755)  # the deploy user and nginx's workers (nobody) walk through it
    user = "phs" + secrets.token_hex(4)
    ports = _free_ports(7)
    ssh_port, http_port, https_port, acme_port, mgmt_port, dns_port, cts_port = ports
    sb = Sandbox(
        root=root, ssh_host="127.0.0.1", ssh_port=ssh_port, ssh_user=user,
        ssh_key=root / "client" / "id_ed25519", known_hosts=root / "client" / "known_hosts",
        acme_directory=f"https://127.0.0.1:{acme_port}/dir", acme_ca_bundle=root / "pebble" / "api-ca.pem",
        served_root_ca=root / "pebble" / "issuing-root.pem", http_port=http_port, https_port=https_port,
        nginx_prefix=root / "nginx", nginx_include_dir=root / "nginx" / "conf" / "sites-enabled",
        nginx_command=("sudo", "-n", NGINX, "-p", str(root / "nginx"), "-c", "conf/nginx.conf"),
        challtestsrv_url=f"http://127.0.0.1:{cts_port}", pebble_mgmt_url=f"https://127.0.0.1:{mgmt_port}",
        dns_server=f"127.0.0.1:{dns_port}",
    )
    sb.hosts.append(SandboxHost(index=0, address="127.0.0.1", ssh_port=ssh_port, sandbox=sb))
    try:
        _start_acme(sb, acme_port, mgmt_port, dns_port, cts_port, cert_validity_seconds, nonce_reject_percent,
                    authz_reuse_percent, eab_keys)
        _create_user(sb)
        if hosts > 1:
            _add_namespaced_hosts(sb, hosts - 1)
        for host in sb.hosts:
            _start_sshd(sb, host)
            _start_nginx(sb, host)
        sb.known_hosts.write_text("".join(f"[{h.address}]:{h.ssh_port} {h.host_key}\n" for h in sb.hosts))
        _wait_for_acme(sb)  # Pebble started first and came up while the hosts did
        sb.refresh_served_root()
        sb.add_site(SITE_NAME)
        sb.write_settings_file()
    except BaseException:
        stop_sandbox(sb)
        raise
    return sb


def stop_sandbox(sb: Sandbox) -> None:
    """Stop every process the sandbox started, by PID, and remove the namespaces, user, sudoers file and folder."""
    # Every host's nginx and sshd and the shared services stop together (see _terminate_all).
    _terminate_all([pid for host in sb.hosts for name in ("nginx", "sshd") if (pid := host.pids.pop(name, None))]
                   + list(sb.services.values()))
    sb.services.clear()
    for host in sb.hosts:
        if host.netns or "namespace" in host.pids:
            # Whatever still runs in the host's network namespace (a deploy's session, nginx's
            # workers) is the sandbox's: stop it, so that the namespaces and the veth pair go away.
            _kill_namespace(host.netns, host.pids.pop("namespace", None))
        if host.veth:
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True)  # normally gone with the namespace
    # sshd sessions of the deploy user may outlive the listener for a moment.
    subprocess.run(["pkill", "-KILL", "-u", sb.ssh_user], capture_output=True)
    subprocess.run(["userdel", sb.ssh_user], capture_output=True)
    for f in Path("/etc/sudoers.d").glob("pelican-https-*"):
        # The set-up names the file after the user; a rule line starts with the user's name.
        if f.is_file() and (f.name.startswith(f"pelican-https-{sb.ssh_user}-") or any(
                line.split(" ", 1)[0] == sb.ssh_user for line in f.read_text(errors="replace").splitlines())):
            f.unlink()
    shutil.rmtree(authorized_keys_dir(sb), ignore_errors=True)
    try:
        authorized_keys_dir(sb).parent.rmdir()  # unless another sandbox still runs
    except OSError:
        pass
    shutil.rmtree(sb.root, ignore_errors=True)


# --- the parts -------------------------------------------------------------------------

def _start_acme(sb: Sandbox, acme_port: int, mgmt_port: int, dns_port: int, cts_port: int,
                validity: int | None, nonce_reject: int, authz_reuse: int | None = None,
                eab_keys: dict[str, str] | None = None) -> None:
    d = sb.root / "pebble"
    d.mkdir()
    ca_key, ca_cert = _make_ca("pelican-https sandbox API CA")
    leaf_key, leaf_cert = _make_leaf(ca_key, ca_cert)
    sb.acme_ca_bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "api-cert.pem").write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(d / "api-key.pem", leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(d / "api-cert.pem"), "privateKey": str(d / "api-key.pem"),
        "httpPort": sb.http_port, "tlsPort": sb.https_port, "ocspResponderURL": "", "externalAccountBindingRequired": False,
        "domainBlocklist": [CA_REFUSED_DOMAIN],
    }}
    if validity:
        config["pebble"]["certificateValidityPeriod"] = validity
    if eab_keys:  # {key id: base64url HMAC key}: Pebble then requires external account binding
        config["pebble"].update(externalAccountBindingRequired=True, externalAccountMACKeys=eab_keys)
    (d / "pebble.json").write_text(json.dumps(config))
    sb.services["challtestsrv"] = _spawn(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns_port}",
         "-management", f"127.0.0.1:{cts_port}", "-http01", "", "-https01", "", "-tlsalpn01", ""],
        d / "challtestsrv.log")
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT=str(nonce_reject))
    if authz_reuse is not None:
        env["PEBBLE_AUTHZREUSE"] = str(authz_reuse)
    sb.pebble_argv = ["pebble", "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"]
    sb.pebble_env = env
    sb.services["pebble"] = _spawn(sb.pebble_argv, d / "pebble.log", env=env)


def _wait_for_acme(sb: Sandbox) -> None:
    """Pebble and its DNS started with _start_acme: wait until both answer (the hosts start meanwhile)."""
    d = sb.root / "pebble"
    _wait_for_port(int(sb.challtestsrv_url.rsplit(":", 1)[1]), "pebble-challtestsrv", d / "challtestsrv.log")
    _wait_for(lambda: _get(sb.acme_directory, sb.acme_ca_bundle), "Pebble", d / "pebble.log")


def authorized_keys_dir(sb: Sandbox) -> Path:
    """The deploy user's key, outside /tmp: StrictModes refuses key files below a world-writable
    folder. (/etc/ssh, root's, 0755, as on a server; shared by the hosts; removed by ``stop_sandbox``.)"""
    return Path("/etc/ssh/pelican-https-sandbox") / sb.root.name


def _create_user(sb: Sandbox) -> None:
    home = sb.root / "home" / sb.ssh_user
    home.parent.mkdir(parents=True)
    _check(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--user-group", sb.ssh_user])
    home.mkdir(mode=0o755)
    shutil.chown(home, sb.ssh_user, sb.ssh_user)
    # useradd leaves the account locked ('!'); with UsePAM no, sshd refuses locked accounts.
    _check(["usermod", "-p", "*", sb.ssh_user])
    client = sb.ssh_key.parent
    client.mkdir(mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(sb.ssh_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    keys_dir = authorized_keys_dir(sb)
    keys_dir.mkdir(mode=0o755, parents=True)
    (keys_dir / sb.ssh_user).write_text(public + "\n")


def _add_namespaced_hosts(sb: Sandbox, count: int) -> None:
    """Hosts 1..count: a network and a mount namespace each (see the module's docstring)."""
    for name in HOST_OWN_FOLDERS:  # the mount points: the folders host 0 uses
        (sb.root / name).mkdir(mode=0o755, exist_ok=True)
    sleep = os.path.realpath(shutil.which("sleep"))
    NET_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(NET_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until this sandbox's addresses exist
        net = _free_subnet()
        for i in range(1, count + 1):
            files = sb.root / "hosts" / str(i)
            host = SandboxHost(index=i, address=f"{net}.{i + 1}", ssh_port=sb.ssh_port, files=files,
                               veth=f"{sb.ssh_user}h{i}", sandbox=sb)
            sb.hosts.append(host)
            for name in HOST_OWN_FOLDERS:
                (files / name).mkdir(mode=0o755, parents=True)
            home = host.local_path(sb.root / "home" / sb.ssh_user)
            home.mkdir(mode=0o755)
            shutil.chown(home, sb.ssh_user, sb.ssh_user)
            # One process holds both namespaces open; unshare makes every mount private before it
            # execs sleep, so nothing mounted inside reaches this machine's own mount table.
            pid = _spawn(["unshare", "--net", "--mount", "--propagation", "private", "--", sleep, "infinity"], files / "namespace.log")
            host.pids["namespace"] = pid
            _wait_for(lambda pid=pid: os.readlink(f"/proc/{pid}/exe") == sleep, f"the namespaces of host {i}", files / "namespace.log")
            host.netns = os.readlink(f"/proc/{pid}/ns/net")
            if host.netns == os.readlink("/proc/self/ns/net"):
                raise SandboxError(f"host {i}: unshare --net made no new network namespace")
            peer = f"{sb.ssh_user}n{i}"
            _check(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer, "netns", str(pid)])
            _check(["ip", "address", "add", f"{net}.1/32", "peer", f"{host.address}/32", "dev", host.veth])
            _check(["ip", "link", "set", host.veth, "up"])
            enter = host.enter
            _check([*enter, "ip", "link", "set", "lo", "up"])
            _check([*enter, "ip", "link", "set", peer, "name", "eth0"])
            _check([*enter, "ip", "address", "add", f"{host.address}/32", "peer", f"{net}.1/32", "dev", "eth0"])
            _check([*enter, "ip", "link", "set", "eth0", "up"])
            for name in HOST_OWN_FOLDERS:
                _check([*enter, "mount", "--bind", str(files / name), str(sb.root / name)])


def _free_subnet() -> str:
    """'10.A.B' such that 10.A.B.0/24 meets no address or route of this machine (the caller holds NET_LOCK)."""
    seen = subprocess.run(["ip", "-4", "-o", "address", "show"], capture_output=True, text=True).stdout
    seen += subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(m, strict=False) for m in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", seen)]
    used = [n for n in used if n.prefixlen > 0]
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{random.randint(100, 254)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return str(candidate.network_address).rsplit(".", 1)[0]
    raise SandboxError("no free 10.x.y.0/24 for the sandbox's hosts: every candidate meets an address or route of this machine")


def _kill_namespace(netns: str, holder: int | None) -> None:
    """Stop every process in the network namespace ``netns`` (by its id), then the process holding it."""
    deadline = time.monotonic() + 5
    while netns and time.monotonic() < deadline:
        members = [pid for pid in _pids_in_netns(netns) if pid != holder]
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    if holder:
        _terminate(holder)


def _pids_in_netns(netns: str) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/net") == netns:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _start_sshd(sb: Sandbox, host: SandboxHost) -> None:
    d = host.sshd_dir
    host_key = ed25519.Ed25519PrivateKey.generate()
    _write_private(d / "host_ed25519", host_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    host.host_key = host_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    (d / "sshd_config").write_text("\n".join([
        f"Port {host.ssh_port}", f"ListenAddress {host.address}", f"HostKey {d / 'host_ed25519'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys_dir(sb)}/%u", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin no", f"AllowUsers {sb.ssh_user}", "UsePAM no", "Subsystem sftp internal-sftp",
        "MaxStartups 50:30:100", "MaxSessions 50",
        # sshd's defaults otherwise, StrictModes included: the key file's folders are root's, 0755.
        # ClientAliveInterval as the README asks of a server: a vanished deploy frees its lock.
        "StrictModes yes", "ClientAliveInterval 30", "",
    ]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host.start_sshd()


def _start_nginx(sb: Sandbox, host: SandboxHost) -> None:
    p = sb.nginx_prefix  # the same path on every host; host.local_path() is where this process writes it
    for sub in ("conf", "logs", "temp"):
        host.local_path(p / sub).mkdir(parents=True, exist_ok=True)
    host.local_path(sb.nginx_include_dir).mkdir()
    temp = {name: p / "temp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    host.local_path(p / "conf" / "nginx.conf").write_text(f"""\
worker_processes 1;
pid {p}/logs/nginx.pid;
error_log {p}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {p}/logs/access.log;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {sb.nginx_include_dir}/*.conf;
}}
""")
    host.start_nginx()


# --- helpers ---------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("0.0.0.0", 0))  # free on every address: a group's nginx listens on *
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _spawn(argv: list[str], log: Path, env: dict | None = None) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc.pid


def _terminate(pid: int) -> None:
    _terminate_all([pid])


def _terminate_all(pids: list[int]) -> None:
    """SIGTERM to every PID at once, then wait for them together (an nginx master takes ~2 s to
    stop: one after another, three hosts took 6 s); SIGKILL for any left after 5 s."""
    waiting = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            waiting.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if not _reaped(pid)]
        if waiting:
            time.sleep(0.02)
    for pid in waiting:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _reaped(pid: int) -> bool:
    """True once ``pid`` is gone (reaped when it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return bool(done)
    except ChildProcessError:  # not our child (nginx daemonized): poll for existence
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _check(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"sandbox set-up step failed: {' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")


def _wait_for_port(port: int, what: str, log: Path, address: str = "127.0.0.1") -> None:
    def probe():
        with socket.create_connection((address, port), timeout=0.5):
            return True
    _wait_for(probe, what, log)


def _wait_for(probe, what: str, log: Path, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise SandboxError(f"{what} did not start within {timeout:.0f} s (last error: {last}); its log ends with:\n{tail}")


def _get(url: str, cafile: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return resp.read()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _make_ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_leaf(ca_key, ca_cert):
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy.sandbox [--hosts N]`: start a sandbox, print what a client needs, stop it on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m deploy.sandbox", description="Start a local sandbox server (Pebble, DNS, sshd, nginx) until Ctrl-C.")
    parser.add_argument("--hosts", type=int, default=1, choices=range(1, MAX_HOSTS + 1), metavar="N",
                        help=f"number of servers, 1 to {MAX_HOSTS} (default 1)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it as cleanly as Ctrl-C, even while it starts
    try:
        sb = start_sandbox(hosts=args.hosts)
    except SandboxError as exc:
        print(f"the sandbox could not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # start_sandbox removed what it had made
        return 1
    try:
        # Only what a client needs: never the process environment (it may hold secrets).
        print(describe(sb, sb.write_settings_file()), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop_sandbox(sb)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def describe(sb: Sandbox, settings_file: Path) -> str:
    """What `python -m deploy.sandbox` prints: where to connect, what to trust, the settings file."""
    lines = [f"sandbox running in {sb.root} (deploy user {sb.ssh_user})"]
    for host in sb.hosts:
        lines.append(f"  host {host.index}: {host.address}  ssh :{host.ssh_port}  http :{sb.http_port}  https :{sb.https_port}")
    lines += [
        f"  ssh key:      {sb.ssh_key}",
        f"  known_hosts:  {sb.known_hosts}",
        f"  ACME:         {sb.acme_directory} (its API's CA: {sb.acme_ca_bundle})",
        f"  served root:  {sb.served_root_ca} (verifies the certificates nginx serves)",
        f"  DNS:          {sb.dns_server} (every name answers 127.0.0.1 unless set otherwise)",
        f"  settings:     {settings_file}",
        "",
        f"export PELICAN_HTTPS_SANDBOX={settings_file}",
        "Ctrl-C stops the sandbox.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
