"""Fault hooks for a deploy or rollback run in the test's process: ``FaultAt(stage, fault)`` is a
``pipeline.Progress`` whose ``fault()`` runs as the task enters ``stage`` (a kill, Ctrl-C, a broken
file on a host...). The tasks take a Progress anyway, so no stage carries test code.
``wait_for_commit_scripts()``: after a deploy was killed, what it had started on the hosts."""

from __future__ import annotations

import time
from pathlib import Path

from deploy import pipeline


class FaultAt(pipeline.Progress):
    def __init__(self, stage: str, fault):
        super().__init__()
        self.at, self.fault = stage, fault

    def enter(self, stage: str) -> None:
        super().enter(stage)
        if stage == self.at:
            self.fault()


def killed() -> None:
    """The process "dies": SystemExit, and no clean-up of ours runs."""
    raise SystemExit("killed by the test")


def interrupted() -> None:
    """Ctrl-C."""
    raise KeyboardInterrupt


def wait_for_commit_scripts(timeout: float = 30) -> None:
    """After a deploy was killed: the commit scripts it had started on the hosts finish on their own
    (the sandbox's hosts share this machine's processes); wait until none runs."""
    def running() -> bool:
        for proc in Path("/proc").iterdir():
            try:
                if b"\0commit\0apply\0" in (proc / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
        return False
    deadline = time.monotonic() + timeout
    while running():
        assert time.monotonic() < deadline, f"commit scripts still running {timeout:g} s after the deploy was killed"
        time.sleep(0.05)
