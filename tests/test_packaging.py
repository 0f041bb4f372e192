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
    assert "pelican_https/hostnames.py" in names
    # the administrator's scripts are package data: fab server-setup prints them from the wheel
    assert "deploy/scripts/server-setup.sh" in names and "deploy/scripts/server-remove.sh" in names
    assert not any(n.startswith(("tests/", "example_site/", "benchmarks/")) for n in names)


def test_example_workflow_is_valid_for_github_actions():
    workflow = ROOT / "example_site" / ".github" / "workflows" / "deploy.yml"
    check = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", str(workflow)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _load_yaml(path: Path) -> dict:
    from ruamel.yaml import YAML  # check-jsonschema's own YAML parser

    return YAML(typ="safe").load(path.read_text())


def test_workflow_runs_on_push_schedule_and_by_hand_with_secrets():
    text = (ROOT / "example_site" / ".github" / "workflows" / "deploy.yml").read_text()
    for needle in ("push:", "branches: [main]", "schedule:", "cron:", "workflow_dispatch:",
                   "secrets.DEPLOY_SSH_KEY", "secrets.DEPLOY_KNOWN_HOSTS", "fab deploy", "pelican content"):
        assert needle in text, needle


def test_the_schedule_only_renews_and_pushes_deploy():
    """A scheduled deploy put main back live every day and undid `fab rollback` (issue 14)."""
    workflow = _load_yaml(ROOT / "example_site" / ".github" / "workflows" / "deploy.yml")
    steps = workflow["jobs"]["deploy"]["steps"]
    by_command = {step["run"].split()[0] + " " + step["run"].split()[1]: step for step in steps if "run" in step
                  and step["run"].split()[0] in ("fab", "pelican")}
    assert by_command["fab deploy"]["if"] == "github.event_name != 'schedule'"
    assert by_command["pelican content"]["if"] == "github.event_name != 'schedule'"
    assert by_command["fab renew"]["if"] == "github.event_name == 'schedule'"
    assert not any("rollback" in step.get("run", "") for step in steps)


def test_the_workflow_installs_a_pinned_commit_and_caches_pip():
    """`pip install pelican-https` installed nothing: there is no release yet."""
    workflow = _load_yaml(ROOT / "example_site" / ".github" / "workflows" / "deploy.yml")
    spec = workflow["env"]["PELICAN_HTTPS"]
    assert spec.startswith("pelican-https @ git+https://github.com/")
    ref = spec.rsplit("@", 1)[1]
    assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), "pin a full commit id"
    setup = next(step for step in workflow["jobs"]["deploy"]["steps"] if step.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == ".github/workflows/deploy.yml"
    assert any(step.get("run") == 'pip install "$PELICAN_HTTPS"' for step in workflow["jobs"]["deploy"]["steps"])


def test_release_workflow_is_valid_and_publishes_with_trusted_publishing():
    path = ROOT / ".github" / "workflows" / "release.yml"
    check = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = _load_yaml(path)
    assert workflow["on"] == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"] == {"contents": "read"}
    build, publish = workflow["jobs"]["build"], workflow["jobs"]["publish"]
    runs = "\n".join(step.get("run", "") for step in build["steps"])
    assert "python -m build" in runs and "twine check --strict dist/*" in runs
    assert "id-token" not in build.get("permissions", {})  # only the publishing job may get an identity token
    assert publish["needs"] == "build" and publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    assert publish["steps"][-1]["uses"] == "pypa/gh-action-pypi-publish@release/v1"
    assert not any("password" in str(step.get("with", {})) for step in publish["steps"])  # no stored token


def test_sdist_and_wheel_pass_the_release_checks(tmp_path):
    """What the release job runs, offline: both distributions build and pass `twine check --strict`
    (metadata, and the README as PyPI renders it)."""
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list(tmp_path.glob("pelican_https-*.tar.gz"))) == 1 and len(list(tmp_path.glob("pelican_https-*.whl"))) == 1
    import tarfile

    sdist = tarfile.open(next(tmp_path.glob("*.tar.gz")))
    assert any(name.endswith("deploy/scripts/server-remove.sh") for name in sdist.getnames())
    twine = Path(sys.executable).with_name("twine")
    check = subprocess.run([str(twine), "check", "--strict", *map(str, tmp_path.iterdir())], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


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
