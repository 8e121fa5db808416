"""`streamlit run app.py` with the pages' libraries imported while the server starts.

Streamlit imports a page's libraries (pandas, Altair, DuckDB, PyArrow, the metrics) only when
the first visitor's script runs, which on a loaded 2-core machine kept the first page of a
fresh server waiting about 2 s. Here they are imported on a background thread as the server
starts, so they are usually loaded by the time the browser has fetched the app; a visitor
who comes sooner waits for the rest of the import, not for a second one.

Run from the project root (scripts/dashboard.sh does): python scripts/serve_dashboard.py [streamlit options]
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_the_pages_libraries() -> None:
    sys.path.insert(0, str(ROOT))
    import altair  # noqa: F401
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import pages._shared  # noqa: F401
    from commonpool import charts, metrics  # noqa: F401


def _navigation_from_the_first_visit() -> None:
    """app.py's st.navigation from the first visit on, even one that opens a page's link.

    With a pages/ folder beside app.py, Streamlit (1.67) runs a fresh server's
    first session in its old folder mode until app.py has called st.navigation
    once: a first visitor who opens e.g. /explore?run=X gets pages/explore.py
    alone, with a sidebar of file names (app, shared, ...) and without app.py's
    wide layout. st.navigation itself clears this class flag; clearing it
    before the first session makes every session go through app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


if __name__ == "__main__":
    threading.Thread(target=_import_the_pages_libraries, name="import-pages-libraries", daemon=True).start()
    _navigation_from_the_first_visit()
    from streamlit.web import cli

    sys.exit(cli.main(["run", str(ROOT / "app.py"), *sys.argv[1:]]))
