"""Packing: many finished runs' rows in one Parquet file per table.

A sweep of 10,000 runs leaves 10,000 small files per table, and opening that
many files dominates every query over them. A pack writes all their rows once
into <store>/packs/<pack_id>/<table>.parquet, records those files' sizes and the
runs they hold in pack.json, and then points each run's manifest at the pack,
one run.json replace per run. Readers read a pack file once for all its runs,
filtered to the runs that point at it.

Crash safety: until a run's run.json points at the pack, readers read the run's
own files (and the pack's copy of its rows is ignored); afterwards they read the
pack. Either way each run's rows are read exactly once, including by readers
connected mid-pack and after a pack killed at any moment. The runs' own files go
to the trash (recorded before the first run is repointed; the sweeper keeps any
file a run's manifest still names), so readers holding them keep working for the
grace period.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow.parquet as pq

from commonpool.store.durable import COMPRESSION, fsync_dir, fsync_file, write_json_atomic
from commonpool.store.errors import RunNotFoundError
from commonpool.store.manifest import SAFE_ID
from commonpool.store.schema import ADDED_COLUMNS, TABLES
from commonpool.store.trash import put_in_trash

if TYPE_CHECKING:
    from commonpool.store.reader import Store, _Run

# Rows of a pack file per row group: small enough that a query about one run
# (rows are sorted by run) skips most of a big pack by its min/max statistics.
_ROW_GROUP_SIZE = 20_000


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pack_runs(store: Store, run_ids: Sequence[str], pack_id: str) -> Path:
    """Pack completed runs run_ids into packs/<pack_id>/; the pack's folder.

    ValueError if pack_id is unsafe or taken, or if a run cannot be packed (not
    completed, damaged, already packed, or a copied folder); RunNotFoundError for
    an unknown run. Nothing is changed in those cases.
    """
    if not isinstance(pack_id, str) or not SAFE_ID.fullmatch(pack_id):
        raise ValueError(f"pack_id {pack_id!r} is invalid: use 1-128 letters, digits, '.', '_' or '-'")
    wanted = sorted(dict.fromkeys(run_ids))  # sorted: a query about one run skips the other runs' row groups
    if not wanted:
        raise ValueError("pack: no runs given")
    runs, _ = store._scan(wanted)
    by_id = {r.info.run_id: r for r in runs}
    for run_id in wanted:
        run = by_id.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        _check_packable(run)
    folder = store.root / "packs" / pack_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        raise ValueError(f"pack {pack_id!r} already exists; choose another pack id") from None
    members = [by_id[r] for r in wanted]
    try:
        tables = _write_pack_files(folder, members)
        write_json_atomic(
            folder / "pack.json",
            {"pack_id": pack_id, "runs": wanted, "tables": tables, "created_at": datetime.now(UTC).isoformat()},
        )
    except BaseException:
        # No run points at the pack yet: it is nobody's, and nobody reads it.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    own = [f for run in members for files in run.committed.tables.values() for f in files.files]  # type: ignore[union-attr]
    put_in_trash(store.root, own)
    for run in members:
        meta = dict(run.info.meta)
        rows = {t: files.rows if files.rows is not None else _rows(files.files)
                for t, files in run.committed.tables.items()}  # type: ignore[union-attr]
        meta.pop("committed_parts", None)
        meta["manifest"] = {"pack": pack_id, "tables": {t: {"rows": n} for t, n in rows.items()}}
        meta["packed_at"] = datetime.now(UTC).isoformat()
        write_json_atomic(run.info.path / "run.json", meta)
    return folder


def _check_packable(run: _Run) -> None:
    run_id = run.info.run_id
    if run.committed is None:
        raise ValueError(f"pack: run {run_id!r} is damaged ({run.info.meta.get('error')}); it cannot be packed")
    if run.info.status != "completed":
        raise ValueError(f"pack: run {run_id!r} is {run.info.status}; only completed runs can be packed")
    if run.committed.pack is not None:
        raise ValueError(f"pack: run {run_id!r} is already in pack {run.committed.pack!r}")
    if run.recorded_id != run_id:
        raise ValueError(f"pack: folder {run_id!r} is a copy of run {run.recorded_id!r}; only original runs can be packed")


def _rows(files: Sequence[str]) -> int:
    return sum(pq.read_metadata(f).num_rows for f in files)


def _write_pack_files(folder: Path, members: Sequence[_Run]) -> dict[str, dict[str, object]]:
    """One durable file per table with rows; pack.json's entries for them."""
    tables: dict[str, dict[str, object]] = {}
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")  # a library call must not draw on the terminal
    try:
        for table in TABLES:
            files = [f for run in members if table in run.committed.tables  # type: ignore[union-attr]
                     for f in run.committed.tables[table].files]  # type: ignore[union-attr]
            if not files:
                continue
            final = folder / f"{table}.parquet"
            tmp = final.with_name(final.name + ".tmp")
            listed = "[" + ", ".join(_sql_string(str(f)) for f in files) + "]"
            # Runs stored before a column was added lack it: such a table is merged by name.
            by_name = ", union_by_name = true" if table in ADDED_COLUMNS else ""
            # DuckDB reads many small files in parallel and keeps their order.
            con.execute(
                f"COPY (SELECT * FROM read_parquet({listed}{by_name})) TO {_sql_string(str(tmp))} "
                f"(FORMAT parquet, COMPRESSION {COMPRESSION}, ROW_GROUP_SIZE {_ROW_GROUP_SIZE})"
            )
            fsync_file(tmp)
            size = tmp.stat().st_size
            tmp.rename(final)
            tables[table] = {"file": final.name, "bytes": size, "rows": pq.read_metadata(final).num_rows}
        fsync_dir(folder)
    finally:
        con.close()
    return tables


