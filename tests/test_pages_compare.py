"""The Compare page: the same figures for several runs side by side, and overlaid charts."""

from __future__ import annotations

import json

from commonpool import metrics
from commonpool.experiments.spec import parse_spec
from commonpool.experiments.sweep import run_sweep
from commonpool.store import Store
from pages_support import app, no_exceptions, nodes, small_run


def test_two_runs_side_by_side_with_overlaid_charts(store: Store) -> None:
    with_facilitator = small_run(store, simulation_id="with-facilitator")
    control = small_run(store, simulation_id="control", facilitator=False)
    at = app("pages/compare.py", {"runs": "with-facilitator"})
    at.multiselect(key="compare_runs").set_value([with_facilitator, control]).run()
    no_exceptions(at)
    table = next(d.value for d in at.dataframe if "figure" in d.value.columns)
    assert list(table.columns) == ["figure", with_facilitator, control]
    figures = table.set_index("figure")
    expected = metrics.compare(store.connect(), [with_facilitator, control]).set_index("run_id")
    assert figures.at["exchanges", control] == str(expected.at[control, "exchanges"])
    assert figures.at["acceptance_rate", with_facilitator] == f"{expected.at[with_facilitator, 'acceptance_rate']:,.4g}"
    assert len(nodes(at.main, "vega_lite_chart")) == 4
    assert {d.label for d in at.download_button} == {"CSV", "Parquet"}


def test_what_differs_between_the_runs_names_their_series(store: Store) -> None:
    small_run(store, simulation_id="on-seed-11")
    small_run(store, simulation_id="off-seed-12", facilitator=False, seed=12)
    at = app("pages/compare.py")
    at.multiselect(key="compare_runs").set_value(["on-seed-11", "off-seed-12"]).run()
    no_exceptions(at)
    differs = next(d.value for d in at.dataframe if "setting" in d.value.columns).set_index("setting")
    assert list(differs.index) == ["facilitator", "seed"]
    assert differs.at["facilitator", "off-seed-12"] == "facilitator off"
    assert differs.at["seed", "on-seed-11"] == "seed 11"
    charts = [json.loads(c.proto.spec) for c in nodes(at.main, "vega_lite_chart")]
    assert len(charts) == 4
    for spec in charts:
        (colour,) = [e["color"] for e in [spec.get("encoding", {}), *(l.get("encoding", {}) for l in spec.get("layer", []))]
                     if e.get("color", {}).get("field") == "run"]
        assert colour["scale"]["domain"] == ["facilitator on · seed 11", "facilitator off · seed 12"]


def test_figures_read_with_thousands_separators_not_exponents(store: Store) -> None:
    small_run(store, simulation_id="a")
    small_run(store, simulation_id="b", seed=3)
    at = app("pages/compare.py")
    at.multiselect(key="compare_runs").set_value(["a", "b"]).run()
    figures = next(d.value for d in at.dataframe if "figure" in d.value.columns)
    assert not figures[["a", "b"]].apply(lambda c: c.str.contains("e+", regex=False)).any().any()


def test_one_run_picked_asks_for_another(store: Store) -> None:
    first = small_run(store, simulation_id="first")
    small_run(store, simulation_id="second")
    at = app("pages/compare.py")
    at.multiselect(key="compare_runs").set_value([first]).run()
    assert "at least two runs" in at.warning[0].value


def test_with_one_run_in_the_store_the_page_explains(store: Store) -> None:
    small_run(store)
    at = app("pages/compare.py")
    no_exceptions(at)
    assert "at least two runs" in at.info[0].value


def test_conditions_of_a_sweep_side_by_side_each_with_its_interval(store: Store) -> None:
    spec = parse_spec({"sampler": "grid", "replications": 2, "seed": 4, "factors": {"facilitator": [True, False]},
                       "base": {"num_participants": 12, "min_exchanges": 60, "max_exchanges": 60}})
    result = run_sweep(spec, store, "local", 1)
    at = app("pages/compare.py", {"mode": "conditions", "sweep": result.sweep_id})
    no_exceptions(at)
    table = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert list(table.columns) == ["metric", "facilitator=true", "facilitator=false"]
    welfare = table.set_index("metric").loc["welfare_change"]
    assert all("[" in cell for cell in welfare)  # mean [ci_low, ci_high]
    titles = [json.dumps(json.loads(c.proto.spec).get("title")) for c in nodes(at.main, "vega_lite_chart")]
    assert any("welfare_change: mean and 95% CI per condition" in t for t in titles)


def test_conditions_of_an_empty_store_say_where_sweeps_come_from(store: Store) -> None:
    at = app("pages/compare.py", {"mode": "conditions"})
    no_exceptions(at)
    assert "No sweeps yet" in at.info[0].value
