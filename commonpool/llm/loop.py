"""One event loop in a background thread for the life of a run.

The engine is synchronous; each turn hands its batch of calls to this loop and
waits. Keeping one loop (rather than asyncio.run per turn) keeps the HTTP
connection pools LiteLLM binds to a loop alive from turn to turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class InlineSetupExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: LiteLLM's per-call set-up runs inline, everything else in threads.

    litellm.acompletion hands its synchronous set-up (building the request: CPU
    only, no I/O) to run_in_executor. On a thread that work gains no parallelism
    (the GIL) and costs hand-offs between up to six threads per call. Anything
    else sent to the default executor (such as DNS lookups) still runs on threads.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        if not _is_litellm_setup(fn):
            return super().submit(fn, *args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered to the awaiting caller, as a thread would
            future.set_exception(exc)
        return future


def _is_litellm_setup(fn: Callable[..., Any]) -> bool:
    """Whether fn is acompletion's partial(context.run, partial(litellm.completion, ...))."""
    inner = fn.args[0] if isinstance(fn, functools.partial) and fn.args else None
    completion = getattr(sys.modules.get("litellm"), "completion", None)
    return isinstance(inner, functools.partial) and completion is not None and inner.func is completion


class BackgroundLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(InlineSetupExecutor(thread_name_prefix="commonpool-llm-io"))
        self._thread = threading.Thread(target=self.loop.run_forever, name="commonpool-llm", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        # LiteLLM leaves background tasks (its logging worker) on the loop; ending them
        # here keeps "Event loop is closed" noise out of the user's terminal.
        self.run(_cancel_others())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


async def _cancel_others() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
