"""Stopping before a run spends more than budget_usd.

A call reserves the most it could cost before it is sent (prompt by length,
the full completion allowance) and settles to its real cost when it returns,
so concurrent calls cannot together overshoot the budget.
"""

from __future__ import annotations

from collections.abc import Callable

from commonpool.llm.chat import CallRecord, ChatModel, ChatRequest, Reply
from commonpool.llm.cost import Prices, most_a_call_costs
from commonpool.llm.errors import BudgetExhausted


class Budget:
    def __init__(self, limit_usd: float | None, spent_usd: float = 0.0) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0

    def reserve(self, estimate: float) -> None:
        if self.limit_usd is None:
            return
        if self.spent_usd >= self.limit_usd or self.spent_usd + self.reserved_usd + estimate > self.limit_usd:
            raise BudgetExhausted(
                f"budget of ${self.limit_usd:.4f} reached: ${self.spent_usd:.4f} spent, "
                f"${self.reserved_usd:.4f} in flight, the next call could cost up to ${estimate:.4f}"
            )
        self.reserved_usd += estimate

    def settle(self, estimate: float, actual: float) -> None:
        if self.limit_usd is not None:
            self.reserved_usd -= estimate
        self.spent_usd += actual


class BudgetModel:
    def __init__(self, inner: ChatModel, budget: Budget, prices: Callable[[str], Prices | None]) -> None:
        self.inner = inner
        self.budget = budget
        self.prices = prices

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        estimate = 0.0
        if self.budget.limit_usd is not None:  # without a limit the estimate is never used: no price lookup
            prompt_chars = sum(len(content) for _, content in request.messages)
            estimate = most_a_call_costs(self.prices(request.model), prompt_chars, request.max_tokens)
        self.budget.reserve(estimate)
        first = len(log)
        try:
            return await self.inner.complete(request, log, attempt)
        finally:
            self.budget.settle(estimate, sum(r.cost_usd or 0.0 for r in log[first:]))
