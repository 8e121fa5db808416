"""Exporting one run's public tables as JSON, CSV, Parquet or a DuckDB database.

Exports are built under a temporary name next to dest and renamed into place,
so an interrupted export never leaves something that looks complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Literal, get_args

import duckdb

from commonpool.csv_safe import neutralised_query
from commonpool.store.reader import RunInfo, Store, sql_string
from commonpool.store.schema import TABLES

ExportFormat = Literal["json", "csv", "parquet", "duckdb"]

# Every public table and view that has one row set per run. `runs` is exported as
# run.json (parquet/csv), the "run" object (json) or a one-row table (duckdb).
_EXPORTED = [*TABLES, "final_holdings"]


def _run_filter(table: str, run_id: str) -> str:
    return f'SELECT * FROM "{table}" WHERE run_id = {sql_string(run_id)}'


def _run_json(info: RunInfo) -> dict[str, object]:
    # The computed status, so an export of a dead run does not claim it is running.
    return {**info.meta, "status": info.status}


def export_run(store: Store, run_id: str, fmt: ExportFormat, dest: Path) -> Path:
    """Write run_id's tables to dest (a folder for csv/parquet, a file otherwise); return dest."""
    allowed = get_args(ExportFormat)
    if fmt not in allowed:
        raise ValueError(f"export format must be one of {list(allowed)}, got {fmt!r}")
    info = store.run(run_id)  # RunNotFoundError before anything is written
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"export destination {dest} already exists; choose a new path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    con = store.connect([run_id])
    try:
        if fmt in ("csv", "parquet"):
            tmp.mkdir()
            for table in _EXPORTED:
                target = sql_string(str(tmp / f"{table}.{fmt}"))
                query = _run_filter(table, run_id)
                if fmt == "csv":  # names and notes that start like a formula stay text in a spreadsheet
                    query = neutralised_query(con, query)
                options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER true"
                con.execute(f"COPY ({query}) TO {target} ({options})")
            (tmp / "run.json").write_text(json.dumps(_run_json(info), indent=2, sort_keys=True))
        elif fmt == "json":
            _export_json(con, info, tmp)
        else:
            con.execute(f"ATTACH {sql_string(str(tmp))} AS export_db")
            for table in [*_EXPORTED, "runs"]:
                con.execute(f'CREATE TABLE export_db."{table}" AS {_run_filter(table, run_id)}')
            con.execute("DETACH export_db")
        os.replace(tmp, dest)
    except duckdb.IOException as exc:
        _remove(tmp)
        if "No space left on device" in str(exc):
            # DuckDB reports a full disk as its own error; callers handle it as the OSError it is.
            raise OSError(errno.ENOSPC, f"No space left on device writing {dest}") from None
        raise
    except BaseException:
        _remove(tmp)
        raise
    finally:
        con.close()
    return dest


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)


def _export_json(con: duckdb.DuckDBPyConnection, info: RunInfo, tmp: Path) -> None:
    """One document {"run": ..., "tables": {name: [rows]}}, streamed table by table.

    DuckDB writes each table as a JSON array (maps as objects, timestamps as
    text) to a scratch file that is copied into the document, so memory stays
    bounded however many rows a table has.
    """
    scratch = tmp.with_name(tmp.name + ".part")
    try:
        with tmp.open("w") as out:
            out.write('{"run": ' + json.dumps(_run_json(info), sort_keys=True) + ', "tables": {')
            for i, table in enumerate(_EXPORTED):
                con.execute(
                    f"COPY ({_run_filter(table, info.run_id)}) TO {sql_string(str(scratch))} (FORMAT json, ARRAY true)"
                )
                out.write(("" if i == 0 else ", ") + json.dumps(table) + ": ")
                with scratch.open() as rows:
                    shutil.copyfileobj(rows, out)
            out.write("}}\n")
    finally:
        scratch.unlink(missing_ok=True)
