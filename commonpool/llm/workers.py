"""LiteLLM calls in worker processes, so their Python work runs beside the engine instead of in its way.

A call spends about 4 ms of CPU inside LiteLLM and the OpenAI SDK before and
after the request is on the wire. In one interpreter the ~20 calls of a round
queue behind each other for that CPU, and each waits its turn on top of the
provider's latency. A small pool of worker processes (COMMONPOOL_LLM_WORKERS,
default one per core up to 4; 0 keeps calls in this process) each run
LiteLLMModel on their own event loop. Everything else (cache, concurrency limit,
budget, retries, the call log) stays in the run's process: a worker only turns a
ChatRequest into a CallRecord and the model's text, or one of our errors.

Workers start on the first call that needs a provider, so a rerun answered from
the cache never starts one, and they live for the process: the dashboard's
second run pays no start-up. Each session sends its environment first (keys
and bases may come from .env files loaded after the workers started), and
messages on a worker's pipe are handled in order.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from commonpool.llm.chat import CallRecord, ChatRequest, Reply
from commonpool.llm.cost import Prices
from commonpool.llm.errors import FatalError, LLMError, RequestError, TransientError
from commonpool.llm.scrub import scrub

WORKERS_ENV = "COMMONPOOL_LLM_WORKERS"
MAX_DEFAULT_WORKERS = 4
# Beyond LiteLLMModel's own bound (timeout + its grace): a worker that never answers.
WORKER_GRACE_S = 10.0
# The kinds a worker can report (a spent budget is found here, before a call is sent).
ERRORS: dict[str, type[LLMError]] = {cls.__name__: cls for cls in (TransientError, RequestError, FatalError)}


def worker_count() -> int:
    """How many worker processes LLM calls use (COMMONPOOL_LLM_WORKERS); 0 means calls run in this process."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    try:
        count = int(raw)
    except ValueError:
        count = -1
    if not 0 <= count <= 64:
        raise ValueError(f"{WORKERS_ENV} must be a whole number from 0 to 64 (0 = no worker processes), got {raw!r}")
    return count


# --- the worker process --------------------------------------------------------------------


