"""The SQL console: user-typed SQL over the store, read-only and locked down.

Each layer below stops something the others let through (all measured with
DuckDB 2.0.1, see tests/test_console.py):
- enable_external_access=false stops reading or writing files outside the store;
  allowed_directories (set first, or the views could not read their files)
  grants the store back, for writing too, so COPY/ATTACH inside it would work.
- Hence exactly one statement, of type SELECT, or EXPLAIN of a SELECT: EXPLAIN
  ANALYZE runs its statement, and EXPLAIN ANALYZE COPY ... TO writes a file.
- A data-modifying CTE (WITH d AS (DELETE ...) SELECT ...) parses as a SELECT;
  the read-only transaction is what stops it.
- Extensions cannot be installed or autoloaded, settings are locked (so the
  console cannot undo any of this), and max_execution_time stops long queries.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from commonpool.store.reader import Store, sql_string

# "EXPLAIN [ANALYZE] [(options)]" in front of the statement it explains. If the
# prefix is written any other way (comments inside it, say), what is left after
# stripping this does not parse as a SELECT and the query is refused.
_EXPLAIN_PREFIX = re.compile(r"\s*EXPLAIN(?:\s+ANALY[SZ]E)?(?:\s*\([^()'\"]*\))?\s+", re.IGNORECASE)

# Big enough for the dashboard's analyses, small enough that a runaway join
# cannot take the whole process down with it.
_MEMORY_LIMIT = "1GB"
# A result is fetched in batches of at most this many rows, and refused once it
# holds more than this many bytes: a few wide rows (repeat('x', 1000000)) must
# not fill the process's memory on their way to the screen.
_BATCH_ROWS = 256
MAX_RESULT_BYTES = 64 * 1024 * 1024


class ConsoleError(Exception):
    """A console query was refused or failed; the message is one line for the user."""


@dataclass(frozen=True)
class ConsoleResult:
    columns: list[str]
    rows: pa.Table
    truncated: bool  # more than `limit` rows existed; rows holds the first `limit`
    elapsed: float  # seconds, from lockdown to the last row fetched


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_statement(sql: str) -> str:
    """The one allowed statement in sql, or ConsoleError saying why it is refused."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConsoleError(_first_line(exc)) from None
    if len(statements) != 1:
        raise ConsoleError(f"write exactly one statement, got {len(statements)}")
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        explained = _EXPLAIN_PREFIX.match(statement.query)
        try:
            inner = duckdb.extract_statements(statement.query[explained.end() :]) if explained else []
        except duckdb.Error:
            inner = []  # not a SELECT after all: refuse below
        if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
            raise ConsoleError("only EXPLAIN of a SELECT is allowed: the console is read-only")
    elif kind != duckdb.StatementType.SELECT:
        raise ConsoleError(f"only SELECT (or EXPLAIN) is allowed: the console is read-only, got {kind.name}")
    return statement.query


def _lock_down(con: duckdb.DuckDBPyConnection, store: Store, temp_dir: str, timeout_s: float) -> None:
    # Only the folders the views read (runs and packs): not the LLM cache, nor a
    # .env file that happens to sit in the store. A trailing slash: /data/runs
    # must not also allow /data/runs2.
    readable = [str(store.root / folder).rstrip("/") + "/" for folder in ("runs", "packs")]
    # DuckDB adds its spill directory to the allowed ones (default: .tmp under the
    # working directory); a private, empty one keeps that from exposing anything.
    con.execute(f"SET temp_directory = {sql_string(temp_dir)}")
    con.execute(f"SET memory_limit = {sql_string(_MEMORY_LIMIT)}")
    con.execute(f"SET allowed_directories = [{', '.join(sql_string(d) for d in readable)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    # GLOBAL: a plain SET applies to this connection only, not to the cursor
    # the query runs on (measured: the query then ran unbounded).
    con.execute(f"SET GLOBAL max_execution_time = {max(1, round(timeout_s * 1000))}")
    con.execute("SET lock_configuration = true")


def console_query(store: Store, sql: str, limit: int = 10_000, timeout_s: float = 5.0) -> ConsoleResult:
    """Run one user-typed read-only query over the store; ConsoleError if refused or failed."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    statement = _check_statement(sql)
    con = store.connect()
    temp_dir = tempfile.mkdtemp(prefix="commonpool-console-")  # after connect: a failed connect leaves no folder
    try:
        _lock_down(con, store, temp_dir, timeout_s)
        start = time.monotonic()
        cursor = con.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            # Arrow batches of limit + 1 rows (the fetchmany(limit + 1) cap, but
            # keeping the column types that tuples would lose); reading stops as
            # soon as one row more than the limit proves the result is truncated.
            # (A DuckDB 2 relation runs its query on every call, so it is asked once.)
            reader = cursor.sql(statement).to_arrow_reader(min(limit + 1, _BATCH_ROWS))
            batches: list[pa.RecordBatch] = []
            fetched = size = 0
            for batch in reader:
                batches.append(batch)
                fetched += batch.num_rows
                size += batch.nbytes
                if size > MAX_RESULT_BYTES:
                    raise ConsoleError(f"refused: the result is over {MAX_RESULT_BYTES // 2**20} MB; "
                                       "select fewer or narrower rows")
                if time.monotonic() - start > timeout_s:  # fetching counts against the limit too
                    raise duckdb.InterruptException("fetching ran past the time limit")
                if fetched > limit:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.InterruptException:
            raise ConsoleError(f"query stopped: it ran longer than the {timeout_s:g} s limit") from None
        except duckdb.TransactionException as exc:
            if "read-only" in str(exc):
                raise ConsoleError("refused: the console is read-only") from None
            raise ConsoleError(_first_line(exc)) from None
        except duckdb.PermissionException as exc:
            raise ConsoleError(f"refused: {_first_line(exc)}") from None
        except duckdb.Error as exc:
            raise ConsoleError(_first_line(exc)) from None
        finally:
            cursor.close()
        return ConsoleResult(
            columns=reader.schema.names,
            rows=table.slice(0, limit),
            truncated=fetched > limit,
            elapsed=time.monotonic() - start,
        )
    finally:
        con.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
