"""Writing one run into its own folder of the store.

DuckDB lets only one process write a database file and blocks readers meanwhile,
so a run never writes into a shared database. Instead each run owns
<store>/runs/<run_id>/: run.json (meta, status, counters, manifest) and one folder
per table of Parquet files.

A flush writes each table's new rows as a part file (temporary name, fsync,
rename, fsync of the folder), then commits them all at once by replacing
run.json with a manifest that names them (see manifest.py). Readers read only
what a manifest names, so they see every table of a flush or none, and a write
that fails (a full disk) commits nothing: the run keeps every earlier flush and
can be resumed. Files are never renamed or rewritten once named in a manifest;
compaction writes a new file, and what it supersedes goes to the trash (trash.py).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from commonpool.store import _proc, manifest
from commonpool.store.durable import COMPRESSION, fsync_dir, fsync_file, write_json_atomic, write_parquet_tmp
from commonpool.store.errors import RunExistsError, RunNotFoundError
from commonpool.store.manifest import SAFE_ID, data_name, part_name
from commonpool.store.schema import RUN_STATUSES, RUNS, TABLES
from commonpool.store.trash import collect_garbage, put_in_trash

# Keys of run.json that the writer owns; meta and update() may not set them.
_RESERVED = frozenset(
    {
        "run_id", "status", "pid", "pid_start_time", "host", "started_at", "finished_at", "duration_s", "error",
        "manifest", "committed_parts", "resumed_at",
    }
)

ArrayLike = np.ndarray | list[Any] | pa.Array | pa.ChunkedArray


def check_run_id(run_id: str) -> None:
    """Raise ValueError unless run_id is safe as a folder name and SQL literal."""
    if not isinstance(run_id, str) or not SAFE_ID.fullmatch(run_id):
        raise ValueError(
            f"run_id {run_id!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def _this_writer() -> dict[str, Any]:
    """run.json's marks of a live writer: this process, so a reader can tell when it is gone."""
    pid = os.getpid()
    return {"status": "running", "pid": pid, "pid_start_time": _proc.process_start_time(pid), "host": _proc.hostname()}


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _check_run_fields(fields: dict[str, Any]) -> None:
    """Raise TypeError if a value cannot be stored in its `runs` column."""
    for name, value in fields.items():
        if name in RUNS.names and name not in ("config", "point") and value is not None:
            try:
                pa.array([value], RUNS.field(name).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
                raise TypeError(
                    f"run field {name!r} must be {RUNS.field(name).type}, got {value!r}"
                ) from exc


def _column(values: ArrayLike, type_: pa.DataType) -> pa.Array:
    """One column as an Arrow array of exactly type_, without per-row Python work."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(type_):
        # Resource-like columns arrive as plain strings (list, numpy) or already
        # dictionary-encoded; Arrow cannot build a dictionary straight from numpy.
        arr = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
        if not pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_encode()
        return arr.cast(type_)
    if isinstance(values, pa.Array):
        return values.cast(type_)  # safe cast: overflow raises instead of wrapping
    return pa.array(values, type_)


@dataclass
class _Written:
    """A file written (fsynced, under its temporary name) but not yet committed."""

    number: int
    tmp: Path
    final: Path
    size: int
    rows: int


def _sweep(store_root: Path) -> None:
    """Delete expired garbage; never let housekeeping fail a run."""
    try:
        collect_garbage(store_root)
    except OSError:
        pass


class RunWriter:
    """Appends a run's rows in Parquet parts and keeps its run.json current.

    Use as a context manager: leaving normally completes the run, an exception
    fails it (and propagates), KeyboardInterrupt cancels it. After a failed
    write (e.g. a full disk) the writer commits nothing more: close() records
    the run as failed with its last committed flush, ready to be resumed.
    """

    def __init__(self, store_root: Path, run_id: str, meta: dict[str, Any], chunk_rows: int = 200_000) -> None:
        check_run_id(run_id)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        reserved = _RESERVED.intersection(meta)
        if reserved:
            raise ValueError(f"meta may not set {sorted(reserved)}: the writer sets them")
        _check_run_fields(meta)
        self._setup(Path(store_root), run_id, chunk_rows)
        self._tables: dict[str, dict[str, Any]] = {}
        self._next = dict.fromkeys(TABLES, 0)
        self._started = time.monotonic()
        self._info: dict[str, Any] = {
            **meta, "run_id": run_id, **_this_writer(), "started_at": _utc_now(), "manifest": {"tables": {}},
        }
        # Serialise before creating anything, so bad meta leaves no folder behind.
        json.dumps(self._info)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            raise RunExistsError(run_id) from None
        try:
            write_json_atomic(self.path / "run.json", self._info)
        except BaseException:
            # A folder without run.json would block the id for nothing (e.g. the disk was full).
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        _sweep(self._store_root)

    def append(self, table: str, columns: dict[str, ArrayLike]) -> None:
        """Buffer rows for table; write a part once chunk_rows rows are buffered (committed at the next flush)."""
        schema = TABLES.get(table)
        if schema is None:
            raise ValueError(f"unknown table {table!r}; tables are {sorted(TABLES)}")
        expected = schema.names[1:]  # run_id is filled here, never by the caller
        if set(columns) != set(expected):
            missing = sorted(set(expected) - set(columns))
            extra = sorted(set(columns) - set(expected))
            raise ValueError(f"table {table!r}: missing columns {missing}, unknown columns {extra}")
        arrays = [_column(columns[name], schema.field(name).type) for name in expected]
        rows = len(arrays[0])
        batch = pa.Table.from_arrays([pa.repeat(self.run_id, rows).cast(pa.string()), *arrays], schema=schema)
        with self._lock:
            self._check_writable()
            self._buffers[table].append(batch)
            self._buffered_rows[table] += rows
            if self._buffered_rows[table] >= self._chunk_rows:
                # Written now to bound memory; readers see it only once a flush commits it
                # together with the other tables' rows.
                self._guarded(lambda: self._write_part(table))

    def flush(self) -> None:
        """Write every non-empty buffer as a part and commit them all in one run.json replace."""
        with self._lock:
            self._check_writable()
            self._guarded(self._flush_locked)

    def update(self, **fields: Any) -> None:
        """Merge counters or other fields into run.json (atomically rewritten)."""
        reserved = _RESERVED.intersection(fields)
        if reserved:
            raise ValueError(f"update() may not set {sorted(reserved)}: the writer sets them")
        _check_run_fields(fields)
        with self._lock:
            self._check_writable()
            info = {**self._info, **fields}
            write_json_atomic(self.path / "run.json", info)
            self._info = info

    def close(self, status: str, error: str | None = None) -> None:
        """Flush, compact each table of several files into one, and record the final status."""
        if status not in RUN_STATUSES or status == "running":
            allowed = [s for s in RUN_STATUSES if s != "running"]
            raise ValueError(f"status must be one of {allowed}, got {status!r}")
        with self._lock:
            self._check_open()
            self._closed = True
            if self._broken is not None:
                # Nothing after a failed write may be committed: record the failure
                # over the last committed manifest, and stop.
                self._finish("failed", error or f"writing the run failed: {type(self._broken).__name__}: {self._broken}")
                return
            try:
                self._flush_locked()
                tables = self._compact_all()
            except Exception as exc:
                # Every committed flush is intact and readable; say why the run did
                # not finish cleanly instead of leaving it "running".
                self._discard_written()
                self._finish("failed", _join(error, f"closing the run failed: {type(exc).__name__}: {exc}"))
                raise
            self._finish(status, error, tables)

    def committed_files(self, table: str) -> list[Path]:
        """The files holding table's committed rows, in the order they were written."""
        entry = self._tables.get(table)
        return [Path(f) for f in manifest.entry_files(str(self.path / table), entry)] if entry else []

    @classmethod
    def reopen(cls, store_root: Path, run_id: str, chunk_rows: int = 200_000) -> Self:
        """Append to a run that stopped (interrupted, failed or cancelled) so it can be continued.

        Checks that every committed file is there with its recorded size and row
        count (ValueError saying what is wrong otherwise), and removes what was
        written after the last commit, so a run killed mid-flush keeps no half
        round. Part numbers continue where the run stopped.
        """
        check_run_id(run_id)
        path = Path(store_root) / "runs" / run_id
        try:
            info = json.loads((path / "run.json").read_text())
        except FileNotFoundError:
            raise RunNotFoundError(run_id) from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"run {run_id!r} cannot be resumed: its run.json is unreadable ({exc})") from None
        if not isinstance(info, dict):
            raise ValueError(f"run {run_id!r} cannot be resumed: its run.json is not a JSON object")
        status = info.get("status")
        if status == "running" and _proc.writer_alive(info.get("pid"), info.get("pid_start_time"), info.get("host")):
            raise ValueError(f"run {run_id!r} is still running in process {info.get('pid')}")
        if status == "completed":
            raise ValueError(f"run {run_id!r} is already completed")
        self = cls.__new__(cls)
        self._setup(Path(store_root), run_id, chunk_rows)
        try:
            self._tables = self._verified_tables(info)
        except manifest.ManifestError as exc:
            raise ValueError(f"run {run_id!r} cannot be resumed: {exc}") from None
        self._next = {table: self._clear_uncommitted(table) for table in TABLES}
        self._started = time.monotonic() - float(info.get("duration_s") or 0.0)
        info.pop("committed_parts", None)
        info.update(
            **_this_writer(), finished_at=None, error=None, manifest={"tables": self._tables},
            resumed_at=[*info.get("resumed_at", []), _utc_now()],
        )
        write_json_atomic(path / "run.json", info)
        self._info = info
        _sweep(self._store_root)
        return self

    def _setup(self, store_root: Path, run_id: str, chunk_rows: int) -> None:
        """State shared by a new and a reopened writer: nothing buffered, not closed."""
        self.run_id = run_id
        self._store_root = store_root
        self.path = store_root / "runs" / run_id
        self._chunk_rows = chunk_rows
        self._buffers: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        self._buffered_rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._written: dict[str, list[_Written]] = {name: [] for name in TABLES}
        self._closed = False
        self._broken: BaseException | None = None
        # The engine negotiates pairs concurrently; one lock keeps buffers and
        # part numbers consistent if appends come from several threads.
        self._lock = threading.Lock()

    def _verified_tables(self, info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The manifest's table entries, each checked against the files on disk.

        A legacy run (no manifest) gets entries built from its committed files;
        its superseded parts (already inside data.parquet) go to the trash.
        """
        done = manifest.committed(self.path, info)
        if done.pack is not None:
            raise manifest.ManifestError("it is packed")
        entries: dict[str, dict[str, Any]] = {}
        for table, files in done.tables.items():
            problem = manifest.damage(table, files)
            if problem:
                raise manifest.ManifestError(f"{problem}; the run is damaged")
            rows = sum(pq.read_metadata(f).num_rows for f in files.files)
            if files.rows is not None and rows != files.rows:
                raise manifest.ManifestError(f"{table} files hold {rows} rows, run.json recorded {files.rows}")
            if done.legacy:
                entries[table] = self._legacy_entry(table, files.files, rows)
            else:
                entries[table] = info["manifest"]["tables"][table]
        return entries

    def _legacy_entry(self, table: str, files: tuple[str, ...], rows: int) -> dict[str, Any]:
        folder = self.path / table
        sizes = [os.stat(f).st_size for f in files]
        if os.path.basename(files[0]) == "data.parquet":
            leftovers = manifest.legacy_parts(folder)
            put_in_trash(self._store_root, leftovers.values())
            first = max(leftovers, default=-1) + 1  # never reuse a name a reader may still hold
            return {"base": "data.parquet", "base_bytes": sizes[0], "first_part": first, "parts": 0,
                    "parts_bytes": 0, "rows": rows}
        return {"base": None, "base_bytes": 0, "first_part": 0, "parts": len(files), "parts_bytes": sum(sizes),
                "rows": rows}

    def _clear_uncommitted(self, table: str) -> int:
        """Remove what a killed or failed writer wrote after its last commit; the next part number.

        Files numbered from the next part on were never named in a manifest, so no
        reader can hold them and they go at once. Lower-numbered files missing from
        the manifest were superseded by a compaction and wait in the trash.
        """
        folder = self.path / table
        entry = self._tables.get(table)
        next_number = entry["first_part"] + entry["parts"] if entry else 0
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return next_number
        for name in names:
            stem = name.removesuffix(".parquet")
            number = stem.split("-", 1)[1] if "-" in stem and name.endswith(".parquet") else None
            if name.endswith(".tmp") or (number is not None and number.isdigit() and int(number) >= next_number):
                (folder / name).unlink(missing_ok=True)
        return next_number

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed:
            return
        if exc is None:
            self.close("completed")
        elif isinstance(exc, KeyboardInterrupt):
            self.close("cancelled", "KeyboardInterrupt")
        else:
            self.close("failed", f"{type(exc).__name__}: {exc}")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"run {self.run_id!r} is already closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._broken is not None:
            raise RuntimeError(f"run {self.run_id!r} stopped after a failed write: {self._broken}")

    def _guarded(self, write: Callable[[], None]) -> None:
        """Run a write; if it fails, drop everything uncommitted and refuse further writes."""
        try:
            write()
        except BaseException as exc:
            self._broken = exc
            self._discard_written()
            for table in TABLES:
                self._buffers[table] = []
                self._buffered_rows[table] = 0
            raise

    def _discard_written(self) -> None:
        """Delete files written but not committed (no reader can know of them)."""
        for written in self._written.values():
            for w in written:
                w.tmp.unlink(missing_ok=True)
                w.final.unlink(missing_ok=True)
            written.clear()

    def _write_part(self, table: str) -> None:
        data = pa.concat_tables(self._buffers[table])
        self._buffers[table] = []
        self._buffered_rows[table] = 0
        folder = self.path / table
        folder.mkdir(exist_ok=True)
        final = folder / part_name(self._next[table])
        tmp = final.with_name(final.name + ".tmp")
        size = write_parquet_tmp(data, tmp)
        self._next[table] += 1
        self._written[table].append(_Written(self._next[table] - 1, tmp, final, size, data.num_rows))

    def _flush_locked(self) -> None:
        for table, rows in self._buffered_rows.items():
            if rows:
                self._write_part(table)
        if not any(self._written.values()):
            return
        tables = dict(self._tables)
        for table, written in self._written.items():
            if not written:
                continue
            empty = {"base": None, "base_bytes": 0, "first_part": written[0].number, "parts": 0, "parts_bytes": 0, "rows": 0}
            entry = dict(tables.get(table) or empty)
            entry["parts"] += len(written)
            entry["parts_bytes"] += sum(w.size for w in written)
            entry["rows"] += sum(w.rows for w in written)
            tables[table] = entry
        # The time run so far goes with every commit: a run killed between flushes and
        # resumed later then counts its first part too (reopen starts from it).
        self._commit(tables, duration_s=round(time.monotonic() - self._started, 3))

    def _commit(self, tables: dict[str, dict[str, Any]], **fields: Any) -> None:
        """Put every written file in place, then commit them (and fields) with one run.json replace."""
        folders = set()
        for written in self._written.values():
            for w in written:
                os.replace(w.tmp, w.final)
                folders.add(w.final.parent)
        for folder in folders:
            fsync_dir(folder)
        info = {**self._info, **fields, "manifest": {"tables": tables}}
        write_json_atomic(self.path / "run.json", info)
        # Committed: from here on these files are the run's, whatever fails next.
        self._info, self._tables = info, tables
        for written in self._written.values():
            written.clear()

    def _compact_all(self) -> dict[str, dict[str, Any]]:
        """Write each table of several files as one new file; the manifest entries that name them.

        The superseded files stay where they are (readers may hold them) and are
        put in the trash just before the commit that supersedes them.
        """
        tables = dict(self._tables)
        superseded: list[Path] = []
        for table, entry in self._tables.items():
            files = self.committed_files(table)
            if len(files) < 2:
                continue  # one file already: nothing to pay for
            folder = self.path / table
            number = self._next[table]
            final = folder / data_name(number)
            tmp = final.with_name(final.name + ".tmp")
            schema = TABLES[table]
            self._written[table].append(_Written(number, tmp, final, 0, entry["rows"]))
            # One file in memory at a time keeps compaction of multi-million-row
            # tables bounded by the part size.
            with pq.ParquetWriter(tmp, schema, compression=COMPRESSION) as out:
                for path in files:
                    out.write_table(pq.read_table(path, schema=schema))
            fsync_file(tmp)
            self._next[table] += 1
            tables[table] = {"base": final.name, "base_bytes": tmp.stat().st_size, "first_part": number + 1,
                             "parts": 0, "parts_bytes": 0, "rows": entry["rows"]}
            superseded += files
        put_in_trash(self._store_root, superseded)
        return tables

    def _finish(self, status: str, error: str | None, tables: dict[str, dict[str, Any]] | None = None) -> None:
        fields = {
            "status": status,
            "finished_at": _utc_now(),
            "duration_s": round(time.monotonic() - self._started, 3),
            "error": error,
        }
        if tables is None:
            info = {**self._info, **fields}
            write_json_atomic(self.path / "run.json", info)
            self._info = info
        else:
            self._commit(tables, **fields)
        _sweep(self._store_root)


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second
