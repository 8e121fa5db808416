"""CommonPool: simulate a community that trades without money."""

from commonpool.config import ParticipantSpec, ResourceSpec, SimulationConfig
from commonpool.engine import RunResult, run_simulation
from commonpool.personalities import Personality, Traits

__all__ = [
    "ParticipantSpec",
    "Personality",
    "ResourceSpec",
    "RunResult",
    "SimulationConfig",
    "Traits",
    "run_simulation",
]
