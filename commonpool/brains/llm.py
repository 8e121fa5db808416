"""LLM brains: participants and a facilitator that decide through a language model.

They are the async twins of the rules brain's batch interface (decide, advise):
every row whose speaker has a model becomes one request. The engine runs each
exchange of a round as its own task on the session's background loop (at most
--concurrency requests in flight), and an exchange sees only its own state, so
results never depend on which answer came first. Calls are numbered in
llm_calls by turn, exchange and attempt, not by arrival.

An answer is parsed and validated against the protocol and the holdings; a
bad one gets one repair request quoting the problem; after that the rules brain
decides the row (source=fallback, with the reason). When the provider gives no
answer at all, on_llm_failure decides: "fallback" lets the rules brain decide,
"fail" records the exchange as an error, or, for faults no later call can
escape (no connection, bad key, budget spent), stops the run.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from commonpool.brains.memory import TradeMemory
from commonpool.brains.rules import RulesBrain, RulesFacilitator
from commonpool.config import SimulationConfig
from commonpool.ledger import INITIATOR_SHORT, OK, REASONS, RESPONDER_SHORT, check_swaps
from commonpool.llm.budget import Budget, BudgetModel
from commonpool.llm.cache import CachedModel, ResponseCache
from commonpool.llm.chat import CallRecord, ChatModel, ChatRequest
from commonpool.llm.client import LiteLLMModel
from commonpool.llm.cost import custom_prices, listed_prices
from commonpool.llm.errors import CredentialsError, FatalError, LLMError
from commonpool.llm.limit import LimitedModel
from commonpool.llm.loop import BackgroundLoop
from commonpool.llm.parse import extract_json
from commonpool.llm.retry import RetryModel
from commonpool.llm.scrub import scrub
from commonpool.llm.settings import load_env
from commonpool.llm.workers import WorkerModel, worker_count
from commonpool.population import Population
from commonpool.production import RENEWING_KINDS
from commonpool.protocol import (
    ACCEPT,
    COUNTER,
    FALLBACK,
    LLM,
    NO_RESOURCE,
    PROPOSE,
    REJECT,
    AdviceBatch,
    Decisions,
    ExchangeBatch,
    FacilitatorReply,
    ParticipantReply,
    World,
    legal_actions,
    speaker_is_initiator,
)

# Room for a short message and the JSON around it; the original tool's 150 cut answers off.
PARTICIPANT_MAX_TOKENS = 400
FACILITATOR_MAX_TOKENS = 600
ACTION_CODES = {"propose": PROPOSE, "counter": COUNTER, "accept": ACCEPT, "reject": REJECT}
MAX_PROBLEM_CHARS = 500
NO_DECISION = -1  # Decisions.source for "no decision": the engine records the exchange as an error

T = TypeVar("T")


@cache
def prompt(name: str) -> Template:
    """A prompt file of commonpool/prompts/; $names are filled with string.Template (JSON braces stay literal)."""
    return Template(resources.files("commonpool").joinpath(f"prompts/{name}.md").read_text(encoding="utf-8"))


def system_prompt(name: str, world: World) -> str:
    """A role's system prompt; a run of several periods adds what periods are (prompts/periods.md).

    A one-period run's prompt is the file alone, so its cached answers still match.
    """
    text = prompt(name).template
    return text if world.periods == 1 else f"{text}\n{prompt('periods').template}"


def renewal_words(world: World, config: SimulationConfig) -> dict[str, str]:
    """For each resource, what renews each period and what keeps, as production.Renewal does it."""
    words = {}
    for resource, kind in zip(world.population.resources, world.population.kinds):
        if kind in RENEWING_KINDS:
            made = "restored up to each member's capacity at every period's start"
            left = "unused units keep" if resource in config.storable else "unused units expire at the period's end"
        else:
            made, left = "producers add what they make at every period's start", "unused units keep"
        share = config.spoilage.get(resource, 0.0) if left == "unused units keep" else 0.0
        if share > 0:
            left += f", each with a {share:.0%} chance of spoiling at every period's end"
        words[resource] = f"{kind}: {made}; {left}"
    return words


def period_state(world: World, config: SimulationConfig) -> dict[str, object]:
    """The state's `period` block: which period this is, how many remain, what renews (runs of several periods)."""
    return {
        "number": world.period,
        "of": world.periods,
        "periods_left_after_this": world.periods - world.period,
        "resources": renewal_words(world, config),
    }


