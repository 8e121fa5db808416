"""The run store under failure (GitHub issue 12): a full disk, readers during
compaction, damaged runs, and a writer killed mid-flush."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from test_store_fixtures import row_counts, sample_columns, write_sample_run

from processes import kill_when_ready

from run_tables import table_counts

from commonpool import SimulationConfig, metrics, run_simulation
from commonpool.cli import main as cli_main
from commonpool.resume import resume_simulation
from commonpool.store import TABLES, RunWriter, Store, export_run

REPO = Path(__file__).resolve().parents[1]

# A small rules run that flushes every few exchanges, so it has many flushes to break.
CONFIG = {"seed": 3, "num_participants": 12, "min_exchanges": 60, "max_exchanges": 60}
FLUSH_EVERY = 12  # two rounds of 6 pairs


@pytest.fixture
def small_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    import commonpool.recorder as recorder

    original = recorder.Recorder.__init__

    def init(self: Any, *args: Any, flush_every: int, **kwargs: Any) -> None:
        original(self, *args, flush_every=FLUSH_EVERY, **kwargs)

    monkeypatch.setattr(recorder.Recorder, "__init__", init)


def tables_of(store: Store, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every public table's rows of one run, without run_id, in a fixed order."""
    con = store.connect()
    try:
        return {
            table: con.execute(f'SELECT * EXCLUDE (run_id) FROM "{table}" WHERE run_id = ? ORDER BY ALL', [run_id]).fetchall()
            for table in [*TABLES, "final_holdings"]
        }
    finally:
        con.close()


