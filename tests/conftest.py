"""Shared fixtures: the real sandbox (Pebble, sshd, nginx) and copies of example_site.

The sandbox fixtures never skip: if a sandbox cannot start, every test that needs it errors with
the reason (missing package, port, permission).

``sandbox`` is one server; ``sandbox3`` is a group of three (each its own sshd, nginx, address and
files: see deploy/sandbox.py), for ``DEPLOY_HOSTS`` deploys. ``make_blog`` / ``make_blog3`` give a
copy of example_site pointed at a site of either; ``make_blog3`` undoes the faults a test put on
the group's hosts (``host.stop_sshd()``, ``host.break_nginx()``, ``set_dns``) when the test ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.sandbox import Sandbox, SandboxHost, start_sandbox, stop_sandbox
from deploy.settings import DeploySettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = ROOT / "example_site"


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    sb = start_sandbox()
    yield sb
    stop_sandbox(sb)


@pytest.fixture(scope="session")
def sandbox3() -> Sandbox:
    """Three servers: hosts[0] at 127.0.0.1, hosts[1] and hosts[2] in namespaces of their own."""
    sb = start_sandbox(hosts=3)
    yield sb
    stop_sandbox(sb)


class Blog:
    """A copy of example_site pointed at one site of the sandbox, with helpers to build and deploy it."""

    def __init__(self, path: Path, sandbox: Sandbox, site: str):
        self.path = path
        self.sandbox = sandbox
        self.target = path / "sandbox-target.json"
        self.target.write_text(json.dumps(sandbox.add_site(site)))
        self.env = dict(os.environ, PELICAN_HTTPS_SANDBOX=str(self.target))

    @property
    def hosts(self) -> list[SandboxHost]:
        """The sandbox's servers (one, or the group DEPLOY_HOSTS lists, in that order)."""
        return self.sandbox.hosts

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(argv), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    @classmethod
    def copy(cls, folder: Path, sandbox: Sandbox, site: str, *, own_names: bool = False) -> "Blog":
        """A fresh copy of example_site in ``folder``. ``own_names``: it serves <site>.example.com
        and www.<site>.example.com instead of example_site's names, which other tests deploy to the
        same sandbox nginx (nginx lets the first site claiming a name shadow the others)."""
        shutil.copytree(EXAMPLE_SITE, folder, ignore=shutil.ignore_patterns("output", "__pycache__"))
        blog = cls(folder, sandbox, site)
        if own_names:
            with open(folder / "sandboxconf.py", "a") as f:
                f.write(f"\nDEPLOY_DOMAINS = ['{site}.example.com', 'www.{site}.example.com']\n"
                        f"SITEURL = 'https://{site}.example.com:' + str(DEPLOY_HTTPS_PORT)\n")
        return blog

    def configure(self, **values) -> None:
        """Append settings to the copy's sandboxconf.py (read by every later pelican and fab run)."""
        with open(self.path / "sandboxconf.py", "a") as f:
            for name, value in values.items():
                f.write(f"\n{name} = {value!r}\n")

    def build(self) -> None:
        self.run(sys.executable, "-m", "pelican", "content", "-s", "sandboxconf.py")

    def fab(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        fab = Path(sys.executable).with_name("fab")
        return self.run(str(fab), *args, "--settings", "sandboxconf.py", check=check)

    def settings(self) -> DeploySettings:
        old = os.environ.get("PELICAN_HTTPS_SANDBOX")
        os.environ["PELICAN_HTTPS_SANDBOX"] = str(self.target)
        cwd = os.getcwd()
        try:
            os.chdir(self.path)
            # Each copy has its own publishconf/pelicanconf: do not reuse another copy's modules.
            for name in ("sandboxconf", "publishconf", "pelicanconf"):
                sys.modules.pop(name, None)
            return load_settings(self.path / "sandboxconf.py")
        finally:
            os.chdir(cwd)
            for name in ("sandboxconf", "publishconf", "pelicanconf"):
                sys.modules.pop(name, None)
            if str(self.path) in sys.path:
                sys.path.remove(str(self.path))
            if old is None:
                os.environ.pop("PELICAN_HTTPS_SANDBOX", None)
            else:
                os.environ["PELICAN_HTTPS_SANDBOX"] = old


@pytest.fixture
def make_blog(tmp_path, sandbox):
    """make_blog(site, own_names=False) -> a fresh copy of example_site deploying to its own site on the sandbox."""
    def make(site: str, own_names: bool = False) -> Blog:
        return Blog.copy(tmp_path / site, sandbox, site, own_names=own_names)
    return make


@pytest.fixture
def make_blog3(tmp_path, sandbox3):
    """make_blog3(site, own_names=False) -> a fresh copy of example_site deploying to its own site on all three hosts."""
    def make(site: str, own_names: bool = False) -> Blog:
        return Blog.copy(tmp_path / site, sandbox3, site, own_names=own_names)
    yield make
    sandbox3.heal()


# Fixtures that start a sandbox or need root, besides the four above: ``short_lived``
# (test_cert_lifecycle.py, a sandbox of its own) and ``server`` (test_server_setup.py: the
# administrator's scripts run as root on a temporary tree). A test that starts a sandbox itself,
# or needs root without one of these, carries ``pytest.mark.sandbox`` (its module's ``pytestmark``).
SANDBOX_FIXTURES = {"sandbox", "sandbox3", "make_blog", "make_blog3", "short_lived", "server"}


def pytest_collection_modifyitems(items):
    """Tiers: every test that uses a sandbox fixture (directly or through another fixture) is
    marked `sandbox` (it still fails loudly, never skips, when the sandbox cannot start);
    `pytest -m "not sandbox"` runs the rest without root."""
    for item in items:
        if SANDBOX_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sandbox)
