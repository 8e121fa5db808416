"""The one rule of openings and counters, counters that change the goods, and a facilitator that can suggest nothing.

The rule (brains/rules.py, README "Negotiation protocol"): a speaker only puts
forward a swap that is feasible within its max_units, leaves its partner
better off, and passes its own test (own gain >= min_gain, own gain +
altruism x partner gain >= 0). The property tests check it against a brute
force over every pair of goods and every quantity, scored with economy.py
directly, in many seeded random worlds.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from commonpool import SimulationConfig, economy, metrics, run_simulation
from commonpool.brains.rules import RulesBrain, RulesFacilitator
from commonpool.engine import Negotiation, settle_round, take_turn
from commonpool.facilitator import MarketHistory
from commonpool.ledger import Ledger
from commonpool.population import generate
from commonpool.protocol import ACCEPT, COUNTER, NO_RESOURCE, PROPOSE, REJECT, ExchangeBatch, World
from commonpool.store import Store

WORLDS = 150


def gains(world: World, i: int, j: int, a: int, x: int, b: int, y: int) -> tuple[float, float]:
    """Both sides' utility change when i gives x of a to j for y of b, from economy.py alone."""
    h, n, w, lam = world.holdings, world.population.needs, world.population.wants, world.need_weight
    g_i = economy.utility(np.array([h[i] - x * np.eye(h.shape[1], dtype=int)[a] + y * np.eye(h.shape[1], dtype=int)[b]]), n[i], w[i], lam)[0]
    g_j = economy.utility(np.array([h[j] + x * np.eye(h.shape[1], dtype=int)[a] - y * np.eye(h.shape[1], dtype=int)[b]]), n[j], w[j], lam)[0]
    return (
        g_i - economy.utility(h[i : i + 1], n[i], w[i], lam)[0],
        g_j - economy.utility(h[j : j + 1], n[j], w[j], lam)[0],
    )


def passes_rule(world: World, speaker: int, g_self: float, g_partner: float) -> bool:
    traits = world.population.traits
    return (
        g_partner > 0
        and g_self >= traits["min_gain"][speaker]
        and g_self + traits["altruism"][speaker] * g_partner >= 0
    )


def qualifying(world: World, i: int, j: int, speaker: int, goods: tuple[int, int] | None = None) -> list[tuple]:
    """Every swap (a, x, b, y) the speaker may put forward, by brute force (on goods, or on any pair)."""
    h, r = world.holdings, world.holdings.shape[1]
    limit = int(world.population.traits["max_units"][speaker])
    pairs = [goods] if goods is not None else [(a, b) for a, b in itertools.permutations(range(r), 2)]
    found = []
    for a, b in pairs:
        for x in range(1, min(limit, h[i, a]) + 1):
            for y in range(1, min(limit, h[j, b]) + 1):
                g_i, g_j = gains(world, i, j, a, x, b, y)
                g_s, g_p = (g_i, g_j) if speaker == i else (g_j, g_i)
                if passes_rule(world, speaker, g_s, g_p):
                    found.append((a, x, b, y))
    return found


def random_world(seed: int) -> World:
    """A small community in a random state, with traits drawn beyond the presets (altruism up to 2)."""
    rng = np.random.default_rng(seed)
    config = SimulationConfig(seed=seed, num_participants=8, resources=[{"name": n} for n in "abcde"][: int(rng.integers(3, 6))])
    population = generate(config, rng)
    size, goods = population.holdings.shape
    population.holdings = rng.integers(0, 5, size=(size, goods)) * (rng.random((size, goods)) < 0.7)
    population.traits = {
        **population.traits,
        "min_gain": rng.choice([-0.5, -0.3, 0.0, 0.05, 0.2], size),
        "altruism": rng.choice([0.0, 0.5, 1.0, 2.0], size),
        "max_units": rng.integers(1, 5, size).astype(float),
        "aspiration": rng.random(size),
    }
    ledger = Ledger(population.holdings)
    history = MarketHistory(size, goods)
    valuations = np.exp(rng.normal(0, 0.3, goods)) if seed % 2 else None
    return World(population, ledger.holdings, float(rng.choice([1.0, 2.0, 3.0])), history, valuations)


