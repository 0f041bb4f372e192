"""Group benchmark: one changed page deployed to 3 hosts, against 1 host and against an rsync loop.

    ./run bench group [--runs 5] [--articles 2000]

Starts its own sandbox with three servers (``start_sandbox(hosts=3)``: host 0 at 127.0.0.1,
hosts 1 and 2 in network namespaces of their own, each its own sshd, nginx and files),
generates a Pelican-shaped blog (benchmarks/upload/generate.py, ~49 MB with its images) and
first deploys it everywhere (not timed). Then, in each run, one page is edited and each of these
runs once, whole processes, each going first in turn:

  fab 3 hosts     `fab deploy` of a site with DEPLOY_HOSTS = the three hosts (the site's name
                  resolves to all three): lock on each, upload to each in parallel, certificate
                  check, commit on all, verification of each host at its own address;
  fab 1 host      `fab deploy` of the same output to a site on host 0 only;
  upload 3 / 1    the upload alone (benchmarks/upload/client.py), to the three hosts / one;
  rsync loop      what a user would write today: `for h in web1 web2 web3; do rsync ... ; done`
                  with Pelican's flags (-e ssh -P -rvzc --cvs-exclude --delete), one host after
                  another (neither atomic nor consistent across hosts).

ACME orders: the first deploy of the 3-host site (a fresh site, no certificate) is counted twice:
"order https://" lines in fab's output, and orders Pebble added to its db (its log).
"""

from __future__ import annotations

import argparse
import compileall
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "upload"))

from common import fab, in_process, load, median, rotated, rsync, run, spread, write_settings  # noqa: E402
from deploy.sandbox import start_sandbox, stop_sandbox  # noqa: E402
from generate import generate  # noqa: E402

CLIENT = ROOT / "benchmarks" / "upload" / "client.py"
HOSTS = 3
TOOLS = ["fab 3 hosts", "fab 1 host", "upload 3 hosts", "upload 1 host", "rsync loop"]


def one_host(values: dict, sb) -> dict:
    """The same site settings, to host 0 alone (nginx there listens on "*" as for the group)."""
    values = dict(values)
    del values["DEPLOY_HOSTS"]
    return values | {"DEPLOY_HOST": sb.ssh_host, "DEPLOY_PORT": sb.ssh_port, "DEPLOY_VERIFY_ADDRESS": sb.ssh_host}


