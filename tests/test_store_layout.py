"""The run store's layout: runs of the old layout, views of some runs, sweeps, garbage."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_store_fixtures import row_counts, sample_columns, write_sample_run

from run_tables import table_counts

from commonpool.store import (
    GRACE_SECONDS,
    TABLES,
    RunWriter,
    Store,
    SweepNotFoundError,
    write_json_atomic,
)
from commonpool.store.trash import collect_garbage, put_in_trash


def to_legacy(run_dir: Path, compacted: bool) -> None:
    """Rewrite a run in the layout written before manifests: data.parquet, or parts counted by committed_parts."""
    meta = json.loads((run_dir / "run.json").read_text())
    committed = {}
    for table, entry in meta.pop("manifest")["tables"].items():
        folder = run_dir / table
        files = ([entry["base"]] if entry["base"] else []) + [
            f"part-{n:06d}.parquet" for n in range(entry["first_part"], entry["first_part"] + entry["parts"])
        ]
        temporary = [folder / f"old-{k}" for k in range(len(files))]
        for name, tmp in zip(files, temporary):
            os.replace(folder / name, tmp)
        for leftover in folder.iterdir():
            if not leftover.name.startswith("old-"):
                leftover.unlink()
        if compacted:
            assert len(temporary) == 1
            os.replace(temporary[0], folder / "data.parquet")
        else:
            for k, tmp in enumerate(temporary):
                os.replace(tmp, folder / f"part-{k:06d}.parquet")
            committed[table] = len(temporary)
    if not compacted:
        meta["committed_parts"] = committed
        # A part written after the last commit: the old writer's readers never counted it.
        (run_dir / "exchanges" / f"part-{committed['exchanges']:06d}.parquet").write_bytes(
            (run_dir / "exchanges" / "part-000000.parquet").read_bytes()
        )
    (run_dir / "run.json").write_text(json.dumps(meta))


def test_runs_of_the_old_layout_read_as_before(tmp_path: Path) -> None:
    written = write_sample_run(tmp_path, "old", n_exchanges=10)
    to_legacy(tmp_path / "runs" / "old", compacted=True)
    store = Store(tmp_path)
    assert store.run("old").status == "completed"
    assert table_counts(store, "old") == written


def test_an_interrupted_run_of_the_old_layout_reads_its_committed_parts_and_resumes(tmp_path: Path) -> None:
    columns = sample_columns(10)
    writer = RunWriter(tmp_path, "old", {"seed": 1}, chunk_rows=4)
    for table, cols in columns.items():
        writer.append(table, cols)
    writer.flush()
    run_dir = tmp_path / "runs" / "old"
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "failed"}))
    to_legacy(run_dir, compacted=False)
    store = Store(tmp_path)
    assert store.run("old").status == "failed"
    assert table_counts(store, "old") == row_counts(columns)  # the uncommitted part is not read
    resumed = RunWriter.reopen(tmp_path, "old")
    resumed.append("exchanges", columns["exchanges"])
    resumed.close("completed")
    assert table_counts(store, "old")["exchanges"] == 20
    assert "manifest" in json.loads((run_dir / "run.json").read_text())


def test_connect_to_some_runs_shows_only_them(tmp_path: Path) -> None:
    for run_id in ("a", "b", "c"):
        write_sample_run(tmp_path, run_id, n_exchanges=10)
    store = Store(tmp_path)
    con = store.connect(["b", "missing", "../a"])
    try:
        for table in [*TABLES, "final_holdings", "runs"]:
            ids = {r for (r,) in con.execute(f'SELECT DISTINCT run_id FROM "{table}"').fetchall()}
            assert ids == {"b"}, table
    finally:
        con.close()
    assert store.query("SELECT count(*) AS n FROM exchanges", run_ids=["a", "c"]).column("n")[0].as_py() == 20


def sweep_json(**fields: Any) -> dict[str, Any]:
    return {"sweep_id": "s1", "status": "completed", "name": "facilitator effect", "sampler": "grid",
            "executor": "local", "workers": 2, "seed": 7, "points": 2, "replications": 3, "runs_planned": 6,
            "runs_done": 6, "runs_failed": 0, "started_at": "2026-01-02T03:04:05+00:00",
            "finished_at": "2026-01-02T03:05:05+00:00", "duration_s": 60.0, "error": None,
            "spec": {"factors": {"facilitator": [True, False]}}, **fields}


def test_sweeps_read_from_sweep_json_with_status_and_spec_as_json(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.sweeps() == []
    for sweep_id, fields in {
        "s1": {},
        # A running sweep whose driver is gone (no such pid) reads as interrupted.
        "s2": {"status": "running", "pid": 2**22 + 17, "pid_start_time": 1, "host": None,
               "started_at": "2026-01-03T00:00:00+00:00"},
        "s3": {"status": "running", "pid": os.getpid(), "pid_start_time": None, "host": None,
               "started_at": "2026-01-04T00:00:00+00:00"},
    }.items():
        (tmp_path / "sweeps" / sweep_id).mkdir(parents=True)
        write_json_atomic(tmp_path / "sweeps" / sweep_id / "sweep.json", sweep_json(sweep_id=sweep_id, **fields))
    (tmp_path / "sweeps" / "bad").mkdir()
    (tmp_path / "sweeps" / "bad" / "sweep.json").write_text("{not json")
    (tmp_path / "sweeps" / "starting").mkdir()  # no sweep.json yet: not listed
    statuses = {s.sweep_id: s.status for s in store.sweeps()}
    assert statuses == {"s1": "completed", "s2": "interrupted", "s3": "running", "bad": "damaged"}
    assert [s.sweep_id for s in store.sweeps()][:3] == ["s3", "s2", "s1"]  # newest first
    assert store.sweep("s1").meta["runs_done"] == 6
    assert "not valid JSON" in store.sweep("bad").meta["error"]
    with pytest.raises(SweepNotFoundError, match="nope"):
        store.sweep("nope")
    rows = store.query("SELECT sweep_id, status, spec, workers, started_at, error FROM sweeps ORDER BY sweep_id").to_pylist()
    assert [r["status"] for r in rows] == ["damaged", "completed", "interrupted", "running"]
    assert json.loads(rows[1]["spec"]) == {"factors": {"facilitator": [True, False]}}
    assert rows[1]["workers"] == 2 and rows[1]["started_at"].year == 2026
    assert "not valid JSON" in rows[0]["error"]


def test_write_json_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sweep.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]


def test_garbage_waits_for_the_grace_period_and_never_takes_a_committed_file(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "r", n_exchanges=10)
    run_dir = tmp_path / "runs" / "r"
    committed = sorted(run_dir.rglob("*.parquet"))
    stray = run_dir / "exchanges" / "part-000099.parquet"
    stray.write_bytes(b"superseded")
    # A tombstone may name files its commit never superseded (a crash between them): those stay.
    put_in_trash(tmp_path, [stray, *committed])
    assert collect_garbage(tmp_path) == 0 and stray.exists()
    assert Store(tmp_path).collect_garbage() == 0
    assert collect_garbage(tmp_path, now=time.time() + GRACE_SECONDS + 1) == 1
    assert not stray.exists() and all(p.exists() for p in committed)
    assert list((tmp_path / ".trash").iterdir()) == []
    assert Store(tmp_path).run("r").status == "completed"


def test_query_retries_once_on_a_fresh_snapshot_when_a_file_vanished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sample_run(tmp_path, "r", n_exchanges=10)
    store = Store(tmp_path)
    original = Store.connect
    calls = [0]

    def connect(self: Store, run_ids: Any = None) -> duckdb.DuckDBPyConnection:
        calls[0] += 1
        con = original(self, run_ids)
        if calls[0] == 1:  # the first snapshot names a file that is gone by the time it is read
            gone = tmp_path / "gone.parquet"
            con.execute(f"COPY (SELECT * FROM exchanges) TO '{gone}'")
            con.execute(f"CREATE OR REPLACE VIEW exchanges AS SELECT * FROM read_parquet('{gone}')")
            gone.unlink()
        return con

    monkeypatch.setattr(Store, "connect", connect)
    assert store.query("SELECT count(*) AS n FROM exchanges").column("n")[0].as_py() == 10
    assert calls[0] == 2
