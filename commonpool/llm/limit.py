"""At most `concurrency` requests in flight at once (--concurrency)."""

from __future__ import annotations

import asyncio

from commonpool.llm.chat import CallRecord, ChatModel, ChatRequest, Reply


class LimitedModel:
    def __init__(self, inner: ChatModel, concurrency: int) -> None:
        self.inner = inner
        self.concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        if self._semaphore is None:
            # Made on first use so it belongs to the loop that awaits it.
            self._semaphore = asyncio.Semaphore(self.concurrency)
        async with self._semaphore:
            return await self.inner.complete(request, log, attempt)
