"""What can go wrong with a model call, sorted by what the caller should do about it."""

from __future__ import annotations


class LLMError(Exception):
    """A call that produced no usable answer. The message is already scrubbed of secrets."""


class TransientError(LLMError):
    """Rate limits, 5xx and timeouts: worth retrying after a pause."""


class RequestError(LLMError):
    """The provider refused this one request (bad request, content policy): retrying will not help."""


class FatalError(LLMError):
    """No later call can succeed either (no connection, bad key, unknown model): the run should stop."""


class CredentialsError(FatalError):
    """A missing or rejected key: the run stops whatever on_llm_failure says, since every call would fail alike."""


class BudgetExhausted(FatalError):
    """The next call could take spending past the run's budget_usd."""
