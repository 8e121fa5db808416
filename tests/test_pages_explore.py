"""The Explore page: headline figures, every chart, the exchange log and one conversation."""

from __future__ import annotations

import re

from commonpool import ParticipantSpec, metrics
from commonpool.store import Store
from pages_support import EXPLORE_TABS, app, every_explore_tab, no_exceptions, nodes, small_run, texts

CHART_TITLES = {
    "Activity and acceptance over the run",
    "Turns to the end of a negotiation",
    "Holdings of the cautious members",
    "Holdings of the generous members",
    "Holdings of the strategic members",
    "Exchange rates of the 8 busiest pairs",
    "Spread of exchange rates over time",
    "Who trades with whom",
    "Personalities: exchanges (number), acceptance (colour)",
    "Trades between participants (rows and columns grouped by personality)",
    "utility gain per member",
    "acceptance rate",
    "share of deal surplus",
    "needs met at the end",
    "Lorenz curve of holdings value",
    "Lorenz curve of utility",
    "Facilitator adherence: agreed vs suggested",
    "Spread of marginal rates of substitution across holders",
    "MRS of the two traders, and the deal's rate against their MRS price",
}


def chart_specs(at) -> list[dict]:  # noqa: ANN001
    import json

    return [json.loads(chart.proto.spec) for chart in nodes(at.main, "vega_lite_chart")]


def chart_titles(at) -> set[str]:  # noqa: ANN001
    titles = set()
    for spec in chart_specs(at):
        title = spec.get("title")
        titles.add(title if isinstance(title, str) else title["text"] if title else "")
    return titles


def test_only_the_chosen_tab_is_computed_and_the_url_names_it(store: Store) -> None:
    run_id = small_run(store)
    at = app("pages/explore.py", {"run": run_id})
    no_exceptions(at)
    assert [t.label for t in at.tabs] == list(EXPLORE_TABS)
    assert chart_titles(at) == {"Activity and acceptance over the run", "Turns to the end of a negotiation"}
    assert not any(m.label == "Allocative efficiency" for m in at.metric)
    prices = app("pages/explore.py", {"run": run_id, "tab": "Prices"})
    no_exceptions(prices)
    assert "Exchange rates of the 8 busiest pairs" in chart_titles(prices)
    assert "Activity and acceptance over the run" not in chart_titles(prices)


def test_every_single_chart_follows_its_column_and_keeps_its_legend_below_its_height(store: Store) -> None:
    run_id = small_run(store)
    specs = [spec for _, at in every_explore_tab(run_id) for spec in chart_specs(at)]
    single = [s for s in specs if not any(k in s for k in ("facet", "hconcat", "vconcat", "concat"))]
    assert len(single) >= 14
    # fit-x: the width follows the column; the title, axes and legend are added to the height asked
    # for instead of squeezed into it (where a tall legend clipped the rates chart).
    unfitted = [s.get("title") for s in single if s.get("autosize", {}).get("type") != "fit-x"
                and not s.get("config", {}).get("view", {}).get("strokeWidth") == 0]
    assert unfitted == []


def test_explore_renders_every_chart_and_the_headline_figures(store: Store) -> None:
    run_id = small_run(store)
    titles: set[str] = set()
    headline: dict[str, str] = {}
    for _, at in every_explore_tab(run_id):
        no_exceptions(at)
        titles |= chart_titles(at)
        headline |= {m.label: m.value for m in at.metric}
    assert titles == CHART_TITLES
    s = metrics.summary(store.connect(), run_id)
    assert headline["Acceptance rate"] == f"{s['acceptance_rate']:.1%}"
    assert headline["Needs met"] == f"{s['need_fulfilment_final']:.1%}"
    # A change of a share is in percentage points, not a percentage of it.
    needs = next(m for m in app("pages/explore.py", {"run": run_id}).metric if m.label == "Needs met")
    points = (s["need_fulfilment_final"] - s["need_fulfilment_initial"]) * 100
    assert needs.delta == f"{points:+.1f} pp"
    assert {"Welfare change", "Gini of holdings", "Gini of utility", "Anchoring"} <= set(headline)
    optimum = metrics.allocative_efficiency(store.connect(), run_id)
    assert headline["Allocative efficiency"] == f"{optimum['efficiency']:.1%}"
    assert {"Pairs with a swap left", "Best swap left"} <= set(headline)


