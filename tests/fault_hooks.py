"""Fault hooks for a deploy or rollback run in the test's process: ``FaultAt(stage, fault)`` is a
``pipeline.Progress`` whose ``fault()`` runs as the task enters ``stage`` (a kill, Ctrl-C, a broken
file on a host...). The tasks take a Progress anyway, so no stage carries test code."""

from __future__ import annotations

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
