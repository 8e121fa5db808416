"""The living-economy scenarios of data/samples/ (issue 13, point 7): each runs as the README writes its command, and conserves."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from commonpool.cli import main
from commonpool.store import Store
from run_tables import CONSERVATION_BREAKS_SQL

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ("timebank-weekly", "seed-swap", "tool-library")


def readme_command(sample: str) -> list[str]:
    """The one `commonpool run` line the README gives for a sample, as arguments after `commonpool`."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.strip().startswith(f"commonpool run --roster data/samples/{sample}.csv ")]
    assert len(lines) == 1, sample
    return shlex.split(lines[0])[1:]


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_scenario_runs_as_the_readme_says_and_conserves_every_unit(tmp_path, monkeypatch, sample: str) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    args = readme_command(sample)
    assert main([*args, "--store", str(tmp_path)]) == 0
    con = Store(tmp_path).connect()
    (status,), = con.execute("SELECT status FROM runs").fetchall()
    assert status == "completed"
    periods = int(args[args.index("--periods") + 1])
    assert con.execute("SELECT count(DISTINCT period) FROM period_utility").fetchone()[0] == periods
    broken = con.execute(CONSERVATION_BREAKS_SQL).fetchone()[0]
    assert broken == 0
    # A living economy: what is produced is consumed, and members still trade in the last period.
    kinds = dict(con.execute("SELECT kind::VARCHAR, sum(quantity) FROM flows GROUP BY ALL").fetchall())
    assert kinds["produced"] > 0 and kinds["consumed"] > 0
    last = con.execute("SELECT count(*) FROM exchanges WHERE period = ? AND outcome = 'accepted'", [periods]).fetchone()[0]
    assert last > 0


def test_the_tool_library_never_moves_or_uses_up_a_tool_only_its_days() -> None:
    header = (ROOT / "data/samples/tool-library.csv").read_text().splitlines()[0].split(",")
    resources = {c.split(":", 1)[1] for c in header if ":" in c}
    assert {r for r in resources if "days" in r} == {"drill days", "ladder days", "sewing machine days",
                                                     "pressure washer days"}
    assert not resources & {"drill", "ladder", "sewing machine", "pressure washer"}
    kinds = dict(part.split(":") for part in readme_command("tool-library")[
        readme_command("tool-library").index("--resources") + 1].split(","))
    assert all(kinds[r] == "time" for r in resources if "days" in r)  # renewed each week, lost unused
