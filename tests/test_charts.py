"""Chart builders: what a large run's pictures keep, and how they name outcomes (the figures are metrics')."""

from __future__ import annotations

import pandas as pd

from commonpool import charts
from commonpool.store.schema import OUTCOME_LABELS


def community(size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A ring of size members where member i trades i times with its neighbour."""
    ids = list(range(1, size + 1))
    nodes = pd.DataFrame({"participant_id": ids, "name": [f"p{i}" for i in ids],
                          "personality": ["cautious", "generous"] * (size // 2), "degree": 2, "trades": ids,
                          "clustering": 0.0})
    edges = pd.DataFrame({"a": ids[:-1], "b": ids[1:], "a_name": "x", "b_name": "y", "meetings": ids[:-1],
                          "trades": ids[:-1]})
    return nodes, edges


def test_a_thousand_member_network_draws_its_busiest_members_and_says_so() -> None:
    nodes, edges = community(1000)
    spec = charts.network_chart(nodes, edges).to_dict()
    dots = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "circle")
    drawn = spec["datasets"][dots["data"]["name"]]
    assert len(drawn) == charts.MAX_NETWORK_NODES
    assert min(d["trades"] for d in drawn) == 1000 - charts.MAX_NETWORK_NODES + 1
    assert "the 120 busiest of 1,000 participants" in spec["title"]["text"]


def test_a_small_network_is_drawn_whole() -> None:
    nodes, edges = community(40)
    spec = charts.network_chart(nodes, edges).to_dict()
    assert spec["title"]["text"] == "Who trades with whom"


def test_the_personality_heatmap_spans_the_rates_present_so_close_rates_still_differ() -> None:
    matrix = pd.DataFrame({"personality_a": ["cautious", "cautious"], "personality_b": ["cautious", "generous"],
                           "exchanges": [250_000, 250_000], "acceptance_rate": [0.31, 0.35],
                           "mean_gain_a": [0.1, 0.2], "mean_gain_b": [0.1, 0.2]})
    cells = charts.pairing_heatmap(matrix).to_dict()["layer"][0]
    assert cells["encoding"]["color"]["scale"]["domain"] == [0.31, 0.35]


def test_the_turns_chart_keeps_rejected_and_no_deal_apart_in_the_one_vocabulary() -> None:
    by_turn = pd.DataFrame({"turn": [2, 6], "exchanges_ended": [5, 3], "accepted": [2, 1], "rejected": [3, 0],
                            "no_deal": [0, 2], "invalid": [0, 0], "error": [0, 0], "share_of_agreements": [0.6, 0.3]})
    spec = charts.agreement_by_turn_chart(by_turn).to_dict()
    shown = {row["outcome"] for rows in spec["datasets"].values() for row in rows}
    assert shown == {OUTCOME_LABELS["accepted"], OUTCOME_LABELS["rejected"], OUTCOME_LABELS["no_deal"]}
    assert spec["encoding"]["y"]["axis"]["format"] == ",d"
