"""The messages of an exchange and the rules of its turns.

One exchange: turn 1, the initiator proposes a swap (or declines, when it sees
nothing worth asking for). Every later turn the other
party replies: accept, reject, or counter with a swap of its own. A counter is
not allowed on the last turn (max_turns), so every exchange ends within
max_turns messages. Outcomes:

- accepted: a proposal was accepted and the ledger settled it;
- invalid: a proposal was accepted but the ledger refused it (nothing moved);
- rejected: a party walked away while counters were still allowed;
- no_deal: the final allowed proposal was rejected;
- error: a decision could not be made (an LLM failed and fallback is off).

A swap is always stated from the exchange's point of view: the initiator gives
``initiator_gives_qty`` of ``initiator_gives``, the responder gives
``responder_gives_qty`` of ``responder_gives``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from commonpool.facilitator import MarketHistory
from commonpool.population import Population
from commonpool.production import Foresight
from commonpool.store.schema import ACTIONS, OUTCOMES, SOURCES

PROPOSE, COUNTER, ACCEPT, REJECT = (ACTIONS.index(a) for a in ("propose", "counter", "accept", "reject"))
ACCEPTED, REJECTED, NO_DEAL, INVALID, ERROR = (
    OUTCOMES.index(o) for o in ("accepted", "rejected", "no_deal", "invalid", "error")
)
RULES, LLM, FALLBACK = (SOURCES.index(s) for s in ("rules", "llm", "fallback"))
NO_RESOURCE = -1


def speaker_is_initiator(turn: int) -> bool:
    """Turns alternate and the initiator opens."""
    return turn % 2 == 1


def legal_actions(turn: int, max_turns: int) -> tuple[str, ...]:
    if turn == 1:
        return ("propose", "reject")  # reject: the initiator sees nothing worth asking for
    if turn >= max_turns:
        return ("accept", "reject")
    return ("accept", "reject", "counter")


def outcome_of_reject(turn: int, max_turns: int) -> int:
    return NO_DEAL if turn >= max_turns else REJECTED


@dataclass
class Decisions:
    """What a brain decided for a batch of exchanges (one row per exchange in ``rows``).

    The swap columns are the proposal for propose/counter, and the offer being
    answered for accept/reject. message is None where the rules template applies;
    reason says why a fallback happened.
    """

    action: np.ndarray  # int8 action codes
    res_a: np.ndarray  # int64: what the initiator gives
    qty_a: np.ndarray  # int64
    res_b: np.ndarray  # int64: what the responder gives
    qty_b: np.ndarray  # int64
    source: np.ndarray  # int8 source codes
    message: np.ndarray | None = None  # object array of str | None
    reason: np.ndarray | None = None  # object array of str | None

    @staticmethod
    def empty(size: int) -> Decisions:
        return Decisions(
            action=np.zeros(size, dtype=np.int8),
            res_a=np.full(size, NO_RESOURCE, dtype=np.int64),
            qty_a=np.zeros(size, dtype=np.int64),
            res_b=np.full(size, NO_RESOURCE, dtype=np.int64),
            qty_b=np.zeros(size, dtype=np.int64),
            source=np.zeros(size, dtype=np.int8),
            message=np.full(size, None, dtype=object),
            reason=np.full(size, None, dtype=object),
        )

    def put(self, where: np.ndarray, other: Decisions) -> None:
        """Write another brain's decisions into the positions ``where`` of this batch."""
        for name in ("action", "res_a", "qty_a", "res_b", "qty_b", "source"):
            getattr(self, name)[where] = getattr(other, name)
        for name in ("message", "reason"):
            values = getattr(other, name)
            if values is not None:
                getattr(self, name)[where] = values

    @staticmethod
    def concat(parts: list[Decisions]) -> Decisions:
        """One batch of the parts' rows, in order."""
        joined = Decisions.empty(sum(len(p.action) for p in parts))
        start = 0
        for part in parts:
            joined.put(np.arange(start, start + len(part.action)), part)
            start += len(part.action)
        return joined


@dataclass
class AdviceBatch:
    """The facilitator's non-binding suggestion for a batch of exchanges."""

    res_a: np.ndarray
    qty_a: np.ndarray
    res_b: np.ndarray
    qty_b: np.ndarray
    source: np.ndarray
    note: np.ndarray | None = None  # object array; None where the rules template applies
    # object array of a model facilitator's own valuations per row (dict or None), which the
    # participants' prompts show; None when the rules facilitator advised
    valuations: np.ndarray | None = None

    @staticmethod
    def concat(parts: list[AdviceBatch]) -> AdviceBatch:
        """One batch of the parts' rows, in order (note and valuations None where a part has none)."""

        def joined(name: str) -> np.ndarray | None:
            columns = [getattr(p, name) for p in parts]
            if all(c is None for c in columns):
                return None
            return np.concatenate([c if c is not None else np.full(len(p.res_a), None, dtype=object) for c, p in zip(columns, parts)])

        return AdviceBatch(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in ("res_a", "qty_a", "res_b", "qty_b", "source")),
            note=joined("note"), valuations=joined("valuations"),
        )

    def row(self, k: int) -> AdviceBatch:
        return AdviceBatch(**{name: None if v is None else v[k : k + 1] for name, v in vars(self).items()})


