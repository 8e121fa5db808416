"""Processes a test kills at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kill_when_ready(script: str, *args: str) -> None:
    """Run `python -c script args...`; SIGKILL it as soon as it prints "ready" (the moment it chose)."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
