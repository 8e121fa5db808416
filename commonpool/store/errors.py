"""Errors of the run store, raised by the writer, the reader and export alike."""

from __future__ import annotations


class RunExistsError(FileExistsError):
    """A run folder with this id already exists; run ids are never reused or merged."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} already exists in the store; choose another run id")
        self.run_id = run_id


class RunNotFoundError(LookupError):
    """No run with this id is in the store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found in the store")
        self.run_id = run_id


class SweepNotFoundError(LookupError):
    """No sweep with this id is in the store."""

    def __init__(self, sweep_id: str) -> None:
        super().__init__(f"sweep {sweep_id!r} not found in the store")
        self.sweep_id = sweep_id
