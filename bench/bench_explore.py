"""Explore page at scale (issue: a 1,000,000-exchange run's Explore page renders in a few seconds).

Run: python bench/bench_explore.py [--exchanges N] [--participants N] [--store PATH]
Creates the run (about 12 s for 1M exchanges; reused if --store already holds one),
then times, each on a fresh connection, every metric query the page makes and
the chart built from it (to Vega-Lite JSON, what the browser receives), the
exchange log's page and transcript queries, the whole page rendered by
Streamlit's AppTest, cold and warm (metrics cached), and finally time-to-all-charts
in a real browser (--browser: headless /usr/bin/chromium against `streamlit run`):
from opening the page until every chart of every tab is drawn, on a fresh server
(cold) and on a second visit (warm). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commonpool import SimulationConfig, charts, metrics, run_simulation  # noqa: E402
from commonpool.exchange_log import log_page, transcript  # noqa: E402
from commonpool.store import Store  # noqa: E402


def timed(label: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - started
    rows = f"{len(result):>9,} rows" if hasattr(result, "__len__") and not isinstance(result, (dict, str)) else " " * 14
    print(f"  {label:<44} {rows} {elapsed * 1000:>9,.0f} ms")
    return result


def _json(chart: Any) -> Any:
    return chart if isinstance(chart, list) else chart.to_json()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=1_000_000)
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--store", type=Path, default=None, help="reuse (or create) the run here")
    parser.add_argument("--browser", action="store_true", help="only time the page in a real browser")
    args = parser.parse_args()
    root = args.store or Path(tempfile.mkdtemp(prefix="commonpool-bench-"))
    store = Store(root)
    run_id = f"bench-{args.exchanges}"
    if not any(r.run_id == run_id for r in store.runs()):
        config = SimulationConfig(simulation_id=run_id, seed=7, num_participants=args.participants,
                                  min_exchanges=args.exchanges, max_exchanges=args.exchanges)
        started = time.perf_counter()
        result = run_simulation(config, store)
        print(f"created {run_id}: {result.exchanges:,} exchanges, {args.participants:,} participants "
              f"in {time.perf_counter() - started:.1f} s ({root})")
    if args.browser:
        browser_time_to_all_charts(root, run_id)
        return
    con = store.connect()
    count = con.execute("SELECT count(*) FROM offers WHERE run_id = ?", [run_id]).fetchone()[0]
    print(f"run {run_id}: {count:,} offers")

    print("metric query, then chart -> Vega-Lite JSON:")
    total = 0.0
    started_all = time.perf_counter()
    plan: list[tuple[str, Callable[[], Any], Callable[[Any], Any] | None]] = [
        ("summary", lambda: metrics.summary(con, run_id), None),
        ("activity", lambda: metrics.activity(con, run_id, windows=20), charts.activity_chart),
        ("agreement_by_turn", lambda: metrics.agreement_by_turn(con, run_id), charts.agreement_by_turn_chart),
        ("holdings_over_time", lambda: metrics.holdings_over_time(con, run_id, windows=20), lambda f: [c.to_json() for c in charts.holdings_charts(f)]),
        ("price_dispersion", lambda: metrics.price_dispersion(con, run_id, windows=10), charts.rates_chart),
        ("network_nodes", lambda: metrics.network_nodes(con, run_id), None),
        ("network_edges", lambda: metrics.network_edges(con, run_id), None),
        ("network_summary", lambda: metrics.network_summary(con, run_id), None),
        ("pairing_matrix", lambda: metrics.pairing_matrix(con, run_id), charts.pairing_heatmap),
        ("by_personality", lambda: metrics.by_personality(con, run_id), lambda f: [c.to_json() for c in charts.by_personality_charts(f)]),
        ("lorenz holdings", lambda: metrics.lorenz(con, run_id, "holdings"), charts.lorenz_chart),
        ("lorenz utility", lambda: metrics.lorenz(con, run_id, "utility"), charts.lorenz_chart),
        ("need_fulfilment", lambda: metrics.need_fulfilment(con, run_id), None),
        ("facilitator_adherence", lambda: metrics.facilitator_adherence(con, run_id), charts.adherence_chart),
        ("anchoring", lambda: metrics.anchoring(con, run_id), None),
        ("mrs_prices", lambda: metrics.mrs_prices(con, run_id, windows=10), charts.mrs_price_chart),
        ("mrs_dispersion", lambda: metrics.mrs_dispersion(con, run_id, windows=10), charts.mrs_spread_chart),
        ("allocative_efficiency", lambda: metrics.allocative_efficiency(con, run_id), None),
        ("gains_left_on_table", lambda: metrics.gains_left_on_table(con, run_id), None),
    ]
    frames: dict[str, Any] = {}
    for name, query, chart in plan:
        frames[name] = timed(name, query)
        if chart is not None:
            timed(f"  chart of {name}", lambda: _json(chart(frames[name])))
    timed("  chart spread", lambda: charts.spread_chart(frames["price_dispersion"]).to_json())
    timed("  chart network", lambda: charts.network_chart(frames["network_nodes"], frames["network_edges"]).to_json())
    total = time.perf_counter() - started_all
    print(f"  {'all metrics and charts':<44} {'':>14} {total * 1000:>9,.0f} ms")
    efficiency, left = frames["allocative_efficiency"], frames["gains_left_on_table"]
    print(f"  efficiency {efficiency['efficiency']:.4f} of a possible gain of {efficiency['max_gain']:,.1f}; "
          f"{left['pairs_with_gains']:,} of {left['pairs_checked']:,} pairs checked have a swap left")

    print("exchange log:")
    timed("count, filter accepted + name 'ad'", lambda: [log_page(con, run_id, ["accepted"], "ad", limit=1).total])
    timed("page 1,000 of 25 rows", lambda: log_page(con, run_id, limit=25, offset=25_000).rows)
    timed("transcript of exchange 777,777", lambda: transcript(con, run_id, min(777_777, args.exchanges)).turns)

    print("whole Explore page through Streamlit (AppTest):")
    from streamlit.testing.v1 import AppTest

    os.environ["COMMONPOOL_STORE"] = str(root)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.query_params["run"] = run_id
    at.switch_page("pages/explore.py")
    timed("cold (metrics computed)", lambda: at.run() and None)
    assert not at.exception, [e.value for e in at.exception]
    timed("warm (metrics cached, e.g. paging the log)", lambda: at.run() and None)


TABS = ("Activity", "Holdings", "Prices", "Network", "Personalities", "Inequality", "Facilitator")


def browser_time_to_all_charts(root: Path, run_id: str) -> None:
    """Open Explore in headless Chromium and time until every tab's charts are drawn (canvas or svg)."""
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
        cwd=ROOT, env={**os.environ, "COMMONPOOL_STORE": str(root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)
            for _ in range(100):  # the server is up when its health check answers
                try:
                    page.goto(f"{url}/_stcore/health")
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(0.3)
            for visit in ("cold (fresh server)", "warm (second visit)"):
                started = time.perf_counter()
                page.goto(f"{url}/explore?run={run_id}")
                expect(page.get_by_role("heading", name="Explore a run")).to_be_visible()
                # Every chart is on the page once the script has run (the status widget goes away).
                page.wait_for_timeout(300)
                expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
                drawn = 0
                for tab in TABS:
                    page.get_by_role("tab", name=tab).click()
                    panel = page.get_by_role("tabpanel", name=tab)
                    charts = panel.get_by_test_id("stVegaLiteChart")
                    expect(charts.first).to_be_visible()
                    for i in range(charts.count()):
                        charts.nth(i).scroll_into_view_if_needed()
                        expect(charts.nth(i).locator("canvas, svg.marks").first).to_be_visible()
                    drawn += charts.count()
                elapsed = time.perf_counter() - started
                print(f"  browser time-to-all-charts, {visit:<22} {drawn:>3} charts {elapsed:>8.2f} s")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
