"""Each participant's own memory of its last few exchanges, as an LLM brain is told it.

A person remembers whom they met, what was on the table and how it ended, not
the whole market; the facilitator's MarketHistory keeps the aggregate view.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from commonpool.population import Population
from commonpool.protocol import NO_RESOURCE, ExchangeBatch
from commonpool.store.schema import OUTCOMES

DEPTH = 5  # exchanges remembered per participant: enough to recognise a partner, short enough for a prompt


class TradeMemory:
    def __init__(self, size: int, depth: int = DEPTH) -> None:
        # Per participant: (exchange_id, partner, gave_res, gave_qty, got_res, got_qty, outcome code).
        self._recent: list[deque[tuple[int, int, int, int, int, int, int]]] = [deque(maxlen=depth) for _ in range(size)]

    def record(self, batch: ExchangeBatch, outcome: np.ndarray) -> None:
        """Remember a finished round: both sides keep the last offer on the table and the outcome."""
        rows = zip(
            batch.exchange_ids.tolist(), batch.initiator.tolist(), batch.responder.tolist(),
            batch.cur_a.tolist(), batch.cur_qa.tolist(), batch.cur_b.tolist(), batch.cur_qb.tolist(),
            np.asarray(outcome).tolist(),
        )
        for exchange_id, i, j, a, qa, b, qb, code in rows:
            self._recent[i].append((exchange_id, j, a, qa, b, qb, code))
            self._recent[j].append((exchange_id, i, b, qb, a, qa, code))

    def recall(self, participant: int, population: Population) -> list[dict[str, Any]]:
        """Oldest first, in the words of the prompt's state block."""
        memories = []
        for _, partner, gave, gave_qty, got, got_qty, code in self._recent[participant]:
            swap = None
            if gave != NO_RESOURCE and got != NO_RESOURCE:
                swap = {
                    "you_give": {"resource": population.resources[gave], "quantity": gave_qty},
                    "you_receive": {"resource": population.resources[got], "quantity": got_qty},
                }
            memories.append(
                {"partner": population.names[partner], "last_offer": swap, "outcome": OUTCOMES[code] if code >= 0 else "unknown"}
            )
        return memories
