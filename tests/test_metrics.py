"""Every metric on a run small enough to work out by hand.

The run "hand" has three participants (p0 cautious, p1 generous, p2
strategic), two resources (apples, bread) and four exchanges:

| id | round | initiator -> responder | outcome  | turns | initiator gives | responder gives | gains (i, r) |
|----|-------|------------------------|----------|-------|-----------------|-----------------|--------------|
| 1  | 0     | p0 -> p1               | accepted | 2     | 2 apples        | 1 bread         | +2, +1       |
| 2  | 1     | p1 -> p2               | accepted | 3     | 1 bread         | 1 apples        | +1, +0.5     |
| 3  | 2     | p2 -> p0               | accepted | 4     | 1 bread         | 1 apples        | -0.5, +1     |
| 4  | 3     | p0 -> p2               | invalid  | 2     | 5 apples        | 1 bread         | 0, 0         |

Initial utilities 1, 2, 3; final 4, 4, 3. The facilitator's last valuations
are apples 2, bread 0.5. "control" is the same community with no facilitator
and no trades. Expected numbers are written out as arithmetic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from commonpool import metrics
from commonpool.cli import main
from commonpool.store import RunNotFoundError, RunWriter, Store

LN2 = math.log(2)


def _community(writer: RunWriter) -> None:
    writer.append("resources", {"resource_id": [0, 1], "name": ["apples", "bread"], "kind": ["good", "good"]})
    writer.append(
        "participants",
        {
            "participant_id": [0, 1, 2],
            "name": ["Ada", "Ben", "Cy"],
            "personality": ["cautious", "generous", "strategic"],
            "traits": ["{}"] * 3,
            "notes": [""] * 3,
            "brain": ["rules"] * 3,
            "initial_utility": [1.0, 2.0, 3.0],
        },
    )
    people, res = [0, 0, 1, 1, 2, 2], ["apples", "bread"] * 3
    writer.append("initial_holdings", {"participant_id": people, "resource": res, "quantity": [4, 0, 0, 4, 2, 2]})
    # p0 needs 2 bread, p1 needs 2 apples, p2 needs nothing.
    writer.append("needs", {"participant_id": people, "resource": res, "need": [0, 2, 2, 0, 0, 0], "want": [1.0] * 6})


def _exchanges(rows: list[tuple]) -> dict[str, list]:
    names = ["exchange_id", "round", "initiator_id", "responder_id", "outcome", "turns", "initiator_gives",
             "initiator_gives_qty", "responder_gives", "responder_gives_qty", "initiator_utility_before",
             "initiator_utility_after", "responder_utility_before", "responder_utility_after"]
    columns = {name: [row[k] for row in rows] for k, name in enumerate(names)}
    columns["reason"] = [None] * len(rows)
    columns["period"] = [1] * len(rows)
    return columns


def _transfers(rows: list[tuple]) -> dict[str, list]:
    return {name: [row[k] for row in rows] for k, name in enumerate(["exchange_id", "from_id", "to_id", "resource", "quantity"])}


def _swap(advice: list[tuple]) -> dict[str, list]:
    names = ["exchange_id", "round", "initiator_gives", "initiator_gives_qty", "responder_gives", "responder_gives_qty"]
    columns = {name: [row[k] for row in advice] for k, name in enumerate(names)}
    n = len(advice)
    columns.update(typical_rate=[None] * n, typical_rate_trades=[0] * n, initiator_deals=[0] * n,
                   initiator_meetings=[0] * n, responder_deals=[0] * n, responder_meetings=[0] * n,
                   note=[""] * n, source=["rules"] * n)
    return columns


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hand")
    with RunWriter(root, "hand", {"seed": 0}) as writer:
        _community(writer)
        writer.append("exchanges", _exchanges([
            (1, 0, 0, 1, "accepted", 2, "apples", 2, "bread", 1, 1.0, 3.0, 2.0, 3.0),
            (2, 1, 1, 2, "accepted", 3, "bread", 1, "apples", 1, 3.0, 4.0, 3.0, 3.5),
            (3, 2, 2, 0, "accepted", 4, "bread", 1, "apples", 1, 3.5, 3.0, 3.0, 4.0),
            (4, 3, 0, 2, "invalid", 2, "apples", 5, "bread", 1, 4.0, 4.0, 3.0, 3.0),
        ]))
        writer.append("transfers", _transfers([
            (1, 0, 1, "apples", 2), (1, 1, 0, "bread", 1),
            (2, 1, 2, "bread", 1), (2, 2, 1, "apples", 1),
            (3, 2, 0, "bread", 1), (3, 0, 2, "apples", 1),
        ]))
        # Suggestions: exactly the deal (1); 2 apples for 1 bread where 1 for 1 was agreed (2); other resources (3).
        writer.append("advice", _swap([
            (1, 0, "apples", 2, "bread", 1),
            (2, 1, "bread", 1, "apples", 2),
            (3, 2, "apples", 1, "bread", 1),
            (4, 3, "apples", 1, "bread", 1),
        ]))
        # The last round's valuations count, not the first's.
        writer.append("valuations", {"round": [0, 0, 3, 3], "resource": ["apples", "bread", "apples", "bread"],
                                     "valuation": [1.0, 1.0, 2.0, 0.5]})
        writer.append("offers", {
            "exchange_id": [1, 1, 2, 2, 2], "turn": [1, 2, 1, 2, 3], "speaker_id": [0, 1, 1, 2, 1],
            "action": ["propose", "accept", "propose", "counter", "accept"],
            "initiator_gives": ["apples", "apples", "bread", "bread", "bread"], "initiator_gives_qty": [2, 2, 1, 1, 1],
            "responder_gives": ["bread"] * 5, "responder_gives_qty": [1] * 5, "message": [""] * 5,
            "source": ["llm", "fallback", "rules", "rules", "rules"], "fallback_reason": [None, "bad json", None, None, None],
        })
        writer.append("llm_calls", {
            "call_id": [1, 2], "exchange_id": [1, 1], "turn": [1, 2], "role": ["initiator", "responder"],
            "participant_id": [0, 1], "model": ["fake/m", "fake/m"], "prompt_tokens": [10, 20],
            "completion_tokens": [5, 5], "cost_usd": [0.01, 0.02], "latency_ms": [100.0, 300.0],
            "cached": [True, False], "attempt": [1, 1], "error": [None, "bad json"], "finish_reason": ["stop", "stop"],
        })
    with RunWriter(root, "control", {"seed": 0, "facilitator": "off"}) as writer:
        _community(writer)
        writer.append("exchanges", _exchanges([(1, 0, 0, 1, "rejected", 2, "apples", 1, "bread", 1, 1.0, 1.0, 2.0, 2.0)]))
    return root


@pytest.fixture(scope="module")
def con(root: Path):
    connection = Store(root).connect()
    yield connection
    connection.close()


def test_summary_counts_outcomes_turns_and_llm_use(con) -> None:
    s = metrics.summary(con, "hand")
    assert (s["exchanges"], s["accepted"]) == (4, 3)
    assert s["acceptance_rate"] == pytest.approx(3 / 4)
    assert s["invalid_rate"] == pytest.approx(1 / 4)
    assert s["error_rate"] == 0
    assert s["mean_turns_to_agreement"] == pytest.approx((2 + 3 + 4) / 3)
    assert s["fallback_rate"] == pytest.approx(1 / 2)  # one of the two LLM decisions fell back
    assert (s["llm_calls"], s["prompt_tokens"], s["completion_tokens"]) == (2, 30, 10)
    assert s["cost_usd"] == pytest.approx(0.03)
    assert s["cache_hit_rate"] == pytest.approx(1 / 2)
    assert s["calls_per_exchange"] == pytest.approx(2 / 4)


def test_welfare_reads_recorded_utilities_last_accepted_exchange_wins(con) -> None:
    s = metrics.summary(con, "hand")
    assert s["welfare_initial"] == pytest.approx(1 + 2 + 3)
    assert s["welfare_final"] == pytest.approx(4 + 4 + 3)
    assert s["welfare_change"] == pytest.approx(5)
    assert s["individually_rational_share"] == pytest.approx(2 / 3)  # exchange 3 cost p2 0.5
    assert s["nash_welfare_initial"] == pytest.approx(6 ** (1 / 3))
    assert s["nash_welfare_final"] == pytest.approx(48 ** (1 / 3))
    assert (s["rawls_initial"], s["rawls_final"]) == (pytest.approx(1), pytest.approx(3))


def test_welfare_over_time_adds_both_sides_gains_per_window(con) -> None:
    path = metrics.welfare_over_time(con, "hand", windows=2)
    assert path["change"].tolist() == pytest.approx([3 + 1.5, 0.5])
    assert path["welfare"].tolist() == pytest.approx([10.5, 11])


def test_gini_of_utility_and_of_holdings_at_last_valuations(con) -> None:
    s = metrics.summary(con, "hand")
    # Gini = sum_ij |x_i - x_j| / (2 n^2 mean).
    assert s["gini_utility_initial"] == pytest.approx(8 / (2 * 9 * 2))
    assert s["gini_utility_final"] == pytest.approx(4 / (2 * 9 * 11 / 3))
    # Holdings at apples 2, bread 0.5: initial 8, 2, 5; final 3, 7, 5.
    assert s["gini_holdings_initial"] == pytest.approx(24 / (2 * 9 * 5))
    assert s["gini_holdings_final"] == pytest.approx(16 / (2 * 9 * 5))


def test_control_run_values_each_unit_at_one_and_is_not_mixed_with_other_runs(con) -> None:
    s = metrics.summary(con, "control")
    assert s["gini_holdings_initial"] == pytest.approx(0)  # 4 units each
    assert (s["exchanges"], s["accepted"], s["acceptance_rate"]) == (1, 0, 0)
    assert s["welfare_final"] == pytest.approx(s["welfare_initial"])
    assert s["individually_rational_share"] is None
    assert s["llm_calls"] == 0 and s["cache_hit_rate"] is None
    assert metrics.anchoring(con, "control") is None
    assert metrics.facilitator_adherence(con, "control").empty


def test_need_fulfilment_per_participant_and_overall(con) -> None:
    frame = metrics.need_fulfilment(con, "hand")
    assert frame["initial"].tolist() == pytest.approx([0, 0, 1])  # p2 needs nothing: fulfilled
    assert frame["final"].tolist() == pytest.approx([1, 1, 1])
    s = metrics.summary(con, "hand")
    assert (s["need_fulfilment_initial"], s["need_fulfilment_final"]) == (pytest.approx(0), pytest.approx(1))


def test_activity_splits_exchanges_into_equal_windows(con) -> None:
    frame = metrics.activity(con, "hand", windows=2)
    assert frame["first_exchange"].tolist() == [1, 3]
    assert frame["last_exchange"].tolist() == [2, 4]
    assert frame["accepted"].tolist() == [2, 1]
    assert frame["acceptance_rate"].tolist() == pytest.approx([1, 0.5])
    assert frame["mean_turns"].tolist() == pytest.approx([2.5, 3])
    assert frame["invalid"].tolist() == [0, 1]
    assert frame["fallbacks"].tolist() == [1, 0]


def test_agreement_by_turn_counts_where_exchanges_ended(con) -> None:
    frame = metrics.agreement_by_turn(con, "hand")
    assert frame["turn"].tolist() == [2, 3, 4]
    assert frame["exchanges_ended"].tolist() == [2, 1, 1]
    assert frame["accepted"].tolist() == [1, 1, 1]
    assert frame["share_of_agreements"].tolist() == pytest.approx([1 / 3] * 3)


def test_lorenz_curve_starts_at_zero_and_accumulates_sorted_values(con) -> None:
    frame = metrics.lorenz(con, "hand", quantity="utility")
    final = frame[frame["when"] == "final"]
    assert final["population_share"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert final["value_share"].tolist() == pytest.approx([0, 3 / 11, 7 / 11, 1])
    with pytest.raises(ValueError, match="quantity"):
        metrics.lorenz(con, "hand", quantity="happiness")  # type: ignore[arg-type]


def test_exchange_rates_name_pairs_alphabetically_and_price_the_second(con) -> None:
    frame = metrics.exchange_rates(con, "hand")
    assert frame["pair"].tolist() == ["apples/bread"] * 3
    assert frame["rate"].tolist() == pytest.approx([2, 1, 1])  # apples per bread
    assert frame["log_rate"].tolist() == pytest.approx([LN2, 0, 0])


def test_price_dispersion_is_the_sd_of_log_rates_per_window(con, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MIN_DISPERSION_DF", 2)
    frame = metrics.price_dispersion(con, "hand", windows=1)
    assert frame["pair"].tolist() == ["all", "apples/bread"]
    assert frame["trades"].tolist() == [3, 3]
    assert frame["df"].tolist() == [2, 2]
    sd = float(np.std([LN2, 0, 0], ddof=1))
    assert frame["sd_log_rate"].tolist() == pytest.approx([sd, sd])
    assert frame["mean_log_rate"].iloc[1] == pytest.approx(LN2 / 3)


def test_a_window_with_too_few_trades_has_no_spread_rather_than_a_spread_of_zero(con) -> None:
    # Windows of 1 exchange each: 1 trade (df 0) in windows 0-2, none in window 3 (an invalid deal).
    frame = metrics.price_dispersion(con, "hand", windows=4)
    pooled = frame[frame["pair"] == "all"]
    assert pooled["window"].tolist() == [0, 1, 2, 3]
    assert pooled["trades"].tolist() == [1, 1, 1, 0]
    assert pooled["df"].tolist() == [0, 0, 0, 0]
    assert pooled["sd_log_rate"].isna().all()
    # Three trades are 2 degrees of freedom, fewer than the least a spread is reported on.
    whole = metrics.price_dispersion(con, "hand", windows=1)
    assert metrics.MIN_DISPERSION_DF > 2 and whole["sd_log_rate"].isna().all()


def test_mrs_price_of_a_trade_is_the_geometric_mean_of_both_traders_mrs_before_it(con) -> None:
    # Exchange 1: Ada (4 apples, 0 bread; needs 2 bread) gives 2 apples to Ben (0 apples, 4 bread;
    # needs 2 apples) for 1 bread. lambda = 2 (the default; the run records no config), wants 1.
    # Marginal values (central differences; the forward one at 0 units):
    #   Ada: apples at 4 = (ln 6 - ln 4) / 2, bread at 0 = 2 + ln 2; Ben the mirror image.
    frame = metrics.mrs_prices(con, "hand", windows=1)
    assert frame["exchange_id"].tolist() == [1, 2, 3]
    assert frame["pair"].tolist() == ["apples/bread"] * 3
    plenty, needed = math.log(1.5) / 2, 2 + LN2
    first = frame.iloc[0]
    assert first["log_mrs_initiator"] == pytest.approx(math.log(needed / plenty))
    assert first["log_mrs_responder"] == pytest.approx(math.log(plenty / needed))
    assert first["log_mrs_price"] == pytest.approx(0.0)
    assert first["mrs_gap"] == pytest.approx(2 * math.log(needed / plenty))
    assert first["log_rate"] == pytest.approx(LN2)  # 2 apples per bread
    # Exchange 2: Ben (2 apples, 3 bread) gives 1 bread to Cy (2 apples, 2 bread; no needs) for 1 apple.
    second = frame.iloc[1]
    ben_apples, ben_bread = (4 + math.log(4) - 2 - LN2) / 2, (math.log(5) - math.log(3)) / 2
    assert second["log_mrs_initiator"] == pytest.approx(math.log(ben_bread / ben_apples))
    assert second["log_mrs_responder"] == pytest.approx(0.0)  # same holdings, same wants: MRS 1


def test_mrs_dispersion_counts_holders_of_both_goods_and_withholds_a_spread_of_one(con) -> None:
    frame = metrics.mrs_dispersion(con, "hand", windows=1)
    start = frame[frame["after_exchange"] == 0].set_index("pair")
    # At the start only Cy holds both apples and bread: one holder, no spread (NULL, not 0).
    assert start.loc["all", "holders"] == 1 and start.loc["all", "df"] == 0
    assert math.isnan(start.loc["all", "sd_log_mrs"])
    end = frame[frame["after_exchange"] == 4].set_index("pair")
    assert end.loc["apples/bread", "holders"] == 3 and end.loc["apples/bread", "df"] == 2
    assert math.isnan(end.loc["apples/bread", "sd_log_mrs"])  # 2 df < MIN_DISPERSION_DF


def test_holdings_over_time_follow_transfers_per_personality(con) -> None:
    frame = metrics.holdings_over_time(con, "hand", windows=2)
    held = {(w, p, r): q for w, p, r, q in frame.itertuples(index=False)}
    assert (held[0, "cautious", "apples"], held[0, "cautious", "bread"]) == (2, 1)
    assert (held[0, "strategic", "apples"], held[0, "strategic", "bread"]) == (1, 3)
    assert (held[1, "cautious", "apples"], held[1, "cautious", "bread"]) == (1, 2)
    assert (held[1, "generous", "apples"], held[1, "generous", "bread"]) == (3, 2)


def test_surplus_split_gives_each_sides_gain_and_the_initiators_share(con) -> None:
    frame = metrics.surplus_split(con, "hand")
    assert frame["initiator_gain"].tolist() == pytest.approx([2, 1, -0.5])
    assert frame["responder_gain"].tolist() == pytest.approx([1, 0.5, 1])
    assert frame["initiator_share"].tolist() == pytest.approx([2 / 3, 2 / 3, -1])
    assert frame["initiator_personality"].tolist() == ["cautious", "generous", "strategic"]


def test_facilitator_adherence_and_anchoring(con) -> None:
    frame = metrics.facilitator_adherence(con, "hand")
    assert frame["same_resources"].tolist() == [True, True, False]
    assert frame["followed"].tolist() == [True, False, False]
    assert frame["distance"].iloc[0] == pytest.approx(0)
    assert frame["distance"].iloc[1] == pytest.approx(LN2)  # suggested ln(1/2), agreed ln(1)
    assert math.isnan(frame["distance"].iloc[2])
    assert metrics.anchoring(con, "hand") == pytest.approx(1.0)  # (ln2, ln2) and (-ln2, 0)


def test_network_of_a_triangle(con) -> None:
    edges = metrics.network_edges(con, "hand")
    assert list(zip(edges["a"], edges["b"], edges["meetings"], edges["trades"])) == [(0, 1, 1, 1), (0, 2, 2, 1), (1, 2, 1, 1)]
    nodes = metrics.network_nodes(con, "hand")
    assert nodes["degree"].tolist() == [2, 2, 2]
    assert nodes["trades"].tolist() == [2, 2, 2]
    assert nodes["clustering"].tolist() == pytest.approx([1, 1, 1])
    net = metrics.network_summary(con, "hand")
    assert net["repeat_partner_share"] == pytest.approx(0)
    assert net["reciprocity"] == pytest.approx(0)  # 0->1, 1->2, 2->0: nobody initiated back
    assert net["mean_clustering"] == pytest.approx(1)
    # Newman's r: e_ij = 1/6 off the diagonal, a_i = 1/3: (0 - 1/3) / (1 - 1/3).
    assert net["personality_assortativity"] == pytest.approx(-0.5)


def test_by_personality_and_pairing_matrix(con) -> None:
    groups = metrics.by_personality(con, "hand").set_index("personality")
    assert groups.loc["cautious", "utility_gain"] == pytest.approx(3)
    assert groups.loc["generous", "utility_gain"] == pytest.approx(2)
    assert groups.loc["strategic", "utility_gain"] == pytest.approx(0)
    assert groups.loc["cautious", "acceptance_rate"] == pytest.approx(2 / 3)
    assert groups.loc["generous", "acceptance_rate"] == pytest.approx(1)
    assert groups.loc["cautious", "surplus_share"] == pytest.approx((2 + 1) / (3 + 0.5))
    assert groups.loc["strategic", "surplus_share"] == pytest.approx((0.5 - 0.5) / (1.5 + 0.5))
    pairs = metrics.pairing_matrix(con, "hand").set_index(["personality_a", "personality_b"])  # initiator x responder
    assert pairs.index.tolist() == [("cautious", "generous"), ("cautious", "strategic"), ("generous", "strategic"),
                                    ("strategic", "cautious")]
    assert pairs.loc[("cautious", "strategic"), ["exchanges", "accepted"]].tolist() == [1, 0]  # the invalid one
    assert pairs.loc[("cautious", "strategic"), "acceptance_rate"] == 0
    assert pairs.loc[("strategic", "cautious"), "acceptance_rate"] == 1
    assert pairs.loc[("strategic", "cautious"), ["mean_gain_a", "mean_gain_b"]].tolist() == pytest.approx([-0.5, 1])
    assert pairs.loc[("cautious", "generous"), ["mean_gain_a", "mean_gain_b"]].tolist() == pytest.approx([2, 1])


def test_cost_per_role_and_model(con) -> None:
    frame = metrics.cost(con, "hand")
    assert frame["role"].tolist() == ["initiator", "responder"]
    assert frame["cached_calls"].tolist() == [1, 0]
    assert frame["errors"].tolist() == [0, 1]
    assert frame["mean_latency_ms"].tolist() == pytest.approx([100, 300])


def test_compare_has_one_row_per_run_in_the_order_asked(con) -> None:
    frame = metrics.compare(con, ["control", "hand"])
    assert frame["run_id"].tolist() == ["control", "hand"]
    assert set(metrics.summary(con, "hand")) <= set(frame.columns)


def test_unknown_run_is_refused_by_name(con) -> None:
    with pytest.raises(RunNotFoundError, match="nope"):
        metrics.summary(con, "nope")
    with pytest.raises(RunNotFoundError):
        metrics.activity(con, "nope")


def test_cli_metrics_prints_a_table_or_json(root: Path, capsys) -> None:
    assert main(["metrics", "hand", "--store", str(root)]) == 0
    table = capsys.readouterr().out
    assert "acceptance_rate: 0.75" in table and "cautious" in table
    assert main(["metrics", "hand", "--json", "--store", str(root)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["accepted"] == 3
    assert data["network"]["mean_clustering"] == pytest.approx(1)
    assert [g["personality"] for g in data["by_personality"]] == ["cautious", "generous", "strategic"]


def test_cli_metrics_of_an_unknown_run_is_one_line_and_exit_2(root: Path, capsys) -> None:
    assert main(["metrics", "nope", "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
