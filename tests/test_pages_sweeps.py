"""The Sweeps page: design an experiment, launch it in the background, read its results; and its form as data."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from commonpool.experiments import form
from commonpool.experiments.spec import SpecError, parse_spec
from commonpool.experiments.sweep import run_sweep
from commonpool.store import Store
from pages_support import app, no_exceptions, nodes, unescaped

SMALL_BASE = {"num_participants": 12, "min_exchanges": 60, "max_exchanges": 60}


def sweeps_page(**state: Any) -> AppTest:
    at = app("pages/sweeps.py")
    for key, value in state.items():
        at.session_state[key] = value
    return at.run() if state else at


def factors_editor(at: AppTest) -> str:
    return next(e.key for e in at.data_editor if e.key and e.key.startswith("sw_factors_"))


def edit_factors(at: AppTest, edited: dict[int, dict[str, Any]] | None = None,
                 added: list[dict[str, Any]] | None = None) -> AppTest:
    at.session_state[factors_editor(at)] = {"edited_rows": edited or {}, "added_rows": added or [], "deleted_rows": []}
    return at.run()


def small_design(at: AppTest, replications: int = 2, exchanges: int = 60, participants: int = 12) -> AppTest:
    at.number_input(key="sw_participants").set_value(participants)
    at.number_input(key="sw_min_exchanges").set_value(exchanges)
    at.number_input(key="sw_max_exchanges").set_value(exchanges)
    at.number_input(key="sw_replications").set_value(replications)
    at.number_input(key="sw_seed").set_value(5)
    at.number_input(key="sw_workers").set_value(1)
    return at.run()


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in nodes(at.main, "vega_lite_chart")]


def chart_titles(at: AppTest) -> list[str]:
    titles = []
    for spec in chart_specs(at):
        title = spec.get("title")
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title or ""))
    return titles


def errors(at: AppTest) -> list[str]:
    return [unescaped(e.value) for e in at.error]


# --- the page ----------------------------------------------------------------------------------------


def test_with_an_empty_store_the_results_say_how_to_start(store: Store) -> None:
    at = sweeps_page(sw_tab="Results")
    no_exceptions(at)
    assert "No sweeps yet" in at.info[0].value
    assert "commonpool sweep run" in at.info[0].value


def test_a_grid_sweep_designed_here_runs_and_shows_means_with_confidence_intervals(store: Store) -> None:
    at = small_design(sweeps_page())
    no_exceptions(at)
    # The default design varies the facilitator: 2 points x 2 replications.
    assert any("2 points × 2 replications = 4 runs" in m.value for m in at.markdown)
    at.button(key="sw_launch").click().run()
    no_exceptions(at)
    [sweep] = _handles(store)
    assert sweep.wait(timeout=300)
    at.run()
    no_exceptions(at)
    info = store.sweep(sweep.sweep_id)
    assert info.status == "completed"
    assert info.meta["runs_done"] == 4
    # The page switched to the results of the sweep it launched.
    assert at.selectbox(key="sw_pick").value == sweep.sweep_id
    assert "completed" in unescaped(next(m.value for m in at.markdown if "sampler" in m.value))
    ci = next(s for s in chart_specs(at) if "95% CI" in json.dumps(s.get("title")))
    assert "welfare_change by facilitator" in json.dumps(ci["title"])
    marks = {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in ci["layer"]}
    assert {"rule", "point"} <= marks  # true/false: error bars of the interval around each mean
    assert any("minus" in t and "paired on seed" in t for t in chart_titles(at))
    # The runs, each a link to its Explore page.
    runs = next(d.value for d in at.dataframe if "explore" in d.value.columns)
    assert len(runs) == 4
    assert runs["explore"].str.startswith("explore?run=").all()
    link = at.page_link[0]
    assert link.proto.page.endswith("explore") or "explore" in link.proto.page
    assert {d.label for d in at.download_button} >= {"CSV", "Parquet"}


def test_a_numeric_factor_draws_its_interval_as_a_band(store: Store) -> None:
    spec = parse_spec({"sampler": "grid", "replications": 2, "seed": 3, "base": SMALL_BASE,
                       "factors": {"max_turns": [2, 4, 6]}})
    result = run_sweep(spec, store, "local", 1)
    at = sweeps_page(sw_tab="Results")
    no_exceptions(at)
    assert at.selectbox(key="sw_pick").value == result.sweep_id
    ci = next(s for s in chart_specs(at) if "95% CI" in json.dumps(s.get("title")))
    marks = {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in ci["layer"]}
    assert {"area", "line"} <= marks


@pytest.mark.parametrize(("row", "expected"), [
    ({"name": "need_weight", "kind": "range", "values": None, "low": 0.5, "high": 4.0},
     "factors.need_weight: a grid needs levels"),
    ({"name": "bogus"}, "factors.bogus: not a factor; allowed: api_base"),
    ({"values": "2:10"}, "factors.facilitator: levels are comma-separated values"),
])
def test_a_bad_factor_is_named_and_nothing_launches(store: Store, row: dict[str, Any], expected: str) -> None:
    at = edit_factors(sweeps_page(), {0: row})
    no_exceptions(at)
    assert any(expected in e for e in errors(at)), errors(at)
    launch = at.button(key="sw_launch")
    assert launch.disabled
    assert expected in unescaped(at.warning[0].value)
    at.run()
    assert not (store.root / "sweeps").exists()
    assert store.sweeps() == []


def test_a_spec_file_loads_into_the_form_and_downloads_back(store: Store) -> None:
    at = sweeps_page()
    text = ('name = "turns"\nsampler = "grid"\nreplications = 3\nseed = 9\n\n[base]\nnum_participants = 14\n'
            'min_exchanges = 50\nmax_exchanges = 50\nneed_weight = 3.0\n\n[factors]\nmax_turns = { low = 2, high = 6, step = 2 }\n')
    at.file_uploader(key="sw_upload").set_value(("turns.toml", text.encode(), "application/toml")).run()
    no_exceptions(at)
    assert at.number_input(key="sw_participants").value == 14
    assert at.number_input(key="sw_replications").value == 3
    assert any("3 points × 3 replications = 9 runs" in m.value for m in at.markdown)
    # need_weight has no widget: it is kept, and said so.
    assert any("need_weight = 3.0" in unescaped(c.value) for c in at.caption)
    download = next(d for d in at.download_button if d.label == "spec.toml")
    assert download.proto.url  # the file is served; its content is the form's document, checked below
    document = tomllib.loads(form.spec_toml(_form_document(at)))
    assert document["factors"] == {"max_turns": {"low": 2, "high": 6, "step": 2}}
    assert document["base"]["need_weight"] == 3.0


def _form_document(at: AppTest) -> dict[str, Any]:
    """The spec document the form shows, rebuilt from its loaded state (what the download is made of)."""
    state = at.session_state
    return {"name": state["sw_name"], "sampler": state["sw_sampler"], "replications": state["sw_replications"],
            "seed": state["sw_seed"],
            "base": {"num_participants": state["sw_participants"], **state["sw_extra_base"]},
            "factors": form.factors_from_table(state["sw_factors_base"])}


def test_cancel_stops_a_running_sweep(store: Store) -> None:
    at = small_design(sweeps_page(), replications=20, exchanges=4000, participants=40)
    at.button(key="sw_launch").click().run()
    no_exceptions(at)
    [handle] = _handles(store)
    cancel = at.button(key=f"cancel_{handle.sweep_id}")
    assert not cancel.disabled
    cancel.click().run()
    assert handle.cancel_requested
    assert handle.wait(timeout=120)
    at.run()
    no_exceptions(at)
    info = store.sweep(handle.sweep_id)
    assert info.status == "cancelled"
    assert info.meta["runs_done"] < 40
    assert "cancelled" in unescaped(next(m.value for m in at.markdown if "sampler" in m.value))


def test_a_sobol_sweep_shows_its_indices(store: Store) -> None:
    spec = parse_spec({"sampler": "sobol", "samples": 4, "seed": 2, "base": SMALL_BASE,
                       "factors": {"need_weight": {"low": 0.5, "high": 4.0}, "max_turns": {"low": 2, "high": 10}}})
    result = run_sweep(spec, store, "local", 2)
    assert result.status == "completed"
    at = sweeps_page(sw_tab="Results")
    no_exceptions(at)
    assert any(t.startswith("Sobol' indices of welfare_change") for t in chart_titles(at))
    indices = next(d.value for d in at.dataframe if "ST_conf" in d.value.columns)
    assert sorted(indices["factor"]) == ["max_turns", "need_weight"]
    # Heatmap of the two factors, their continuous values pooled.
    assert any(t.startswith("Mean welfare_change by") for t in chart_titles(at))


def _handles(store: Store) -> list[Any]:
    from pages._shared import sweep_runner

    return [h for h in sweep_runner().handles() if h.store.root == store.root]


# --- the form as data --------------------------------------------------------------------------------


def test_factor_table_round_trips_levels_and_ranges() -> None:
    factors = {"facilitator": [True, False], "pairing": ["random", "need"],
               "need_weight": {"low": 0.5, "high": 4.0, "distribution": "loguniform"},
               "max_turns": {"low": 2, "high": 10, "step": 2}}
    assert form.factors_from_table(form.factors_table(factors)) == factors


def test_blank_rows_are_ignored_and_a_factor_listed_twice_is_refused() -> None:
    table = form.factors_table({"facilitator": [True, False]})
    blank = pd.DataFrame([{c: None for c in form.FACTOR_COLUMNS}])
    assert form.factors_from_table(pd.concat([table, blank], ignore_index=True)) == {"facilitator": [True, False]}
    with pytest.raises(SpecError, match="factors.facilitator: listed twice"):
        form.factors_from_table(pd.concat([table, table], ignore_index=True))


def test_spec_toml_reads_back_as_the_same_spec() -> None:
    document = {"name": "t", "sampler": "sobol", "samples": 8, "replications": 2, "seed": 1,
                "base": {"num_participants": 20, "personalities": {"cautious": 1.0, "odd \"one\"": 2}},
                "factors": {"personalities.generous": {"low": 0.0, "high": 2.0}, "facilitator": [True, False]}}
    assert tomllib.loads(form.spec_toml(document)) == document


def test_factor_names_offer_the_mix_of_the_base() -> None:
    names = form.factor_names({})
    assert names[:3] == ["exchanges", "num_participants", "max_turns"]
    assert "personalities.generous" in names
    assert "seed" not in names and "simulation_id" not in names
