"""The one LiteLLM call, and the sorting of its failures into what a caller can do about them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from commonpool.llm.chat import CallRecord, ChatRequest, Reply
from commonpool.llm.cost import Prices, listed_prices, register_unpriced
from commonpool.llm.errors import CredentialsError, FatalError, LLMError, RequestError, TransientError
from commonpool.llm.scrub import scrub
from commonpool.llm.settings import api_key_for

# asyncio's own bound sits this far beyond LiteLLM's timeout, for a transport
# that ignores it; LiteLLM's Timeout is the one that normally fires.
TIMEOUT_GRACE_S = 5.0
MAX_ERROR_CHARS = 500
STRUCTURED_OUTPUTS = ("auto", "json_schema", "json_object", "off")
# What auto asks an --api-base server for, most constrained first (None: the prompt alone).
FORMAT_LADDER: tuple[str | None, ...] = ("json_schema", "json_object", None)
# How the SDKs word a key that was never given: LiteLLM passes these on as a 500 or a 400,
# which would otherwise be retried or taken for a bad request.
MISSING_KEY_WORDS = ("Missing credentials", "Missing API Key", "api_key client option must be set")

_litellm: Any = None


def import_litellm() -> Any:
    """LiteLLM, imported on first use: it takes seconds, and rules runs never need it."""
    global _litellm
    if _litellm is None:
        # Without this LiteLLM fetches its price list from GitHub at import.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True  # it prints a help banner on every exception
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)  # its logs may quote provider errors verbatim
        _litellm = litellm
    return _litellm


async def warm_up() -> None:
    """Have LiteLLM load what it loads on its first call (logging callbacks, provider configs:
    0.2-0.6 s), with a mock reply that sends nothing, so a first request does not wait for it."""
    litellm = import_litellm()
    try:
        await litellm.acompletion(
            model="openai/commonpool-warm-up", messages=[{"role": "user", "content": "-"}],
            mock_response="{}", api_key="unused", max_retries=0,
        )
    except Exception:  # a warm-up only: the first real call loads whatever this did not
        pass


class LiteLLMModel:
    """Sends one request through litellm.acompletion with LiteLLM's and the SDK's own retries off.

    Retrying is RetryModel's job, so that every attempt is a row of llm_calls.
    """

    def __init__(self, api_base: str | None, timeout_s: float, prices: Prices | None = None) -> None:
        self.api_base = api_base
        self.timeout_s = timeout_s
        self.prices = prices
        self._schema_support: dict[str, bool] = {}
        self._listed: dict[str, bool] = {}
        # auto on an --api-base server: per model, how far down FORMAT_LADDER its refusals have sent us.
        self._server_format: dict[str, int] = {}

    def listed(self, model: str) -> bool:
        """Whether LiteLLM's price list knows the model."""
        if model not in self._listed:
            self._listed[model] = listed_prices(model) is not None
        return self._listed[model]

    def supports_schema(self, model: str) -> bool:
        """Whether LiteLLM knows the model takes a JSON schema as response_format; else the prompt's JSON instructions do."""
        if model not in self._schema_support:
            try:
                self._schema_support[model] = bool(import_litellm().supports_response_schema(model=model))
            except Exception:  # an unmapped model: LiteLLM cannot say, so do not risk a 400
                self._schema_support[model] = False
        return self._schema_support[model]

    def formats(self, request: ChatRequest) -> list[str | None]:
        """The response_format types to try, in order (None: ask in the prompt only).

        auto sends the schema where LiteLLM knows the model takes one, and to an
        --api-base server (llama.cpp, vLLM, Ollama and LM Studio constrain their
        output to it), which LiteLLM cannot know about; a server that refuses it is
        asked for a JSON object, then for nothing, and the answer is remembered.
        """
        mode = request.structured_output
        if request.schema is None or mode == "off":
            return [None]
        if mode in ("json_schema", "json_object"):
            return [mode]
        if self.supports_schema(request.model):
            return ["json_schema"]
        if not self.api_base:
            return [None]
        return list(FORMAT_LADDER[self._server_format.get(request.model, 0):])

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        formats = self.formats(request)
        for k, response_format in enumerate(formats):
            try:
                reply = await self._send(request, response_format, log, attempt)
            except RequestError as error:
                if response_format is None or k == len(formats) - 1:
                    raise
                log[-1].error = f"{error} (the server refused response_format {response_format}; trying {formats[k + 1] or 'none'})"
                continue
            if k and request.structured_output == "auto":
                self._server_format[request.model] = FORMAT_LADDER.index(response_format)
            return reply
        raise AssertionError("unreachable: the last format returns or raises")

    async def _send(self, request: ChatRequest, response_format: str | None, log: list[CallRecord], attempt: int) -> Reply:
        litellm = import_litellm()
        record = CallRecord(model=request.model, attempt=attempt)
        log.append(record)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": request.openai_messages(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout": self.timeout_s,
            "max_retries": 0,
        }
        if self.api_base:
            kwargs["api_base"] = self.api_base
        api_key = api_key_for(request.model, self.api_base)
        if api_key:
            kwargs["api_key"] = api_key
        if response_format == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema},
            }
        elif response_format == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        priced = self.prices is not None or self.listed(request.model)
        if self.prices is not None:
            kwargs["input_cost_per_token"] = self.prices.prompt_per_token
            kwargs["output_cost_per_token"] = self.prices.completion_per_token
        elif not priced:
            register_unpriced(request.model)  # spares LiteLLM a search of its price list per call
        started = time.perf_counter()
        try:
            response = await asyncio.wait_for(litellm.acompletion(**kwargs), self.timeout_s + TIMEOUT_GRACE_S)
        except Exception as exc:  # every provider failure becomes one of ours, scrubbed
            record.latency_ms = (time.perf_counter() - started) * 1000
            error = classify(exc)
            record.error = str(error)
            record.congestion = isinstance(exc, asyncio.TimeoutError | litellm.Timeout | litellm.RateLimitError)
            raise error from None
        record.latency_ms = (time.perf_counter() - started) * 1000
        usage = getattr(response, "usage", None)
        record.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        record.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        record.cost_usd = float(cost) if cost is not None and priced else None  # type: ignore[assignment]
        choices = getattr(response, "choices", None) or []
        text = (choices[0].message.content if choices else None) or ""
        record.finish_reason = (getattr(choices[0], "finish_reason", None) or None) if choices else None
        return Reply(text=text, record=record)


def classify(exc: BaseException) -> LLMError:
    """Our error for a LiteLLM/SDK exception, with a scrubbed, bounded message."""
    litellm = import_litellm()
    text = str(exc)
    message = scrub(text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}")[:MAX_ERROR_CHARS]
    if isinstance(exc, asyncio.TimeoutError | litellm.Timeout):
        return TransientError(message)
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError) or any(
        words.lower() in text.lower() for words in MISSING_KEY_WORDS
    ):
        return CredentialsError(message)
    if isinstance(exc, litellm.NotFoundError):
        return FatalError(message)
    if isinstance(exc, litellm.APIConnectionError) or "Connection error" in str(exc):
        # A refused connection surfaces from LiteLLM as InternalServerError("Connection error.").
        return FatalError(message)
    if isinstance(exc, litellm.RateLimitError):
        error: LLMError = TransientError(message)
        error.retry_after = _retry_after(exc)  # type: ignore[attr-defined]
        return error
    status = getattr(exc, "status_code", None)
    if isinstance(exc, litellm.InternalServerError | litellm.ServiceUnavailableError | litellm.BadGatewayError) or (
        isinstance(status, int) and status >= 500
    ):
        return TransientError(message)
    return RequestError(message)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None
