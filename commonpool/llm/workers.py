"""LiteLLM calls in worker processes, so their Python work runs beside the engine instead of in its way.

A call spends about 4 ms of CPU inside LiteLLM and the OpenAI SDK before and
after the request is on the wire. In one interpreter the ~20 calls of a round
queue behind each other for that CPU, and each waits its turn on top of the
provider's latency. A small pool of worker processes (COMMONPOOL_LLM_WORKERS,
default one per core up to 4; 0 keeps calls in this process) each run
LiteLLMModel on their own event loop. Everything else (cache, concurrency limit,
budget, retries, the call log) stays in the run's process: a worker only turns a
ChatRequest into a CallRecord and the model's text, or one of our errors.

Workers start on the first call that needs a provider (or earlier, when the CLI
asks them to check credentials while it sets the run up), so a rerun answered
from the cache never starts one, and they live for the process: the dashboard's
second run pays no start-up. One worker starts first and the rest once it has
answered a call, so on a small machine the first request waits for one LiteLLM
import, not for several competing for the same cores (nor for a second import
beside the first request's own set-up). Each session sends its environment
first (keys and bases may come from .env files loaded after the workers started),
and messages on a worker's pipe are handled in order.
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
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from commonpool.llm.chat import CallRecord, ChatRequest, Reply
from commonpool.llm.cost import Prices
from commonpool.llm.errors import CredentialsError, FatalError, LLMError, RequestError, TransientError
from commonpool.llm.scrub import scrub

WORKERS_ENV = "COMMONPOOL_LLM_WORKERS"
MAX_DEFAULT_WORKERS = 4
# Beyond LiteLLMModel's own bound (timeout + its grace): a worker that never answers.
WORKER_GRACE_S = 10.0
# The kinds a worker can report (a spent budget is found here, before a call is sent).
ERRORS: dict[str, type[LLMError]] = {
    cls.__name__: cls for cls in (TransientError, RequestError, FatalError, CredentialsError)
}
READY = 0  # the call id of a worker's "LiteLLM is loaded" message
# How long close() waits for a worker to go (it exits at once on "stop"; this is for one that hangs).
STOP_WAIT_S = 0.5


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
    from commonpool.llm.client import LiteLLMModel, import_litellm, warm_up
    from commonpool.llm.loop import InlineSetupExecutor
    from commonpool.llm.preflight import check_here

    import_litellm()  # meanwhile the run's first requests wait in the socket's buffer
    conn.send((READY, ("ok", None, None)))
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
            result = ("ok", reply.text, log)  # every request it made (a refused response_format, then the answer)
        except LLMError as exc:
            result = (type(exc).__name__, str(exc), getattr(exc, "retry_after", None), log)
        except Exception as exc:  # a fault of ours, not the provider's: the run should stop and say so
            result = ("FatalError", scrub(f"{type(exc).__name__}: {exc}")[:500], None, log)
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
            elif message[0] == "check":
                conn.send((message[1], ("ok", check_here(*message[2:]), None)))
            else:  # "stop"
                loop.stop()
                return

    loop.add_reader(conn.fileno(), read)
    # LiteLLM's first call loads more of it; do that while the run's process sets up. Two
    # turns of the loop later, so a credentials check already waiting is answered first.
    loop.call_soon(loop.call_soon, lambda: loop.create_task(warm_up()))
    loop.run_forever()
    # Nothing of ours is left to flush; Python's own shutdown of LiteLLM's modules and
    # threads takes about a second, which the run's process would wait for at exit.
    os._exit(0)


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
    ready: threading.Event = field(default_factory=threading.Event)  # LiteLLM is loaded

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
            if call_id == READY:
                self.ready.set()
                continue
            with self.lock:
                waiting = self.pending.pop(call_id, None)
            if waiting is not None:
                waiting[0].call_soon_threadsafe(_resolve, waiting[1], result)
        with self.lock:
            self.alive = False
        try:
            code: int | None = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        with self.lock:
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
        self._ids = itertools.count(READY + 1)
        self._lock = threading.Lock()
        self._closed = False
        self._grown = False  # a call has been answered: start them all

    def _start(self) -> list[_Worker]:
        """The live workers, starting any missing (on first use, or to replace one that died).

        Until a call has been answered only one is started: the others' imports would
        compete for the cores with its import and with the first request's set-up (in
        this process and in LiteLLM), and delay the run's first request.
        """
        with self._lock:
            if self._closed:
                return []
            self._workers = [w for w in self._workers if w.alive]
            wanted = self.size if self._grown else 1
            while len(self._workers) < wanted:
                worker = _Worker(*_spawn())
                threading.Thread(target=worker.read, name="commonpool-llm-worker-reader", daemon=True).start()
                self._workers.append(worker)
                if self._environment is not None:  # a late starter gets what the others were sent
                    worker.send(("env", self._environment))
            return list(self._workers)

    def start(self) -> None:
        """Start the first worker now, so that its LiteLLM import runs while the caller sets up."""
        self._start()

    def share_environment(self) -> None:
        """Send this process's environment to the workers before the calls that follow (a session's first call)."""
        environment = dict(os.environ)
        with self._lock:
            if environment == self._environment:
                return
            self._environment = environment  # from here on, a worker that starts is sent it by _start
        for worker in self._start():
            worker.send(("env", environment))

    async def call(self, api_base: str | None, timeout_s: float, prices: Prices | None, request: ChatRequest, attempt: int) -> tuple[Any, ...]:
        """One LiteLLMModel call in the least busy ready worker (or the first, while none is); its result tuple (see serve)."""
        result = await self._request(self._least_busy(), "call", api_base, timeout_s, prices, request, attempt)
        if not self._grown:
            self._grown = True
            self._start()
        return result

    def _least_busy(self) -> _Worker:
        workers = self._start()
        if not workers:
            raise FatalError("the LLM worker processes were shut down")
        ready = [w for w in workers if w.ready.is_set()] or workers[:1]
        return min(ready, key=lambda w: len(w.pending))

    def check(self, models: list[str], api_base: str | None, timeout_s: float) -> dict[str, Any] | None:
        """preflight.check_here run in a worker (started if need be); None if no worker answers in time."""

        async def ask() -> tuple[Any, ...]:
            return await asyncio.wait_for(self._request(self._least_busy(), "check", models, api_base), timeout_s)

        try:
            result = asyncio.run(ask())
        except (asyncio.TimeoutError, FatalError):
            return None
        return result[1] if result[0] == "ok" else None

    def pids(self) -> list[int]:
        """The live workers' process ids (a benchmark adds their CPU time to the run's)."""
        return [w.process.pid for w in self._workers if w.alive]

    def warm_up(self) -> None:
        """Start every worker and wait until each has LiteLLM loaded (a benchmark's one-off, like import_litellm)."""

        async def ping_all() -> None:
            await asyncio.gather(*(self._request(worker, "ping") for worker in self._start()))

        self._grown = True
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
        """Stop the workers; one that does not go within STOP_WAIT_S is terminated, so exit never waits long.

        One still importing LiteLLM would read "stop" only once it has loaded it: it is
        terminated at once, as it holds nothing.
        """
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            if not worker.ready.is_set():
                worker.process.terminate()
                continue
            try:
                worker.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
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
            result = ("TransientError", f"no answer from the LLM worker within {bound:.0f} s", None,
                      [CallRecord(model=request.model, attempt=attempt, congestion=True)])
        if result[0] == "ok":
            _, text, records = result
            log.extend(records)
            return Reply(text=text, record=records[-1])
        kind, message, retry_after, records = result
        records = records or [CallRecord(model=request.model, attempt=attempt)]
        message = scrub(message)  # again, with this process's secrets (the worker's may be older)
        for record in records[:-1]:
            record.error = scrub(record.error or "") or None
        records[-1].error = message
        log.extend(records)
        error = ERRORS.get(kind, FatalError)(message)
        if retry_after is not None and isinstance(error, TransientError):
            error.retry_after = retry_after  # type: ignore[attr-defined]
        raise error


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
