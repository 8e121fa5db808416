"""A sweep from spec to stored runs: plan, execute, record, resume.

    spec -> points (sampler) x replications -> RunTasks -> executor -> runs in the store

A sweep's runs are ordinary runs (each its own folder, its own run.json with
sweep_id, point_id, replication and point) plus the sweep's own folder,
<store>/sweeps/<sweep_id>/: sweep.json (spec, status, counters; read by the
`sweeps` view) and design.json (the points in sampler order, and the unit-cube
matrix a Morris analysis needs). Nothing about a sweep is kept only in memory,
so a killed sweep resumes from the store alone: completed runs are skipped,
interrupted ones continued, the rest run.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from commonpool.config import SimulationConfig, validation_problems
from commonpool.experiments.executor import Executor, make_executor
from commonpool.experiments.spec import ExperimentSpec, SpecError, config_fields, draw_points, parse_spec
from commonpool.experiments.task import RunTask, TaskResult, run_seed
from commonpool.store import Store, _proc
from commonpool.store.durable import write_json_atomic
from commonpool.store.writer import check_run_id

# A run that its worker lost (the process died) is tried once more, then recorded as failed.
ATTEMPTS = 2
# How often sweep.json's counters are rewritten while results come in.
_RECORD_EVERY_S = 0.5


@dataclass
class SweepProgress:
    sweep_id: str
    done: int
    failed: int
    total: int
    elapsed_s: float
    eta_s: float | None


@dataclass
class SweepResult:
    sweep_id: str
    status: str  # completed, failed (some runs failed), cancelled
    done: int
    failed: int
    total: int
    seconds: float
    failures: dict[str, str]


def new_sweep_id(name: str | None) -> str:
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    return f"{name[:24]}-{stamp}" if name else f"sweep-{stamp}"


def sweep_dir(store: Store, sweep_id: str) -> Path:
    return store.root / "sweeps" / sweep_id


def plan(spec: ExperimentSpec, sweep_id: str) -> tuple[list[RunTask], list[dict[str, object]], list[list[float]] | None]:
    """Every run of the sweep, replication by replication, each config validated.

    Raises SpecError naming the point and the problem before anything is written.
    """
    points, unit = draw_points(spec)
    base = dict(spec.base)
    tasks = []
    width = len(str(max(len(points) - 1, 0)))
    rep_width = len(str(max(spec.replications - 1, 0)))
    for replication in range(spec.replications):
        seed = run_seed(int(spec.seed or 0), replication)
        for point_id, point in enumerate(points):
            run_id = f"{sweep_id}-p{point_id:0{width}d}-r{replication:0{rep_width}d}"
            fields = {**config_fields(base, point), "seed": seed, "simulation_id": run_id}
            try:
                config = SimulationConfig.model_validate(fields)
            except ValidationError as exc:
                detail = validation_problems(exc)[0][1]
                raise SpecError(f"factors at point {point_id} ({_describe(point)}): {detail}") from None
            tasks.append(RunTask(sweep_id, run_id, point_id, replication, point, config.model_dump(mode="json")))
    return tasks, points, unit


def _describe(point: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "the base"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SweepRecord:
    """The sweep's sweep.json: created once, its counters and status rewritten atomically."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path = path
        self.info = info
        self._written = 0.0

    def save(self, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self._written >= _RECORD_EVERY_S:
            write_json_atomic(self.path / "sweep.json", self.info)
            self._written = now


def run_sweep(
    spec: ExperimentSpec,
    store: Store,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    sweep_id: str | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """Plan and run a whole sweep into store; bad specs raise SpecError before anything is written."""
    if spec.seed is None:
        spec = spec.model_copy(update={"seed": secrets.randbelow(2**31)})
    sweep_id = sweep_id or new_sweep_id(spec.name)
    try:
        check_run_id(sweep_id)
    except ValueError as exc:
        raise SpecError(f"sweep id: {exc}") from None
    tasks, points, unit = plan(spec, sweep_id)
    path = sweep_dir(store, sweep_id)
    if path.exists():
        raise SpecError(f"sweep id: a sweep named {sweep_id!r} already exists in {store.root}; choose another")
    exec_ = make_executor(executor, store.root, workers, ray_address, path / "workers.log")
    path.mkdir(parents=True)
    write_json_atomic(path / "design.json", {"points": points, "unit": unit})
    record = SweepRecord(path, {
        "sweep_id": sweep_id, "name": spec.name, "sampler": spec.sampler, "seed": spec.seed,
        "points": len(points), "replications": spec.replications, "runs_planned": len(tasks),
        "runs_done": 0, "runs_failed": 0, "started_at": _now(), "finished_at": None, "duration_s": None,
        "error": None, "spec": spec.model_dump(mode="json"), "failures": {},
        **_driver(exec_), "resumed_at": [],
    })
    record.save()
    return _execute(record, tasks, exec_, store, progress, should_stop)


def resume_sweep(
    store: Store,
    sweep_id: str,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """Continue a sweep that stopped: its completed runs are kept, the rest run (interrupted ones continued)."""
    info = store.sweep(sweep_id)
    if info.status == "running":
        raise SpecError(f"sweep {sweep_id!r} is still running in process {info.meta.get('pid')}")
    if info.status == "damaged":
        raise SpecError(f"sweep {sweep_id!r} cannot be resumed: {info.meta.get('error')}")
    spec = parse_spec(info.meta["spec"])
    tasks, _, _ = plan(spec, sweep_id)
    path = sweep_dir(store, sweep_id)
    exec_ = make_executor(executor or info.meta.get("executor") or "local", store.root,
                          workers or None, ray_address, path / "workers.log")
    meta = dict(info.meta)
    meta.update(**_driver(exec_), finished_at=None, error=None, failures={},
                resumed_at=[*meta.get("resumed_at", []), _now()])
    record = SweepRecord(path, meta)
    record.save()
    return _execute(record, tasks, exec_, store, progress, should_stop)


def _driver(executor: Executor) -> dict[str, Any]:
    """sweep.json's marks of a live driver (this process), like run.json's of a writer."""
    pid = os.getpid()
    return {"status": "running", "executor": executor.name, "workers": executor.workers or None,
            "pid": pid, "pid_start_time": _proc.process_start_time(pid), "host": _proc.hostname()}


def _completed_runs(store: Store, sweep_id: str) -> dict[str, float]:
    """The sweep's completed runs and what each spent on LLM calls."""
    return {r.run_id: float(r.meta.get("cost_usd") or 0.0) for r in store.runs()
            if r.status == "completed" and r.meta.get("sweep_id") == sweep_id}


@dataclass
class LLMShare:
    """One budget and one limit on requests in flight for the whole sweep, shared out to its LLM runs.

    The spec's base concurrency and budget_usd are the sweep's totals. Each LLM run
    gets concurrency // workers requests in flight (so all workers together stay
    within the total) and, when it is submitted, an equal share of what is left
    of the budget for every place in flight (so runs in flight together cannot
    overspend it). No run is started once the budget is spent.
    """

    concurrency: int
    budget_usd: float | None
    spent: float = 0.0

    def terms(self, task: RunTask, workers: int, places: int) -> RunTask | None:
        """The task with its share of the sweep's limits, or None when the budget is spent."""
        if not SimulationConfig.model_validate(task.config).uses_llm():
            return task
        config = {**task.config, "concurrency": max(1, self.concurrency // max(workers, 1))}
        if self.budget_usd is not None:
            left = self.budget_usd - self.spent
            if left <= 1e-9:
                return None
            config["budget_usd"] = left / places
        return replace(task, config=config)


def publish(store: Store, result: TaskResult) -> None:
    """Put a run folder that came back as a bundle into the store, whole or not at all.

    It is unpacked beside runs/ (same file system) and renamed into place, so a
    reader never sees half a run. An older folder of the same run (an
    interrupted earlier attempt) is replaced.
    """
    assert result.bundle is not None
    incoming = store.root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=incoming))
    try:
        with tarfile.open(fileobj=io.BytesIO(result.bundle), mode="r") as archive:
            names = {member.name.split("/")[0] for member in archive.getmembers()}
            if names != {result.run_id}:
                raise ValueError(f"a bundle for {result.run_id!r} holds {sorted(names)}")
            archive.extractall(scratch, filter="data")  # no links or paths outside scratch
        target = store.root / "runs" / result.run_id
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.move(str(target), str(scratch / "replaced"))
        (scratch / result.run_id).rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _execute(
    record: SweepRecord,
    tasks: list[RunTask],
    executor: Executor,
    store: Store,
    progress: Callable[[SweepProgress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> SweepResult:
    sweep_id = record.info["sweep_id"]
    started = time.monotonic()
    done_before = _completed_runs(store, sweep_id)
    todo = [t for t in tasks if t.run_id not in done_before]
    base = parse_spec(record.info["spec"]).base
    share = LLMShare(int(base.get("concurrency", 8)), base.get("budget_usd"), sum(done_before.values()))
    by_id = {t.run_id: t for t in todo}
    attempts: dict[str, int] = {}
    failures: dict[str, str] = {}
    done = len(tasks) - len(todo)
    finished_now = 0
    in_flight = 0
    status, error = "completed", None
    queue = list(reversed(todo))  # pop() from the end keeps the planned order

    def report() -> None:
        record.info.update(runs_done=done, runs_failed=len(failures), failures=failures)
        record.save(force=False)
        if progress is not None:
            elapsed = time.monotonic() - started
            remaining = len(queue) + in_flight
            eta = elapsed / finished_now * remaining if finished_now else None
            progress(SweepProgress(sweep_id, done, len(failures), len(tasks), elapsed, eta))

    executor.start()
    try:
        report()
        while queue or in_flight:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            while queue and in_flight < executor.capacity:
                task = share.terms(queue[-1], executor.workers, executor.capacity)
                if task is None:
                    break
                queue.pop()
                attempts[task.run_id] = attempts.get(task.run_id, 0) + 1
                executor.submit(task)
                in_flight += 1
            if queue and not in_flight:  # nothing running and nothing may start: the budget is spent
                for task in queue:
                    failures[task.run_id] = "not run: the sweep's LLM budget is spent"
                queue.clear()
                break
            result = executor.next_result(timeout=0.25)
            if result is None:
                continue
            in_flight -= 1
            share.spent += result.cost_usd
            if result.bundle is not None:
                publish(store, result)
            if result.status == "completed":
                done += 1
                finished_now += 1
            elif result.status == "lost" and attempts[result.run_id] < ATTEMPTS:
                queue.append(by_id[result.run_id])
            else:
                failures[result.run_id] = result.error or result.status
                finished_now += 1
            report()
    except KeyboardInterrupt:
        status, error = "cancelled", "KeyboardInterrupt"
        _wind_down(executor, in_flight)
        _finish(record, status, error, done, failures)
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if status == "cancelled" and error is None:
            _wind_down(executor, in_flight)
        executor.close()
        if error != "KeyboardInterrupt":
            if status == "completed" and failures:
                status, error = "failed", f"{len(failures)} of {len(tasks)} runs failed"
            _finish(record, status, error, done, failures)
    return SweepResult(sweep_id, status, done, len(failures), len(tasks), time.monotonic() - started, failures)


def _wind_down(executor: Executor, in_flight: int, grace_s: float = 20.0) -> None:
    """Stop the runs in progress at their next round and wait for them to say so,
    so they are stored as cancelled (and a resumed sweep continues them)."""
    executor.stop()
    deadline = time.monotonic() + grace_s
    while in_flight and time.monotonic() < deadline:
        try:
            if executor.next_result(timeout=0.25) is not None:
                in_flight -= 1
        except KeyboardInterrupt:
            break


def _finish(record: SweepRecord, status: str, error: str | None, done: int, failures: dict[str, str]) -> None:
    started = datetime.fromisoformat(record.info["started_at"])
    record.info.update(
        status=status, error=error, runs_done=done, runs_failed=len(failures), failures=failures,
        finished_at=_now(), duration_s=round((datetime.now(UTC) - started).total_seconds(), 3),
    )
    record.save()