def opened(world: World, seed: int, advised: bool) -> ExchangeBatch:
    order = np.random.default_rng(seed + 10_000).permutation(world.population.size)
    batch = ExchangeBatch.open(0, np.arange(1, 5), order[0:8:2], order[1:8:2], 6, None)
    if advised:
        batch.advice = RulesFacilitator().advise(world, batch, np.arange(4))
    return batch


@pytest.mark.parametrize("advised", [True, False], ids=["facilitator", "control"])
def test_no_opening_fails_the_rule_and_the_opener_declines_only_when_nothing_qualifies(advised: bool) -> None:
    proposals = declines = 0
    for seed in range(WORLDS):
        world = random_world(seed)
        batch = opened(world, seed, advised)
        rows = np.arange(4)
        said = RulesBrain().propose(world, batch, rows)
        for k in rows:
            i, j = int(batch.initiator[k]), int(batch.responder[k])
            if said.action[k] == PROPOSE:
                proposals += 1
                swap = (int(said.res_a[k]), int(said.qty_a[k]), int(said.res_b[k]), int(said.qty_b[k]))
                assert swap in qualifying(world, i, j, i, swap[::2]), f"world {seed}, row {k}: {swap} fails the rule"
            else:
                declines += 1
                assert said.action[k] == REJECT and said.res_a[k] == NO_RESOURCE
                assert qualifying(world, i, j, i) == [], f"world {seed}, row {k} declined although a swap qualifies"
    assert proposals > 50 and declines > 50  # both paths were exercised


def test_no_counter_fails_the_rule_and_goods_change_only_when_the_tables_goods_have_nothing() -> None:
    counters = switched = 0
    for seed in range(WORLDS):
        world = random_world(seed)
        batch = opened(world, seed, advised=bool(seed % 3))
        rows = np.arange(4)
        state = Negotiation.open(4)
        active = take_turn(batch, state, rows, RulesBrain().propose(world, batch, rows))
        for turn in range(2, 6):
            if len(active) == 0:
                break
            batch.turn = turn
            table = {k: (int(batch.cur_a[k]), int(batch.cur_b[k])) for k in active}
            said = RulesBrain().reply(world, batch, active)
            for n, k in enumerate(active):
                if said.action[n] != COUNTER:
                    continue
                counters += 1
                i, j = int(batch.initiator[k]), int(batch.responder[k])
                speaker = i if turn % 2 else j
                swap = (int(said.res_a[n]), int(said.qty_a[n]), int(said.res_b[n]), int(said.qty_b[n]))
                assert swap in qualifying(world, i, j, speaker, swap[::2]), f"world {seed}: counter {swap} fails the rule"
                if swap[::2] != table[k]:
                    switched += 1
                    assert qualifying(world, i, j, speaker, table[k]) == []
                    assert "How about other goods" in said.message[n]
            active = take_turn(batch, state, active, said)
    assert counters > 50 and switched > 0


def two_person_world(holdings: list[list[int]], needs: list[list[int]], wants: list[list[float]], traits: dict[str, list[float]]) -> World:
    config = SimulationConfig(seed=0, num_participants=2, resources=[{"name": n} for n in ("bread", "books", "tools")])
    population = generate(config, np.random.default_rng(0))
    population.holdings = np.array(holdings)
    population.needs = np.array(needs)
    population.wants = np.array(wants, dtype=float)
    population.traits = {**population.traits, **{name: np.array(v, dtype=float) for name, v in traits.items()}}
    return World(population, Ledger(population.holdings).holdings, 2.0, MarketHistory(2, 3), None)


