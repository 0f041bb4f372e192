"""Measure the nginx stage on a fresh local sandbox.  One command (as root):

    python3 benchmarks/nginx/run.py            # 20 runs each
    python3 benchmarks/nginx/run.py --runs 5 --no-testssl   # quick

(a) render_vhost: the pure renderer, per call.
(b) first deploy of a bare site (no certificate yet): HTTP-only vhost, ACME order, TLS vhost;
    the time spent in the two vhost installs is shown separately.
(c) apply_config when nothing changed: one SSH round trip, no reload (plus the live probe).
(d) apply_config with a changed vhost: upload, `nginx -t`, reload, and polling until nginx
    answers with the new config.
(e) testssl.sh with the checks tests/test_tls.py runs (-p -e -U -S -h), once.

Medians and min/max of wall time. Nothing here is asserted: the figures go into the report.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from deploy import nginx, pipeline  # noqa: E402
from deploy.connection import connect  # noqa: E402
from deploy.sandbox import NGINX, start_sandbox, stop_sandbox  # noqa: E402
from deploy.settings import settings_from_mapping  # noqa: E402
from deploy.vhost import render_vhost  # noqa: E402


def stats(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"median {statistics.median(ms):8.2f} ms  (min {min(ms):.2f}, max {max(ms):.2f}, n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-testssl", action="store_true")
    args = parser.parse_args()

    sb = start_sandbox()
    try:
        values = sb.add_site("bench-nginx") | {"DEPLOY_DOMAINS": ["bench.example.com", "www.bench.example.com"]}
        settings = settings_from_mapping(values | {"SITEURL": "https://bench.example.com"}, base=sb.root)
        release = Path(settings.releases_dir) / "00000000T000000Z-bench"
        release.mkdir(parents=True)
        (release / "index.html").write_text("<!doctype html><title>bench</title>\n")
        subprocess.run(["chown", "-R", f"{settings.user}:{settings.user}", str(settings.remote_root)], check=True)
        release.chmod(0o755)
        Path(settings.current_link).symlink_to(release.relative_to(settings.remote_root))
        version = nginx.parse_version(subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr)

        # (a)
        samples = []
        for _ in range(max(args.runs, 1) * 50):
            t = time.perf_counter()
            render_vhost(settings, version, with_tls=True, certificate_dir="/x/tls/certs/id")
            samples.append(time.perf_counter() - t)
        print(f"(a) render_vhost                      {stats(samples)}")

        # (b) time the installs inside the real pipeline
        installs: list[float] = []
        real_apply = nginx.apply_config

        def timed_apply(*a, **kw):
            t = time.perf_counter()
            try:
                return real_apply(*a, **kw)
            finally:
                installs.append(time.perf_counter() - t)

        nginx.apply_config = timed_apply
        t = time.perf_counter()
        pipeline.deploy(settings, upload_site=False)
        total = time.perf_counter() - t
        nginx.apply_config = real_apply
        print(f"(b) first deploy, bare site           {total * 1000:8.1f} ms total; vhost installs "
              + ", ".join(f"{x * 1000:.1f} ms" for x in installs) + " (HTTP-only, then TLS)")

        live = str(Path(settings.tls_dir / "live").resolve())
        plain = render_vhost(settings, version, with_tls=True, certificate_dir=live)
        other = render_vhost(settings._replace(csp_upgrade_insecure=True), version, with_tls=True,
                             certificate_dir=live)
        conn = connect(settings)
        try:
            nginx.apply_config(conn, settings, plain)
            # (c)
            samples = []
            for _ in range(args.runs):
                t = time.perf_counter()
                outcome = nginx.apply_config(conn, settings, plain)
                samples.append(time.perf_counter() - t)
                assert not outcome.changed
            print(f"(c) apply_config, unchanged           {stats(samples)}")
            # (d)
            samples = []
            for i in range(args.runs):
                t = time.perf_counter()
                outcome = nginx.apply_config(conn, settings, other if i % 2 == 0 else plain)
                samples.append(time.perf_counter() - t)
                assert outcome.changed
            print(f"(d) apply_config, changed + reload    {stats(samples)}")
        finally:
            conn.close()

        # (e)
        if not args.no_testssl and shutil.which("testssl"):
            t = time.perf_counter()
            subprocess.run(["testssl", "--quiet", "--warnings", "batch", "--color", "0", "--add-ca", str(sb.served_root_ca),
                            "--ip", "127.0.0.1", "-p", "-e", "-U", "-S", "-h",
                            f"{settings.canonical_domain}:{settings.https_port}"], capture_output=True, timeout=600)
            print(f"(e) testssl.sh -p -e -U -S -h         {time.perf_counter() - t:8.1f} s")
    finally:
        stop_sandbox(sb)


if __name__ == "__main__":
    main()
