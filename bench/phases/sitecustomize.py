"""Start-up and exit phases of a CLI LLM run, for bench/bench_llm.py only (never installed).

bench_llm puts this folder on PYTHONPATH with COMMONPOOL_PHASES_LOG set; Python
then imports it in the run's process and in every LLM worker (which inherit the
environment). Each phase's start (name>) and end (name<) is appended to the log
as "pid name CLOCK_MONOTONIC", a clock every process on the machine shares, so
bench_llm can line them up with the fake server's request times. Functions are
wrapped as their modules are imported; a module this does not know is untouched.
"""

import atexit
import functools
import importlib.abc
import importlib.util
import inspect
import os
import sys
import time

LOG = os.environ.get("COMMONPOOL_PHASES_LOG")


def mark(name: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {name} {time.monotonic():.4f}\n".encode())
    os.close(fd)


def timed(owner, attr: str, label: str, once: bool = False) -> None:
    """Mark owner.attr's start and end (only its first call's, with once)."""
    f = getattr(owner, attr)
    calls = []

    def marks() -> bool:
        calls.append(1)
        return not once or len(calls) == 1

    if inspect.iscoroutinefunction(f):
        @functools.wraps(f)
        async def wrapper(*args, **kwargs):
            on = marks()
            on and mark(label + ">")
            try:
                return await f(*args, **kwargs)
            finally:
                on and mark(label + "<")
    else:
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            on = marks()
            on and mark(label + ">")
            try:
                return f(*args, **kwargs)
            finally:
                on and mark(label + "<")
    setattr(owner, attr, wrapper)


def on_cli(m) -> None:
    timed(m, "config_from_args", "config")
    timed(m, "_check_credentials", "credentials check")
    timed(m, "_report", "summary")


def on_engine(m) -> None:
    timed(m, "run_simulation", "run_simulation")
    timed(m, "play_round", "first round", once=True)
    timed(m, "record_run_metrics", "run_metrics")


def on_workers(m) -> None:
    timed(m, "_spawn", "spawn worker")
    timed(m.WorkerPool, "call", "first call", once=True)

HOOKS = {
    "commonpool.cli": on_cli,
    "commonpool.engine": on_engine,
    "commonpool.store.writer": lambda m: timed(m.RunWriter, "close", "writer close"),
    "commonpool.llm.workers": on_workers,
    "commonpool.llm.client": lambda m: timed(m.LiteLLMModel, "complete", "worker first complete", once=True),
    "commonpool.metrics": lambda m: mark("metrics imported"),
}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in HOOKS and name != "litellm":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            if name == "litellm":
                mark("import litellm>")
            run(module)
            if name == "litellm":
                mark("import litellm<")
            else:
                HOOKS[name](module)
        spec.loader.exec_module = exec_module
        return spec


if LOG:
    mark("python started")
    atexit.register(mark, "last atexit")  # registered first, so it runs last
    sys.meta_path.insert(0, _Finder())
