"""What runs a sweep's tasks: a pool of local worker processes, or Ray.

Both take RunTasks and give back TaskResults through the same small interface,
so the sweep driver (commonpool.experiments.sweep) neither knows nor cares
where a run happens:

    executor.start()
    executor.submit(task)            # as many as executor.capacity at a time
    executor.next_result(timeout)    # a TaskResult, or None if none came in time
    executor.stop()                  # ask running tasks to stop at their next round
    executor.close()

A result's status is "lost" when the process that ran it died before the run
could report; the driver retries such a task once.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from commonpool.experiments.task import RunTask, TaskResult
from commonpool.llm.workers import WORKERS_ENV

EXECUTORS = ("local", "ray")
# LLM worker processes per sweep worker (commonpool.llm.workers); 0 unless set.
SWEEP_LLM_WORKERS_ENV = "COMMONPOOL_SWEEP_LLM_WORKERS"


class Executor(Protocol):
    name: str
    workers: int

    @property
    def capacity(self) -> int:
        """How many tasks may be submitted and not yet returned."""
        ...

    def start(self) -> None: ...
    def submit(self, task: RunTask) -> None: ...
    def next_result(self, timeout: float) -> TaskResult | None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


def default_workers() -> int:
    """One worker per core."""
    return os.cpu_count() or 1


@dataclass
class _Slot:
    """One worker process and the task it is running."""

    process: subprocess.Popen[str]
    task: RunTask | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalExecutor:
    """A pool of `python -m commonpool.experiments.worker` processes on this machine.

    Each worker runs one task at a time straight into the store (they share its
    disk), and lives for the whole sweep so its imports are paid once. A worker
    that dies fails only the task it was running (reported as "lost") and is
    replaced for the next task.
    """

    name = "local"

    def __init__(self, store_root: Path, workers: int | None = None, log: Path | None = None) -> None:
        self.store_root = Path(store_root)
        self.workers = workers or default_workers()
        self.log = log
        self._tasks: queue.Queue[RunTask | None] = queue.Queue()
        self._results: queue.Queue[TaskResult] = queue.Queue()
        self._slots: list[_Slot] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._log_file: IO[str] | None = None

    @property
    def capacity(self) -> int:
        # One queued behind each running task, so a worker never waits for the driver.
        return 2 * self.workers

    def start(self) -> None:
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log, "a", encoding="utf-8")
        for k in range(self.workers):
            thread = threading.Thread(target=self._serve, name=f"sweep-worker-{k}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def submit(self, task: RunTask) -> None:
        self._tasks.put(task)

    def next_result(self, timeout: float) -> TaskResult | None:
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    def pids(self) -> list[int]:
        """The worker processes now running (for tests that kill one)."""
        return [slot.process.pid for slot in self._slots if slot.process.poll() is None]

    def stop(self) -> None:
        """Each running task stops before its next round and is stored as cancelled; queued ones are dropped."""
        self._stopping.set()
        while True:
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                break
        for slot in list(self._slots):
            if slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        for slot in self._slots:
            if slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()
        if self._log_file is not None:
            self._log_file.close()

    def _spawn(self) -> _Slot:
        package_root = str(Path(__file__).resolve().parents[2])
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
            # The sweep's workers are the parallelism: an LLM run makes its calls in its
            # own process rather than importing LiteLLM again in a pool of its own.
            WORKERS_ENV: os.environ.get(SWEEP_LLM_WORKERS_ENV, "0"),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "commonpool.experiments.worker", str(self.store_root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file or subprocess.DEVNULL,
            text=True, env=environment,
        )
        slot = _Slot(process)
        self._slots.append(slot)
        return slot

    def _serve(self) -> None:
        """A worker thread: feed its process one task at a time; replace it if it dies."""
        slot: _Slot | None = None
        while True:
            task = self._tasks.get()
            if task is None or self._stopping.is_set():
                break
            if slot is None or slot.process.poll() is not None:
                slot = self._spawn()
            result = self._run(slot, task)
            if result.status == "lost":
                slot = None
            self._results.put(result)
        if slot is not None and slot.process.poll() is None:
            assert slot.process.stdin is not None
            slot.process.stdin.close()

    def _run(self, slot: _Slot, task: RunTask) -> TaskResult:
        assert slot.process.stdin is not None and slot.process.stdout is not None
        try:
            slot.process.stdin.write(json.dumps(task.to_json()) + "\n")
            slot.process.stdin.flush()
            line = slot.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = slot.process.wait()
            return TaskResult(task.run_id, "lost", f"its worker process died (exit code {code})")
        return TaskResult(**json.loads(line))


def make_executor(name: str, store_root: Path, workers: int | None, ray_address: str | None, log: Path | None) -> Executor:
    """The executor called name ("local" or "ray")."""
    if name == "local":
        return LocalExecutor(store_root, workers, log)
    if name == "ray":
        from commonpool.experiments.ray_executor import RayExecutor

        return RayExecutor(store_root, workers, ray_address)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
