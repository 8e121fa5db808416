"""Running: live progress of a run, wherever it was started (here or the CLI), with cancel."""

from __future__ import annotations

import streamlit as st

from commonpool.llm.limit import slowed
from commonpool.runner import RunHandle
from commonpool.store import RunInfo, RunNotFoundError
from pages._shared import pick_run, plain, run_name, runner, store

POLL_SECONDS = 1.0

st.title("Running")
st.caption(
    "Runs continue in the background: reload or leave this page at any time. "
    "Runs started from the command line show up here too."
)


def stored(run_id: str) -> RunInfo | None:
    try:
        return store().run(run_id)
    except RunNotFoundError:
        return None


def show_progress(handle: RunHandle | None, info: RunInfo | None) -> bool:
    """Draw the run's progress; True while it is still going."""
    meta = info.meta if info else {}
    if handle is not None and handle.progress is not None:
        p = handle.progress
        done, target, accepted, rounds, llm = p.exchanges_done, p.exchanges_target, p.accepted, p.rounds, p.llm
    else:
        # A run started elsewhere reports through run.json, updated at each flush.
        done, target = int(meta.get("exchanges_recorded") or 0), int(meta.get("exchanges_target") or 0)
        accepted, rounds, llm = int(meta.get("accepted") or 0), None, meta
    status = handle.status if handle is not None else (info.status if info else "starting")
    if handle is not None and handle.status == "running" and handle.cancel_requested:
        status = "cancelling"
    st.progress(min(done / target, 1.0) if target else 0.0, text=f"{status}: {done:,} of {target:,} exchanges")
    cols = st.columns(5)
    cols[0].metric("Exchanges done", f"{done:,}")
    cols[1].metric("Accepted", f"{accepted:,}")
    cols[2].metric("Acceptance rate", f"{accepted / done:.1%}" if done else "–")
    cols[3].metric("Rounds", f"{rounds:,}" if rounds is not None else "–")
    cols[4].metric("Status", status)
    if llm.get("llm_calls"):
        cols = st.columns(4)
        cols[0].metric("LLM calls", f"{int(llm['llm_calls']):,}")
        cols[1].metric("Prompt tokens", f"{int(llm.get('prompt_tokens') or 0):,}")
        cols[2].metric("Completion tokens", f"{int(llm.get('completion_tokens') or 0):,}")
        cols[3].metric("Cost at known prices", f"${float(llm.get('cost_usd') or 0):.4f}",
                       help="Calls to a model with no known price (a local server, say) add nothing here; set its "
                            "price per 1k tokens on New simulation (or --price-per-1k-prompt/-completion) to count them.")
    if note := slowed(llm):  # a run started here: its progress carries the adaptive limit (llm/limit.py)
        st.metric("Requests in flight", note, help=(
            f"Timeouts or 429s from the server lowered the requests in flight {int(llm['limit_cuts'])} time(s), "
            f"halving them each time; every window of clean calls adds one back, up to {int(llm['concurrency'])} "
            "(the run's concurrency). A server with fewer slots than that answers more calls this way."))
    if handle is not None and handle.error:
        st.error(plain(handle.error))
    elif info is not None and info.meta.get("error"):
        st.error(plain(info.meta["error"]))
    if handle is not None:
        return handle.active
    return info is None or info.status == "running"


def watch(run_id: str) -> None:
    handle = runner().get(run_id)
    info = stored(run_id)
    going = show_progress(handle, info)
    if going and handle is not None:
        st.button("Cancel run", key="cancel", on_click=handle.cancel, disabled=handle.cancel_requested,
                  help="Stops before the next round; what was recorded so far is kept, marked cancelled.")
    elif going:
        st.caption("Started outside this dashboard (e.g. the CLI): stop it where it runs (Ctrl-C).")
    else:
        st.page_link("pages/explore.py", label="Explore this run", icon=":material/search:", query_params={"run": run_id})


# Whether this process's runs are going is read before the store is listed, so
# a run that ends in between is drawn as going and the next poll redraws the
# page, rather than the list below still calling a finished run "running".
going_here = {h.run_id: h.active for h in runner().handles() if h.store.root == store().root}
in_process = list(going_here)
runs = store().runs()
# Runs still going first (here or elsewhere), then the most recent others.
active = [r for r in runs if r.status == "running"]
others = [r for r in runs if r.status != "running"]
listed = active + others[:20]
# A run just started here may not have written run.json yet.
known = {r.run_id for r in listed}
pending = [run_id for run_id in in_process if run_id not in known]

if not listed and not pending:
    st.info("No runs yet: start one on the New simulation page, or from the CLI (`python -m commonpool run`).")
    st.stop()

wanted = st.query_params.get("run")
if wanted in pending:
    run_id = wanted
    st.text(f"Run {run_id}")
else:
    # Named by what does not change: the run's status and counts are the live ones below, and a
    # label listed before the run ended would go on saying "running · 0/26" beside "completed".
    chosen = pick_run(listed, label="Run", describe=run_name)
    run_id = chosen.run_id if chosen else pending[0]

if active:
    st.caption(f"{len(active)} run(s) going now.")


@st.fragment(run_every=POLL_SECONDS)
def live() -> None:
    handle = runner().get(run_id)
    info = stored(run_id)
    was_going = st.session_state.get("going")
    watch(run_id)
    going = handle.active if handle is not None else (info is None or info.status == "running")
    st.session_state["going"] = going
    # Once the run ends, rerun the whole page so it stops polling and lists the run as finished.
    if was_going and not going:
        st.rerun()


listed_info = next((r for r in listed if r.run_id == run_id), None)
still_going = going_here[run_id] if run_id in going_here else (listed_info is None or listed_info.status == "running")
st.session_state["going"] = still_going
if still_going:
    live()
else:
    watch(run_id)
