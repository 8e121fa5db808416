"""The facilitator follows prices period by period (issue 13, point 5; facilitator.py's docstring):
its scarcity is this period's supply against this period's needs, its learned prices carry over,
and the typical rate its note cites is this period's, or the latest period's in which the goods traded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from commonpool import SimulationConfig, run_simulation
from commonpool.facilitator import MarketHistory
from commonpool.production import Renewal, split_exchanges
from commonpool.store import Store

ONE = np.array([0])


def trade(history: MarketHistory, a: int, qty_a: int, b: int, qty_b: int) -> None:
    """One accepted swap between participants 0 and 1: qty_a of a for qty_b of b."""
    history.record(ONE, ONE + 1, np.array([True]), np.array([a]), np.array([qty_a]), np.array([b]), np.array([qty_b]))


def rate(history: MarketHistory, a: int, b: int) -> tuple[float, int, int]:
    r, n = history.typical_rate(np.array([a]), np.array([b]))
    return float(r[0]), int(n[0]), int(history.rate_period(np.array([a]), np.array([b]))[0])


def test_the_typical_rate_is_this_periods_else_the_latest_period_the_goods_traded_in() -> None:
    history = MarketHistory(2, 3)
    trade(history, 0, 2, 1, 1)
    trade(history, 0, 8, 1, 1)  # period 1: 2 and 8 units of 0 per unit of 1, geometric mean 4
    assert rate(history, 0, 1) == pytest.approx((4.0, 2, 1))
    history.new_period()
    assert rate(history, 0, 1) == pytest.approx((4.0, 2, 1))  # none yet in period 2: period 1's
    assert rate(history, 1, 0) == pytest.approx((0.25, 2, 1))
    trade(history, 1, 1, 0, 1)  # period 2: one for one, from the other side
    assert rate(history, 0, 1) == pytest.approx((1.0, 1, 2))  # this period's alone, not the run's mean
    history.new_period()
    history.new_period()
    assert rate(history, 0, 1) == pytest.approx((1.0, 1, 2))  # period 3 had no such trade: period 2's
    r, n, p = rate(history, 0, 2)
    assert math.isnan(r) and (n, p) == (0, 0)


def test_valuations_weigh_this_periods_supply_against_its_needs_and_carry_prices_over() -> None:
    # Two members, a good (books, keeps) and time (childcare hours, expire). Ann holds 4 books and
    # needs 2 hours; Ben holds 1 hour, needs 2 books and makes 3 hours a period. Wants are all 1.
    needs = np.array([[0, 2], [2, 0]])
    wants = np.ones((2, 2))
    history = MarketHistory(2, 2)
    # Period 1, no trades yet: alpha = 0. Unmet need 2 of each, wants 2 of each, so
    # s = (2 + 2 + 1) / (held + 1): books 5/5, hours 5/2, and v = (1/sqrt(2.5), sqrt(2.5)).
    v1 = history.valuations(np.array([[4, 0], [0, 1]]), needs, wants)
    assert v1 == pytest.approx([1 / math.sqrt(2.5), math.sqrt(2.5)])

    trade(history, 0, 2, 1, 1)  # Ann's 2 books for Ben's hour: p = 0.3 * (-ln 2, ln 2)
    held = np.array([[2, 1], [2, 0]])
    renewal = Renewal(SimulationConfig(periods=2), ["good", "time"], ["books", "childcare hours"],
                      np.array([[0, 0], [0, 3]]), needs, wants)
    end = renewal.end_period(held)
    assert end.consumed.tolist() == [[0, 1], [2, 0]]  # Ann uses her hour, Ben his 2 books
    held = held - end.consumed - end.expired - end.spoiled
    held = held + renewal.start_period(held)  # Ben's 3 hours renew
    history.new_period()
    assert held.tolist() == [[2, 0], [0, 3]]
    # Period 2: books s = 5/3 (2 left, Ben needs 2 again), hours 5/4; alpha = 1 / (1 + 10 * 2) after
    # one trade, and period 1's price carries over: log v = (20/21) (log s - mean) + (1/21) p, centred.
    d = math.log(4 / 3) / 2
    log_v = np.array([d, -d]) * 20 / 21 + np.array([-1, 1]) * 0.3 * math.log(2) / 21
    v2 = history.valuations(held, needs, wants)
    assert v2 == pytest.approx(np.exp(log_v))
    assert v1[1] > v1[0] and v2[0] > v2[1]  # books, eaten and not remade, are now the scarcer


def test_a_living_runs_notes_say_the_period_and_cite_its_own_trades(store: Store) -> None:
    config = SimulationConfig(seed=1, num_participants=10, min_exchanges=200, max_exchanges=200, periods=4)
    result = run_simulation(config, store)
    con = store.connect()
    ends = np.cumsum(split_exchanges(200, 4))
    trades = con.execute(
        """SELECT round, exchange_id, initiator_gives, initiator_gives_qty, responder_gives, responder_gives_qty
           FROM exchanges WHERE run_id = ? AND outcome = 'accepted'""", [result.run_id]).fetchall()
    advice = con.execute(
        """SELECT round, exchange_id, initiator_gives, responder_gives, typical_rate, typical_rate_trades, note
           FROM advice WHERE run_id = ?""", [result.run_id]).fetchall()

    def period_of(exchange_id: int) -> int:
        return int(np.searchsorted(ends, exchange_id)) + 1

    cited = {"this": 0, "earlier": 0, "none": 0}
    for round_, exchange_id, a, b, typical, count, note in advice:
        period = period_of(exchange_id)
        assert note.startswith(f"Period {period} of 4: ")
        if a is None:
            continue
        logs: dict[int, list[float]] = {}  # period -> log units of a per unit of b, of trades before this round
        for t_round, t_id, ga, qa, gb, qb in trades:
            if t_round < round_ and {ga, gb} == {a, b}:
                logs.setdefault(period_of(t_id), []).append(math.log(qa / qb) * (1 if ga == a else -1))
        if not logs:
            assert (typical, count) == (None, 0) and "yet, so I valued them by scarcity" in note
            cited["none"] += 1
            continue
        latest = period if period in logs else max(logs)
        assert count == len(logs[latest]) and typical == pytest.approx(math.exp(np.mean(logs[latest])))
        if latest == period:
            assert "trades this period ran at about" in note
            cited["this"] += 1
        else:
            assert f"yet this period; in period {latest} they ran at about" in note
            cited["earlier"] += 1
    assert min(cited.values()) > 0  # each kind of note was checked


def test_a_one_period_runs_notes_name_no_period(store: Store) -> None:
    result = run_simulation(SimulationConfig(seed=1, num_participants=10, min_exchanges=60, max_exchanges=60), store)
    notes = store.connect().execute("SELECT note FROM advice WHERE run_id = ?", [result.run_id]).fetchall()
    assert notes and not any("Period" in n for (n,) in notes)
