"""Background runs: a handle reports progress and how the run ended, and can cancel it."""

from __future__ import annotations

from pathlib import Path

from commonpool import SimulationConfig
from commonpool.runner import Runner
from commonpool.store import Store


def test_a_background_run_finishes_and_reports_its_progress(tmp_path: Path) -> None:
    store = Store(tmp_path)
    handle = Runner().start(SimulationConfig(seed=1, min_exchanges=60, max_exchanges=60), store)
    assert handle.run_id.startswith("run-")  # resolved before the thread starts
    assert handle.wait(60)
    assert handle.status == "completed" and handle.error is None
    assert handle.progress is not None and handle.progress.exchanges_done == 60
    assert store.run(handle.run_id).status == "completed"


def test_cancel_stops_a_run_before_its_next_round_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path)
    config = SimulationConfig(seed=1, num_participants=100, min_exchanges=10_000_000, max_exchanges=10_000_000)
    handle = Runner().start(config, store)
    handle.cancel()
    assert handle.wait(60)
    assert handle.status == "cancelled"
    info = store.run(handle.run_id)
    assert info.status == "cancelled" and info.meta["exchanges_recorded"] < 10_000_000


def test_a_run_that_cannot_start_is_reported_as_failed_with_its_reason(tmp_path: Path) -> None:
    store = Store(tmp_path)
    runner = Runner()
    config = SimulationConfig(simulation_id="twice", seed=1, min_exchanges=5, max_exchanges=5)
    assert runner.start(config, store).wait(60)
    again = runner.start(config, store)
    assert again.wait(60)
    assert again.status == "failed"
    assert again.error is not None and again.error.startswith("RunExistsError: run 'twice' already exists")


def test_the_registry_lists_runs_newest_first_and_finds_them_by_id(tmp_path: Path) -> None:
    runner = Runner()
    first = runner.start(SimulationConfig(seed=1, min_exchanges=5, max_exchanges=5), Store(tmp_path))
    second = runner.start(SimulationConfig(seed=2, min_exchanges=5, max_exchanges=5), Store(tmp_path))
    assert [h.run_id for h in runner.handles()] == [second.run_id, first.run_id]
    assert runner.get(first.run_id) is first and runner.get("nope") is None
    assert first.wait(60) and second.wait(60)
