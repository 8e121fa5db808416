"""SQL: the read-only console over the public tables of every run in the store."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import streamlit as st

from commonpool.store import TABLES, ConsoleError, console_query
from commonpool.store.schema import RUNS
from pages._shared import downloads, plain, store

ROW_LIMIT = 10_000

EXAMPLES: dict[str, str] = {
    "Runs, newest first": "SELECT run_id, status, engine, facilitator, exchanges_recorded, accepted, duration_s\n"
                          "FROM runs ORDER BY started_at DESC",
    "Acceptance by outcome": "SELECT run_id, outcome, count(*) AS exchanges\nFROM exchanges\n"
                             "GROUP BY ALL ORDER BY run_id, exchanges DESC",
    "Busiest traders": "SELECT e.run_id, p.name, p.personality, count(*) AS deals\n"
                       "FROM exchanges e JOIN participants p\n"
                       "  ON p.run_id = e.run_id AND p.participant_id IN (e.initiator_id, e.responder_id)\n"
                       "WHERE e.outcome = 'accepted'\nGROUP BY ALL ORDER BY deals DESC LIMIT 20",
    "Units moved per resource": "SELECT run_id, resource, sum(quantity) AS units\nFROM transfers\n"
                                "GROUP BY ALL ORDER BY run_id, units DESC",
    "What the facilitator said": "SELECT run_id, exchange_id, note\nFROM advice ORDER BY run_id, exchange_id LIMIT 50",
    "Final holdings": "SELECT run_id, participant_id, resource, quantity\nFROM final_holdings\n"
                      "ORDER BY run_id, participant_id, resource LIMIT 200",
}

st.title("SQL")
st.caption(
    f"Read-only SQL (DuckDB) over every run in the store. One SELECT per query; results stop at "
    f"{ROW_LIMIT:,} rows and queries at a few seconds. Every table has a run_id column."
)

with st.expander("Tables and their columns", expanded=False):
    schema = [
        # Resource-like columns are dictionary-encoded on disk and read back as text.
        {"table": name, "column": field.name,
         "type": "string" if pa.types.is_dictionary(field.type) else str(field.type)}
        for name, fields in [*TABLES.items(), ("runs", RUNS)]
        for field in fields
    ]
    schema.append({"table": "advice", "column": "valuations", "type": "map(resource, valuation) of the round"})
    schema += [
        {"table": "final_holdings (view)", "column": column, "type": kind}
        for column, kind in (("run_id", "string"), ("participant_id", "int32"), ("resource", "string"),
                             ("quantity", "int64"))
    ]
    st.dataframe(pd.DataFrame(schema), hide_index=True)

example = st.selectbox("Example queries", list(EXAMPLES), key="sql_example")
if st.session_state.get("sql_loaded_example") != example:
    # Only a newly chosen example replaces the text: a query being edited survives reruns.
    st.session_state["sql_loaded_example"] = example
    st.session_state["sql_query"] = EXAMPLES[example]
query = st.text_area("Query", key="sql_query", height=160)

if st.button("Run query", type="primary", key="sql_run"):
    try:
        result = console_query(store(), query, limit=ROW_LIMIT)
    except ConsoleError as exc:
        st.session_state["sql_result"] = None
        st.error(plain(f"Query refused or failed: {exc}"))
    else:
        st.session_state["sql_result"] = result

result = st.session_state.get("sql_result")
if result is not None:
    frame = result.rows.to_pandas()
    note = f" (the first {ROW_LIMIT:,}; there are more)" if result.truncated else ""
    st.caption(f"{len(frame):,} rows{note} in {result.elapsed:.3f} s")
    st.dataframe(frame, hide_index=True)
    downloads(frame, "query-result", "dl_sql")
