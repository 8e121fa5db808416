"""The New simulation page: the form builds a SimulationConfig, shows problems beside
their fields, and runs in the background."""

from __future__ import annotations

import json

import numpy as np
import pytest

from commonpool import SimulationConfig, form
from commonpool.population import generate, roster_to_csv
from commonpool.store import Store
from pages_support import app, no_exceptions, unescaped, wait_until


def run_button(at):  # noqa: ANN001, ANN201
    return at.button(key="run")


def config_shown(at) -> dict:  # noqa: ANN001
    """The config the page would run, from its JSON preview."""
    return json.loads(at.code[0].value)


def finished(at) -> bool:  # noqa: ANN001
    return any(m.value in ("completed", "cancelled", "failed") for m in at.metric)


def test_default_form_is_ready_to_run(store: Store) -> None:
    at = app()
    no_exceptions(at)
    assert not run_button(at).disabled
    assert not at.error



def test_the_built_in_personalities_say_in_a_sentence_what_each_trait_does(store: Store) -> None:
    from commonpool.personalities import BUILTIN, Traits

    at = app()
    table = next(t.value for t in at.table if "trait" in t.value.columns)
    assert list(table.columns) == ["trait", *BUILTIN]
    assert list(table["trait"]) == ["in short", *Traits.model_fields]
    strategic = dict(zip(table["trait"], table["strategic"]))
    assert strategic["in short"] == BUILTIN["strategic"].description
    assert strategic["aspiration"] == "Opens by asking for 85% of the joint gain. (aspiration = 0.85)"
    assert all(cell.endswith(")") and ". (" in cell for cell in table.iloc[1:, 1:].to_numpy().ravel())

def test_the_form_starts_from_the_config_defaults_the_cli_uses(store: Store) -> None:
    at = app()
    defaults = SimulationConfig()
    for field in ("num_participants", "min_exchanges", "max_exchanges", "max_turns"):
        assert at.number_input(key=field).value == getattr(defaults, field), field
    assert at.toggle(key="facilitator").value == defaults.facilitator
    assert at.radio(key="pairing").value == defaults.pairing
    # The preview leaves out what equals the config's defaults: none of these differ from them.
    assert not {"num_participants", "min_exchanges", "max_exchanges", "max_turns", "facilitator",
                "pairing"} & set(config_shown(at))


def test_a_run_launched_from_the_form_finishes_and_is_stored(store: Store) -> None:
    at = app()
    at.number_input(key="num_participants").set_value(12)
    at.number_input(key="min_exchanges").set_value(150)
    at.number_input(key="max_exchanges").set_value(200)
    at.text_input(key="seed").input("42")
    at.radio(key="pairing").set_value("need")
    at.toggle(key="facilitator").set_value(False)
    at.run()
    run_button(at).click().run()
    no_exceptions(at)
    assert at.title[0].value == "Running"
    wait_until(at, finished)
    assert [m.value for m in at.metric if m.label == "Status"] == ["completed"]
    (info,) = store.runs()
    assert info.status == "completed"
    assert info.seed == 42
    assert 150 <= info.meta["exchanges_recorded"] <= 200
    assert info.meta["facilitator"] == "off"
    assert info.meta["config"]["pairing"] == "need"
    assert at.get("page_link")[0].proto.label == "Explore this run"


def test_min_above_max_disables_run_and_says_why_beside_the_field(store: Store) -> None:
    at = app()
    at.number_input(key="min_exchanges").set_value(50)
    at.number_input(key="max_exchanges").set_value(10)
    at.run()
    assert run_button(at).disabled
    assert any("Min exchanges: at most Max exchanges (50 is more than 10)" in unescaped(e.value) for e in at.error)
    assert any("Run is disabled" in w.value for w in at.warning)


def test_every_problem_is_shown_at_once_in_the_forms_words(store: Store) -> None:
    at = app()
    at.number_input(key="num_participants").set_value(1)
    at.number_input(key="min_exchanges").set_value(50)
    at.number_input(key="max_exchanges").set_value(10)
    at.number_input(key="max_turns").set_value(1)
    at.run()
    shown = [unescaped(e.value) for e in at.error]
    # A wrong field used to hide the min/max rule, which the config checks only once every field is valid.
    for line in ("Participants: at least 2 (not 1)", "Max turns: at least 2 (not 1)",
                 "Min exchanges: at most Max exchanges (50 is more than 10)"):
        assert any(line in text for text in shown), (line, shown)
        assert line in unescaped(at.warning[0].value)