def test_a_counter_that_switches_goods_settles_and_conserves() -> None:
    # Ann (0) holds bread; Ben (1) holds books, which he needs, and tools, which Ann wants.
    # On the table: Ann's bread for Ben's books. No swap of those is one Ben can accept
    # (each book he gives is a needed one), so he counters with his tools instead.
    world = two_person_world(
        holdings=[[6, 0, 0], [0, 2, 6]],
        needs=[[0, 0, 0], [0, 2, 0]],
        wants=[[0.2, 1.0, 2.0], [0.5, 0.2, 0.1]],
        traits={"min_gain": [0.05, 0.05], "altruism": [0, 0], "max_units": [2, 2], "aspiration": [0.5, 0.5],
                "concession": [0.1, 0.1], "anchoring": [0, 0], "memory": [0, 0]},
    )
    ledger = Ledger(world.population.holdings)
    world.holdings = ledger.holdings
    batch = ExchangeBatch.open(0, np.array([1]), np.array([0]), np.array([1]), 6, None)
    state = Negotiation.open(1)
    batch.turn = 1
    opening = RulesBrain().propose(world, batch, np.arange(1))
    assert opening.action[0] == PROPOSE
    # Put bread-for-books on the table as an LLM opener might, then let Ben reply.
    opening.res_a[0], opening.qty_a[0], opening.res_b[0], opening.qty_b[0] = 0, 1, 1, 1
    active = take_turn(batch, state, np.arange(1), opening)
    batch.turn = 2
    reply = RulesBrain().reply(world, batch, active)
    assert reply.action[0] == COUNTER
    assert (reply.res_a[0], reply.res_b[0]) == (0, 2)  # bread for tools, not books
    assert reply.message[0].startswith("No swap of my books for your bread works for me. How about other goods:")
    active = take_turn(batch, state, active, reply)
    batch.turn = 3
    answer = RulesBrain().reply(world, batch, active)
    assert answer.action[0] == ACCEPT
    take_turn(batch, state, active, answer)

    before = ledger.holdings.copy()
    qa, qb = int(batch.cur_qa[0]), int(batch.cur_qb[0])
    _, settlement = settle_round(world, ledger, batch, state.agreed)
    assert settlement.valid.tolist() == [True]
    moved = ledger.holdings - before
    assert moved.tolist() == [[-qa, 0, qb], [qa, 0, -qb]]
    assert (ledger.total() == before.sum(axis=0)).all()


def test_in_a_run_switched_counters_settle_as_agreed_and_conserve(tmp_path) -> None:
    store = Store(tmp_path)
    result = run_simulation(SimulationConfig(seed=3, num_participants=60, min_exchanges=2000, max_exchanges=2000, facilitator=False), store)
    con = store.connect()
    switched = con.execute(
        """WITH o AS (SELECT exchange_id, turn, action, initiator_gives g, responder_gives r,
                             lag(initiator_gives) OVER w pg, lag(responder_gives) OVER w pr
                      FROM offers WHERE run_id = $r WINDOW w AS (PARTITION BY exchange_id ORDER BY turn))
           SELECT DISTINCT exchange_id FROM o WHERE action = 'counter' AND (g <> pg OR r <> pr)""",
        {"r": result.run_id},
    ).fetchall()
    assert switched
    settled = con.execute(
        """SELECT count(*) FROM exchanges e WHERE e.run_id = $r AND e.outcome = 'accepted' AND list_contains($ids, e.exchange_id)""",
        {"r": result.run_id, "ids": [e for (e,) in switched]},
    ).fetchone()[0]
    assert settled > 0
    wrong = con.execute(
        """SELECT count(*) FROM exchanges e
           JOIN transfers t ON t.run_id = e.run_id AND t.exchange_id = e.exchange_id
           WHERE e.run_id = $r AND e.outcome = 'accepted' AND NOT (
                 (t.from_id = e.initiator_id AND t.resource = e.initiator_gives AND t.quantity = e.initiator_gives_qty)
              OR (t.from_id = e.responder_id AND t.resource = e.responder_gives AND t.quantity = e.responder_gives_qty))""",
        {"r": result.run_id},
    ).fetchone()[0]
    assert wrong == 0
    unbalanced = con.execute(
        """SELECT count(*) FROM (SELECT resource, sum(quantity) q FROM initial_holdings WHERE run_id = $r GROUP BY ALL) i
           FULL JOIN (SELECT resource, sum(quantity) q FROM final_holdings WHERE run_id = $r GROUP BY ALL) f USING (resource)
           WHERE i.q IS DISTINCT FROM f.q""",
        {"r": result.run_id},
    ).fetchone()[0]
    assert unbalanced == 0


