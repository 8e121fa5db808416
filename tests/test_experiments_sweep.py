"""Sweeps as a researcher runs them: specs, executors, faults and the stored result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from commonpool.experiments import results
from commonpool.experiments.spec import SpecError, parse_spec
from commonpool.experiments.sweep import plan, resume_sweep, run_sweep
from commonpool.store import Store
from run_tables import run_tables
from test_cli import ROOT, cli

SMALL = {"num_participants": 12, "min_exchanges": 60, "max_exchanges": 60}


def small_spec(**fields: object) -> dict:
    spec = {"sampler": "grid", "replications": 2, "seed": 3, "base": dict(SMALL),
            "factors": {"facilitator": [True, False]}}
    spec.update(fields)
    return spec


def tables_by_point(store: Store, sweep_id: str) -> dict[tuple[int, int], dict[str, list[tuple]]]:
    """Every run of the sweep by (point_id, replication): its tables without run ids."""
    runs = [r for r in store.runs() if r.meta.get("sweep_id") == sweep_id]
    return {(r.meta["point_id"], r.meta["replication"]): run_tables(store, r.run_id) for r in runs}


# --- the spec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"factors": {"colour": [1, 2]}}, "factors.colour: not a factor"),
        ({"factors": {"need_weight": {"low": 1, "high": 2}}}, "factors.need_weight: a grid needs levels"),
        ({"sampler": "lhs"}, "samples: sampler lhs needs a number of samples"),
        ({"sampler": "sobol", "samples": 6, "factors": {"need_weight": {"low": 1, "high": 2}}}, "power of 2"),
        ({"sampler": "annealing"}, "sampler"),
        ({"replications": 0}, "replications"),
        ({"base": {**SMALL, "seed": 4}}, "base.seed: a sweep sets each run's seed itself"),
        ({"base": {**SMALL, "num_participants": 1}}, "base: num_participants"),
        ({"workers": 3}, "workers"),
        ({"factors": {"need_weight": {"low": 1, "high": 2, "step": -1}}}, "factors.need_weight"),
    ],
)
def test_a_bad_spec_is_refused_naming_its_key(change: dict, named: str) -> None:
    with pytest.raises(SpecError, match=named.replace("(", r"\(")):
        spec = parse_spec(small_spec(**change))
        plan(spec, "s")


def test_a_factor_value_no_run_accepts_is_refused_naming_the_point() -> None:
    spec = parse_spec(small_spec(factors={"max_turns": [6, 1]}))
    with pytest.raises(SpecError, match=r"point 1 \(max_turns=1\): max_turns"):
        plan(spec, "s")


def test_a_sweep_id_too_long_for_its_run_ids_is_refused() -> None:
    with pytest.raises(SpecError, match=r"sweep id: .* makes run ids like '.*-much-longer-p1-r1', over 64 characters"):
        plan(parse_spec(small_spec()), "x" * 50 + "-much-longer")
    assert len(plan(parse_spec(small_spec()), "x" * 50)) == 4


def test_replications_share_their_seed_across_points_and_differ_between_each_other() -> None:
    runs = plan(parse_spec(small_spec(replications=3, factors={"max_turns": [2, 4, 6]})), "s")
    tasks = list(runs.tasks())
    seeds = {(t.point_id, t.replication): t.config["seed"] for t in tasks}
    assert len(runs.points) == 3 and len(tasks) == 9 and len({t.run_id for t in tasks}) == 9
    for r in range(3):
        assert len({seeds[(p, r)] for p in range(3)}) == 1
    assert len({seeds[(0, r)] for r in range(3)}) == 3
    again = plan(parse_spec(small_spec(replications=3, factors={"max_turns": [2, 4, 6]})), "s")
    assert list(again.tasks()) == tasks


def test_the_cli_refuses_a_bad_spec_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('sampler = "grid"\n[factors]\nneed_weight = { low = 1, high = 3 }\n')
    store = tmp_path / "store"
    for args in (
        ("sweep", "run", str(spec)),
        ("sweep", "run", "--vary", "max_turns"),
        ("sweep", "run", "--vary", "max_turns=2:x"),
        ("sweep", "run", "--vary", "colour=red,blue"),
        ("sweep", "run", "--vary", "max_turns=2,4", "--workers", "0"),
        ("sweep", "run", "--vary", "max_turns=2,4", "--executor", "cluster"),
        ("sweep", "run", "--vary", "max_turns=2,4", "--seed", "3"),
        ("sweep", "run", str(tmp_path / "missing.toml")),
    ):
        done = cli(*args, store=store)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("commonpool: error: "), done.stderr
    assert not store.exists()


def test_a_sample_spec_plans_without_error() -> None:
    from commonpool.experiments.spec import load_spec

    for name, runs in (("facilitator-effect.toml", 40), ("sobol-drivers.toml", 896)):
        assert len(plan(parse_spec(load_spec(ROOT / "data" / "samples" / name)), "s")) == runs


# --- executors: the same runs wherever they run ------------------------------------------------


def test_one_worker_two_workers_and_ray_store_identical_runs(tmp_path: Path) -> None:
    spec = parse_spec(small_spec(factors={"facilitator": [True, False], "max_turns": [2, 6]}))
    found = {}
    for label, executor, workers in (("one", "local", 1), ("two", "local", 2), ("ray", "ray", 2)):
        store = Store(tmp_path / label)
        result = run_sweep(spec, store, executor=executor, workers=workers, sweep_id=f"s-{label}")
        assert result.status == "completed" and result.done == 8, result
        found[label] = tables_by_point(store, f"s-{label}")
    assert len(found["one"]) == 8
    assert sum(len(rows) for rows in found["one"][(0, 0)].values()) > 100
    assert found["one"] == found["two"] == found["ray"]


def test_a_sweep_runs_on_a_ray_cluster_started_with_ray_start(tmp_path: Path) -> None:
    """`ray start --head` and a driver connecting to it by address, in a network
    namespace of their own that has only a loopback interface: Ray then advertises
    127.0.0.1, so no traffic leaves the machine."""
    ray = Path(sys.executable).parent / "ray"
    session = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 characters
    script = f"""
