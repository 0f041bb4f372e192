"""The plugin on a big synthetic blog: 2,000 Markdown articles.  One command:

    ./run bench rewrite                        # 2,000 articles, 5 builds each
    ./run bench rewrite --articles 200 --runs 1   # quick

(a) The plugin's share of the build's CPU: the generated site is built with
    PLUGINS=["pelican_https"] and without, alternately, each build a fresh
    ``pelican`` process (``-q``, as the numbers before) on an emptied output
    folder; medians of the CPU time of whole processes.
(b) The rewriter's pass against a BeautifulSoup parse-and-reserialize pass
    over the same output (the build without the plugin), by CPU time.

Goals: (a) <= 2 %, (b) >= 100x faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import measure  # noqa: E402
from generate import HOST, generate  # noqa: E402

from pelican_https.rewrite import Rules  # noqa: E402

RULES = Rules(own_hosts=frozenset({HOST, "www." + HOST}), upgrade_hosts=frozenset({"cdn.example.org"}))


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the plugin on 2,000 articles.")
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5, help="builds with and without, each")
    parser.add_argument("--workdir", help="keep the site here (default: a temporary folder)")
    parser.add_argument("--skip-soup", action="store_true", help="skip part (b)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the instructions of one build with and one without (valgrind)")
    args = parser.parse_args()

    print(f"load average before: {measure.load()}")
    site = os.path.join(args.workdir or tempfile.mkdtemp(prefix="https-bench-"), "site")
    generate(site, args.articles)
    print(f"site: {args.articles} articles in {site}")
    times = measure.interleaved(site, args.runs, quiet=True)
    print(f"(a) {measure.share(times, goal=2)}")
    if args.instructions:
        print(f"    {measure.instructions(site, quiet=True)} (goal <= 2 %)", flush=True)
    print(f"load average after the builds: {measure.load()}")
    if not args.skip_soup:
        output = os.path.join(site, "output-without")
        print(f"(b) {measure.against_beautifulsoup(output, RULES, (HOST, 'www.' + HOST, 'cdn.example.org'), 100)}")


if __name__ == "__main__":
    main()