def whole_run(tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    store = Store(tmp_path / "whole")
    result = run_simulation(SimulationConfig(**CONFIG, simulation_id="whole"), store)
    assert result.status == "completed"
    return tables_of(store, "whole")


def manifest_of(store: Store, run_id: str) -> dict[str, Any]:
    return json.loads((store.root / "runs" / run_id / "run.json").read_text())["manifest"]


# --- 1. a full disk ---------------------------------------------------------------------------------------


def fail_nth_parquet_write(monkeypatch: pytest.MonkeyPatch, n: int) -> list[int]:
    """Make the n-th Parquet write from now (only that one) raise ENOSPC, leaving a partial file as a full disk does."""
    calls = [0]
    original = pq.write_table

    def write_table(table: Any, where: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == n:
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        original(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    return calls


def test_a_full_disk_mid_flush_commits_nothing_and_keeps_every_committed_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    columns = sample_columns(10)
    writer = RunWriter(tmp_path, "r", {"seed": 1})
    for table, cols in columns.items():
        writer.append(table, cols)
    writer.flush()
    committed = manifest_of(store, "r")
    fail_nth_parquet_write(monkeypatch, 3)  # the third table of the next flush
    for table, cols in columns.items():
        writer.append(table, cols)
    with pytest.raises(OSError, match="No space"):
        writer.flush()
    assert manifest_of(store, "r") == committed
    # Nothing after the failed write may be committed, not even by a later flush or close.
    with pytest.raises(RuntimeError, match="failed write"):
        writer.append("exchanges", columns["exchanges"])
    writer.close("failed", "OSError: no space")
    assert manifest_of(store, "r") == committed
    assert store.run("r").status == "failed"
    assert table_counts(store, "r") == row_counts(columns)
    run_dir = tmp_path / "runs" / "r"
    on_disk = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.parquet*"))
    assert on_disk == sorted(f"{t}/part-000000.parquet" for t in columns)  # the failed flush left nothing


def test_a_run_that_hit_a_full_disk_resumes_to_the_same_tables_as_an_unbroken_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_flushes: None
) -> None:
    whole = whole_run(tmp_path)
    store = Store(tmp_path / "broken")
    fail_nth_parquet_write(monkeypatch, 20)  # a few flushes in: the population's, then a round's tables
    with pytest.raises(OSError, match="No space"):
        run_simulation(SimulationConfig(**CONFIG, simulation_id="broken"), store)
    info = store.run("broken")
    assert info.status == "failed" and "No space" in info.meta["error"]
    stored = table_counts(store, "broken")
    assert 0 < stored["exchanges"] < 60
    assert stored["exchanges"] == info.meta["exchanges_recorded"]  # the listing says what is really stored
    resumed = resume_simulation("broken", store)
    assert resumed.status == "completed" and resumed.exchanges == 60
    assert tables_of(store, "broken") == whole


def test_a_run_whose_creation_hits_a_full_disk_leaves_no_folder_blocking_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = os.replace

    def full(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(dst).endswith("run.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        original(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full)
        with pytest.raises(OSError, match="No space"):
            RunWriter(tmp_path, "r", {})
    store = Store(tmp_path)
    assert not store.has_run("r") and store.runs() == []
    RunWriter(tmp_path, "r", {}).close("completed")
    assert store.run("r").status == "completed"


def test_reopen_refuses_a_run_whose_committed_files_are_not_as_recorded(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, "r", {})
    writer.append("exchanges", sample_columns(10)["exchanges"])
    writer.flush()
    part = tmp_path / "runs" / "r" / "exchanges" / "part-000000.parquet"
    part.write_bytes(part.read_bytes()[:-20])
    meta = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    (tmp_path / "runs" / "r" / "run.json").write_text(json.dumps({**meta, "status": "failed"}))
    with pytest.raises(ValueError, match=r"exchanges.*truncated or replaced"):
        RunWriter.reopen(tmp_path, "r")
    part.unlink()
    with pytest.raises(ValueError, match="exchanges/part-000000.parquet is missing"):
        RunWriter.reopen(tmp_path, "r")


def test_the_cli_reports_a_full_disk_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import commonpool.engine
    import commonpool.resume
    import commonpool.store

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store = str(tmp_path / "store")
    write_sample_run(Path(store), "r")
    monkeypatch.setattr(commonpool.engine, "run_simulation", full)
    monkeypatch.setattr(commonpool.resume, "resume_simulation", full)
    monkeypatch.setattr(commonpool.store, "export_run", full)
    for args in (["run", "--no-progress"], ["resume", "r", "--no-progress"], ["export", "r", "--dest", str(tmp_path / "x")]):
        assert cli_main(["--store", store, *args]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"commonpool: error: no space left on device under {store if args[0] != 'export' else tmp_path}"]


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_disk_fails_the_run_in_one_line_and_resume_completes_it(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "160k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        config = {"seed": "5", "num-participants": "40", "min-exchanges": "4000", "max-exchanges": "4000"}
        flags = [x for k, v in config.items() for x in (f"--{k}", v)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "commonpool", "--store", str(store), *args],
                                  capture_output=True, text=True, env=env, cwd=REPO, timeout=120)

        full = cli("run", "--simulation-id", "big", "--no-progress", *flags, store=disk)
        assert full.returncode == 1, full.stderr
        assert full.stderr.strip().splitlines() == [f"commonpool: error: no space left on device under {disk}"]
        listing = cli("runs", "list", store=disk)
        assert listing.returncode == 0 and "big" in listing.stdout and "completed" not in listing.stdout
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = cli("resume", "big", "--no-progress", store=disk)
        assert resumed.returncode == 0, resumed.stderr
        unbroken = cli("run", "--simulation-id", "big", "--no-progress", *flags, store=tmp_path / "whole")
        assert unbroken.returncode == 0, unbroken.stderr
        assert tables_of(Store(disk), "big") == tables_of(Store(tmp_path / "whole"), "big")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --- 2. readers while other runs finish ----------------------------------------------------------------------

_BUSY_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_store_fixtures import sample_columns
    from commonpool.store import RunWriter
    cols = sample_columns(40)
    for k in range(20):
        with RunWriter(Path(sys.argv[1]), f"busy{k}", {"seed": k}, chunk_rows=15) as w:
            for flush in range(4):
                for table, columns in cols.items():
                    w.append(table, columns)
                w.flush()
    """
)


def test_readers_never_fail_while_other_runs_write_flush_and_compact(tmp_path: Path) -> None:
    write_sample_run(tmp_path, "stable", n_exchanges=30)
    store = Store(tmp_path)
    errors: list[str] = []
    queries = 0
    writer = subprocess.Popen(
        [sys.executable, "-c", _BUSY_WRITER, str(tmp_path), str(REPO / "tests")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        while writer.poll() is None or queries < 20:
            try:
                con = store.connect()
                time.sleep(0.005)  # a page's connection lives a while before its queries run
                assert con.execute("SELECT count(*) FROM exchanges WHERE run_id = 'stable'").fetchone()[0] == 30
                con.execute("SELECT run_id, count(*) FROM offers GROUP BY run_id").fetchall()
                con.execute("SELECT count(*) FROM final_holdings").fetchall()
                con.close()
                store.query("SELECT count(*) AS n FROM transfers")
            except Exception as exc:  # noqa: BLE001 - every failure counts, whatever its type
                errors.append(f"{type(exc).__name__}: {exc}")
            queries += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert errors == []
    assert table_counts(store, "busy19")["exchanges"] == 160


# --- 3. one damaged run never hides the others ---------------------------------------------------------------


def damaged_store(root: Path) -> dict[str, str]:
    """Runs ok1, ok2 and ok1.bak (a copied folder), and one damaged run per way of damage; the reasons expected."""
    for run_id in ("ok1", "ok2", "bad_json", "empty_json", "list_json", "bad_started", "text_seed",
                   "truncated", "empty_parquet"):
        write_sample_run(root, run_id, n_exchanges=10 if run_id != "ok2" else 12)
    runs = root / "runs"

    def edit(run_id: str, **fields: Any) -> None:
        meta = json.loads((runs / run_id / "run.json").read_text())
        (runs / run_id / "run.json").write_text(json.dumps({**meta, **fields}))

    (runs / "bad_json" / "run.json").write_text('{"status": "completed", ')
    (runs / "empty_json" / "run.json").write_text("")
    (runs / "list_json" / "run.json").write_text("[1, 2]")
    edit("bad_started", started_at="yesterday")
    edit("text_seed", seed="seven")
    exchanges = next((runs / "truncated" / "exchanges").glob("*.parquet"))
    exchanges.write_bytes(exchanges.read_bytes()[:-40])
    next((runs / "empty_parquet" / "offers").glob("*.parquet")).write_bytes(b"")
    shutil.copytree(runs / "ok1", runs / "ok1.bak")
    return {
        "bad_json": "not valid JSON", "empty_json": "empty", "list_json": "not a JSON object",
        "bad_started": "started_at must be an ISO date", "text_seed": "seed must be a whole number",
        "truncated": "exchanges files hold", "empty_parquet": "offers files hold",
    }


def test_damaged_runs_are_listed_with_the_reason_and_left_out_of_every_view(tmp_path: Path) -> None:
    reasons = damaged_store(tmp_path)
    store = Store(tmp_path)
    listed = {r.run_id: r for r in store.runs()}
    assert set(listed) == {*reasons, "ok1", "ok2", "ok1.bak"}
    for run_id, reason in reasons.items():
        assert listed[run_id].status == "damaged", run_id
        assert reason in listed[run_id].meta["error"], run_id
        assert store.run(run_id).status == "damaged"
    assert {listed[r].status for r in ("ok1", "ok2", "ok1.bak")} == {"completed"}
    con = store.connect()
    try:
        per_run = dict(con.execute("SELECT run_id, count(*) FROM exchanges GROUP BY run_id").fetchall())
        # The copy reads as a run of its own name: ok1's rows are not doubled.
        assert per_run == {"ok1": 10, "ok1.bak": 10, "ok2": 12}
        for table in [*TABLES, "final_holdings"]:
            ids = {r for (r,) in con.execute(f'SELECT DISTINCT run_id FROM "{table}"').fetchall()}
            assert ids <= {"ok1", "ok2", "ok1.bak"}, table
        runs_view = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
        assert runs_view == {r: i.status for r, i in listed.items()}
        errors = dict(con.execute("SELECT run_id, error FROM runs WHERE status = 'damaged'").fetchall())
        assert all(reason in errors[r] for r, reason in reasons.items())
        assert metrics.summary(con, "ok2")["exchanges"] == 12
    finally:
        con.close()
    exported = export_run(store, "ok2", "json", tmp_path / "ok2.json")
    assert len(json.loads(exported.read_text())["tables"]["exchanges"]) == 12


def test_the_cli_lists_queries_and_exports_beside_damaged_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged_store(tmp_path / "store")
    store = str(tmp_path / "store")
    assert cli_main(["--store", store, "runs", "list"]) == 0
    listing = capsys.readouterr().out
    assert "damaged" in listing and "ok1.bak" in listing
    assert cli_main(["--store", store, "runs", "list", "--json"]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["text_seed"]["status"] == "damaged" and "seed" in rows["text_seed"]["error"]
    assert cli_main(["--store", store, "sql", "SELECT count(*) AS n FROM exchanges", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 32}]
    assert cli_main(["--store", store, "metrics", "ok2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["exchanges"] == 12
    assert cli_main(["--store", store, "export", "ok1", "--format", "csv", "--dest", str(tmp_path / "ok1")]) == 0
    capsys.readouterr()
    assert cli_main(["--store", store, "resume", "truncated", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "damaged" in err


def test_dashboard_pages_work_beside_damaged_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pages_support import app, every_explore_tab, no_exceptions

    damaged_store(tmp_path / "store")
    monkeypatch.setenv("COMMONPOOL_STORE", str(tmp_path / "store"))
    for run_id in ("ok2", "text_seed"):
        for _, at in every_explore_tab(run_id):
            no_exceptions(at)
    for page in ("pages/compare.py", "pages/sql.py", "pages/running.py"):
        no_exceptions(app(page))


# --- 4. a writer killed mid-flush -------------------------------------------------------------------------------

# Runs the small run with a hook on os.replace: when the second flush of rounds
# puts its transfers part in place, say so and wait to be killed. The flush's
# exchanges and offers parts are already in place by then.
_KILLED_MID_FLUSH = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[2])
    import commonpool.recorder as recorder
    from commonpool import SimulationConfig, run_simulation
    original_init, original_replace = recorder.Recorder.__init__, os.replace
    def init(self, *args, flush_every, **kwargs):
        original_init(self, *args, flush_every=int(sys.argv[3]), **kwargs)
    seen = [0]
    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.path.dirname(str(dst))) == "transfers" and os.path.basename(str(dst)).startswith("part-"):
            seen[0] += 1
            if seen[0] == 2:
                print("ready", flush=True)
                time.sleep(60)
        return original_replace(src, dst, *args, **kwargs)
    recorder.Recorder.__init__ = init
    os.replace = replace
    config = SimulationConfig(**{**eval(sys.argv[4]), "simulation_id": "killed"})
    run_simulation(config, sys.argv[1])
    """
)


def test_readers_never_see_half_a_flush_and_resume_completes_a_run_killed_mid_flush(
    tmp_path: Path, small_flushes: None
) -> None:
    store = Store(tmp_path / "store")
    kill_when_ready(_KILLED_MID_FLUSH, str(store.root), str(REPO / "tests"), str(FLUSH_EVERY), repr(CONFIG))
    assert store.run("killed").status == "interrupted"
    con = store.connect()
    try:
        exchanges, last = con.execute("SELECT count(*), max(exchange_id) FROM exchanges").fetchone()
        assert exchanges == last and exchanges % FLUSH_EVERY == 0  # whole flushes of rounds only
        missing = con.execute(
            """SELECT count(*) FROM exchanges e WHERE outcome = 'accepted'
               AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.run_id = e.run_id AND t.exchange_id = e.exchange_id)"""
        ).fetchone()[0]
        assert missing == 0  # no exchange without its transfers
        assert con.execute("SELECT max(exchange_id) FROM offers").fetchone()[0] == last
    finally:
        con.close()
    # The killed flush's exchanges were written: only the commit was missing.
    committed_parts = manifest_of(store, "killed")["tables"]["exchanges"]["parts"]
    assert len(list((store.root / "runs" / "killed" / "exchanges").glob("part-*.parquet"))) == committed_parts + 1
    resumed = resume_simulation("killed", store)
    assert resumed.status == "completed" and resumed.exchanges == 60
    assert tables_of(store, "killed") == whole_run(tmp_path)


def test_a_reader_thread_sees_whole_flushes_only_while_a_run_writes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            con = store.connect()
            seen.append(con.execute(
                "SELECT (SELECT count(*) FROM exchanges), (SELECT count(*) FROM transfers)").fetchone())
            con.close()

    reader = threading.Thread(target=read)
    reader.start()
    columns = sample_columns(25)
    with RunWriter(tmp_path, "r", {}, chunk_rows=10) as writer:
        for _ in range(15):
            writer.append("exchanges", columns["exchanges"])
            writer.append("transfers", columns["transfers"])
            writer.flush()
    stop.set()
    reader.join()
    assert seen and all(e == t for e, t in seen)
