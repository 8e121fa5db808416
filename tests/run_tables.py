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


# Participant x resource pairs whose final holding is not initial + produced - consumed - expired
# - spoiled + transfers in - out, or is below zero (flows hold every kind but 'produced' as a loss).
CONSERVATION_BREAKS_SQL = """
WITH moved AS (
    SELECT participant_id, resource::VARCHAR AS resource, sum(delta) AS delta FROM (
        SELECT to_id AS participant_id, resource, quantity AS delta FROM transfers
        UNION ALL SELECT from_id, resource, -quantity FROM transfers
        UNION ALL SELECT participant_id, resource, quantity FROM flows WHERE kind = 'produced'
        UNION ALL SELECT participant_id, resource, -quantity FROM flows WHERE kind <> 'produced'
    ) GROUP BY ALL)
SELECT count(*) FROM initial_holdings i JOIN final_holdings f USING (run_id, participant_id, resource)
LEFT JOIN moved m ON m.participant_id = i.participant_id AND m.resource = i.resource::VARCHAR
WHERE i.quantity + coalesce(m.delta, 0) <> f.quantity OR f.quantity < 0
"""