def test_too_few_participants_is_refused_by_the_config(store: Store) -> None:
    at = app()
    at.number_input(key="num_participants").set_value(1)
    at.run()
    assert run_button(at).disabled
    assert any("Participants: at least 2 (not 1)" in unescaped(e.value) for e in at.error)


def test_resources_can_be_renamed_added_and_given_a_kind(store: Store) -> None:
    at = app()
    at.session_state["resources_editor"] = {
        "edited_rows": {0: {"name": "novels"}, 1: {"kind": "skill"}},
        "added_rows": [{"name": "massage", "kind": "time"}],
        "deleted_rows": [7],
    }
    at.run()
    no_exceptions(at)
    resources = [(r.name, r.kind) for r in SimulationConfig.model_validate(config_shown(at)).resources]
    assert resources[0] == ("novels", "good")
    assert resources[1] == ("tools", "skill")
    assert resources[-1] == ("massage", "time")
    assert "gardening hours" not in [name for name, _ in resources]


def test_a_bad_resource_name_is_shown_beside_the_resources(store: Store) -> None:
    at = app()
    at.session_state["resources_editor"] = {"edited_rows": {0: {"name": "tools"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert run_button(at).disabled
    assert any("resource names must be unique; repeated: tools" in unescaped(e.value) for e in at.error)


def test_a_custom_personality_joins_the_mix_with_its_own_count(store: Store) -> None:
    at = app()
    at.session_state["custom_personalities_editor"] = {
        "edited_rows": {},
        "added_rows": [{"name": "haggler", "description": "Argues over every unit.", "aspiration": 0.95}],
        "deleted_rows": [],
    }
    at.run()
    at.number_input(key="mix_haggler").set_value(2)
    at.number_input(key="mix_cautious").set_value(2)
    at.run()
    no_exceptions(at)
    config = SimulationConfig.model_validate(config_shown(at))
    assert config.personality("haggler").traits.aspiration == 0.95
    assert config.personalities["haggler"] == 2


def test_a_custom_personality_with_a_bad_trait_is_refused(store: Store) -> None:
    at = app()
    at.session_state["custom_personalities_editor"] = {
        "edited_rows": {}, "added_rows": [{"name": "reckless", "aspiration": 3.0}], "deleted_rows": []
    }
    at.run()
    assert run_button(at).disabled
    assert any("Your personalities row 1 traits aspiration: at most 1 (not 3.0)" in unescaped(e.value) for e in at.error)


def roster_csv(people: int = 6) -> str:
    config = SimulationConfig(seed=5, num_participants=people)
    population = generate(config, np.random.default_rng(5))
    return roster_to_csv(population.to_specs(), population.resources)


def test_an_uploaded_roster_is_edited_and_runs_as_given(store: Store) -> None:
    at = app()
    at.toggle(key="use_roster").set_value(True).run()
    at.file_uploader(key="roster_upload").set_value(("roster.csv", roster_csv(6).encode(), "text/csv"))
    at.run()
    no_exceptions(at)
    editor = [d for d in at.data_editor if d.key and d.key.startswith("roster_editor")][0]
    assert len(editor.value) == 6
    at.session_state[editor.key] = {"edited_rows": {0: {"name": "Mx Renamed"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    config = config_shown(at)
    assert config["num_participants"] == 6
    assert config["roster"][0]["name"] == "Mx Renamed"
    assert {d.label for d in at.download_button} >= {"Roster CSV", "Roster JSON"}
    run_button(at).click().run()
    wait_until(at, finished)
    con = store.connect()
    names = [row[0] for row in con.execute("SELECT name FROM participants ORDER BY participant_id").fetchall()]
    assert names[0] == "Mx Renamed" and len(names) == 6


def test_a_bad_roster_upload_is_reported_and_nothing_changes(store: Store) -> None:
    at = app()
    at.toggle(key="use_roster").set_value(True).run()
    at.file_uploader(key="roster_upload").set_value(("roster.csv", b"name,personality,holdings:books\nAda,cautious,lots\n", "text/csv"))
    at.run()
    no_exceptions(at)
    assert any("roster row 1: holdings:books must be a whole number" in unescaped(e.value) for e in at.error)


def test_an_unknown_personality_in_the_roster_disables_run(store: Store) -> None:
    at = app()
    at.toggle(key="use_roster").set_value(True).run()
    editor = [d for d in at.data_editor if d.key and d.key.startswith("roster_editor")][0]
    at.session_state[editor.key] = {"edited_rows": {2: {"personality": "wizard"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert run_button(at).disabled
    assert any("roster row 3: unknown personality 'wizard'" in unescaped(e.value) for e in at.error)


def test_a_run_id_already_in_the_store_is_refused(store: Store) -> None:
    from pages_support import small_run

    taken = small_run(store, simulation_id="taken-id")
    at = app()
    at.text_input(key="simulation_id").input(taken).run()
    assert run_button(at).disabled
    assert any("a run named 'taken-id' already exists" in unescaped(e.value) for e in at.error)


LLM_VARIABLES = ("COMMONPOOL_MODEL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OLLAMA_API_BASE",
                 "OPENAI_API_BASE")


def test_engines_offer_rules_when_no_model_has_a_key(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in LLM_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    at = app()
    assert at.selectbox(key="model").options == ["rules"]
    assert at.selectbox(key="engine_cautious").options[:2] == ["(run default)", "rules"]


def local_server_page(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The page with no keys and an OpenAI-compatible server whose model the user names "tiny"."""
    for variable in LLM_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    at = app()
    at.text_input(key="served_model").input("tiny").run()
    return at


def test_a_model_on_a_local_server_can_be_chosen_per_personality(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    at = local_server_page(monkeypatch)
    assert at.selectbox(key="engine_strategic").options == ["(run default)", "rules", "openai/tiny"]
    at.selectbox(key="engine_strategic").set_value("openai/tiny").run()
    config = SimulationConfig.model_validate(config_shown(at))
    assert config.personality_models == {"strategic": "openai/tiny"}
    assert config.api_base == "http://127.0.0.1:9/v1"
    assert config.model is None
    assert any(n.label == "Budget (USD)" for n in at.number_input)


def test_prices_for_an_unpriced_model_reach_the_config(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    at = local_server_page(monkeypatch)
    at.selectbox(key="model").set_value("openai/tiny").run()
    assert SimulationConfig.model_validate(config_shown(at)).cost_per_1k_prompt_tokens is None  # LiteLLM's list
    at.number_input(key="cost_per_1k_prompt_tokens").set_value(0.01).run()
    at.number_input(key="cost_per_1k_completion_tokens").set_value(0.03).run()
    config = SimulationConfig.model_validate(config_shown(at))
    assert (config.cost_per_1k_prompt_tokens, config.cost_per_1k_completion_tokens) == (0.01, 0.03)
    assert not run_button(at).disabled


# --- bad input in the form (issue 12, point 8) ------------------------------------------------------


def test_two_custom_personalities_with_one_name_say_which_name_is_taken(store: Store) -> None:
    at = app()
    at.session_state["custom_personalities_editor"] = {
        "edited_rows": {},
        "added_rows": [{"name": "haggler", "aspiration": 0.9}, {"name": "haggler", "aspiration": 0.2}],
        "deleted_rows": [],
    }
    at.run()
    no_exceptions(at)
    assert run_button(at).disabled
    assert any("the name 'haggler' is taken" in unescaped(e.value) for e in at.error)
    assert len([n for n in at.number_input if n.key == "mix_haggler"]) == 1


def test_a_seed_past_2_53_is_kept_exactly_and_one_past_2_63_is_refused(store: Store) -> None:
    at = app()
    at.text_input(key="seed").input(str(2**53 + 1)).run()
    assert config_shown(at)["seed"] == 2**53 + 1
    assert not run_button(at).disabled
    at.text_input(key="seed").input(str(2**63)).run()
    assert run_button(at).disabled
    assert any("Seed: at most 9,223,372,036,854,775,807" in unescaped(e.value) for e in at.error)


def test_number_boxes_are_bounded_by_the_config_and_say_so(store: Store) -> None:
    at = app()
    bounds = {"num_participants": 100_000, "min_exchanges": 100_000_000, "max_exchanges": 100_000_000,
              "max_turns": 20, "mix_cautious": 100_000}
    for key, bound in bounds.items():
        box = at.number_input(key=key)
        assert box.max == bound, key
        assert f"{bound:,}" in box.help or str(bound) in box.help, key


def test_a_utf16_roster_upload_says_what_the_file_is(store: Store) -> None:
    at = app()
    at.toggle(key="use_roster").set_value(True).run()
    at.file_uploader(key="roster_upload").set_value(("roster.csv", roster_csv(4).encode("utf-16"), "text/csv"))
    at.run()
    no_exceptions(at)
    assert any("UTF-16" in unescaped(e.value) and "save it as UTF-8" in unescaped(e.value) for e in at.error)


def test_the_llm_timeout_is_set_in_the_form_and_checked_beside_it(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    at = local_server_page(monkeypatch)
    at.selectbox(key="model").set_value("openai/tiny").run()
    at.number_input(key="llm_timeout_s").set_value(240.0).run()
    assert SimulationConfig.model_validate(config_shown(at)).llm_timeout_s == 240.0
    at.number_input(key="llm_timeout_s").set_value(0.0).run()
    assert run_button(at).disabled
    assert any("llm_timeout_s" in unescaped(e.value) or "LLM timeout" in unescaped(e.value) for e in at.error), [e.value for e in at.error]


def test_max_tokens_and_structured_output_are_set_in_the_form_as_the_flags_set_them(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = local_server_page(monkeypatch)
    at.selectbox(key="model").set_value("openai/tiny").run()
    assert at.selectbox(key="structured_output").value == "auto"
    at.number_input(key="llm_max_tokens").set_value(300).run()
    at.selectbox(key="structured_output").set_value("json_object").run()
    config = SimulationConfig.model_validate(config_shown(at))
    assert (config.llm_max_tokens, config.structured_output) == (300, "json_object")
    at.number_input(key="llm_max_tokens").set_value(8).run()  # below the 16 a reply needs
    assert run_button(at).disabled
    assert any("llm_max_tokens" in unescaped(e.value) or "Max tokens" in unescaped(e.value) for e in at.error), [
        e.value for e in at.error
    ]


def test_a_model_without_its_key_is_refused_naming_the_variable_and_nothing_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in LLM_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    # A model named in the environment whose key is not set: the picker offers it, LiteLLM knows its variable.
    monkeypatch.setenv("COMMONPOOL_MODEL", "anthropic/claude-3-5-haiku-latest")
    monkeypatch.setenv("COMMONPOOL_LLM_WORKERS", "0")  # the check in this process: no worker outlives the test
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    at = app()
    at.selectbox(key="model").set_value("anthropic/claude-3-5-haiku-latest").run()
    assert not run_button(at).disabled  # the key is checked when asked to run, as the CLI checks it
    run_button(at).click().run()
    no_exceptions(at)
    shown = [unescaped(e.value) for e in at.error]
    assert any(
        line.startswith("Engine for everyone: anthropic/claude-3-5-haiku-latest needs ANTHROPIC_API_KEY, which is not set")
        for line in shown
    ), shown
    assert store.run_list() == []  # refused before anything was written


def test_storable_and_spoilage_reach_the_config_as_the_flags_set_them(store: Store) -> None:
    at = app()
    assert at.multiselect(key="storable").options == ["bike repairs", "cooking lessons", "childcare hours",
                                                      "gardening hours"]  # time and skills: goods always keep
    at.number_input(key="periods").set_value(4)
    at.multiselect(key="storable").set_value(["cooking lessons"])
    at.text_input(key="spoilage").set_value("vegetables=0.2, bread loaves = 0.5")
    at.run()
    no_exceptions(at)
    assert not run_button(at).disabled
    config = SimulationConfig.model_validate(config_shown(at))
    assert (config.periods, config.storable) == (4, ["cooking lessons"])
    assert config.spoilage == {"vegetables": 0.2, "bread loaves": 0.5}


def test_bad_spoilage_is_refused_beside_the_box_in_the_forms_words(store: Store) -> None:
    at = app()
    at.text_input(key="spoilage").set_value("vegtables=0.2, bread loaves=1.5, tools").run()
    assert run_button(at).disabled
    shown = [unescaped(e.value) for e in at.error]
    for line in ("Spoilage: a resource of the Resources table (not vegtables; allowed: books, tools,",
                 "Spoilage: a share from 0 to 1 (not 1.5 for bread loaves)",
                 "Spoilage: NAME=SHARE, e.g. vegetables=0.2 (not tools)"):
        assert any(line in text for text in shown), (line, shown)
    assert not any("storable/spoilage" in text for text in shown)  # the config's wording gives way
    at.text_input(key="spoilage").set_value("").run()
    assert not run_button(at).disabled


def test_storable_offers_the_resources_as_edited_and_forgets_one_renamed_away(store: Store) -> None:
    at = app()
    at.number_input(key="periods").set_value(3)
    at.multiselect(key="storable").set_value(["childcare hours"]).run()
    at.session_state["resources_editor"] = {"edited_rows": {6: {"name": "babysitting"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    no_exceptions(at)
    storable = at.multiselect(key="storable")
    assert "babysitting" in storable.options and storable.value == []
    assert not run_button(at).disabled and "storable" not in config_shown(at)


def test_the_form_words_a_storable_name_the_resources_lack() -> None:
    fields = {"resources": [{"name": "books", "kind": "good"}, {"name": "hours", "kind": "time"}],
              "periods": 2, "storable": ["minutes"]}
    config, problems = form.validate(fields)
    assert config is None
    assert problems == {"storable": ["Storable: a resource of the Resources table (not minutes; allowed: books, hours)"]}
