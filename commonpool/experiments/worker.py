"""A sweep worker process: `python -m commonpool.experiments.worker STORE`.

Reads one task per line (JSON) on stdin, runs it into STORE through
task.run_task, and writes one result per line (JSON) on stdout. A plain
subprocess rather than multiprocessing, whose spawn re-runs the caller's
__main__ (a script without a main guard, or Streamlit's) in every worker, and
whose pool breaks as a whole when one worker dies.

Ctrl-C reaches the worker with the rest of the terminal's process group: the
run in progress stops before its next round and is stored as cancelled (so a
resumed sweep continues it), then the worker reports and waits for more work
or the end of its input. SIGTERM does the same, for a driver that is not on a
terminal (the dashboard).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from commonpool.experiments.task import RunTask, TaskResult, run_task
from commonpool.store.durable import set_sync


def _stop_with_driver() -> None:
    """Ask Linux to send us SIGTERM when the driver dies (even by SIGKILL), so an
    orphaned worker stops its run at the next round instead of running on."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: the worker stops when its input closes, after its current run
    if os.getppid() == 1:  # the driver died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    store_root = Path(argv[0])
    set_sync(False)  # the driver's packs make the runs durable (see durable.set_sync)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    _stop_with_driver()
    # Results go to the real stdout only; anything a run prints goes to stderr.
    channel, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        task = RunTask(**json.loads(line))
        try:
            result = run_task(task, store_root, should_stop=stop.is_set)
        except Exception as exc:  # the worker lives on: one run's failure is that run's result
            traceback.print_exc(file=sys.stderr)
            result = TaskResult(task.run_id, "failed", f"{type(exc).__name__}: {exc}")
        channel.write(json.dumps(result.to_json()) + "\n")
        channel.flush()
        if stop.is_set():
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
