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
import re
import secrets
from collections import deque
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from commonpool.config import RUN_ID_PATTERN, SimulationConfig, validation_problems
from commonpool.experiments.executor import Executor, make_executor
from commonpool.experiments.spec import ExperimentSpec, SpecError, config_fields, draw_points, parse_spec
from commonpool.experiments.task import RunTask, TaskResult, run_seed
from commonpool.store import RunInfo, Store, _proc
from commonpool.store.durable import write_json_atomic
from commonpool.store.writer import check_run_id

# A run that its worker lost (the process died) is tried once more, then recorded as failed.
ATTEMPTS = 2
# How often sweep.json's counters are rewritten while results come in.
_RECORD_EVERY_S = 0.5
# Completed runs are packed (Store.pack: one file per table for many runs) in batches
# of this many, and the rest when the sweep stops, so queries over a sweep of
# thousands of runs open a few files per table instead of one per run.
PACK_EVERY = 500


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


@dataclass(frozen=True)
class Plan:
    """Every run of a sweep, made on demand from its points and replications.

    Run k is replication k // points at point k % points, so the runs of one
    replication come first and a partial sweep is balanced over the design.
    Each point's configuration is validated once when the plan is made; a run's
    task is built only when it is wanted, so a plan of a million runs holds its
    points, not a million configurations.
    """

    sweep_id: str
    points: list[dict[str, object]]
    unit: list[list[float]] | None  # the unit-cube matrix of a morris design, for its analysis
    replications: int
    configs: list[dict[str, Any]]  # each point's validated config, without seed and run id
    seeds: list[int]  # each replication's seed

    def __len__(self) -> int:
        return len(self.points) * self.replications

    def run_id(self, k: int) -> str:
        point_id, replication = k % len(self.points), k // len(self.points)
        width, rep_width = len(str(max(len(self.points) - 1, 0))), len(str(max(self.replications - 1, 0)))
        return f"{self.sweep_id}-p{point_id:0{width}d}-r{replication:0{rep_width}d}"

    def task(self, k: int) -> RunTask:
        point_id, replication = k % len(self.points), k // len(self.points)
        run_id = self.run_id(k)
        config = {**self.configs[point_id], "seed": self.seeds[replication], "simulation_id": run_id}
        return RunTask(self.sweep_id, run_id, point_id, replication, self.points[point_id], config)

    def tasks(self) -> Iterator[RunTask]:
        return (self.task(k) for k in range(len(self)))


def plan(spec: ExperimentSpec, sweep_id: str) -> Plan:
    """The sweep's plan, each point's config validated.

    Raises SpecError naming the point and the problem before anything is written.
    """
    points, unit = draw_points(spec)
    configs = []
    for point_id, point in enumerate(points):
        try:
            config = SimulationConfig.model_validate(config_fields(spec.base, point))
        except ValidationError as exc:
            detail = validation_problems(exc)[0][1]
            raise SpecError(f"factors at point {point_id} ({_describe(point)}): {detail}") from None
        configs.append(config.model_dump(mode="json", exclude={"seed", "simulation_id"}))
    seeds = [run_seed(int(spec.seed or 0), r) for r in range(spec.replications)]
    runs = Plan(sweep_id, points, unit, spec.replications, configs, seeds)
    last = runs.run_id(len(runs) - 1)  # the longest run id
    if not re.fullmatch(RUN_ID_PATTERN, last):
        raise SpecError(f"sweep id: {sweep_id!r} makes run ids like {last!r}, over 64 characters; choose a shorter one")
    return runs


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
    runs = plan(spec, sweep_id)
    path = sweep_dir(store, sweep_id)
    if path.exists():
        raise SpecError(f"sweep id: a sweep named {sweep_id!r} already exists in {store.root}; choose another")
    exec_ = make_executor(executor, store.root, workers, ray_address, path / "workers.log")
    path.mkdir(parents=True)
    write_json_atomic(path / "design.json", {"points": runs.points, "unit": runs.unit})
    record = SweepRecord(path, {
        "sweep_id": sweep_id, "name": spec.name, "sampler": spec.sampler, "seed": spec.seed,
        "points": len(runs.points), "replications": spec.replications, "runs_planned": len(runs),
        "runs_done": 0, "runs_failed": 0, "started_at": _now(), "finished_at": None, "duration_s": None,
        "error": None, "spec": spec.model_dump(mode="json"), "failures": {},
        **_driver(exec_), "resumed_at": [],
    })
    record.save()
    return _execute(record, runs, exec_, store, progress, should_stop)


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
    runs = plan(spec, sweep_id)
    path = sweep_dir(store, sweep_id)
    exec_ = make_executor(executor or info.meta.get("executor") or "local", store.root,
                          workers or None, ray_address, path / "workers.log")
    meta = dict(info.meta)
    meta.update(**_driver(exec_), finished_at=None, error=None, failures={},
                resumed_at=[*meta.get("resumed_at", []), _now()])
    record = SweepRecord(path, meta)
    record.save()
    return _execute(record, runs, exec_, store, progress, should_stop)


