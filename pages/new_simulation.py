"""New simulation: describe a community, check it with SimulationConfig, run it in the background."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from commonpool import form
from commonpool.config import DEFAULT_RESOURCES, MAX_PARTICIPANTS, SimulationConfig, default
from commonpool.personalities import BUILTIN, Traits
from commonpool.population import RosterError, apportion, mix_is_exact
from commonpool.llm.preflight import missing_credentials
from commonpool.llm.settings import available_models, served_api_base
from pages._shared import RULES, plain, runner, store

RUN_DEFAULT = "(run default)"
# Where the form names a model (preflight's messages name the CLI flag otherwise).
FORM_NAMES = {"--model": "Engine for everyone", "--facilitator-model": "Facilitator engine",
              "--personality-model": "Engine per personality", "--roster": "Roster"}

st.title("New simulation")
st.caption("Describe a community and run it. The offline rules engine needs no API key.")

fields: dict[str, Any] = {}
slots: dict[str, Any] = {}  # config field -> the place beside its widget where its problems appear


def upper(field: str) -> int:
    """The largest value SimulationConfig allows for an integer field: the number box's bound.

    Explicit, so the browser says "enter a value less than or equal to ..." instead of
    silently keeping the old value (past 2**53 a browser cannot even hold the number).
    """
    return next(m.le for m in SimulationConfig.model_fields[field].metadata if hasattr(m, "le"))


def slot(*names: str) -> None:
    """Reserve the spot under the widget just drawn for the problems of these config fields."""
    place = st.empty()
    for name in names:
        slots[name] = place


models = available_models()
served = served_api_base()
if served:
    # Only the user knows the name of a model on their own server.
    name = st.text_input(f"Model served at {served}", key="served_model", placeholder="e.g. llama3.1",
                         help="The model name your OpenAI-compatible server expects.")
    models = models + ([f"openai/{name.strip()}"] if name.strip() else [])
engines = [RULES, *models]
if not models:
    st.info("No LLM keys found in the environment, so every participant uses the offline rules engine.")

# --- size -------------------------------------------------------------------------------------------
st.subheader("Size")
use_roster = st.session_state.get("use_roster", False)
c1, c2, c3, c4 = st.columns(4)
with c1:
    participants = st.number_input(
        "Participants", value=default("num_participants"), step=1, key="num_participants", disabled=use_roster,
        max_value=upper("num_participants"),
        help=f"2 to {upper('num_participants'):,}. With a roster, the roster's size.",
    )
    slot("num_participants")
with c2:
    fields["min_exchanges"] = st.number_input("Min exchanges", value=default("min_exchanges"), step=1,
                                              key="min_exchanges",
                                              max_value=upper("min_exchanges"),
                                              help=f"1 to {upper('min_exchanges'):,}.")
    slot("min_exchanges")
with c3:
    fields["max_exchanges"] = st.number_input("Max exchanges", value=default("max_exchanges"), step=1,
                                              key="max_exchanges",
                                              max_value=upper("max_exchanges"),
                                              help=f"1 to {upper('max_exchanges'):,}.")
    slot("max_exchanges")
with c4:
    # Text, not a number box: a browser rounds whole numbers past 2**53, and seeds go up to 2**63 - 1.
    seed = st.text_input("Seed", key="seed", placeholder="random",
                         help=f"A whole number from 0 to {upper('seed'):,}. The same config and seed give the "
                              "same run. Blank: drawn and recorded.")
    slot("seed")
if seed.strip():
    fields["seed"] = seed.strip()
run_id = st.text_input("Run id (optional)", key="simulation_id", placeholder="generated, e.g. run-20250101-120000-ab12cd")
slot("simulation_id")
if run_id.strip():
    fields["simulation_id"] = run_id.strip()
p1, p2 = st.columns(2)
with p1:
    fields["periods"] = st.number_input(
        "Periods", value=default("periods"), min_value=1, step=1, key="periods", max_value=upper("periods"),
        help="The exchanges above are the run's total, split evenly over the periods. With more than one, "
             "every period ends with consumption (needs recur) and expiry of unused time and skills, and the "
             "next starts with what everyone produces (a roster's produces: columns). 1: nothing renews.",
    )
    slot("periods")
with p2:
    fields["discount"] = st.number_input(
        "Discount", value=default("discount"), min_value=0.01, max_value=1.0, step=0.01, key="discount",
        help="Weight of period t's utility in the run's utility: discount^(t-1).",
    )
    slot("discount")

# --- resources --------------------------------------------------------------------------------------
st.subheader("Resources")
st.caption("Goods, skills and time the community trades. Add rows, rename, or change a kind.")
resources_table = st.data_editor(
    form.resources_table(list(DEFAULT_RESOURCES)),
    num_rows="dynamic",
    key="resources_editor",
    hide_index=True,
    column_config={
        "name": st.column_config.TextColumn("name", required=True, max_chars=40),
        "kind": st.column_config.SelectboxColumn("kind", options=["good", "skill", "time"], required=True, default="good"),
    },
)
slot("resources")
fields["resources"] = form.resources_from_table(resources_table)
# What keeps from one period to the next (--storable, --spoilage); nothing renews in a one-period run.
renewing = [r["name"] for r in fields["resources"] if r["kind"] in ("time", "skill") and r["name"]]
k1, k2 = st.columns(2)
with k1:
    fields["storable"] = st.multiselect(
        "Storable", renewing, key="storable", placeholder="none: unused time and skills expire",
        help="Time or skill resources whose unused units carry over to the next period instead of expiring "
             "(goods always keep). Only matters with more than one period.",
    )
    slot("storable")
with k2:
    fields["spoilage"] = st.text_input(
        "Spoilage", key="spoilage", placeholder="e.g. vegetables=0.2, bread loaves=0.5",
        help="NAME=SHARE, comma-separated: the share (0 to 1) of a storable resource's stock lost at each "
             "period's end. Only matters with more than one period.",
    )
    slot("spoilage")

# --- personalities ----------------------------------------------------------------------------------
st.subheader("Personalities")
with st.expander("Built-in personalities and what their traits mean"):
    # A static table wraps each sentence inside its column (a data grid cut them off).
    st.table(form.builtin_traits_table(), hide_index=True)
st.caption("Add your own: a name, traits (blank = default) and a description that LLM brains read.")
custom_table = st.data_editor(
    form.custom_personalities_table(),
    num_rows="dynamic",
    key="custom_personalities_editor",
    hide_index=True,
    column_config={
        "name": st.column_config.TextColumn("name", max_chars=40),
        "description": st.column_config.TextColumn("description", max_chars=2000),
        **{
            trait: st.column_config.NumberColumn(trait, help=info.description)
            for trait, info in Traits.model_fields.items()
        },
    },
)
slot("custom_personalities")
fields["custom_personalities"] = form.custom_personalities_from_table(custom_table)

# Each name once: a name given twice (or a built-in's) is refused beside the table, not drawn twice.
names = list(dict.fromkeys([*BUILTIN, *(p["name"] for p in fields["custom_personalities"])]))
default_counts = apportion(default("personalities"), default("num_participants"))
st.markdown("**Mix and engine per personality**")
mix: dict[str, float] = {}
personality_models: dict[str, str] = {}
for name in names:
    left, right = st.columns([1, 1])
    mix[name] = left.number_input(
        f"Count: {plain(name)}", value=default_counts.get(name, 0), step=1, key=f"mix_{name}", disabled=use_roster,
        max_value=MAX_PARTICIPANTS, help=f"0 to {MAX_PARTICIPANTS:,}: exact counts, or shares if they do not add up.",
    )
    engine = right.selectbox(f"Engine: {plain(name)}", [RUN_DEFAULT, *engines], key=f"engine_{name}")
    if engine != RUN_DEFAULT:
        personality_models[name] = engine
slot("personalities", "personality_models")
fields["personalities"] = mix
if personality_models:
    fields["personality_models"] = personality_models
if not use_roster:
    if mix_is_exact(mix, int(participants)):
        st.caption(f"The counts add up to {int(participants)} participants and are used exactly.")
    else:
        total = sum(v for v in mix.values() if v > 0)
        st.caption(f"The counts add up to {total:g}, not {participants}: they are used as shares.")

# --- roster -----------------------------------------------------------------------------------------
st.subheader("Roster")
st.toggle("Edit the participants one by one (roster)", key="use_roster",
          help="Start from a generated community or upload a CSV/JSON roster, then edit any cell.")
roster_table: pd.DataFrame | None = None
roster_problem: str | None = None
if use_roster:
    base_fields = {**fields, "num_participants": participants}
    base, _ = form.validate(base_fields)
    c1, c2 = st.columns([1, 2])
    if c1.button("Generate from the settings above", disabled=base is None,
                 help=None if base is not None else "Fix the settings above first."):
        st.session_state["roster_base"] = form.roster_table(base)
        st.session_state["roster_version"] = st.session_state.get("roster_version", 0) + 1
    upload = c2.file_uploader("Upload a roster (CSV or JSON)", type=["csv", "json"], key="roster_upload")
    if upload is not None and st.session_state.get("roster_upload_id") != upload.file_id:
        st.session_state["roster_upload_id"] = upload.file_id
        try:
            st.session_state["roster_base"] = form.roster_table_from_upload(upload.name, upload.getvalue())
            st.session_state["roster_version"] = st.session_state.get("roster_version", 0) + 1
            st.session_state.pop("roster_upload_error", None)
        except RosterError as exc:
            st.session_state["roster_upload_error"] = str(exc)
    if "roster_upload_error" in st.session_state:
        st.error(plain(st.session_state["roster_upload_error"]))
    if "roster_base" not in st.session_state and base is not None:
        st.session_state["roster_base"] = form.roster_table(base)
    if "roster_base" in st.session_state:
        # A new base (generated or uploaded) gets a new editor key: edits are
        # stored by row position and would otherwise land on the wrong rows.
        roster_table = st.data_editor(
            st.session_state["roster_base"],
            num_rows="dynamic",
            key=f"roster_editor_{st.session_state.get('roster_version', 0)}",
            hide_index=True,
            column_config={
                "personality": st.column_config.SelectboxColumn("personality", options=names, required=True),
                "brain": st.column_config.SelectboxColumn(
                    "engine", options=["", *engines], help="blank: the engine of the personality or the run"
                ),
                "notes": st.column_config.TextColumn("notes", max_chars=2000),
            },
        )
    slot("roster")
    if roster_table is None:
        roster_problem = "roster: generate one or upload a file"
    else:
        try:
            fields["roster"] = form.roster_from_table(roster_table)
            participants = len(fields["roster"])
        except RosterError as exc:
            roster_problem = str(exc)
        d1, d2, _ = st.columns([1, 1, 4])
        d1.download_button("Roster CSV", form.roster_csv_download(roster_table), file_name="roster.csv", mime="text/csv",
                           on_click="ignore", icon=":material/download:")
        if "roster" in fields:
            d2.download_button("Roster JSON", form.roster_json(roster_table), file_name="roster.json",
                               mime="application/json", on_click="ignore", icon=":material/download:")
fields["num_participants"] = participants

# --- engine and negotiation -------------------------------------------------------------------------
st.subheader("Engine and negotiation")
c1, c2, c3, c4 = st.columns(4)
with c1:
    model = st.selectbox("Engine for everyone", engines, key="model",
                         help="rules: the offline engine; or a model the environment has a key for.")
    slot("model")
if model != RULES:
    fields["model"] = model
with c2:
    fields["facilitator"] = st.toggle("Facilitator", value=default("facilitator"), key="facilitator",
                                      help="Off: a control run with no advice.")
    facilitator_model = st.selectbox("Facilitator engine", engines, key="facilitator_model",
                                     disabled=not fields["facilitator"])
    slot("facilitator", "facilitator_model")
if fields["facilitator"] and facilitator_model != RULES:
    fields["facilitator_model"] = facilitator_model
with c3:
    fields["pairing"] = st.radio("Pairing", ["random", "need"], key="pairing", horizontal=True,
                                 index=["random", "need"].index(default("pairing")),
                                 help="need: those who need a resource tend to meet those with a surplus of it.")
    slot("pairing")
with c4:
    fields["max_turns"] = st.number_input("Max turns", value=default("max_turns"), step=1, key="max_turns",
                                          max_value=upper("max_turns"),
                                          help="Messages per exchange, the opening proposal included (2-20).")
    slot("max_turns")
uses_llm = model != RULES or bool(personality_models) or "facilitator_model" in fields or any(
    (m.brain or RULES) != RULES for m in fields.get("roster", [])
)
if uses_llm:
    b1, b2, b3 = st.columns(3)
    with b1:
        budget = st.number_input("Budget (USD)", value=None, min_value=0.0, key="budget_usd", placeholder="no limit",
                                 help="Stop before spending more than this on LLM calls.")
        slot("budget_usd")
    if budget:
        fields["budget_usd"] = budget
    price_help = "For a model LiteLLM has no price for (a local server, say); empty: LiteLLM's price list."
    for column, name, label in ((b2, "cost_per_1k_prompt_tokens", "Price per 1k prompt tokens (USD)"),
                                (b3, "cost_per_1k_completion_tokens", "Price per 1k completion tokens (USD)")):
        with column:
            price = st.number_input(label, value=None, min_value=0.0, format="%.6f", key=name,
                                    placeholder="LiteLLM's list", help=price_help)
            slot(name)
        if price is not None:
            fields[name] = price
    t1, t2, t3 = st.columns(3)
    with t1:
        fields["llm_timeout_s"] = st.number_input(
            "LLM timeout (s)", value=default("llm_timeout_s"), min_value=0.0, step=10.0, key="llm_timeout_s",
            help="Seconds a model may take to answer one request (0-3600). A local server with few slots needs more; "
                 "timeouts also lower the requests in flight.",
        )
        slot("llm_timeout_s")
    with t2:
        max_tokens = st.number_input(
            "Max tokens per reply", value=default("llm_max_tokens"), min_value=0, step=50, key="llm_max_tokens",
            max_value=upper("llm_max_tokens"), placeholder="400, or 600 for the facilitator",
            help="The most tokens a model may write in one reply (16-32,768). A reply cut off here ends with "
                 "finish_reason 'length' in llm_calls; raise it for a model that writes a lot before the JSON.",
        )
        slot("llm_max_tokens")
    if max_tokens is not None:
        fields["llm_max_tokens"] = max_tokens
    with t3:
        shapes = ["auto", "json_schema", "json_object", "off"]
        fields["structured_output"] = st.selectbox(
            "Structured output", shapes, index=shapes.index(default("structured_output")), key="structured_output",
            help="How a reply's JSON shape is asked for. auto: the protocol's JSON schema where the model or server "
                 "takes one (a server that refuses it gets a plain JSON object, then nothing); json_schema or "
                 "json_object: always that; off: the prompt alone.",
        )
        slot("structured_output")
    if served:
        fields["api_base"] = served

# --- check and run ----------------------------------------------------------------------------------
config, problems = form.validate(fields)
if config is not None and config.simulation_id and store().has_run(config.simulation_id):
    config, problems = None, {"simulation_id": [f"simulation_id: a run named {config.simulation_id!r} already exists"]}
if roster_problem is not None:
    problems.setdefault("roster", []).insert(0, roster_problem)
    config = None
unplaced: list[str] = []
for field, lines in problems.items():
    if field in slots:
        slots[field].error(plain("\n".join(lines)))
    else:
        unplaced.extend(lines)

st.divider()
left, right = st.columns([1, 4])
ready = config is not None and not problems
clicked = left.button("Run simulation", type="primary", disabled=not ready, key="run")
if ready:
    right.caption("Ready. The run continues in the background if you leave or reload this page.")
else:
    every = [line for lines in problems.values() for line in lines]
    right.warning(plain(f"Run is disabled: {'; '.join(every)}"))
for line in unplaced:
    st.error(plain(line))

if config is not None:
    with st.expander("The config this run will use (JSON)"):
        text = config.model_dump_json(indent=2, exclude_defaults=True)
        st.code(text, language="json")
        st.download_button("config.json", text, file_name="config.json", mime="application/json",
                           on_click="ignore", icon=":material/download:")

key_problem = None
if clicked and config is not None and config.uses_llm():
    # As the CLI does before it writes anything: LiteLLM says which variable each model's key is read from.
    with st.spinner("Checking that every model has its key..."):
        key_problem = missing_credentials(config, FORM_NAMES)
    if key_problem:
        st.error(plain(key_problem))
if clicked and config is not None and not key_problem:
    handle = runner().start(config, store())
    st.switch_page("pages/running.py", query_params={"run": handle.run_id})
