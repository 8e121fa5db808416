"""CommonPool: simulate a community that trades without money.

The names below are imported on first use (PEP 562), so a command that only
reads the store (`commonpool runs list`) does not pay for the engine's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commonpool.config import ParticipantSpec, ResourceSpec, SimulationConfig
    from commonpool.engine import RunResult, run_simulation
    from commonpool.personalities import Personality, Traits

_HOME = {
    "ParticipantSpec": "commonpool.config",
    "ResourceSpec": "commonpool.config",
    "SimulationConfig": "commonpool.config",
    "RunResult": "commonpool.engine",
    "run_simulation": "commonpool.engine",
    "Personality": "commonpool.personalities",
    "Traits": "commonpool.personalities",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'commonpool' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
