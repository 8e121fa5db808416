"""A run finishes, records exactly the drawn number of exchanges, conserves every unit, and replays from its seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonpool import SimulationConfig, run_simulation
from commonpool.store import Store
from run_tables import run_tables


def test_completed_run_has_exactly_the_drawn_number_of_exchanges(simulate, store: Store) -> None:
    result = simulate(min_exchanges=40, max_exchanges=90, seed=5)
    con = store.connect()
    count, first, last = con.execute(
        "SELECT count(*), min(exchange_id), max(exchange_id) FROM exchanges WHERE run_id = ?", parameters=[result.run_id]
    ).fetchone()
    assert result.status == "completed"
    assert 40 <= count <= 90
    assert (count, first, last) == (result.exchanges, 1, result.exchanges)
    assert con.execute("SELECT exchanges_recorded, exchanges_target FROM runs").fetchone() == (count, count)


@pytest.mark.parametrize("facilitator", [True, False])
def test_initial_plus_transfers_equals_final_holdings(simulate, store: Store, facilitator: bool) -> None:
    result = simulate(num_participants=20, min_exchanges=300, max_exchanges=300, facilitator=facilitator)
    con = store.connect()
    mismatches = con.execute(
        """
        WITH moved AS (
            SELECT participant_id, resource, sum(delta) AS delta FROM (
                SELECT to_id AS participant_id, resource, quantity AS delta FROM transfers WHERE run_id = $run
                UNION ALL
                SELECT from_id, resource, -quantity FROM transfers WHERE run_id = $run)
            GROUP BY ALL)
        SELECT count(*) FROM initial_holdings i
        JOIN final_holdings f USING (run_id, participant_id, resource)
        LEFT JOIN moved m USING (participant_id, resource)
        WHERE i.run_id = $run AND (i.quantity + coalesce(m.delta, 0) <> f.quantity OR f.quantity < 0)
        """,
        parameters={"run": result.run_id},
    ).fetchone()[0]
    totals = con.execute(
        """SELECT count(*) FROM (SELECT resource, sum(quantity) q FROM initial_holdings GROUP BY ALL) i
           JOIN (SELECT resource, sum(quantity) q FROM final_holdings GROUP BY ALL) f USING (resource)
           WHERE i.q <> f.q"""
    ).fetchone()[0]
    assert result.accepted > 0
    assert mismatches == 0 and totals == 0


def test_no_running_balance_goes_below_zero_at_any_exchange(simulate, store: Store) -> None:
    result = simulate(num_participants=10, min_exchanges=400, max_exchanges=400)
    negative = store.connect().execute(
        """
        WITH moves AS (
            SELECT 0 AS exchange_id, participant_id, resource, quantity AS delta FROM initial_holdings
            UNION ALL SELECT exchange_id, to_id, resource, quantity FROM transfers
            UNION ALL SELECT exchange_id, from_id, resource, -quantity FROM transfers),
        balance AS (
            SELECT sum(delta) OVER (PARTITION BY participant_id, resource ORDER BY exchange_id) AS held FROM moves)
        SELECT count(*) FROM balance WHERE held < 0
        """
    ).fetchone()[0]
    assert result.accepted > 10
    assert negative == 0


def test_same_seed_and_config_give_identicalrun_tables(tmp_path) -> None:
    config = dict(seed=11, num_participants=16, min_exchanges=100, max_exchanges=200, pairing="need")
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    ra = run_simulation(SimulationConfig(simulation_id="same", **config), a)
    rb = run_simulation(SimulationConfig(simulation_id="same", **config), b)
    ta, tb = run_tables(a, ra.run_id), run_tables(b, rb.run_id)
    assert sum(len(rows) for rows in ta.values()) > 500
    assert ta == tb


def test_run_metrics_are_one_value_per_metric_however_often_computed(simulate, store: Store) -> None:
    """Float aggregates summed in DuckDB's arrival order differ in the last bit between
    identical queries; run_metrics' are ordered, so every fresh connection, on any
    number of threads, over the whole store or the run alone, gives the same numbers."""
    from commonpool.metrics import run_metrics

    runs = [simulate(seed=s, simulation_id=f"m{s}", num_participants=40, min_exchanges=1200, max_exchanges=1200)
            for s in (1, 2)]
    seen: dict[str, set[float]] = {}
    for k in range(12):
        con = store.connect() if k % 2 else store.connect([runs[0].run_id])
        con.execute(f"SET threads = {1 + k % 3}")
        for metric, value in run_metrics(con, runs[0].run_id).items():
            seen.setdefault(metric, set()).add(value)
        con.close()
    recorded = dict(store.connect().execute(
        "SELECT metric, value FROM run_metrics WHERE run_id = ?", [runs[0].run_id]).fetchall())
    assert len(seen) > 20
    assert {metric: values for metric, values in seen.items() if len(values) > 1} == {}
    assert recorded == {metric: values.pop() for metric, values in seen.items()}


def test_different_seeds_give_different_runs(tmp_path) -> None:
    runs = [run_simulation(SimulationConfig(seed=s, simulation_id=f"s{s}"), Store(tmp_path / str(s))) for s in (1, 2)]
    assert run_tables(Store(tmp_path / "1"), runs[0].run_id) != run_tables(Store(tmp_path / "2"), runs[1].run_id)


def test_facilitator_off_is_a_control_run_without_advice(simulate, store: Store) -> None:
    off = simulate(facilitator=False, simulation_id="off")
    on = simulate(facilitator=True, simulation_id="on")
    con = store.connect()
    advice = dict(con.execute("SELECT run_id, count(*) FROM advice GROUP BY ALL").fetchall())
    assert off.status == on.status == "completed"
    assert advice.get("off", 0) == 0 and advice["on"] == on.exchanges
    assert con.execute("SELECT facilitator FROM runs WHERE run_id = 'off'").fetchone()[0] == "off"


def test_every_exchange_reads_as_a_conversation(simulate, store: Store) -> None:
    result = simulate()
    con = store.connect()
    rows = con.execute(
        """SELECT e.exchange_id, e.turns, count(o.turn), bool_and(o.message IS NOT NULL AND length(o.message) > 10),
                  min(o.turn), max(o.turn)
           FROM exchanges e JOIN offers o USING (run_id, exchange_id) WHERE run_id = ? GROUP BY ALL""",
        parameters=[result.run_id],
    ).fetchall()
    assert len(rows) == result.exchanges
    for _, turns, offers, worded, first, last in rows:
        assert offers == turns and worded and first == 1 and last == turns


def test_no_exchange_outlives_max_turns(simulate, store: Store) -> None:
    simulate(max_turns=3, num_participants=30, min_exchanges=300, max_exchanges=300)
    con = store.connect()
    assert con.execute("SELECT max(turns) FROM exchanges").fetchone()[0] <= 3
    ended = con.execute("SELECT DISTINCT outcome FROM exchanges").fetchall()
    assert {o for (o,) in ended} <= {"accepted", "rejected", "no_deal"}
    last_actions = con.execute(
        "SELECT DISTINCT action FROM offers o JOIN exchanges e USING (run_id, exchange_id) WHERE o.turn = e.turns"
    ).fetchall()
    assert {a for (a,) in last_actions} <= {"accept", "reject"}


def test_recorded_utilities_match_the_economy(simulate, store: Store) -> None:
    from commonpool import economy

    result = simulate(num_participants=8, min_exchanges=20, max_exchanges=20)
    con = store.connect()
    holdings = con.execute(
        "SELECT participant_id, list(quantity ORDER BY resource) FROM final_holdings GROUP BY ALL ORDER BY 1"
    ).fetchall()
    needs = con.execute(
        "SELECT participant_id, list(need ORDER BY resource), list(want ORDER BY resource) FROM needs GROUP BY ALL ORDER BY 1"
    ).fetchall()
    last = dict(
        con.execute(
            """SELECT pid, arg_max(u, exchange_id) FROM (
                 SELECT initiator_id pid, initiator_utility_after u, exchange_id FROM exchanges
                 UNION ALL SELECT responder_id, responder_utility_after, exchange_id FROM exchanges) GROUP BY pid"""
        ).fetchall()
    )
    lam = SimulationConfig().need_weight
    for (pid, held), (_, need, want) in zip(holdings, needs):
        if pid in last:
            expected = economy.utility(np.array(held), np.array(need), np.array(want), lam)
            assert last[pid] == pytest.approx(float(expected))
    assert result.accepted > 0


def test_cancel_stops_between_rounds_and_keeps_what_was_recorded(store: Store) -> None:
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    result = run_simulation(
        SimulationConfig(seed=3, num_participants=10, min_exchanges=500, max_exchanges=500), store, should_stop=stop
    )
    assert result.status == "cancelled" and result.exchanges == 15
    assert store.run(result.run_id).status == "cancelled"
    assert store.connect().execute("SELECT count(*) FROM exchanges").fetchone()[0] == 15


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    participants=st.integers(2, 40),
    exchanges=st.integers(1, 400),
    facilitator=st.booleans(),
    pairing=st.sampled_from(["random", "need"]),
    max_turns=st.integers(2, 8),
    mix=st.dictionaries(st.sampled_from(["cautious", "generous", "strategic"]), st.integers(1, 5), min_size=1),
)
def test_every_completed_run_conserves_every_unit(
    tmp_path_factory, seed, participants, exchanges, facilitator, pairing, max_turns, mix
) -> None:
    store = Store(tmp_path_factory.mktemp("prop"))
    config = SimulationConfig(seed=seed, num_participants=participants, min_exchanges=exchanges,
                              max_exchanges=exchanges, facilitator=facilitator, pairing=pairing,
                              max_turns=max_turns, personalities=mix)
    result = run_simulation(config, store)
    con = store.connect()
    broken = con.execute(
        """
        WITH moved AS (
            SELECT participant_id, resource, sum(delta) AS delta FROM (
                SELECT to_id AS participant_id, resource, quantity AS delta FROM transfers
                UNION ALL SELECT from_id, resource, -quantity FROM transfers) GROUP BY ALL)
        SELECT count(*) FROM initial_holdings i JOIN final_holdings f USING (run_id, participant_id, resource)
        LEFT JOIN moved m USING (participant_id, resource)
        WHERE i.quantity + coalesce(m.delta, 0) <> f.quantity OR f.quantity < 0
        """
    ).fetchone()[0]
    settled = con.execute("SELECT count(*) FROM exchanges WHERE outcome = 'accepted'").fetchone()[0]
    moves = con.execute("SELECT count(DISTINCT exchange_id) FROM transfers").fetchone()[0]
    assert result.status == "completed" and result.exchanges == exchanges
    assert broken == 0
    assert settled == moves == result.accepted


# Columns hashed per table: named here, so a column added to the schema later
# does not move the pins (only a change of what the engine decides does).
_PINNED_COLUMNS = {
    "exchanges": "exchange_id, round, initiator_id, responder_id, outcome, turns, initiator_gives, initiator_gives_qty, "
    "responder_gives, responder_gives_qty, initiator_utility_before, initiator_utility_after, "
    "responder_utility_before, responder_utility_after, reason",
    "offers": "exchange_id, turn, speaker_id, action, initiator_gives, initiator_gives_qty, responder_gives, "
    "responder_gives_qty, message, source, fallback_reason",
    "transfers": "exchange_id, from_id, to_id, resource, quantity",
    "advice": "exchange_id, round, initiator_gives, initiator_gives_qty, responder_gives, responder_gives_qty, "
    "typical_rate, typical_rate_trades, initiator_deals, initiator_meetings, responder_deals, responder_meetings, "
    "note, source",
    "valuations": "round, resource, valuation",
}

_PINNED_RUNS = {
    "default_60x2000": (
        dict(seed=3, num_participants=60, min_exchanges=2000, max_exchanges=2000),
        {
            "exchanges": "63e24c6f6a5d34ffcdb32c085253f9b3f488e5193d057e4858a877b75e400484",
            "offers": "4c122ce98be1b141fa278e4a0de3a21898591c09d313024c1aef71ff2ac9b58a",
            "transfers": "e8668c0a1df76150317392ab7eda51d65d561cb67d95a8d519fbb30524cbf44d",
            "advice": "9e5572eaeed420270af2de7b7453d2812a74041aaaeb4ed0f53063f7ea28214b",
            "valuations": "ee54965f56b80198b73502570f7801d16d0e5fcf316de626800f8b08719b9205",
        },
    ),
    "need_pairing_control_25": (
        dict(seed=8, num_participants=25, min_exchanges=500, max_exchanges=700, pairing="need", facilitator=False),
        {
            "exchanges": "621b301d2c42b25320677a0407c1ff87b685fa8b5a03fe0fcdef88d5394d08c0",
            "offers": "91b642200940e2f0e7885829ce08c8d5e352f558d23b4ad52bc767db8d8df729",
            "transfers": "fc62a14303726e34b1df713c749867c289e1678ffdfb595e0b8b875e30cc5967",
            "advice": "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",  # no rows
            "valuations": "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",  # no rows
        },
    ),
    "odd_31_three_turns": (
        dict(seed=21, num_participants=31, min_exchanges=900, max_exchanges=900, max_turns=3, need_weight=3.0,
             personalities={"cautious": 1, "generous": 2, "strategic": 1}),
        {
            "exchanges": "4de9a443d2f2f224b2e149c1a56f67b01c5f0d1c87ef2476c2fe68f0a9af1faf",
            "offers": "2d790cf7ce7d60028bda00188d1c70b8e7dfb9155e5d8f62cf6960e113ea3ff5",
            "transfers": "b5de3ac34b7be7c41177eae69bedf88022d402a70e49555abe3453a67b3ad073",
            "advice": "f28a4a4d6609f8414b8e3b12b593ea433d9757850657375efad4d5a1bdd0cb39",
            "valuations": "73b109180f68e381c06abcff76441eade4b028d2e9ac8dc4cf1cc08656d0e346",
        },
    ),
}


@pytest.mark.parametrize("name", sorted(_PINNED_RUNS))
def test_rules_runs_are_pinned_bit_for_bit(tmp_path, name: str) -> None:
    """Pins the model's behaviour as of the commit that added this test (before the small-run speed-ups).

    A sha256 of every row (Python reprs, so floats to the last bit) of the tables the
    engine decides, for three fixed configs. Work on speed must leave these untouched;
    an intended change of the model (economics, brains, facilitator) updates them, and
    says so in its commit.
    """
    import hashlib

    fields, expected = _PINNED_RUNS[name]
    store = Store(tmp_path)
    result = run_simulation(SimulationConfig(simulation_id="pin", **fields), store)
    con = store.connect()
    digests = {
        table: hashlib.sha256(
            repr(con.execute(f"SELECT {columns} FROM {table} WHERE run_id = ? ORDER BY ALL", [result.run_id]).fetchall())
            .encode()
        ).hexdigest()
        for table, columns in _PINNED_COLUMNS.items()
    }
    assert digests == expected
