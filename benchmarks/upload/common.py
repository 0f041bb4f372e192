"""What the upload and group benchmarks share: a blog folder for `fab`, timed processes, rsync as
Pelican's Makefile runs it, medians and ratios."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).with_name("fab"))  # the project's venv, as a blogger's `fab`
FABFILE = "from deploy.tasks import deploy, releases, renew, rollback, status  # noqa: F401\n"
RSYNC_FLAGS = ["-P", "-rvzc", "--cvs-exclude", "--delete"]  # Pelican's Makefile: rsync -e ssh -P -rvzc --cvs-exclude --delete


def write_settings(blog: Path, name: str, values: dict) -> Path:
    """``blog/<name>.py``, a settings file as `fab --settings` reads it (and the blog's fabfile.py)."""
    blog.mkdir(parents=True, exist_ok=True)
    (blog / "fabfile.py").write_text(FABFILE)
    path = blog / f"{name}.py"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in sorted(values.items())))
    return path


def fab(task: str, settings: Path, *args: str) -> list[str]:
    return [FAB, task, "--settings", settings.name, *args]


def run(argv: list[str], cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run a whole process; its wall time (start-up included) and result; fail loudly."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:4]))} failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result


def in_process(result: subprocess.CompletedProcess) -> float | None:
    for line in result.stderr.splitlines():
        if line.startswith("in-process "):
            return float(line.split()[1])
    return None


def ssh_command(sb) -> str:
    """OpenSSH with the sandbox's key and strict known_hosts, as `rsync -e` takes it."""
    return (f"ssh -i {sb.ssh_key} -o UserKnownHostsFile={sb.known_hosts} -o StrictHostKeyChecking=yes "
            f"-o BatchMode=yes -o IdentitiesOnly=yes -p {sb.ssh_port}")


def rsync(sb, address: str, source: Path, target: Path) -> list[str]:
    return ["rsync", "-e", ssh_command(sb), *RSYNC_FLAGS, f"{source}/", f"{sb.ssh_user}@{address}:{target}/"]


def empty_site(values: dict, local=lambda p: Path(p)) -> None:
    """Back to no release on the server (certificate and vhost stay): the next upload is a first one.
    ``local`` maps a server path to the path this process sees (a sandbox host's local_path)."""
    root = local(values["DEPLOY_REMOTE_ROOT"])
    for child in (root / "releases").iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (root / "current").unlink(missing_ok=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def rotated(names: list[str], run: int) -> list[str]:
    """Each tool goes first in turn."""
    k = run % len(names)
    return names[k:] + names[:k]
