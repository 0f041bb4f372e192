"""A real server on this machine: Pebble (ACME) + its DNS, sshd with a deploy user, nginx.

``start_sandbox()`` starts everything under a fresh temporary folder, on free loopback ports,
and returns a ``Sandbox`` with what a client needs; ``stop_sandbox()`` stops every process it
started (by PID) and removes what it made (folder, user, sudoers file). The demo, the tests
(as a session fixture) and a blogger rehearsing a deploy all use it.

It needs root (it creates the deploy user and runs sshd) and the Debian packages
pebble, nginx, openssh-server and sudo. The server side is prepared by the same one-time
set-up script a real server's administrator runs (``server_setup.admin_script``), so the
sandbox is one more target, not a special case.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
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


@dataclass
class Sandbox:
    root: Path
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: Path
    known_hosts: Path
    acme_directory: str
    acme_ca_bundle: Path  # trust this for Pebble's own API
    served_root_ca: Path  # Pebble's issuing root: verifies the certificates nginx serves
    http_port: int
    https_port: int
    nginx_prefix: Path
    nginx_include_dir: Path
    nginx_command: tuple[str, ...]
    challtestsrv_url: str
    pebble_mgmt_url: str
    pids: dict[str, int] = field(default_factory=dict)
    dns_server: str = ""  # challtestsrv's DNS ("127.0.0.1:PORT"): the names as the CA resolves them
    pebble_argv: list = field(default_factory=list, repr=False)
    pebble_env: dict = field(default_factory=dict, repr=False)

    def deploy_settings(self, site: str = SITE_NAME) -> dict:
        """The DEPLOY_* values that point a blog at this sandbox (its domains stay the blog's own)."""
        return {
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

    def write_settings_file(self) -> Path:
        """A JSON file of deploy_settings(), read by example_site/sandboxconf.py via $PELICAN_HTTPS_SANDBOX."""
        path = self.root / "sandbox.json"
        path.write_text(json.dumps(self.deploy_settings(), indent=2))
        return path

    def add_site(self, site: str) -> dict:
        """Prepare another site on this server (as its administrator would) and return its settings.

        Several sites share one nginx, like on a real server; each has its own folders and vhost.
        """
        values = self.deploy_settings(site)
        # The set-up needs no domain; any placeholder satisfies the validation.
        settings = settings_from_mapping(values | {"SITEURL": "https://site.invalid"}, base=self.root)
        script = self.root / f"admin-setup-{site}.sh"
        script.write_text(admin_script(settings, nginx_include_dir=str(self.nginx_include_dir)))
        _check(["sh", str(script)])
        return values

    def restart_pebble(self) -> None:
        """Stop and start Pebble (same ports and config): it forgets every account, order and root."""
        log = self.root / "pebble" / "pebble.log"
        _terminate(self.pids.pop("pebble"))
        self.pids["pebble"] = _spawn(self.pebble_argv, log, env=self.pebble_env)
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
    values["SITEURL"] = urlunsplit(("https", f"{parts.hostname}:{values['DEPLOY_HTTPS_PORT']}", parts.path, "", ""))
    return values


def start_sandbox(*, cert_validity_seconds: int | None = None, nonce_reject_percent: int = 5,
                  authz_reuse_percent: int | None = None, eab_keys: dict[str, str] | None = None) -> Sandbox:
    """Start Pebble, pebble-challtestsrv, sshd and nginx; prepare the server like an admin would."""
    if os.geteuid() != 0:
        raise SandboxError("the sandbox must run as root: it creates a deploy user and runs sshd")
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if not shutil.which(cmd)})
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
    try:
        _start_acme(sb, acme_port, mgmt_port, dns_port, cts_port, cert_validity_seconds, nonce_reject_percent,
                    authz_reuse_percent, eab_keys)
        _create_user(sb)
        _start_sshd(sb)
        _start_nginx(sb)
        sb.refresh_served_root()
        sb.add_site(SITE_NAME)
        sb.write_settings_file()
    except BaseException:
        stop_sandbox(sb)
        raise
    return sb


