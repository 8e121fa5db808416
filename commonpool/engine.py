"""When things happen: rounds of disjoint pairs -> advise -> negotiate -> settle -> record.

A round pairs up to N/2 disjoint participants; their exchanges are decided as
arrays, one turn at a time across the whole round (the rules brain scores a
grid of candidate swaps per row; an LLM brain sends the round's calls
concurrently). Because pairs are disjoint, settling them together is the same
as settling them one by one in exchange_id order. The facilitator's history
is updated between rounds, so advice in round k draws on rounds < k.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from commonpool import economy
from commonpool.brains.rules import RulesBrain, RulesFacilitator
from commonpool.config import SimulationConfig
from commonpool.facilitator import MarketHistory
from commonpool.ledger import REASONS, Ledger, Settlement
from commonpool.llm.errors import FatalError
from commonpool.population import Population, generate
from commonpool.protocol import (
    ACCEPT,
    ACCEPTED,
    COUNTER,
    ERROR,
    INVALID,
    REJECT,
    Decisions,
    ExchangeBatch,
    World,
    outcome_of_reject,
    speaker_is_initiator,
)
from commonpool.recorder import Recorder
from commonpool.store import RunWriter, Store

if TYPE_CHECKING:
    from commonpool.resume import Recorded

Progress = Callable[["RunProgress"], None]


@dataclass
class RunProgress:
    run_id: str
    exchanges_done: int
    exchanges_target: int
    accepted: int
    rounds: int
    llm: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    run_id: str
    status: str
    exchanges: int
    accepted: int
    seconds: float
    path: Path
    error: str | None = None
    llm: dict[str, float] = field(default_factory=dict)  # llm_calls, prompt_tokens, completion_tokens, cost_usd


def new_run_id() -> str:
    return f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def resolve(config: SimulationConfig) -> SimulationConfig:
    """Fill what the user left open (seed, run id) so the stored config replays the run exactly."""
    updates: dict[str, object] = {}
    if config.seed is None:
        updates["seed"] = secrets.randbelow(2**31)
    if config.simulation_id is None:
        updates["simulation_id"] = new_run_id()
    return config.model_copy(update=updates) if updates else config


class Deciders:
    """Routes each row of a turn to the brain of the participant who speaks."""

    def __init__(self, population: Population, llm_brain: object | None) -> None:
        self.rules = RulesBrain()
        self.llm = llm_brain
        self.is_llm = np.array([b != "rules" for b in population.brains], dtype=bool)

    def _route(self, method: str, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        speaker_llm = self.is_llm[batch.speakers(rows)]
        if self.llm is None or not speaker_llm.any():
            return getattr(self.rules, method)(world, batch, rows)
        decisions = Decisions.empty(len(rows))
        if (~speaker_llm).any():
            decisions.put(np.flatnonzero(~speaker_llm), getattr(self.rules, method)(world, batch, rows[~speaker_llm]))
        decisions.put(np.flatnonzero(speaker_llm), getattr(self.llm, method)(world, batch, rows[speaker_llm]))
        return decisions

    def propose(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        return self._route("propose", world, batch, rows)

    def reply(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        return self._route("reply", world, batch, rows)

    def end_round(self, batch: ExchangeBatch, outcome: np.ndarray) -> None:
        """Let an LLM brain remember the round: its participants are told their past trades."""
        if self.llm is not None and hasattr(self.llm, "end_round"):
            self.llm.end_round(batch, outcome)


def pair_up(
    rng: np.random.Generator, world: World, count: int, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """count disjoint (initiator, responder) pairs.

    random: a random matching. need: a random half of the community initiates;
    initiators sorted by the resource they most need meet responders sorted by
    the resource they hold most beyond their needs, so needs tend to meet surpluses.
    """
    order = rng.permutation(world.population.size)[: 2 * count]
    initiators, responders = order[0::2], order[1::2]
    if method == "need":
        pop, h = world.population, world.holdings
        lam = world.need_weight
        most_needed = np.argmax(economy.marginal_gain(h[initiators], pop.needs[initiators], pop.wants[initiators], lam), axis=1)
        surplus = h[responders] - pop.needs[responders]
        most_spare = np.argmax(surplus, axis=1)
        initiators = initiators[np.argsort(most_needed, kind="stable")]
        responders = responders[np.argsort(most_spare, kind="stable")]
    return initiators, responders


def run_simulation(
    config: SimulationConfig,
    store: Store | Path | str | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    llm_brain: object | None = None,
    llm_facilitator: object | None = None,
    resume: Recorded | None = None,
) -> RunResult:
    """Run one simulation to the end (or until should_stop() says so) and store every step.

    With resume (see commonpool.resume), the rounds already recorded are replayed
    from the store rather than decided again, and the run continues in its folder.
    """
    config = resolve(config)
    store = store if isinstance(store, Store) else Store(Path(store)) if store is not None else Store.default()
    rng = np.random.default_rng(config.seed)
    population = generate(config, rng)
    built: list[object] = []
    if config.uses_llm() and (llm_brain is None or (config.facilitator_model and llm_facilitator is None)):
        from commonpool.brains.llm import build_llm

        spent, first_call = (resume.llm_totals["cost_usd"], resume.next_call_id) if resume else (0.0, 1)
        llm_brain, llm_facilitator = build_llm(config, population, store.root, spent, first_call)
        built = [part for part in (llm_brain, llm_facilitator) if part is not None]
    llm_parts = [part for part in (llm_brain, llm_facilitator) if part is not None]
    ledger = Ledger(population.holdings)
    history = MarketHistory(population.size, len(population.resources))
    world = World(population, ledger.holdings, config.need_weight, history, None)
    deciders = Deciders(population, llm_brain)
    facilitator = (llm_facilitator or RulesFacilitator()) if config.facilitator else None
    target = int(rng.integers(config.min_exchanges, config.max_exchanges + 1))
    per_round = population.size // 2

    meta = run_meta(config, population, target)
    started = time.perf_counter()
    run_id = str(config.simulation_id)
    writer = resume.writer if resume else RunWriter(store.root, run_id, meta)
    with writer:
        # An LLM run flushes every round, so a crash loses at most the round in flight.
        recorder = Recorder(writer, population, flush_every=100_000 if not llm_parts else 1)
        if resume:
            recorder.totals.update(resume.llm_totals)
        else:
            recorder.write_population(economy.utility(population.holdings, population.needs, population.wants, config.need_weight))
        done = accepted = rounds = 0
        status, error = "completed", None
        try:
            while done < target:
                if should_stop is not None and should_stop():
                    status = "cancelled"
                    break
                size = min(per_round, target - done)
                initiator, responder = pair_up(rng, world, size, config.pairing)
                ids = np.arange(done + 1, done + size + 1, dtype=np.int64)
                world.valuations = history.valuations(ledger.holdings, population.needs, population.wants) if facilitator else None
                if resume and resume.has_round(rounds):
                    accepted += resume.replay_round(rounds, world, ledger, deciders, ids, initiator, responder, config.max_turns)
                else:
                    try:
                        accepted += play_round(world, ledger, deciders, facilitator, recorder, rounds, ids, initiator, responder, config.max_turns)
                    except FatalError as exc:
                        # No connection, a bad key or a spent budget: keep every finished round, drop this one.
                        status, error = "failed", str(exc)
                        recorder.discard_round()
                        break
                    finally:
                        for part in llm_parts:
                            recorder.add_llm_calls(part.drain_calls())  # type: ignore[attr-defined]
                done += size
                rounds += 1
                recorder.end_round(done, accepted)
                if progress is not None:
                    progress(RunProgress(run_id, done, target, accepted, rounds, recorder.llm_totals()))
        finally:
            for part in built:
                part.close()  # type: ignore[attr-defined]
        recorder.flush(done, accepted)
        writer.close(status, error)
    seconds = time.perf_counter() - started
    return RunResult(run_id, status, done, accepted, seconds, store.root / "runs" / run_id, error, recorder.llm_totals())


def play_round(
    world: World,
    ledger: Ledger,
    deciders: Deciders,
    facilitator: object | None,
    recorder: Recorder,
    round_: int,
    ids: np.ndarray,
    initiator: np.ndarray,
    responder: np.ndarray,
    max_turns: int,
) -> int:
    """Advise, negotiate and settle one round of disjoint pairs; returns how many settled."""
    size = len(ids)
    everyone = np.arange(size)
    before_i, before_j = utilities(world, initiator), utilities(world, responder)
    batch = ExchangeBatch.open(round_, ids, initiator, responder, max_turns, None)
    if facilitator is not None:
        batch.advice = facilitator.advise(world, batch, everyone)
        recorder.add_advice(round_, world, batch, batch.advice)

    outcome = np.full(size, -1, dtype=np.int8)
    agreed = np.zeros(size, dtype=bool)
    turns = np.zeros(size, dtype=np.int16)
    reason = np.full(size, None, dtype=object)
    active = everyone
    for turn in range(1, max_turns + 1):
        batch.turn = turn
        if turn == 1:
            decisions = deciders.propose(world, batch, active)
        else:
            decisions = deciders.reply(world, batch, active)
        recorder.add_offers(batch, active, decisions)
        turns[active] = turn
        act = decisions.action
        errored = decisions.source < 0
        if errored.any():
            outcome[active[errored]] = ERROR
            reason[active[errored]] = decisions.reason[errored] if decisions.reason is not None else "decision failed"
        moving = ((act != ACCEPT) & (act != REJECT)) & ~errored
        proposing = active[moving]
        batch.cur_a[proposing], batch.cur_qa[proposing] = decisions.res_a[moving], decisions.qty_a[moving]
        batch.cur_b[proposing], batch.cur_qb[proposing] = decisions.res_b[moving], decisions.qty_b[moving]
        batch.proposals[proposing, 0 if speaker_is_initiator(turn) else 1] += 1
        agreed[active[(act == ACCEPT) & ~errored]] = True
        rejected = active[(act == REJECT) & ~errored]
        outcome[rejected] = outcome_of_reject(turn, max_turns)
        still = moving & ((act == COUNTER) | (turn == 1))
        active = active[still]
        if len(active) == 0:
            break

    deal, settlement = settle_round(world, ledger, batch, agreed)
    outcome[deal] = np.where(settlement.valid, ACCEPTED, INVALID)
    settled = outcome == ACCEPTED
    reason[deal[~settlement.valid]] = np.array(REASONS, dtype=object)[settlement.reason[~settlement.valid]]

    after_i, after_j = utilities(world, initiator), utilities(world, responder)
    deciders.end_round(batch, outcome)
    recorder.add_exchanges(batch, outcome, turns, agreed, reason, (before_i, after_i), (before_j, after_j))
    recorder.add_transfers(batch, settled)
    return int(settled.sum())


def utilities(world: World, participants: np.ndarray) -> np.ndarray:
    """Each participant's utility at its current holdings (economy.utility)."""
    pop = world.population
    return economy.utility(world.holdings[participants], pop.needs[participants], pop.wants[participants], world.need_weight)


