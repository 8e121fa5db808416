"""What an experiment varies, and how its points are drawn: the spec of a sweep.

A spec is plain data, written as TOML (read with the standard library's tomllib)
or built from CLI flags:

    name = "facilitator-effect"
    sampler = "grid"          # grid | random | lhs | sobol | morris
    replications = 20
    seed = 2026               # the sweep seed; every run's seed is drawn from it

    [base]                    # anything `commonpool run` accepts, as config fields
    num_participants = 60
    min_exchanges = 2000
    max_exchanges = 2000

    [factors]                 # what varies: a list of levels, or a range
    facilitator = [true, false]
    max_turns = { low = 2, high = 10, step = 2 }
    need_weight = { low = 0.5, high = 4.0 }          # continuous (not for grid)
    "personalities.generous" = { low = 0, high = 2 }  # one weight of the mix

A factor names a SimulationConfig field, `personalities.NAME` (one weight of the
mix), or `exchanges` (min_exchanges = max_exchanges). Integer fields get integer
ranges. Every point's configuration is validated before anything is written, so
a bad spec fails in one line that names the key.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from commonpool.config import RUN_ID_PATTERN, SimulationConfig, validation_problems
from commonpool.experiments import sampler
from commonpool.experiments.sampler import Levels, Range

SAMPLERS = ("grid", "random", "lhs", "sobol", "morris")
Sampler = Literal["grid", "random", "lhs", "sobol", "morris"]

# Config fields a sweep sets itself (each run's id and seed) or that are not one
# value (the roster, resources and personalities as a whole are set in [base]).
_NOT_FACTORS = frozenset(
    {"simulation_id", "seed", "roster", "resources", "custom_personalities", "personality_models", "personalities"}
)
# A factor that sets two fields: a fixed number of exchanges per run.
EXCHANGES = "exchanges"
_MIX_PREFIX = "personalities."

Value = bool | int | float | str


class SpecError(ValueError):
    """A spec that cannot run: one line naming the key and what is allowed."""


class RangeSpec(BaseModel):
    """A factor's interval as written in TOML: {low, high, step?, distribution?}."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    step: float | None = Field(None, gt=0)
    distribution: Literal["uniform", "loguniform"] = "uniform"


class ExperimentSpec(BaseModel):
    """One experiment: a base configuration, the factors that vary, a sampler,
    replications per point and the sweep seed."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=RUN_ID_PATTERN)
    sampler: Sampler = "grid"
    samples: int | None = Field(
        None, ge=1, le=1_000_000,
        description="points for random and lhs; the base sample N (a power of 2) for sobol; trajectories for morris",
    )
    replications: int = Field(1, ge=1, le=100_000)
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sweep seed (default: drawn and recorded)")
    base: dict[str, Any] = Field(default_factory=dict)
    factors: dict[str, list[Value] | RangeSpec] = Field(default_factory=dict)
    morris_levels: int = Field(4, ge=2, le=20)
    second_order: bool = Field(False, description="sobol: also sample for second-order indices")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        for key in ("simulation_id", "seed"):
            if key in self.base:
                raise ValueError(f"base.{key}: a sweep sets each run's {key} itself; use the spec's seed instead")
        try:
            base = SimulationConfig.model_validate(self.base)
        except ValidationError as exc:
            field, problem = validation_problems(exc)[0]
            raise ValueError(f"base: {problem}") from None
        allowed = sorted(factor_names(base))
        for name, factor in self.factors.items():
            if name not in allowed:
                raise ValueError(f"factors.{name}: not a factor; allowed: {', '.join(allowed)}")
            if isinstance(factor, list) and not factor:
                raise ValueError(f"factors.{name}: give at least one value")
        if self.sampler == "grid":
            for name, factor in self.factors.items():
                if isinstance(factor, RangeSpec) and factor.step is None and not _is_integer(name):
                    raise ValueError(
                        f"factors.{name}: a grid needs levels; give a list of values or a step "
                        "(or use sampler random, lhs, sobol or morris for a continuous range)"
                    )
        else:
            if self.samples is None:
                raise ValueError(f"samples: sampler {self.sampler} needs a number of samples")
            if not self.factors:
                raise ValueError(f"factors: sampler {self.sampler} needs at least one factor")
            if self.sampler == "morris" and self.samples < 2:
                raise ValueError("samples: morris needs at least 2 trajectories (sigma needs two)")
        return self

    def factor_list(self) -> list[Levels | Range]:
        """The factors as the sampler's plain data, in the spec's order."""
        factors: list[Levels | Range] = []
        for name, factor in self.factors.items():
            if isinstance(factor, list):
                factors.append(Levels(name, tuple(factor)))
            else:
                factors.append(Range(name, factor.low, factor.high, integer=_is_integer(name), step=factor.step,
                                     distribution=factor.distribution))
        return factors


# The factors a person usually varies, first in lists of factor names (the dashboard's editor).
USUAL_FACTORS = (EXCHANGES, "num_participants", "max_turns", "facilitator", "pairing", "need_weight")


def factor_names(base: SimulationConfig) -> list[str]:
    """Every name a factor may have over this base: the usual ones first, each
    personality weight of its mix (`personalities.NAME`), then the other config fields."""
    fields = sorted(set(SimulationConfig.model_fields) - _NOT_FACTORS - set(USUAL_FACTORS))
    mix = [f"{_MIX_PREFIX}{name}" for name in base.personality_names()]
    return [*USUAL_FACTORS, *mix, *fields]


def _is_integer(name: str) -> bool:
    if name == EXCHANGES:
        return True
    field = SimulationConfig.model_fields.get(name)
    return field is not None and field.annotation is int


def config_fields(base: dict[str, Any], point: dict[str, object]) -> dict[str, Any]:
    """The config fields of a run at point: the base with each factor's value set."""
    fields = dict(base)
    for name, value in point.items():
        if name == EXCHANGES:
            fields["min_exchanges"] = fields["max_exchanges"] = value
        elif name.startswith(_MIX_PREFIX):
            mix = dict(fields.get("personalities") or SimulationConfig.model_fields["personalities"].get_default(
                call_default_factory=True))
            mix[name.removeprefix(_MIX_PREFIX)] = value
            fields["personalities"] = mix
        else:
            fields[name] = value
    return fields