def test_the_facilitator_suggests_no_swap_when_none_helps_both_and_says_why() -> None:
    # Each holds exactly what it needs and nothing else: every swap costs its giver a needed unit.
    world = two_person_world(
        holdings=[[2, 0, 1], [0, 2, 0]], needs=[[2, 0, 1], [0, 2, 0]], wants=[[1, 1, 1], [1, 1, 1]], traits={},
    )
    batch = ExchangeBatch.open(0, np.array([1]), np.array([0]), np.array([1]), 6, None)
    advice = RulesFacilitator().advise(world, batch, np.arange(1))
    assert (advice.res_a[0], advice.qty_a[0], advice.res_b[0], advice.qty_b[0]) == (NO_RESOURCE, 0, NO_RESOURCE, 0)
    names = world.population.names
    assert advice.note is not None and "so I suggest none" in advice.note[0]
    assert names[0] in advice.note[0] and names[1] in advice.note[0]
    # Nothing a facilitator could have suggested would have helped both.
    assert all(
        not (g_i > 0 and g_j > 0)
        for a, b in itertools.permutations(range(3), 2)
        for x in range(1, 5) for y in range(1, 5)
        if x <= world.holdings[0, a] and y <= world.holdings[1, b]
        for g_i, g_j in [gains(world, 0, 1, a, x, b, y)]
    )
    # Advice without a swap anchors nothing and the opener still decides by the rule.
    batch.advice = advice
    said = RulesBrain().propose(world, batch, np.arange(1))
    assert said.action[0] in (PROPOSE, REJECT)


def test_the_facilitator_picks_other_goods_when_its_first_pick_helps_nobody() -> None:
    # By marginal values it first picks Ann's bread for Ben's books (Ann wants books most),
    # but Ben needs both his books and no amount of bread makes up for one; his tools,
    # which Ann also wants, make a swap that helps both.
    world = two_person_world(
        holdings=[[6, 0, 0], [0, 2, 3]],
        needs=[[0, 0, 0], [0, 2, 0]],
        wants=[[0.1, 5.0, 1.0], [0.6, 0.2, 0.2]],
        traits={},
    )
    batch = ExchangeBatch.open(0, np.array([1]), np.array([0]), np.array([1]), 6, None)
    assert qualifying(world, 0, 1, 1, (0, 1)) == []  # nothing on the first pick helps Ben
    advice = RulesFacilitator().advise(world, batch, np.arange(1))
    assert (advice.res_a[0], advice.res_b[0]) == (0, 2)
    g_i, g_j = gains(world, 0, 1, 0, int(advice.qty_a[0]), 2, int(advice.qty_b[0]))
    assert g_i > 0 and g_j > 0


def test_advice_without_a_swap_is_recorded_with_its_note_and_left_out_of_adherence(tmp_path) -> None:
    store = Store(tmp_path)
    result = run_simulation(SimulationConfig(seed=5, num_participants=30, min_exchanges=1200, max_exchanges=1200), store)
    con = store.connect()
    none, notes, rates = con.execute(
        """SELECT count(*), count(*) FILTER (note LIKE '%so I suggest none.'), count(typical_rate)
           FROM advice WHERE run_id = $r AND initiator_gives IS NULL""",
        {"r": result.run_id},
    ).fetchone()
    assert none > 0 and notes == none and rates == 0
    suggested_deals = con.execute(
        """SELECT count(*) FROM exchanges e JOIN advice a USING (run_id, exchange_id)
           WHERE e.run_id = $r AND e.outcome = 'accepted' AND a.initiator_gives IS NOT NULL""",
        {"r": result.run_id},
    ).fetchone()[0]
    adherence = metrics.facilitator_adherence(con, result.run_id)
    assert len(adherence) == suggested_deals
    assert adherence["followed"].notna().all()


