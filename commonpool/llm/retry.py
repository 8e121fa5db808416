"""Retrying rate limits, 5xx and timeouts with exponential backoff and full jitter.

Full jitter (a uniform draw up to the exponential cap) spreads the retries of
the many concurrent calls of a round, so they do not hit a rate-limited
provider again in lockstep (Brooker, "Exponential Backoff and Jitter", AWS 2015).
"""

from __future__ import annotations

import asyncio
import random

from commonpool.llm.chat import CallRecord, ChatModel, ChatRequest, Reply
from commonpool.llm.errors import TransientError


class RetryModel:
    def __init__(
        self,
        inner: ChatModel,
        max_retries: int,
        base_delay_s: float = 0.5,
        max_delay_s: float = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.rng = rng or random.Random()

    def delay(self, retry: int, error: TransientError) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        jitter = self.rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1)))
        retry_after = getattr(error, "retry_after", None)
        # A provider that says when to come back knows better than our guess; the
        # jitter still goes on top so the round's calls do not return together.
        return min(self.max_delay_s, retry_after + self.rng.uniform(0, self.base_delay_s)) if retry_after is not None else jitter

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        for n in range(1, self.max_retries + 2):
            try:
                return await self.inner.complete(request, log, attempt=n)
            except TransientError as error:
                if n > self.max_retries:
                    raise
                await asyncio.sleep(self.delay(n, error))
        raise AssertionError("unreachable: the loop returns or raises")