def test_every_table_shown_has_csv_and_parquet_downloads(store: Store) -> None:
    run_id = small_run(store)
    for tab, at in every_explore_tab(run_id):
        labels = [d.label for d in at.download_button]
        tables = len(at.dataframe) - (tab == "Exchange log")  # the valuations sit in a transcript
        assert labels.count("CSV") == labels.count("Parquet") >= tables, tab


def test_a_control_run_says_there_was_no_facilitator(store: Store) -> None:
    run_id = small_run(store, facilitator=False)
    at = app("pages/explore.py", {"run": run_id, "tab": "Facilitator"})
    no_exceptions(at)
    assert any("facilitator was off" in i.value for i in at.info)
    assert "Facilitator adherence: agreed vs suggested" not in chart_titles(at)


def test_the_outcome_filter_names_outcomes_like_the_turns_chart(store: Store) -> None:
    from commonpool.store.schema import OUTCOME_LABELS

    run_id = small_run(store)
    at = app("pages/explore.py", {"run": run_id})
    turns = next(s for s in chart_specs(at) if s.get("title") == "Turns to the end of a negotiation")
    at = app("pages/explore.py", {"run": run_id, "tab": "Exchange log"})
    assert at.multiselect(key="log_outcomes").options == list(OUTCOME_LABELS.values())
    assert turns["encoding"]["color"]["scale"]["domain"] == list(OUTCOME_LABELS.values())


def test_the_log_is_filtered_and_paged_in_the_database(store: Store) -> None:
    run_id = small_run(store)
    at = app("pages/explore.py", {"run": run_id, "tab": "Exchange log"})
    at.multiselect(key="log_outcomes").set_value(["accepted"]).run()
    accepted = store.connect().execute(
        f"SELECT count(*) FROM exchanges WHERE run_id = '{run_id}' AND outcome = 'accepted'").fetchone()[0]
    assert any(c.value == f"{accepted:,} exchanges match." for c in at.caption)
    log = [d for d in at.dataframe if "outcome" in d.value.columns][0].value
    assert set(log["outcome"]) == {"accepted"} and len(log) == 25
    at.number_input(key="log_page").set_value(2).run()
    second = [d for d in at.dataframe if "outcome" in d.value.columns][0].value
    assert second["exchange_id"].min() > log["exchange_id"].max()


def test_the_drill_down_reads_one_exchange_as_a_conversation(store: Store) -> None:
    run_id = small_run(store)
    at = app("pages/explore.py", {"run": run_id, "tab": "Exchange log"})
    first = at.selectbox(key="log_exchange").options[0]
    assert first.startswith("#1 · ")
    con = store.connect()
    offers = con.execute(f"SELECT message FROM offers WHERE run_id = '{run_id}' AND exchange_id = 1 ORDER BY turn").fetchall()
    note = con.execute(f"SELECT note FROM advice WHERE run_id = '{run_id}' AND exchange_id = 1").fetchone()[0]
    messages = at.chat_message
    assert len(messages) == 1 + len(offers)  # the facilitator, then one bubble per turn
    shown = texts(at)
    assert note in shown
    assert [m for (m,) in offers] == [t for t in shown if t in {m for (m,) in offers}]
    assert any(t.startswith("Outcome: ") for t in shown)


def test_names_and_notes_from_users_are_shown_as_text_not_markup(store: Store) -> None:
    resources = [{"name": "books", "kind": "good"}, {"name": "tools", "kind": "good"}]
    sly = "**Eve** <img src=x onerror=alert(1)> [link](http://evil.test) :red[x]"
    roster = [
        ParticipantSpec(name=sly, personality="cautious", holdings={"books": 6}, needs={"tools": 2}),
        ParticipantSpec(name="Bob", personality="generous", holdings={"tools": 6}, needs={"books": 2}),
    ]
    run_id = small_run(store, num_participants=2, resources=resources, roster=roster, min_exchanges=5,
                       max_exchanges=5)
    shown, rendered = [], []
    for _, at in every_explore_tab(run_id):
        no_exceptions(at)
        assert not at.get("html")
        shown += texts(at)
        rendered += [m.value for m in at.markdown] + [c.value for c in at.caption] + [h.value for h in at.subheader]
    assert any(sly in t for t in shown)
    mentions = [r for r in rendered if "Eve" in r]
    # Where a name reaches a Markdown element, every markup character in it is escaped.
    assert mentions and not any(re.search(r"(?<!\\)[<>*\[\]():]", r.split(" · ")[1]) for r in mentions)


