"""A run's stored tables as comparable rows: what "the same run" means in tests."""

from __future__ import annotations

from commonpool.store import Store
from commonpool.store.schema import TABLES


def run_tables(store: Store, run_id: str) -> dict[str, list[tuple]]:
    """Every public table's rows of one run, without run_id, in a canonical order
    (run_metrics exactly: its float aggregates add rows in a fixed order)."""
    con = store.connect()
    try:
        out = {}
        for name in TABLES:
            columns = [c for c in TABLES[name].names if c != "run_id"]
            out[name] = con.execute(
                f"SELECT {', '.join(columns)} FROM {name} WHERE run_id = ? ORDER BY ALL", parameters=[run_id]
            ).fetchall()
    finally:
        con.close()
    return out


def table_counts(store: Store, run_id: str) -> dict[str, int]:
    """How many rows each public table holds for one run, as readers see them."""
    con = store.connect()
    try:
        return {t: con.execute(f'SELECT count(*) FROM "{t}" WHERE run_id = ?', [run_id]).fetchone()[0] for t in TABLES}
    finally:
        con.close()
