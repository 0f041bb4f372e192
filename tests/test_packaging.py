"""Packaging: the wheel holds both packages; the GitHub workflow is valid against GitHub's schema."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_the_plugin_and_the_deploy_package(tmp_path):
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(tmp_path.glob("pelican_https-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "pelican_https/__init__.py" in names
    assert "deploy/__init__.py" in names
    assert "deploy/tasks.py" in names and "deploy/sandbox.py" in names
    assert not any(n.startswith(("tests/", "example_site/", "benchmarks/")) for n in names)


def test_example_workflow_is_valid_for_github_actions():
    workflow = ROOT / "example_site" / ".github" / "workflows" / "deploy.yml"
    check = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", str(workflow)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_on_push_schedule_and_by_hand_with_secrets():
    text = (ROOT / "example_site" / ".github" / "workflows" / "deploy.yml").read_text()
    for needle in ("push:", "branches: [main]", "schedule:", "cron:", "workflow_dispatch:",
                   "secrets.DEPLOY_SSH_KEY", "secrets.DEPLOY_KNOWN_HOSTS", "fab deploy", "pelican content"):
        assert needle in text, needle


def test_project_workflow_is_valid_for_github_actions():
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    check = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", str(workflow)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _workflow_build_command() -> list[str]:
    text = (ROOT / "example_site" / ".github" / "workflows" / "deploy.yml").read_text()
    line = next(line for line in text.splitlines() if line.strip().startswith("run: pelican "))
    return shlex.split(line.split("run:", 1)[1])


def test_workflow_build_stops_when_a_plugin_cannot_load(tmp_path):
    # Pelican only logs a plugin that fails to import: without --fatal the site would be built,
    # and deployed, without the https rewrite.
    argv = _workflow_build_command()
    pelican = str(Path(sys.executable).with_name("pelican"))
    env = dict(os.environ, DEPLOY_SSH_KEY_FILE="", DEPLOY_KNOWN_HOSTS_FILE=str(tmp_path / "known_hosts"),
               COLUMNS="300")  # (Pelican's log lines unwrapped)

    def build(*extra):
        return subprocess.run([pelican, *argv[1:], "-o", str(tmp_path / "out"), *extra], cwd=ROOT / "example_site",
                              capture_output=True, text=True, timeout=300, env=env)
    good = build()
    assert good.returncode == 0, good.stdout + good.stderr
    page = (tmp_path / "out" / "certificates-that-renew-themselves.html").read_text()  # (renewals.md: http links)
    assert 'src="https://blog.example.com/images/pelican.svg"' in page and "http://blog.example.com" not in page
    broken = build("-e", 'PLUGINS=["pelican_https", "pelican_https_no_such_plugin"]')
    assert broken.returncode != 0
    assert "Cannot load plugin `pelican_https_no_such_plugin`" in broken.stdout + broken.stderr
