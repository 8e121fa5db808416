"""Per-period metrics (issue 13, point 6) on a three-period run small enough to work out by hand.

The run "living" has four participants, resources x and y, discount 0.5:

| period | exchanges (initiator -> responder: gives x, for 1 y)                 | outcome          |
|--------|----------------------------------------------------------------------|------------------|
| 1      | 0->1: 2x; 2->3: 1x; 0->2 (no swap)                                    | 2 accepted, 1 rejected |
| 2      | 1->0: 1x; 3->2: 2x; 0->2: 1x; 1->3: 2x; 0->3: 1x; 1->2: 2x            | 6 accepted       |
| 3      | none                                                                 |                  |

Pairs {0,1} and {2,3} trade again in period 2; {0,2} met in period 1 but did not trade.

Consumed (flows) and needed (period_utility), participants 0..3; participant 3 needs 4:

| period | consumed     | needed      | utility      |
|--------|--------------|-------------|--------------|
| 1      | 2, 2, 1, 0   | 2, 2, 2, 4  | 1, 2, 3, 4   |
| 2      | 2, 2, 2, 4   | 2, 2, 2, 4  | 2, 2, 2, 2   |
| 3      | 0, 0, 0, 0   | 2, 2, 2, 4  | 1, 1, 1, 1   |
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from commonpool import SimulationConfig, metrics, run_simulation
from commonpool.cli import main
from commonpool.store import RunWriter, Store

LN2 = math.log(2)
PERIOD_1 = [(0, 1, 2), (2, 3, 1)]
PERIOD_2 = [(1, 0, 1), (3, 2, 2), (0, 2, 1), (1, 3, 2), (0, 3, 1), (1, 2, 2)]
CONSUMED = {1: [2, 2, 1, 0], 2: [2, 2, 2, 4], 3: [0, 0, 0, 0]}
NEEDED = [2, 2, 2, 4]
UTILITY = {1: [1.0, 2.0, 3.0, 4.0], 2: [2.0, 2.0, 2.0, 2.0], 3: [1.0, 1.0, 1.0, 1.0]}


def _exchanges() -> dict[str, list]:
    rows = [(1, i, j, "accepted", "x", q, "y", 1) for i, j, q in PERIOD_1]
    rows.append((1, 0, 2, "rejected", None, None, None, None))
    rows += [(2, i, j, "accepted", "x", q, "y", 1) for i, j, q in PERIOD_2]
    n = len(rows)
    names = ["period", "initiator_id", "responder_id", "outcome", "initiator_gives", "initiator_gives_qty",
             "responder_gives", "responder_gives_qty"]
    columns: dict[str, list] = {name: [row[k] for row in rows] for k, name in enumerate(names)}
    columns.update(exchange_id=list(range(1, n + 1)), round=[k // 2 for k in range(n)], turns=[2] * n,
                   initiator_utility_before=[0.0] * n, initiator_utility_after=[1.0] * n,
                   responder_utility_before=[0.0] * n, responder_utility_after=[1.0] * n, reason=[None] * n)
    return columns


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("living")
    with RunWriter(root, "living", {"seed": 0, "config": {"periods": 3, "discount": 0.5}}) as writer:
        writer.append("participants", {"participant_id": [0, 1, 2, 3], "name": ["A", "B", "C", "D"],
                                        "personality": ["generous"] * 4, "traits": ["{}"] * 4, "notes": [""] * 4,
                                        "brain": ["rules"] * 4, "initial_utility": [0.0] * 4})
        writer.append("exchanges", _exchanges())
        flows = [(t, p, "y", q, "consumed") for t, units in CONSUMED.items() for p, q in enumerate(units) if q]
        flows.append((2, 0, "x", 5, "produced"))  # not consumption: left out of its Gini
        writer.append("flows", {name: [row[k] for row in flows]
                                for k, name in enumerate(["period", "participant_id", "resource", "quantity", "kind"])})
        rows = [(t, p) for t in (1, 2, 3) for p in range(4)]
        writer.append("period_utility", {
            "period": [t for t, _ in rows], "participant_id": [p for _, p in rows],
            "utility": [UTILITY[t][p] for t, p in rows],
            "discounted_utility": [UTILITY[t][p] * 0.5 ** (t - 1) for t, p in rows],
            "needed": [NEEDED[p] for _, p in rows], "unmet": [NEEDED[p] - CONSUMED[t][p] for t, p in rows],
        })
        writer.update(exchanges_recorded=9, accepted=8)
    connection = Store(root).connect()
    yield connection
    connection.close()


def test_trades_are_counted_in_the_period_they_happened_and_an_empty_period_has_a_row(con) -> None:
    frame = metrics.trades_by_period(con, "living")
    assert frame["period"].tolist() == [1, 2, 3]
    assert frame["exchanges"].tolist() == [3, 6, 0]
    assert frame["accepted"].tolist() == [2, 6, 0]
    assert frame["acceptance_rate"].iloc[:2].tolist() == pytest.approx([2 / 3, 1.0])
    assert frame["acceptance_rate"].isna().iloc[2]


def test_need_fulfilment_per_period_is_what_was_consumed_of_what_was_needed(con) -> None:
    frame = metrics.need_fulfilment_by_period(con, "living")
    assert frame["needed"].tolist() == [10, 10, 10]
    assert frame["unmet"].tolist() == [5, 0, 10]
    assert frame["fulfilment"].tolist() == pytest.approx([5 / 10, 1.0, 0.0])
    assert frame["mean_fulfilment"].tolist() == pytest.approx([(1 + 1 + 0.5 + 0) / 4, 1.0, 0.0])


def test_utility_per_period_sums_to_the_discounted_run_utility(con) -> None:
    frame = metrics.utility_by_period(con, "living")
    assert frame["utility"].tolist() == pytest.approx([10.0, 8.0, 4.0])
    assert frame["mean_utility"].tolist() == pytest.approx([2.5, 2.0, 1.0])
    assert frame["discounted_utility"].tolist() == pytest.approx([10.0, 4.0, 1.0])
    assert frame["run_utility_so_far"].tolist() == pytest.approx([10.0, 14.0, 15.0])


def test_gini_of_consumption_counts_everyone_and_only_consumption(con) -> None:
    frame = metrics.consumption_gini_by_period(con, "living")
    assert frame["consumed"].tolist() == [5, 10, 0]
    # sorted [0, 1, 2, 2]: 2 (0 + 2 + 6 + 8) / (4 x 5) - 5/4; sorted [2, 2, 2, 4]: 2 (2 + 4 + 6 + 16) / (4 x 10) - 5/4
    assert frame["gini"].iloc[:2].tolist() == pytest.approx([0.35, 0.15])
    assert frame["gini"].isna().iloc[2]  # nobody consumed: no distribution to measure


def test_prices_per_period_withhold_a_spread_on_too_few_trades(con) -> None:
    frame = metrics.prices_by_period(con, "living")
    pooled = frame[frame["pair"] == "all"].set_index("period")
    assert pooled.index.tolist() == [1, 2]
    assert pooled["df"].tolist() == [1, 5]
    assert pd.isna(pooled.loc[1, "sd_log_rate"])  # df 1 < MIN_DISPERSION_DF
    # period 2: log rates 0, ln2, 0, ln2, 0, ln2 -> sample SD ln2 sqrt(6 x 1/4 / 5)
    assert pooled.loc[2, "sd_log_rate"] == pytest.approx(LN2 * math.sqrt(0.3))
    pair = frame[frame["pair"] == "x/y"].set_index("period")
    assert pair["mean_log_rate"].tolist() == pytest.approx([LN2 / 2, LN2 / 2])


def test_repeat_partners_are_pairs_that_traded_in_an_earlier_period(con) -> None:
    frame = metrics.repeat_partners_by_period(con, "living")
    assert frame["trades"].tolist() == [2, 6, 0]
    assert frame["pairs"].tolist() == [2, 6, 0]
    assert frame["repeat_pairs"].tolist() == [0, 2, 0]  # {0,1} and {2,3}; {0,2} only met before
    assert frame["repeat_share"].iloc[:2].tolist() == pytest.approx([0.0, 2 / 6])
    assert frame["repeat_share"].isna().iloc[2]


def test_by_period_gathers_the_same_numbers(con) -> None:
    frame = metrics.by_period(con, "living").set_index("period")
    assert frame["fulfilment"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert frame["consumption_gini"].iloc[0] == pytest.approx(0.35)
    assert frame.loc[2, "price_sd"] == pytest.approx(LN2 * math.sqrt(0.3))
    assert frame.loc[2, "repeat_share"] == pytest.approx(1 / 3)
    assert metrics.run_periods(con, "living") == 3


def test_cli_metrics_shows_periods_only_for_a_run_of_several(tmp_path, capsys) -> None:
    store = Store(tmp_path)
    base = dict(seed=2, num_participants=8, min_exchanges=40, max_exchanges=40)
    run_simulation(SimulationConfig(simulation_id="one", **base), store)
    run_simulation(SimulationConfig(simulation_id="four", periods=4, **base), store)
    assert main(["metrics", "one", "--store", str(tmp_path)]) == 0
    assert "repeat_share" not in capsys.readouterr().out
    assert main(["metrics", "four", "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(k for k, line in enumerate(lines) if line.split()[:2] == ["period", "exchanges"])
    assert [line.split()[0] for line in lines[header + 1: header + 5]] == ["1", "2", "3", "4"]
    assert main(["metrics", "four", "--json", "--store", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)["by_period"]
    con = store.connect(["four"])
    expected = metrics.by_period(con, "four")
    assert [row["accepted"] for row in shown] == expected["accepted"].tolist()
    assert [row["fulfilment"] for row in shown] == pytest.approx(expected["fulfilment"].tolist())


def test_holdings_per_period_follow_production_consumption_and_expiry_by_hand(tmp_path) -> None:
    from tests.test_periods import _no_trade_config

    store = Store(tmp_path)
    run_simulation(_no_trade_config(simulation_id="ann"), store)
    frame = metrics.holdings_by_period(store.connect(["ann"]), "ann")
    held = {(int(r.period), r.resource): int(r.quantity) for r in frame.itertuples()}
    # Ann holds 1 childcare and 2 bread; produces childcare 5 (capacity), bread 3, repairs 4 (storable
    # capacity), jam 2 (spoils wholly); needs childcare 2, repairs 1. Ben holds and makes nothing.
    assert [held[1, r] for r in ("childcare", "bread", "repairs", "jam")] == [1, 2, 0, 0]
    assert [held[2, r] for r in ("childcare", "bread", "repairs", "jam")] == [5, 5, 4, 2]
    assert [held[3, r] for r in ("childcare", "bread", "repairs", "jam")] == [5, 8, 4, 2]


def test_holdings_of_the_last_period_less_its_end_are_the_final_holdings(tmp_path) -> None:
    store = Store(tmp_path)
    run_simulation(SimulationConfig(seed=4, num_participants=12, min_exchanges=120, max_exchanges=120, periods=3,
                                    simulation_id="t"), store)
    con = store.connect(["t"])
    frame = metrics.holdings_by_period(con, "t")
    last = frame[frame["period"] == 3].groupby("resource")["quantity"].sum()
    removed = dict(con.execute("SELECT resource::VARCHAR, sum(quantity) FROM flows WHERE period = 3 "
                               "AND kind != 'produced' GROUP BY ALL").fetchall())
    final = dict(con.execute("SELECT resource::VARCHAR, sum(quantity) FROM final_holdings GROUP BY ALL").fetchall())
    assert metrics.trades_by_period(con, "t")["accepted"].sum() > 0  # units did move between groups
    assert {r: int(q) - int(removed.get(r, 0)) for r, q in last.items()} == {r: int(q) for r, q in final.items()}


def test_the_network_of_one_period_has_only_that_period_s_trades(con) -> None:
    first = metrics.network_edges(con, "living", period=1)
    assert sorted(zip(first["a"], first["b"], first["trades"])) == [(0, 1, 1), (0, 2, 0), (2, 3, 1)]
    second = metrics.network_nodes(con, "living", period=2)
    assert second.set_index("participant_id")["trades"].to_dict() == {0: 3, 1: 3, 2: 3, 3: 3}
    whole = metrics.network_edges(con, "living")
    assert whole.set_index(["a", "b"]).loc[(0, 1), "trades"] == 2
