"""The one interface every layer implements: a chat request in, the model's text out.

A layer appends one CallRecord per provider request (or cache answer) to the
log it is handed, so retries and cache hits each become a row of llm_calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content): hashable, so it can key the cache
    schema: dict[str, Any] | None = None  # JSON schema for response_format, where the model supports it
    schema_name: str = "reply"
    temperature: float = 0.0
    max_tokens: int = 400
    # How the reply's shape is asked for: auto, json_schema, json_object or off (--structured-output).
    structured_output: str = "auto"

    def openai_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class CallRecord:
    """One request to a provider, or one answer from our cache: a row of llm_calls."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    attempt: int = 1
    error: str | None = None
    finish_reason: str | None = None  # why the reply ended: stop, length (cut at max_tokens)...
    congestion: bool = False  # a timeout or 429: the server has more requests than it can take (limit.py)


@dataclass
class Reply:
    text: str
    record: CallRecord = field(repr=False)


class ChatModel(Protocol):
    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        """The model's answer; appends what it did to log. Raises errors.LLMError subclasses."""
        ...
