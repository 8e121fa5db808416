"""What every dashboard page shares: the store, the background runner, run pickers,
download buttons and safe display of user text. UI only; the work is in commonpool."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import streamlit as st

from commonpool import metrics
from commonpool.csv_safe import neutralise_frame
from commonpool.runner import Runner
from commonpool.store import RunInfo, Store, SweepInfo

if TYPE_CHECKING:
    from commonpool.experiments.background import SweepRunner

RULES = "rules"

# CommonMark lets a backslash escape any ASCII punctuation, which also defuses
# Streamlit's own :colour[...] and :emoji: directives.
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: object) -> str:
    """text for a Markdown-rendering element (labels, alerts) with every Markdown meaning removed."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


@st.cache_resource
def runner() -> Runner:
    """One registry per server process, so runs outlive the reruns and tab reloads that started them."""
    return Runner()


@st.cache_resource
def sweep_runner() -> SweepRunner:
    """The sweeps this server process started, kept like runner()'s runs."""
    # Imported here: the experiments bring SciPy and SALib, which only the sweep pages need.
    from commonpool.experiments.background import SweepRunner

    return SweepRunner()


def store() -> Store:
    """The store named by COMMONPOOL_STORE (else data/), read afresh so new runs show up."""
    return Store.default()


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def run_label(info: RunInfo) -> str:
    meta = info.meta
    done, target = meta.get("exchanges_recorded", 0), meta.get("exchanges_target")
    facilitator = meta.get("facilitator", "?")
    return f"{info.run_id} · {info.status} · {_count(done)}/{_count(target)} exchanges · facilitator {facilitator}"


def run_name(info: RunInfo) -> str:
    """A run by what does not change while it runs (its status and counts are shown live beside it)."""
    meta = info.meta
    return (f"{info.run_id} · {_count(meta.get('exchanges_target'))} exchanges · "
            f"facilitator {meta.get('facilitator', '?')}")


def figure_text(value: object) -> str:
    """A figure for a table: thousands separated, four significant digits below 10,000, never 2.192e+04."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def sweep_label(info: SweepInfo) -> str:
    meta = info.meta
    return (f"{info.sweep_id} · {info.status} · {meta.get('sampler', '?')} · "
            f"{meta.get('runs_done', 0)}/{meta.get('runs_planned', '?')} runs")


def pick_run(runs: list[RunInfo], label: str = "Run", key: str = "run",
             describe: Callable[[RunInfo], str] = run_label) -> RunInfo | None:
    """A run chosen in a selectbox, kept in the URL (?run=...) so a reload or a link opens the same run."""
    if not runs:
        return None
    ids = [r.run_id for r in runs]
    wanted = st.query_params.get("run")
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(label, ids, index=index, key=key,
                          format_func=lambda run_id: describe(runs[ids.index(run_id)]))
    st.query_params["run"] = chosen
    return runs[ids.index(chosen)]


def pick_sweep(sweeps: list[SweepInfo], key: str) -> SweepInfo:
    """A sweep chosen in a selectbox, kept in the URL (?sweep=...) like pick_run's run."""
    ids = [s.sweep_id for s in sweeps]
    wanted = st.query_params.get("sweep")
    chosen = st.selectbox("Sweep", ids, index=ids.index(wanted) if wanted in ids else 0, key=key,
                          format_func=lambda sweep_id: sweep_label(sweeps[ids.index(sweep_id)]))
    st.query_params["sweep"] = chosen
    return sweeps[ids.index(chosen)]


def data_version(info: RunInfo) -> str:
    """Changes whenever the run's stored rows may have changed, so cached figures stay true."""
    meta = info.meta
    return f"{info.status}:{meta.get('exchanges_recorded')}:{meta.get('finished_at')}"


@st.cache_data(max_entries=256, show_spinner=False)
def metric(_con: duckdb.DuckDBPyConnection, name: str, run_id: str, version: str, **kwargs: Any) -> Any:
    """metrics.<name>(con, run_id, **kwargs), cached per run and data version.

    A finished run never changes, so paging the log or opening a transcript
    does not recompute its figures.
    """
    return getattr(metrics, name)(_con, run_id, **kwargs)


def _csv(frame: pd.DataFrame) -> bytes:
    # Text that starts like a formula (=, +, -, @) stays text when the file is opened in a spreadsheet.
    return neutralise_frame(frame).to_csv(index=False).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def downloads(frame: pd.DataFrame | Callable[[], pd.DataFrame], name: str, key: str) -> None:
    """CSV and Parquet download buttons for a table; a callable is only run when clicked."""
    def lazily(encode: Callable[[pd.DataFrame], bytes]) -> Callable[[], bytes]:
        return lambda: encode(frame() if callable(frame) else frame)

    row = st.container(horizontal=True)
    row.download_button("CSV", lazily(_csv), file_name=f"{name}.csv", mime="text/csv",
                         key=f"{key}_csv", on_click="ignore", icon=":material/download:")
    row.download_button("Parquet", lazily(_parquet), file_name=f"{name}.parquet",
                          mime="application/vnd.apache.parquet", key=f"{key}_parquet", on_click="ignore",
                          icon=":material/download:")


def show_table(frame: pd.DataFrame, name: str, key: str, **kwargs: Any) -> None:
    """A table with its download buttons below it."""
    st.dataframe(frame, hide_index=True, **kwargs)
    downloads(frame, name, key)