set -e
ip link set lo up
export RAY_AUTH_MODE=disabled
trap '"{ray}" stop --force >/dev/null 2>&1' EXIT
"{ray}" start --head --temp-dir="{session}" --port=6391 --num-cpus=2 --include-dashboard=false --disable-usage-stats >/dev/null 2>&1
"{sys.executable}" -m commonpool --store "{tmp_path / 'store'}" sweep run --vary facilitator=true,false \
  --replications 2 --num-participants 12 --min-exchanges 40 --max-exchanges 40 --sweep-seed 9 \
  --executor ray --ray-address 127.0.0.1:6391 --sweep-id cluster --no-progress
"""
    done = subprocess.run(["unshare", "--net", "bash", "-c", script], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    shutil.rmtree(session, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep cluster: completed, 4 of 4 runs done" in done.stdout
    store = Store(tmp_path / "store")
    assert store.sweep("cluster").status == "completed"
    assert sorted((r.meta["point_id"], r.meta["replication"]) for r in store.runs()) == [(0, 0), (0, 1), (1, 0), (1, 1)]


# --- faults ----------------------------------------------------------------------------------

# Runs of about a second each, so a test can act while one is in progress.
SLOW = ("--num-participants", "40", "--min-exchanges", "15000", "--max-exchanges", "15000")


def _running_runs(store: Path) -> list[str]:
    """Runs whose folder exists but that have not completed."""
    return [r.run_id for r in Store(store).runs() if r.status == "running"] if (store / "runs").exists() else []


def _start_sweep(store: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "COMMONPOOL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "commonpool", "sweep", "run", *args, "--no-progress"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _sweep_json(store: Path, sweep_id: str) -> dict:
    try:
        return json.loads((store / "sweeps" / sweep_id / "sweep.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _wait(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_killed_sweep_resumes_to_the_same_runs_as_one_never_stopped(tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = ("--vary", "facilitator=true,false", "--replications", "3", "--sweep-seed", "4", "--workers", "1", *SLOW)
    proc = _start_sweep(killed, *args, "--sweep-id", "k")
    _wait(lambda: _sweep_json(killed, "k").get("runs_done", 0) >= 2)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait(lambda: not any(_alive(w) for w in workers), timeout=30)  # workers stop with their driver
    store = Store(killed)
    assert store.sweep("k").status == "interrupted"
    assert 2 <= sum(r.status == "completed" for r in store.runs()) < 6

    done = cli("sweep", "resume", "k", store=killed)
    assert done.returncode == 0, done.stderr
    assert "sweep k: completed, 6 of 6 runs done, 0 failed" in done.stdout
    assert store.sweep("k").status == "completed" and len(store.sweep("k").meta["resumed_at"]) == 1

    assert cli("sweep", "run", *args, "--sweep-id", "k", "--no-progress", store=whole).returncode == 0
    assert tables_by_point(store, "k") == tables_by_point(Store(whole), "k")


def test_a_worker_that_dies_fails_only_its_run_which_is_tried_once_more(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = _start_sweep(store, "--vary", "facilitator=true,false", "--replications", "2", "--workers", "1",
                        "--sweep-id", "w", *SLOW)
    _wait(lambda: _running_runs(store))
    (worker,) = _children(proc.pid)
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "sweep w: completed, 4 of 4 runs done, 0 failed" in out
    assert {r.status for r in Store(store).runs()} == {"completed"}


def test_a_run_whose_worker_keeps_dying_is_recorded_as_failed_with_the_reason(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = _start_sweep(store, "--replications", "1", "--workers", "1", "--sweep-id", "d", *SLOW)
    killed: set[int] = set()
    while proc.poll() is None and len(killed) < 2:
        if _running_runs(store):
            for pid in set(_children(proc.pid)) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    meta = _sweep_json(store, "d")
    assert meta["status"] == "failed" and meta["runs_failed"] == 1 and meta["runs_done"] == 0
    assert "worker process died" in meta["failures"]["d-p0-r0"]
    assert "failed d-p0-r0: its worker process died" in out


def test_ctrl_c_stops_the_sweep_cleanly_and_resume_finishes_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = _start_sweep(store, "--vary", "facilitator=true,false", "--replications", "2", "--workers", "2",
                        "--sweep-id", "c", *SLOW)
    _wait(lambda: _running_runs(store))
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    s = Store(store)
    assert s.sweep("c").status == "cancelled"
    assert "cancelled" in {r.status for r in s.runs()}
    assert not _children(proc.pid)
    assert resume_sweep(s, "c").status == "completed"
    assert sorted(r.status for r in s.runs()) == ["completed"] * 4


# --- the stored result -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    store = Store(tmp_path_factory.mktemp("sweep") / "store")
    spec = parse_spec(small_spec(replications=4))
    run_sweep(spec, store, workers=2, sweep_id="done")
    return store, "done"


def test_each_run_of_a_sweep_is_an_ordinary_run_that_knows_its_point(finished: tuple[Store, str]) -> None:
    store, sweep_id = finished
    con = store.connect()
    rows = con.execute("SELECT point_id, replication, point, status FROM runs WHERE sweep_id = ? ORDER BY ALL",
                       [sweep_id]).fetchall()
    assert [(p, r) for p, r, _, _ in rows] == [(p, r) for p in range(2) for r in range(4)]
    assert {json.loads(point)["facilitator"] for _, _, point, _ in rows} == {True, False}
    assert con.execute("SELECT status, runs_done, runs_planned FROM sweeps WHERE sweep_id = ?",
                       [sweep_id]).fetchall() == [("completed", 8, 8)]
    assert con.execute("SELECT count(DISTINCT run_id) FROM run_metrics").fetchone()[0] == 8
    # Its runs were packed into one file per table when it ended, and read the same from there.
    assert {r.meta["manifest"]["pack"] for r in store.runs()} == {f"{sweep_id}-0000"}
    assert con.execute("SELECT count(DISTINCT run_id) FROM exchanges").fetchone()[0] == 8


def test_show_reports_each_point_with_n_replications_and_the_paired_difference(finished: tuple[Store, str]) -> None:
    store, sweep_id = finished
    done = cli("sweep", "show", sweep_id, "--json", "--metric", "welfare_change", store=store.root, check=True)
    report = json.loads(done.stdout)
    assert [(row["facilitator"], row["n"]) for row in report["summary"]] == [(True, 4), (False, 4)]
    (paired,) = report["paired"]["facilitator"]
    data = results.load(store, sweep_id)
    by = data.outcomes[data.outcomes.metric == "welfare_change"].pivot(index="replication", columns="facilitator",
                                                                       values="value")
    assert paired["mean_diff"] == pytest.approx((by[False] - by[True]).mean())
    assert paired["n"] == 4


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_writes_the_outcomes_and_summary_a_spreadsheet_opens(finished: tuple[Store, str], tmp_path: Path,
                                                                     fmt: str) -> None:
    store, sweep_id = finished
    cli("sweep", "export", sweep_id, "--format", fmt, "--dest", str(tmp_path / "out"), store=store.root, check=True)
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt]
    outcomes = read(tmp_path / "out" / f"outcomes.{fmt}")
    metrics_per_run = outcomes.groupby("run_id")["metric"].count()
    assert len(metrics_per_run) == 8 and metrics_per_run.min() > 10
    assert {"point_id", "replication", "facilitator", "metric", "value"} <= set(outcomes.columns)
    summary = read(tmp_path / "out" / f"summary.{fmt}")
    # n counts the runs that have the metric (one undefined for a run, e.g. no trades left to gain from, is left out).
    have = outcomes.groupby(["point_id", "metric"])["run_id"].nunique()
    assert [int(have[(row.point_id, row.metric)]) for row in summary.itertuples()] == list(summary["n"])
    assert set(summary.loc[summary["metric"] == "welfare_change", "n"]) == {4}


def test_a_sobol_sweep_reports_first_order_and_total_indices(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = parse_spec(small_spec(sampler="sobol", samples=4, replications=1,
                                 factors={"max_turns": {"low": 2, "high": 8}, "need_weight": {"low": 0.5, "high": 4}}))
    assert run_sweep(spec, store, workers=2, sweep_id="sob").done == 16
    indices = results.sensitivity(results.load(store, "sob"), "welfare_change")
    assert list(indices["factor"]) == ["max_turns", "need_weight"]
    assert {"S1", "S1_conf", "ST", "ST_conf"} <= set(indices.columns)
    assert indices["ST"].notna().all()


def test_llm_runs_of_a_sweep_share_one_cache_one_budget_and_the_concurrency(fake_llm, tmp_path: Path) -> None:
    base = {**SMALL, "num_participants": 6, "min_exchanges": 6, "max_exchanges": 6, "model": "openai/fake",
            "api_base": fake_llm.base_url, "llm_max_retries": 1, "llm_timeout_s": 5, "concurrency": 4,
            "cost_per_1k_prompt_tokens": 0.001, "cost_per_1k_completion_tokens": 0.002}
    store = Store(tmp_path / "store")
    first = run_sweep(parse_spec(small_spec(base=base)), store, workers=2, sweep_id="a")
    assert first.status == "completed" and first.done == 4
    runs = [r for r in store.runs() if r.meta["sweep_id"] == "a"]
    assert {r.meta["config"]["concurrency"] for r in runs} == {2}  # 2 workers x 2 in flight = the sweep's 4
    calls, cost = fake_llm.count, sum(r.meta["cost_usd"] for r in runs)
    assert calls > 0 and cost > 0

    again = run_sweep(parse_spec(small_spec(base=base)), store, workers=2, sweep_id="b")
    assert again.status == "completed" and fake_llm.count == calls  # every answer from the shared cache

    poor = Store(tmp_path / "poor")  # its own cache, so calls cost again
    budget = cost / 3
    limited = run_sweep(parse_spec(small_spec(base={**base, "budget_usd": budget})), poor, workers=2, sweep_id="c")
    spent = sum(float(r.meta.get("cost_usd") or 0) for r in poor.runs())
    assert limited.status == "failed" and limited.done < 4
    assert 0 < spent <= budget + 1e-12


def test_a_run_a_machine_crash_left_damaged_is_run_again_not_failed(tmp_path: Path) -> None:
    # Sweep workers write without fsync, so a power cut can leave a run's files short: its task runs it again.
    from commonpool.experiments.task import run_task

    task = plan(parse_spec(small_spec(replications=1)), "crash").task(0)
    assert run_task(task, tmp_path).status == "completed"
    store = Store(tmp_path)
    before = run_tables(store, task.run_id)
    part = next((tmp_path / "runs" / task.run_id / "exchanges").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    assert store.run(task.run_id).status == "damaged"
    again = run_task(task, tmp_path)
    assert again.status == "completed" and store.run(task.run_id).status == "completed"
    assert run_tables(store, task.run_id) == before


def test_every_run_of_a_sweep_ends_in_a_pack_even_a_lone_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    assert run_sweep(parse_spec(small_spec(replications=1, factors={})), store, workers=1, sweep_id="one").done == 1
    (run,) = store.runs()
    assert run.meta["manifest"]["pack"] == "one-0000"


def test_a_process_that_turns_sync_off_writes_without_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from commonpool.store import durable

    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    try:
        durable.set_sync(False)
        durable.write_json_atomic(tmp_path / "a.json", {"x": 1})
        durable.fsync_file(tmp_path / "a.json")
        durable.fsync_dir(tmp_path)
        assert calls == []
    finally:
        durable.set_sync(True)
    durable.write_json_atomic(tmp_path / "b.json", {"x": 2})
    assert len(calls) == 2  # the file, then its folder
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
