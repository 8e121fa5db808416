"""CSV files written for people: text that starts like a formula stays text in a spreadsheet (OWASP)."""

from __future__ import annotations

import csv
import json
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from commonpool import form
from commonpool.csv_safe import neutralise, neutralise_frame
from commonpool.population import roster_from_csv

ROOT = Path(__file__).resolve().parents[1]
FORMULA = '=HYPERLINK("x")'


def test_text_cells_that_start_like_a_formula_get_a_quote_and_numbers_do_not() -> None:
    frame = pd.DataFrame({"name": [FORMULA, "+1", "-2", "@SUM(A1)", "\tx", "\rx", "Ada", None],
                          "units": [-1, 2, 3, 4, 5, 6, 7, 8]})
    safe = neutralise_frame(frame)
    assert safe["name"].tolist()[:7] == ["'" + FORMULA, "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "Ada"]
    assert safe["name"].isna().tolist()[7]
    assert safe["units"].tolist() == frame["units"].tolist()
    assert frame["name"][0] == FORMULA  # the caller's frame is left as it was
    assert neutralise_frame(pd.DataFrame({FORMULA: [1]})).columns.tolist() == ["'" + FORMULA]
    assert neutralise("a=b") == "a=b"


def test_the_dashboard_s_csv_downloads_are_neutralised() -> None:
    from pages._shared import _csv  # the encoder every downloads() CSV button uses

    rows = list(csv.reader(io.StringIO(_csv(pd.DataFrame({"name": [FORMULA], "n": [-1]})).decode())))
    assert rows == [["name", "n"], ["'" + FORMULA, "-1"]]


def test_a_downloaded_roster_is_neutralised_and_uploads_unchanged() -> None:
    table = form.roster_table_from_csv(
        'name,personality,notes,holdings:books,holdings:tools\n"=HYPERLINK(""x"")",cautious,@risk,3,1\n'
        "Ben,generous,,1,3\n")
    text = form.roster_csv_download(table)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][:3] == ["'" + FORMULA, "cautious", "'@risk"]
    back = roster_from_csv(text)
    assert (back[0].name, back[0].notes) == (FORMULA, "@risk")


def test_commonpool_export_csv_neutralises_names_and_notes(tmp_path: Path) -> None:
    roster, store, dest = tmp_path / "roster.csv", tmp_path / "store", tmp_path / "out"
    roster.write_text('name,personality,notes,holdings:books,holdings:tools\n"=HYPERLINK(""x"")",cautious,+1,3,1\n'
                      "Ben,generous,,1,3\n")
    env = {**os.environ, "COMMONPOOL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    for args in (["run", "--roster", str(roster), "--simulation-id", "inj", "--seed", "1", "--no-progress"],
                 ["export", "inj", "--format", "csv", "--dest", str(dest)]):
        done = subprocess.run([sys.executable, "-m", "commonpool", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
    with (dest / "participants.csv").open(newline="") as handle:
        people = list(csv.DictReader(handle))
    assert [(p["name"], p["notes"]) for p in people] == [("'" + FORMULA, "'+1"), ("Ben", "")]
    with (dest / "initial_holdings.csv").open(newline="") as handle:
        assert sorted(row["quantity"] for row in csv.DictReader(handle)) == ["1", "1", "3", "3"]


def test_nested_values_are_the_same_json_text_in_every_csv(simulate, store, tmp_path: Path, capsys) -> None:
    from commonpool.cli import main
    from commonpool.store import export_run
    from pages._shared import _csv

    run = simulate(min_exchanges=5, max_exchanges=5)
    con = store.connect()
    stored = con.sql("SELECT exchange_id, valuations, [exchange_id, 2] AS pair, {'who': '=me'} AS box "
                     "FROM advice ORDER BY exchange_id LIMIT 1").df()
    expected = {k: float(v) for k, v in stored["valuations"][0].items()}
    assert len(expected) == 8  # a MAP(VARCHAR, DOUBLE): the column that made `sql --format csv` crash

    assert main(["sql", "SELECT exchange_id, valuations, [exchange_id, 2] AS pair, {'who': '=me'} AS box "
                 "FROM advice ORDER BY exchange_id LIMIT 1", "--format", "csv"]) == 0
    from_sql = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    export_run(store, run.run_id, "csv", tmp_path / "export")
    with (tmp_path / "export" / "advice.csv").open(newline="") as handle:
        from_export = next(csv.DictReader(handle))
    from_download = next(csv.DictReader(io.StringIO(_csv(stored).decode())))

    assert main(["sql", "SELECT valuations FROM advice ORDER BY exchange_id LIMIT 1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"valuations": expected}]  # an object in JSON output too

    texts = {from_sql["valuations"], from_export["valuations"], from_download["valuations"]}
    assert len(texts) == 1, texts  # one rule, one text
    assert json.loads(texts.pop()) == expected
    for row in (from_sql, from_download):
        assert json.loads(row["pair"]) == [int(row["exchange_id"]), 2]
        assert json.loads(row["box"]) == {"who": "=me"}  # JSON text starts with {, never like a formula


def test_sql_csv_keeps_text_as_stored_while_people_s_csv_quotes_formulas(store, simulate, capsys) -> None:
    from commonpool.cli import main

    simulate(min_exchanges=1, max_exchanges=1)
    assert main(["sql", "SELECT '=1+1' AS t, 7 AS n", "--format", "csv"]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [["t", "n"], ["=1+1", "7"]]
