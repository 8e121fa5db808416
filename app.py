"""CommonPool dashboard: `streamlit run app.py`. Navigation only; each page lives in pages/."""

import streamlit as st

st.set_page_config(page_title="CommonPool", page_icon=":material/handshake:", layout="wide")

st.navigation(
    [
        st.Page("pages/new_simulation.py", title="New simulation", icon=":material/science:", default=True),
        st.Page("pages/running.py", title="Running", icon=":material/timer:"),
        st.Page("pages/explore.py", title="Explore a run", icon=":material/search:"),
        st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
        st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:"),
        st.Page("pages/sql.py", title="SQL", icon=":material/storage:"),
    ]
).run()
