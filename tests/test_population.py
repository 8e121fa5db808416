"""A generated community makes trade worth doing; a roster file models a real one."""

from __future__ import annotations

import numpy as np
import pytest

from commonpool.config import SimulationConfig
from commonpool.population import (
    RosterError,
    apportion,
    generate,
    roster_from_csv,
    roster_from_json,
    roster_to_csv,
    roster_to_json,
)


@pytest.mark.parametrize("seed", range(5))
def test_everyone_has_a_surplus_and_a_need_someone_else_can_meet(seed: int) -> None:
    pop = generate(SimulationConfig(num_participants=25), np.random.default_rng(seed))
    surplus = pop.holdings - pop.needs
    assert (surplus.max(axis=1) >= 4).all()
    for i in range(pop.size):
        lacking = np.flatnonzero(pop.needs[i] > pop.holdings[i])
        assert len(lacking) >= 1
        others = np.delete(surplus, i, axis=0)
        assert all((others[:, r] > 0).any() for r in lacking)


def test_generation_is_seeded() -> None:
    config = SimulationConfig(num_participants=15)
    a, b = (generate(config, np.random.default_rng(9)) for _ in range(2))
    c = generate(config, np.random.default_rng(10))
    assert (a.holdings == b.holdings).all() and a.personalities == b.personalities
    assert not (a.holdings == c.holdings).all()


def test_personality_mix_counts_are_exact_and_shares_are_apportioned() -> None:
    assert apportion({"cautious": 4, "generous": 3, "strategic": 3}, 10) == {"cautious": 4, "generous": 3, "strategic": 3}
    assert apportion({"cautious": 1, "generous": 1, "strategic": 1}, 10) in (
        {"cautious": 4, "generous": 3, "strategic": 3},
        {"cautious": 3, "generous": 4, "strategic": 3},
        {"cautious": 3, "generous": 3, "strategic": 4},
    )
    assert sum(apportion({"cautious": 0.2, "strategic": 0.8}, 7).values()) == 7


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_roster_survives_a_round_trip_through_a_file(fmt: str) -> None:
    config = SimulationConfig(num_participants=6)
    pop = generate(config, np.random.default_rng(1))
    specs = pop.to_specs()
    text = roster_to_csv(specs, pop.resources) if fmt == "csv" else roster_to_json(specs)
    back = roster_from_csv(text) if fmt == "csv" else roster_from_json(text)
    rebuilt = generate(SimulationConfig(num_participants=6, roster=back), np.random.default_rng(99))
    assert rebuilt.names == pop.names and rebuilt.personalities == pop.personalities
    assert (rebuilt.holdings == pop.holdings).all() and (rebuilt.needs == pop.needs).all()
    assert np.allclose(rebuilt.wants, pop.wants, atol=1e-4)


def test_a_broken_roster_names_the_row_and_column() -> None:
    with pytest.raises(RosterError, match=r"row 2: holdings:books must be a whole number \(got 'lots'\)"):
        roster_from_csv("name,personality,holdings:books\nAda,cautious,3\nBen,generous,lots\n")
    with pytest.raises(RosterError, match="not valid JSON"):
        roster_from_json("[{")
    with pytest.raises(ValueError, match="unknown resource 'gold'"):
        SimulationConfig(num_participants=1 + 1, roster=roster_from_csv(
            "name,personality,holdings:gold\nAda,cautious,3\nBen,generous,1\n"))
