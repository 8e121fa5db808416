"""Bad files and bad paths on the command line: one line naming the flag, exit 2, nothing written.

Each roster or personalities file is written into tmp_path as a user would have it,
then given to a real `commonpool` process.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from commonpool import SimulationConfig
from commonpool.config import ParticipantSpec

ROOT = Path(__file__).resolve().parents[1]
HEADER = "name,personality,holdings:books,holdings:tools\n"
GOOD_ROWS = "Ada,cautious,3,1\nBen,generous,1,3\n"


def cli(*args: str, store: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMMONPOOL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "commonpool", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)


def one_line_exit_2(done: subprocess.CompletedProcess, *expected: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("commonpool: error: ")
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def rows(*lines: str, header: str = HEADER) -> bytes:
    return (header + "".join(f"{line}\n" for line in lines)).encode()


BAD_FILES = [
    # (id, flag, file name, content, what the one line must say)
    ("extra cells", "--roster", "r.csv", rows("Ada,cautious,3,1,99", "Ben,generous,1,3"),
     "row 1: has 5 cells but the header has 4 columns"),
    ("short row", "--roster", "r.csv", rows("Ada,cautious,3", "Ben,generous,1,3"),
     "row 1: has 3 cells but the header has 4 columns"),
    ("duplicate column", "--roster", "r.csv",
     rows("Ada,cautious,3,5,1", "Ben,generous,1,1,3", header="name,personality,holdings:books,holdings:books,holdings:tools\n"),
     "'holdings:books' appears more than once"),
    ("non-ASCII digit", "--roster", "r.csv", rows("Ada,cautious,\u0663,1", "Ben,generous,1,3"),
     "holdings:books must be a whole number"),
    ("Latin-1", "--roster", "r.csv", (HEADER + "Zo\u00eb,cautious,3,1\nBen,generous,1,3\n").encode("latin-1"),
     "not UTF-8 text"),
    ("UTF-16", "--roster", "r.csv", (HEADER + GOOD_ROWS).encode("utf-16"), "UTF-16"),
    ("notes over 128 KB", "--roster", "r.csv",
     rows("Ada,cautious," + "x" * 140_000 + ",3,1", "Ben,generous,,1,3",
          header="name,personality,notes,holdings:books,holdings:tools\n"),
     "longer than 128 KB"),
    ("units of 2^63", "--roster", "r.csv", rows(f"Ada,cautious,{2**63},1", "Ben,generous,1,3"),
     "units of 'books' must be at most 1,000,000"),
    ("units near 2^63", "--roster", "r.csv", rows(f"Ada,cautious,{2**63 - 1000},1", "Ben,generous,1,3"),
     "units of 'books' must be at most 1,000,000"),
    ("needs of 2^63", "--roster", "r.json",
     json.dumps([{"name": "Ada", "personality": "cautious", "holdings": {"books": 3}, "needs": {"tools": 2**63}},
                 {"name": "Ben", "personality": "generous", "holdings": {"tools": 3}}]).encode(),
     "units of 'tools' must be at most 1,000,000"),
    ("all-zero holdings", "--roster", "r.csv", rows("Ada,cautious,0,0", "Ben,generous,0,0"), "every holding is 0"),
    ("wants of inf", "--roster", "r.csv",
     rows("Ada,cautious,3,1,inf", "Ben,generous,1,3,1", header=HEADER.strip() + ",wants:books\n"),
     "wants:books must be a number (got 'inf')"),
    ("wants of 1e308", "--roster", "r.csv",
     rows("Ada,cautious,3,1,1e308", "Ben,generous,1,3,1", header=HEADER.strip() + ",wants:books\n"),
     "want weight of 'books' must be from 0 to 1,000"),
    ("wants of Infinity in JSON", "--roster", "r.json",
     b'[{"name": "Ada", "personality": "cautious", "holdings": {"books": 3}, "wants": {"books": Infinity}}]',
     "Infinity"),
    ("deeply nested roster JSON", "--roster", "r.json", b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ("non-UTF-8 personalities", "--custom-personalities", "p.json", '[{"name": "Zo\u00eb"}]'.encode("latin-1"),
     "not UTF-8 text"),
    ("deeply nested personalities", "--custom-personalities", "p.json", b"[" * 100_000 + b"]" * 100_000,
     "nests too deeply"),
    ("personality with a bad trait", "--custom-personalities", "p.json",
     b'[{"name": "haggler", "traits": {"aspiration": 3}}]',
     "entry 1: traits aspiration: Input should be less than or equal to 1"),
    ("personalities not a list", "--custom-personalities", "p.json", b'{"name": "haggler"}',
     "expected a JSON list"),
]


@pytest.mark.parametrize(("flag", "name", "content", "says"), [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
def test_a_bad_file_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, flag: str, name: str, content: bytes,
                                                           says: str) -> None:
    store, logs, path = tmp_path / "store", tmp_path / "logs", tmp_path / name
    path.write_bytes(content)
    done = cli("run", flag, str(path), "--output-dir", str(logs), "--no-progress", store=store)
    one_line_exit_2(done, flag, says)
    assert not store.exists() and not logs.exists()


@pytest.mark.parametrize("flag", ["--roster", "--custom-personalities"])
def test_reading_dev_zero_stops_at_a_size_limit(tmp_path: Path, flag: str) -> None:
    store = tmp_path / "store"
    one_line_exit_2(cli("run", flag, "/dev/zero", "--no-progress", store=store), flag, "larger than")
    assert not store.exists()


@pytest.mark.parametrize(("mix", "says"), [("cautious=inf", "(got inf)"), ("cautious=1e308", "(got 1e+308)"),
                                           ("cautious=nan", "(got nan)")])
def test_an_unbounded_personality_weight_is_refused(tmp_path: Path, mix: str, says: str) -> None:
    store = tmp_path / "store"
    done = cli("run", "--personalities", mix, "--no-progress", store=store)
    one_line_exit_2(done, "--personalities", "must be from 0 to 100,000", says)
    assert not store.exists()


def test_a_roster_with_a_byte_order_mark_runs_like_one_without(tmp_path: Path) -> None:
    store = tmp_path / "store"
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text(HEADER + GOOD_ROWS)
    marked.write_bytes(codecs.BOM_UTF8 + (HEADER + GOOD_ROWS).encode())
    for path in (plain, marked):
        done = cli("run", "--roster", str(path), "--simulation-id", path.stem, "--seed", "1", "--no-progress",
                   store=store)
        assert done.returncode == 0, done.stderr
    tables = [json.loads(cli("sql", f"SELECT name, personality FROM participants WHERE run_id = '{run}' "
                                    "ORDER BY participant_id", "--format", "json", store=store).stdout)
              for run in ("plain", "marked")]
    assert tables[0] == tables[1] == [{"name": "Ada", "personality": "cautious"},
                                      {"name": "Ben", "personality": "generous"}]


# --- bounds in the config itself (the dashboard and Python callers get them too) -------------------------


@pytest.mark.parametrize("cells", [
    {"holdings": {"books": 2**63}}, {"holdings": {"books": 1_000_001}}, {"needs": {"books": 2**63 - 1}},
    {"wants": {"books": float("inf")}}, {"wants": {"books": 1e308}},
])
def test_a_participant_s_cells_have_sane_upper_bounds(cells: dict) -> None:
    with pytest.raises(ValidationError, match="must be"):
        ParticipantSpec(name="Ada", personality="cautious", **cells)
    ParticipantSpec(name="Ada", personality="cautious", holdings={"books": 1_000_000}, wants={"books": 1000.0})


@pytest.mark.parametrize("weight", [float("inf"), 1e308, float("nan"), 100_001])
def test_a_mix_weight_has_an_upper_bound(weight: float) -> None:
    with pytest.raises(ValidationError, match="weight of 'cautious' must be from 0 to 100,000"):
        SimulationConfig(personalities={"cautious": weight, "generous": 1})


def test_a_roster_where_nobody_holds_anything_is_refused() -> None:
    roster = [ParticipantSpec(name=n, personality="cautious", holdings={"books": 0}) for n in ("Ada", "Ben")]
    with pytest.raises(ValidationError, match="every holding is 0"):
        SimulationConfig(num_participants=2, roster=roster)


# --- paths ------------------------------------------------------------------------------------------------


def test_an_output_dir_that_cannot_be_created_is_refused_before_the_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for where, says in (("/dev/null/logs", "'/dev/null' exists and is not a folder"),
                        ("/proc/commonpool-logs", "cannot write in '/proc'")):
        one_line_exit_2(cli("run", "--output-dir", where, "--no-progress", store=store), "--output-dir", says)
        assert not store.exists()


def test_a_store_that_is_a_file_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.write_text("not a folder")
    for args in (["run", "--no-progress"], ["runs", "list"], ["sql", "SELECT 1"]):
        one_line_exit_2(cli(*args, store=store), "--store", "is not a folder")
    assert store.read_text() == "not a folder"


def test_a_store_that_cannot_be_created_is_refused_before_the_run(tmp_path: Path) -> None:
    one_line_exit_2(cli("--store", "/proc/commonpool-store", "run", "--no-progress", store=tmp_path),
                    "--store", "cannot write in '/proc'")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one finished run, "r1"."""
    store = tmp_path_factory.mktemp("stored") / "store"
    done = cli("run", "--simulation-id", "r1", "--seed", "1", "--no-progress", store=store)
    assert done.returncode == 0, done.stderr
    return store


@pytest.mark.parametrize(("dest", "says"), [
    ("/proc/commonpool-export", "cannot write in '/proc'"),
    ("/dev/null/export", "'/dev/null' exists and is not a folder"),
])
def test_an_export_dest_that_cannot_be_written_is_refused_up_front(stored: Path, dest: str, says: str) -> None:
    one_line_exit_2(cli("export", "r1", "--format", "csv", "--dest", dest, store=stored), "--dest", says)
