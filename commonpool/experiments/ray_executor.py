"""Running a sweep's tasks on Ray: a local Ray started for the sweep, or a cluster.

One remote function per run (`_run_remote`), results as values, no shared
state: a task runs into a scratch store on whichever node Ray picks, and its
run folder comes back as a tar archive in the result (TaskResult.bundle), so
workers need not share a disk with the driver. The driver publishes it into
its own store (commonpool.experiments.publish).

Ray is an optional extra (requirements-ray.txt), imported only here and only
when `--executor ray` is chosen, so its absence never touches the local path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from commonpool.experiments.task import RunTask, TaskResult, pack_run, run_task
from commonpool.llm.workers import WORKERS_ENV


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "--executor ray needs Ray: pip install -r requirements-ray.txt (into the same environment)"
        ) from None
    return ray


def run_in_scratch(task_json: dict[str, Any], shared_cache: str | None = None) -> TaskResult:
    """Run one task into a fresh scratch store and return its run folder as a bundle.

    Where the driver's LLM response cache is reachable from this node (the same
    machine, or a shared file system), the scratch store uses it, so the sweep's
    runs share one cache as they do under the local executor.
    """
    from commonpool.store.durable import set_sync

    set_sync(False)  # a scratch store is thrown away; the driver's packs make the run durable
    task = RunTask(**task_json)
    os.environ.setdefault(WORKERS_ENV, "0")  # Ray's processes are the parallelism, as in executor.LocalExecutor
    scratch = Path(tempfile.mkdtemp(prefix="commonpool-ray-"))
    if shared_cache is not None and Path(shared_cache).parent.is_dir():
        Path(shared_cache).mkdir(exist_ok=True)
        (scratch / "cache").symlink_to(shared_cache, target_is_directory=True)
    try:
        try:
            result = run_task(task, scratch)
        except Exception as exc:
            return TaskResult(task.run_id, "failed", f"{type(exc).__name__}: {exc}")
        run_dir = scratch / "runs" / task.run_id
        if run_dir.is_dir():
            result.bundle = pack_run(run_dir)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RayExecutor:
    """Tasks as Ray remote calls; with no address, a local Ray of `workers` CPUs started for the sweep."""

    name = "ray"

    def __init__(self, store_root: Path, workers: int | None = None, address: str | None = None) -> None:
        self.store_root = Path(store_root)
        self.address = address
        self._requested = workers
        self.workers = workers or 0
        self._ray: Any = None
        self._remote: Any = None
        self._pending: dict[Any, str] = {}  # object ref -> run id
        self._started_ray = False

    @property
    def capacity(self) -> int:
        return 2 * max(self.workers, 1)

    def start(self) -> None:
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address is None:
                # "local": a new Ray of our own, even where RAY_ADDRESS or a running cluster would be found.
                options["address"] = "local"
                options["num_cpus"] = self._requested or os.cpu_count() or 1
            else:
                options["address"] = self.address
                # Nodes import commonpool from the driver's copy, whatever they have installed.
                options["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
            ray.init(**options)
            self._started_ray = True
        if not self.workers:
            self.workers = int(ray.cluster_resources().get("CPU", 1))
        # max_retries=0: the driver's own policy (retry a lost run once) decides, not Ray's.
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_in_scratch)

    def submit(self, task: RunTask) -> None:
        ref = self._remote.remote(task.to_json(), str(self.store_root / "cache"))
        self._pending[ref] = task.run_id

    def next_result(self, timeout: float) -> TaskResult | None:
        if not self._pending:
            return None
        ray = self._ray
        done, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if not done:
            return None
        ref = done[0]
        run_id = self._pending.pop(ref)
        try:
            return ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return TaskResult(run_id, "cancelled", "cancelled before it finished")
        except ray.exceptions.RayError as exc:
            # A node or worker that died, or a task that could not be run: only this run is lost.
            return TaskResult(run_id, "lost", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def stop(self) -> None:
        for ref in list(self._pending):
            self._ray.cancel(ref, force=False)

    def close(self) -> None:
        if self._ray is not None and self._started_ray:
            self._ray.shutdown()
