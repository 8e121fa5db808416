"""Compare runs: the same figures for two or more runs, side by side and overlaid."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from commonpool import charts, metrics
from pages._shared import data_version, metric, run_label, show_table, store

st.title("Compare runs")
st.caption("E.g. facilitator on vs off, different personality mixes, or the same config with different seeds.")

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


def per_run(name: str, **kwargs: Any) -> pd.DataFrame:
    """One metric for every chosen run, stacked with a run_id column for overlaid charts."""
    frames = [
        metric(con, name, run_id, data_version(by_id[run_id]), **kwargs).assign(run_id=run_id) for run_id in chosen
    ]
    return pd.concat(frames, ignore_index=True)


figures = metrics.compare(con, chosen)
st.subheader("Figures")
side_by_side = figures.set_index("run_id").T.reset_index(names="figure")
# Figures as rows and runs as columns: one run's numbers read down a column.
for run_id in chosen:
    side_by_side[run_id] = side_by_side[run_id].map(
        lambda v: "–" if v is None or pd.isna(v) else f"{v:,.4g}" if isinstance(v, float) else str(v)
    )
show_table(side_by_side, "compare-runs", "dl_compare")

left, right = st.columns(2)
left.altair_chart(charts.compare_activity_chart(per_run("activity", windows=20)), width="stretch")
right.altair_chart(charts.compare_spread_chart(per_run("price_dispersion", windows=10)), width="stretch")
left, right = st.columns(2)
left.altair_chart(charts.compare_lorenz_chart(per_run("lorenz", quantity="utility")))
by_personality = per_run("by_personality")
right.altair_chart(charts.compare_by_personality_chart(by_personality))
with st.expander("Outcomes by personality, every run"):
    show_table(by_personality, "compare-by-personality", "dl_compare_personality")