def stop_sandbox(sb: Sandbox) -> None:
    """Stop every process the sandbox started, by PID, and remove the user, sudoers file and folder."""
    for name, pid in reversed(list(sb.pids.items())):
        _terminate(pid)
    sb.pids.clear()
    # sshd sessions of the deploy user may outlive the listener for a moment.
    subprocess.run(["pkill", "-KILL", "-u", sb.ssh_user], capture_output=True)
    subprocess.run(["userdel", sb.ssh_user], capture_output=True)
    for f in Path("/etc/sudoers.d").glob("pelican-https-*"):
        if f.is_file() and sb.ssh_user in f.read_text(errors="replace").split(" ", 1)[0]:
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
    }}
    if validity:
        config["pebble"]["certificateValidityPeriod"] = validity
    if eab_keys:  # {key id: base64url HMAC key}: Pebble then requires external account binding
        config["pebble"].update(externalAccountBindingRequired=True, externalAccountMACKeys=eab_keys)
    (d / "pebble.json").write_text(json.dumps(config))
    sb.pids["challtestsrv"] = _spawn(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns_port}",
         "-management", f"127.0.0.1:{cts_port}", "-http01", "", "-https01", "", "-tlsalpn01", ""],
        d / "challtestsrv.log")
    _wait_for_port(cts_port, "pebble-challtestsrv", d / "challtestsrv.log")
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT=str(nonce_reject))
    if authz_reuse is not None:
        env["PEBBLE_AUTHZREUSE"] = str(authz_reuse)
    sb.pebble_argv = ["pebble", "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"]
    sb.pebble_env = env
    sb.pids["pebble"] = _spawn(sb.pebble_argv, d / "pebble.log", env=env)
    _wait_for(lambda: _get(sb.acme_directory, sb.acme_ca_bundle), "Pebble", d / "pebble.log")


def authorized_keys_dir(sb: Sandbox) -> Path:
    """The deploy user's key, outside /tmp: StrictModes refuses key files below a world-writable
    folder. (/etc/ssh, root's, 0755, as on a server; removed by ``stop_sandbox``.)"""
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


def _start_sshd(sb: Sandbox) -> None:
    d = sb.root / "sshd"
    host_key = ed25519.Ed25519PrivateKey.generate()
    _write_private(d / "host_ed25519", host_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    host_public = host_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    sb.known_hosts.write_text(f"[{sb.ssh_host}]:{sb.ssh_port} {host_public}\n")
    (d / "sshd_config").write_text("\n".join([
        f"Port {sb.ssh_port}", f"ListenAddress {sb.ssh_host}", f"HostKey {d / 'host_ed25519'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys_dir(sb)}/%u", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin no", f"AllowUsers {sb.ssh_user}", "UsePAM no", "Subsystem sftp internal-sftp",
        "MaxStartups 50:30:100", "MaxSessions 50",
        # sshd's defaults otherwise, StrictModes included: the key file's folders are root's, 0755.
        # ClientAliveInterval as the README asks of a server: a vanished deploy frees its lock.
        "StrictModes yes", "ClientAliveInterval 30", "",
    ]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sb.pids["sshd"] = _spawn([SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")], d / "sshd.out")
    _wait_for_port(sb.ssh_port, "sshd", d / "sshd.log")


def _start_nginx(sb: Sandbox) -> None:
    p = sb.nginx_prefix
    for sub in ("conf", "logs", "temp"):
        (p / sub).mkdir(parents=True, exist_ok=True)
    sb.nginx_include_dir.mkdir()
    temp = {name: p / "temp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (p / "conf" / "nginx.conf").write_text(f"""\
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
    # nginx daemonizes; its master's PID is in the pid file.
    _check([NGINX, "-p", str(p), "-c", "conf/nginx.conf"])
    _wait_for(lambda: (p / "logs" / "nginx.pid").read_text().strip() or None, "nginx", p / "logs" / "error.log")
    sb.pids["nginx"] = int((p / "logs" / "nginx.pid").read_text())


# --- helpers ---------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
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
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child (nginx daemonized): poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _check(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"sandbox set-up step failed: {' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")


def _wait_for_port(port: int, what: str, log: Path) -> None:
    def probe():
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
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


def main() -> None:
    """`python -m deploy.sandbox`: start a sandbox, print its settings, stop it on Ctrl-C."""
    sb = start_sandbox()
    print(json.dumps(asdict(sb), default=str, indent=2))
    print(f"\nexport PELICAN_HTTPS_SANDBOX={sb.root / 'sandbox.json'}\nCtrl-C stops the sandbox.")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop_sandbox(sb)


if __name__ == "__main__":
    main()
