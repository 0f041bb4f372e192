"""Measure the https rewriter.  One command:

    python3 benchmarks/rewrite/run.py              # 2,000 articles, 3 builds each
    python3 benchmarks/rewrite/run.py --articles 200 --runs 1   # quick
    python3 benchmarks/rewrite/run.py --baseline DIR   # + another version

``--baseline DIR``: DIR holds another version of the plugin (e.g.
``git archive HEAD pelican_https | tar -x -C DIR``); each run then also
builds with that version, so both are timed in the same runs.

(a) The plugin's share of Pelican's build wall time: the generated site is
    built with PLUGINS=["pelican_https"] and without, alternately, each build
    a fresh ``pelican`` process on an emptied output directory; medians.
    The added share is compared with the noise of the runs (half the spread
    of the per-run differences, with minus without): a difference inside it
    is reported as below noise, not as a measured share.  The plugin also
    times itself (seconds spent in its own code, by the wall clock around
    it, from its JSON report: its import, the content pass, taking each
    output file's text from Pelican, its rewrite and report, the
    end-of-build pass and building the report; not Pelican's calls into its
    receivers and writer, nor logging the report's lines and writing the
    JSON file): a second, far less noisy, lower estimate of the same share
    (it runs in Pelican's one thread: its wall time is its CPU time, or more
    if the machine runs something else meanwhile), reported as a share
    of the median build's CPU time without the plugin, and run by run as a
    share of the rest of the same build's CPU time (the machine's speed can
    drift between builds; within one build it moves both).  The load average
    is printed before and after: on a busy machine, trust the CPU figures.
(b) The plugin's pass vs a BeautifulSoup parse-and-reserialize pass over the
    same output (the files of the build without the plugin, in memory; the
    BeautifulSoup pass upgrades the same attributes with html.parser).
    Needs ``pip install beautifulsoup4`` (a benchmark-only dependency).

Goals: (a) <= 2 %, (b) >= 20x faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from generate import HOST, generate  # noqa: E402

from pelican_https.rewrite import Rules, rewrite, syntax_for  # noqa: E402

RULES = Rules(
    own_hosts=frozenset({HOST, "www." + HOST}),
    upgrade_hosts=frozenset({"cdn.example.org"}),
)


def build(site: str, output: str, plugin: bool,
          plugin_path: str = REPO) -> tuple[float, float, dict | None]:
    """(wall seconds, CPU seconds of the pelican process, the plugin's report);
    the plugin is imported from ``plugin_path``."""
    shutil.rmtree(output, ignore_errors=True)
    report = os.path.join(site, "https-report.json")
    command = [sys.executable, "-m", "pelican", "content", "-s", "pelicanconf.py",
               "-o", output, "-q"]
    if plugin:
        command += ["-e", 'PLUGINS=["pelican_https"]', f'HTTPS_REPORT_PATH="{report}"']
    else:
        command += ["-e", "PLUGINS=[]"]
    env = dict(os.environ, PYTHONPATH=plugin_path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=site, env=env, check=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not plugin:
        return elapsed, cpu, None
    with open(report, encoding="utf-8") as f:
        return elapsed, cpu, json.load(f)


def load_output(output: str) -> list[tuple[str, str]]:
    files = []
    for directory, _, names in os.walk(output):
        for name in sorted(names):
            path = os.path.join(directory, name)
            if syntax_for(path):
                with open(path, "rb") as f:
                    files.append((path, f.read().decode("utf-8", "surrogateescape")))
    return files


def plugin_pass(files) -> tuple[float, int]:
    started = time.process_time()
    upgraded = 0
    verdicts: dict = {}  # as in a build: one memo for all files
    for path, text in files:
        upgraded += rewrite(text, RULES, syntax_for(path), verdicts).upgraded
    return time.process_time() - started, upgraded


URL_ATTRIBUTES = ("href", "src", "srcset", "poster", "action", "content", "data")


def beautifulsoup_pass(files) -> tuple[float, int]:
    import warnings

    from bs4 import BeautifulSoup

    try:  # feeds parsed with html.parser, as typical plugins do: no warning per feed
        from bs4 import XMLParsedAsHTMLWarning
        warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
    except ImportError:
        pass

    hosts = ("http://" + HOST, "http://www." + HOST, "http://cdn.example.org")
    started = time.process_time()
    upgraded = 0
    for path, text in files:
        if syntax_for(path) not in ("html", "xml"):
            continue
        soup = BeautifulSoup(text, "html.parser")
        for tag in soup.find_all(True):
            for name in URL_ATTRIBUTES:
                value = tag.get(name)
                if isinstance(value, str) and value.startswith(hosts):
                    tag[name] = "https" + value[4:]
                    upgraded += 1
        str(soup)
    return time.process_time() - started, upgraded


def _added(without: list[float], with_: list[float]) -> str:
    """The added share of the medians, or "below noise" when the per-run
    differences (runs are interleaved: run i of each is a pair) spread wider
    than the median difference."""
    base = statistics.median(without)
    differences = [b - a for a, b in zip(without, with_)]
    added = statistics.median(differences)
    noise = (max(differences) - min(differences)) / 2
    shown = (f"added {added:+.2f} s = {100 * added / base:+.2f} % "
             f"(noise +/- {100 * noise / base:.2f} %, median of {len(differences)} paired runs)")
    if len(differences) < 2:
        return shown + ": one run, no noise estimate"
    if abs(added) <= noise:
        return shown + ": below noise, no share measured"
    return shown


def _own_share(own: list[float], build_cpu: list[float]) -> str:
    """The plugin's own time as a share of the rest of the same build's CPU
    time, run by run: the median and the range."""
    shares = sorted(100 * o / (b - o) for o, b in zip(own, build_cpu))
    return (f"{statistics.median(shares):.2f} % "
            f"(runs {shares[0]:.2f}-{shares[-1]:.2f} %, goal <= 2 %)")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def _own_seconds(report: dict) -> float:
    """The plugin's own time from its JSON report ("cpu_seconds" in versions
    before the counter read the wall clock: a --baseline may be one)."""
    return report["own_seconds"] if "own_seconds" in report else report["cpu_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the https rewriter.")
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="builds with and without, each")
    parser.add_argument("--workdir", help="keep the site here (default: a temporary dir)")
    parser.add_argument("--skip-soup", action="store_true", help="skip part (b)")
    parser.add_argument("--baseline", help="a directory holding another version of "
                        "pelican_https, built in the same runs")
    args = parser.parse_args()

    print(f"load average before: {_load()}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="https-bench-")
    site = os.path.join(workdir, "site")
    generate(site, args.articles)
    print(f"site: {args.articles} articles in {site}")

    plain, with_plugin, plain_cpu, with_cpu, inside = [], [], [], [], []
    base, base_cpu, base_inside = [], [], []
    for run in range(args.runs):
        if args.baseline:
            seconds, cpu, report = build(site, os.path.join(site, "output-baseline"),
                                         plugin=True, plugin_path=os.path.abspath(args.baseline))
            base.append(seconds)
            base_cpu.append(cpu)
            base_inside.append(_own_seconds(report))
            print(f"run {run + 1}: baseline {seconds:.2f} s (CPU {cpu:.2f} s; plugin's own "
                  f"{base_inside[-1]:.3f} s; {report['files_scanned']} files, "
                  f"{report['urls_upgraded']} URLs upgraded)")
        seconds, cpu, _ = build(site, os.path.join(site, "output-plain"), plugin=False)
        plain.append(seconds)
        plain_cpu.append(cpu)
        seconds, cpu, report = build(site, os.path.join(site, "output-https"), plugin=True)
        with_plugin.append(seconds)
        with_cpu.append(cpu)
        inside.append(_own_seconds(report))
        print(f"run {run + 1}: without {plain[-1]:.2f} s (CPU {plain_cpu[-1]:.2f} s), "
              f"with {with_plugin[-1]:.2f} s (CPU {with_cpu[-1]:.2f} s; plugin's own "
              f"{inside[-1]:.3f} s; {report['files_scanned']} files, "
              f"{report['urls_upgraded']} URLs upgraded)")
    median = statistics.median
    print(f"(a) wall: build without plugin median {median(plain):.2f} s, with {median(with_plugin):.2f} s: "
          f"{_added(plain, with_plugin)} (goal <= 2 %)")
    print(f"    CPU:  without {median(plain_cpu):.2f} s, with {median(with_cpu):.2f} s: "
          f"{_added(plain_cpu, with_cpu)}")
    print(f"    plugin's own time (it times itself): median {median(inside):.3f} s = "
          f"{100 * median(inside) / median(plain_cpu):.2f} % of the build's CPU without it; "
          f"per run, of the rest of the same build's CPU: median {_own_share(inside, with_cpu)}")
    if args.baseline:
        print(f"    baseline ({args.baseline}): wall median {median(base):.2f} s "
              f"({100 * (median(base) - median(plain)) / median(plain):+.2f} %), CPU "
              f"{median(base_cpu):.2f} s "
              f"({100 * (median(base_cpu) - median(plain_cpu)) / median(plain_cpu):+.2f} %), "
              f"plugin's own time median {median(base_inside):.3f} s = "
              f"{100 * median(base_inside) / median(plain_cpu):.2f} %; per run "
              f"{_own_share(base_inside, base_cpu)}")
    print("    (CPU times are robust to other load on the machine; wall times are not)")
    print(f"load average after the builds: {_load()}")

    if args.skip_soup:
        return
    files = load_output(os.path.join(site, "output-plain"))
    size = sum(len(text) for _, text in files) / 1e6
    ours, upgraded = plugin_pass(files)
    try:
        soup, soup_upgraded = beautifulsoup_pass(files)
    except ImportError:
        print(f"(b) plugin pass {ours:.3f} s CPU over {len(files)} files; the BeautifulSoup pass "
              f"needs beautifulsoup4 in {sys.executable} (pip install beautifulsoup4): skipped")
        return
    print(f"(b) CPU time over {len(files)} files ({size:.1f} M characters): plugin pass {ours:.3f} s "
          f"({upgraded} URLs), BeautifulSoup pass {soup:.2f} s ({soup_upgraded} URLs): "
          f"{soup / ours:.0f}x faster (goal >= 20x); the plugin's own time in the build "
          f"(median {median(inside):.3f} s) is {soup / median(inside):.0f}x less")


if __name__ == "__main__":
    main()
