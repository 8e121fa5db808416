"""Sweeps in the background: one driver thread per sweep, watched and cancelled by handle.

Like commonpool.runner for single runs: the dashboard starts a sweep and
returns at once, then polls the handle. The spec is planned (every point's
config validated) before the thread starts, so a bad spec raises SpecError in
`start` and nothing is written. Everything the thread shares with readers is
replaced whole (progress, status), never mutated in place, so readers need no lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from commonpool.experiments.spec import ExperimentSpec, SpecError
from commonpool.experiments.sweep import SweepProgress, SweepResult, new_sweep_id, plan, run_sweep, sweep_dir
from commonpool.store import Store

HandleStatus = Literal["starting", "running", "completed", "cancelled", "failed"]


@dataclass
class SweepHandle:
    """One background sweep: its latest progress, and how it ended."""

    sweep_id: str
    spec: ExperimentSpec
    store: Store
    executor: str
    workers: int | None
    runs_planned: int
    progress: SweepProgress | None = None
    status: HandleStatus = "starting"
    error: str | None = None
    result: SweepResult | None = None
    started_at: float = field(default_factory=time.time)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def cancel(self) -> None:
        """Stop the sweep: queued runs are dropped, running ones stop at their next round and are kept as cancelled."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep ends (or timeout seconds pass); True if it ended."""
        if self._thread is None:
            return not self.active
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        self.status = "running"
        try:
            result = run_sweep(
                self.spec, self.store, self.executor, self.workers, sweep_id=self.sweep_id,
                progress=self._on_progress, should_stop=self._cancel.is_set,
            )
        except Exception as exc:  # the thread is the last place that can report it
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"
            return
        self.result = result
        if result.failures:
            self.error = f"{result.failed} of {result.total} runs failed"
        self.status = result.status  # type: ignore[assignment]  # completed, failed or cancelled

    def _on_progress(self, progress: SweepProgress) -> None:
        self.progress = progress


class SweepRunner:
    """The sweeps this process started, by sweep id."""

    def __init__(self) -> None:
        self._handles: dict[str, SweepHandle] = {}
        self._lock = threading.Lock()

    def start(self, spec: ExperimentSpec, store: Store, executor: str = "local",
              workers: int | None = None) -> SweepHandle:
        """Start spec in a background thread; the sweep id is fixed before this returns.

        A spec without a seed gets one drawn here, so the plan checked now is
        the plan that runs. Raises SpecError (nothing written) if any point's
        config is invalid.
        """
        if spec.seed is None:
            spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
        sweep_id = new_sweep_id(spec.name)
        runs = len(plan(spec, sweep_id))
        if sweep_dir(store, sweep_id).exists():
            raise SpecError(f"sweep id: a sweep named {sweep_id!r} already exists; start it again")
        with self._lock:
            handle = SweepHandle(sweep_id, spec, store, executor, workers, runs)
            # Daemon: a dashboard shutting down should not wait for a long sweep;
            # the store then shows it as interrupted, and `commonpool sweep resume` continues it.
            handle._thread = threading.Thread(target=handle._work, name=f"sweep-{sweep_id}", daemon=True)
            self._handles[sweep_id] = handle
        handle._thread.start()
        return handle

    def get(self, sweep_id: str) -> SweepHandle | None:
        return self._handles.get(sweep_id)

    def handles(self) -> list[SweepHandle]:
        """Every sweep started here, newest first."""
        return sorted(self._handles.values(), key=lambda h: h.started_at, reverse=True)
