"""The README's first command: `./run demo` runs `python -m deploy.demo`, which starts its own
sandbox, deploys example_site with HTTPS and shows what a visitor gets. Run here whole, as the
README promises it, so a change that breaks the demo fails the suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.sandbox  # the demo starts a sandbox of its own (root)
def test_the_demo_deploys_example_site_and_shows_https():
    result = subprocess.run([sys.executable, "-m", "deploy.demo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"release \d{8}T\d{12}Z is live; certificate issue", out), out
    assert "status:       200 (An Example Blog)" in out
    assert "for blog.example.com, www.blog.example.com" in out
    assert re.search(r"answers 301 Location: https://blog\.example\.com:\d+/any/path\?q=1", out), out
    assert "==> stopping the sandbox" in out and "Traceback" not in result.stderr
