"""Sweeps: design an experiment (factors, sampler, replications), run it in the background, read its results."""

from __future__ import annotations

import importlib.util
import math
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from commonpool import charts
from commonpool.config import SimulationConfig
from commonpool.experiments import form, results
from commonpool.experiments.background import SweepHandle
from commonpool.experiments.executor import default_workers
from commonpool.experiments.spec import SAMPLERS, ExperimentSpec, SpecError, parse_spec
from commonpool.experiments.sweep import plan, sweep_runs
from commonpool.store import SweepInfo
from pages._shared import downloads, pick_sweep, plain, show_table, store, sweep_runner

POLL_SECONDS = 1.0
VIEWS = ("Design and launch", "Results")
EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
# A continuous factor (random, LHS, Sobol samples) has about one value per point:
# above this many values its chart pools them into equal-width bins.
MAX_FACTOR_VALUES = 12
HEADLINE_METRICS = ("welfare_change", "acceptance_rate", "need_fulfilment_final", "gini_utility_final")
RAY_AVAILABLE = importlib.util.find_spec("ray") is not None

SAMPLER_HELP = {
    "grid": "every combination of the factors' levels",
    "random": "samples independent random points",
    "lhs": "samples points of a Latin hypercube",
    "sobol": "samples = base N, a power of 2; N x (factors + 2) points; gives Sobol' indices",
    "morris": "samples = trajectories (at least 2); trajectories x (factors + 1) points; gives Morris mu*/sigma",
}
DEFAULT_DOCUMENT: dict[str, Any] = {
    "name": "facilitator-effect",
    "sampler": "grid",
    "replications": 5,
    "base": {"num_participants": 20, "min_exchanges": 200, "max_exchanges": 200},
    "factors": {"facilitator": [True, False]},
}
# The base settings the form has a widget for; any other [base] key of a loaded spec is kept as it is.
BASE_WIDGETS = {"num_participants": "sw_participants", "min_exchanges": "sw_min_exchanges",
                "max_exchanges": "sw_max_exchanges", "max_turns": "sw_max_turns",
                "facilitator": "sw_facilitator", "pairing": "sw_pairing"}

st.title("Sweeps")
st.caption("An experiment: many runs of the offline engine over a design of factors, replicated with shared "
           "seeds, read back as means with confidence intervals, paired differences and sensitivity indices.")


# --- the design's state -----------------------------------------------------------------------------


def load_document(document: dict[str, Any]) -> None:
    """Put a spec document into the form's widgets (before they are drawn this run)."""
    state = st.session_state
    defaults = SimulationConfig()
    base = dict(document.get("base") or {})
    for field, key in BASE_WIDGETS.items():
        state[key] = base.pop(field, getattr(defaults, field))
    state["sw_extra_base"] = base
    state["sw_name"] = document.get("name") or ""
    state["sw_sampler"] = document.get("sampler", "grid") if document.get("sampler") in SAMPLERS else "grid"
    state["sw_samples"] = document.get("samples")
    state["sw_replications"] = document.get("replications", 1)
    state["sw_seed"] = document.get("seed")
    state["sw_factors_base"] = form.factors_table(dict(document.get("factors") or {}))
    state["sw_factors_version"] = state.get("sw_factors_version", 0) + 1
    # Spec keys the form has no widget for (morris_levels, second_order) travel unchanged.
    state["sw_extra_spec"] = {k: v for k, v in document.items()
                              if k not in ("name", "sampler", "samples", "replications", "seed", "base", "factors")}


if "sw_factors_base" not in st.session_state:
    load_document(DEFAULT_DOCUMENT)

# A sweep launched here that has ended: show its results.
watched = st.session_state.get("sw_watch")
if watched is not None:
    handle = sweep_runner().get(watched)
    if handle is None or not handle.active:
        del st.session_state["sw_watch"]
        st.session_state["sw_tab"] = VIEWS[1]
        st.query_params["sweep"] = watched
        st.session_state.pop("sw_pick", None)


# --- sweeps going -----------------------------------------------------------------------------------


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"


