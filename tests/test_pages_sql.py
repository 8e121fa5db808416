"""The SQL page: the locked-down console with its schema, examples, results and downloads."""

from __future__ import annotations

from commonpool.store import Store
from pages_support import app, no_exceptions, small_run, unescaped


def run_query(at, sql: str):  # noqa: ANN001, ANN201
    at.text_area(key="sql_query").input(sql)
    return at.button(key="sql_run").click().run()


def test_the_schema_lists_every_public_table(store: Store) -> None:
    at = app("pages/sql.py")
    no_exceptions(at)
    schema = at.dataframe[0].value
    assert {"runs", "exchanges", "offers", "advice", "transfers", "participants", "final_holdings (view)"} <= set(schema["table"])
    assert "initiator_utility_before" in set(schema[schema["table"] == "exchanges"]["column"])


def test_a_query_returns_a_table_with_downloads(store: Store) -> None:
    run_id = small_run(store)
    at = run_query(app("pages/sql.py"), "SELECT outcome, count(*) AS n FROM exchanges GROUP BY outcome ORDER BY n DESC")
    no_exceptions(at)
    assert not at.error
    result = at.dataframe[1].value
    assert list(result.columns) == ["outcome", "n"]
    assert result["n"].sum() == 240
    assert {d.label for d in at.download_button} == {"CSV", "Parquet"}
    assert run_id


def test_choosing_an_example_fills_the_query(store: Store) -> None:
    at = app("pages/sql.py")
    at.selectbox(key="sql_example").set_value("Units moved per resource").run()
    assert "FROM transfers" in at.text_area(key="sql_query").value
    at.button(key="sql_run").click().run()
    assert not at.error


def test_a_write_is_refused_with_a_message(store: Store) -> None:
    small_run(store)
    at = run_query(app("pages/sql.py"), "DELETE FROM exchanges")
    no_exceptions(at)
    assert unescaped(at.error[0].value) == (
        "Query refused or failed: only SELECT (or EXPLAIN) is allowed: the console is read-only, got DELETE"
    )
    at = run_query(at, "COPY (SELECT 1) TO '/tmp/commonpool-escape.csv'")
    assert "the console is read-only" in unescaped(at.error[0].value)
    at = run_query(at, "WITH d AS (DELETE FROM exchanges RETURNING *) SELECT count(*) FROM d")
    assert "refused" in unescaped(at.error[0].value)


def test_a_broken_query_shows_the_error_not_a_traceback(store: Store) -> None:
    at = run_query(app("pages/sql.py"), "SELECT nope FROM exchanges")
    no_exceptions(at)
    assert "nope" in unescaped(at.error[0].value)
    assert "Traceback" not in unescaped(at.error[0].value)
