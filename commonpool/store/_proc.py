"""Telling whether the process that wrote a run is still alive.

A pid alone is not enough: pids are reused, so a long-dead writer's pid may now
belong to an unrelated process. On Linux the process start time (field 22 of
/proc/<pid>/stat, in clock ticks since boot) identifies a process for its whole
life, so the writer records it and the reader compares it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat, or None if the process does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may itself contain spaces or ")",
    # so split only after the last ")".
    return text[text.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot; None off Linux or if pid is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # fields[0] is field 3, so field 22 is [19]


def hostname() -> str:
    return socket.gethostname()


def writer_alive(pid: int | None, start_time: int | None, host: str | None) -> bool:
    """Whether the process recorded as a run's writer is still running."""
    if host is not None and host != hostname():
        # Another machine's processes (shared store on a network drive) cannot be
        # inspected from here, so run.json's own status is the best we know.
        return True
    if pid is None:
        return False
    if Path("/proc/self/stat").exists():
        fields = _stat_fields(pid)
        if fields is None:
            return False
        if fields[0] == "Z":
            # A zombie has exited (e.g. SIGKILLed) and only waits to be reaped.
            return False
        return start_time is None or int(fields[19]) == start_time
    try:
        os.kill(pid, 0)  # signal 0 checks existence without touching the process
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