def member_periods(world: World, participant: int) -> dict[str, object]:
    """What a member produces a period and needs next period (nothing after the last period)."""
    population = world.population
    produces = population.produces if population.produces is not None else np.zeros_like(population.needs)
    made = {r: int(q) for r, q in zip(population.resources, produces[participant]) if q > 0}
    last = world.period == world.periods
    return {"produces": made, "needs_next_period": {} if last else _units(population, population.needs[participant])}


@cache
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


class ReplyError(ValueError):
    """An answer that breaks the protocol; its message is what the repair request quotes."""


@dataclass
class Answer(Generic[T]):
    value: T | None
    reason: str | None
    log: list[CallRecord]
    provider_failed: bool = False  # the provider gave no answer (as opposed to a bad one)
    fatal: FatalError | None = None


@dataclass(frozen=True)
class CallTags:
    """Where a call belongs in llm_calls."""

    exchange_id: int
    turn: int  # 0 for the facilitator, which speaks before turn 1
    role: str  # initiator, responder, facilitator
    participant_id: int | None


def build_model_stack(config: SimulationConfig, store_root: Path | None, budget: Budget) -> tuple[ChatModel, LimitedModel]:
    """The layers of llm/__init__.py, and the concurrency layer among them (its state shows in the progress line)."""
    custom = custom_prices(config)
    # LiteLLM's own CPU per call runs in worker processes unless COMMONPOOL_LLM_WORKERS=0 (see llm/workers.py).
    call: type[LiteLLMModel | WorkerModel] = WorkerModel if worker_count() else LiteLLMModel
    model: ChatModel = call(config.api_base, config.llm_timeout_s, custom)
    model = RetryModel(model, config.llm_max_retries)
    model = BudgetModel(model, budget, lambda name: custom or listed_prices(name))
    limit = LimitedModel(model, config.concurrency)
    model = limit
    if store_root is not None:
        model = CachedModel(model, ResponseCache(Path(store_root) / "cache" / "llm.sqlite"))
    return model, limit


