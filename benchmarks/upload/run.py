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

Our deploy leaves work running on the server after the client exits (pruned releases deleted,
the next release's hard links made), under the deploy lock: before the next timed command the
benchmark waits for that lock (not timed), so it never runs during someone else's timing.

--baseline DIR also times another version of this project (DIR holds its deploy/ and
benchmarks/upload/client.py, e.g. from `git archive`), in the same runs, deploying to a site
of its own: a before/after comparison under the same machine load.
"""

from __future__ import annotations

import argparse
import compileall
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
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from deploy.sandbox import start_sandbox, stop_sandbox  # noqa: E402
from deploy.settings import settings_from_mapping  # noqa: E402
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


def wait_idle(values: dict) -> None:
    """Wait until the site's deploy lock is free: the deploy's background work is done (not timed)."""
    lock_file = Path(settings_from_mapping(values).lock_file)
    if lock_file.exists():  # (never create it: it must stay the deploy user's)
        subprocess.run(["flock", str(lock_file), "true"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout's root, timed as 'before'")
    args = parser.parse_args()

    # The project byte-compiled, as a wheel install leaves it (pip compiles at install time): an
    # editable install under PYTHONDONTWRITEBYTECODE would otherwise compile it in every process.
    compileall.compile_dir(ROOT / "deploy", quiet=1)
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
        tools = {"ours": (ours, configs, values)}
        if args.baseline:
            before = sb.add_site("bench-before") | {"SITEURL": "https://before.example", "DEPLOY_OUTPUT_PATH": str(site)}
            before_configs = {}
            for skip in (False, True):
                before_configs[skip] = work / f"before-skip-{skip}.json"
                before_configs[skip].write_text(json.dumps(before | {"DEPLOY_SKIP_UNCHANGED": skip}))
            tools["before"] = ([sys.executable, str(args.baseline.resolve() / "benchmarks" / "upload" / "client.py")], before_configs, before)
        ssh = (f"ssh -i {sb.ssh_key} -o UserKnownHostsFile={sb.known_hosts} -o StrictHostKeyChecking=yes "
               f"-o BatchMode=yes -p {sb.ssh_port}")
        rsync_target = remote_root / "rsync"
        rsync = ["rsync", "-e", ssh, "-P", "-rvzc", "--cvs-exclude", "--delete", f"{site}/",
                 f"{sb.ssh_user}@{sb.ssh_host}:{rsync_target}/"]

        def empty_server() -> None:
            # The sandbox's server is this machine: reset its folders directly (not timed).
            for _, _, tool_values in tools.values():
                root = Path(tool_values["DEPLOY_REMOTE_ROOT"])
                wait_idle(tool_values)
                shutil.rmtree(root / "releases", ignore_errors=True)
                (root / "current").unlink(missing_ok=True)
            shutil.rmtree(rsync_target, ignore_errors=True)

        article = sorted(site.glob("post-*.html"))[args.articles // 3]
        original = article.read_text()
        counter = [0]

        def change_one() -> None:
            counter[0] += 1
            article.write_text(original.replace("</article>", f"<p>Edited ({counter[0]}).</p></article>", 1))

        names = list(tools) + ["rsync"]
        results: dict[str, dict[str, list[float]]] = {c: {k: [] for k in names + ["inproc"]} for c in ("full", "one-change", "no-change")}
        skip_times: dict[str, list[float]] = {t: [] for t in tools}
        print(f"site: {len(files)} files, {size / 1e6:.1f} MB ({args.articles} articles); {args.runs} runs per case; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]  # each tool goes first in turn
            for case in ("full", "one-change", "no-change"):
                if case == "full":
                    empty_server()
                elif case == "one-change":
                    change_one()
                for tool in order:
                    if tool == "rsync":
                        results[case][tool].append(timed(rsync))
                        continue
                    argv, tool_configs, tool_values = tools[tool]
                    results[case][tool].append(timed(argv + [str(tool_configs[False])]))
                    wait_idle(tool_values)
                    if tool == "ours":
                        results[case]["inproc"].append(IN_PROCESS[-1])
            for tool, (argv, tool_configs, tool_values) in tools.items():
                skip_times[tool].append(timed(argv + [str(tool_configs[True])]))
                wait_idle(tool_values)
            print(f"run {run + 1}: " + "; ".join(f"{c} " + " ".join(f"{t} {r[t][-1]:.2f}s" for t in names)
                                                 for c, r in results.items()), flush=True)
        print()
        print("Medians of whole-process wall times. in-process: the same upload timed inside our process,")
        print("from opening SSH to releasing the lock (what the stage adds to `fab deploy`, which has")
        print("started Python and its imports anyway).")
        extra = "before" in tools
        print(f"{'case':<12}{'ours':>9}{'rsync':>9}{'ratio':>8}{'in-process':>12}{'ratio':>8}" + (f"{'before':>9}{'ratio':>8}" if extra else ""))
        for case, r in results.items():
            a, b, c = (statistics.median(r[k]) for k in ("ours", "rsync", "inproc"))
            line = f"{case:<12}{a:>8.2f}s{b:>8.2f}s{a / b:>7.2f}x{c:>11.2f}s{c / b:>7.2f}x"
            if extra:
                d = statistics.median(r["before"])
                line += f"{d:>8.2f}s{d / b:>7.2f}x"
            print(line)
        b = statistics.median(results["no-change"]["rsync"])
        a = statistics.median(skip_times["ours"])
        line = f"{'no-change*':<12}{a:>8.2f}s{b:>8.2f}s{a / b:>7.2f}x{'':>20}"
        if extra:
            d = statistics.median(skip_times["before"])
            line += f"{d:>8.2f}s{d / b:>7.2f}x"
        print(line + "\n  (* DEPLOY_SKIP_UNCHANGED=True, the default: no new release)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        # What every Python process pays here before running a line of ours: site-packages' .pth
        # files (this machine has an editable install and a certifi hook) vs. none at all.
        start = {flag: statistics.median(timed([sys.executable, *flag, "-c", "pass"]) for _ in range(11))
                 for flag in ((), ("-S",))}
        print(f"python start-up on this machine: {start[()]:.3f} s (`python3 -c pass`); "
              f"{start[('-S',)]:.3f} s without site-packages' .pth files (`python3 -S -c pass`)")
    finally:
        stop_sandbox(sb)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
