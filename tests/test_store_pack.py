"""Packing finished runs into one file per table: same rows, exactly once, crash-safe."""

from __future__ import annotations

import json
import shutil
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_store_fixtures import write_sample_run

from processes import kill_when_ready

from commonpool import metrics
from commonpool.store import GRACE_SECONDS, TABLES, RunNotFoundError, RunWriter, Store, export_run
from commonpool.store.trash import collect_garbage

RUNS = ("a", "b", "c", "d")


def make_runs(root: Path) -> dict[str, int]:
    """Completed runs a-d with different exchange counts; exchanges per run."""
    sizes = {run_id: 10 + 3 * k for k, run_id in enumerate(RUNS)}
    for run_id, n in sizes.items():
        write_sample_run(root, run_id, n_exchanges=n)
    return sizes


def everything(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    con = store.connect()
    try:
        return {t: con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in [*TABLES, "final_holdings"]}
    finally:
        con.close()


def per_run(store: Store) -> dict[str, int]:
    con = store.connect()
    try:
        return dict(con.execute("SELECT run_id, count(*) FROM exchanges GROUP BY run_id").fetchall())
    finally:
        con.close()


def test_a_pack_holds_the_same_rows_and_the_runs_own_files_go_after_the_grace_period(tmp_path: Path) -> None:
    make_runs(tmp_path)
    store = Store(tmp_path)
    before = everything(store)
    folder = store.pack(["c", "a", "b", "a"], "p1")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["pack.json", *(f"{t}.parquet" for t in TABLES)])
    assert everything(store) == before
    assert {r.run_id: r.status for r in store.runs()} == dict.fromkeys(RUNS, "completed")
    meta = store.run("a").meta
    assert meta["manifest"]["pack"] == "p1" and meta["manifest"]["tables"]["exchanges"]["rows"] == 10
    own = sorted((tmp_path / "runs" / "a").rglob("*.parquet"))
    assert own  # still there for readers that listed them
    assert collect_garbage(tmp_path, now=time.time() + GRACE_SECONDS + 1) > 0
    assert list((tmp_path / "runs" / "a").rglob("*.parquet")) == []
    assert list((tmp_path / "runs" / "d").rglob("*.parquet"))  # not packed: untouched
    assert everything(store) == before
    con = store.connect(["b"])
    try:
        assert dict(con.execute("SELECT run_id, count(*) FROM exchanges GROUP BY ALL").fetchall()) == {"b": 13}
        assert metrics.summary(con, "b")["exchanges"] == 13
    finally:
        con.close()
    exported = export_run(store, "c", "json", tmp_path / "c.json")
    assert len(json.loads(exported.read_text())["tables"]["exchanges"]) == 16


def test_runs_that_cannot_be_packed_are_refused_and_nothing_changes(tmp_path: Path) -> None:
    make_runs(tmp_path)
    store = Store(tmp_path)
    running = RunWriter(tmp_path, "live", {})
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "runs" / "a.bak")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "run.json").write_text("[]")
    before = everything(store)
    cases = {
        ("a", "live"): "live' is running",
        ("a", "a.bak"): "copy of run 'a'",
        ("broken",): "damaged",
        ("a", "nope"): "nope",
    }
    for runs, message in cases.items():
        with pytest.raises((ValueError, RunNotFoundError), match=message):
            store.pack(list(runs), "p")
        assert not (tmp_path / "packs" / "p").exists()
    with pytest.raises(ValueError, match="pack_id"):
        store.pack(["a"], "../p")
    store.pack(["a"], "p")
    with pytest.raises(ValueError, match="already in pack 'p'"):
        store.pack(["a"], "q")
    with pytest.raises(ValueError, match="pack 'p' already exists"):
        store.pack(["b"], "p")
    assert everything(store) == before
    running.close("completed")