def describe_spec_error(error: ValidationError) -> str:
    """A spec's first problem in one line, its location written as a TOML key."""
    item = error.errors()[0]
    where = ".".join(str(p) for p in item["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    message = item["msg"].removeprefix("Value error, ")
    given = item.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None or not where else f" (got {given!r})"
    return f"{where}: {message}{shown}" if where else message


# pydantic names the branch of a union it tried (list[...] or RangeSpec) in an error's location.
_UNION_TAGS = frozenset({"list[union[bool,int,float,str]]", "RangeSpec", "bool", "int", "float", "str"})


def parse_spec(data: dict[str, Any]) -> ExperimentSpec:
    """A spec from a TOML document (or the same dict built from flags); SpecError on bad input."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_spec_error(exc)) from None


def load_spec(path: Path) -> dict[str, Any]:
    """The TOML document at path, as a dict (parse_spec validates it); SpecError if unreadable."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None


def parse_vary(text: str) -> tuple[str, list[Value] | dict[str, float]]:
    """One --vary flag: NAME=V1,V2,... (levels), NAME=LO:HI:STEP or NAME=LO:HI (a range)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise SpecError(f"--vary: {text!r} should be NAME=V1,V2,... or NAME=LO:HI[:STEP], e.g. max_turns=2:10:2")
    if ":" in values:
        parts = values.split(":")
        if len(parts) not in (2, 3):
            raise SpecError(f"--vary {name}: a range is LO:HI or LO:HI:STEP, got {values!r}")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise SpecError(f"--vary {name}: range bounds must be numbers, got {values!r}") from None
        if not all(math.isfinite(x) for x in numbers):
            raise SpecError(f"--vary {name}: range bounds must be finite, got {values!r}")
        return name, dict(zip(("low", "high", "step"), numbers))
    return name, [_scalar(v.strip()) for v in values.split(",") if v.strip()]


def _scalar(text: str) -> Value:
    """A level typed on the command line: true/false, an integer, a number, else text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def draw_points(spec: ExperimentSpec) -> tuple[list[dict[str, object]], list[list[float]] | None]:
    """The design: its points in sampler order, and the unit-cube matrix for morris
    (its analysis needs the matrix the points were mapped from)."""
    factors = spec.factor_list()
    seed = int(spec.seed or 0)
    if spec.sampler == "grid":
        # No factors: replications of the base configuration alone, one point.
        return (sampler.grid(factors) if factors else [{}]), None
    n = int(spec.samples or 0)
    try:
        if spec.sampler == "random":
            return sampler.random(factors, n, seed), None
        if spec.sampler == "lhs":
            return sampler.lhs(factors, n, seed), None
        if spec.sampler == "sobol":
            return sampler.sobol(factors, n, seed, calc_second_order=spec.second_order), None
        unit = sampler.morris_unit(factors, n, seed, num_levels=spec.morris_levels)
        return sampler.from_unit(factors, unit), unit.tolist()
    except ValueError as exc:
        raise SpecError(str(exc)) from None
