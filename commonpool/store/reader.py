"""Reading every run of the store at once, through DuckDB views over the runs' files.

Readers never open anything a writer holds: they read run.json (replaced
atomically by the writer) and Parquet files that appear whole by rename. A fresh
in-memory DuckDB connection gets one view per public table whose file list is
fixed when the connection is made, so a query sees a consistent snapshot of the
files that existed then, including the flushed chunks of runs still running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from commonpool.store import _proc
from commonpool.store.errors import RunNotFoundError
from commonpool.store.schema import RUNS, TABLES

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

# initial_holdings plus every transfer in, minus every transfer out. Built from
# one UNION ALL so every initial_holdings row appears (zero ones too) and so does
# any participant x resource pair that only transfers touched.
_FINAL_HOLDINGS_SQL = """
CREATE VIEW final_holdings AS
SELECT run_id, participant_id, resource, CAST(sum(quantity) AS BIGINT) AS quantity
FROM (
    SELECT run_id, participant_id, resource, quantity FROM initial_holdings
    UNION ALL SELECT run_id, to_id, resource, quantity FROM transfers
    UNION ALL SELECT run_id, from_id, resource, -quantity FROM transfers
)
GROUP BY run_id, participant_id, resource
"""


def sql_string(text: str) -> str:
    """text as a SQL string literal (for paths in view definitions, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class RunInfo:
    """One run as the store sees it: run.json plus the computed status."""

    run_id: str
    status: str  # run.json's status, except "interrupted" when a "running" writer is gone
    seed: int | None
    started_at: str | None
    finished_at: str | None
    meta: dict[str, Any]  # run.json exactly as written (its own "status" may say running)
    path: Path


def _load_run(run_dir: Path) -> RunInfo | None:
    """The run in run_dir, or None while its writer has not yet written run.json."""
    path = run_dir / "run.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        # The writer replaces run.json atomically, so this is a hand edit: say where.
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    status = meta.get("status")
    if status == "running" and not _proc.writer_alive(meta.get("pid"), meta.get("pid_start_time"), meta.get("host")):
        status = "interrupted"
    return RunInfo(
        run_id=run_dir.name,  # the folder name is what every table row carries
        status=status,
        seed=meta.get("seed"),
        started_at=meta.get("started_at"),
        finished_at=meta.get("finished_at"),
        meta=meta,
        path=run_dir,
    )


# run.json objects that the `runs` view shows as JSON text.
_JSON_COLUMNS = ("config", "point")


def _runs_row(info: RunInfo) -> dict[str, Any]:
    row = {name: info.meta.get(name) for name in RUNS.names}
    row["run_id"] = info.run_id
    row["status"] = info.status
    for name in _JSON_COLUMNS:
        value = info.meta.get(name)
        row[name] = None if value is None else json.dumps(value, sort_keys=True)
    for name in ("started_at", "finished_at"):
        if row[name] is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row


def _table_files(run_dir: Path, table: str) -> list[Path]:
    folder = run_dir / table
    # List the parts before looking for data.parquet: compaction renames
    # data.parquet into place before deleting any part, so if data.parquet is
    # still absent now, every part listed above still exists and none is missing.
    parts = sorted(folder.glob("part-*.parquet"))
    data = folder / "data.parquet"
    return [data] if data.exists() else parts


def _source_sql(table: str, files: Sequence[Path]) -> str:
    """A FROM-clause source with the table's columns: its files, or no rows."""
    if files:
        return "read_parquet([" + ", ".join(sql_string(str(f)) for f in files) + "])"
    columns = ", ".join(
        f'CAST(NULL AS {_DUCKDB_TYPES[field.type]}) AS "{field.name}"' for field in TABLES[table]
    )
    return f"(SELECT {columns} WHERE false)"


class Store:
    """The run store rooted at a folder; runs live in <root>/runs/<run_id>/."""

    def __init__(self, root: Path) -> None:
        # Resolved, so the console's allowed_directories prefix matches the view paths.
        self.root = Path(root).resolve()

    @classmethod
    def default(cls) -> Store:
        """The store named by COMMONPOOL_STORE, else data/."""
        return cls(Path(os.environ.get("COMMONPOOL_STORE", "data")))

    def _run_dirs(self) -> list[Path]:
        runs = self.root / "runs"
        return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []

    def runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        infos = [info for d in self._run_dirs() if (info := _load_run(d)) is not None]
        return sorted(infos, key=lambda i: (i.started_at or "", i.run_id), reverse=True)

    def has_run(self, run_id: str) -> bool:
        """Whether a run folder of that id exists (even one still being created, before its run.json)."""
        return (self.root / "runs" / run_id).exists()

    def run(self, run_id: str) -> RunInfo:
        """One run; RunNotFoundError if the store has no run with that id."""
        run_dir = self.root / "runs" / run_id
        # The name must be a direct child of runs/ so an id like "../x" cannot escape.
        info = _load_run(run_dir) if run_dir.parent == self.root / "runs" and run_dir.is_dir() else None
        if info is None:
            raise RunNotFoundError(run_id)
        return info

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory connection with a view per public table over all runs."""
        con = duckdb.connect(":memory:")
        run_dirs = self._run_dirs()
        for table in TABLES:
            files = [f for d in run_dirs for f in _table_files(d, table)]
            source = _source_sql(table, files)
            if table == "advice":
                # The facilitator's valuations of the round, as one map per advice row.
                valuations = _source_sql("valuations", [f for d in run_dirs for f in _table_files(d, "valuations")])
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
        runs = pa.Table.from_pylist([_runs_row(i) for i in self.runs()], schema=RUNS)
        # A table, not a registered Arrow view: registrations are local to one
        # connection, and the console queries through a cursor (a second one).
        con.register("_runs_arrow", runs)
        con.execute("CREATE TABLE runs AS SELECT * FROM _runs_arrow")
        con.unregister("_runs_arrow")
        return con

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run trusted SQL (metrics, export) over a fresh connection; not for user-typed SQL."""
        con = self.connect()
        try:
            return con.sql(sql, params=params).to_arrow_table()
        finally:
            con.close()
