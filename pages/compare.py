"""Compare runs: the same figures for two or more runs, side by side and overlaid;
or whole conditions (points) of a sweep, each the mean of its replications with a confidence interval."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from commonpool import charts, metrics
from commonpool.differences import series_labels, what_differs
from pages._shared import data_version, figure_text, metric, pick_sweep, plain, run_label, show_table, store

MODES = ("Runs", "Conditions of a sweep")
HEADLINE_METRICS = ("welfare_change", "acceptance_rate", "need_fulfilment_final", "gini_utility_final")

st.title("Compare runs")
st.caption("E.g. facilitator on vs off, different personality mixes, or the same config with different seeds; "
           "or the conditions of a sweep, each over all its replications.")

wanted_mode = MODES[1] if st.query_params.get("mode") == "conditions" else MODES[0]
mode = st.segmented_control("Compare", MODES, default=wanted_mode, required=True, key="compare_mode")
st.query_params["mode"] = "conditions" if mode == MODES[1] else "runs"


def condition_label(point: dict[str, Any]) -> str:
    """A point of a sweep by its factor values, e.g. `facilitator=true, max_turns=4`."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    return ", ".join(f"{k}={value(v)}" for k, v in point.items()) or "the base"


def interval_text(row: pd.Series) -> str:
    """mean [ci_low, ci_high]; a condition of one run has no interval."""
    if row["n"] == 0 or pd.isna(row["mean"]):
        return "–"
    if pd.isna(row["ci_low"]) or math.isinf(row["ci_low"]):
        return f"{row['mean']:,.4g} (n={int(row['n'])})"
    return f"{row['mean']:,.4g} [{row['ci_low']:,.4g}, {row['ci_high']:,.4g}]"


def compare_conditions() -> None:
    # Imported here: the analysis brings SciPy and SALib, which comparing runs does not need.
    from commonpool.experiments import results

    sweeps = store().sweeps()
    if not sweeps:
        st.info("No sweeps yet: design and launch one on the Sweeps page, or run `commonpool sweep run SPEC.toml`.")
        st.stop()
    sweep_id = pick_sweep(sweeps, key="compare_sweep").sweep_id
    data = results.load(store(), sweep_id)
    if data.outcomes.empty:
        st.info("This sweep has no completed runs yet.")
        st.stop()
    present = sorted(data.outcomes["point_id"].unique().tolist())
    labels = {p: condition_label(data.points[p]) for p in present}
    if len(set(labels.values())) < len(labels):
        labels = {p: f"#{p} {label}" for p, label in labels.items()}
    chosen = st.multiselect("Conditions", present, default=present[:2], key="compare_points",
                            format_func=lambda p: labels[p])
    if len(chosen) < 2:
        st.warning("Pick at least two conditions.")
        st.stop()
    summary = results.summary(data)
    rows = summary[summary["point_id"].isin(chosen)].assign(condition=lambda f: f["point_id"].map(labels))
    st.subheader("Mean and 95% confidence interval per condition")
    side_by_side = rows.assign(cell=rows.apply(interval_text, axis=1)).pivot(
        index="metric", columns="condition", values="cell")
    side_by_side = side_by_side[[labels[p] for p in chosen]].reset_index()
    side_by_side.columns.name = None
    show_table(side_by_side, f"{sweep_id}-conditions", "dl_compare_conditions")
    with st.expander("The same, as numbers"):
        show_table(rows.drop(columns=["condition"]), f"{sweep_id}-conditions-summary", "dl_compare_conditions_long")
    names = sorted(rows["metric"].unique())
    default = next((m for m in HEADLINE_METRICS if m in names), names[0])
    chosen_metric = st.selectbox("Metric", names, index=names.index(default), key="compare_metric")
    order = {labels[p]: i for i, p in enumerate(chosen)}
    st.altair_chart(charts.conditions_chart(rows.sort_values("condition", key=lambda c: c.map(order)), chosen_metric),
                    width="stretch")
    st.caption(plain(f"Each condition pools its {data.spec.replications} replications; replication r of every "
                     "condition runs with the same seed (the Sweeps page shows paired differences)."))


if mode == MODES[1]:
    compare_conditions()
    st.stop()

runs = store().runs()
by_id = {r.run_id: r for r in runs}
if len(runs) < 2:
    st.info("Comparing needs at least two runs; start more on the New simulation page.")
    st.stop()

wanted = [r for r in st.query_params.get_all("runs") if r in by_id]
chosen = st.multiselect(
    "Runs", list(by_id), default=wanted or list(by_id)[:2], key="compare_runs",
    format_func=lambda run_id: run_label(by_id[run_id]),
)
st.query_params["runs"] = chosen
if len(chosen) < 2:
    st.warning("Pick at least two runs.")
    st.stop()

con = store().connect()


configs = {run_id: by_id[run_id].meta.get("config") or {} for run_id in chosen}
labels = series_labels(configs)
differs = what_differs(configs)
st.subheader("What differs")
if differs:
    settings = pd.DataFrame([{"setting": name, **values} for name, values in differs.items()])
    st.dataframe(settings, hide_index=True)
else:
    st.caption("These runs share every setting shown here; their series are named by run id.")


def per_run(name: str, **kwargs: Any) -> pd.DataFrame:
    """One metric for every chosen run, stacked with run_id and run (what sets it apart) columns."""
    frames = [
        metric(con, name, run_id, data_version(by_id[run_id]), **kwargs).assign(run_id=run_id, run=labels[run_id])
        for run_id in chosen
    ]
    return pd.concat(frames, ignore_index=True)


figures = metrics.compare(con, chosen)
st.subheader("Figures")
side_by_side = figures.set_index("run_id").T.reset_index(names="figure")
# Figures as rows and runs as columns: one run's numbers read down a column.
for run_id in chosen:
    side_by_side[run_id] = side_by_side[run_id].map(figure_text)
show_table(side_by_side, "compare-runs", "dl_compare")

left, right = st.columns(2)
left.altair_chart(charts.compare_activity_chart(per_run("activity", windows=20)), width="stretch")
right.altair_chart(charts.compare_spread_chart(per_run("price_dispersion", windows=10)), width="stretch")
left, right = st.columns(2)
left.altair_chart(charts.compare_lorenz_chart(per_run("lorenz", quantity="utility")), width="stretch")
by_personality = per_run("by_personality")
right.altair_chart(charts.compare_by_personality_chart(by_personality), width="stretch")
with st.expander("Outcomes by personality, every run"):
    show_table(by_personality, "compare-by-personality", "dl_compare_personality")
