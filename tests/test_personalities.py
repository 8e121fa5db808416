"""Personalities differ in ways that can be measured, and only through their trait values."""

from __future__ import annotations

import pytest

from commonpool import SimulationConfig, run_simulation
from commonpool.config import describe_validation_error
from commonpool.personalities import Personality, Traits
from commonpool.store import Store

SEEDS = range(4)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("mixed"))
    for seed in SEEDS:
        run_simulation(
            SimulationConfig(seed=seed, num_participants=30, min_exchanges=600, max_exchanges=600,
                             simulation_id=f"mixed-{seed}"),
            store,
        )
    return store


def test_cautious_participant_never_accepts_a_loss(mixed: Store) -> None:
    rows = mixed.connect().execute(
        """
        WITH sides AS (
            SELECT e.outcome, p.personality, e.initiator_utility_after - e.initiator_utility_before AS gain
            FROM exchanges e JOIN participants p ON p.run_id = e.run_id AND p.participant_id = e.initiator_id
            UNION ALL
            SELECT e.outcome, p.personality, e.responder_utility_after - e.responder_utility_before
            FROM exchanges e JOIN participants p ON p.run_id = e.run_id AND p.participant_id = e.responder_id)
        SELECT count(*), min(gain) FROM sides WHERE outcome = 'accepted' AND personality = 'cautious'
        """
    ).fetchone()
    deals, worst = rows
    assert deals > 50
    assert worst > 0


def _reply_acceptance(store: Store) -> dict[str, float]:
    return dict(
        store.connect().execute(
            """SELECT p.personality, avg((o.action = 'accept')::INT)
               FROM offers o JOIN participants p ON p.run_id = o.run_id AND p.participant_id = o.speaker_id
               WHERE o.turn > 1 GROUP BY ALL"""
        ).fetchall()
    )


def test_generous_participants_accept_more_often(mixed: Store) -> None:
    rate = _reply_acceptance(mixed)
    assert rate["generous"] > rate["cautious"]
    assert rate["generous"] > rate["strategic"]


def test_strategic_captures_more_of_the_surplus_against_generous(mixed: Store) -> None:
    share = mixed.connect().execute(
        """
        WITH deals AS (
            SELECT pi.personality AS pi, pr.personality AS pr,
                   e.initiator_utility_after - e.initiator_utility_before AS gi,
                   e.responder_utility_after - e.responder_utility_before AS gr
            FROM exchanges e
            JOIN participants pi ON pi.run_id = e.run_id AND pi.participant_id = e.initiator_id
            JOIN participants pr ON pr.run_id = e.run_id AND pr.participant_id = e.responder_id
            WHERE e.outcome = 'accepted')
        SELECT avg(CASE WHEN pi = 'strategic' THEN gi ELSE gr END / (gi + gr)), count(*)
        FROM deals WHERE (pi = 'strategic' AND pr = 'generous') OR (pi = 'generous' AND pr = 'strategic')
        """
    ).fetchone()
    strategic_share, deals = share
    assert deals > 20
    assert strategic_share > 0.55


def test_a_user_defined_personality_is_a_new_trait_preset(tmp_path) -> None:
    stubborn = Personality(name="stubborn", traits=Traits(aspiration=1.0, concession=0.0, min_gain=1.0),
                           description="Never budges.")
    config = SimulationConfig(seed=1, num_participants=10, min_exchanges=100, max_exchanges=100,
                              custom_personalities=[stubborn], personalities={"stubborn": 5, "generous": 5})
    store = Store(tmp_path)
    result = run_simulation(config, store)
    con = store.connect()
    mix = dict(con.execute("SELECT personality, count(*) FROM participants GROUP BY ALL").fetchall())
    traits = con.execute("SELECT traits FROM participants WHERE personality = 'stubborn' LIMIT 1").fetchone()[0]
    assert result.status == "completed"
    assert mix == {"stubborn": 5, "generous": 5}
    assert '"min_gain": 1.0' in traits


def test_an_unknown_personality_is_refused_by_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        SimulationConfig(personalities={"greedy": 3})
    assert "unknown personality 'greedy'" in describe_validation_error(error.value)
    assert "cautious, generous, strategic" in describe_validation_error(error.value)


def test_every_trait_value_reads_as_what_it_makes_a_negotiator_do() -> None:
    from commonpool.personalities import BUILTIN, trait_meaning

    for personality in BUILTIN.values():
        for trait, value in personality.traits.model_dump().items():
            sentence = trait_meaning(trait, value)
            assert sentence[0].isupper() and sentence.endswith("."), sentence
    generous, cautious = BUILTIN["generous"].traits, BUILTIN["cautious"].traits
    assert trait_meaning("min_gain", generous.min_gain) == "Accepts a swap that lowers its own utility by up to 0.3."
    assert trait_meaning("min_gain", cautious.min_gain) == "Accepts only a swap that raises its own utility by at least 0.05."
    assert trait_meaning("aspiration", cautious.aspiration) == "Opens by asking for 60% of the joint gain."
    assert trait_meaning("max_units", 1) == "Moves at most 1 unit of a resource in one swap."
    # memory moves the asked share by memory * (acceptance record - 0.5): a record of 1 adds memory / 2.
    assert "15 points more" in trait_meaning("memory", 0.3)
