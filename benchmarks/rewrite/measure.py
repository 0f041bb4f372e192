"""What the plugin benchmarks share: whole ``pelican`` processes built with
and without the plugin, interleaved, their CPU and wall times and medians; and
the rewriter's pass against a BeautifulSoup pass over the same output."""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from pelican_https.rewrite import Rules, rewrite, syntax_for  # noqa: E402


def _pelican(output: str, plugin: bool, quiet: bool, extra: list[str]) -> tuple[list[str], dict]:
    command = [sys.executable, "-m", "pelican", "content", "-s", "pelicanconf.py", "-o", output]
    command += ["-q"] if quiet else []
    command += ["-e", 'PLUGINS=["pelican_https"]', *extra] if plugin else ["-e", "PLUGINS=[]"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    env.update(PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200",
               PYTHONHASHSEED="0")
    return command, env


def build(site: str, output: str, plugin: bool, quiet: bool, extra: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, what it printed) of one ``pelican`` process
    on an emptied output folder."""
    shutil.rmtree(output, ignore_errors=True)
    command, env = _pelican(output, plugin, quiet, extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=site, env=env, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, done.stdout + done.stderr


def interleaved(site: str, runs: int, quiet: bool, extra: list[str] = ()) -> dict:
    """Builds without and with the plugin, alternately, each going first in
    turn (a build right after another measured up to 10 % slower here: the
    one before's files are still being written back); the times of each and
    the last build's output with the plugin."""
    times = {"without": [], "with": [], "without_wall": [], "with_wall": []}
    printed = ""
    for run in range(runs):
        for plugin in ((False, True) if run % 2 == 0 else (True, False)):
            name = "with" if plugin else "without"
            wall, cpu, printed_now = build(site, os.path.join(site, f"output-{name}"), plugin, quiet, list(extra))
            times[name].append(cpu)
            times[f"{name}_wall"].append(wall)
            if plugin:
                printed = printed_now
        print(f"run {run + 1}: CPU without {times['without'][-1]:.2f} s, with {times['with'][-1]:.2f} s "
              f"(wall {times['without_wall'][-1]:.2f} s, {times['with_wall'][-1]:.2f} s)", flush=True)
    times["printed"] = printed
    return times


def instructions(site: str, quiet: bool, extra: list[str] = ()) -> str:
    """The plugin's share of the instructions a whole ``pelican`` process
    runs (valgrind's cachegrind, no cache simulation): unlike CPU time,
    the same from run to run whatever else the machine runs, so one pair of
    builds tells what many noisy ones cannot.  About 20 times slower."""
    counts = {}
    for plugin in (False, True):
        output = os.path.join(site, "output-valgrind")
        shutil.rmtree(output, ignore_errors=True)
        command, env = _pelican(output, plugin, quiet, list(extra))
        done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                               "--cachegrind-out-file=/dev/null", *command],
                              cwd=site, env=env, check=True, capture_output=True, text=True)
        refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        counts[plugin] = int(refs.group(1).replace(",", ""))
    added = 100 * (counts[True] - counts[False]) / counts[False]
    return (f"instructions of the whole process: without {counts[False] / 1e9:.2f} G, "
            f"with {counts[True] / 1e9:.2f} G: {added:+.2f} %")


def share(times: dict, goal: float) -> str:
    """The plugin's added share of the build's CPU: the difference of the
    medians, and the median of the per-run differences (run i of each is a
    pair), with their spread."""
    median = statistics.median
    without, with_ = times["without"], times["with"]
    by_medians = 100 * (median(with_) - median(without)) / median(without)
    pairs = sorted(100 * (b - a) / a for a, b in zip(without, with_))
    return (f"CPU median without {median(without):.2f} s, with {median(with_):.2f} s: "
            f"{by_medians:+.2f} % (median of paired runs {median(pairs):+.2f} %, "
            f"runs {pairs[0]:+.2f} to {pairs[-1]:+.2f} %; goal <= {goal:g} %); "
            f"wall median {median(times['without_wall']):.2f} s, {median(times['with_wall']):.2f} s")


def output_files(output: str) -> list[tuple[str, str, str]]:
    """(path, syntax, text) of each file of a build the plugin would scan
    (a file named "feed" is one of Pelican's feeds)."""
    files = []
    for directory, _, names in os.walk(output):
        for name in sorted(names):
            path = os.path.join(directory, name)
            syntax = "xml" if name == "feed" else syntax_for(path)
            if syntax:
                with open(path, "rb") as f:
                    files.append((path, syntax, f.read().decode("utf-8", "surrogateescape")))
    return files


def plugin_pass(files, rules: Rules) -> tuple[float, int]:
    """The rewriter over every file, as a build without a JSON report runs
    it (no output lines counted)."""
    started = time.process_time()
    upgraded = sum(rewrite(text, rules, syntax, lines=False).upgraded for _, syntax, text in files)
    return time.process_time() - started, upgraded


URL_ATTRIBUTES = ("href", "src", "srcset", "poster", "action", "content", "data")


def beautifulsoup_pass(files, hosts: tuple[str, ...]) -> tuple[float, int]:
    """What typical Pelican plugins do: parse each page and feed with
    BeautifulSoup (html.parser), upgrade the same attributes, serialize."""
    import warnings

    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
    prefixes = tuple("http://" + host for host in hosts)
    started = time.process_time()
    upgraded = 0
    for _, syntax, text in files:
        if syntax not in ("html", "xml"):
            continue
        soup = BeautifulSoup(text, "html.parser")
        for tag in soup.find_all(True):
            for name in URL_ATTRIBUTES:
                value = tag.get(name)
                if isinstance(value, str) and value.startswith(prefixes):
                    tag[name] = "https" + value[4:]
                    upgraded += 1
        str(soup)
    return time.process_time() - started, upgraded


def against_beautifulsoup(output: str, rules: Rules, hosts: tuple[str, ...], goal: float) -> str:
    files = output_files(output)
    size = sum(len(text) for _, _, text in files) / 1e6
    ours, upgraded = plugin_pass(files, rules)
    soup, soup_upgraded = beautifulsoup_pass(files, hosts)
    return (f"CPU over {len(files)} files ({size:.1f} M characters): rewriter {ours:.3f} s "
            f"({upgraded} URLs), BeautifulSoup {soup:.2f} s ({soup_upgraded} URLs): "
            f"{soup / ours:.0f}x faster (goal >= {goal:g}x)")


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"