PERIOD_CHART_TITLES = {
    "Accepted trades per period",
    "Need met per period (share of needed units consumed)",
    "Mean utility per period (consumption and holding)",
    "Gini of consumption per period",
    "Repeat partners per period (pairs that traded before)",
    "Spread of exchange rates over time",
    "Exchange rates of the 8 busiest pairs",
}


def chart_data(at, title: str, column: str):  # noqa: ANN001, ANN201
    """The rows a chart was given that have column (Streamlit sends them beside the spec, as Arrow)."""
    import json

    import pyarrow as pa

    chart = next(c for c in nodes(at.main, "vega_lite_chart") if json.loads(c.proto.spec).get("title") == title)
    frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets]
    return next(f for f in frames if column in f.columns)


def test_a_run_of_several_periods_charts_each_figure_per_period_in_its_own_tab(store: Store) -> None:
    run_id = small_run(store, periods=4)
    at = app("pages/explore.py", {"run": run_id, "tab": "Periods"})
    no_exceptions(at)
    assert [t.label for t in at.tabs] == ["Activity", "Periods", *EXPLORE_TABS[1:]]
    assert chart_titles(at) == PERIOD_CHART_TITLES
    specs = chart_specs(at)
    assert all(s["autosize"]["type"] == "fit-x" and s["encoding"]["x"]["axis"]["title"] == "period" for s in specs)
    expected = metrics.by_period(store.connect(), run_id)
    drawn = chart_data(at, "Need met per period (share of needed units consumed)", "fulfilment")
    assert drawn["period"].tolist() == [1, 2, 3, 4]
    assert drawn["fulfilment"].tolist() == expected["fulfilment"].tolist()
    assert chart_data(at, "Accepted trades per period", "accepted")["accepted"].tolist() == expected["accepted"].tolist()
    labels = [d.label for d in at.download_button]
    assert labels.count("CSV") == labels.count("Parquet") == 3  # the summary, by period, prices by period


def test_a_run_of_several_periods_heads_with_needs_met_per_period_not_after_the_last_consumption(store: Store) -> None:
    run_id = small_run(store, periods=4)
    at = app("pages/explore.py", {"run": run_id})
    no_exceptions(at)
    need = metrics.need_fulfilment_by_period(store.connect(), run_id)["fulfilment"]
    (shown,) = [x for x in at.metric if x.label == "Needs met per period"]
    assert shown.value == f"{need.mean():.1%}" and shown.value != "0.0%"
    assert "Needs met" not in [x.label for x in at.metric]
    one = app("pages/explore.py", {"run": small_run(store)})
    assert "Needs met" in [x.label for x in one.metric] and "Needs met per period" not in [x.label for x in one.metric]


def test_a_one_period_run_has_no_periods_tab_and_no_period_sliders(store: Store) -> None:
    run_id = small_run(store)
    for tab, at in every_explore_tab(run_id):
        assert "Periods" not in [t.label for t in at.tabs]
        assert not at.slider and not at.select_slider, tab


def test_the_holdings_slider_draws_the_holdings_of_the_chosen_period(store: Store) -> None:
    run_id = small_run(store, periods=4)
    at = app("pages/explore.py", {"run": run_id, "tab": "Holdings"})
    no_exceptions(at)
    assert at.slider(key="holdings_period").value == 4
    at.slider(key="holdings_period").set_value(2).run()
    drawn = chart_data(at, "Holdings as period 2's trading ends", "quantity")
    held = metrics.holdings_by_period(store.connect(), run_id)
    held = held[held["period"] == 2]
    assert sorted(zip(drawn["personality"], drawn["resource"], drawn["quantity"])) == sorted(
        zip(held["personality"], held["resource"], held["quantity"]))
    assert "Holdings of the cautious members" in chart_titles(at)


def test_the_network_slider_draws_the_trades_of_the_chosen_period(store: Store) -> None:
    run_id = small_run(store, periods=4)
    at = app("pages/explore.py", {"run": run_id, "tab": "Network"})
    no_exceptions(at)
    slider = at.select_slider(key="network_period")
    assert slider.options == ["the whole run", "period 1", "period 2", "period 3", "period 4"]
    whole = metrics.network_edges(store.connect(), run_id)
    third = metrics.network_edges(store.connect(), run_id, period=3)
    assert third["trades"].sum() < whole["trades"].sum()
    slider.set_value(3).run()
    no_exceptions(at)
    drawn = chart_data(at, "Trades between participants (rows and columns grouped by personality)", "trades")
    assert drawn["trades"].sum() == 2 * third["trades"].sum()  # the heatmap lists each pair both ways