def show_handle(handle: SweepHandle) -> None:
    p = handle.progress
    done, failed, total = (p.done, p.failed, p.total) if p else (0, 0, handle.runs_planned)
    status = "cancelling" if handle.active and handle.cancel_requested else handle.status
    line = f"{handle.sweep_id} · {status}: {done:,} of {total:,} runs done · {failed:,} failed"
    if handle.active and p is not None:
        line += f" · {eta_text(p.eta_s)}"
    left, right = st.columns([5, 1], vertical_alignment="bottom")
    left.progress(min((done + failed) / total, 1.0) if total else 0.0, text=plain(line))
    if handle.active:
        right.button("Cancel sweep", key=f"cancel_{handle.sweep_id}", on_click=handle.cancel,
                     disabled=handle.cancel_requested,
                     help="Queued runs are dropped; running ones stop at their next round and are kept as cancelled.")
    if handle.error:
        st.error(plain(handle.error))


def show_elsewhere(info: SweepInfo) -> None:
    meta = info.meta
    done, planned = int(meta.get("runs_done") or 0), int(meta.get("runs_planned") or 0)
    st.progress(min(done / planned, 1.0) if planned else 0.0,
                text=plain(f"{info.sweep_id} · running elsewhere (e.g. the CLI; stop it there): "
                           f"{done:,} of {planned:,} runs done · {int(meta.get('runs_failed') or 0):,} failed"))


def sweeps_going() -> tuple[list[SweepHandle], list[SweepInfo]]:
    root = store().root
    mine = [h for h in sweep_runner().handles() if h.store.root == root and h.active]
    ids = {h.sweep_id for h in sweep_runner().handles()}
    others = [s for s in store().sweeps() if s.status == "running" and s.sweep_id not in ids]
    return mine, others


def draw_going(mine: list[SweepHandle], others: list[SweepInfo]) -> None:
    if mine or others:
        st.subheader("Sweeps going")
    for handle in mine:
        show_handle(handle)
    for info in others:
        show_elsewhere(info)


@st.fragment(run_every=POLL_SECONDS)
def live() -> None:
    mine, others = sweeps_going()
    draw_going(mine, others)
    watched_now = st.session_state.get("sw_watch")
    going_ids = {h.sweep_id for h in mine} | {s.sweep_id for s in others}
    # Once a sweep ends, redraw the whole page: it stops polling and shows the results.
    if going_ids != st.session_state.get("sw_going_ids") or (watched_now and watched_now not in going_ids):
        st.rerun()


mine, others = sweeps_going()
st.session_state["sw_going_ids"] = {h.sweep_id for h in mine} | {s.sweep_id for s in others}
if mine or others:
    live()

design_tab, results_tab = st.tabs(VIEWS, key="sw_tab", on_change="rerun")


# --- design -----------------------------------------------------------------------------------------


