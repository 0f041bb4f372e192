"""Certificate benchmark: `fab renew --force` vs `certbot certonly --webroot`, same Pebble, fresh orders.

    python benchmarks/certificates/run.py [--runs 9] [--certbot /opt/certbot-bench/bin/certbot]

Starts its own sandbox with authorization reuse off (every order needs fresh HTTP-01 validations,
for both clients), deploys example_site once, then times, alternating:
  - `fab renew --force` (the whole certificate stage of a deploy: SSH, pre-check, ACME order,
    install behind `nginx -t`, reload, verification over https), as a blogger runs it;
  - `certbot certonly --webroot --force-renewal` into the same challenge folder, same nginx.
Also, in process: the certificate stage alone (pre-check, order, staging), the whole `renew --force`
without interpreter start-up, and the cost of the check when nothing is due (SSH round trips, time).
certbot is not a project dependency: install it in its own venv for this benchmark only:
    python -m venv /opt/certbot-bench && /opt/certbot-bench/bin/pip install certbot
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from deploy import certificates, pipeline  # noqa: E402
from deploy.connection import connect_all  # noqa: E402
from deploy.sandbox import start_sandbox, stop_sandbox  # noqa: E402
from deploy.settings import load_settings  # noqa: E402


def timed(argv, **kwargs) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{result.stdout}\n{result.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--certbot", default="/opt/certbot-bench/bin/certbot")
    args = parser.parse_args()
    if not Path(args.certbot).exists():
        raise SystemExit(f"certbot not found at {args.certbot}: python -m venv /opt/certbot-bench && "
                         "/opt/certbot-bench/bin/pip install certbot")

    # The project byte-compiled, as a wheel install leaves it (pip compiles at install time): an
    # editable install under PYTHONDONTWRITEBYTECODE would otherwise compile it in every process.
    compileall.compile_dir(ROOT / "deploy", quiet=1)
    # No authorization reuse: fresh validations for both. No nonce rejection: certbot retries a badNonce
    # only once, and at Pebble's default 5 % a run of certbot failed now and then.
    sb = start_sandbox(authz_reuse_percent=0, nonce_reject_percent=0)
    work = Path(tempfile.mkdtemp(prefix="cert-bench-"))
    try:
        blog = work / "blog"
        shutil.copytree(ROOT / "example_site", blog, ignore=shutil.ignore_patterns("output", "__pycache__"))
        target = blog / "sandbox-target.json"
        target.write_text(json.dumps(sb.add_site("bench")))
        env = dict(os.environ, PELICAN_HTTPS_SANDBOX=str(target))
        fab = [str(Path(sys.executable).with_name("fab")), "--settings", "sandboxconf.py"]
        timed([sys.executable, "-m", "pelican", "content", "-s", "sandboxconf.py"], cwd=blog, env=env)
        timed([fab[0], "deploy", *fab[1:]], cwd=blog, env=env)

        os.environ["PELICAN_HTTPS_SANDBOX"] = str(target)
        sys.path.insert(0, str(blog))
        os.chdir(blog)
        settings = load_settings(blog / "sandboxconf.py")
        domains = [a for d in settings.domains for a in ("-d", d)]
        cb = work / "certbot"
        certbot = [args.certbot, "certonly", "--webroot", "-w", str(settings.challenge_root), *domains,
                   "--server", settings.acme_directory, "--agree-tos", "--register-unsafely-without-email",
                   "--non-interactive", "--force-renewal", "--config-dir", str(cb / "config"),
                   "--work-dir", str(cb / "work"), "--logs-dir", str(cb / "logs")]
        certbot_env = dict(os.environ, REQUESTS_CA_BUNDLE=str(sb.acme_ca_bundle))
        # Warm-up (not counted): certbot registers its account; ours exists since the deploy.
        timed(certbot, env=certbot_env)
        timed([fab[0], "renew", "--force", *fab[1:]], cwd=blog, env=env)

        ours, theirs = [], []
        for i in range(args.runs):  # each goes first in turn
            for which in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
                if which == "ours":
                    ours.append(timed([fab[0], "renew", "--force", *fab[1:]], cwd=blog, env=env))
                else:
                    theirs.append(timed(certbot, env=certbot_env))

        # The certificate stage alone, in process (no interpreter start-up, no nginx or verification):
        # under the lock, the hosts' state read, then pre-check, ACME order (fresh authorizations),
        # key and chain staged on the server, as pipeline._certificate does when an order is due.
        stage = []
        servers = connect_all(settings)
        try:
            with pipeline.hold(servers, settings, pipeline.Progress()):
                for _ in range(args.runs):
                    start = time.perf_counter()
                    states = pipeline.read_states(servers, settings, pipeline.Progress())
                    certificates.stage(servers, settings, certificates.obtain(servers, states, settings))
                    stage.append(time.perf_counter() - start)
        finally:
            servers.close()
        in_process = []
        for _ in range(args.runs):
            start = time.perf_counter()
            pipeline.deploy(settings, upload_site=False, force_renew=True)
            in_process.append(time.perf_counter() - start)
        startup = [timed([fab[0], "--list"], cwd=blog, env=env) for _ in range(3)]

        # Nothing due: the check alone, in process (what a deploy adds for the certificate): the
        # host's state (one script run, which the deploy reads anyway), the CA's renewal info
        # (from the server's cache or the CA), the decision.
        servers = connect_all(settings)
        transport = next(iter(servers)).client.get_transport()
        opened = []
        original = transport.open_session
        transport.open_session = lambda *a, **k: opened.append(1) or original(*a, **k)
        checks = []
        try:
            for _ in range(args.runs):
                start = time.perf_counter()
                now = dt.datetime.now(dt.timezone.utc)
                states = pipeline.read_states(servers, settings, pipeline.Progress())
                info = certificates.renewal_info(servers, states, settings, now)
                plan = certificates.decide_group(states, settings, now, info)
                checks.append(time.perf_counter() - start)
                assert plan.certificate is not None and plan.decision.action == "keep", plan.decision
        finally:
            servers.close()
        idle_renew = [timed([fab[0], "renew", *fab[1:]], cwd=blog, env=env) for _ in range(3)]

        med = statistics.median
        report = {
            "runs": args.runs,
            "fab_renew_force_wall_s": {"median": round(med(ours), 3), "min": round(min(ours), 3), "max": round(max(ours), 3)},
            "certbot_certonly_webroot_wall_s": {"median": round(med(theirs), 3), "min": round(min(theirs), 3), "max": round(max(theirs), 3)},
            "ratio_fab_to_certbot": round(med(ours) / med(theirs), 3),
            "goal": "<= 0.5",
            "certificate_stage_in_process_s": {"median": round(med(stage), 3), "ratio_to_certbot": round(med(stage) / med(theirs), 3)},
            "renew_force_in_process_s": {"median": round(med(in_process), 3), "ratio_to_certbot": round(med(in_process) / med(theirs), 3)},
            "fab_start_up_only_s (fab --list)": round(med(startup), 3),
            "nothing_due_check": {"ssh_round_trips_per_check": len(opened) / args.runs,
                                  "median_s": round(med(checks), 4)},
            "fab_renew_nothing_due_wall_s": round(med(idle_renew), 3),
            "certbot": subprocess.run([args.certbot, "--version"], capture_output=True, text=True).stdout.strip(),
        }
        print(json.dumps(report, indent=2))
        print(f"\n{'median wall, s':<44}{'':>8}ratio to certbot")
        for name, value in (("fab renew --force (whole process)", med(ours)), ("certbot certonly --webroot", med(theirs)),
                            ("renew --force in process (no start-up)", med(in_process)),
                            ("certificate stage in process", med(stage))):
            print(f"{name:<44}{value:>7.2f}  {value / med(theirs):.2f}x")
        print(f"goal fab renew --force <= 0.5x certbot: {'met' if med(ours) / med(theirs) <= 0.5 else 'MISSED'}; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    finally:
        stop_sandbox(sb)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
