"""Upload benchmark: this project's release upload vs rsync with Pelican's Makefile flags.

    python3 benchmarks/upload/run.py [--articles 2000] [--runs 5]

Starts its own sandbox (needs root and the Debian packages of the sandbox, plus rsync),
generates a Pelican-shaped site (see generate.py: files written directly, not by Pelican),
then times three cases, each as whole processes (Python start-up and SSH connection included),
ours and rsync in alternating order within each run:

  full       first deploy into an empty server
  one-change one article changed
  no-change  nothing changed (ours with DEPLOY_SKIP_UNCHANGED=False: it still makes a new,
             complete, verified release; the default, True, is timed on its own line)

rsync runs as Pelican's Makefile has it: rsync -e ssh -P -rvzc --cvs-exclude --delete, over
OpenSSH with the sandbox's key and known_hosts; it writes straight into the folder it updates
(not atomic). Prints medians and the ratio ours/rsync per case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from deploy.sandbox import start_sandbox, stop_sandbox  # noqa: E402
from generate import generate  # noqa: E402


IN_PROCESS: list[float] = []  # the last in-process time our client reported


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    for line in result.stderr.splitlines():
        if line.startswith("in-process "):
            IN_PROCESS.append(float(line.split()[1]))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    sb = start_sandbox()
    try:
        site = generate(work / "output", args.articles)
        files = [p for p in site.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        values = sb.add_site("bench") | {"SITEURL": "https://bench.example", "DEPLOY_OUTPUT_PATH": str(site)}
        remote_root = Path(values["DEPLOY_REMOTE_ROOT"])
        configs = {}
        for skip in (False, True):
            configs[skip] = work / f"settings-skip-{skip}.json"
            configs[skip].write_text(json.dumps(values | {"DEPLOY_SKIP_UNCHANGED": skip}))
        ours = [sys.executable, str(HERE / "client.py")]
        ssh = (f"ssh -i {sb.ssh_key} -o UserKnownHostsFile={sb.known_hosts} -o StrictHostKeyChecking=yes "
               f"-o BatchMode=yes -p {sb.ssh_port}")
        rsync_target = remote_root / "rsync"
        rsync = ["rsync", "-e", ssh, "-P", "-rvzc", "--cvs-exclude", "--delete", f"{site}/",
                 f"{sb.ssh_user}@{sb.ssh_host}:{rsync_target}/"]

        def empty_server() -> None:
            # The sandbox's server is this machine: reset its folders directly (not timed).
            for path in (remote_root / "releases", rsync_target):
                shutil.rmtree(path, ignore_errors=True)
            (remote_root / "current").unlink(missing_ok=True)

        article = sorted(site.glob("post-*.html"))[args.articles // 3]
        original = article.read_text()
        counter = [0]

        def change_one() -> None:
            counter[0] += 1
            article.write_text(original.replace("</article>", f"<p>Edited ({counter[0]}).</p></article>", 1))

        results: dict[str, dict[str, list[float]]] = {c: {"ours": [], "rsync": [], "inproc": []} for c in ("full", "one-change", "no-change")}
        skip_times: list[float] = []
        print(f"site: {len(files)} files, {size / 1e6:.1f} MB ({args.articles} articles); {args.runs} runs per case; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        for run in range(args.runs):
            order = ["ours", "rsync"] if run % 2 == 0 else ["rsync", "ours"]
            for case in ("full", "one-change", "no-change"):
                if case == "full":
                    empty_server()
                elif case == "one-change":
                    change_one()
                for tool in order:
                    argv = ours + [str(configs[False])] if tool == "ours" else rsync
                    results[case][tool].append(timed(argv))
                    if tool == "ours":
                        results[case]["inproc"].append(IN_PROCESS[-1])
            skip_times.append(timed(ours + [str(configs[True])]))
            print(f"run {run + 1}: " + "; ".join(f"{c} ours {r['ours'][-1]:.2f}s rsync {r['rsync'][-1]:.2f}s"
                                                 for c, r in results.items()), flush=True)
        print()
        print("Medians of whole-process wall times. in-process: the same upload timed inside our process,")
        print("from opening SSH to releasing the lock (what the stage adds to `fab deploy`, which has")
        print("started Python and its imports anyway).")
        print(f"{'case':<12}{'ours':>9}{'rsync':>9}{'ratio':>8}{'in-process':>12}{'ratio':>8}")
        for case, r in results.items():
            a, b, c = (statistics.median(r[k]) for k in ("ours", "rsync", "inproc"))
            print(f"{case:<12}{a:>8.2f}s{b:>8.2f}s{a / b:>7.2f}x{c:>11.2f}s{c / b:>7.2f}x")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        b = statistics.median(results["no-change"]["rsync"])
        a = statistics.median(skip_times)
        print(f"{'no-change*':<12}{a:>8.2f}s{b:>8.2f}s{a / b:>7.2f}x   (* DEPLOY_SKIP_UNCHANGED=True, the default: no new release)")
    finally:
        stop_sandbox(sb)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
