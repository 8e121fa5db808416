"""Shared by the dashboard's AppTests (no tests here): small runs and page helpers; the store fixture is in conftest."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block, Node

from commonpool import SimulationConfig, run_simulation
from commonpool.store import Store

APP = Path(__file__).resolve().parents[1] / "app.py"


def small_run(store: Store, **overrides: object) -> str:
    """A finished run of a few hundred exchanges; its run id."""
    fields: dict[str, object] = {"seed": 11, "num_participants": 16, "min_exchanges": 240, "max_exchanges": 240}
    fields.update(overrides)
    return run_simulation(SimulationConfig.model_validate(fields), store).run_id


def app(page: str | None = None, query: dict[str, str] | None = None) -> AppTest:
    """The dashboard, run once, then (optionally) switched to page and run again."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page is not None:
        if query:
            at.query_params.update(query)
        at.switch_page(page).run()
    return at


EXPLORE_TABS = ("Activity", "Holdings", "Prices", "Network", "Personalities", "Inequality", "Facilitator",
                "Exchange log")


def every_explore_tab(run_id: str) -> Iterator[tuple[str, AppTest]]:
    """Explore of run_id with each tab chosen in turn (only the chosen tab is drawn), as a person clicks them.

    A click on a tab puts it in the URL (?tab=Prices), so the tab is chosen there.
    """
    at = app("pages/explore.py", {"run": run_id})
    for tab in EXPLORE_TABS:
        if tab != EXPLORE_TABS[0]:
            at.query_params["tab"] = tab
            at.run()
        yield tab, at


def nodes(block: Block, kind: str) -> list[Node]:
    """Every element of a type anywhere under block (charts have no AppTest accessor)."""
    found: list[Node] = []
    for child in getattr(block, "children", {}).values():
        if child.type == kind:
            found.append(child)
        found.extend(nodes(child, kind))
    return found


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def wait_until(at: AppTest, done: Callable[[AppTest], bool], timeout: float = 60) -> AppTest:
    """Rerun the app (fragments tick only on run()) until done(at) or timeout."""
    deadline = time.monotonic() + timeout
    while not done(at):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the page")
        time.sleep(0.2)
        at.run()
    return at


def unescaped(markdown: str) -> str:
    """What a person reads from a Markdown element whose text went through pages._shared.plain."""
    return re.sub(r"\\(.)", r"\1", markdown)