def design() -> None:
    problems: list[str] = []
    st.subheader("Design an experiment")
    with st.expander("Load a spec (TOML), or start from an example"):
        upload = st.file_uploader("Spec file (TOML)", type=["toml"], key="sw_upload",
                                  help="The format of `commonpool sweep run SPEC.toml`; see data/samples/.")
        if upload is not None and st.session_state.get("sw_upload_id") != upload.file_id:
            st.session_state["sw_upload_id"] = upload.file_id
            try:
                load_document(tomllib.loads(upload.getvalue().decode("utf-8")))
                st.session_state.pop("sw_upload_error", None)
                st.rerun()
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                st.session_state["sw_upload_error"] = f"{upload.name}: not valid TOML ({exc})"
        if "sw_upload_error" in st.session_state:
            st.error(plain(st.session_state["sw_upload_error"]))
        examples = sorted(p.name for p in EXAMPLES.glob("*.toml"))
        if examples:
            left, right = st.columns([3, 1], vertical_alignment="bottom")
            example = left.selectbox("Example", examples, key="sw_example")
            if right.button("Load example", key="sw_load_example"):
                load_document(tomllib.loads((EXAMPLES / example).read_text()))
                st.rerun()

    st.markdown("**Every run**")
    cols = st.columns(6)
    base: dict[str, Any] = {}
    base["num_participants"] = cols[0].number_input("Participants", step=1, key="sw_participants")
    base["min_exchanges"] = cols[1].number_input("Min exchanges", step=1, key="sw_min_exchanges")
    base["max_exchanges"] = cols[2].number_input("Max exchanges", step=1, key="sw_max_exchanges")
    base["max_turns"] = cols[3].number_input("Max turns", step=1, key="sw_max_turns",
                                             help="Messages per exchange, the opening proposal included (2-20).")
    base["pairing"] = cols[4].selectbox("Pairing", ["random", "need"], key="sw_pairing")
    base["facilitator"] = cols[5].toggle("Facilitator", key="sw_facilitator")
    extra = st.session_state.get("sw_extra_base") or {}
    if extra:
        st.caption(plain("Also from the loaded spec: " + "; ".join(f"{k} = {v}" for k, v in extra.items())))
    base.update(extra)
    base_slot = st.empty()

    st.markdown("**Factors** (what varies; a factor overrides the setting above)")
    names = form.factor_names(base)
    version = st.session_state["sw_factors_version"]
    table = st.data_editor(
        st.session_state["sw_factors_base"], num_rows="dynamic", key=f"sw_factors_{version}", hide_index=True,
        column_config={
            "name": st.column_config.SelectboxColumn("name", options=names, required=True,
                                                     help="exchanges sets min = max exchanges; "
                                                          "personalities.NAME is one weight of the mix"),
            "kind": st.column_config.SelectboxColumn("kind", options=list(form.KINDS), default="levels",
                                                     help="levels: a list of values; range: low to high"),
            "values": st.column_config.TextColumn("values (levels)", help="comma-separated, e.g. true,false or 2,4,6"),
            "low": st.column_config.NumberColumn("low (range)"),
            "high": st.column_config.NumberColumn("high (range)"),
            "step": st.column_config.NumberColumn("step (range)", help="a grid needs a step for a continuous range"),
            "distribution": st.column_config.SelectboxColumn("distribution", options=list(form.DISTRIBUTIONS),
                                                             help="of a range without a step; not for grid"),
        },
    )
    factors_slot = st.empty()
    try:
        factors = form.factors_from_table(table)
    except SpecError as exc:
        factors = {}
        problems.append(str(exc))

    st.markdown("**Design and execution**")
    cols = st.columns(6)
    sampler = cols[0].selectbox("Sampler", SAMPLERS, key="sw_sampler", help="; ".join(
        f"{k}: {v}" for k, v in SAMPLER_HELP.items()))
    samples = cols[1].number_input("Samples", step=1, key="sw_samples", disabled=sampler == "grid",
                                   placeholder="–" if sampler == "grid" else "required",
                                   help=SAMPLER_HELP[sampler])
    replications = cols[2].number_input("Replications", step=1, key="sw_replications",
                                        help="Runs per point; replication r of every point shares one seed.")
    seed = cols[3].number_input("Sweep seed", step=1, key="sw_seed", placeholder="drawn",
                                help="Every run's seed is drawn from it. Blank: drawn at launch and recorded.")
    if RAY_AVAILABLE:
        executor = cols[4].selectbox("Executor", ["local", "ray"], key="sw_executor",
                                     help="local: worker processes on this machine; ray: a local Ray.")
    else:
        executor = cols[4].selectbox("Executor", ["local"], key="sw_executor", disabled=True,
                                     help="ray is not installed here")
    workers = cols[5].number_input("Workers", min_value=1, max_value=1024, value=default_workers(), step=1,
                                   key="sw_workers", help="Runs at a time (default: one per core).")
    if not RAY_AVAILABLE:
        st.caption("Ray is unavailable: `import ray` fails in this environment, so sweeps run on local worker processes.")
    name = st.text_input("Name (optional; starts the sweep's id)", key="sw_name", max_chars=24)
    design_slot = st.empty()

    document: dict[str, Any] = {**st.session_state.get("sw_extra_spec", {}), "sampler": sampler,
                                "replications": replications, "base": base, "factors": factors}
    if name.strip():
        document["name"] = name.strip()
    if samples is not None and sampler != "grid":
        document["samples"] = samples
    if seed is not None:
        document["seed"] = seed

    spec: ExperimentSpec | None = None
    runs = points = 0
    if not problems:
        try:
            spec = parse_spec(document)
            planned = plan(spec, "check")
            runs, points = len(planned), len(planned.points)
        except SpecError as exc:
            spec = None
            problems.append(str(exc))

    for problem in problems:
        slot = factors_slot if problem.startswith("factors") else base_slot if problem.startswith("base") else design_slot
        slot.error(plain(problem))

    st.divider()
    left, middle, right = st.columns([1, 1, 4], vertical_alignment="center")
    clicked = left.button("Launch sweep", type="primary", key="sw_launch", disabled=spec is None)
    middle.download_button("spec.toml", form.spec_toml(_without_none(document)), file_name="spec.toml",
                           mime="application/toml", on_click="ignore", icon=":material/download:", key="sw_spec_dl")
    if spec is not None:
        right.markdown(f"**{points:,} points × {spec.replications:,} replications = {runs:,} runs**")
    else:
        right.warning(plain(f"Launch is disabled: {problems[0]}"))

    if clicked and spec is not None:
        try:
            handle = sweep_runner().start(spec, store(), executor, int(workers))
        except SpecError as exc:
            st.error(plain(str(exc)))
            return
        st.session_state["sw_watch"] = handle.sweep_id
        st.rerun()


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None}


