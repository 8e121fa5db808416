"""CSV cells that a spreadsheet will not run as formulas (CSV injection).

A name such as `=HYPERLINK("http://evil", "click")` written as-is into a CSV file
becomes a live formula when the file is opened in Excel, LibreOffice or Sheets.
Following OWASP's advice, a text cell that starts with = + - @ tab or carriage
return gets a single quote in front, which spreadsheets show as text. Numbers are
never touched: only text cells (and text column names) are.

One place for every CSV the project writes for people: the dashboard's downloads,
`commonpool export --format csv` and `commonpool sweep export --format csv`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """text with a leading single quote if a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def restore(text: str) -> str:
    """The inverse of neutralise, for a file of ours that comes back (a downloaded roster, uploaded again)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_PREFIXES) else text


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of frame whose text cells and text column names are neutralised; write it with .to_csv()."""
    import pandas as pd

    safe = frame.copy()
    for position, dtype in enumerate(safe.dtypes):
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            column = safe.iloc[:, position]
            safe.isetitem(position, column.map(lambda v: neutralise(v) if isinstance(v, str) else v,
                                               na_action="ignore"))
    if not isinstance(safe.columns, pd.MultiIndex):
        safe.columns = [neutralise(c) if isinstance(c, str) else c for c in safe.columns]
    return safe


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_text(duckdb_type: object) -> bool:
    name = str(duckdb_type).upper()
    return name in ("VARCHAR", "JSON") or name.startswith("ENUM")


def neutralised_query(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """A SELECT over query with every text column neutralised, for DuckDB's COPY ... (FORMAT csv).

    Nested values (maps, lists, structs) are written as {...} or [...], which no
    spreadsheet reads as a formula, so they are left as they are.
    """
    relation = con.sql(query)
    quote = "''''"  # a single quote, as a SQL literal
    prefixes = ", ".join(f"chr({ord(c)})" for c in FORMULA_PREFIXES)
    columns = []
    for name, kind in zip(relation.columns, relation.types):
        column = _sql_identifier(name)
        if _is_text(kind):
            columns.append(f"CASE WHEN left({column}, 1) IN ({prefixes}) THEN {quote} || {column} "
                           f"ELSE {column} END AS {column}")
        else:
            columns.append(column)
    return f"SELECT {', '.join(columns)} FROM ({query})"