def test_a_model_facilitator_may_suggest_no_swap_if_it_says_why() -> None:
    from commonpool.brains.llm import LLMFacilitator, ReplyError

    world = two_person_world(holdings=[[2, 0, 1], [0, 2, 0]], needs=[[2, 0, 1], [0, 2, 0]], wants=[[1, 1, 1], [1, 1, 1]], traits={})
    batch = ExchangeBatch.open(0, np.array([1]), np.array([0]), np.array([1]), 6, None)
    check = LLMFacilitator(None, "openai/fake")._check  # type: ignore[arg-type]  # _check needs no session
    none = '{"valuations": {"bread": 1}, "initiator_gives": null, "responder_gives": null, "note": "Each of you needs all you hold."}'
    assert check(world, batch, 0, none) == (NO_RESOURCE, 0, NO_RESOURCE, 0, "Each of you needs all you hold.", {"bread": 1.0})
    with pytest.raises(ReplyError, match="needs a note"):
        check(world, batch, 0, none.replace("Each of you needs all you hold.", ""))
    with pytest.raises(ReplyError, match="or neither"):
        check(world, batch, 0, none.replace('"initiator_gives": null', '"initiator_gives": {"resource": "bread", "quantity": 1}'))


def test_a_model_may_counter_with_other_goods() -> None:
    from types import SimpleNamespace

    from commonpool.brains.llm import LLMBrain

    world = two_person_world(holdings=[[6, 0, 0], [0, 2, 6]], needs=[[0, 0, 0], [0, 2, 0]], wants=[[1, 1, 1], [1, 1, 1]], traits={})
    batch = ExchangeBatch.open(0, np.array([1]), np.array([0]), np.array([1]), 6, None)
    batch.turn = 2
    batch.cur_a[0], batch.cur_qa[0], batch.cur_b[0], batch.cur_qb[0] = 0, 1, 1, 1  # bread for books on the table
    check = LLMBrain(SimpleNamespace(config=None))._check  # type: ignore[arg-type]  # _check needs no session
    text = '{"action": "counter", "give": {"resource": "tools", "quantity": 1}, "receive": {"resource": "bread", "quantity": 2}, "message": "Not books: tools."}'
    assert check(world, batch, 0, text) == (COUNTER, 0, 2, 2, 1, "Not books: tools.")  # bread x2 from Ann, tools x1 from Ben


def test_rules_counters_to_a_model_may_switch_goods_and_settle_as_agreed(fake_llm, store: Store) -> None:
    from test_llm_runs import assert_conserved, llm_run

    result = llm_run(
        fake_llm, store, num_participants=12, min_exchanges=60, max_exchanges=60, facilitator=False,
        model=None, facilitator_model=None, personality_models={"strategic": "openai/fake"},
    )
    con = store.connect()
    switched = con.execute(
        """WITH o AS (SELECT exchange_id, turn, action, source, initiator_gives g, responder_gives r,
                             lag(initiator_gives) OVER w pg, lag(responder_gives) OVER w pr, lag(source) OVER w ps
                      FROM offers WHERE run_id = $r WINDOW w AS (PARTITION BY exchange_id ORDER BY turn))
           SELECT count(*) FROM o JOIN exchanges e ON e.run_id = $r AND e.exchange_id = o.exchange_id
           WHERE o.action = 'counter' AND o.ps = 'llm' AND (o.g <> o.pg OR o.r <> o.pr) AND e.outcome = 'accepted'
             AND e.initiator_gives = o.g AND e.responder_gives = o.r""",
        {"r": result.run_id},
    ).fetchone()[0]
    assert switched > 0
    assert_conserved(store, result.run_id)
