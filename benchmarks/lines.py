"""Line counts of deploy/ (Python and server scripts) and its longest functions.

    python benchmarks/lines.py [--rev GIT_REV] [--top 12]

Without --rev: the working tree. With --rev (e.g. 9cd4e6b^, the core before the rewrite): the
files of that commit, read through git. Lines are physical lines, blank and comment lines
included (as `wc -l`); a function's length runs from its `def` (decorators excluded) to its last
line, nested functions counted inside their parent and on their own.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_SUFFIXES = (".sh",)
HARNESS = ("sandbox.py", "demo.py")  # the local test server and the demo: no stage imports them


def files(rev: str | None) -> dict[str, str]:
    """{path: text} of deploy/'s Python and shell files."""
    if rev is None:
        paths = [p for p in (ROOT / "deploy").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        return {str(p.relative_to(ROOT)): p.read_text() for p in paths if p.suffix in (".py", *SCRIPT_SUFFIXES)}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "deploy/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout
            for n in names if n.endswith((".py", *SCRIPT_SUFFIXES))}


def functions(path: str, text: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(text, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git revision instead of the working tree")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    texts = files(args.rev)
    count = {path: len(text.splitlines()) for path, text in texts.items()}
    python = sum(n for p, n in count.items() if p.endswith(".py"))
    scripts = sum(n for p, n in count.items() if not p.endswith(".py"))
    print(f"deploy/ at {args.rev or 'the working tree'}: {python + scripts:,} lines "
          f"({python:,} Python in {sum(p.endswith('.py') for p in count)} files, {scripts:,} shell in "
          f"{sum(not p.endswith('.py') for p in count)} files)")
    harness = sum(n for p, n in count.items() if Path(p).name in HARNESS)
    print(f"  without the sandbox and the demo ({', '.join(HARNESS)}: {harness:,} lines): {python + scripts - harness:,}")
    for path, n in sorted(count.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {n:5d}  {path}")
    funcs = sorted((f for p, t in texts.items() if p.endswith(".py") for f in functions(p, t)), reverse=True)
    over = sum(1 for n, _ in funcs if n > 60)
    print(f"longest functions ({len(funcs)} in all; {over} over 60 lines):")
    for n, where in funcs[:args.top]:
        print(f"  {n:5d}  {where}")


if __name__ == "__main__":
    main()