def test_a_copied_folder_of_a_packed_run_reads_as_its_own_run(tmp_path: Path) -> None:
    sizes = make_runs(tmp_path)
    store = Store(tmp_path)
    store.pack(list(RUNS), "p1")
    shutil.copytree(tmp_path / "runs" / "b", tmp_path / "runs" / "b.bak")
    assert per_run(store) == {**sizes, "b.bak": sizes["b"]}


def test_a_damaged_pack_marks_its_runs_damaged_and_hides_nothing_else(tmp_path: Path) -> None:
    sizes = make_runs(tmp_path)
    store = Store(tmp_path)
    store.pack(["a", "b"], "p1")
    pack_file = tmp_path / "packs" / "p1" / "offers.parquet"
    pack_file.write_bytes(pack_file.read_bytes()[:-10])
    statuses = {r.run_id: (r.status, r.meta.get("error")) for r in store.runs()}
    assert statuses["a"][0] == statuses["b"][0] == "damaged"
    assert "pack p1: offers" in statuses["a"][1]
    assert per_run(store) == {"c": sizes["c"], "d": sizes["d"]}


# Packs runs a-d and is killed just as it repoints its third run.
_KILLED_PACK = textwrap.dedent(
    """
    import os, sys, time
    from commonpool.store import Store
    original = os.replace
    repointed = [0]
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("run.json"):
            repointed[0] += 1
            if repointed[0] == 3:
                print("ready", flush=True)
                time.sleep(60)
        return original(src, dst, *args, **kwargs)
    os.replace = replace
    Store(sys.argv[1]).pack(["a", "b", "c", "d"], "p1")
    """
)


def test_a_pack_killed_midway_leaves_every_run_readable_exactly_once(tmp_path: Path) -> None:
    sizes = make_runs(tmp_path)
    store = Store(tmp_path)
    before = everything(store)
    kill_when_ready(_KILLED_PACK, str(tmp_path))
    packed = {r.run_id for r in store.runs() if r.meta.get("manifest", {}).get("pack") == "p1"}
    assert packed == {"a", "b"}
    assert per_run(store) == sizes and everything(store) == before
    # Garbage collection keeps the unpacked runs' own files, though the tombstone names them.
    collect_garbage(tmp_path, now=time.time() + GRACE_SECONDS + 1)
    assert everything(store) == before
    store.pack(["c", "d"], "p2")
    assert everything(store) == before


def test_readers_during_a_pack_see_every_run_exactly_once(tmp_path: Path) -> None:
    sizes = make_runs(tmp_path)
    for k in range(12):
        write_sample_run(tmp_path, f"more{k}", n_exchanges=5)
    expected = {**sizes, **{f"more{k}": 5 for k in range(12)}}
    store = Store(tmp_path)
    seen: list[dict[str, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(per_run(store))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        store.pack(list(expected), "p1")
        time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 1 and all(s == expected for s in seen)


def test_a_run_stored_before_exchanges_had_a_period_reads_null_there_alone_and_packed_with_newer_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import test_store_fixtures

    full = test_store_fixtures.sample_columns

    def without_period(n_exchanges: int, seed: int = 0) -> dict[str, dict[str, Any]]:
        columns = full(n_exchanges, seed)
        del columns["exchanges"]["period"]
        return columns

    with monkeypatch.context() as m:
        m.setitem(TABLES, "exchanges", pa.schema([f for f in TABLES["exchanges"] if f.name != "period"]))
        m.setattr(test_store_fixtures, "sample_columns", without_period)
        write_sample_run(tmp_path, "old", n_exchanges=10)
    write_sample_run(tmp_path, "new", n_exchanges=13)
    store = Store(tmp_path)

    def periods() -> list[tuple[Any, ...]]:
        con = store.connect()
        try:
            return con.execute("SELECT run_id, count(period), count(*) FROM exchanges GROUP BY ALL ORDER BY ALL").fetchall()
        finally:
            con.close()

    assert periods() == [("new", 13, 13), ("old", 0, 10)]
    store.pack(["old", "new"], "mixed")
    assert periods() == [("new", 13, 13), ("old", 0, 10)]
