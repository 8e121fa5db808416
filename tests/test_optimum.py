"""The utilitarian optimum, allocative efficiency and gains left on the table, on worlds small
enough to work out by hand (and, for the optimum, against brute force)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from commonpool import economy, metrics
from commonpool.optimum import utilitarian_optimum
from commonpool.store import RunWriter, Store

LN2 = math.log(2)


def test_units_go_first_to_needs_then_to_the_strongest_wants() -> None:
    # Ann needs 2 apples and wants none; Bo wants apples (weight 1). 3 apples, lambda = 2:
    # Ann's first two units add 2 each, her third 0; Bo's add ln 2, ln 3/2, ln 4/3.
    needs, wants = np.array([[2], [0]]), np.array([[0.0], [1.0]])
    assert utilitarian_optimum(np.array([3]), needs, wants, 2.0).tolist() == [[2], [1]]
    # With lambda = 0.35 Bo's first two units (0.69, 0.41) beat Ann's needed ones (0.35 each).
    assert utilitarian_optimum(np.array([3]), needs, wants, 0.35).tolist() == [[1], [2]]


def test_a_strong_want_takes_every_unit_past_the_first_guess_of_depth() -> None:
    # 40 units: 100 ln(41/40) = 2.47 for the 40th unit still beats 0.01 ln 2 for the first.
    optimum = utilitarian_optimum(np.array([40]), np.zeros((2, 1), dtype=np.int64), np.array([[100.0], [0.01]]), 2.0)
    assert optimum.tolist() == [[40], [0]]


def test_the_optimum_matches_brute_force_on_random_small_worlds() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        people, resources = 3, 2
        needs = rng.integers(0, 3, size=(people, resources))
        wants = rng.dirichlet(np.ones(resources), size=people) * rng.uniform(0.2, 3)
        totals = rng.integers(0, 5, size=resources)
        lam = float(rng.uniform(0.1, 3))
        best = -np.inf
        splits = [[s for s in itertools.product(range(t + 1), repeat=people) if sum(s) == t] for t in totals]
        for choice in itertools.product(*splits):
            holdings = np.array(choice).T
            best = max(best, economy.utility(holdings, needs, wants, lam).sum())
        optimum = utilitarian_optimum(totals, needs, wants, lam)
        assert optimum.sum(axis=0).tolist() == totals.tolist()
        assert economy.utility(optimum, needs, wants, lam).sum() == pytest.approx(best, abs=1e-12)


# --- on stored runs -------------------------------------------------------------------------------

RESOURCES = ["apples", "bread"]


def _write(root: Path, run_id: str, holdings: list[list[int]], needs: list[list[int]], wants: list[list[float]],
           need_weight: float = 2.0) -> None:
    """A run of these people and no exchanges: its final holdings are its initial ones."""
    h, n, w = np.array(holdings), np.array(needs), np.array(wants)
    people = len(holdings)
    ids = np.repeat(np.arange(people), len(RESOURCES)).tolist()
    res = RESOURCES * people
    with RunWriter(root, run_id, {"seed": 0, "config": {"need_weight": need_weight}}) as writer:
        writer.append("resources", {"resource_id": [0, 1], "name": RESOURCES, "kind": ["good", "good"]})
        writer.append("participants", {
            "participant_id": list(range(people)), "name": [f"p{k}" for k in range(people)],
            "personality": ["cautious"] * people, "traits": [json.dumps({"max_units": 2})] * people,
            "notes": [""] * people, "brain": ["rules"] * people,
            "initial_utility": economy.utility(h, n, w, need_weight).tolist(),
        })
        writer.append("initial_holdings", {"participant_id": ids, "resource": res, "quantity": h.ravel().tolist()})
        writer.append("needs", {"participant_id": ids, "resource": res, "need": n.ravel().tolist(),
                                "want": w.ravel().tolist()})


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimum")
    # Already optimal: each holds what only it wants.
    _write(root, "optimal", [[3, 0], [0, 3]], [[0, 0], [0, 0]], [[1.0, 0.0], [0.0, 1.0]])
    # Ann holds all 3 apples, Bo none; both want apples alike (and bread not at all).
    _write(root, "hoard", [[3, 0], [0, 0]], [[0, 0], [0, 0]], [[1.0, 0.0], [1.0, 0.0]])
    # Ann has 3 apples and needs 1 bread, Bo has 3 bread and needs 1 apple, Cy has nothing.
    _write(root, "swap", [[3, 0], [0, 3], [0, 0]], [[0, 1], [1, 0], [0, 0]], [[1.0, 1.0]] * 3)
    connection = Store(root).connect()
    yield connection
    connection.close()


def test_efficiency_is_one_when_the_start_is_already_optimal(con) -> None:
    result = metrics.allocative_efficiency(con, "optimal")
    assert result["max_gain"] == pytest.approx(0, abs=1e-12)
    assert result["realised_gain"] == 0
    assert result["efficiency"] == 1.0
    assert result["below_start"] == 0


def test_efficiency_of_no_trade_is_zero_and_the_optimum_may_cost_someone(con) -> None:
    # Optimum: Ann 2, Bo 1 (first units ln 2 each, then Ann's ln 3/2 wins the tie by order):
    # ln 3 + ln 2 against ln 4 at the start.
    result = metrics.allocative_efficiency(con, "hoard")
    assert result["welfare_optimum"] == pytest.approx(math.log(6))
    assert result["max_gain"] == pytest.approx(math.log(1.5))
    assert result["efficiency"] == 0.0
    assert result["below_start"] == 1  # Ann: ln 3 < ln 4
    assert result["worst_loss"] == pytest.approx(math.log(4 / 3))


def test_gains_left_on_the_table_find_the_one_pair_that_would_still_swap(con) -> None:
    left = metrics.gains_left_on_table(con, "swap")
    assert (left["pairs_total"], left["pairs_checked"], left["sampled"]) == (3, 3, False)
    assert left["pairs_with_gains"] == 1  # Ann and Bo; Cy has nothing to give
    # Best: 1 apple for 1 bread (2 for 2 ties): each side gains 2 + ln 2 - (ln 4 - ln 3).
    assert left["best_gain"] == pytest.approx(2 * (2 + LN2 - math.log(4 / 3)))
    assert metrics.gains_left_on_table(con, "optimal")["pairs_with_gains"] == 0
    assert metrics.gains_left_on_table(con, "optimal")["best_gain"] is None


def test_gains_left_sample_a_fixed_set_of_pairs_when_there_are_too_many(con, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_PAIRS_CHECKED", 2)
    first, again = metrics.gains_left_on_table(con, "swap"), metrics.gains_left_on_table(con, "swap")
    assert first == again
    assert (first["pairs_checked"], first["sampled"]) == (2, True)
    assert first["estimated_pairs"] == pytest.approx(first["share"] * 3)
