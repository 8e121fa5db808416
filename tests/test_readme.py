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


# The README's flag table -> the config fields whose defaults its "default" column states, in order.
_FLAG_DEFAULTS = {
    "`--num-participants N`": ["num_participants"],
    "`--min-exchanges N`, `--max-exchanges N`": ["min_exchanges", "max_exchanges"],
    "`--max-turns N`": ["max_turns"],
    "`--pairing random\\|need`": ["pairing"],
    "`--concurrency N`, `--budget-usd X`, `--on-llm-failure fail\\|fallback`": ["concurrency", "budget_usd",
                                                                             "on_llm_failure"],
}


@pytest.mark.parametrize("flag", list(_FLAG_DEFAULTS))
def test_the_flag_table_states_the_config_s_defaults(flag: str) -> None:
    from commonpool.config import default

    row = next((line for line in README.splitlines() if line.startswith(f"| {flag} |")), None)
    assert row, f"README has no row for {flag}"
    stated = row.rstrip(" |").rsplit("|", 1)[1].strip()
    values = [str(default(field) if default(field) is not None else "none") for field in _FLAG_DEFAULTS[flag]]
    assert stated.split(" (")[0] == ", ".join(values)


def test_run_help_states_the_config_s_defaults(capsys) -> None:
    from commonpool.cli import main
    from commonpool.config import default

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, field in (("--num-participants", "num_participants"), ("--min-exchanges", "min_exchanges"),
                        ("--max-exchanges", "max_exchanges"), ("--max-turns", "max_turns"), ("--pairing", "pairing"),
                        ("--concurrency", "concurrency"), ("--on-llm-failure", "on_llm_failure")):
        help_text = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {default(field)}" in help_text, flag
