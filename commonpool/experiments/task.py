"""One run of a sweep: the unit of work every executor runs, through one function.

A task is plain JSON-able data (the run's full config, its id and its place in
the design), so it travels to a worker process or a Ray node as a value, and a
result comes back as a value. `run_task` writes the run into the store it is
given: the driver's own store for the local pool, or a scratch store on a Ray
node, whose run folder then travels back as a tar archive (`bundle`) for the
driver to publish (commonpool.experiments.publish).
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from commonpool.config import SimulationConfig

if TYPE_CHECKING:
    from commonpool.store import Store


@dataclass(frozen=True)
class RunTask:
    """What to run: a complete config (seed and run id included) and its place in the sweep."""

    sweep_id: str
    run_id: str
    point_id: int
    replication: int
    point: dict[str, Any]
    config: dict[str, Any]

    def labels(self) -> dict[str, object]:
        """The `runs` fields that tie the run to its sweep."""
        return {"sweep_id": self.sweep_id, "point_id": self.point_id, "replication": self.replication, "point": self.point}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskResult:
    """How a task ended. status is the run's (completed, failed, cancelled), or
    "lost" when its worker died before the run could say."""

    run_id: str
    status: str
    error: str | None = None
    seconds: float = 0.0
    cost_usd: float = 0.0
    bundle: bytes | None = field(default=None, repr=False)  # the run folder as tar, from a node without the store

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "bundle"}


def run_seed(sweep_seed: int, replication: int) -> int:
    """The seed of every run of replication r, whatever its point.

    Runs of one replication share their seed across points (common random
    numbers), so two conditions can be compared run by run (a paired design),
    and the same spec and sweep seed give the same runs under any executor.
    """
    state = np.random.SeedSequence([sweep_seed, replication]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFFFFFF


def run_task(task: RunTask, store_root: Path, should_stop: Callable[[], bool] | None = None) -> TaskResult:
    """Run (or continue) one task's run in store_root and say how it ended.

    A run folder left by an earlier attempt that did not complete (a killed
    worker, a cancelled sweep) is continued from its recorded rounds rather
    than started again; one that completed is not run twice.
    """
    from commonpool.engine import run_simulation
    from commonpool.resume import RESUMABLE, resume_simulation
    from commonpool.store import Store

    store = Store(store_root)
    started = time.perf_counter()
    if store.has_run(task.run_id):
        info = store.run(task.run_id)
        if info.status == "damaged":
            # Written without fsync (durable.set_sync) and cut short by a crash of the machine: run it again.
            _set_aside(store, task.run_id)
            return run_task(task, store_root, should_stop)
        if info.status == "completed":
            return TaskResult(task.run_id, "completed", seconds=0.0, cost_usd=float(info.meta.get("cost_usd") or 0.0))
        if info.status not in RESUMABLE:
            return TaskResult(task.run_id, "failed", f"run folder is {info.status}; cannot continue it")
        result = resume_simulation(task.run_id, store, should_stop=should_stop)
    else:
        config = SimulationConfig.model_validate(task.config)
        result = run_simulation(config, store, should_stop=should_stop, labels=task.labels())
    return TaskResult(
        task.run_id, result.status, result.error, time.perf_counter() - started, float(result.llm.get("cost_usd", 0.0))
    )


def _set_aside(store: Store, run_id: str) -> None:
    """Move a damaged run folder out of runs/ (into incoming/, then delete it), so its id is free again."""
    import shutil
    import tempfile

    incoming = store.root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=incoming))
    (store.root / "runs" / run_id).rename(scratch / run_id)
    shutil.rmtree(scratch, ignore_errors=True)


def pack_run(run_dir: Path) -> bytes:
    """A run folder as an uncompressed tar (its Parquet files are compressed already)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(run_dir, arcname=run_dir.name)
    return buffer.getvalue()