class LLMSession:
    """What a run's LLM brain and facilitator share: the loop, the model stack, the call log, memory."""

    def __init__(
        self,
        config: SimulationConfig,
        population: Population,
        store_root: Path | None,
        spent_usd: float = 0.0,
        first_call_id: int = 1,
    ) -> None:
        load_env()
        self.config = config
        self.population = population
        self.budget = Budget(config.budget_usd, spent_usd)
        self.model, self.limit = build_model_stack(config, store_root, self.budget)
        self.loop = BackgroundLoop()
        self.memory = TradeMemory(population.size)
        # (turn, exchange_id, attempt order) -> row; call ids are given at drain_calls, in that order.
        self.rows: list[tuple[tuple[int, int, int], dict[str, object]]] = []
        self.next_call_id = first_call_id
        self.stopping: FatalError | None = None  # set when a fatal error in fail mode ends the round
        self.rounds_run = 0

    def run_all(self, jobs: list[Coroutine[Any, Any, T]]) -> list[T]:
        """Run a round's jobs (one per exchange) together on the loop; results in job order.

        Once one job meets a fatal error in fail mode, the others make no new call (what is
        in flight finishes and is logged), and the first such error in job order is raised.
        """
        self.stopping = None
        results = self.loop.run(_gather(jobs))
        self.rounds_run += 1
        if self.rounds_run == 1:
            # What the run's end needs (pandas and the metric SQL, a second or so to import) is
            # loaded while the run waits for its models; after the first round, so that it does
            # not compete with the first request (and LiteLLM's import) for the cores.
            threading.Thread(target=importlib.import_module, args=("commonpool.metrics",), daemon=True).start()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def ask_all(self, jobs: list[tuple[CallTags, Coroutine[Any, Any, Answer[T]]]]) -> list[Answer[T]]:
        """Ask concurrently and log every attempt; answers in job order. Raises a fatal error in fail mode."""
        if self.stopping is not None:
            for _, job in jobs:
                job.close()
            raise self.stopping
        answers = list(await asyncio.gather(*(job for _, job in jobs)))
        for (tags, _), answer in zip(jobs, answers):
            for k, record in enumerate(answer.log):
                row: dict[str, object] = {
                    "call_id": None,
                    "exchange_id": tags.exchange_id,
                    "turn": tags.turn,
                    "role": tags.role,
                    "participant_id": tags.participant_id,
                    "model": record.model,
                    "prompt_tokens": record.prompt_tokens,
                    "completion_tokens": record.completion_tokens,
                    "cost_usd": record.cost_usd,
                    "latency_ms": record.latency_ms,
                    "cached": record.cached,
                    "attempt": record.attempt,
                    "error": record.error,
                    "finish_reason": record.finish_reason,
                }
                self.rows.append(((tags.turn, tags.exchange_id, k), row))
        fatal = next((a.fatal for a in answers if a.fatal is not None), None)
        # A missing or rejected key stops the run even in fallback mode: every later call would
        # fail alike, and a run of rules decisions labelled as a model's is worse than no run.
        if fatal is not None and (self.config.on_llm_failure == "fail" or isinstance(fatal, CredentialsError)):
            self.stopping = self.stopping or fatal
            raise fatal
        return answers

    async def ask(
        self,
        model: str,
        system: str,
        user: str,
        state_json: str,
        schema: type[BaseModel],
        max_tokens: int,
        check: Callable[[str], T],
    ) -> Answer[T]:
        """One decision: a request, and one repair request if the answer does not pass check."""
        log: list[CallRecord] = []
        messages: tuple[tuple[str, str], ...] = (("system", system), ("user", user))
        try:
            for repairing in (False, True):
                request = ChatRequest(
                    model=model, messages=messages, schema=schema_of(schema), schema_name=schema.__name__,
                    temperature=self.config.temperature, max_tokens=self.config.llm_max_tokens or max_tokens,
                    structured_output=self.config.structured_output,
                )
                reply = await self.model.complete(request, log)
                try:
                    return Answer(check(reply.text), None, log)
                except ReplyError as exc:
                    problem = scrub(str(exc))[:MAX_PROBLEM_CHARS]
                    if reply.record.finish_reason == "length":
                        problem = f"the answer was cut off at {request.max_tokens} tokens (--llm-max-tokens); {problem}"
                    reply.record.error = f"invalid reply: {problem}"
                    if repairing:
                        return Answer(None, f"invalid reply after a repair request: {problem}", log)
                    repair = prompt("repair").substitute(problem=problem, state=state_json)
                    messages = (*messages, ("assistant", reply.text), ("user", repair))
        except FatalError as exc:
            return Answer(None, str(exc), log, provider_failed=True, fatal=exc)
        except LLMError as exc:
            return Answer(None, str(exc), log, provider_failed=True)
        raise AssertionError("unreachable: the loop returns")

    def drain_calls(self) -> list[dict[str, object]]:
        """The calls made since the last drain (a round's), numbered by turn, then exchange, then attempt."""
        pending, self.rows = self.rows, []
        rows = [row for _, row in sorted(pending, key=lambda item: item[0])]
        for row in rows:
            row["call_id"] = self.next_call_id
            self.next_call_id += 1
        return rows

    def close(self) -> None:
        self.loop.close()


