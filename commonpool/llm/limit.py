"""At most `concurrency` requests in flight (--concurrency), fewer while the server is congested.

A local server (llama.cpp, vLLM, Ollama) has a few slots; requests beyond them
queue inside it, past our timeout, while it goes on computing the abandoned
ones, and the retries pile up. So the limit adapts the way TCP's congestion
window does (additive increase, multiplicative decrease; Jacobson 1988): a
call that met a timeout or a 429 halves it, unless the call was sent before
the last cut (a burst of failures from one overload is one signal), and every
`limit` calls in a row that went through without one raise it by one, back
up to --concurrency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from commonpool.llm.chat import CallRecord, ChatModel, ChatRequest, Reply


class LimitedModel:
    def __init__(self, inner: ChatModel, concurrency: int) -> None:
        self.inner = inner
        self.concurrency = concurrency
        self.limit = concurrency  # requests that may be in flight now
        self.in_flight = 0
        self.cuts = 0  # how often congestion lowered the limit
        self._clear = 0  # calls in a row without congestion since the limit last changed
        self._condition: asyncio.Condition | None = None

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        if self._condition is None:
            # Made on first use so it belongs to the loop that awaits it.
            self._condition = asyncio.Condition()
        condition = self._condition
        async with condition:
            await condition.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
            sent_after = self.cuts
        first = len(log)
        try:
            return await self.inner.complete(request, log, attempt)
        finally:
            congested = any(record.congestion for record in log[first:])
            async with condition:
                self.in_flight -= 1
                self._adapt(congested, sent_after == self.cuts)
                condition.notify_all()

    def _adapt(self, congested: bool, sent_since_last_cut: bool) -> None:
        if congested:
            self._clear = 0
            if sent_since_last_cut:
                self.limit = max(1, self.limit // 2)
                self.cuts += 1
            return
        self._clear += 1
        if self._clear >= self.limit and self.limit < self.concurrency:
            self.limit += 1
            self._clear = 0

    def state(self) -> dict[str, float]:
        """For the progress line: the limit now, the ceiling, and how often it was lowered."""
        return {"in_flight_limit": self.limit, "concurrency": self.concurrency, "limit_cuts": self.cuts}


def slowed(state: Mapping[str, Any]) -> str | None:
    """'2/8 (slowed: timeouts/429s)' once timeouts or 429s have lowered the requests in flight
    (a state() as a run's progress carries it), for the CLI's progress bar and the Running page."""
    if not state.get("limit_cuts"):
        return None
    return f"{int(state['in_flight_limit'])}/{int(state['concurrency'])} (slowed: timeouts/429s)"
