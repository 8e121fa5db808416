"""The run store: each run writes its own folder of Parquet files committed by a
manifest in run.json; readers query all runs at once through DuckDB views; user
SQL goes through the locked-down console."""

from commonpool.store.console import ConsoleError, ConsoleResult, console_query
from commonpool.store.durable import write_json_atomic
from commonpool.store.errors import RunExistsError, RunNotFoundError, SweepNotFoundError
from commonpool.store.export import export_run
from commonpool.store.reader import RunInfo, Store, SweepInfo
from commonpool.store.schema import TABLES
from commonpool.store.trash import GRACE_SECONDS
from commonpool.store.writer import RunWriter

__all__ = [
    "GRACE_SECONDS",
    "TABLES",
    "ConsoleError",
    "ConsoleResult",
    "RunExistsError",
    "RunInfo",
    "RunNotFoundError",
    "RunWriter",
    "Store",
    "SweepInfo",
    "SweepNotFoundError",
    "console_query",
    "export_run",
    "write_json_atomic",
]
