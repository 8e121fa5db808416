"""A run finishes, records exactly the drawn number of exchanges, conserves every unit, and replays from its seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonpool import SimulationConfig, run_simulation
from commonpool.store import TABLES, Store


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


def _tables(store: Store, run_id: str) -> dict[str, list[tuple]]:
    """Every table of the run, run_metrics' values rounded to 12 significant digits:
    they are float aggregates whose last bit depends on DuckDB's summation order."""
    con = store.connect()
    out = {}
    for name in TABLES:
        columns = [c for c in TABLES[name].names if c != "run_id"]
        out[name] = con.execute(
            f"SELECT {', '.join(columns)} FROM {name} WHERE run_id = ? ORDER BY ALL", parameters=[run_id]
        ).fetchall()
    out["run_metrics"] = [(metric, float(f"{value:.12g}")) for metric, value in out["run_metrics"]]
    return out


def test_same_seed_and_config_give_identical_tables(tmp_path) -> None:
    config = dict(seed=11, num_participants=16, min_exchanges=100, max_exchanges=200, pairing="need")
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    ra = run_simulation(SimulationConfig(simulation_id="same", **config), a)
    rb = run_simulation(SimulationConfig(simulation_id="same", **config), b)
    ta, tb = _tables(a, ra.run_id), _tables(b, rb.run_id)
    assert sum(len(rows) for rows in ta.values()) > 500
    assert ta == tb


def test_different_seeds_give_different_runs(tmp_path) -> None:
    runs = [run_simulation(SimulationConfig(seed=s, simulation_id=f"s{s}"), Store(tmp_path / str(s))) for s in (1, 2)]
    assert _tables(Store(tmp_path / "1"), runs[0].run_id) != _tables(Store(tmp_path / "2"), runs[1].run_id)


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
