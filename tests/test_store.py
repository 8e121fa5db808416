"""The run store: writer -> Parquet chunks -> reader views, compaction, crashes, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_store_fixtures import sample_columns, write_sample_run

from commonpool.store import GRACE_SECONDS, TABLES, RunExistsError, RunNotFoundError, RunWriter, Store, export_run
from commonpool.store.trash import collect_garbage

REPO = Path(__file__).resolve().parents[1]


def as_list(values: Any) -> list[Any]:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.to_pylist()
    if isinstance(values, np.ndarray):
        return values.tolist()
    return list(values)


def exchange_columns(ids: range) -> dict[str, Any]:
    """Exchange rows with the given ids (the other columns are constant)."""
    n = len(ids)
    cols = sample_columns(max(n, 1))["exchanges"]
    return {**{k: v[:n] for k, v in cols.items()}, "exchange_id": np.array(ids, dtype=np.int64)}


def count(store: Store, table: str, run_id: str | None = None) -> int:
    where = "" if run_id is None else f" WHERE run_id = '{run_id}'"
    return store.query(f"SELECT count(*) AS n FROM {table}{where}").column("n")[0].as_py()


def test_every_table_round_trips_from_writer_to_reader(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "r1", n_exchanges=10)
    written = sample_columns(10)
    store = Store(tmp_path)
    for table, columns in written.items():
        got = store.query(f"SELECT * FROM {table}")
        assert got.column("run_id").to_pylist() == ["r1"] * got.num_rows, table
        for name, values in columns.items():
            assert got.column(name).to_pylist() == as_list(values), f"{table}.{name}"


def test_view_column_names_and_order_match_the_schema(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "r1")
    store = Store(tmp_path)
    for table, schema in TABLES.items():
        names = store.query(f"SELECT * FROM {table} LIMIT 0").column_names
        extra = ["valuations"] if table == "advice" else []
        assert names == schema.names + extra, table


def test_tables_without_files_are_empty_views_with_the_schema_types(tmp_path: Path) -> None:
    store = Store(tmp_path)  # no runs at all
    with_rows = Store(tmp_path / "other")
    write_sample_run(with_rows.root, "r1")
    for table in TABLES:
        empty = store.query(f"DESCRIBE {table}")
        full = with_rows.query(f"DESCRIBE {table}")
        assert count(store, table) == 0
        assert empty.select(["column_name", "column_type"]) == full.select(["column_name", "column_type"]), table
    assert count(store, "final_holdings") == 0
    assert count(store, "runs") == 0


def test_a_reader_sees_a_running_runs_flushed_chunks_only(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = RunWriter(tmp_path, "live", {"seed": 1})
    writer.append("exchanges", exchange_columns(range(10)))
    assert count(store, "exchanges") == 0  # buffered, not yet flushed
    writer.flush()
    assert count(store, "exchanges") == 10
    writer.append("exchanges", exchange_columns(range(10, 15)))
    writer.flush()
    assert count(store, "exchanges") == 15
    assert store.run("live").status == "running"
    writer.close("completed")
    assert count(store, "exchanges") == 15
    assert store.run("live").status == "completed"


def test_a_chunk_is_written_when_a_tables_buffer_reaches_chunk_rows_and_committed_by_the_next_flush(
    tmp_path: Path,
) -> None:
    writer = RunWriter(tmp_path, "r", {}, chunk_rows=8)
    for start in (0, 4, 8):
        writer.append("exchanges", exchange_columns(range(start, start + 4)))
    folder = tmp_path / "runs" / "r" / "exchanges"
    written = list(folder.iterdir())
    assert len(written) == 1 and pq.read_metadata(written[0]).num_rows == 8  # on disk: memory stays bounded
    # Readers see a chunk only once a flush commits it with every other table's rows.
    assert count(Store(tmp_path), "exchanges") == 0
    writer.flush()
    assert sorted(p.name for p in folder.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    assert pq.read_metadata(folder / "part-000000.parquet").num_rows == 8
    assert count(Store(tmp_path), "exchanges") == 12
    writer.close("completed")


def test_compaction_leaves_the_same_rows_in_one_file_and_no_part_files(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r", {}, chunk_rows=3)
    for start in range(0, 20, 2):
        writer.append("exchanges", exchange_columns(range(start, start + 2)))
    writer.flush()
    folder = tmp_path / "runs" / "r" / "exchanges"
    assert len(list(folder.glob("part-*.parquet"))) == 5  # appends of 2 rows: a chunk every 4 rows
    before = Store(tmp_path).query("SELECT * FROM exchanges")
    writer.close("completed")
    assert json.loads((tmp_path / "runs" / "r" / "run.json").read_text())["manifest"]["tables"]["exchanges"] == {
        "base": "data-000005.parquet", "base_bytes": (folder / "data-000005.parquet").stat().st_size,
        "first_part": 6, "parts": 0, "parts_bytes": 0, "rows": 20,
    }
    # The parts stay for readers that listed them until the grace period is over, then go.
    assert collect_garbage(tmp_path) == 0 and len(list(folder.glob("part-*.parquet"))) == 5
    assert collect_garbage(tmp_path, now=time.time() + GRACE_SECONDS + 1) == 5
    assert sorted(p.name for p in folder.iterdir()) == ["data-000005.parquet"]
    after = Store(tmp_path).query("SELECT * FROM exchanges")
    assert after == before
    assert after.column("exchange_id").to_pylist() == list(range(20))


def test_a_duplicate_run_id_raises_run_exists_and_leaves_the_first_run_intact(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "same")
    with pytest.raises(RunExistsError, match="same"):
        RunWriter(tmp_path, "same", {})
    assert Store(tmp_path).run("same").status == "completed"


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden", "x'y"])
def test_an_unsafe_run_id_is_refused_before_anything_is_written(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        RunWriter(tmp_path, run_id, {})
    assert not (tmp_path / "runs").exists()


def test_appending_unknown_or_missing_columns_names_them(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "r", {}) as writer:
        cols = exchange_columns(range(3))
        del cols["reason"]
        with pytest.raises(ValueError, match=r"missing columns \['reason'\], unknown columns \['bogus'\]"):
            writer.append("exchanges", {**cols, "bogus": [1, 2, 3]})
        with pytest.raises(ValueError, match="unknown table 'nope'"):
            writer.append("nope", {})


def test_a_value_too_large_for_its_column_raises_instead_of_wrapping(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "r", {}) as writer:
        cols = exchange_columns(range(1))
        with pytest.raises(pa.ArrowInvalid):
            writer.append("exchanges", {**cols, "turns": np.array([70_000])})


def test_run_json_holds_meta_counters_and_the_final_status(tmp_path: Path) -> None:
    meta = {"seed": 3, "engine": "rules", "config": {"seed": 3}}
    with RunWriter(tmp_path, "r", meta) as writer:
        running = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
        assert running["status"] == "running" and running["pid"] == os.getpid() and running["seed"] == 3
        writer.update(exchanges_recorded=5, accepted=2, cost_usd=0.5)
    info = Store(tmp_path).run("r")
    assert info.status == "completed" and info.seed == 3
    assert info.meta["exchanges_recorded"] == 5 and info.meta["cost_usd"] == 0.5
    assert info.finished_at is not None and info.meta["duration_s"] >= 0 and info.meta["error"] is None


def test_update_with_a_wrongly_typed_counter_names_the_field(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "r", {}) as writer:
        with pytest.raises(TypeError, match="exchanges_recorded"):
            writer.update(exchanges_recorded="many")
        with pytest.raises(ValueError, match="status"):
            writer.update(status="completed")


def test_an_exception_inside_the_with_block_marks_the_run_failed_and_propagates(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with RunWriter(tmp_path, "r", {}) as writer:
            writer.append("exchanges", exchange_columns(range(4)))
            1 / 0
    info = Store(tmp_path).run("r")
    assert info.status == "failed"
    assert info.meta["error"] == "ZeroDivisionError: division by zero"
    assert count(Store(tmp_path), "exchanges") == 4  # buffered rows were still written


def test_keyboard_interrupt_inside_the_with_block_marks_the_run_cancelled(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(tmp_path, "r", {}):
            raise KeyboardInterrupt
    assert Store(tmp_path).run("r").status == "cancelled"


def test_close_refuses_a_status_outside_run_statuses(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r", {})
    with pytest.raises(ValueError, match="status must be one of"):
        writer.close("done")
    writer.close("completed")
    with pytest.raises(RuntimeError, match="already closed"):
        writer.append("exchanges", exchange_columns(range(1)))


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_store_fixtures import sample_columns
    from commonpool.store import RunWriter
    w = RunWriter(Path(sys.argv[1]), "killed", {"seed": 9}, chunk_rows=50)
    cols = sample_columns(40)["exchanges"]
    for start in range(0, 200, 40):
        w.append("exchanges", {**cols, "exchange_id": np.arange(start, start + 40)})
    w.flush()
    w.update(exchanges_recorded=200)
    w.append("exchanges", {**cols, "exchange_id": np.arange(200, 240)})  # buffered, never flushed
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_a_sigkilled_writer_reads_as_interrupted_and_its_flushed_chunks_query(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(REPO / "tests")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            store = Store(tmp_path)
            assert store.run("killed").status == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)  # reaped: a zombie would also read as gone, but be tidy
        finally:
            proc.kill()
    assert store.run("killed").status == "interrupted"
    assert [r.status for r in store.runs()] == ["interrupted"]
    got = store.query("SELECT count(*) AS n, count(DISTINCT exchange_id) AS d, max(exchange_id) AS m FROM exchanges")
    assert got.to_pylist() == [{"n": 200, "d": 200, "m": 199}]
    assert store.query("SELECT status, exchanges_recorded FROM runs").to_pylist() == [
        {"status": "interrupted", "exchanges_recorded": 200}
    ]


def test_a_running_run_whose_pid_now_belongs_to_another_process_reads_as_interrupted(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r", {})
    run_json = tmp_path / "runs" / "r" / "run.json"
    meta = json.loads(run_json.read_text())
    if meta["pid_start_time"] is None:
        pytest.skip("process start times need /proc (Linux)")
    assert Store(tmp_path).run("r").status == "running"
    # Same (live) pid, different start time: the pid was reused by another process.
    run_json.write_text(json.dumps({**meta, "pid_start_time": meta["pid_start_time"] + 1}))
    assert Store(tmp_path).run("r").status == "interrupted"
    run_json.write_text(json.dumps(meta))
    writer.close("completed")


def test_final_holdings_are_initial_holdings_plus_transfers_in_minus_out(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "a", {}) as w:
        w.append(
            "initial_holdings",
            {"participant_id": [0, 0, 1, 1], "resource": ["books", "tools", "books", "tools"], "quantity": [3, 0, 0, 2]},
        )
        w.append(
            "transfers",
            {
                "exchange_id": [0, 0, 1],
                "from_id": [0, 1, 0],
                "to_id": [1, 0, 1],
                "resource": ["books", "tools", "books"],
                "quantity": [2, 1, 1],
            },
        )
    with RunWriter(tmp_path, "b", {}) as w:  # another run: must not leak into run a
        w.append("initial_holdings", {"participant_id": [0], "resource": ["books"], "quantity": [7]})
    got = Store(tmp_path).query(
        "SELECT run_id, participant_id, resource, quantity FROM final_holdings ORDER BY ALL"
    ).to_pylist()
    assert [tuple(r.values()) for r in got] == [
        ("a", 0, "books", 0),  # a zero row is still present
        ("a", 0, "tools", 1),
        ("a", 1, "books", 3),
        ("a", 1, "tools", 1),
        ("b", 0, "books", 7),
    ]


def test_advice_carries_the_rounds_valuations_as_a_map(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "r1", n_exchanges=4)
    got = Store(tmp_path).query(
        "SELECT exchange_id, round, valuations['cooking_lesson'] AS lesson, cardinality(valuations) AS n "
        "FROM advice ORDER BY exchange_id"
    ).to_pylist()
    assert got == [
        {"exchange_id": i, "round": i // 2, "lesson": 3.0, "n": 4} for i in range(4)
    ]


def test_runs_lists_newest_first_with_config_as_json_text(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "older", seed=1)
    write_sample_run(tmp_path, "newer", seed=2)
    store = Store(tmp_path)
    assert [r.run_id for r in store.runs()] == ["newer", "older"]
    rows = store.query("SELECT run_id, status, seed, facilitator, config, cost_usd FROM runs ORDER BY run_id").to_pylist()
    assert rows[0] == {
        "run_id": "newer", "status": "completed", "seed": 2, "facilitator": "rules",
        "config": '{"max_turns": 4, "seed": 2}', "cost_usd": None,
    }
    assert count(store, "exchanges", "older") == count(store, "exchanges", "newer") == 10


def test_an_unknown_run_raises_run_not_found_naming_the_id(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "r1")
    with pytest.raises(RunNotFoundError, match="nope"):
        Store(tmp_path).run("nope")
    with pytest.raises(RunNotFoundError):
        Store(tmp_path).run("../runs/r1")


def test_default_store_comes_from_commonpool_store_or_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMMONPOOL_STORE", str(tmp_path))
    assert Store.default().root == tmp_path.resolve()
    monkeypatch.delenv("COMMONPOOL_STORE")
    assert Store.default().root == Path("data").resolve()


# --- export ---------------------------------------------------------------------------------

EXPORTED = [*TABLES, "final_holdings"]


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Store, dict[str, int]]:
    counts = write_sample_run(tmp_path / "store", "r1", n_exchanges=6)
    write_sample_run(tmp_path / "store", "r2", n_exchanges=9)  # must not leak into r1's export
    return Store(tmp_path / "store"), {**counts, "final_holdings": counts["initial_holdings"]}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_to_a_folder_has_one_file_per_table_with_the_runs_rows(
    two_runs: tuple[Store, dict[str, int]], tmp_path: Path, fmt: str
) -> None:
    store, counts = two_runs
    out = export_run(store, "r1", fmt, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{t}.{fmt}" for t in EXPORTED] + ["run.json"])
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    for table in EXPORTED:
        n = duckdb.sql(f"SELECT count(*) FROM {reader}('{out / f'{table}.{fmt}'}')").fetchall()[0][0]
        assert n == counts[table], table
    assert json.loads((out / "run.json").read_text())["run_id"] == "r1"


def test_export_to_json_is_one_document_with_the_run_and_every_table(
    two_runs: tuple[Store, dict[str, int]], tmp_path: Path
) -> None:
    store, counts = two_runs
    doc = json.loads(export_run(store, "r1", "json", tmp_path / "r1.json").read_text())
    assert doc["run"]["run_id"] == "r1" and doc["run"]["status"] == "completed"
    assert {t: len(rows) for t, rows in doc["tables"].items()} == {t: counts[t] for t in EXPORTED}
    assert doc["tables"]["advice"][0]["valuations"]["books"] == 1.0


def test_export_to_duckdb_is_one_database_file_with_the_runs_tables(
    two_runs: tuple[Store, dict[str, int]], tmp_path: Path
) -> None:
    store, counts = two_runs
    path = export_run(store, "r1", "duckdb", tmp_path / "r1.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        for table in EXPORTED:
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == counts[table], table
        assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r1", "completed")]
    with pytest.raises(FileExistsError, match="already exists"):
        export_run(store, "r1", "duckdb", path)


def test_export_refuses_unknown_format_unknown_run_and_existing_destination(
    two_runs: tuple[Store, dict[str, int]], tmp_path: Path
) -> None:
    store, _ = two_runs
    with pytest.raises(ValueError, match=r"\['json', 'csv', 'parquet', 'duckdb'\]"):
        export_run(store, "r1", "xlsx", tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(RunNotFoundError, match="nope"):
        export_run(store, "nope", "json", tmp_path / "x.json")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        export_run(store, "r1", "csv", tmp_path / "taken")
    assert not list(tmp_path.glob(".*tmp*"))