async def _gather(jobs: list[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    return list(await asyncio.gather(*jobs, return_exceptions=True))


# --- what a prompt's state block says --------------------------------------------------------


def _data(text: str) -> str:
    """User-written text for the state block: backticks could close its fence, so they go."""
    return text.replace("`", "'")


def _units(population: Population, row: np.ndarray) -> dict[str, int]:
    return {population.resources[k]: int(v) for k, v in enumerate(row) if v}


def _bundle(population: Population, resource: int, quantity: int) -> dict[str, object] | None:
    if resource == NO_RESOURCE:
        return None
    return {"resource": population.resources[resource], "quantity": int(quantity)}


class LLMBrain:
    """Brain protocol (see RulesBrain) for the participants whose brain is a model string."""

    def __init__(self, session: LLMSession) -> None:
        self.session = session
        self.config = session.config
        self.rules = RulesBrain()

    def end_round(self, batch: ExchangeBatch, outcome: np.ndarray) -> None:
        self.session.memory.record(batch, outcome)

    async def decide(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        """Turn batch.turn for rows whose speakers have a model: propose on turn 1, reply after."""
        task = "propose" if batch.turn == 1 else "reply"
        population = world.population
        role = "initiator" if speaker_is_initiator(batch.turn) else "responder"
        system = system_prompt("participant", world)
        jobs = []
        for row, speaker in zip(rows.tolist(), batch.speakers(rows).tolist()):
            state_json = json.dumps(self._state(task, world, batch, row), ensure_ascii=False)
            user = prompt(task).substitute(
                turn=batch.turn, max_turns=batch.max_turns, state=state_json,
                actions=" or ".join(legal_actions(batch.turn, batch.max_turns)),
            )
            tags = CallTags(int(batch.exchange_ids[row]), batch.turn, role, speaker)
            check = partial(self._check, world, batch, row)
            job = self.session.ask(
                population.brains[speaker], system, user, state_json, ParticipantReply, PARTICIPANT_MAX_TOKENS, check
            )
            jobs.append((tags, job))
        answers = await self.session.ask_all(jobs)

        decisions = Decisions.empty(len(rows))
        decisions.source[:] = LLM
        for k, answer in enumerate(answers):
            if answer.value is not None:
                action, a, qa, b, qb, message = answer.value
                decisions.action[k], decisions.res_a[k], decisions.qty_a[k] = action, a, qa
                decisions.res_b[k], decisions.qty_b[k], decisions.message[k] = b, qb, message
        fallback = [k for k, a in enumerate(answers) if a.value is None and self._falls_back(a)]
        if fallback:
            ruled = getattr(self.rules, task)(world, batch, rows[fallback])
            ruled.source[:] = FALLBACK
            ruled.reason = np.array([answers[k].reason for k in fallback], dtype=object)
            decisions.put(np.array(fallback), ruled)
        for k, answer in enumerate(answers):
            if answer.value is None and not self._falls_back(answer):
                decisions.action[k], decisions.source[k] = REJECT, NO_DECISION
                decisions.reason[k] = answer.reason
                decisions.message[k] = "(no decision: the model could not be reached)"
        return decisions

    def _falls_back(self, answer: Answer[Any]) -> bool:
        # A bad answer always goes to the rules brain; a missing one only when the user chose fallback.
        return not answer.provider_failed or self.config.on_llm_failure == "fallback"

    def _state(self, task: str, world: World, batch: ExchangeBatch, row: int) -> dict[str, object]:
        population = world.population
        initiator_speaks = speaker_is_initiator(batch.turn)
        me, partner = (batch.initiator[row], batch.responder[row])[:: 1 if initiator_speaks else -1]
        personality = self.config.personality(population.personalities[me])
        me_state: dict[str, object] = {
            "name": _data(population.names[me]),
            "personality": {
                "name": personality.name,
                "description": _data(personality.description),
                "traits": personality.traits.model_dump(),
            },
            "notes": _data(population.notes[me]),
            "holdings": _units(population, world.holdings[me]),
            "needs": _units(population, population.needs[me]),
            "wants": {r: round(float(w), 2) for r, w in zip(population.resources, population.wants[me])},
            "memory": self.session.memory.recall(int(me), population),
        }
        partner_state: dict[str, object] = {
            "name": _data(population.names[partner]),
            "holdings": _units(population, world.holdings[partner]),
            "needs": _units(population, population.needs[partner]),
        }
        if world.periods > 1:
            me_state.update(member_periods(world, int(me)))
            partner_state.update(member_periods(world, int(partner)))
        state: dict[str, object] = {
            "task": task,
            "role": "initiator" if initiator_speaks else "responder",
            "turn": batch.turn,
            "max_turns": batch.max_turns,
            "legal_actions": list(legal_actions(batch.turn, batch.max_turns)),
            "resources": population.resources,
            **({"period": period_state(world, self.config)} if world.periods > 1 else {}),
            "me": me_state,
            "partner": partner_state,
            "advice": self._advice(world, batch, row),
        }
        if task == "reply":
            mine = (batch.cur_a[row], batch.cur_qa[row]) if initiator_speaks else (batch.cur_b[row], batch.cur_qb[row])
            theirs = (batch.cur_b[row], batch.cur_qb[row]) if initiator_speaks else (batch.cur_a[row], batch.cur_qa[row])
            state["offer"] = {"you_give": _bundle(population, *mine), "you_receive": _bundle(population, *theirs)}
        return state

    def _advice(self, world: World, batch: ExchangeBatch, row: int) -> dict[str, object] | None:
        advice = batch.advice
        if advice is None:
            return None
        population = world.population
        shown: dict[str, object] = {
            "initiator_gives": _bundle(population, advice.res_a[row], advice.qty_a[row]),
            "responder_gives": _bundle(population, advice.res_b[row], advice.qty_b[row]),
        }
        valuations = advice.valuations[row] if advice.valuations is not None else None
        if valuations is None and world.valuations is not None:
            valuations = {r: round(float(v), 3) for r, v in zip(population.resources, world.valuations)}
        if valuations:
            shown["valuations"] = valuations
        if advice.note is not None and advice.note[row]:
            shown["note"] = _data(str(advice.note[row]))
        return shown

    def _check(self, world: World, batch: ExchangeBatch, row: int, text: str) -> tuple[int, int, int, int, int, str | None]:
        """The answer as a decision row (action, res_a, qty_a, res_b, qty_b, message), or ReplyError."""
        reply = _parse(text, ParticipantReply)
        legal = legal_actions(batch.turn, batch.max_turns)
        if reply.action not in legal:
            raise ReplyError(f"action {reply.action!r} is not allowed on turn {batch.turn}; choose one of {', '.join(legal)}")
        message = reply.message.strip() or None
        code = ACTION_CODES[reply.action]
        if reply.action in ("accept", "reject"):
            # The swap columns of an answer are the offer being answered (none on turn 1).
            return code, batch.cur_a[row], batch.cur_qa[row], batch.cur_b[row], batch.cur_qb[row], message
        if reply.give is None or reply.receive is None:
            raise ReplyError(f"{reply.action} needs both give and receive")
        initiator_speaks = speaker_is_initiator(batch.turn)
        me, partner = (batch.initiator[row], batch.responder[row])[:: 1 if initiator_speaks else -1]
        give = _resource(world, reply.give.resource)
        receive = _resource(world, reply.receive.resource)
        if initiator_speaks:
            swap = (me, give, reply.give.quantity, partner, receive, reply.receive.quantity)
        else:
            swap = (partner, receive, reply.receive.quantity, me, give, reply.give.quantity)
        _check_swap(world, *swap, who=("you", "your partner") if initiator_speaks else ("your partner", "you"))
        _, res_a, qty_a, _, res_b, qty_b = swap
        return code, res_a, qty_a, res_b, qty_b, message


class LLMFacilitator:
    """Facilitator protocol (see RulesFacilitator) backed by config.facilitator_model."""

    def __init__(self, session: LLMSession, model: str) -> None:
        self.session = session
        self.model = model
        self.rules = RulesFacilitator()

    async def advise(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> AdviceBatch:
        system = system_prompt("facilitator", world)
        jobs = []
        for row in rows.tolist():
            state_json = json.dumps(self._state(world, batch, row), ensure_ascii=False)
            tags = CallTags(int(batch.exchange_ids[row]), 0, "facilitator", None)
            check = partial(self._check, world, batch, row)
            user = prompt("advise").substitute(state=state_json)
            jobs.append((tags, self.session.ask(self.model, system, user, state_json, FacilitatorReply, FACILITATOR_MAX_TOKENS, check)))
        answers = await self.session.ask_all(jobs)

        size = len(rows)
        advice = AdviceBatch(
            res_a=np.full(size, NO_RESOURCE, dtype=np.int64), qty_a=np.zeros(size, dtype=np.int64),
            res_b=np.full(size, NO_RESOURCE, dtype=np.int64), qty_b=np.zeros(size, dtype=np.int64),
            source=np.full(size, LLM, dtype=np.int8), note=np.full(size, None, dtype=object),
            valuations=np.full(size, None, dtype=object),
        )
        for k, answer in enumerate(answers):
            if answer.value is not None:
                advice.res_a[k], advice.qty_a[k], advice.res_b[k], advice.qty_b[k], advice.note[k], shown = answer.value
                advice.valuations[k] = shown
        # Advice is never binding, so any failure to get it (bad answer or no answer) falls back to the rules.
        failed = [k for k, a in enumerate(answers) if a.value is None]
        if failed:
            ruled = self.rules.advise(world, batch, rows[failed])
            for name in ("res_a", "qty_a", "res_b", "qty_b"):
                getattr(advice, name)[failed] = getattr(ruled, name)
            if ruled.note is not None:
                advice.note[failed] = ruled.note
            advice.source[failed] = FALLBACK
        return advice

    def _state(self, world: World, batch: ExchangeBatch, row: int) -> dict[str, object]:
        population, history = world.population, world.history

        def member(p: int) -> dict[str, object]:
            shown: dict[str, object] = {
                "name": _data(population.names[p]),
                "notes": _data(population.notes[p]),
                "holdings": _units(population, world.holdings[p]),
                "needs": _units(population, population.needs[p]),
                "wants": {r: round(float(w), 2) for r, w in zip(population.resources, population.wants[p])},
            }
            if world.periods > 1:
                shown.update(member_periods(world, p))
            return shown

        i, j = int(batch.initiator[row]), int(batch.responder[row])
        market: dict[str, object] = {
            "records": {
                "initiator": {"meetings": int(history.meetings[i]), "deals": int(history.deals[i])},
                "responder": {"meetings": int(history.meetings[j]), "deals": int(history.deals[j])},
            }
        }
        if world.valuations is not None:
            market["valuations"] = {r: round(float(v), 3) for r, v in zip(population.resources, world.valuations)}
        return {
            "task": "advise",
            "resources": population.resources,
            **({"period": period_state(world, self.session.config)} if world.periods > 1 else {}),
            "initiator": member(i),
            "responder": member(j),
            "market": market,
        }

    def _check(
        self, world: World, batch: ExchangeBatch, row: int, text: str
    ) -> tuple[int, int, int, int, str | None, dict[str, float]]:
        reply = _parse(text, FacilitatorReply)
        known = set(world.population.resources)
        unknown = sorted(set(reply.valuations) - known)
        if unknown:
            raise ReplyError(f"valuations name unknown resource {unknown[0]!r}; resources are {', '.join(world.population.resources)}")
        if any(not v >= 0 for v in reply.valuations.values()):
            raise ReplyError("valuations must be 0 or more")
        note = reply.note.strip() or None
        if reply.initiator_gives is None and reply.responder_gives is None:
            if note is None:
                raise ReplyError("suggesting no swap needs a note that says why")
            return NO_RESOURCE, 0, NO_RESOURCE, 0, note, reply.valuations
        if reply.initiator_gives is None or reply.responder_gives is None:
            raise ReplyError("give both initiator_gives and responder_gives, or neither when no swap helps both")
        a = _resource(world, reply.initiator_gives.resource)
        b = _resource(world, reply.responder_gives.resource)
        i, j = batch.initiator[row], batch.responder[row]
        _check_swap(
            world, i, a, reply.initiator_gives.quantity, j, b, reply.responder_gives.quantity,
            who=("the initiator", "the responder"),
        )
        return a, reply.initiator_gives.quantity, b, reply.responder_gives.quantity, note, reply.valuations


M = TypeVar("M", bound=BaseModel)


def _parse(text: str, model: type[M]) -> M:
    try:
        return model.model_validate(extract_json(text))
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()[:3]]
        raise ReplyError("; ".join(problems)) from None
    except ValueError as exc:
        raise ReplyError(f"{exc}; answer with one JSON object") from None


def _resource(world: World, name: str) -> int:
    try:
        return world.population.resources.index(name)
    except ValueError:
        raise ReplyError(f"unknown resource {name!r}; resources are {', '.join(world.population.resources)}") from None


def _check_swap(world: World, i: int, a: int, qty_a: int, j: int, b: int, qty_b: int, who: tuple[str, str]) -> None:
    """The ledger's own test of a swap (initiator i gives qty_a of a, j gives qty_b of b), worded for a repair request.

    who names the initiator's and the responder's side as the model should read them.
    """
    code = int(check_swaps(world.holdings, *(np.array([v]) for v in (i, j, a, qty_a, b, qty_b)))[0])
    if code == OK:
        return
    if code in (INITIATOR_SHORT, RESPONDER_SHORT):
        giver, resource, quantity, side = (i, a, qty_a, who[0]) if code == INITIATOR_SHORT else (j, b, qty_b, who[1])
        held = int(world.holdings[giver, resource])
        name = world.population.resources[resource]
        raise ReplyError(f"{side} cannot give {quantity} {name}: {side} hold{'s' if side != 'you' else ''} only {held}")
    raise ReplyError(f"the swap is not valid: {REASONS[code]}")


def build_llm(
    config: SimulationConfig,
    population: Population,
    store_root: Path | None = None,
    spent_usd: float = 0.0,
    first_call_id: int = 1,
) -> tuple[LLMSession | None, LLMBrain | None, LLMFacilitator | None]:
    """The run's session, its LLM brain (if any participant has a model) and facilitator (if facilitator_model is set).

    Both share the session: one loop, one concurrency limit, one budget, one call log.
    """
    wants_brain = any(b != "rules" for b in population.brains)
    wants_facilitator = bool(config.facilitator and config.facilitator_model)
    if not (wants_brain or wants_facilitator):
        return None, None, None
    session = LLMSession(config, population, store_root, spent_usd, first_call_id)
    brain = LLMBrain(session) if wants_brain else None
    facilitator = LLMFacilitator(session, str(config.facilitator_model)) if wants_facilitator else None
    return session, brain, facilitator