# --- results ----------------------------------------------------------------------------------------


@st.cache_data(max_entries=32, show_spinner="Reading the sweep's outcomes...")
def load_results(root: str, sweep_id: str, version: str) -> results.SweepData:
    """results.load, cached per sweep and its progress (a finished sweep never changes)."""
    return results.load(store(), sweep_id)


def status_line(info: SweepInfo) -> str:
    meta = info.meta
    text = (f"{info.status} · {meta.get('sampler')} sampler · {meta.get('points')} points × "
            f"{meta.get('replications')} replications · {meta.get('runs_done', 0)} of {meta.get('runs_planned')} "
            f"runs done · {meta.get('runs_failed', 0)} failed · seed {meta.get('seed')}")
    if meta.get("duration_s") is not None:
        text += f" · {float(meta['duration_s']):,.1f} s"
    return text


def show_results() -> None:
    sweeps = store().sweeps()
    if not sweeps:
        st.info("No sweeps yet: design one under Design and launch (the default is a small facilitator on/off "
                "experiment), load a spec from data/samples/, or run `commonpool sweep run SPEC.toml`.")
        return
    info = pick_sweep(sweeps, key="sw_pick")
    chosen = info.sweep_id
    st.markdown(plain(status_line(info)))
    if info.status == "running":
        st.warning("This sweep is still going: the results cover the runs completed so far.")
    if info.meta.get("error"):
        st.error(plain(info.meta["error"]))
    failures = info.meta.get("failures") or {}
    if failures:
        with st.expander(f"Failed runs ({len(failures)})"):
            show_table(pd.DataFrame({"run_id": list(failures), "reason": [str(v) for v in failures.values()]}),
                       f"{chosen}-failures", "dl_sw_failures")

    version = f"{info.status}:{info.meta.get('runs_done')}:{info.meta.get('finished_at')}"
    data = load_results(str(store().root), chosen, version)
    if data.outcomes.empty:
        st.info("No completed runs in this sweep yet.")
        return
    metrics = data.metrics
    default = next((m for m in HEADLINE_METRICS if m in metrics), metrics[0])
    metric = st.selectbox("Metric", metrics, index=metrics.index(default), key="sw_metric")
    summary = results.summary(data)

    if data.factors:
        st.subheader("Metric by factor")
        factor = st.selectbox("Factor", data.factors, key="sw_factor") if len(data.factors) > 1 else data.factors[0]
        by_factor = results.by_factor(data, factor, bins=MAX_FACTOR_VALUES)
        st.altair_chart(charts.metric_by_factor_chart(by_factor, factor, metric), width="stretch")
        if by_factor[by_factor["metric"] == metric]["n"].max() < 2:
            st.caption("One run per value: a confidence interval needs at least two (add replications).")
        with st.expander("Data"):
            show_table(by_factor[by_factor["metric"] == metric], f"{chosen}-{metric}-by-{factor}", "dl_sw_by_factor")

    if len(data.factors) >= 2:
        st.subheader("Two factors")
        left, right = st.columns(2)
        x = left.selectbox("Across", data.factors, index=0, key="sw_heat_x")
        y = right.selectbox("Down", [f for f in data.factors if f != x], index=0, key="sw_heat_y")
        st.altair_chart(charts.factor_heatmap_chart(summary, x, y, metric), width="stretch")

    paired = results.paired_comparisons(data)
    if paired:
        st.subheader("Paired differences")
        st.caption("Replication r of every point runs with the same seed, so two levels of a factor are compared "
                   "run by run: the difference of each pair, its mean and confidence interval, and a sign test "
                   "and Wilcoxon signed-rank test of whether it is zero.")
        shown = st.multiselect("Metrics", metrics, default=list(dict.fromkeys(
            [metric, *(m for m in HEADLINE_METRICS if m in metrics)])), key="sw_paired_metrics")
        for factor, frame in paired.items():
            first, second = data.spec.factors[factor]
            rows = frame[frame["metric"].isin(shown)]
            for chart in charts.paired_differences_charts(rows, factor, first, second):
                st.altair_chart(chart, width="stretch")
            show_table(rows, f"{chosen}-paired-{factor}", f"dl_sw_paired_{factor}")

    if data.spec.sampler in ("sobol", "morris"):
        st.subheader("Sensitivity")
        try:
            indices = results.sensitivity(data, metric)
        except ValueError as exc:
            indices = None
            st.info(plain(f"No indices yet: {exc}"))
        if indices is not None:
            if data.spec.sampler == "sobol":
                if indices["S1"].isna().all():
                    st.info(plain(f"{metric} is the same at every point: its Sobol' indices are undefined."))
                else:
                    st.altair_chart(charts.sobol_indices_chart(indices, metric), width="stretch")
                    st.caption("S1: the share of the metric's variance due to the factor alone; ST: including its "
                               "interactions. Bars are 95% bootstrap intervals.")
            else:
                st.altair_chart(charts.morris_chart(indices, metric), width="stretch")
            show_table(indices, f"{chosen}-{metric}-{data.spec.sampler}", "dl_sw_sensitivity")

    st.subheader("Per point")
    point_rows = summary[summary["metric"] == metric]
    show_table(point_rows, f"{chosen}-{metric}-summary", "dl_sw_summary")
    st.caption("Every metric at every point, and every run's outcomes:")
    left, right = st.columns(2)
    with left:
        st.caption("Summary, all metrics")
        downloads(summary, f"{chosen}-summary", "dl_sw_summary_all")
    with right:
        st.caption("Outcomes, one row per run and metric")
        downloads(data.outcomes, f"{chosen}-outcomes", "dl_sw_outcomes")

    st.subheader("Runs")
    show_runs(chosen, data)


def show_runs(sweep_id: str, data: results.SweepData) -> None:
    runs = sweep_runs(store(), sweep_id)
    if not runs:
        st.info("No runs of this sweep are stored yet.")
        return
    point_of = {i: p for i, p in enumerate(data.points)}
    table = pd.DataFrame([{
        "run_id": r.run_id, "point_id": r.meta.get("point_id"), "replication": r.meta.get("replication"),
        **{f: _cell(point_of.get(r.meta.get("point_id"), {}).get(f)) for f in data.factors},
        "status": r.status, "seed": r.seed, "explore": f"explore?run={r.run_id}",
    } for r in runs]).sort_values(["point_id", "replication"], kind="stable")
    show_table(table, f"{sweep_id}-runs", "dl_sw_runs", column_config={
        "explore": st.column_config.LinkColumn("explore", display_text="open in Explore")})
    ids = table["run_id"].tolist()
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    run_id = left.selectbox("Run", ids, key="sw_run")
    right.page_link("pages/explore.py", label="Explore this run", icon=":material/search:", query_params={"run": run_id})


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 6)
    return value


# The design is always drawn, so its widgets keep their values while the Results tab is open.
with design_tab:
    design()
if results_tab.open:
    with results_tab:
        show_results()
