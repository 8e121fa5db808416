"""How an experiment's points are drawn: pure functions from factors to points.

A factor is plain data (`Levels` or `Range`); a point is a dict from factor name
to value. Every sampler except `grid` first draws a matrix on the unit cube
(one column per factor, values in [0, 1]) and then maps each column through
that factor's inverse CDF (`Levels.from_unit` / `Range.from_unit`), so a factor
means the same set of values, with the same distribution, under every sampler.
Sobol and Morris keep SALib's row order, because their analysis reads the
outcomes back in that order (`analysis.sobol_indices`, `analysis.morris_indices`).
"""

from __future__ import annotations

import itertools
import math
from decimal import Decimal
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# SciPy and SALib are imported by the samplers that use them: together they take
# over a second to import, which every `commonpool` command would otherwise pay.

DISTRIBUTIONS = ("uniform", "loguniform")

# Morris grids are fractions like 2/3 computed in floating point (0.666...6),
# which would otherwise floor into the level below when scaled by a level count.
_UNIT_EPSILON = 1e-9

Point = dict[str, object]


@dataclass(frozen=True)
class Levels:
    """A discrete factor: one of `values` (bools, ints, floats or strings)."""

    name: str
    values: tuple

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.values, tuple) or not self.values:
            raise ValueError(f"factor {self.name!r}: values must be a non-empty tuple, got {self.values!r}")

    def levels(self) -> list[object]:
        """The values a grid steps through, in declared order."""
        return list(self.values)

    def from_unit(self, u: np.ndarray) -> list[object]:
        """Map unit values to levels: each level owns an equal slice of [0, 1]."""
        return [self.values[i] for i in _slice_index(u, len(self.values))]


@dataclass(frozen=True)
class Range:
    """An interval factor.

    Continuous unless `integer` or `step` makes it discrete. With `step` the
    factor's values are low, low+step, ... <= high under every sampler, each
    equally likely (so a grid and a random sample of the same factor draw from
    the same set). An integer range without a step holds every integer in
    [low, high]: equally likely when uniform, log-uniformly weighted when
    loguniform.
    """

    name: str
    low: float
    high: float
    integer: bool = False
    step: float | None = None
    distribution: str = "uniform"

    def __post_init__(self) -> None:
        _check_name(self.name)
        where = f"factor {self.name!r}"
        for field in ("low", "high"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{where}: {field} must be a finite number, got {value!r}")
        if not self.low < self.high:
            raise ValueError(f"{where}: low must be less than high, got low={self.low!r}, high={self.high!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"{where}: distribution must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"{where}: a loguniform range needs low > 0, got low={self.low!r}")
        if self.integer and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"{where}: an integer range needs whole-number low and high, got {self.low!r}..{self.high!r}")
        if self.step is not None:
            if isinstance(self.step, bool) or not isinstance(self.step, (int, float)) or not self.step > 0:
                raise ValueError(f"{where}: step must be a positive number, got {self.step!r}")
            if self.integer and not float(self.step).is_integer():
                raise ValueError(f"{where}: an integer range needs a whole-number step, got {self.step!r}")
            # Equally likely grid levels and a log-uniform density contradict each other.
            if self.distribution == "loguniform":
                raise ValueError(f"{where}: step and distribution 'loguniform' cannot be combined; use Levels for uneven values")

    def levels(self) -> list[object]:
        """Grid levels low, low+step, ... <= high (an integer range steps by 1 by default)."""
        step = self._grid_step()
        if step is None:
            raise ValueError(f"factor {self.name!r}: a grid needs a step for a continuous range (or integer=true)")
        return [self._level(i, step) for i in range(self._level_count(step))]

    def from_unit(self, u: np.ndarray) -> list[object]:
        """Map unit values through the inverse CDF of this factor's distribution."""
        step = self._grid_step()
        if step is not None and self.distribution == "uniform":
            # Indices rather than levels(): an integer range may hold millions of values.
            return [self._level(int(i), step) for i in _slice_index(u, self._level_count(step))]
        if self.integer:
            # Discrete log-uniform: the continuous one on [low, high + 1), floored,
            # so integer k gets weight log((k + 1) / k).
            x = _log_interpolate(self.low, self.high + 1, u)
            return [int(v) for v in np.clip(np.floor(x), self.low, self.high)]
        if self.distribution == "loguniform":
            x = _log_interpolate(self.low, self.high, u)
        else:
            x = self.low + u * (self.high - self.low)
        # low + u * (high - low) can round a hair past high.
        return [float(v) for v in np.clip(x, self.low, self.high)]

    def _grid_step(self) -> float | None:
        return self.step if self.step is not None else (1 if self.integer else None)

    def _level_count(self, step: float) -> int:
        # The tolerance keeps the last level when (high - low) / step lands just
        # under a whole number, as 0.3 / 0.1 = 2.9999999999999996 does.
        return math.floor((self.high - self.low) / step + _UNIT_EPSILON) + 1

    def _level(self, i: int, step: float) -> object:
        if self.integer:
            return int(self.low) + i * int(step)
        # Decimal arithmetic on the numbers as typed gives 0.3, not
        # 0.1 * 3 = 0.30000000000000004, at any magnitude.
        return min(float(Decimal(repr(self.low)) + i * Decimal(repr(step))), float(self.high))


Factor = Levels | Range


def grid(factors: Sequence[Factor]) -> list[Point]:
    """Full factorial of every factor's levels; the first factor varies slowest."""
    _check_factors(factors)
    names = [f.name for f in factors]
    return [dict(zip(names, combo)) for combo in itertools.product(*(f.levels() for f in factors))]


