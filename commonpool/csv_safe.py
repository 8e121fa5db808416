"""CSV cells a spreadsheet reads as plain values: formulas stay text, nested values become JSON.

A name such as `=HYPERLINK("http://evil", "click")` written as-is into a CSV file
becomes a live formula when the file is opened in Excel, LibreOffice or Sheets.
Following OWASP's advice, a text cell that starts with = + - @ tab or carriage
return gets a single quote in front, which spreadsheets show as text. Numbers are
never touched: only text cells (and text column names) are.

A nested value (a MAP such as advice.valuations, a STRUCT or a LIST) has no CSV
form of its own: DuckDB writes a map as {k=v}, Arrow refuses it. Every CSV the
project writes holds it as compact JSON text instead ({"books":1.5}), which any
program reads back.

One place for every CSV the project writes: the dashboard's downloads,
`commonpool export --format csv`, `commonpool sweep export --format csv` and
`commonpool sql --format csv` (JSON for nested values only: its output is data
for programs, so its text is left exactly as stored).
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """text with a leading single quote if a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def restore(text: str) -> str:
    """The inverse of neutralise, for a file of ours that comes back (a downloaded roster, uploaded again)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_PREFIXES) else text


def _plain(value: Any) -> Any:
    """value as JSON's types: numpy arrays and scalars, decimals and dates included."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def json_cell(value: Any) -> str:
    """A nested value as the compact JSON text DuckDB's to_json writes: {"books":1.5}, [1,2]."""
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, default=str)


def _is_nested(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (Mapping, list, tuple, np.ndarray))


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of frame ready for .to_csv(): nested cells as JSON, text cells and column names neutralised."""
    import pandas as pd

    safe = frame.copy()
    for position, dtype in enumerate(safe.dtypes):
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            column = safe.iloc[:, position]
            safe.isetitem(position, column.map(
                lambda v: json_cell(v) if _is_nested(v) else neutralise(v) if isinstance(v, str) else v,
                na_action="ignore",
            ))
    if not isinstance(safe.columns, pd.MultiIndex):
        safe.columns = [neutralise(c) if isinstance(c, str) else c for c in safe.columns]
    return safe


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_text(duckdb_type: object) -> bool:
    name = str(duckdb_type).upper()
    return name in ("VARCHAR", "JSON") or name.startswith("ENUM")


def _is_nested_type(duckdb_type: object) -> bool:
    return getattr(duckdb_type, "id", "") in ("list", "array", "struct", "map", "union")


def neutralised_query(con: duckdb.DuckDBPyConnection, query: str, formulas: bool = True) -> str:
    """A SELECT over query whose columns a CSV holds plainly, for DuckDB's COPY ... (FORMAT csv).

    Nested columns become JSON text; text columns (and JSON text) are neutralised
    unless formulas is False.
    """
    relation = con.sql(query)
    quote = "''''"  # a single quote, as a SQL literal
    prefixes = ", ".join(f"chr({ord(c)})" for c in FORMULA_PREFIXES)
    columns = []
    for name, kind in zip(relation.columns, relation.types):
        column = _sql_identifier(name)
        if _is_nested_type(kind):
            columns.append(f"to_json({column})::VARCHAR AS {column}")
        elif formulas and _is_text(kind):
            columns.append(f"CASE WHEN left({column}, 1) IN ({prefixes}) THEN {quote} || {column} "
                           f"ELSE {column} END AS {column}")
        else:
            columns.append(column)
    return f"SELECT {', '.join(columns)} FROM ({query})"


def arrow_csv(table: pa.Table, formulas: bool = True) -> str:
    """table as CSV text, its cells made plain by neutralised_query (DuckDB reads the Arrow table in place)."""
    import io

    import duckdb
    import pyarrow.csv as pacsv

    con = duckdb.connect()
    try:
        con.register("csv_rows", table)
        plain = con.sql(neutralised_query(con, "SELECT * FROM csv_rows", formulas=formulas)).to_arrow_table()
    finally:
        con.close()
    sink = io.BytesIO()
    pacsv.write_csv(plain, sink)
    return sink.getvalue().decode()
