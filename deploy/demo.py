"""The README's demo: deploy example_site with HTTPS to a local sandbox and show what a client sees.

    python -m deploy.demo [--keep]

Starts the sandbox, builds example_site with the plugin (`pelican content -s sandboxconf.py`),
runs the real `fab deploy --settings sandboxconf.py`, then looks at the site like a visitor:
https status, certificate issuer and names, HSTS, the http->https redirect. Stops the sandbox
afterwards (with --keep, on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509

from .sandbox import start_sandbox, stop_sandbox
from .settings import load_settings
from .verify import fetch_http, fetch_https

EXAMPLE_SITE = Path(__file__).resolve().parent.parent / "example_site"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the sandbox running until Ctrl-C")
    args = parser.parse_args(argv)

    print("==> starting the sandbox (Pebble ACME CA, sshd with a deploy user, nginx)")
    sb = start_sandbox()
    work = Path(tempfile.mkdtemp(prefix="pelican-https-demo-"))
    try:
        blog = work / "example_site"
        shutil.copytree(EXAMPLE_SITE, blog, ignore=shutil.ignore_patterns("output", "__pycache__"))
        env = dict(os.environ, PELICAN_HTTPS_SANDBOX=str(sb.write_settings_file()))
        bindir = Path(sys.executable).parent
        _step("building example_site with the pelican_https plugin", [sys.executable, "-m", "pelican", "content", "-s", "sandboxconf.py"], blog, env)
        _step("fab deploy --settings sandboxconf.py", [str(bindir / "fab"), "deploy", "--settings", "sandboxconf.py"], blog, env)
        os.environ["PELICAN_HTTPS_SANDBOX"] = env["PELICAN_HTTPS_SANDBOX"]
        os.chdir(blog)
        settings = load_settings(blog / "sandboxconf.py")
        show(settings)
        if args.keep:
            print(f"\nThe sandbox keeps running. Try:\n  curl --cacert {sb.served_root_ca} --resolve "
                  f"{settings.canonical_domain}:{settings.https_port}:127.0.0.1 {settings.https_origin}/\nCtrl-C stops it.")
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        os.chdir("/")
        print("==> stopping the sandbox")
        stop_sandbox(sb)
        shutil.rmtree(work, ignore_errors=True)


def show(settings) -> None:
    domain = settings.canonical_domain
    answer = fetch_https(settings, domain)
    cert = answer.certificate
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    status, location = fetch_http(settings, domain, path="/any/path?q=1")
    title = answer.body.decode("utf-8", "replace").split("<title>", 1)[-1].split("</title>", 1)[0].strip()
    print(f"""
==> {settings.https_origin}/  (the sandbox resolves {domain} to 127.0.0.1)
    status:       {answer.status} ({title})
    certificate:  issued by "{cert.issuer.rfc4514_string()}"
                  for {", ".join(names)}
                  serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC
    HSTS:         {answer.headers.get("strict-transport-security", "(missing)")}
    http:// ->    http://{domain}:{settings.http_port}/any/path?q=1 answers {status} Location: {location}""")


def _step(title: str, argv: list[str], cwd: Path, env: dict) -> None:
    print(f"==> {title}")
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        print("    " + output.replace("\n", "\n    "))
    if result.returncode != 0:
        raise SystemExit(f"demo failed at: {title}")


if __name__ == "__main__":
    sys.exit(main())
