"""Runs in the background: one thread per run, watched and cancelled by handle.

The dashboard starts a run and returns at once; the page then polls the
handle. The registry lives as long as the process that created it (the
dashboard keeps one in st.cache_resource), so a reloaded browser tab finds its
run still going. Everything a thread shares with readers is replaced whole
(progress, status), never mutated in place, so a reader needs no lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from commonpool.config import SimulationConfig
from commonpool.engine import RunProgress, RunResult, resolve, run_simulation
from commonpool.store import Store

HandleStatus = Literal["starting", "running", "completed", "cancelled", "failed"]


@dataclass
class RunHandle:
    """One background run: its latest progress, and how it ended."""

    run_id: str
    config: SimulationConfig
    store: Store
    progress: RunProgress | None = None
    status: HandleStatus = "starting"
    error: str | None = None
    result: RunResult | None = None
    started_at: float = field(default_factory=time.time)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def cancel(self) -> None:
        """Ask the engine to stop before its next round; the run is stored as cancelled."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (or timeout seconds pass); True if it ended."""
        if self._thread is None:
            return not self.active
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        self.status = "running"
        try:
            result = run_simulation(
                self.config, self.store, progress=self._on_progress, should_stop=self._cancel.is_set
            )
        except Exception as exc:  # the thread is the last place that can report it
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"
            return
        self.result = result
        self.error = result.error
        self.status = result.status  # type: ignore[assignment]  # completed, cancelled or failed

    def _on_progress(self, progress: RunProgress) -> None:
        self.progress = progress


class Runner:
    """The runs this process started, by run id."""

    def __init__(self) -> None:
        self._handles: dict[str, RunHandle] = {}
        self._lock = threading.Lock()

    def start(self, config: SimulationConfig, store: Store) -> RunHandle:
        """Start config in a background thread; the run id is fixed before this returns."""
        config = resolve(config)
        run_id = str(config.simulation_id)
        with self._lock:
            if run_id in self._handles and self._handles[run_id].active:
                raise ValueError(f"simulation_id: a run named {run_id!r} is already running")
            handle = RunHandle(run_id=run_id, config=config, store=store)
            # Daemon: a dashboard shutting down should not wait for a long run;
            # the store then shows the run as interrupted.
            handle._thread = threading.Thread(target=handle._work, name=f"run-{run_id}", daemon=True)
            self._handles[run_id] = handle
        handle._thread.start()
        return handle

    def get(self, run_id: str) -> RunHandle | None:
        return self._handles.get(run_id)

    def handles(self) -> list[RunHandle]:
        """Every run started here, newest first."""
        return sorted(self._handles.values(), key=lambda h: h.started_at, reverse=True)
