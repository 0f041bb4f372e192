"""The plugin on a blog shaped like the real ones that predate HTTPS (see
generate.py: a WordPress import in Markdown and reST, about 1,000 pages,
extensionless feeds, old host names in HTTPS_HOSTS).  One command:

    ./run bench realblog               # 7 builds with and 7 without, interleaved
    ./run bench realblog --runs 2      # quick

(a) The plugin's share of the build's CPU: whole ``pelican`` processes at
    Pelican's default verbosity (the report is printed, as users see it),
    with PLUGINS=["pelican_https"] and without, alternately, each on an
    emptied output folder; medians.
(b) The rewriter's pass against a BeautifulSoup parse-and-reserialize pass
    over the same output (the build without the plugin), by CPU time.

Goals: (a) <= 3 %, (b) >= 100x faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "rewrite"))
sys.path.insert(0, HERE)

import measure  # noqa: E402
from generate import HOST, OLD_HOSTS, generate  # noqa: E402

from pelican_https.rewrite import Rules  # noqa: E402

UPGRADE = "upload.wikimedia.org"
RULES = Rules(own_hosts=frozenset((HOST, *OLD_HOSTS)), upgrade_hosts=frozenset({UPGRADE}))


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the plugin on a real-shaped blog.")
    parser.add_argument("--runs", type=int, default=7, help="builds with and without, each")
    parser.add_argument("--workdir", help="keep the site here (default: a temporary folder)")
    parser.add_argument("--skip-soup", action="store_true", help="skip part (b)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the instructions of one build with and one without (valgrind)")
    args = parser.parse_args()

    print(f"load average before: {measure.load()}")
    site = os.path.join(args.workdir or tempfile.mkdtemp(prefix="https-realblog-"), "site")
    generate(site)
    print(f"site: {site}")
    times = measure.interleaved(site, args.runs, quiet=False)
    report = [line for line in times["printed"].splitlines() if "https:" in line]
    print(f"the report at default verbosity ({len(report)} lines), first lines:")
    print("\n".join(report[:4]))
    print(f"(a) {measure.share(times, goal=3)}")
    if args.instructions:
        print(f"    {measure.instructions(site, quiet=False)} (goal <= 3 %)", flush=True)
    print(f"load average after the builds: {measure.load()}")
    if not args.skip_soup:
        output = os.path.join(site, "output-without")
        print(f"(b) {measure.against_beautifulsoup(output, RULES, (HOST, *OLD_HOSTS, UPGRADE), 100)}")


if __name__ == "__main__":
    main()
