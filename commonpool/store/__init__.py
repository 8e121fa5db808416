"""The run store: each run writes its own folder of Parquet chunks; readers query
all runs at once through DuckDB views; user SQL goes through the locked-down console."""

from commonpool.store.console import ConsoleError, ConsoleResult, console_query
from commonpool.store.errors import RunExistsError, RunNotFoundError
from commonpool.store.export import export_run
from commonpool.store.reader import RunInfo, Store
from commonpool.store.schema import TABLES
from commonpool.store.writer import RunWriter

__all__ = [
    "TABLES",
    "ConsoleError",
    "ConsoleResult",
    "RunExistsError",
    "RunInfo",
    "RunNotFoundError",
    "RunWriter",
    "Store",
    "console_query",
    "export_run",
]
