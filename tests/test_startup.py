"""What a command imports: store-only commands must not pay for the engine (start-up is most of `runs list`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LISTING = """
import sys
from commonpool.cli import main
try:
    main(["--store", sys.argv[1], "runs", "list"])
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(m for m in ("commonpool.engine", "commonpool.brains.rules", "commonpool.metrics", "litellm", "pandas")
               if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


def test_runs_list_does_not_import_the_engine(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", LISTING, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "heavy:", out.stdout


def test_package_names_still_import_on_demand() -> None:
    code = ("import sys, commonpool; assert 'commonpool.engine' not in sys.modules; "
            "from commonpool import run_simulation, SimulationConfig; print(run_simulation.__module__, SimulationConfig.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["commonpool.engine", "commonpool.config"]