def pebble_orders(sb) -> int:
    """Orders the CA created: Pebble logs 'Added order "<id>" to the db' once per order (a POST to
    /order-plz that Pebble refused with badNonce and the client retried creates none)."""
    log = sb.root / "pebble" / "pebble.log"
    return sum(1 for line in log.read_text(errors="replace").splitlines() if 'Added order "' in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--articles", type=int, default=2000)
    args = parser.parse_args()

    compileall.compile_dir(ROOT / "deploy", quiet=1)  # as a wheel install leaves it
    work = Path(tempfile.mkdtemp(prefix="group-bench-"))
    work.chmod(0o755)
    blog = work / "blog"
    sb = start_sandbox(hosts=HOSTS)
    try:
        output = generate(work / "output", args.articles)
        files = [p for p in output.rglob("*") if p.is_file()]
        print(f"blog: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB; "
              f"hosts {', '.join(h.address for h in sb.hosts)}", flush=True)
        conf = {}
        for name, hosts in (("g3", HOSTS), ("g1", 1), ("u3", HOSTS), ("u1", 1)):
            domain = f"{name}.bench.test"
            values = sb.add_site(name) | {"SITEURL": f"https://{domain}:{sb.https_port}",
                                          "DEPLOY_OUTPUT_PATH": str(output)}
            if hosts == 1:
                values = one_host(values, sb)
            else:
                sb.set_dns(domain, [h.address for h in sb.hosts])  # round-robin over the group
            conf[name] = (values, write_settings(blog, name, values))
        rsync_target = Path(conf["g3"][0]["DEPLOY_REMOTE_ROOT"]) / "rsync"  # the same path on each host
        loop = "; ".join(shlex.join(rsync(sb, h.address, output, rsync_target)) + " || exit 1" for h in sb.hosts)
        argv = {
            "fab 3 hosts": fab("deploy", conf["g3"][1]),
            "fab 1 host": fab("deploy", conf["g1"][1]),
            "upload 3 hosts": [sys.executable, str(CLIENT), conf["u3"][1].name],
            "upload 1 host": [sys.executable, str(CLIENT), conf["u1"][1].name],
            "rsync loop": ["sh", "-c", loop],
        }

        # First deploys (not timed); the 3-host one is a fresh site: count its ACME orders.
        before = pebble_orders(sb)
        first3, result = run(argv["fab 3 hosts"], cwd=blog)
        fab_orders = (result.stdout + result.stderr).count("order https://")
        ca_orders = pebble_orders(sb) - before
        before = pebble_orders(sb)
        first1, result1 = run(argv["fab 1 host"], cwd=blog)
        one_orders = ((result1.stdout + result1.stderr).count("order https://"), pebble_orders(sb) - before)
        for tool in TOOLS[2:]:
            run(argv[tool], cwd=blog)
        print(f"first deploy to {HOSTS} hosts: {first3:.2f} s, ACME orders: {fab_orders} in fab's output, "
              f"{ca_orders} at the CA (Pebble's log); to 1 host: {first1:.2f} s, orders {one_orders[0]} / {one_orders[1]}",
              flush=True)

        page = sorted(output.glob("post-*.html"))[args.articles // 3]
        original = page.read_text()
        times = {tool: [] for tool in TOOLS + ["upload 3 in-process", "upload 1 in-process"]}
        print(f"{args.runs} runs; {load()}", flush=True)
        for i in range(args.runs):
            page.write_text(original.replace("</article>", f"<p>Edited ({i}).</p></article>", 1))
            for tool in rotated(TOOLS, i):
                seconds, result = run(argv[tool], cwd=blog)
                times[tool].append(seconds)
                if tool.startswith("upload"):
                    times[f"upload {tool.split()[1]} in-process"].append(in_process(result))
            print(f"run {i + 1}: " + "; ".join(f"{t} {times[t][-1]:.2f}" for t in TOOLS), flush=True)

        m = {tool: median(xs) for tool, xs in times.items()}
        print(f"\nOne changed page, medians of {args.runs} runs, whole processes, wall seconds (min-max); {load()}")
        for tool in TOOLS:
            print(f"  {tool:<16}{m[tool]:>6.2f} s ({spread(times[tool])})")
        print(f"  (upload in-process: 3 hosts {m['upload 3 in-process']:.2f} s, 1 host {m['upload 1 in-process']:.2f} s)")
        g = m["fab 3 hosts"] / m["fab 1 host"]
        r = m["fab 3 hosts"] / m["rsync loop"]
        print(f"fab 3 hosts / fab 1 host:   {g:.2f}x  (goal <= 1.3x: {'met' if g <= 1.3 else 'MISSED'})")
        print(f"fab 3 hosts / rsync loop:   {r:.2f}x  (goal < 1x, faster: {'met' if r < 1 else 'MISSED'})")
        pairs = {k: median([x / y for x, y in zip(times[a], times[b])]) for k, (a, b) in
                 {"3/1": ("fab 3 hosts", "fab 1 host"), "3/loop": ("fab 3 hosts", "rsync loop")}.items()}
        print(f"  run by run (median of each run's ratio): fab 3/1 {pairs['3/1']:.2f}x, fab 3/rsync loop {pairs['3/loop']:.2f}x")
        print(f"upload 3 / upload 1:        {m['upload 3 hosts'] / m['upload 1 host']:.2f}x;  "
              f"upload 3 / rsync loop: {m['upload 3 hosts'] / m['rsync loop']:.2f}x")
        print(f"ACME orders for a first deploy to {HOSTS} hosts: {fab_orders} (fab's output), {ca_orders} (Pebble's log); "
              f"goal 1: {'met' if fab_orders == ca_orders == 1 else 'MISSED'}")
    finally:
        stop_sandbox(sb)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
