"""Upload benchmark: `fab deploy` (whole processes) against rsync with Pelican's Makefile flags.

    ./run bench upload [--runs 5] [--articles 2000] [--big-mb 500] [--no-big]

Starts its own sandbox (one host), generates two Pelican-shaped output folders (generate.py;
files written directly, not by Pelican): a blog of --articles pages (~49 MB with its images) and
a BIG site of --big-mb MB, most of it photos of random bytes (already compressed, like JPEGs),
plus a few thousand pages. Three tools send the same folder to the same sshd, with the same key
and strict known_hosts, each into its own place on the server:

  fab      `fab deploy` as a blogger runs it (a fabfile and a settings file; DEPLOY_SKIP_UNCHANGED
           left at its default, True): Python start-up, SSH, lock, state, upload, certificate
           check (kept), commit, verification over http and https, prune;
  upload   client.py: the same upload as its own process, without the certificate, the vhost
           and the verification (what the upload stage alone costs, start-up included);
  rsync    rsync -e ssh -P -rvzc --cvs-exclude --delete (Pelican's Makefile), over OpenSSH; it
           writes straight into the folder it updates (not atomic, nothing verified).

Cases, each tool in turn going first in each run:
  (a) one change   one page of the blog edited
  (b) no change    nothing edited (fab and upload: no new release, the default)
  (c) big first    the big site into an empty server (fab's certificate and vhost stay from a
                   first deploy made before timing; only the release is gone)
  then, on the big site: one change, no change (rsync -c hashes the whole site on both sides).

Prints medians (and min-max) of wall time, the ratios to rsync, and the goals.
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from common import (FAB, ROOT, fab, empty_site, in_process, load, median, rotated, rsync, run,  # noqa: E402
                    spread, write_settings)
from deploy.sandbox import start_sandbox, stop_sandbox  # noqa: E402
from generate import generate, generate_big  # noqa: E402

TOOLS = ["fab", "upload", "rsync"]
GOALS = {"a one change": 1.25, "b no change": 1.25, "c big first": 1.5}


class Target:
    """One site: its output folder, one sandbox site per tool, and how to edit one of its pages."""

    def __init__(self, sb, blog: Path, name: str, output: Path):
        self.output = output
        self.settings = {}
        for tool in ("fab", "upload"):
            site = f"{name}-{tool}"
            values = sb.add_site(site) | {"SITEURL": f"https://{site}.bench.test:{sb.https_port}",
                                          "DEPLOY_OUTPUT_PATH": str(output)}
            self.settings[tool] = (values, write_settings(blog, site.replace("-", "_"), values))
        self.rsync_target = Path(self.settings["fab"][0]["DEPLOY_REMOTE_ROOT"]) / "rsync"
        self.rsync = rsync(sb, sb.ssh_host, output, self.rsync_target)
        self.page = sorted(output.glob("post-*.html"))[len(list(output.glob("post-*.html"))) // 3]
        self.original = self.page.read_text()
        self.edits = 0

    def argv(self, tool: str, blog: Path) -> list[str]:
        if tool == "rsync":
            return self.rsync
        if tool == "fab":
            return fab("deploy", self.settings["fab"][1])
        return [sys.executable, str(HERE / "client.py"), self.settings["upload"][1].name]

    def edit(self) -> None:
        self.edits += 1
        self.page.write_text(self.original.replace("</article>", f"<p>Edited ({self.edits}).</p></article>", 1))

    def empty(self, tool: str) -> None:
        if tool == "rsync":
            shutil.rmtree(self.rsync_target, ignore_errors=True)
        else:
            empty_site(self.settings[tool][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--no-big", action="store_true", help="only cases (a) and (b)")
    parser.add_argument("--stages", action="store_true", help="print the upload client's stage times of each run")
    args = parser.parse_args()

    compileall.compile_dir(ROOT / "deploy", quiet=1)  # as a wheel install leaves it
    work = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    work.chmod(0o755)
    blog = work / "blog"
    sb = start_sandbox()
    try:
        targets = {"blog": Target(sb, blog, "blog", generate(work / "blog-output", args.articles))}
        if not args.no_big:
            targets["big"] = Target(sb, blog, "big", generate_big(work / "big-output", args.big_mb))
        for name, t in targets.items():
            files = [p for p in t.output.rglob("*") if p.is_file()]
            print(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB", flush=True)
            for tool in TOOLS:  # first deploys (not timed): certificate, vhost, first release
                run(t.argv(tool, blog), cwd=blog)

        cases = [("a one change", "blog", "edit"), ("b no change", "blog", None)]
        if not args.no_big:
            cases += [("c big first", "big", "empty"), ("big one change", "big", "edit"), ("big no change", "big", None)]
        times = {case: {tool: [] for tool in TOOLS + ["upload in-process"]} for case, _, _ in cases}
        print(f"{args.runs} runs; {load()}", flush=True)
        for i in range(args.runs):
            for case, name, prepare in cases:
                t = targets[name]
                if prepare == "edit":
                    t.edit()
                for tool in rotated(TOOLS, i):
                    if prepare == "empty":
                        t.empty(tool)
                    seconds, result = run(t.argv(tool, blog), cwd=blog)
                    times[case][tool].append(seconds)
                    if tool == "upload":
                        times[case]["upload in-process"].append(in_process(result))
                        if args.stages:
                            print(f"  {case}: upload " + " ".join(line for line in result.stderr.splitlines()
                                                                  if line.startswith("stages ")), flush=True)
            print(f"run {i + 1}: " + "; ".join(f"{case}: " + " ".join(f"{tool} {times[case][tool][-1]:.2f}"
                                                                      for tool in TOOLS) for case, _, _ in cases),
                  flush=True)
        report(times, args.runs)
        startup = [run([FAB, "--list"], cwd=blog)[0] for _ in range(5)]
        bare = [run([sys.executable, "-c", "pass"])[0] for _ in range(5)]
        print(f"start-up: `fab --list` {median(startup):.3f} s, `python -c pass` {median(bare):.3f} s; {load()}")
    finally:
        stop_sandbox(sb)
        shutil.rmtree(work, ignore_errors=True)


def paired(a: list[float], b: list[float]) -> float:
    """The median of the run-by-run ratios a/b (each pair ran back to back, under the same load)."""
    return median([x / y for x, y in zip(a, b)])


def report(times: dict, runs: int) -> None:
    print(f"\nMedians of {runs} runs, whole processes, wall seconds (min-max); ratio to rsync")
    print(f"{'case':<16}{'fab deploy':>18}{'upload alone':>18}{'(in-process)':>14}{'rsync':>18}"
          f"{'fab/rsync':>11}{'upload/rsync':>14}  goal")
    for case, t in times.items():
        r = median(t["rsync"])
        pairs = f"(run by run: fab {paired(t['fab'], t['rsync']):.2f}x, upload {paired(t['upload'], t['rsync']):.2f}x)"
        f, u, ip = median(t["fab"]), median(t["upload"]), median(t["upload in-process"])
        goal = GOALS.get(case)
        verdict = ""
        if goal:
            verdict = f"<= {goal}x: upload {'met' if u / r <= goal else 'MISSED'}, fab {'met' if f / r <= goal else 'MISSED'}"
            if case == "b no change":
                verdict += f"; fab <= 2x: {'met' if f / r <= 2 else 'MISSED'}"
        print(f"{case:<16}{f:>6.2f} ({spread(t['fab']):>9}){u:>6.2f} ({spread(t['upload']):>9}){ip:>13.2f} "
              f"{r:>6.2f} ({spread(t['rsync']):>9}){f / r:>10.2f}x{u / r:>13.2f}x  {verdict} {pairs}")


if __name__ == "__main__":
    main()
