"""Work in the background: one thread per run (or sweep), watched and cancelled by handle.

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
from typing import Any, Generic, Literal, TypeVar

from commonpool.config import SimulationConfig
from commonpool.engine import RunProgress, RunResult, resolve, run_simulation
from commonpool.store import Store

HandleStatus = Literal["starting", "running", "completed", "cancelled", "failed"]


@dataclass(kw_only=True)
class Job:
    """Work in a background thread: its latest progress, and how it ended.

    A subclass says what the work is (_run: called with the progress callback and
    the cancel check, returns the result) and how a result ends (_ended).
    """

    progress: Any = None
    status: HandleStatus = "starting"
    error: str | None = None
    result: Any = None
    started_at: float = field(default_factory=time.time)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def cancel(self) -> None:
        """Ask the work to stop at its next round; what it did is stored as cancelled."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work ends (or timeout seconds pass); True if it ended."""
        if self._thread is None:
            return not self.active
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> Any:
        raise NotImplementedError

    def _ended(self, result: Any) -> tuple[HandleStatus, str | None]:
        """The handle's status and error for a result."""
        return result.status, result.error

    def _work(self) -> None:
        self.status = "running"
        try:
            result = self._run()
        except Exception as exc:  # the thread is the last place that can report it
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"
            return
        self.result = result
        self.status, self.error = self._ended(result)

    def _on_progress(self, progress: Any) -> None:
        self.progress = progress


J = TypeVar("J", bound=Job)


class Jobs(Generic[J]):
    """The jobs this process started, by id."""

    def __init__(self) -> None:
        self._handles: dict[str, J] = {}
        self._lock = threading.Lock()

    def _launch(self, key: str, handle: J, what: str) -> J:
        with self._lock:
            if key in self._handles and self._handles[key].active:
                raise ValueError(f"a {what} named {key!r} is already running")
            # Daemon: a dashboard shutting down should not wait for long work;
            # the store then shows it as interrupted.
            handle._thread = threading.Thread(target=handle._work, name=f"{what}-{key}", daemon=True)
            self._handles[key] = handle
        handle._thread.start()
        return handle

    def get(self, key: str) -> J | None:
        return self._handles.get(key)

    def handles(self) -> list[J]:
        """Every job started here, newest first."""
        return sorted(self._handles.values(), key=lambda h: h.started_at, reverse=True)


@dataclass(kw_only=True)
class RunHandle(Job):
    """One background run."""

    run_id: str
    config: SimulationConfig
    store: Store
    progress: RunProgress | None = None
    result: RunResult | None = None

    def _run(self) -> RunResult:
        return run_simulation(self.config, self.store, progress=self._on_progress, should_stop=self._cancel.is_set)


class Runner(Jobs[RunHandle]):
    """The runs this process started, by run id."""

    def start(self, config: SimulationConfig, store: Store) -> RunHandle:
        """Start config in a background thread; the run id is fixed before this returns."""
        config = resolve(config)
        run_id = str(config.simulation_id)
        try:
            return self._launch(run_id, RunHandle(run_id=run_id, config=config, store=store), "run")
        except ValueError as exc:
            raise ValueError(f"simulation_id: {exc}") from None