# --- what an LLM must answer (validated at the edge) ------------------------------------------


class Bundle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: str = Field(min_length=1)
    quantity: int = Field(ge=1, strict=True)


class ParticipantReply(BaseModel):
    """A participant's turn: propose/counter carry a swap from the speaker's side.

    A counter may name other resources than the offer it answers.
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["propose", "counter", "accept", "reject"]
    give: Bundle | None = None
    receive: Bundle | None = None
    message: str = Field("", max_length=2000)


class FacilitatorReply(BaseModel):
    """The facilitator's advice: both bundles of one suggested swap, or neither when no swap helps both sides."""

    model_config = ConfigDict(extra="forbid")

    valuations: dict[str, float]
    initiator_gives: Bundle | None = None
    responder_gives: Bundle | None = None
    note: str = Field("", max_length=2000)


@dataclass
class ExchangeBatch:
    """The exchanges of one round, negotiated together; row k is one exchange.

    Pairs are disjoint, so holdings seen by one row cannot change under another.
    The current offer is the last proposal made (initiator gives res_a x qty_a,
    responder gives res_b x qty_b). proposals counts each side's own proposals
    so far, which is what a negotiator concedes by.

    memo holds what a brain derived from the round's holdings (e.g. the rules
    brain's two legs of every swap): holdings only change when the round
    settles, after the last turn, so it stays true for the batch's whole life.
    """

    round: int
    exchange_ids: np.ndarray  # int64
    initiator: np.ndarray  # int64 participant ids
    responder: np.ndarray
    max_turns: int
    advice: AdviceBatch | None
    cur_a: np.ndarray
    cur_qa: np.ndarray
    cur_b: np.ndarray
    cur_qb: np.ndarray
    proposals: np.ndarray  # int64 [row, 0 initiator / 1 responder]
    turn: int = 1
    memo: dict[str, object] = field(default_factory=dict, repr=False)

    @staticmethod
    def open(round_: int, exchange_ids: np.ndarray, initiator: np.ndarray, responder: np.ndarray,
             max_turns: int, advice: AdviceBatch | None) -> ExchangeBatch:
        size = len(initiator)
        return ExchangeBatch(
            round=round_, exchange_ids=exchange_ids, initiator=initiator, responder=responder,
            max_turns=max_turns, advice=advice,
            cur_a=np.full(size, NO_RESOURCE, dtype=np.int64), cur_qa=np.zeros(size, dtype=np.int64),
            cur_b=np.full(size, NO_RESOURCE, dtype=np.int64), cur_qb=np.zeros(size, dtype=np.int64),
            proposals=np.zeros((size, 2), dtype=np.int64),
        )

    def row(self, k: int) -> ExchangeBatch:
        """Exchange k as a batch of one whose offer state is a view into this batch's.

        An LLM round negotiates each exchange on its own (each at its own turn), so what
        a row decides lands in the round's arrays, which then settle together.
        """
        one = slice(k, k + 1)
        return ExchangeBatch(
            round=self.round, exchange_ids=self.exchange_ids[one], initiator=self.initiator[one],
            responder=self.responder[one], max_turns=self.max_turns,
            advice=self.advice.row(k) if self.advice is not None else None,
            cur_a=self.cur_a[one], cur_qa=self.cur_qa[one], cur_b=self.cur_b[one], cur_qb=self.cur_qb[one],
            proposals=self.proposals[one], turn=self.turn,
        )

    def speakers(self, rows: np.ndarray) -> np.ndarray:
        return self.initiator[rows] if speaker_is_initiator(self.turn) else self.responder[rows]

    def listeners(self, rows: np.ndarray) -> np.ndarray:
        return self.responder[rows] if speaker_is_initiator(self.turn) else self.initiator[rows]


@dataclass
class World:
    """What a brain may look at when it decides: read-only holdings, the community, the market."""

    population: Population
    holdings: np.ndarray  # the ledger's read-only view
    need_weight: float
    history: MarketHistory
    valuations: np.ndarray | None  # this round's facilitator valuations; None without a facilitator
    foresight: Foresight | None = None  # next period's worth of a holding; None in a one-period run
    period: int = 1  # the period under way, from 1
    periods: int = 1  # the run's periods
