"""Packaging: the wheel holds both packages; the GitHub workflow is valid against GitHub's schema."""

from __future__ import annotations

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
