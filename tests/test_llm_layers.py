"""Each layer around the LiteLLM call, alone, against the fake server: the client, retry, budget, cache, scrub, parse."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer, free_port

from commonpool.llm.budget import Budget, BudgetModel
from commonpool.llm.cache import CachedModel, ResponseCache
from commonpool.llm.chat import CallRecord, ChatRequest
from commonpool.llm.client import LiteLLMModel
from commonpool.llm.cost import Prices
from commonpool.llm.errors import BudgetExhausted, CredentialsError, FatalError, RequestError, TransientError
from commonpool.llm.parse import extract_json
from commonpool.llm.retry import RetryModel
from commonpool.llm.scrub import REDACTED, scrub
from commonpool.llm.settings import available_models

CANARY = "sk-canary-7f3a9b2c4d5e6f708192a3b4"
STATE = {
    "task": "propose",
    "role": "initiator",
    "resources": ["books", "tools"],
    "me": {"holdings": {"books": 3}, "needs": {"tools": 2}},
    "partner": {"holdings": {"tools": 3}, "needs": {}},
}


def request(model: str = "openai/fake", note: str = "") -> ChatRequest:
    user = f"Propose a swap.{note}\n```json\n{json.dumps(STATE)}\n```"
    return ChatRequest(model=model, messages=(("system", "You trade."), ("user", user)))


def complete(model: object, req: ChatRequest) -> tuple[str | Exception, list[CallRecord]]:
    log: list[CallRecord] = []

    async def go() -> str:
        return (await model.complete(req, log)).text  # type: ignore[attr-defined]

    try:
        return asyncio.run(go()), log
    except Exception as exc:
        return exc, log


def client(server: FakeLLMServer, timeout_s: float = 5.0, prices: Prices | None = None) -> LiteLLMModel:
    return LiteLLMModel(server.base_url, timeout_s, prices)


def test_client_returns_the_text_tokens_and_custom_price(fake_llm: FakeLLMServer) -> None:
    text, log = complete(client(fake_llm, prices=Prices(1e-6, 2e-6)), request())
    assert json.loads(text)["action"] == "propose"
    (record,) = log
    assert record.prompt_tokens > 0 and record.completion_tokens > 0 and record.error is None
    assert record.cost_usd == pytest.approx(record.prompt_tokens * 1e-6 + record.completion_tokens * 2e-6)


@pytest.mark.parametrize(
    ("mode", "error"),
    [("http_429", TransientError), ("http_500", TransientError), ("http_401", CredentialsError), ("echo_key", RequestError)],
)
def test_provider_errors_are_sorted_by_what_to_do_about_them(fake_llm: FakeLLMServer, mode: str, error: type) -> None:
    outcome, log = complete(client(fake_llm), request(f"openai/fake-{mode}"))
    assert isinstance(outcome, error)
    assert log[0].error == str(outcome)


def test_a_refused_connection_is_fatal() -> None:
    model = LiteLLMModel(f"http://127.0.0.1:{free_port()}/v1", 5.0)
    outcome, log = complete(model, request())
    assert isinstance(outcome, FatalError) and "Connection error" in str(outcome)


def test_a_slow_reply_times_out_within_the_bound(fake_llm: FakeLLMServer) -> None:
    fake_llm.configure(slow_seconds=3)
    outcome, log = complete(client(fake_llm, timeout_s=0.3), request("openai/fake-slow"))
    assert isinstance(outcome, TransientError)
    assert log[0].latency_ms < 2000


def test_retry_recovers_from_rate_limits_and_logs_every_attempt(fake_llm: FakeLLMServer) -> None:
    fake_llm.configure(fail_times=2)
    model = RetryModel(client(fake_llm), max_retries=3, base_delay_s=0.01, rng=random.Random(0))
    text, log = complete(model, request("openai/fake-flaky_429"))
    assert json.loads(text)["action"] == "propose"
    assert [(r.attempt, r.error is not None) for r in log] == [(1, True), (2, True), (3, False)]


def test_retry_gives_up_after_max_retries(fake_llm: FakeLLMServer) -> None:
    model = RetryModel(client(fake_llm), max_retries=2, base_delay_s=0.01)
    outcome, log = complete(model, request("openai/fake-http_500"))
    assert isinstance(outcome, TransientError)
    assert [r.attempt for r in log] == [1, 2, 3] and fake_llm.count == 3


def test_retry_does_not_repeat_a_fatal_error(fake_llm: FakeLLMServer) -> None:
    outcome, log = complete(RetryModel(client(fake_llm), max_retries=3, base_delay_s=0.01), request("openai/fake-http_401"))
    assert isinstance(outcome, FatalError) and fake_llm.count == 1


def test_budget_refuses_a_call_that_could_overspend(fake_llm: FakeLLMServer) -> None:
    prices = Prices(1e-3, 1e-3)
    budget = Budget(limit_usd=1.0)
    model = BudgetModel(client(fake_llm, prices=prices), budget, lambda _: prices)
    text, _ = complete(model, request())
    assert isinstance(text, str) and 0 < budget.spent_usd < 1.0 and budget.reserved_usd == 0
    budget.limit_usd = budget.spent_usd + 0.01  # less than the next call's completion allowance
    outcome, log = complete(model, request())
    assert isinstance(outcome, BudgetExhausted) and log == [] and fake_llm.count == 1


def test_cache_answers_a_repeated_request_without_a_call(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    model = CachedModel(client(fake_llm), ResponseCache(tmp_path / "llm.sqlite"))
    first, _ = complete(model, request())
    again, log = complete(CachedModel(client(fake_llm), ResponseCache(tmp_path / "llm.sqlite")), request())
    assert again == first and fake_llm.count == 1
    assert log[0].cached and log[0].cost_usd == 0.0 and log[0].prompt_tokens > 0
    complete(model, request(note=" Different words."))
    assert fake_llm.count == 2


def test_cache_keeps_no_errors(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    model = CachedModel(client(fake_llm), ResponseCache(tmp_path / "llm.sqlite"))
    complete(model, request("openai/fake-http_500"))
    complete(model, request("openai/fake-http_500"))
    assert fake_llm.count == 2


def test_an_echoed_key_is_scrubbed_from_the_error(fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    outcome, log = complete(client(fake_llm), request("openai/fake-echo_key"))
    assert "Authorization header" in str(outcome)
    assert CANARY not in str(outcome) and CANARY not in (log[0].error or "")
    assert CANARY in json.dumps(fake_llm.headers[-1])  # the key really was sent and echoed


def test_scrub_removes_secret_env_values_and_key_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "plainvalue123")
    text = "key plainvalue123, sk-ant-abcdefghijkl, Bearer abc.def.ghi, api_key=zzzzzzzz, AIza" + "x" * 30
    cleaned = scrub(text)
    for secret in ("plainvalue123", "sk-ant-abcdefghijkl", "abc.def.ghi", "zzzzzzzz", "AIza"):
        assert secret not in cleaned
    assert cleaned.count(REDACTED) == 5


@pytest.mark.parametrize(
    "text",
    [
        '{"action": "reject"}',
        '```json\n{"action": "reject"}\n```',
        'Here is my answer: {"action": "reject"} Thanks!',
        'I think {so} but {"action": "reject"}',
    ],
)
def test_extract_json_tolerates_fences_and_prose(text: str) -> None:
    assert extract_json(text) == {"action": "reject"}


def test_extract_json_rejects_prose_without_json() -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("Sure, let's trade some books.")


def test_available_models_follow_configured_keys_without_showing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OLLAMA_API_BASE", "OPENAI_API_BASE", "COMMONPOOL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert available_models() == []
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    models = available_models()
    assert models and all(m.startswith("anthropic/") for m in models)
    assert CANARY not in json.dumps(models)
