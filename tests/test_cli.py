"""The command line, as a user types it: real flags, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, store: Path, check: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMMONPOOL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "commonpool", *args], capture_output=True, text=True, env=env, cwd=cwd or ROOT,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_run_with_the_original_flags_writes_the_run_and_its_json_log(tmp_path: Path) -> None:
    store, logs = tmp_path / "store", tmp_path / "custom_logs"
    done = cli("run", "--num-participants", "10", "--min-exchanges", "8", "--max-exchanges", "12",
               "--simulation-id", "custom_sim_001", "--output-dir", str(logs), store=store, check=True)
    log = json.loads((logs / "custom_sim_001.json").read_text())
    assert "custom_sim_001: completed" in done.stdout
    assert 8 <= len(log["tables"]["exchanges"]) <= 12
    assert (store / "runs" / "custom_sim_001" / "run.json").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_store_is_honoured_before_or_after_the_subcommand(tmp_path: Path, where: str) -> None:
    default, chosen = tmp_path / "default", tmp_path / "chosen"
    flags = ["run", "--num-participants", "4", "--min-exchanges", "2", "--max-exchanges", "2", "--simulation-id", "here"]
    args = ["--store", str(chosen), *flags] if where == "before" else [*flags, "--store", str(chosen)]
    cli(*args, store=default, check=True)
    assert (chosen / "runs" / "here" / "run.json").exists() and not default.exists()
    listing = cli("--store", str(chosen), "runs", "list", store=default, check=True)
    assert "here" in listing.stdout


BAD = [
    (["--num-participants", "1"], "--num-participants", "greater than or equal to 2"),
    (["--num-participants", "-3"], "--num-participants", "greater than or equal to 2"),
    (["--num-participants", "ten"], "--num-participants", "valid integer"),
    (["--min-exchanges", "2.5"], "--min-exchanges", "valid integer"),
    (["--min-exchanges", "-1"], "--min-exchanges", "greater than or equal to 1"),
    (["--min-exchanges", "9", "--max-exchanges", "3"], "--min-exchanges", "must not exceed --max-exchanges"),
    (["--max-turns", "1"], "--max-turns", "greater than or equal to 2"),
    (["--seed", "-4"], "--seed", "greater than or equal to 0"),
    (["--personalities", "greedy=3"], "--personalities", "allowed: cautious, generous, strategic"),
    (["--personalities", "cautious=x"], "--personalities", "name=count"),
    (["--resources", "books,unicorns"], "--resources", "unknown resource 'unicorns'"),
    (["--resources", "books,magic:spell"], "--resources", "good, skill, time"),
    (["--resources", ""], "--resources", "empty"),
    (["--resources", "books"], "--resources", "at least 2"),
    (["--resources", "books,books"], "--resources", "unique"),
    (["--pairing", "best"], "--pairing", "random, need"),
    (["--simulation-id", "../escape"], "--simulation-id", "1-64 letters, digits, . _ or -"),
]


@pytest.mark.parametrize(("args", "flag", "allowed"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args, flag: str, allowed: str) -> None:
    store = tmp_path / "store"
    done = cli("run", *args, "--output-dir", str(tmp_path / "logs"), store=store)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert flag in lines[0] and allowed in lines[0], lines[0]
    assert not store.exists() and not (tmp_path / "logs").exists()


def test_a_duplicate_simulation_id_is_refused_and_the_first_run_is_kept(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cli("run", "--simulation-id", "twice", "--seed", "1", store=store, check=True)
    before = sorted(p.name for p in (store / "runs" / "twice").rglob("*"))
    done = cli("run", "--simulation-id", "twice", "--seed", "2", store=store)
    assert done.returncode == 2
    assert "--simulation-id" in done.stderr and "already exists" in done.stderr
    assert sorted(p.name for p in (store / "runs" / "twice").rglob("*")) == before


def test_runs_list_and_show_describe_stored_runs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cli("run", "--simulation-id", "alpha", "--seed", "3", store=store, check=True)
    listing = cli("runs", "list", store=store, check=True).stdout
    shown = json.loads(cli("runs", "show", "alpha", "--json", store=store, check=True).stdout)
    listed = json.loads(cli("runs", "list", "--json", store=store, check=True).stdout)
    assert "alpha" in listing and "completed" in listing
    assert shown["status"] == "completed" and shown["seed"] == 3
    assert shown["config"]["num_participants"] == 10
    assert [r["run_id"] for r in listed] == ["alpha"]
    missing = cli("runs", "show", "nope", store=store)
    assert missing.returncode == 2 and "no run named 'nope'" in missing.stderr


def test_sql_answers_in_table_csv_and_json(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cli("run", "--simulation-id", "q", "--seed", "4", store=store, check=True)
    query = "SELECT run_id, count(*) AS n FROM exchanges GROUP BY run_id"
    as_json = json.loads(cli("sql", query, "--format", "json", store=store, check=True).stdout)
    as_csv = cli("sql", query, "--format", "csv", store=store, check=True).stdout.splitlines()
    as_table = cli("sql", query, store=store, check=True).stdout
    assert as_json[0]["run_id"] == "q" and 10 <= as_json[0]["n"] <= 20
    assert as_csv[0].replace('"', "") == "run_id,n" and as_csv[1].replace('"', "").startswith("q,")
    assert "run_id" in as_table and "q" in as_table
    refused = cli("sql", "COPY (SELECT 1) TO '/tmp/commonpool-leak.csv'", store=store)
    assert refused.returncode == 2 and not Path("/tmp/commonpool-leak.csv").exists()


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "duckdb"])
def test_export_writes_the_run_in_each_format(tmp_path: Path, fmt: str) -> None:
    store = tmp_path / "store"
    cli("run", "--simulation-id", "ex", "--seed", "5", store=store, check=True)
    dest = tmp_path / f"out-{fmt}"
    done = cli("export", "ex", "--format", fmt, "--dest", str(dest), store=store, check=True)
    assert Path(done.stdout.strip()).exists()
    if fmt == "duckdb":
        import duckdb

        with duckdb.connect(str(Path(done.stdout.strip())), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM exchanges").fetchone()[0] >= 10
    bad = cli("export", "ex", "--format", "xml", store=store)
    assert bad.returncode == 2 and "json, csv, parquet, duckdb" in bad.stderr


def test_a_killed_run_reads_as_interrupted_and_its_chunks_still_query(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "COMMONPOOL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    # Small flushes so the run has chunks on disk long before it would finish.
    script = (
        "import commonpool.engine as e, commonpool.recorder as r\n"
        "orig = r.Recorder.__init__\n"
        "def small(self, *a, flush_every, **k): orig(self, *a, flush_every=200, **k)\n"
        "r.Recorder.__init__ = small\n"
        "from commonpool import SimulationConfig, run_simulation\n"
        "run_simulation(SimulationConfig(simulation_id='killed', seed=1, num_participants=400,"
        " min_exchanges=50_000_000, max_exchanges=50_000_000), None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    chunks = store / "runs" / "killed" / "exchanges"
    deadline = time.monotonic() + 60
    # A part file is written before run.json commits it: with 4 on disk, at least 3 are committed.
    while time.monotonic() < deadline and len(list(chunks.glob("part-*.parquet"))) < 4:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    listing = cli("runs", "list", store=store, check=True).stdout
    counted = json.loads(cli("sql", "SELECT count(*) AS n, max(exchange_id) AS last FROM exchanges",
                             "--format", "json", store=store, check=True).stdout)[0]
    assert "killed" in listing and "interrupted" in listing and "running" not in listing
    assert counted["n"] >= 600 and counted["n"] == counted["last"]


def test_roster_round_trips_through_a_file_the_user_edits(tmp_path: Path) -> None:
    store = tmp_path / "store"
    roster = cli("roster", "--num-participants", "6", "--seed", "2", store=store, check=True).stdout
    path = tmp_path / "roster.csv"
    path.write_text(roster.replace("Ada,", "Ada Lovelace,", 1))
    cli("run", "--roster", str(path), "--simulation-id", "r", store=store, check=True)
    names = json.loads(cli("sql", "SELECT name FROM participants ORDER BY participant_id", "--format", "json",
                           store=store, check=True).stdout)
    assert len(names) == 6 and names[0]["name"] == "Ada Lovelace"
    broken = tmp_path / "broken.csv"
    broken.write_text(roster.replace("cautious", "reckless", 1))
    done = cli("run", "--roster", str(broken), store=store)
    assert done.returncode == 2 and "reckless" in done.stderr


def test_a_roster_with_its_own_resources_runs_without_listing_them(tmp_path: Path) -> None:
    store, roster = tmp_path / "store", tmp_path / "mine.csv"
    roster.write_text(
        "name,personality,holdings:sewing,holdings:books,needs:sewing,needs:books\n"
        "Ada,generous,5,0,0,2\nBen,cautious,0,5,2,0\n"
    )
    cli("run", "--roster", str(roster), "--simulation-id", "own", "--seed", "1", store=store, check=True)
    kinds = json.loads(cli("sql", "SELECT name, kind FROM resources ORDER BY resource_id", "--format", "json",
                           store=store, check=True).stdout)
    assert kinds == [{"name": "sewing", "kind": "good"}, {"name": "books", "kind": "good"}]


@pytest.mark.parametrize("limit", ["0", "-5", "1000000000"])
def test_sql_refuses_a_limit_out_of_range_in_one_line(tmp_path: Path, limit: str) -> None:
    done = cli("sql", "SELECT 1", "--limit", limit, store=tmp_path / "store")
    assert done.returncode == 2
    assert done.stderr == f"commonpool: error: --limit: {limit} is out of range; allowed: 1 to 1,000,000\n"


def test_number_format_is_for_people() -> None:
    from commonpool.cli import _cell

    assert [_cell(v) for v in (21923.4, 21920.0, 1234567, 0.75, 0.000123456, 12.3456, -3.5, None, float("nan"))] == [
        "21,923.4", "21,920", "1,234,567", "0.75", "0.0001235", "12.35", "-3.5", "-", "-"]


def test_metrics_shows_prices_and_the_facilitator_and_two_runs_side_by_side(simulate, store, capsys) -> None:
    import re

    from commonpool import metrics
    from commonpool.cli import main

    advised = simulate(simulation_id="advised", num_participants=150, min_exchanges=400, max_exchanges=400).run_id
    control = simulate(simulation_id="control", num_participants=150, min_exchanges=400, max_exchanges=400,
                       facilitator=False).run_id
    assert main(["metrics", advised]) == 0
    text = capsys.readouterr().out
    for figure in ("price_sd_first", "price_sd_last", "adherence_followed", "anchoring", "welfare_initial"):
        assert re.search(rf"^ *{figure}: \S", text, re.MULTILINE), figure
    assert not re.search(r"\de[+-]\d", text)  # never 2.192e+04
    assert re.search(r"welfare_initial: \d{1,3},\d{3}", text)  # this community's welfare is in the thousands

    assert main(["metrics", advised, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    con = store.connect()
    assert one["facilitator"]["anchoring"] == pytest.approx(metrics.anchoring(con, advised))
    assert one["prices"]["price_sd_last"] is not None and one["summary"]["exchanges"] == 400

    assert main(["metrics", advised, control]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["figure", advised, control]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["anchoring"][1] == "-" and rows["anchoring"][0] != "-"
    assert rows["exchanges"] == ["400", "400"]
    assert "utility_gain:cautious" in rows
    assert main(["metrics", advised, control, "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [advised, control]
    assert main(["metrics", advised, "nope"]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err


def test_runs_show_prints_the_config_and_no_internals(simulate, capsys) -> None:
    from commonpool.cli import main

    simulate(simulation_id="shown", seed=7, max_turns=4, facilitator=False)
    assert main(["runs", "show", "shown"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("run shown: completed\n")
    for hidden in ("committed_parts", "manifest", "None", "{'", "pid"):
        assert hidden not in text, hidden
    config = text.split("\nconfig:\n")[1]
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in config.splitlines()}
    assert rows["max_turns"] == "4" and rows["seed"] == "7" and rows["facilitator"] == "no"
    assert rows["model"] == "-" and rows["personalities"] == "cautious 1, generous 1, strategic 1"
    assert rows["resources"].startswith("books, tools,") and "bike repairs (skill)" in rows["resources"]
    assert main(["runs", "show", "shown", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["max_turns"] == 4 and "manifest" not in shown and "committed_parts" not in shown


def test_a_bare_run_takes_the_config_s_defaults(store, capsys) -> None:
    from commonpool import SimulationConfig
    from commonpool.cli import main

    assert main(["run", "--simulation-id", "bare", "--no-progress"]) == 0
    stored = store.run("bare").meta["config"]
    expected = SimulationConfig(simulation_id="bare", seed=stored["seed"]).model_dump(mode="json")
    assert stored == expected
    exchanges = store.run("bare").meta["exchanges_recorded"]
    assert expected["min_exchanges"] <= exchanges <= expected["max_exchanges"]
