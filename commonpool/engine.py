"""When things happen: periods of rounds of disjoint pairs -> advise -> negotiate -> settle -> record.

A run's exchanges are split evenly over its periods (production.split_exchanges);
a round never spans two periods. At each period's end of a run of several,
participants consume, unused hours expire and goods spoil, and the next period
starts with what they produce (production.py); with one period (the default)
nothing of that happens and a run is the same, table for table, as before periods.

A round pairs up to N/2 disjoint participants. Without models, their
exchanges are decided as arrays, one turn at a time across the whole round
(the rules brain scores a grid of candidate swaps per row). With models, each
exchange negotiates as its own task, concurrently, so no exchange waits on the
round's slowest answer before its next turn. Because pairs are disjoint,
settling them together is the same as settling them one by one in exchange_id
order. The facilitator's history
is updated between rounds, so advice in round k draws on rounds < k.
"""

from __future__ import annotations

import inspect
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from commonpool import economy
from commonpool.brains.rules import RulesBrain, RulesFacilitator
from commonpool.config import SimulationConfig
from commonpool.facilitator import MarketHistory
from commonpool.ledger import REASONS, Ledger, Settlement
from commonpool.llm.errors import FatalError
from commonpool.population import Population, generate
from commonpool.production import (
    CONSUMED,
    EXPIRED,
    PRODUCED,
    SPOILED,
    Foresight,
    Renewal,
    is_living,
    split_exchanges,
)
from commonpool.protocol import (
    ACCEPT,
    ACCEPTED,
    COUNTER,
    ERROR,
    INVALID,
    REJECT,
    AdviceBatch,
    Decisions,
    ExchangeBatch,
    World,
    outcome_of_reject,
    speaker_is_initiator,
)
from commonpool.recorder import Recorder
from commonpool.store import RunWriter, Store

