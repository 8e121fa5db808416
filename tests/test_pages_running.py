"""The Running page: live progress and cancel for runs started here, and runs from the CLI too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from commonpool.store import Store
from pages_support import app, no_exceptions, wait_until

ROOT = Path(__file__).resolve().parents[1]


def status(at) -> str | None:  # noqa: ANN001
    shown = [m.value for m in at.metric if m.label == "Status"]
    return shown[0] if shown else None


def test_with_no_runs_the_page_says_how_to_start_one(store: Store) -> None:
    at = app("pages/running.py")
    no_exceptions(at)
    assert "No runs yet" in at.info[0].value


def test_a_run_started_from_the_cli_shows_up_with_its_counts(store: Store) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "commonpool", "run", "--store", str(store.root), "--num-participants", "10",
         "--min-exchanges", "120", "--max-exchanges", "120", "--simulation-id", "from-cli", "--seed", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    at = app("pages/running.py", {"run": "from-cli"})
    no_exceptions(at)
    assert at.selectbox(key="run").value == "from-cli"
    assert status(at) == "completed"
    assert [m.value for m in at.metric if m.label == "Exchanges done"] == ["120"]
    assert at.get("page_link")[0].proto.label == "Explore this run"


def test_the_run_picker_names_a_run_without_counts_that_would_go_stale(store: Store) -> None:
    from pages_support import small_run

    small_run(store, simulation_id="finished")
    at = app("pages/running.py", {"run": "finished"})
    picker = at.selectbox(key="run")
    label = picker.format_func(picker.value)
    # Status and counts appear once, live, under the picker; the label keeps what never changes.
    assert label == "finished · 240 exchanges · facilitator rules"
    assert [m.value for m in at.metric if m.label == "Exchanges done"] == ["240"]


def test_the_dashboard_does_not_watch_the_store_for_changes() -> None:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    # Streamlit's watcher is recursive from the app's folder, which holds data/ by default.
    assert config["server"]["fileWatcherType"] == "none"


def start_long_run() -> AppTest:
    """Launch a run far too long to finish during a test."""
    at = app()
    at.number_input(key="num_participants").set_value(200)
    at.number_input(key="min_exchanges").set_value(50_000_000)
    at.number_input(key="max_exchanges").set_value(50_000_000)
    at.run()
    at.button(key="run").click().run()
    return at


def test_a_long_run_shows_progress_and_can_be_cancelled(store: Store) -> None:
    at = start_long_run()
    no_exceptions(at)
    # Cancel once progress shows exchanges done (a cancel before the first round ends with none).
    wait_until(at, lambda a: status(a) == "running" and any(b.key == "cancel" for b in a.button)
               and bool(a.get("progress")) and not a.get("progress")[0].proto.text.startswith("running: 0 of"))
    at.button(key="cancel").click().run()
    wait_until(at, lambda a: status(a) == "cancelled")
    (info,) = store.runs()
    assert info.status == "cancelled"
    assert 0 < info.meta["exchanges_recorded"] < 50_000_000


def test_the_run_goes_on_when_the_tab_reloads(store: Store) -> None:
    at = start_long_run()
    wait_until(at, lambda a: status(a) == "running")
    run_id = at.selectbox(key="run").value if at.selectbox else at.query_params["run"]
    # A reload is a new session: new AppTest, same server process (same runner).
    again = app("pages/running.py", {"run": run_id})
    wait_until(again, lambda a: status(a) == "running")
    again.button(key="cancel").click().run()
    wait_until(again, lambda a: status(a) == "cancelled")


def test_a_run_slowed_by_429s_shows_its_lowered_requests_in_flight(store: Store, fake_llm, monkeypatch) -> None:  # noqa: ANN001
    from commonpool import SimulationConfig
    from pages._shared import runner

    fake_llm.configure(fail_times=1)  # every request is refused once with a 429, then answered
    config = SimulationConfig(
        simulation_id="slowed", seed=4, num_participants=16, min_exchanges=16, max_exchanges=16,
        model="openai/fake-flaky_429", facilitator_model=None, api_base=fake_llm.base_url, llm_max_retries=2,
        concurrency=8,
    )
    handle = runner().start(config, store)
    assert handle.wait(120)
    assert handle.status == "completed", handle.error
    at = app("pages/running.py", {"run": "slowed"})
    no_exceptions(at)
    shown = [m for m in at.metric if m.label == "Requests in flight"]
    assert len(shown) == 1, [m.label for m in at.metric]
    limit, ceiling = shown[0].value.split(" ")[0].split("/")
    assert int(ceiling) == 8 and 1 <= int(limit) <= 8
    assert "(slowed: timeouts/429s)" in shown[0].value