def _driver(executor: Executor) -> dict[str, Any]:
    """sweep.json's marks of a live driver (this process), like run.json's of a writer."""
    pid = os.getpid()
    return {"status": "running", "executor": executor.name, "workers": executor.workers or None,
            "pid": pid, "pid_start_time": _proc.process_start_time(pid), "host": _proc.hostname()}


def sweep_runs(store: Store, sweep_id: str) -> list[RunInfo]:
    """The sweep's runs: only folders named as its runs are read, however many runs the store holds."""
    return [r for r in store.runs(prefix=f"{sweep_id}-p") if r.meta.get("sweep_id") == sweep_id]


def _completed_runs(store: Store, sweep_id: str) -> dict[str, RunInfo]:
    return {r.run_id: r for r in sweep_runs(store, sweep_id) if r.status == "completed"}


class _Packer:
    """Packs the sweep's completed runs in batches, numbering its packs <sweep_id>-0000, -0001, ..."""

    def __init__(self, store: Store, sweep_id: str, unpacked: list[str]) -> None:
        self.store, self.sweep_id, self.unpacked = store, sweep_id, unpacked
        self.next = sum(1 for p in (store.root / "packs").glob(f"{sweep_id}-*")) if (store.root / "packs").is_dir() else 0

    def add(self, run_id: str) -> None:
        self.unpacked.append(run_id)
        if len(self.unpacked) >= PACK_EVERY:
            self.flush()

    def flush(self) -> None:
        # Even a lone run: the workers did not fsync it (durable.set_sync), the pack does.
        if self.unpacked:
            self.store.pack(self.unpacked, f"{self.sweep_id}-{self.next:04d}")
            self.next += 1
        self.unpacked = []


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
    runs: Plan,
    executor: Executor,
    store: Store,
    progress: Callable[[SweepProgress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> SweepResult:
    """Run every run of the plan not completed yet; retry a lost one once; record as results come in."""
    sweep_id = record.info["sweep_id"]
    started = time.monotonic()
    done_before = _completed_runs(store, sweep_id)
    queue = deque(k for k in range(len(runs)) if runs.run_id(k) not in done_before)
    base = parse_spec(record.info["spec"]).base
    share = LLMShare(int(base.get("concurrency", 8)), base.get("budget_usd"),
                     sum(float(r.meta.get("cost_usd") or 0.0) for r in done_before.values()))
    packer = _Packer(store, sweep_id, [r.run_id for r in done_before.values() if not r.meta.get("manifest", {}).get("pack")])
    attempts: dict[int, int] = {}
    by_run: dict[str, int] = {}
    failures: dict[str, str] = {}
    done = len(runs) - len(queue)
    finished_now = in_flight = 0
    status, error = "completed", None

    def report() -> None:
        record.info.update(runs_done=done, runs_failed=len(failures), failures=failures)
        record.save(force=False)
        if progress is not None:
            elapsed = time.monotonic() - started
            eta = elapsed / finished_now * (len(queue) + in_flight) if finished_now else None
            progress(SweepProgress(sweep_id, done, len(failures), len(runs), elapsed, eta))

    executor.start()
    try:
        report()
        while queue or in_flight:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            while queue and in_flight < executor.capacity:
                task = share.terms(runs.task(queue[0]), executor.workers, executor.capacity)
                if task is None:
                    break
                k = queue.popleft()
                attempts[k] = attempts.get(k, 0) + 1
                by_run[task.run_id] = k
                executor.submit(task)
                in_flight += 1
            if queue and not in_flight:  # nothing running and nothing may start: the budget is spent
                failures.update((runs.run_id(k), "not run: the sweep's LLM budget is spent") for k in queue)
                queue.clear()
                break
            result = executor.next_result(timeout=0.25)
            if result is None:
                continue
            in_flight -= 1
            share.spent += result.cost_usd
            k = by_run.pop(result.run_id)
            if result.bundle is not None:
                publish(store, result)
            if result.status == "completed":
                done += 1
                finished_now += 1
                packer.add(result.run_id)
            elif result.status == "lost" and attempts[k] < ATTEMPTS:
                queue.appendleft(k)
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
        packer.flush()
        if error != "KeyboardInterrupt":
            if status == "completed" and failures:
                status, error = "failed", f"{len(failures)} of {len(runs)} runs failed"
            _finish(record, status, error, done, failures)
    return SweepResult(sweep_id, status, done, len(failures), len(runs), time.monotonic() - started, failures)


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
