"""Measure the nginx parts of the deploy on a fresh local sandbox.  One command (as root):

    ./run bench nginx                          # 20 runs each
    ./run bench nginx --runs 5 --no-testssl    # quick

(a) render_vhost: the pure renderer, per call.
(b) first deploy of a bare site (one page, no certificate yet), in process: challenge path,
    ACME order, `nginx -t` of the new vhost, commit with its reload, verification; the time
    spent testing the vhost and in the commit is shown separately.
(c) nginx.test: `nginx -t` of a new vhost that is not live (one SSH round trip, no reload).
(d) a commit of a changed vhost: switch, `nginx -t`, reload, and polling until nginx answers
    with the new config (nginx.confirm, the hand-over wait included); then the journal forgotten.
(e) testssl.sh with the checks tests/test_tls.py runs (-p -e -U -S -h), once.

Medians and min/max of wall time. Nothing here is asserted: the figures go into the README.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from deploy import nginx, pipeline, releases, state as host_state  # noqa: E402
from deploy.connection import connect_all  # noqa: E402
from deploy.sandbox import start_sandbox, stop_sandbox  # noqa: E402
from deploy.settings import settings_from_mapping  # noqa: E402
from deploy.vhost import render_vhost  # noqa: E402


def stats(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"median {statistics.median(ms):8.2f} ms  (min {min(ms):.2f}, max {max(ms):.2f}, n={len(ms)})"


def timing(module, name: str, into: list[float]):
    """Wrap module.name so that each call's wall time lands in ``into``; returns the original."""
    real = getattr(module, name)

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            into.append(time.perf_counter() - t)
    setattr(module, name, timed)
    return real


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-testssl", action="store_true")
    args = parser.parse_args()

    sb = start_sandbox()
    output = Path(tempfile.mkdtemp(prefix="nginx-bench-"))
    try:
        (output / "index.html").write_text("<!doctype html><title>bench</title>\n")
        values = sb.add_site("bench-nginx") | {"DEPLOY_DOMAINS": ["bench.example.com", "www.bench.example.com"],
                                               "DEPLOY_OUTPUT_PATH": str(output)}
        settings = settings_from_mapping(values | {"SITEURL": f"https://bench.example.com:{sb.https_port}"}, base=sb.root)

        # (b) first, on the fresh site: the installs timed inside the real pipeline.
        tests, commits = [], []
        real_test = timing(nginx, "test", tests)
        real_commit = timing(releases, "commit", commits)
        t = time.perf_counter()
        pipeline.deploy(settings)
        total = time.perf_counter() - t
        nginx.test, releases.commit = real_test, real_commit
        print(f"(b) first deploy, bare site           {total * 1000:8.1f} ms total; nginx -t of the new vhost "
              f"{sum(tests) * 1000:.1f} ms, commit (switch + reload) {sum(commits) * 1000:.1f} ms")

        servers = connect_all(settings)
        try:
            server = next(iter(servers))
            st = host_state.read(server, settings)
            cert_dir = str(settings.tls_dir / "certs" / st.live.cert_id)
            # (a)
            samples = []
            for _ in range(max(args.runs, 1) * 50):
                t = time.perf_counter()
                render_vhost(settings, st.build, cert_dir, error_page=False)
                samples.append(time.perf_counter() - t)
            print(f"(a) render_vhost                      {stats(samples)}")
            plain = render_vhost(settings, st.build, cert_dir, error_page=False)
            other = render_vhost(settings._replace(csp_upgrade_insecure=True), st.build, cert_dir, error_page=False)
            with pipeline.hold(servers, settings, pipeline.Progress()):
                # (c)
                samples = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    nginx.test(server, settings, other)
                    samples.append(time.perf_counter() - t)
                print(f"(c) nginx.test (nginx -t, not live)   {stats(samples)}")
                # (d)
                samples = []
                for i in range(args.runs):
                    vhost = other if i % 2 == 0 else plain
                    nginx.test(server, settings, vhost)  # saves it as vhost.conf.next, as the deploy does
                    t = time.perf_counter()
                    releases.commit(servers, settings, {server: releases.Change(vhost=vhost)})
                    nginx.confirm(server, settings, vhost)
                    samples.append(time.perf_counter() - t)
                    releases.finish(servers, settings, prune=False)
                print(f"(d) commit of a changed vhost         {stats(samples)} (reload + confirm)")
        finally:
            servers.close()

        # (e)
        if not args.no_testssl and shutil.which("testssl"):
            t = time.perf_counter()
            subprocess.run(["testssl", "--quiet", "--warnings", "batch", "--color", "0", "--add-ca", str(sb.served_root_ca),
                            "--ip", "127.0.0.1", "-p", "-e", "-U", "-S", "-h",
                            f"{settings.canonical_domain}:{settings.https_port}"], capture_output=True, timeout=600)
            print(f"(e) testssl.sh -p -e -U -S -h         {time.perf_counter() - t:8.1f} s")
    finally:
        stop_sandbox(sb)
        shutil.rmtree(output, ignore_errors=True)


if __name__ == "__main__":
    main()
