"""Reading every run of the store at once, through DuckDB views over the runs' files.

Readers never open anything a writer holds: they read run.json (replaced
atomically by the writer) and the Parquet files its manifest commits (see
manifest.py), which are never renamed or rewritten once committed. A fresh
in-memory DuckDB connection gets one view per public table whose file list is
fixed when the connection is made: a snapshot of the committed flushes of every
run at that moment, all tables of a flush or none. Files a later manifest no
longer names are deleted only after trash.GRACE_SECONDS, so a connection held
longer than that may find one gone and should be made afresh (Store.query does).

A run whose run.json is unreadable or ill-typed, or whose committed files are
missing or not the size recorded, reads as status "damaged" with the reason in
`error`, and its rows are left out of the table views: one damaged run never
hides the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from commonpool.store import _proc, manifest
from commonpool.store.errors import RunNotFoundError, SweepNotFoundError
from commonpool.store.manifest import SAFE_ID, Committed, ManifestError, TableFiles
from commonpool.store.schema import ADDED_COLUMNS, RUN_STATUSES, RUNS, SWEEP_STATUSES, SWEEPS, TABLES
from commonpool.store.trash import collect_garbage

# DuckDB types of the schema's Arrow types, for the empty views of tables that
# have no file yet (dictionary-encoded Parquet columns read back as VARCHAR).
_DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.dictionary(pa.int16(), pa.string()): "VARCHAR",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
}

# initial_holdings plus every transfer in, minus every transfer out, plus every
# flow (produced adds; consumed, expired and spoiled remove). Built from one
# UNION ALL so every initial_holdings row appears (zero ones too) and so does
# any participant x resource pair that only transfers or flows touched.
_FINAL_HOLDINGS_SQL = """
CREATE VIEW final_holdings AS
SELECT run_id, participant_id, resource, CAST(sum(quantity) AS BIGINT) AS quantity
FROM (
    SELECT run_id, participant_id, resource, quantity FROM initial_holdings
    UNION ALL SELECT run_id, to_id, resource, quantity FROM transfers
    UNION ALL SELECT run_id, from_id, resource, -quantity FROM transfers
    UNION ALL SELECT run_id, participant_id, resource, CASE WHEN kind = 'produced' THEN quantity ELSE -quantity END
              FROM flows
)
GROUP BY run_id, participant_id, resource
"""

DAMAGED = "damaged"  # a status only the reader reports, like "interrupted"


def sql_string(text: str) -> str:
    """text as a SQL string literal (for paths in view definitions, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class RunInfo:
    """One run as the store sees it: run.json plus the computed status."""

    run_id: str  # the folder's name, which every row of the run carries in the views
    status: str  # run.json's status, except "interrupted" (writer gone) and "damaged" (see module doc)
    seed: int | None
    started_at: str | None
    finished_at: str | None
    meta: dict[str, Any]  # run.json as written; for a damaged run only run_id, status and error (the reason)
    path: Path


@dataclass(frozen=True)
class SweepInfo:
    """One sweep as the store sees it: sweep.json plus the computed status."""

    sweep_id: str
    status: str  # sweep.json's status, except "interrupted" (driver gone) and "damaged" (unreadable)
    started_at: str | None
    finished_at: str | None
    meta: dict[str, Any]  # sweep.json as written; for a damaged sweep only sweep_id, status and error
    path: Path


class _Bad(Exception):
    """A run.json or sweep.json that cannot be read as its schema says; the message is the reason."""


@dataclass
class _Run:
    """A run as scanned: its info, its `runs` row and where its committed rows are."""

    info: RunInfo
    recorded_id: str | None = None  # run_id inside its files; differs from the folder for a copied folder
    committed: Committed | None = None  # None for a damaged run

    def row(self) -> dict[str, Any]:
        """The run's row of the `runs` view (built only when a connection needs it)."""
        if self.committed is None:
            return _damaged_row(RUNS, "run_id", self.info.run_id, self.info.meta["error"])
        return _row(self.info.meta, _RUN_FIELDS, "run_id", self.info.run_id, self.info.status)


@dataclass
class _Pack:
    """A pack as scanned: its files per table, the runs it holds, or why it is unusable."""

    files: dict[str, Path] = field(default_factory=dict)
    runs: frozenset[str] = frozenset()
    problem: str | None = None


def _field_kinds(schema: pa.Schema, json_columns: Sequence[str]) -> list[tuple[str, str]]:
    """(name, kind) of each column, computed once: comparing Arrow types per run is slow."""
    kinds = {pa.string(): "text", pa.int64(): "int", pa.float64(): "float"}
    return [
        (f.name, "json" if f.name in json_columns else "time" if pa.types.is_timestamp(f.type) else kinds[f.type])
        for f in schema
    ]


_RUN_FIELDS = _field_kinds(RUNS, ("config", "point"))  # run.json objects the view shows as JSON text
_SWEEP_FIELDS = _field_kinds(SWEEPS, ("spec",))
_KIND_WORDS = {"text": "text", "int": "a whole number", "float": "a number", "json": "an object"}


# The JSON types each kind of column accepts, compared with type(): bool is an
# int subclass and must not pass as a number.
_ACCEPTS: dict[str, tuple[type, ...]] = {"text": (str,), "int": (int,), "float": (int, float), "json": (dict,)}


def _check(meta: Any, fields: list[tuple[str, str]], statuses: Sequence[str]) -> None:
    """_Bad naming the first field of a parsed run.json/sweep.json its view column cannot hold.

    Checked in Python, field by field: a pyarrow conversion per run would make
    listing 10,000 runs take seconds.
    """
    if not isinstance(meta, dict):
        raise _Bad(f"is not a JSON object (got {type(meta).__name__})")
    for name, kind in fields:
        value = meta.get(name)
        if value is None:
            continue
        if kind == "time":
            try:
                datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise _Bad(f"{name} must be an ISO date and time, got {value!r:.60}") from None
        elif type(value) not in _ACCEPTS[kind] or (kind == "int" and not -(2**63) <= value < 2**63):
            raise _Bad(f"{name} must be {_KIND_WORDS[kind]}, got {value!r:.60}")
    if meta.get("status") not in statuses:
        raise _Bad(f"status must be one of {', '.join(statuses)}, got {meta.get('status')!r:.60}")


def _row(meta: dict[str, Any], fields: list[tuple[str, str]], key: str, name: str, status: str) -> dict[str, Any]:
    """The view row of a checked run.json/sweep.json, under its folder's name and computed status."""
    row: dict[str, Any] = {}
    for field_name, kind in fields:
        value = meta.get(field_name)
        if value is not None and kind == "json":
            value = json.dumps(value, sort_keys=True)
        elif value is not None and kind == "time":
            value = datetime.fromisoformat(value)
        row[field_name] = value
    row[key], row["status"] = name, status
    return row


def _damaged_row(schema: pa.Schema, key: str, name: str, reason: str) -> dict[str, Any]:
    return {**dict.fromkeys(schema.names), key: name, "status": DAMAGED, "error": reason}


def _read_json(path: str | Path) -> Any:
    """The parsed file; _Bad if it cannot be read or parsed, FileNotFoundError if absent."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise _Bad(f"cannot be read ({exc})") from None
    if not text.strip():
        raise _Bad("is empty")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Bad(f"is not valid JSON ({exc})") from None


def _live_status(status: str, meta: dict[str, Any]) -> str:
    if status == "running" and not _proc.writer_alive(meta.get("pid"), meta.get("pid_start_time"), meta.get("host")):
        return "interrupted"
    return status


def _scan_run(run_dir: Path, packs: Callable[[str], _Pack]) -> _Run | None:
    """The run in run_dir, or None while its writer has not yet written run.json."""
    name, folder = run_dir.name, str(run_dir)  # text once: Path operations dominate a scan of 10,000 runs
    try:
        meta = _read_json(f"{folder}/run.json")
        _check(meta, _RUN_FIELDS, RUN_STATUSES)
        recorded = meta.get("run_id", name)
        if not isinstance(recorded, str) or not SAFE_ID.fullmatch(recorded):
            raise _Bad(f"run_id must be a run id, got {recorded!r:.60}")
        try:
            done = manifest.committed(folder, meta)
        except ManifestError as exc:
            raise _Bad(str(exc)) from None
    except FileNotFoundError:
        return None
    except _Bad as bad:
        return _damaged_run(run_dir, f"run.json {bad}")
    problem = _damage(done, recorded, packs)
    if problem:
        return _damaged_run(run_dir, problem)
    # The folder name, not run.json's run_id, is what every row of the run carries.
    status = _live_status(meta["status"], meta)
    info = RunInfo(name, status, meta.get("seed"), meta.get("started_at"), meta.get("finished_at"), meta, run_dir)
    return _Run(info, recorded, done)


def _damaged_run(run_dir: Path, reason: str) -> _Run:
    name = run_dir.name
    info = RunInfo(name, DAMAGED, None, None, None, {"run_id": name, "status": DAMAGED, "error": reason}, run_dir)
    return _Run(info)


def _damage(done: Committed, recorded: str, packs: Callable[[str], _Pack]) -> str | None:
    """Why a run's committed files are unusable, or None."""
    if done.pack is not None:
        pack = packs(done.pack)
        if pack.problem:
            return f"pack {done.pack}: {pack.problem}"
        if recorded not in pack.runs:
            return f"pack {done.pack} does not hold run {recorded}"
        return None
    for table, files in done.tables.items():
        problem = manifest.damage(table, files)
        if problem:
            return problem
    return None


def _scan_pack(folder: Path) -> _Pack:
    """A pack's files (each checked against its recorded size) and the runs it holds."""
    try:
        meta = json.loads((folder / "pack.json").read_text())
        tables = meta["tables"]
        runs = frozenset(meta["runs"])
        files = {}
        for table, entry in tables.items():
            if table not in TABLES or not isinstance(entry["file"], str) or "/" in entry["file"]:
                return _Pack(problem=f"pack.json names a bad file for {table!r}")
            files[table] = folder / entry["file"]
            problem = manifest.damage(table, TableFiles((str(files[table]),), entry["bytes"], entry["rows"]))
            if problem:
                return _Pack(problem=problem)
    except FileNotFoundError:
        return _Pack(problem="pack.json is missing")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return _Pack(problem=f"pack.json is unreadable ({type(exc).__name__})")
    return _Pack(files, runs)


def _scan_sweep(sweep_dir: Path) -> tuple[SweepInfo, dict[str, Any]] | None:
    name = sweep_dir.name
    try:
        meta = _read_json(sweep_dir / "sweep.json")
        _check(meta, _SWEEP_FIELDS, SWEEP_STATUSES)
    except FileNotFoundError:
        return None
    except _Bad as bad:
        reason = f"sweep.json {bad}"
        info = SweepInfo(name, DAMAGED, None, None, {"sweep_id": name, "status": DAMAGED, "error": reason}, sweep_dir)
        return info, _damaged_row(SWEEPS, "sweep_id", name, reason)
    status = _live_status(meta["status"], meta)
    info = SweepInfo(name, status, meta.get("started_at"), meta.get("finished_at"), meta, sweep_dir)
    return info, _row(meta, _SWEEP_FIELDS, "sweep_id", name, status)


def _read_parquet(files: Sequence[str | Path], by_name: bool = False) -> str:
    return "read_parquet([" + ", ".join(sql_string(str(f)) for f in files) + "]" + (", union_by_name = true" if by_name else "") + ")"


def _in_list(ids: Sequence[str]) -> str:
    return "(" + ", ".join(sql_string(i) for i in sorted(ids)) + ")"


def _source_sql(table: str, runs: Sequence[_Run], packs: dict[str, _Pack], restricted: bool) -> str:
    """A FROM-clause source with the table's columns: the committed rows of runs, or no rows.

    Rows carry the run id of the folder they were read from: a run folder copied
    under another name reads as a run of that name (its files still say the
    original id, so its rows are relabelled), never as a second copy of the
    original. Only copies pay for the relabelling.
    """
    by_name = table in ADDED_COLUMNS
    plain: list[str] = []
    selects: list[str] = []
    packed: dict[str, list[_Run]] = {}
    for run in runs:
        done = run.committed
        if done is None:
            continue
        if done.pack is not None:
            packed.setdefault(done.pack, []).append(run)
        elif table in done.tables:
            files = done.tables[table].files
            if run.recorded_id == run.info.run_id:
                plain.extend(files)
            else:
                selects.append(f"SELECT * REPLACE ({sql_string(run.info.run_id)} AS run_id) FROM {_read_parquet(files, by_name)}")
    if plain:
        selects.insert(0, f"SELECT * FROM {_read_parquet(plain, by_name)}")
    for pack_id, members in packed.items():
        pack = packs[pack_id]
        if table not in pack.files:
            continue
        source = _read_parquet([pack.files[table]], by_name)
        originals = [r.info.run_id for r in members if r.recorded_id == r.info.run_id]
        if originals:
            # A pack is read once for all its runs; filtered only when some of its
            # runs do not (or not yet) point at it, or the connection wants fewer.
            whole = not restricted and set(originals) == pack.runs
            selects.append(f"SELECT * FROM {source}" + ("" if whole else f" WHERE run_id IN {_in_list(originals)}"))
        for copy in (r for r in members if r.recorded_id != r.info.run_id):
            selects.append(
                f"SELECT * REPLACE ({sql_string(copy.info.run_id)} AS run_id) FROM {source}"
                f" WHERE run_id = {sql_string(copy.recorded_id or '')}"
            )
    columns = ", ".join(
        f'CAST(NULL AS {_DUCKDB_TYPES[field.type]}) AS "{field.name}"' for field in TABLES[table]
    )
    empty = f"(SELECT {columns} WHERE false)"
    if selects and by_name:
        # The empty typed select supplies columns no file has yet, and the outer one the schema's order.
        names = ", ".join(f'"{name}"' for name in TABLES[table].names)
        return f"(SELECT {names} FROM (" + " UNION ALL BY NAME ".join([*selects, f"SELECT * FROM {empty}"]) + "))"
    if selects:
        return "(" + " UNION ALL ".join(selects) + ")"
    return empty


def _table_from_rows(con: duckdb.DuckDBPyConnection, name: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    # A table, not a registered Arrow view: registrations are local to one
    # connection, and the console queries through a cursor (a second one).
    con.register("_rows_arrow", pa.Table.from_pylist(rows, schema=schema))
    con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _rows_arrow')
    con.unregister("_rows_arrow")


def _newest_first(items: list[Any], key: Callable[[Any], tuple[str, str]]) -> list[Any]:
    return sorted(items, key=key, reverse=True)


class Store:
    """The run store rooted at a folder; runs live in <root>/runs/<run_id>/, sweeps in <root>/sweeps/."""

    def __init__(self, root: Path) -> None:
        # Resolved, so the console's allowed_directories prefix matches the view paths.
        self.root = Path(root).resolve()

    @classmethod
    def default(cls) -> Store:
        """The store named by COMMONPOOL_STORE, else data/."""
        return cls(Path(os.environ.get("COMMONPOOL_STORE", "data")))

    def _child_dirs(self, folder: str, names: Sequence[str] | None = None, prefix: str = "") -> list[Path]:
        """Folders directly under root/folder (all, those whose name starts with prefix, or those of the given names that exist)."""
        parent = self.root / folder
        if names is not None:
            # Only plain names: an id like "../x" must not reach outside the folder.
            plain = [n for n in dict.fromkeys(names) if n and "/" not in n and "\0" not in n and not n.startswith(".")]
            return [parent / n for n in plain if (parent / n).is_dir()]
        try:
            entries = list(os.scandir(parent))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # Hidden folders are never runs (ids cannot start with "."), e.g. a half-made copy.
        return [parent / n for n in sorted(e.name for e in entries
                                           if e.name.startswith(prefix) and e.is_dir() and not e.name.startswith("."))]

    def _scan(self, run_ids: Sequence[str] | None = None, prefix: str = "") -> tuple[list[_Run], dict[str, _Pack]]:
        packs: dict[str, _Pack] = {}

        def pack(pack_id: str) -> _Pack:
            if pack_id not in packs:
                packs[pack_id] = _scan_pack(self.root / "packs" / pack_id)
            return packs[pack_id]

        runs = [run for d in self._child_dirs("runs", run_ids, prefix) if (run := _scan_run(d, pack)) is not None]
        return runs, packs

    def runs(self, prefix: str = "") -> list[RunInfo]:
        """Every run (or every run whose id starts with prefix, e.g. a sweep's), newest first
        (damaged ones included, with the reason in meta["error"])."""
        runs, _ = self._scan(prefix=prefix)
        return _newest_first([r.info for r in runs], lambda i: (i.started_at or "", i.run_id))

    def run_list(self, prefix: str = "") -> list[Any]:
        """What `runs list` shows of every run (listing.RunSummary), newest first: Store.runs()'s
        statuses, read from a cache for packed runs (see listing.py), so 10,000 runs list in a blink."""
        from commonpool.store.listing import run_list

        return run_list(self, prefix)

    def has_run(self, run_id: str) -> bool:
        """Whether a run folder of that id exists (even one still being created, before its run.json)."""
        return (self.root / "runs" / run_id).exists()

    def run(self, run_id: str) -> RunInfo:
        """One run; RunNotFoundError if the store has no run with that id."""
        runs, _ = self._scan([run_id])
        if not runs:
            raise RunNotFoundError(run_id)
        return runs[0].info

    def sweeps(self) -> list[SweepInfo]:
        """Every sweep, newest first."""
        found = [s for d in self._child_dirs("sweeps") if (s := _scan_sweep(d)) is not None]
        return _newest_first([info for info, _ in found], lambda i: (i.started_at or "", i.sweep_id))

    def sweep(self, sweep_id: str) -> SweepInfo:
        """One sweep; SweepNotFoundError if the store has no sweep with that id."""
        found = [s for d in self._child_dirs("sweeps", [sweep_id]) if (s := _scan_sweep(d)) is not None]
        if not found:
            raise SweepNotFoundError(sweep_id)
        return found[0][0]

    def connect(self, run_ids: Sequence[str] | None = None, prefix: str = "") -> duckdb.DuckDBPyConnection:
        """A fresh in-memory connection with a view per public table, over all runs, only run_ids,
        or only the runs whose id starts with prefix (a sweep's).

        The views are a snapshot of what was committed when the connection was
        made; reconnect to see newer flushes (and after trash.GRACE_SECONDS, in
        case a file the snapshot names has been collected).
        """
        con = duckdb.connect(":memory:")
        runs, packs = self._scan(run_ids, prefix)
        restricted = run_ids is not None or bool(prefix)
        for table in TABLES:
            source = _source_sql(table, runs, packs, restricted)
            if table == "advice":
                # The facilitator's valuations of the round, as one map per advice row.
                valuations = _source_sql("valuations", runs, packs, restricted)
                con.execute(
                    f"""CREATE VIEW advice AS
                    SELECT a.*, v.valuations FROM {source} AS a
                    LEFT JOIN (
                        SELECT run_id, round, MAP(list(resource ORDER BY resource), list(valuation ORDER BY resource)) AS valuations
                        FROM {valuations} GROUP BY run_id, round
                    ) AS v ON a.run_id = v.run_id AND a.round = v.round"""
                )
            else:
                con.execute(f'CREATE VIEW "{table}" AS SELECT * FROM {source}')
        con.execute(_FINAL_HOLDINGS_SQL)
        _table_from_rows(con, "runs", [r.row() for r in runs], RUNS)
        sweeps = [s for d in self._child_dirs("sweeps") if (s := _scan_sweep(d)) is not None]
        _table_from_rows(con, "sweeps", [row for _, row in sweeps], SWEEPS)
        return con

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None, run_ids: Sequence[str] | None = None
    ) -> pa.Table:
        """Run trusted SQL (metrics, export) over a fresh connection; not for user-typed SQL.

        A file can vanish between listing and reading only if its garbage outlived
        the grace period under a very slow query; then the query runs once more
        on a fresh snapshot.
        """
        for attempt in (1, 2):
            con = self.connect(run_ids)
            try:
                return con.sql(sql, params=params).to_arrow_table()
            except duckdb.IOException:
                if attempt == 2:
                    raise
            finally:
                con.close()
        raise AssertionError("unreachable")

    def collect_garbage(self) -> int:
        """Delete files no manifest commits any more once their grace period is over; how many."""
        return collect_garbage(self.root)

    def pack(self, run_ids: Sequence[str], pack_id: str) -> Path:
        """Move completed runs' rows into one file per table under packs/<pack_id>/; the pack's folder.

        See pack.py: crash-safe, and readers see each run's rows exactly once throughout.
        """
        from commonpool.store.pack import pack_runs

        return pack_runs(self, run_ids, pack_id)