if TYPE_CHECKING:
    from commonpool.brains.llm import LLMBrain, LLMFacilitator, LLMSession
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
    metrics: dict[str, float] | None = None  # what record_run_metrics stored (a completed run), for a caller to show


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

    def __init__(self, population: Population, llm_brain: LLMBrain | None) -> None:
        self.rules = RulesBrain()
        self.llm = llm_brain
        self.is_llm = np.array([b != "rules" for b in population.brains], dtype=bool)

    def decide(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        """The rules brain's decisions for a whole turn at once (rounds where no model speaks)."""
        return self.rules.propose(world, batch, rows) if batch.turn == 1 else self.rules.reply(world, batch, rows)

    async def ask(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        """Decisions for rows where some speakers have a model: those ask it, the others use the rules."""
        speaker_llm = self.is_llm[batch.speakers(rows)]
        if self.llm is None or not speaker_llm.any():
            return self.decide(world, batch, rows)
        decisions = Decisions.empty(len(rows))
        if (~speaker_llm).any():
            decisions.put(np.flatnonzero(~speaker_llm), self.decide(world, batch, rows[~speaker_llm]))
        decisions.put(np.flatnonzero(speaker_llm), await self.llm.decide(world, batch, rows[speaker_llm]))
        return decisions

    def end_round(self, batch: ExchangeBatch, outcome: np.ndarray) -> None:
        """Let an LLM brain remember the round: its participants are told their past trades."""
        if self.llm is not None:
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
    resume: Recorded | None = None,
    labels: dict[str, object] | None = None,
) -> RunResult:
    """Run one simulation to the end (or until should_stop() says so) and store every step.

    With resume (see commonpool.resume), the rounds already recorded are replayed
    from the store rather than decided again, and the run continues in its folder.
    labels are extra `runs` fields recorded with the run (a sweep's sweep_id,
    point_id, replication and point). A completed run also records its outcome
    metrics (metrics.run_metrics) before it closes.
    """
    config = resolve(config)
    store = store if isinstance(store, Store) else Store(Path(store)) if store is not None else Store.default()
    rng = np.random.default_rng(config.seed)
    population = generate(config, rng)
    llm_brain: LLMBrain | None = None
    llm_facilitator: LLMFacilitator | None = None
    session: LLMSession | None = None
    if config.uses_llm():
        from commonpool.brains.llm import build_llm

        spent, first_call = (resume.llm_totals["cost_usd"], resume.next_call_id) if resume else (0.0, 1)
        session, llm_brain, llm_facilitator = build_llm(config, population, store.root, spent, first_call)
    ledger = Ledger(population.holdings)
    history = MarketHistory(population.size, len(population.resources))
    world = World(population, ledger.holdings, config.need_weight, history, None)
    deciders = Deciders(population, llm_brain)
    facilitator = (llm_facilitator or RulesFacilitator()) if config.facilitator else None
    target = int(rng.integers(config.min_exchanges, config.max_exchanges + 1))
    per_round = population.size // 2
    # Exchanges done when each period ends; a one-period run's only bound is its target.
    period_ends = np.cumsum(split_exchanges(target, config.periods))
    renewal = (
        Renewal(config, population.kinds, population.resources,
                population.produces if population.produces is not None else np.zeros_like(population.holdings),
                population.needs, population.wants)
        if is_living(config) else None
    )
    period = 0  # index of the period under way
    if renewal is not None:
        # The rules brain values a unit against the coming period's needs too (Foresight).
        world.foresight = Foresight(renewal, config.discount, last_period=config.periods == 1)
        world.periods = config.periods

    meta = {**run_meta(config, population, target), **(labels or {})}
    started = time.perf_counter()
    run_id = str(config.simulation_id)
    writer = resume.writer if resume else RunWriter(store.root, run_id, meta)
    with writer:
        # An LLM run flushes every round, so a crash loses at most the round in flight.
        recorder = Recorder(writer, population, flush_every=100_000 if session is None else 1)
        if resume:
            recorder.totals.update(resume.llm_totals)
        else:
            recorder.write_population(economy.utility(population.holdings, population.needs, population.wants, config.need_weight))
        done = accepted = rounds = 0
        status, error = "completed", None
        try:
            while True:
                while renewal is not None and period < config.periods and done >= period_ends[period]:
                    recorded = resume is not None and resume.has_period(period + 1)
                    end_period(renewal, ledger, recorder, period + 1, config, record=not recorded)
                    period += 1
                    if period < config.periods:
                        if world.foresight is not None:
                            world.foresight.last_period = period == config.periods - 1
                        world.period = period + 1
                        history.new_period()
                        recorded = resume is not None and resume.has_period(period)
                        start_period(renewal, ledger, recorder, period + 1, record=not recorded)
                if done >= target:
                    break
                if should_stop is not None and should_stop():
                    status = "cancelled"
                    break
                size = min(per_round, int(period_ends[period]) - done)
                recorder.period = period + 1
                initiator, responder = pair_up(rng, world, size, config.pairing)
                ids = np.arange(done + 1, done + size + 1, dtype=np.int64)
                world.valuations = history.valuations(ledger.holdings, population.needs, population.wants) if facilitator else None
                if resume and resume.has_round(rounds):
                    accepted += resume.replay_round(rounds, world, ledger, deciders, ids, initiator, responder, config.max_turns)
                else:
                    try:
                        accepted += play_round(
                            world, ledger, deciders, facilitator, recorder, rounds, ids, initiator, responder, config.max_turns, session
                        )
                    except FatalError as exc:
                        # No connection, a bad key or a spent budget: keep every finished round, drop this one.
                        status, error = "failed", str(exc)
                        recorder.discard_round()
                        break
                    finally:
                        if session is not None:
                            recorder.add_llm_calls(session.drain_calls())
                done += size
                rounds += 1
                recorder.end_round(done, accepted)
                if progress is not None:
                    llm = recorder.llm_totals() | (session.limit.state() if session is not None else {})
                    progress(RunProgress(run_id, done, target, accepted, rounds, llm))
        finally:
            if session is not None:
                session.close()
        recorder.flush(done, accepted)
        metrics = None
        if status == "completed":
            metrics = record_run_metrics(store, writer, recorder.run_tables(ledger.holdings), meta["config"])
        writer.close(status, error)
    seconds = time.perf_counter() - started
    return RunResult(run_id, status, done, accepted, seconds, store.root / "runs" / run_id, error, recorder.llm_totals(), metrics)


def end_period(
    renewal: Renewal, ledger: Ledger, recorder: Recorder, period: int, config: SimulationConfig, record: bool = True
) -> None:
    """Consume, expire and spoil at the end of period (from 1), through the ledger; record the flows and utilities.

    record is False for a period a resumed run already recorded: its flows are applied again, not written again.
    """
    end = renewal.end_period(ledger.holdings)
    for kind, units in ((CONSUMED, end.consumed), (EXPIRED, end.expired), (SPOILED, end.spoiled)):
        ledger.remove(units)
        if record:
            recorder.add_flows(period, kind, units)
    if record:
        recorder.add_period_utility(
            period, end.utility, economy.discounted(end.utility, period, config.discount), end.needed, end.unmet
        )


def start_period(renewal: Renewal, ledger: Ledger, recorder: Recorder, period: int, record: bool = True) -> None:
    """Production at the start of period (from 2), through the ledger."""
    produced = renewal.start_period(ledger.holdings)
    ledger.add(produced)
    if record:
        recorder.add_flows(period, PRODUCED, produced)


@dataclass
class Negotiation:
    """Where each exchange of a round stands: its outcome so far (-1 while open), agreement, turns, reason."""

    outcome: np.ndarray  # int8
    agreed: np.ndarray  # bool
    turns: np.ndarray  # int16
    reason: np.ndarray  # object

    @staticmethod
    def open(size: int) -> Negotiation:
        return Negotiation(
            np.full(size, -1, dtype=np.int8), np.zeros(size, dtype=bool),
            np.zeros(size, dtype=np.int16), np.full(size, None, dtype=object),
        )

    def row(self, k: int) -> Negotiation:
        """Exchange k's state as a view (see ExchangeBatch.row)."""
        one = slice(k, k + 1)
        return Negotiation(self.outcome[one], self.agreed[one], self.turns[one], self.reason[one])


def take_turn(batch: ExchangeBatch, state: Negotiation, active: np.ndarray, decisions: Decisions) -> np.ndarray:
    """Apply the decisions of batch.turn for the active rows; returns the rows still negotiating."""
    turn = batch.turn
    state.turns[active] = turn
    act = decisions.action
    errored = decisions.source < 0
    if errored.any():
        state.outcome[active[errored]] = ERROR
        state.reason[active[errored]] = decisions.reason[errored] if decisions.reason is not None else "decision failed"
    moving = ((act != ACCEPT) & (act != REJECT)) & ~errored
    proposing = active[moving]
    batch.cur_a[proposing], batch.cur_qa[proposing] = decisions.res_a[moving], decisions.qty_a[moving]
    batch.cur_b[proposing], batch.cur_qb[proposing] = decisions.res_b[moving], decisions.qty_b[moving]
    batch.proposals[proposing, 0 if speaker_is_initiator(turn) else 1] += 1
    state.agreed[active[(act == ACCEPT) & ~errored]] = True
    state.outcome[active[(act == REJECT) & ~errored]] = outcome_of_reject(turn, batch.max_turns)
    return active[moving & ((act == COUNTER) | (turn == 1))]


def play_round(
    world: World,
    ledger: Ledger,
    deciders: Deciders,
    facilitator: RulesFacilitator | LLMFacilitator | None,
    recorder: Recorder,
    round_: int,
    ids: np.ndarray,
    initiator: np.ndarray,
    responder: np.ndarray,
    max_turns: int,
    session: LLMSession | None = None,
) -> int:
    """Advise, negotiate and settle one round of disjoint pairs; returns how many settled.

    Without models the round moves in lockstep, every exchange deciding turn k as
    one array. With a model session each exchange negotiates on its own, so an
    exchange's next call goes out as soon as its last answer is in rather than
    waiting for the round's slowest answer; each exchange still sees only its own
    state, so the outcome does not depend on which answer came first.
    """
    size = len(ids)
    before_i, before_j = utilities(world, initiator), utilities(world, responder)
    batch = ExchangeBatch.open(round_, ids, initiator, responder, max_turns, None)
    state = Negotiation.open(size)
    if session is None:
        if facilitator is not None:
            batch.advice = facilitator.advise(world, batch, np.arange(size))
        active = np.arange(size)
        for turn in range(1, max_turns + 1):
            batch.turn = turn
            decisions = deciders.decide(world, batch, active)
            recorder.add_offers(batch, active, decisions)
            active = take_turn(batch, state, active, decisions)
            if len(active) == 0:
                break
    else:
        model_advises = facilitator is not None and inspect.iscoroutinefunction(facilitator.advise)
        if facilitator is not None and not model_advises:
            batch.advice = facilitator.advise(world, batch, np.arange(size))
        rows = [batch.row(k) for k in range(size)]
        said = session.run_all(
            [negotiate(world, deciders, facilitator if model_advises else None, row, state.row(k)) for k, row in enumerate(rows)]
        )
        if model_advises:
            batch.advice = AdviceBatch.concat([row.advice for row in rows])  # type: ignore[misc]
        for turn in range(1, max_turns + 1):
            active = np.array([k for k, offers in enumerate(said) if len(offers) >= turn], dtype=np.int64)
            if len(active) == 0:
                break
            batch.turn = turn
            recorder.add_offers(batch, active, Decisions.concat([said[k][turn - 1] for k in active.tolist()]))
    if batch.advice is not None:
        recorder.add_advice(round_, world, batch, batch.advice)

    deal, settlement = settle_round(world, ledger, batch, state.agreed)
    state.outcome[deal] = np.where(settlement.valid, ACCEPTED, INVALID)
    settled = state.outcome == ACCEPTED
    state.reason[deal[~settlement.valid]] = np.array(REASONS, dtype=object)[settlement.reason[~settlement.valid]]

    after_i, after_j = utilities(world, initiator), utilities(world, responder)
    deciders.end_round(batch, state.outcome)
    recorder.add_exchanges(batch, state.outcome, state.turns, state.agreed, state.reason, (before_i, after_i), (before_j, after_j))
    recorder.add_transfers(batch, settled)
    return int(settled.sum())


async def negotiate(
    world: World, deciders: Deciders, facilitator: LLMFacilitator | None, batch: ExchangeBatch, state: Negotiation
) -> list[Decisions]:
    """One exchange (a batch of one) from advice to its last turn; returns each turn's decision."""
    if facilitator is not None:
        batch.advice = await facilitator.advise(world, batch, np.arange(1))
    said = []
    active = np.arange(1)
    for turn in range(1, batch.max_turns + 1):
        batch.turn = turn
        decisions = await deciders.ask(world, batch, active)
        said.append(decisions)
        active = take_turn(batch, state, active, decisions)
        if len(active) == 0:
            break
    return said


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


def record_run_metrics(
    store: Store, writer: RunWriter, tables: dict[str, pa.Table] | None = None, config: dict[str, Any] | None = None
) -> dict[str, float]:
    """Append the run's outcome metrics, computed with the one definition in metrics.py.

    From tables, the run as the recorder still holds it (Recorder.run_tables), when
    it does, with config the run's recorded config (its need_weight prices the
    optimum); otherwise read back from the run's flushed files. Either way the
    numbers are the same to the last bit (metrics' float aggregates are ordered).
    """
    from commonpool.metrics import memory_connection, run_metrics  # pandas and the metric SQL: not needed until a run ends

    con = memory_connection(writer.run_id, tables, config) if tables is not None else store.connect([writer.run_id])
    # One thread: a small run's queries gain nothing from more, and a sweep runs many at once.
    con.execute("SET threads = 1")
    try:
        values = run_metrics(con, writer.run_id)
    finally:
        con.close()
    writer.append("run_metrics", {"metric": list(values), "value": list(values.values())})
    return values


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
