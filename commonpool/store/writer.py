"""Writing one run into its own folder of the store.

DuckDB lets only one process write a database file and blocks readers meanwhile,
so a run never writes into a shared database. Instead each run owns
<store>/runs/<run_id>/: run.json (meta, status, counters) and one folder per table
of Parquet chunks. Every file appears by rename only, so a reader (another
process, at any moment) sees whole files or none, and a killed run leaves every
chunk it flushed readable.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from commonpool.store import _proc
from commonpool.store.errors import RunExistsError, RunNotFoundError
from commonpool.store.schema import RUN_STATUSES, RUNS, TABLES

# Run ids become folder names and appear inside SQL string literals: keep them to
# a set of characters that cannot escape either.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# Keys of run.json that the writer owns; meta and update() may not set them.
_RESERVED = frozenset(
    {
        "run_id", "status", "pid", "pid_start_time", "host", "started_at", "finished_at", "duration_s", "error",
        "committed_parts", "resumed_at",
    }
)

# zstd: chunks and compacted files are both kept, and zstd is several times
# smaller than snappy on these text-heavy tables at a similar write speed.
_COMPRESSION = "zstd"

ArrayLike = np.ndarray | list[Any] | pa.Array | pa.ChunkedArray


def check_run_id(run_id: str) -> None:
    """Raise ValueError unless run_id is safe as a folder name and SQL literal."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run_id {run_id!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def _this_writer() -> dict[str, Any]:
    """run.json's marks of a live writer: this process, so a reader can tell when it is gone."""
    pid = os.getpid()
    return {"status": "running", "pid": pid, "pid_start_time": _proc.process_start_time(pid), "host": _proc.hostname()}


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


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


