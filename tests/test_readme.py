"""The README is the users' reference for the public tables: every column is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commonpool.store.schema import RUNS, SWEEPS, TABLES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _row(table: str) -> str:
    match = re.search(rf"^\| `{table}`.*$", README, flags=re.MULTILINE)
    assert match, f"README has no row for table {table}"
    return match.group(0)


@pytest.mark.parametrize("table", [*TABLES, "runs", "sweeps"])
def test_every_public_column_is_documented(table: str) -> None:
    schema = {"runs": RUNS, "sweeps": SWEEPS}.get(table) or TABLES[table]
    row = _row(table)
    missing = [c for c in schema.names if c != "run_id" and f"`{c}`" not in row]
    assert not missing, f"{table}: undocumented columns {missing}"
