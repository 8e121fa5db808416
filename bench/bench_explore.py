"""Explore page at scale (issue: a 1,000,000-exchange run's Explore page renders in a few seconds).

Run: python bench/bench_explore.py [--exchanges N] [--participants N] [--store PATH]
Creates the run (about 12 s for 1M exchanges; reused if --store already holds one),
then times, each on a fresh connection, every metric query the page makes and
the chart built from it (to Vega-Lite JSON, what the browser receives), the
exchange log's page and transcript queries, the whole page rendered by
Streamlit's AppTest, cold and warm (metrics cached), and finally time-to-all-charts
in a real browser (--browser: headless /usr/bin/chromium against `streamlit run`):
from opening the page until every chart of the tab it opens on is drawn, then each
other tab from its click, on a fresh server (cold) and on a second visit (warm).
Prints figures; not a test.
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
    timed("cold, as opened (Activity tab)", lambda: at.run() and None)
    assert not at.exception, [e.value for e in at.exception]
    timed("warm (metrics cached, e.g. paging the log)", lambda: at.run() and None)
    for tab in TABS[1:]:
        at.query_params["tab"] = tab  # what a click on the tab does
        timed(f"cold, {tab} tab opened", lambda: at.run() and None)
        assert not at.exception, [e.value for e in at.exception]


TABS = ("Activity", "Holdings", "Prices", "Network", "Personalities", "Inequality", "Facilitator")


# True once the chosen tab `tab` shows n charts, each drawn (a canvas or svg with a width).
ALL_DRAWN = """([tab, n]) => {
  const chosen = [...document.querySelectorAll('[role=tab][aria-selected=true]')].find(t => t.textContent.trim() === tab);
  const panel = chosen && document.getElementById(chosen.getAttribute('aria-controls'));
  if (!panel) return false;
  const charts = [...panel.querySelectorAll('[data-testid=stVegaLiteChart]')];
  const isDrawn = c => { const d = c.querySelector('canvas, svg.marks'); return d && d.getBoundingClientRect().width > 0; };
  const waiting = charts.find(c => !isDrawn(c));
  if (waiting) waiting.scrollIntoView({block: 'center'});
  else if (panel.lastElementChild) panel.lastElementChild.scrollIntoView({block: 'end'});
  return charts.filter(isDrawn).length >= n;
}"""


def charts_per_tab(root: Path, run_id: str) -> dict[str, int]:
    """How many charts the page sends for each tab (AppTest, outside the timing): what the browser must draw."""
    from streamlit.testing.v1 import AppTest

    os.environ["COMMONPOOL_STORE"] = str(root)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.query_params["run"] = run_id
    at.switch_page("pages/explore.py").run()
    counts = {}
    for tab in TABS:
        at.query_params["tab"] = tab  # what a click on the tab does
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        counts[tab] = sum(1 for tab_block in at.tabs if tab_block.label == tab
                          for _ in _charts_under(tab_block))
    return counts


def _charts_under(block: Any) -> list[Any]:
    found = []
    for child in getattr(block, "children", {}).values():
        if child.type == "vega_lite_chart":
            found.append(child)
        found.extend(_charts_under(child))
    return found


def browser_time_to_all_charts(root: Path, run_id: str) -> None:
    """Time Explore in headless Chromium until a tab's charts are all drawn (canvas or svg).

    Only the chosen tab is computed, so: the page as opened (headline figures and the Activity
    tab, what "time-to-all-charts" means), then each other tab from its click. Cold is a fresh
    server (imports, every metric computed); warm is a second visit (metrics cached).
    """
    from playwright.sync_api import Page, sync_playwright

    expected = charts_per_tab(root, run_id)
    print(f"  charts per tab: {', '.join(f'{t} {n}' for t, n in expected.items())}")

    def drawn(page: Page, tab: str) -> None:
        # Checked on every animation frame (expect() polls at up to 1 s, which would blur the
        # figures); a chart not drawn yet is scrolled to, since Streamlit draws one only near
        # the viewport.
        page.wait_for_function(ALL_DRAWN, arg=[tab, expected[tab]], polling="raf")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(  # started as scripts/dashboard.sh starts it
        [sys.executable, "scripts/serve_dashboard.py", "--server.port", str(port)],
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
                drawn(page, TABS[0])
                opened = time.perf_counter() - started
                print(f"  browser time-to-all-charts, {visit:<22} {expected[TABS[0]]:>3} charts {opened:>8.2f} s"
                      f"  (the page as opened: headline figures, {TABS[0]} tab)")
                every = opened
                for tab in TABS[1:]:
                    clicked = time.perf_counter()
                    page.get_by_role("tab", name=tab).click()
                    drawn(page, tab)
                    took = time.perf_counter() - clicked
                    every += took
                    print(f"    then the {tab + ' tab,':<26} {expected[tab]:>3} charts {took:>8.2f} s")
                print(f"    every tab opened in turn, {sum(expected.values()):>23} charts {every:>8.2f} s")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