class RunWriter:
    """Appends a run's rows in Parquet chunks and keeps its run.json current.

    Use as a context manager: leaving normally completes the run, an exception
    fails it (and propagates), KeyboardInterrupt cancels it.
    """

    def __init__(self, store_root: Path, run_id: str, meta: dict[str, Any], chunk_rows: int = 200_000) -> None:
        check_run_id(run_id)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        reserved = _RESERVED.intersection(meta)
        if reserved:
            raise ValueError(f"meta may not set {sorted(reserved)}: the writer sets them")
        _check_run_fields(meta)
        self._setup(Path(store_root) / "runs" / run_id, run_id, chunk_rows)
        self._next_part = dict.fromkeys(TABLES, 0)
        self._started = time.monotonic()
        self._info: dict[str, Any] = {**meta, "run_id": run_id, **_this_writer(), "started_at": _utc_now()}
        # Serialise before creating anything, so bad meta leaves no folder behind.
        json.dumps(self._info)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            raise RunExistsError(run_id) from None
        _write_json_atomic(self.path / "run.json", self._info)

    def append(self, table: str, columns: dict[str, ArrayLike]) -> None:
        """Buffer rows for table; write a chunk once chunk_rows rows are buffered."""
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
            self._check_open()
            self._buffers[table].append(batch)
            self._buffered_rows[table] += rows
            if self._buffered_rows[table] >= self._chunk_rows:
                self._write_chunk(table)

    def flush(self) -> None:
        """Write every non-empty buffer as a chunk, making it visible to readers."""
        with self._lock:
            self._check_open()
            self._flush_locked()

    def update(self, **fields: Any) -> None:
        """Merge counters or other fields into run.json (atomically rewritten)."""
        reserved = _RESERVED.intersection(fields)
        if reserved:
            raise ValueError(f"update() may not set {sorted(reserved)}: the writer sets them")
        _check_run_fields(fields)
        with self._lock:
            self._check_open()
            self._info.update(fields)
            _write_json_atomic(self.path / "run.json", self._info)

    def close(self, status: str, error: str | None = None) -> None:
        """Flush, compact each table to one file, and record the final status."""
        if status not in RUN_STATUSES or status == "running":
            allowed = [s for s in RUN_STATUSES if s != "running"]
            raise ValueError(f"status must be one of {allowed}, got {status!r}")
        with self._lock:
            self._check_open()
            self._closed = True
            try:
                self._flush_locked()
                for table in TABLES:
                    self._compact(table)
            except Exception as exc:
                # The chunks are still intact and readable; say why the run did
                # not finish cleanly instead of leaving it "running".
                status, error = "failed", f"{error + '; ' if error else ''}closing the run failed: {type(exc).__name__}: {exc}"
                self._finish(status, error)
                raise
            self._finish(status, error)

    @classmethod
    def reopen(cls, store_root: Path, run_id: str, chunk_rows: int = 200_000) -> Self:
        """Append to a run that stopped (interrupted, failed or cancelled) so it can be continued.

        Parts written after the run's last flush were never committed (run.json
        counts the committed parts of each table) and are removed, so a run killed
        mid-flush cannot keep half a round. A compacted table becomes part 0 again,
        for new parts to follow it.
        """
        check_run_id(run_id)
        path = Path(store_root) / "runs" / run_id
        try:
            info = json.loads((path / "run.json").read_text())
        except FileNotFoundError:
            raise RunNotFoundError(run_id) from None
        status = info.get("status")
        if status == "running" and _proc.writer_alive(info.get("pid"), info.get("pid_start_time"), info.get("host")):
            raise ValueError(f"run {run_id!r} is still running in process {info.get('pid')}")
        if status == "completed":
            raise ValueError(f"run {run_id!r} is already completed")
        self = cls.__new__(cls)
        self._setup(path, run_id, chunk_rows)
        self._next_part = {name: self._recover_parts(name, info.get("committed_parts") or {}) for name in TABLES}
        self._started = time.monotonic() - float(info.get("duration_s") or 0.0)
        info.update(
            **_this_writer(), finished_at=None, error=None, committed_parts=dict(self._next_part),
            resumed_at=[*info.get("resumed_at", []), _utc_now()],
        )
        self._info = info
        _write_json_atomic(path / "run.json", info)
        return self

    def _setup(self, path: Path, run_id: str, chunk_rows: int) -> None:
        """State shared by a new and a reopened writer: nothing buffered, not closed."""
        self.run_id = run_id
        self.path = path
        self._chunk_rows = chunk_rows
        self._buffers: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        self._buffered_rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._closed = False
        # The engine negotiates pairs concurrently; one lock keeps buffers and
        # part numbers consistent if appends come from several threads.
        self._lock = threading.Lock()

    def _recover_parts(self, table: str, committed: dict[str, int]) -> int:
        """Put a table's files back into part form; the number of the next part."""
        folder = self.path / table
        if not folder.is_dir():
            return 0
        for leftover in folder.glob("*.tmp"):
            leftover.unlink()
        parts = sorted(folder.glob("part-*.parquet"))
        data = folder / "data.parquet"
        if data.exists():
            # Compaction puts data.parquet in place before deleting parts, so any part still here is inside it.
            for part in parts:
                part.unlink()
            os.replace(data, folder / "part-000000.parquet")
            return 1
        keep = committed.get(table, 0)
        for part in parts:
            if int(part.stem.removeprefix("part-")) >= keep:
                part.unlink()
        return keep

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

    def _flush_locked(self) -> None:
        written = False
        for table, rows in self._buffered_rows.items():
            if rows:
                self._write_chunk(table)
                written = True
        if written:
            # The commit point of a flush: parts numbered below these counts are whole
            # flushes; reopen() removes any part written after it.
            self._info["committed_parts"] = dict(self._next_part)
            _write_json_atomic(self.path / "run.json", self._info)

    def _write_chunk(self, table: str) -> None:
        data = pa.concat_tables(self._buffers[table])
        self._buffers[table] = []
        self._buffered_rows[table] = 0
        folder = self.path / table
        folder.mkdir(exist_ok=True)
        final = folder / f"part-{self._next_part[table]:06d}.parquet"
        self._next_part[table] += 1
        # Readers list only *.parquet, so the .tmp name is never read half-written.
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(data, tmp, compression=_COMPRESSION)
        os.replace(tmp, final)

    def _compact(self, table: str) -> None:
        folder = self.path / table
        parts = sorted(folder.glob("part-*.parquet"))
        if not parts:
            return
        final = folder / "data.parquet"
        if len(parts) == 1:
            os.replace(parts[0], final)  # already one whole file: a rename suffices
            return
        tmp = folder / "data.parquet.tmp"
        schema = TABLES[table]
        # One part in memory at a time keeps compaction of multi-million-row
        # tables bounded by the chunk size.
        with pq.ParquetWriter(tmp, schema, compression=_COMPRESSION) as out:
            for part in parts:
                out.write_table(pq.read_table(part, schema=schema))
        # Readers prefer data.parquet when it exists, so the parts may go only
        # after it is in place; the other order would show a run with no rows.
        os.replace(tmp, final)
        for part in parts:
            part.unlink()

    def _finish(self, status: str, error: str | None) -> None:
        self._info.update(
            status=status,
            finished_at=_utc_now(),
            duration_s=round(time.monotonic() - self._started, 3),
            error=error,
        )
        _write_json_atomic(self.path / "run.json", self._info)