def random(factors: Sequence[Factor], n: int, seed: int) -> list[Point]:
    """`n` independent draws, each factor from its own distribution."""
    _check_factors(factors)
    _check_count("n", n)
    return from_unit(factors, np.random.default_rng(seed).random((n, len(factors))))


def lhs(factors: Sequence[Factor], n: int, seed: int) -> list[Point]:
    """Latin hypercube of `n` points: each factor's [0, 1] split into n equal
    strata holds exactly one point (McKay, Beckman & Conover 1979)."""
    _check_factors(factors)
    _check_count("n", n)
    from scipy.stats import qmc

    return from_unit(factors, qmc.LatinHypercube(d=len(factors), rng=seed).random(n))


def problem(factors: Sequence[Factor]) -> dict:
    """SALib's problem on the unit cube; factor values come from `from_unit`."""
    _check_factors(factors)
    return {
        "num_vars": len(factors),
        "names": [f.name for f in factors],
        "bounds": [[0.0, 1.0] for _ in factors],
    }


def sobol_unit(factors: Sequence[Factor], n: int, seed: int, calc_second_order: bool = False) -> np.ndarray:
    """Saltelli's cross-sampled Sobol' design on the unit cube (Saltelli 2002,
    2010, via SALib): n * (d + 2) rows, or n * (2d + 2) with second order."""
    _check_count("samples (n)", n)
    if n & (n - 1):
        # Sobol' sequences keep their balance only at powers of 2.
        raise ValueError(f"samples (n) must be a power of 2, e.g. 64, got {n}")
    from SALib.sample import sobol as salib_sobol

    return salib_sobol.sample(problem(factors), n, calc_second_order=calc_second_order, scramble=True, seed=seed)


def sobol(factors: Sequence[Factor], n: int, seed: int, calc_second_order: bool = False) -> list[Point]:
    """`sobol_unit` mapped to factor values, in SALib's row order."""
    return from_unit(factors, sobol_unit(factors, n, seed, calc_second_order))


def morris_unit(factors: Sequence[Factor], n_trajectories: int, seed: int, num_levels: int = 4) -> np.ndarray:
    """Morris one-at-a-time trajectories on a `num_levels` grid of the unit cube
    (Morris 1991, via SALib): n_trajectories * (d + 1) rows."""
    if isinstance(n_trajectories, bool) or not isinstance(n_trajectories, int) or n_trajectories < 2:
        raise ValueError(f"n_trajectories must be an integer >= 2 (sigma needs two), got {n_trajectories!r}")
    _check_num_levels(num_levels)
    from SALib.sample import morris as salib_morris

    return salib_morris.sample(problem(factors), n_trajectories, num_levels=num_levels, seed=seed)


def morris_step(num_levels: int) -> float:
    """The step Morris trajectories take on a num_levels grid, p / (2(p - 1))
    (Morris 1991); elementary effects are output changes divided by it."""
    _check_num_levels(num_levels)
    return num_levels / (2 * (num_levels - 1))


def morris(factors: Sequence[Factor], n_trajectories: int, seed: int, num_levels: int = 4) -> list[Point]:
    """`morris_unit` mapped to factor values, in SALib's row order."""
    return from_unit(factors, morris_unit(factors, n_trajectories, seed, num_levels))


def from_unit(factors: Sequence[Factor], unit: np.ndarray) -> list[Point]:
    """Points from a unit-cube matrix, column j through factor j's inverse CDF."""
    _check_factors(factors)
    unit = np.asarray(unit, dtype=float)
    if unit.ndim != 2 or unit.shape[1] != len(factors):
        raise ValueError(f"unit matrix must have one column per factor ({len(factors)}), got shape {unit.shape}")
    columns = [f.from_unit(unit[:, j]) for j, f in enumerate(factors)]
    names = [f.name for f in factors]
    return [dict(zip(names, row)) for row in zip(*columns)]


def _log_interpolate(low: float, high: float, u: np.ndarray) -> np.ndarray:
    """Inverse CDF of the log-uniform on [low, high]. Written as low^(1-u) * high^u
    rather than exp(log low + u log(high/low)) because it returns the ends
    exactly (0.1, not exp(log 0.1) = 0.10000000000000002)."""
    return np.power(low, 1 - u) * np.power(high, u)


def _slice_index(u: np.ndarray, count: int) -> np.ndarray:
    """Index of the equal slice of [0, 1] each unit value falls in; u = 1 belongs to the last."""
    return np.clip(np.floor(u * count + _UNIT_EPSILON), 0, count - 1).astype(int)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"factor name must be a non-empty string, got {name!r}")


def _check_factors(factors: Sequence[Factor]) -> None:
    if not factors:
        raise ValueError("factors must list at least one Levels or Range")
    for f in factors:
        if not isinstance(f, (Levels, Range)):
            raise ValueError(f"factors must be Levels or Range, got {f!r}")
    names = [f.name for f in factors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"factor names must be unique, repeated: {', '.join(duplicates)}")


def _check_count(argument: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{argument} must be a positive integer, got {n!r}")


def _check_num_levels(num_levels: object) -> None:
    # An odd grid makes Morris' step p / (2(p - 1)) unbalanced (SALib warns that it biases the sample).
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2 or num_levels % 2:
        raise ValueError(f"num_levels must be an even integer >= 2, got {num_levels!r}")
