"""The SQL console: one read-only SELECT over the store, nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from test_store_fixtures import write_sample_run

from commonpool.store import ConsoleError, Store, console_query


@pytest.fixture
def store(tmp_path: Path) -> Store:
    write_sample_run(tmp_path / "store", "r1", n_exchanges=30)
    # Files a store may hold beside its runs, which the console must not read.
    (tmp_path / "store" / "cache").mkdir()
    (tmp_path / "store" / "cache" / "llm.sqlite").write_bytes(b"SQLite format 3\x00 cached answers")
    (tmp_path / "store" / ".env").write_text("OPENAI_API_KEY=sk-not-for-the-console\n")
    return Store(tmp_path / "store")


def test_an_allowed_query_returns_the_correct_rows_and_types(store: Store) -> None:
    result = console_query(store, "SELECT outcome, count(*) AS n, sum(turns) AS t FROM exchanges GROUP BY 1 ORDER BY 1")
    assert result.columns == ["outcome", "n", "t"]
    assert result.rows.to_pylist() == [
        {"outcome": "accepted", "n": 10, "t": 20},
        {"outcome": "no_deal", "n": 10, "t": 20},
        {"outcome": "rejected", "n": 10, "t": 20},
    ]
    assert result.truncated is False
    assert result.elapsed >= 0


def test_every_public_table_and_view_is_queryable(store: Store) -> None:
    for table in ["runs", "exchanges", "offers", "advice", "valuations", "final_holdings", "llm_calls"]:
        assert console_query(store, f"SELECT count(*) AS n FROM {table}").rows.num_rows == 1


def test_a_result_over_the_limit_is_capped_and_marked_truncated(store: Store) -> None:
    result = console_query(store, "SELECT * FROM offers ORDER BY exchange_id, turn", limit=7)
    assert result.rows.num_rows == 7 and result.truncated is True
    assert result.rows.column("exchange_id").to_pylist() == [0, 0, 1, 1, 2, 2, 3]
    exact = console_query(store, "SELECT * FROM exchanges", limit=30)
    assert exact.rows.num_rows == 30 and exact.truncated is False


def test_a_huge_result_is_capped_without_computing_it_all(store: Store) -> None:
    result = console_query(store, "SELECT * FROM range(1000000000000)", limit=100)
    assert result.rows.num_rows == 100 and result.truncated is True


def test_a_long_query_is_stopped_after_the_timeout(store: Store) -> None:
    # Unbounded, this join runs for ~20 s on a laptop; it must be stopped at 0.5 s.
    with pytest.raises(ConsoleError, match=r"stopped: it ran longer than the 0.5 s limit"):
        console_query(store, "SELECT count(*) FROM range(100000) a, range(100000) b WHERE a.range + b.range = 7", timeout_s=0.5)


def test_reading_a_parquet_file_inside_the_store_is_allowed(store: Store) -> None:
    path = next((store.root / "runs" / "r1" / "exchanges").glob("*.parquet"))  # its one committed file
    assert console_query(store, f"SELECT count(*) AS n FROM read_parquet('{path}')").rows.to_pylist() == [{"n": 30}]


def test_explain_of_a_select_is_allowed(store: Store) -> None:
    assert console_query(store, "EXPLAIN SELECT * FROM exchanges").rows.num_rows >= 1
    assert console_query(store, "EXPLAIN ANALYZE SELECT count(*) FROM exchanges").rows.num_rows >= 1


REFUSED = {
    "read a file outside the store": ("SELECT * FROM read_csv('/etc/passwd')", "refused: Permission Error"),
    "escape the store with ..": ("SELECT * FROM read_csv('{root}/../../../../etc/passwd')", "refused: Permission Error"),
    "list files outside the store": ("SELECT * FROM glob('/etc/*')", "refused: Permission Error"),
    "copy to a file outside": ("COPY (SELECT 1) TO '/tmp/commonpool-console-x.csv'", "only SELECT"),
    "copy into the store": ("COPY (SELECT 1) TO '{root}/x.csv'", "only SELECT"),
    "explain analyze a copy": ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/x.csv'", "only EXPLAIN of a SELECT"),
    "explain analyze with a comment": ("EXPLAIN /* x */ ANALYZE COPY (SELECT 1) TO '{root}/x.csv'", "only EXPLAIN of a SELECT"),
    "attach outside": ("ATTACH '/tmp/commonpool-console-x.db'", "only SELECT"),
    "attach inside the store": ("ATTACH '{root}/x.db'", "only SELECT"),
    "install an extension": ("INSTALL httpfs", "only SELECT"),
    "load an extension": ("LOAD httpfs", "only SELECT"),
    "change a setting": ("SET enable_external_access = true", "only SELECT"),
    "reset a setting": ("RESET lock_configuration", "only SELECT"),
    "call": ("CALL enable_logging()", "only SELECT"),
    "change a setting from a select": ("SELECT * FROM enable_logging()", "configuration has been locked"),
    "pragma": ("PRAGMA version", "only SELECT"),
    "two statements": ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
    "no statement": ("  ", "exactly one statement, got 0"),
    "data-modifying CTE": ("WITH d AS (DELETE FROM runs RETURNING *) SELECT * FROM d", "refused: the console is read-only"),
    "insert CTE": ("WITH d AS (INSERT INTO runs (run_id) VALUES ('x') RETURNING *) SELECT * FROM d", "read-only"),
    "delete": ("DELETE FROM runs", "only SELECT"),
    "update": ("UPDATE runs SET seed = 1", "only SELECT"),
    "create": ("CREATE TABLE x AS SELECT 1", "only SELECT"),
    "drop": ("DROP VIEW exchanges", "only SELECT"),
    "export database": ("EXPORT DATABASE '{root}/dump'", "only SELECT"),
    "syntax error": ("SELEC 1", "Parser Error"),
    "read the LLM cache": ("SELECT * FROM read_blob('{root}/cache/llm.sqlite')", "refused: Permission Error"),
    "read a .env in the store": ("SELECT * FROM read_text('{root}/.env')", "refused: Permission Error"),
    "a result too large in bytes": ("SELECT repeat('x', 1000000) FROM range(200)", "refused: the result is over 64 MB"),
}


@pytest.mark.parametrize("sql, message", list(REFUSED.values()), ids=list(REFUSED))
def test_the_console_refuses(store: Store, sql: str, message: str) -> None:
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*"))
    with pytest.raises(ConsoleError, match=message) as caught:
        console_query(store, sql.format(root=store.root))
    assert "\n" not in str(caught.value)  # one line, fit for the dashboard
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*")) == before  # nothing written
    assert not Path("/tmp/commonpool-console-x.csv").exists()
    # Nothing refused changed the data either.
    assert console_query(store, "SELECT count(*) AS n FROM runs").rows.to_pylist() == [{"n": 1}]


def test_a_store_named_like_a_prefix_of_another_folder_does_not_open_it(tmp_path: Path) -> None:
    write_sample_run(tmp_path / "data", "r1")
    write_sample_run(tmp_path / "data2", "r2")
    outside = next((tmp_path / "data2" / "runs" / "r2" / "exchanges").glob("*.parquet"))
    with pytest.raises(ConsoleError, match="refused"):
        console_query(Store(tmp_path / "data"), f"SELECT * FROM read_parquet('{outside}')")


def test_bad_limit_or_timeout_is_a_value_error(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        console_query(store, "SELECT 1", limit=0)
    with pytest.raises(ValueError, match="timeout_s"):
        console_query(store, "SELECT 1", timeout_s=0)


def test_a_failed_connection_leaves_no_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    store = Store(tmp_path / "store")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("connect failed")

    monkeypatch.setattr(Store, "connect", broken)
    with pytest.raises(OSError):
        console_query(store, "SELECT 1")
    assert list((tmp_path / "tmp").iterdir()) == []
