"""How experiment points are drawn: grids, random, Latin hypercube, Sobol, Morris."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from commonpool.experiments import sampler
from commonpool.experiments.sampler import Levels, Range

MIXED = [
    Levels("facilitator", (True, False)),
    Range("num_participants", 2, 5, integer=True),
    Range("rate", 0.1, 10.0, distribution="loguniform"),
    Range("share", 0.0, 1.0),
]


def test_grid_is_the_full_product_with_the_first_factor_slowest() -> None:
    points = sampler.grid([
        Levels("facilitator", (True, False)),
        Levels("pairing", ("random", "need")),
        Range("participants", 10, 30, integer=True, step=10),
    ])
    assert points == [
        {"facilitator": f, "pairing": p, "participants": n}
        for f in (True, False) for p in ("random", "need") for n in (10, 20, 30)
    ]


def test_grid_steps_include_the_high_end_despite_float_error() -> None:
    # 0.3 / 0.1 is 2.9999999999999996 and 0.1 * 3 is 0.30000000000000004 in floats.
    assert sampler.grid([Range("share", 0.0, 0.3, step=0.1)]) == [{"share": v} for v in (0.0, 0.1, 0.2, 0.3)]
    levels = [p["share"] for p in sampler.grid([Range("share", 0.0, 1.0, step=0.1)])]
    assert levels == [i / 10 for i in range(11)]
    # A step that does not divide the interval stops below high.
    assert [p["x"] for p in sampler.grid([Range("x", 1.0, 2.0, step=0.4)])] == [1.0, 1.4, 1.8]


def test_grid_of_an_integer_range_steps_by_one_by_default() -> None:
    assert [p["n"] for p in sampler.grid([Range("n", 3, 6, integer=True)])] == [3, 4, 5, 6]


def test_grid_needs_a_step_for_a_continuous_range() -> None:
    with pytest.raises(ValueError, match="'share'.*step"):
        sampler.grid([Levels("facilitator", (True, False)), Range("share", 0.0, 1.0)])


def test_lhs_puts_one_point_in_each_stratum_of_every_factor() -> None:
    n = 50
    factors = [Range("share", 0.0, 1.0), Range("price", -3.0, 7.0), Range("rate", 1.0, 100.0, distribution="loguniform")]
    points = sampler.lhs(factors, n, seed=3)
    assert len(points) == n
    unit_columns = {
        "share": [p["share"] for p in points],
        "price": [(p["price"] + 3.0) / 10.0 for p in points],
        # loguniform: uniform in log10, from 0 to 2.
        "rate": [math.log10(p["rate"]) / 2.0 for p in points],
    }
    for name, column in unit_columns.items():
        assert sorted(math.floor(u * n) for u in column) == list(range(n)), name


def test_lhs_gives_each_level_and_integer_an_equal_share() -> None:
    # 12 strata over 4 levels (and 4 integers): each owns exactly 3 strata.
    points = sampler.lhs([Levels("style", ("a", "b", "c", "d")), Range("n", 2, 5, integer=True)], 12, seed=11)
    assert Counter(p["style"] for p in points) == {"a": 3, "b": 3, "c": 3, "d": 3}
    assert Counter(p["n"] for p in points) == {2: 3, 3: 3, 4: 3, 5: 3}


def test_random_draws_every_level_and_integer_about_equally() -> None:
    n = 4000
    points = sampler.random(MIXED, n, seed=5)
    for name, values in (("facilitator", (True, False)), ("num_participants", (2, 3, 4, 5))):
        counts = Counter(p[name] for p in points)
        assert set(counts) == set(values), name
        expected = n / len(values)
        # 5 binomial standard deviations: a biased mapping (e.g. rounding,
        # which gives the end integers half a share) fails by far more.
        assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values()), (name, counts)
    assert all(0.1 <= p["rate"] <= 10.0 and 0.0 <= p["share"] <= 1.0 for p in points)
    # Half of a log-uniform draw on [0.1, 10] lies below the geometric midpoint 1.
    below = sum(p["rate"] < 1.0 for p in points)
    assert abs(below - n / 2) < 5 * math.sqrt(n / 4)


def test_unit_cube_ends_map_to_the_first_and_last_values() -> None:
    unit = np.array([[0.0] * len(MIXED), [1.0] * len(MIXED)])
    first, last = sampler.from_unit(MIXED, unit)
    assert first == {"facilitator": True, "num_participants": 2, "rate": 0.1, "share": 0.0}
    assert last == {"facilitator": False, "num_participants": 5, "rate": 10.0, "share": 1.0}


def test_a_stepped_range_keeps_its_levels_under_every_sampler() -> None:
    factor = Range("share", 0.0, 1.0, step=0.25)
    allowed = {0.0, 0.25, 0.5, 0.75, 1.0}
    for points in (sampler.random([factor], 200, seed=1), sampler.lhs([factor], 200, seed=1), sampler.sobol([factor], 64, seed=1)):
        assert {p["share"] for p in points} == allowed


def test_integer_loguniform_range_favours_small_integers() -> None:
    points = sampler.random([Range("n", 1, 100, integer=True, distribution="loguniform")], 2000, seed=2)
    values = [p["n"] for p in points]
    assert all(isinstance(v, int) and 1 <= v <= 100 for v in values)
    # P(n <= 9) = log(10) / log(101), about 0.5.
    assert 0.45 < sum(v <= 9 for v in values) / len(values) < 0.55


@pytest.mark.parametrize(
    "draw",
    [
        lambda seed: sampler.random(MIXED, 16, seed),
        lambda seed: sampler.lhs(MIXED, 16, seed),
        lambda seed: sampler.sobol(MIXED, 16, seed),
        lambda seed: sampler.morris(MIXED, 4, seed),
    ],
    ids=["random", "lhs", "sobol", "morris"],
)
def test_samplers_are_deterministic_for_a_seed_and_differ_across_seeds(draw) -> None:
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


@pytest.mark.parametrize(("second_order", "rows_per_base"), [(False, 4 + 2), (True, 2 * 4 + 2)])
def test_sobol_draws_n_times_d_plus_2_points_or_2d_plus_2_with_second_order(second_order: bool, rows_per_base: int) -> None:
    assert len(sampler.sobol(MIXED, 32, seed=1, calc_second_order=second_order)) == 32 * rows_per_base
    assert sampler.sobol_unit(MIXED, 32, seed=1, calc_second_order=second_order).shape == (32 * rows_per_base, 4)


def test_sobol_maps_its_unit_matrix_in_salib_row_order() -> None:
    unit = sampler.sobol_unit(MIXED, 8, seed=4)
    assert sampler.sobol(MIXED, 8, seed=4) == sampler.from_unit(MIXED, unit)
    # Saltelli's layout: row 0 is A, rows 1..d are A with column i from B, row d+1 is B.
    d = len(MIXED)
    a, b = unit[0], unit[d + 1]
    for i in range(d):
        expected = a.copy()
        expected[i] = b[i]
        assert np.array_equal(unit[1 + i], expected)


def test_morris_rows_are_trajectories_that_move_one_factor_at_a_time() -> None:
    d = len(MIXED)
    unit = sampler.morris_unit(MIXED, 5, seed=2)
    assert unit.shape == (5 * (d + 1), d)
    assert sampler.morris(MIXED, 5, seed=2) == sampler.from_unit(MIXED, unit)
    steps = np.diff(unit.reshape(5, d + 1, d), axis=1)
    moved = np.abs(steps) > 1e-12
    assert (moved.sum(axis=2) == 1).all()
    # Each factor moves exactly once per trajectory, by the grid step 2/3 for 4 levels.
    assert (moved.sum(axis=1) == 1).all()
    assert np.allclose(np.abs(steps[moved]), sampler.morris_step(4))


def test_problem_is_the_unit_cube_in_factor_order() -> None:
    assert sampler.problem(MIXED) == {
        "num_vars": 4,
        "names": ["facilitator", "num_participants", "rate", "share"],
        "bounds": [[0.0, 1.0]] * 4,
    }


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Range("share", 1.0, 1.0), "'share'.*low must be less than high"),
        (lambda: Range("share", 0.0, float("nan")), "'share'.*high must be a finite number"),
        (lambda: Range("rate", 0.0, 1.0, distribution="loguniform"), "'rate'.*low > 0"),
        (lambda: Range("rate", 1.0, 2.0, distribution="normal"), "'rate'.*distribution must be one of uniform, loguniform"),
        (lambda: Range("share", 0.0, 1.0, step=0), "'share'.*step must be a positive number"),
        (lambda: Range("rate", 1.0, 2.0, step=0.5, distribution="loguniform"), "'rate'.*cannot be combined"),
        (lambda: Range("n", 1.5, 4, integer=True), "'n'.*whole-number low and high"),
        (lambda: Range("n", 1, 4, integer=True, step=0.5), "'n'.*whole-number step"),
        (lambda: Levels("style", ()), "'style'.*non-empty tuple"),
        (lambda: Levels("", (1, 2)), "factor name"),
        (lambda: sampler.grid([]), "factors"),
        (lambda: sampler.grid([Levels("x", (1,)), Range("x", 0, 1, step=1)]), "unique.*x"),
        (lambda: sampler.random(MIXED, 0, seed=1), "n must be a positive integer"),
        (lambda: sampler.lhs(MIXED, 2.5, seed=1), "n must be a positive integer"),
        (lambda: sampler.sobol(MIXED, 100, seed=1), r"samples.*a power of 2, e\.g\. 64"),
        (lambda: sampler.morris(MIXED, 1, seed=1), "n_trajectories"),
        (lambda: sampler.morris(MIXED, 4, seed=1, num_levels=5), "num_levels must be an even integer"),
        (lambda: sampler.from_unit(MIXED, np.zeros((3, 2))), "one column per factor"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_field(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
