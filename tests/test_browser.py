"""The dashboard in a real browser (headless Debian Chromium via Playwright).

Starts `streamlit run app.py` on a free port with a private store, fills the
New simulation form the way a person would, runs it, waits for the results,
opens one exchange as a conversation, and saves a screenshot of every page
under test-output/ (kept by CI as artifacts).

Skipped only on a machine without /usr/bin/chromium and outside CI; in CI a
missing browser is a failure, not a skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-output"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (CI installs it)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@contextmanager
def dashboard(store_dir: Path, log_path: Path) -> Iterator[str]:
    """The dashboard as `bash scripts/dashboard.sh` serves it (scripts/serve_dashboard.py), on a free port."""
    port = free_port()
    env = {**os.environ, "COMMONPOOL_STORE": str(store_dir)}
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "scripts/serve_dashboard.py", "--server.port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dashboard(store_dir, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def settle(page: Page) -> None:
    """Wait until Streamlit has finished running the script for the last interaction."""
    page.wait_for_timeout(300)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)


def shoot(page: Page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its own container, so grow the window."""
    SHOTS.mkdir(exist_ok=True)
    size = page.viewport_size
    height = page.evaluate(
        "Math.max(...[...document.querySelectorAll('[data-testid=stMain], section')].map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": size["width"], "height": min(max(height + 100, size["height"]), 6000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)


def choose(page: Page, label: str, index: int) -> None:
    """Pick the index-th option of a selectbox; a rerun landing mid-click can close the list, so retry."""
    for _ in range(5):
        page.get_by_role("combobox", name=label).click()
        option = page.get_by_role("option").nth(index)
        try:
            option.wait_for(state="visible", timeout=3_000)
        except PlaywrightTimeout:
            continue
        option.click()
        settle(page)
        return
    raise AssertionError(f"the options of {label!r} never opened")


def set_number(page: Page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def run_query(page: Page, sql: str) -> None:
    """Type a query into the SQL console and run it."""
    query = page.get_by_label("Query")
    query.fill(sql)
    query.press("Control+Enter")
    page.get_by_role("button", name="Run query").click()
    settle(page)


def test_a_person_runs_a_simulation_and_reads_one_negotiation(server: str, page: Page) -> None:
    page.goto(server)
    expect(page.get_by_role("heading", name="New simulation")).to_be_visible()
    settle(page)
    set_number(page, "Participants", 14)
    set_number(page, "Min exchanges", 150)
    set_number(page, "Max exchanges", 180)
    set_number(page, "Seed", 7)
    # An impossible range: the Run button is disabled and says why.
    set_number(page, "Min exchanges", 500)
    run = page.get_by_role("button", name="Run simulation")
    expect(run).to_be_disabled()
    expect(page.get_by_text("Run is disabled: Min exchanges: at most Max exchanges (500 is more than 180)")).to_be_visible()
    set_number(page, "Min exchanges", 150)
    expect(run).to_be_enabled()
    shoot(page, "1-new-simulation")

    run.click()
    expect(page.get_by_role("heading", name="Running")).to_be_visible()
    expect(page.get_by_role("link", name="Explore this run")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("completed:", exact=False)).to_be_visible()
    shoot(page, "2-running")

    page.get_by_role("link", name="Explore this run").click()
    expect(page.get_by_role("heading", name="Explore a run")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Acceptance rate")).to_be_visible()
    expect(page.locator(".vega-embed").first).to_be_visible()
    shoot(page, "3-explore")

    page.get_by_role("tab", name="Exchange log").click()
    expect(page.get_by_text("exchanges match.", exact=False)).to_be_visible()
    settle(page)
    choose(page, "Read one exchange as a conversation", 1)
    settle(page)
    expect(page.get_by_role("heading", name="Exchange #2, round")).to_be_visible()
    bubbles = page.get_by_test_id("stChatMessage")
    expect(bubbles.first).to_contain_text("Facilitator (advice, not binding)")
    expect(bubbles.nth(1)).to_contain_text("Turn 1")
    expect(bubbles.nth(1)).to_contain_text("propose")
    # One outcome line: the one of the exchange chosen (the first exchange's may linger while the page reruns).
    outcome = page.get_by_text("Outcome: ", exact=False)
    expect(outcome).to_have_count(1)
    expect(outcome).to_be_visible()
    page.get_by_test_id("stChatMessage").first.scroll_into_view_if_needed()
    shoot(page, "4-explore-conversation")


def test_compare_and_sql_pages(server: str, page: Page) -> None:
    page.goto(server)
    settle(page)
    # A second run, with no facilitator, gives Compare something to compare.
    page.get_by_text("Facilitator", exact=True).first.click()
    settle(page)
    page.get_by_role("button", name="Run simulation").click()
    expect(page.get_by_role("link", name="Explore this run")).to_be_visible(timeout=60_000)

    page.get_by_role("link", name="Compare runs").click()
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
    settle(page)
    expect(page.locator(".vega-embed").first).to_be_visible()
    shoot(page, "5-compare")

    page.get_by_role("link", name="SQL").click()
    expect(page.get_by_role("heading", name="SQL")).to_be_visible()
    settle(page)
    run_query(page, "SELECT outcome, count(*) AS n FROM exchanges GROUP BY outcome ORDER BY n DESC")
    expect(page.get_by_text("rows in", exact=False)).to_be_visible()
    shoot(page, "6-sql")
    run_query(page, "DROP TABLE exchanges")
    expect(page.get_by_text("the console is read-only", exact=False)).to_be_visible()
    shoot(page, "7-sql-refused")


def test_a_person_launches_a_small_sweep_and_reads_its_intervals(server: str, page: Page) -> None:
    page.goto(server)
    settle(page)
    page.get_by_role("link", name="Sweeps").click()
    # The first visit imports SciPy and SALib for the analysis: give it time.
    expect(page.get_by_role("heading", name="Design an experiment")).to_be_visible(timeout=60_000)
    settle(page)
    # The default design varies the facilitator (true, false); make it small.
    set_number(page, "Participants", 12)
    set_number(page, "Min exchanges", 60)
    set_number(page, "Max exchanges", 60)
    set_number(page, "Replications", 2)
    set_number(page, "Workers", 1)
    expect(page.get_by_text("2 points × 2 replications = 4 runs")).to_be_visible()
    shoot(page, "8-sweep-design")

    page.get_by_role("button", name="Launch sweep").click()
    # When it ends the page opens its results: the status line of a completed sweep.
    expect(page.get_by_text("4 of 4 runs done", exact=False)).to_be_visible(timeout=120_000)
    settle(page)
    chart = page.locator(".vega-embed").filter(has_text="welfare_change by facilitator")
    expect(chart).to_be_visible()
    expect(chart.locator("canvas, svg").first).to_be_visible()
    expect(page.get_by_role("link", name="Explore this run")).to_be_visible()
    shoot(page, "9-sweep-results")


# Each chart drawn on the page: its drawing (canvas or svg), the column it sits in (a
# st.columns cell, else the page's main block) and its title. Scrolled into view
# first: Streamlit draws a chart only when it comes near the viewport.
CHART_BOXES = """() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]
  .filter(chart => chart.offsetParent !== null)
  .map(chart => {
    const drawn = chart.querySelector('canvas, svg.marks');
    const column = chart.closest('[data-testid=stColumn]') || chart.closest('[data-testid=stMainBlockContainer]');
    const d = drawn ? drawn.getBoundingClientRect() : null, c = column.getBoundingClientRect();
    const title = chart.querySelector('.vega-embed');
    return {title: title ? title.getAttribute('aria-label') : '?', drawn: d && [d.left, d.right, d.width],
            column: [c.left, c.right]};
  })"""


def charts_outside_their_columns(page: Page) -> tuple[int, list[str]]:
    """How many charts are drawn, and those whose drawing pokes out of their column."""
    page.mouse.move(page.viewport_size["width"] * 0.6, 500)
    for _ in range(12):  # Streamlit mounts a chart only when it nears the viewport: scroll down the page
        page.mouse.wheel(0, 700)
        page.wait_for_timeout(150)
    charts = page.get_by_test_id("stVegaLiteChart")
    for i in range(charts.count()):
        if charts.nth(i).is_visible():
            charts.nth(i).scroll_into_view_if_needed()
            expect(charts.nth(i).locator("canvas, svg.marks").first).to_be_visible()
    boxes = page.evaluate(CHART_BOXES)
    outside = [f"{b['title']}: drawn {b['drawn']} in column {b['column']}" for b in boxes
               if b["drawn"] is None or b["drawn"][0] < b["column"][0] - 1 or b["drawn"][1] > b["column"][1] + 1]
    return len(boxes), outside


def test_every_chart_fits_its_column_at_two_widths(store_dir: Path, server: str, browser: Browser) -> None:
    from commonpool.store import Store
    from pages_support import small_run

    store = Store(store_dir)
    small_run(store, simulation_id="fit-facilitated")
    small_run(store, simulation_id="fit-control", facilitator=False)
    tabs = ["Activity", "Holdings", "Prices", "Network", "Personalities", "Inequality", "Facilitator"]
    for width in (1400, 1000):
        context = browser.new_context(viewport={"width": width, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{server}/explore?run=fit-facilitated")
        expect(page.get_by_role("heading", name="Explore a run")).to_be_visible()
        settle(page)
        # The headline figures are never cut to "+25…": each value and label shows whole.
        expect(page.get_by_test_id("stMetricValue")).to_have_count(6)
        cut = page.evaluate(
            "[...document.querySelectorAll('[data-testid=stMetric] *')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)"
        )
        assert cut == [], (width, cut)
        drawn = 0
        for tab in tabs:
            page.mouse.move(1, 1)  # off the charts: a hovered chart's toolbar can sit over the tab bar
            page.get_by_role("tab", name=tab).click()
            settle(page)
            count, outside = charts_outside_their_columns(page)
            assert not outside, (width, tab, outside)
            drawn += count
        assert drawn >= 14, (width, drawn)  # every Explore chart was looked at, not none
        page.goto(f"{server}/compare?runs=fit-facilitated&runs=fit-control")
        expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
        settle(page)
        count, outside = charts_outside_their_columns(page)
        assert not outside, (width, "compare", outside)
        assert count == 4, (width, count)
        shoot(page, f"10-compare-{width}")
        context.close()


def test_every_sweep_chart_fits_its_column_at_two_widths(store_dir: Path, server: str, browser: Browser) -> None:
    from commonpool.experiments.spec import parse_spec
    from commonpool.experiments.sweep import run_sweep
    from commonpool.store import Store

    # Two factors with replications: the CI chart, the heatmap, and paired differences of each
    # factor with a coloured interval per level of the other.
    spec = parse_spec({"sampler": "grid", "replications": 2, "seed": 3,
                       "base": {"num_participants": 12, "min_exchanges": 60, "max_exchanges": 60},
                       "factors": {"facilitator": [True, False], "max_turns": [2, 6]}})
    sweep_id = run_sweep(spec, Store(store_dir), "local", 1).sweep_id
    for width in (1400, 1000):
        context = browser.new_context(viewport={"width": width, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{server}/sweeps?sweep={sweep_id}")
        expect(page.get_by_role("heading", name="Design an experiment")).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Results").click()
        expect(page.get_by_text("8 of 8 runs done", exact=False)).to_be_visible(timeout=60_000)
        settle(page)
        count, outside = charts_outside_their_columns(page)
        assert not outside, (width, "sweeps", outside)
        assert count >= 6, (width, count)  # CI, heatmap, and paired differences of two factors
        shoot(page, f"11-sweeps-{width}")
        context.close()


def test_the_built_in_personalities_read_as_sentences_inside_their_column(server: str, browser: Browser) -> None:
    for width in (1400, 1000):
        context = browser.new_context(viewport={"width": width, "height": 1000})
        page = context.new_page()
        page.goto(server)
        expect(page.get_by_role("heading", name="New simulation")).to_be_visible()
        settle(page)
        page.get_by_text("Built-in personalities and what their traits mean").click()
        table = page.get_by_test_id("stTable")
        expect(table).to_contain_text("Accepts a swap that lowers its own utility by up to 0.3.")
        # Nothing cut off: the table is no wider than the box it sits in, and needs no sideways scrolling.
        inner, outer, scroll, client = table.evaluate(
            "t => [t.getBoundingClientRect().right, t.parentElement.getBoundingClientRect().right,"
            " t.scrollWidth, t.clientWidth]")
        assert inner <= outer + 1 and scroll <= client + 1, (width, inner, outer, scroll, client)
        table.scroll_into_view_if_needed()
        shoot(page, f"12-personalities-{width}")
        context.close()


def test_a_first_visit_by_a_page_link_gets_the_apps_pages_and_layout(tmp_path: Path, browser: Browser) -> None:
    # A fresh server whose first visitor opens a page's link, as a link shared by a colleague does.
    with dashboard(tmp_path / "store", tmp_path / "fresh.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/sql")
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_role("link", name="Explore a run")).to_be_visible(timeout=30_000)
        expect(nav.get_by_role("link", name="shared")).to_have_count(0)
        expect(nav.get_by_role("link", name="app")).to_have_count(0)
        page.close()