def settle_round(
    world: World, ledger: Ledger, batch: ExchangeBatch, agreed: np.ndarray
) -> tuple[np.ndarray, Settlement]:
    """Settle a round's agreed swaps (the current offers of the rows in agreed) and let the market learn from them.

    Returns the rows that tried to settle and how each went. Used for live and replayed rounds alike.
    """
    deal = np.flatnonzero(agreed)
    settlement = ledger.settle(
        batch.initiator[deal], batch.responder[deal],
        batch.cur_a[deal], batch.cur_qa[deal], batch.cur_b[deal], batch.cur_qb[deal],
    )
    settled = np.zeros(len(agreed), dtype=bool)
    settled[deal[settlement.valid]] = True
    world.history.record(batch.initiator, batch.responder, settled, batch.cur_a, batch.cur_qa, batch.cur_b, batch.cur_qb)
    return deal, settlement


def run_meta(config: SimulationConfig, population: Population, target: int) -> dict[str, object]:
    models = sorted({b for b in population.brains if b != "rules"})
    engine = "rules" if not models else ("llm" if all(b != "rules" for b in population.brains) else "mixed")
    return {
        "seed": config.seed,
        "engine": engine,
        "model": ",".join(models) or None,
        "facilitator": (config.facilitator_model or "rules") if config.facilitator else "off",
        "num_participants": population.size,
        "exchanges_target": target,
        "exchanges_recorded": 0,
        "accepted": 0,
        "config": json.loads(config.model_dump_json()),
    }