def serve(conn: Connection) -> None:
    """A worker's main: one event loop reads calls from conn and answers each as it finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it stops us by closing the pipe
    from commonpool.llm.client import LiteLLMModel, import_litellm
    from commonpool.llm.loop import InlineSetupExecutor

    import_litellm()  # meanwhile the run's first requests wait in the socket's buffer
    loop = asyncio.new_event_loop()
    loop.set_default_executor(InlineSetupExecutor(thread_name_prefix="commonpool-llm-io"))
    models: dict[tuple[str | None, float, Prices | None], LiteLLMModel] = {}

    async def call(call_id: int, api_base: str | None, timeout_s: float, prices: Prices | None, request: ChatRequest, attempt: int) -> None:
        key = (api_base, timeout_s, prices)
        if key not in models:
            models[key] = LiteLLMModel(api_base, timeout_s, prices)
        log: list[CallRecord] = []
        result: tuple[Any, ...]
        try:
            reply = await models[key].complete(request, log, attempt)
            result = ("ok", reply.text, reply.record)
        except LLMError as exc:
            result = (type(exc).__name__, str(exc), getattr(exc, "retry_after", None), log[-1] if log else None)
        except Exception as exc:  # a fault of ours, not the provider's: the run should stop and say so
            result = ("FatalError", scrub(f"{type(exc).__name__}: {exc}")[:500], None, log[-1] if log else None)
        conn.send((call_id, result))

    def read() -> None:
        while conn.poll():
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the run's process has gone
                loop.stop()
                return
            if message[0] == "env":
                environment: dict[str, str] = message[1]
                for name in set(os.environ) - set(environment):
                    del os.environ[name]
                os.environ.update(environment)
            elif message[0] == "call":
                loop.create_task(call(*message[1:]))
            elif message[0] == "ping":
                conn.send((message[1], ("ok", None, None)))
            else:  # "stop"
                loop.stop()
                return

    loop.add_reader(conn.fileno(), read)
    loop.run_forever()


# --- the run's side ------------------------------------------------------------------------


def _spawn() -> tuple[subprocess.Popen[bytes], Connection]:
    """A worker process (python -m commonpool.llm.workers FD) and our end of its socket.

    A plain subprocess rather than multiprocessing's spawn, which would re-run the
    caller's __main__ (a script without a main guard, or Streamlit's) in every worker.
    """
    ours, theirs = socket.socketpair()
    package_root = str(Path(__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "commonpool.llm.workers", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), env=environment, stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return process, Connection(ours.detach())


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[tuple[Any, ...]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # pending and alive
    send_lock: threading.Lock = field(default_factory=threading.Lock)  # apart, so answers are read while a send waits
    alive: bool = True

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def read(self) -> None:
        """The reader thread: hand each answer to the loop that waits for it; when the pipe ends, fail the rest."""
        while True:
            try:
                call_id, result = self.conn.recv()
            except (EOFError, OSError):
                break
            with self.lock:
                waiting = self.pending.pop(call_id, None)
            if waiting is not None:
                waiting[0].call_soon_threadsafe(_resolve, waiting[1], result)
        try:
            code: int | None = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        with self.lock:
            self.alive = False
            stranded, self.pending = list(self.pending.values()), {}
        for loop, future in stranded:
            loop.call_soon_threadsafe(_resolve, future, _stopped(code))


def _stopped(code: int | None) -> tuple[Any, ...]:
    """The result of a call whose worker has gone."""
    return ("FatalError", f"an LLM worker process stopped (exit code {code})", None, None)


def _resolve(future: asyncio.Future[tuple[Any, ...]], result: tuple[Any, ...]) -> None:
    if not future.done():  # the caller may have given up (timeout, cancelled round)
        future.set_result(result)


class WorkerPool:
    """Worker processes shared by every run in this process; started on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._workers: list[_Worker] = []
        self._environment: dict[str, str] | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _start(self) -> list[_Worker]:
        """The live workers, starting any missing (on first use, or to replace one that died)."""
        with self._lock:
            self._workers = [w for w in self._workers if w.alive]
            while len(self._workers) < self.size:
                worker = _Worker(*_spawn())
                threading.Thread(target=worker.read, name="commonpool-llm-worker-reader", daemon=True).start()
                self._workers.append(worker)
            return list(self._workers)

    def share_environment(self) -> None:
        """Send this process's environment to the workers before the calls that follow (a session's first call)."""
        environment = dict(os.environ)
        workers = self._start()
        with self._lock:
            if environment == self._environment:
                return
            self._environment = environment
        for worker in workers:
            worker.send(("env", environment))

    async def call(self, api_base: str | None, timeout_s: float, prices: Prices | None, request: ChatRequest, attempt: int) -> tuple[Any, ...]:
        """One LiteLLMModel call in the least busy worker; its result tuple (see serve)."""
        worker = min(self._start(), key=lambda w: len(w.pending))
        return await self._request(worker, "call", api_base, timeout_s, prices, request, attempt)

    def pids(self) -> list[int]:
        """The live workers' process ids (a benchmark adds their CPU time to the run's)."""
        return [w.process.pid for w in self._workers if w.alive]

    def warm_up(self) -> None:
        """Start every worker and wait until each has LiteLLM loaded (a benchmark's one-off, like import_litellm)."""

        async def ping_all() -> None:
            await asyncio.gather(*(self._request(worker, "ping") for worker in self._start()))

        asyncio.run(ping_all())

    async def _request(self, worker: _Worker, kind: str, *arguments: Any) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        future: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        with worker.lock:
            if not worker.alive:
                return _stopped(worker.process.poll())
            worker.pending[call_id] = (loop, future)
        try:
            worker.send((kind, call_id, *arguments))
            return await future
        finally:
            with worker.lock:
                worker.pending.pop(call_id, None)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            try:
                worker.send(("stop",))
            except OSError:
                pass
        for worker in workers:
            try:
                worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.process.terminate()
            worker.conn.close()


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process's worker pool (created, not yet started, on first use; stopped at exit)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool(max(1, worker_count()))
            atexit.register(_pool.close)
        return _pool


class WorkerModel:
    """ChatModel that hands the LiteLLM call to a worker process (same contract as LiteLLMModel)."""

    def __init__(self, api_base: str | None, timeout_s: float, prices: Prices | None, pool: WorkerPool | None = None) -> None:
        self.api_base = api_base
        self.timeout_s = timeout_s
        self.prices = prices
        self.pool = pool
        self._shared = False

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        if self.pool is None:
            self.pool = shared_pool()
        if not self._shared:
            self._shared = True
            self.pool.share_environment()
        bound = self.timeout_s + WORKER_GRACE_S
        try:
            result = await asyncio.wait_for(self.pool.call(self.api_base, self.timeout_s, self.prices, request, attempt), bound)
        except asyncio.TimeoutError:
            result = ("TransientError", f"no answer from the LLM worker within {bound:.0f} s", None, None)
        if result[0] == "ok":
            _, text, record = result
            log.append(record)
            return Reply(text=text, record=record)
        kind, message, retry_after, record = result
        record = record or CallRecord(model=request.model, attempt=attempt)
        message = scrub(message)  # again, with this process's secrets (the worker's may be older)
        record.error = message
        log.append(record)
        error = ERRORS.get(kind, FatalError)(message)
        if retry_after is not None and isinstance(error, TransientError):
            error.retry_after = retry_after  # type: ignore[attr-defined]
        raise error


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
