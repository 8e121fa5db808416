"""LLM prompts in a run of several periods (issue 13, point 5): against the fake server, every
participant's and the facilitator's prompt states the period, what renews and keeps, what each
member produces and needs next period; a one-period run's prompts are byte for byte as before."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import numpy as np
from fake_llm_server import FakeLLMServer, extract_state
from test_llm_runs import llm_run

from commonpool import SimulationConfig
from commonpool.population import generate
from commonpool.store import Store

PERIODS_TEXT = resources.files("commonpool").joinpath("prompts/periods.md").read_text(encoding="utf-8")
# sha256 of a one-period run's requests (llm_run, 12 exchanges), measured before prompts knew of
# periods: the response cache keys on prompts, so a one-period run must still send exactly these.
ONE_PERIOD_PROMPTS = "a6bd55b92152db7f9b0c893006e26457b65c3c27616bd19c09f6f4ce9dbd7d38"
LIVING = {
    "seed": 4, "num_participants": 6, "min_exchanges": 18, "max_exchanges": 18, "periods": 3,
    "storable": ["cooking lessons"], "spoilage": {"vegetables": 0.25},
}


def test_one_period_prompts_are_byte_for_byte_what_they_were(fake_llm: FakeLLMServer, store: Store) -> None:
    llm_run(fake_llm, store, min_exchanges=12, max_exchanges=12)
    sent = sorted(json.dumps(r["messages"], sort_keys=True) for r in fake_llm.requests)
    assert hashlib.sha256("\n".join(sent).encode()).hexdigest() == ONE_PERIOD_PROMPTS
    assert not any("period" in extract_state(r["messages"]) for r in fake_llm.requests)


def test_every_prompt_of_a_living_run_states_the_period_and_what_renews(fake_llm: FakeLLMServer, store: Store) -> None:
    result = llm_run(fake_llm, store, **LIVING)
    assert result.status == "completed" and result.exchanges == 18
    population = generate(SimulationConfig(**LIVING), np.random.default_rng(4))
    states = [extract_state(r["messages"]) for r in fake_llm.requests]
    assert all(PERIODS_TEXT in r["messages"][0]["content"] for r in fake_llm.requests)

    numbers = [s["period"]["number"] for s in states]
    assert numbers == sorted(numbers)  # requests of a round go out together, and periods follow rounds
    # 6 exchanges a period, each advised once before turn 1: the prompt's period is the engine's.
    advised = [s["period"]["number"] for s in states if s["task"] == "advise"]
    assert [advised.count(t) for t in (1, 2, 3)] == [6, 6, 6]
    for s in states:
        assert s["period"]["of"] == 3 and s["period"]["periods_left_after_this"] == 3 - s["period"]["number"]
        words = s["period"]["resources"]
        assert words["childcare hours"].startswith("time: restored up to each member's capacity")
        assert words["childcare hours"].endswith("unused units expire at the period's end")
        assert words["cooking lessons"].endswith("unused units keep")  # a skill declared storable
        assert words["books"] == "good: producers add what they make at every period's start; unused units keep"
        assert words["vegetables"].endswith("unused units keep, each with a 25% chance of spoiling at every period's end")

    def check_member(shown: dict, name: str, last: bool) -> None:
        p = population.names.index(name)
        made = {r: int(q) for r, q in zip(population.resources, population.produces[p]) if q}
        assert made and shown["produces"] == made
        needs = {r: int(q) for r, q in zip(population.resources, population.needs[p]) if q}
        assert shown["needs_next_period"] == ({} if last else needs)

    for s in states:
        last = s["period"]["number"] == 3
        if s["task"] == "advise":
            check_member(s["initiator"], s["initiator"]["name"], last)
            check_member(s["responder"], s["responder"]["name"], last)
        else:
            check_member(s["me"], s["me"]["name"], last)
            check_member(s["partner"], s["partner"]["name"], last)
    assert {s["task"] for s in states} == {"advise", "propose", "reply"}
    assert_living_conserved(store, result.run_id)


def assert_living_conserved(store: Store, run_id: str) -> None:
    """initial + flows + transfers = final for every resource (the flows table signs its kinds)."""
    con = store.connect()
    off = con.execute(
        """WITH moved AS (
               SELECT resource, quantity q FROM initial_holdings WHERE run_id = $r
               UNION ALL SELECT resource, CASE kind WHEN 'produced' THEN quantity ELSE -quantity END
                         FROM flows WHERE run_id = $r
               UNION ALL SELECT resource, -quantity FROM final_holdings WHERE run_id = $r)
           SELECT count(*) FROM (SELECT resource FROM moved GROUP BY 1 HAVING sum(q) <> 0)""",
        {"r": run_id},
    ).fetchone()[0]
    assert off == 0
