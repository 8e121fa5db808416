"""Tests for tests/fake_llm_server.py, driven through litellm.acompletion.

No pytest-asyncio in the stack, so each test runs its coroutine with asyncio.run.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing litellm: no network fetch

import litellm  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_llm_server import MODES, FakeLLMServer, free_port  # noqa: E402

API_KEY = "sk-test-DO-NOT-LEAK-1234"
RESOURCES = ["wood", "stone", "wheat", "ore"]


# --------------------------------------------------------------------------- #
# fixtures / helpers
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def server():
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def srv(server):
    server.reset()
    yield server
    server.reset()


def propose_state(advice=None, **over):
    state = {
        "task": "propose",
        "resources": RESOURCES,
        "me": {"id": 1, "holdings": {"wood": 6, "stone": 0, "wheat": 2, "ore": 0}, "needs": {"stone": 3, "wood": 2}},
        "partner": {"id": 2, "holdings": {"wood": 0, "stone": 4, "wheat": 1, "ore": 2}},
        "advice": advice,
        "legal_actions": ["propose"],
    }
    state.update(over)
    return state


def reply_state(you_give, you_receive, legal=("accept", "reject", "counter"), **over):
    state = propose_state(task="reply", legal_actions=list(legal), turn=1, max_turns=4)
    state["offer"] = {"you_give": you_give, "you_receive": you_receive}
    state.update(over)
    return state


def advise_state():
    return {
        "task": "advise",
        "resources": RESOURCES,
        "initiator": {"id": 1, "holdings": {"wood": 6, "stone": 0, "wheat": 2, "ore": 0}, "needs": {"stone": 3}},
        "responder": {"id": 2, "holdings": {"wood": 0, "stone": 4, "wheat": 1, "ore": 2}, "needs": {"wood": 2}},
        "history": {"rounds": 3, "trades": [{"from": 1, "to": 2}]},
    }


def messages_for(state):
    return [
        {"role": "system", "content": "You are a trader in CommonPool. Answer with one JSON object."},
        {"role": "user", "content": "Here is the state.\n```json\n" + json.dumps(state) + "\n```\nYour move?"},
    ]


def call(srv, state, model="openai/fake-cooperative", **kw):
    kw.setdefault("max_retries", 0)
    return litellm.acompletion(
        model=model, api_base=srv.base_url, api_key=API_KEY, messages=messages_for(state), **kw
    )


def run(coro):
    return asyncio.run(coro)


def content_of(resp):
    return resp.choices[0].message.content


def assert_legal_leg(leg, holdings):
    assert set(leg) == {"resource", "quantity"}
    assert leg["resource"] in RESOURCES
    assert type(leg["quantity"]) is int and leg["quantity"] >= 1
    assert holdings.get(leg["resource"], 0) >= leg["quantity"]


def assert_legal_proposal(ans, state, action):
    assert ans["action"] == action
    assert isinstance(ans["message"], str) and ans["message"]
    assert_legal_leg(ans["give"], state["me"]["holdings"])
    assert_legal_leg(ans["receive"], state["partner"]["holdings"])
    assert ans["give"]["resource"] != ans["receive"]["resource"]


# --------------------------------------------------------------------------- #
# cooperative answers
# --------------------------------------------------------------------------- #
def test_models_endpoint(srv):
    with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as r:
        data = json.loads(r.read())
    ids = {m["id"] for m in data["data"]}
    assert {"fake", "fake-cooperative", "fake-http_429"} <= ids
    assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")


def test_cooperative_propose_heuristic(srv):
    state = propose_state()
    resp = run(call(srv, state))
    ans = json.loads(content_of(resp))
    assert_legal_proposal(ans, state, "propose")
    # Most surplus: wood (6 held, 2 needed); most needed from partner: stone.
    assert ans["give"] == {"resource": "wood", "quantity": 1}
    assert ans["receive"] == {"resource": "stone", "quantity": 1}
    # LiteLLM strips "openai/": the server saw the bare model name
    assert srv.requests[-1]["model"] == "fake-cooperative"
    assert srv.count == 1


def test_cooperative_propose_follows_advice(srv):
    advice = {
        "initiator_gives": {"resource": "wheat", "quantity": 2},
        "responder_gives": {"resource": "ore", "quantity": 1},
        "valuations": {r: 1.0 for r in RESOURCES},
    }
    state = propose_state(advice=advice)
    ans = json.loads(content_of(run(call(srv, state))))
    assert_legal_proposal(ans, state, "propose")
    assert ans["give"] == advice["initiator_gives"]
    assert ans["receive"] == advice["responder_gives"]


def test_cooperative_propose_ignores_illegal_advice(srv):
    advice = {
        "initiator_gives": {"resource": "ore", "quantity": 1},  # I hold 0 ore
        "responder_gives": {"resource": "stone", "quantity": 1},
        "valuations": {r: 1.0 for r in RESOURCES},
    }
    state = propose_state(advice=advice)
    ans = json.loads(content_of(run(call(srv, state))))
    assert_legal_proposal(ans, state, "propose")


def test_cooperative_reply_accepts_needed_resource(srv):
    # I need stone (0 < 3) -> accept even though I give 2 wheat for 1 stone.
    state = reply_state({"resource": "wheat", "quantity": 2}, {"resource": "stone", "quantity": 1})
    ans = json.loads(content_of(run(call(srv, state))))
    assert ans["action"] == "accept" and ans["message"]


def test_cooperative_reply_accepts_fair_quantity(srv):
    state = reply_state({"resource": "wood", "quantity": 1}, {"resource": "ore", "quantity": 1})
    ans = json.loads(content_of(run(call(srv, state))))
    assert ans["action"] == "accept"


def test_cooperative_reply_counters_bad_offer(srv):
    # Give 3 wood for 1 wheat (not needed, receive < give) -> counter with a legal proposal.
    state = reply_state({"resource": "wood", "quantity": 3}, {"resource": "wheat", "quantity": 1})
    ans = json.loads(content_of(run(call(srv, state))))
    assert_legal_proposal(ans, state, "counter")


def test_cooperative_reply_counter_follows_advice_as_responder(srv):
    advice = {
        "initiator_gives": {"resource": "ore", "quantity": 1},  # partner (initiator) gives ore
        "responder_gives": {"resource": "wheat", "quantity": 1},  # I (responder) give wheat
        "valuations": {r: 1.0 for r in RESOURCES},
    }
    state = reply_state({"resource": "wood", "quantity": 3}, {"resource": "wheat", "quantity": 1}, advice=advice)
    ans = json.loads(content_of(run(call(srv, state))))
    assert_legal_proposal(ans, state, "counter")
    assert ans["give"] == advice["responder_gives"] and ans["receive"] == advice["initiator_gives"]


def test_cooperative_reply_rejects_when_counter_not_legal(srv):
    state = reply_state(
        {"resource": "wood", "quantity": 3}, {"resource": "wheat", "quantity": 1}, legal=("accept", "reject")
    )
    ans = json.loads(content_of(run(call(srv, state))))
    assert ans["action"] == "reject"


def test_cooperative_reply_does_not_accept_unpayable_offer(srv):
    state = reply_state({"resource": "ore", "quantity": 1}, {"resource": "stone", "quantity": 1})  # I hold 0 ore
    ans = json.loads(content_of(run(call(srv, state))))
    assert ans["action"] in ("counter", "reject")


def test_cooperative_advise(srv):
    state = advise_state()
    ans = json.loads(content_of(run(call(srv, state))))
    assert set(ans["valuations"]) == set(RESOURCES)
    assert all(isinstance(v, float) and v > 0 for v in ans["valuations"].values())
    assert_legal_leg(ans["initiator_gives"], state["initiator"]["holdings"])
    assert_legal_leg(ans["responder_gives"], state["responder"]["holdings"])
    assert ans["initiator_gives"]["resource"] != ans["responder_gives"]["resource"]
    assert isinstance(ans["note"], str) and ans["note"]


def test_deterministic_and_usage(srv):
    state = propose_state()
    r1 = run(call(srv, state))
    r2 = run(call(srv, state))
    assert content_of(r1) == content_of(r2)
    assert r1.id == r2.id and r1.id.startswith("chatcmpl-fake")
    assert srv.requests[0] == srv.requests[1]
    text = "".join(m["content"] for m in messages_for(state))
    assert r1.usage.prompt_tokens == len(text) // 4 > 0
    assert r1.usage.completion_tokens == len(content_of(r1)) // 4 > 0
    assert r1.usage.total_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens
    assert r1.choices[0].finish_reason == "stop"


def test_response_format_is_recorded_and_ignored(srv):
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "move", "schema": {"type": "object", "properties": {"action": {"type": "string"}}}},
    }
    state = propose_state()
    ans = json.loads(content_of(run(call(srv, state, response_format=schema))))
    assert_legal_proposal(ans, state, "propose")
    assert srv.requests[-1]["response_format"]["type"] == "json_schema"


def test_latency_suffix(srv):
    t0 = time.perf_counter()
    run(call(srv, propose_state(), model="openai/fake-cooperative@300"))
    assert time.perf_counter() - t0 >= 0.3
    assert srv.requests[-1]["model"] == "fake-cooperative@300"


def test_missing_state_block_is_a_400(srv):
    async def go():
        return await litellm.acompletion(
            model="openai/fake-cooperative",
            api_base=srv.base_url,
            api_key=API_KEY,
            messages=[{"role": "user", "content": "no state here"}],
            max_retries=0,
        )

    with pytest.raises(litellm.BadRequestError, match="state block"):
        run(go())


# --------------------------------------------------------------------------- #
# content fault modes
# --------------------------------------------------------------------------- #
def _json_in_prose(text):
    m = re.search(r"\{.*\}", text, re.DOTALL)
    assert m, text
    return json.loads(m.group(0))


def test_invalid_json(srv):
    text = content_of(run(call(srv, propose_state(), model="openai/fake-invalid_json")))
    with pytest.raises(ValueError):
        json.loads(text)
    assert "{" not in text


def test_fenced_json(srv):
    state = propose_state()
    text = content_of(run(call(srv, state, model="openai/fake-fenced_json")))
    assert text.startswith("```json\n") and text.rstrip().endswith("```")
    with pytest.raises(ValueError):
        json.loads(text)
    inner = re.search(r"```json\s*(.*?)```", text, re.DOTALL).group(1)
    assert_legal_proposal(json.loads(inner), state, "propose")


def test_prose_json(srv):
    state = propose_state()
    text = content_of(run(call(srv, state, model="openai/fake-prose_json")))
    with pytest.raises(ValueError):
        json.loads(text)
    assert not text.lstrip().startswith("{") and not text.rstrip().endswith("}")
    assert_legal_proposal(_json_in_prose(text), state, "propose")


@pytest.mark.parametrize("state", [propose_state(), advise_state()], ids=["propose", "advise"])
def test_wrong_schema(srv, state):
    ans = json.loads(content_of(run(call(srv, state, model="openai/fake-wrong_schema"))))
    assert isinstance(ans, dict)
    if state["task"] == "advise":
        assert "valuations" not in ans and not isinstance(ans.get("initiator_gives"), dict)
    else:
        assert "action" not in ans
        assert not isinstance(ans.get("give"), dict)
        assert not isinstance(ans["receive"]["quantity"], int)


ALL_TASKS = [
    propose_state(),
    reply_state({"resource": "wheat", "quantity": 2}, {"resource": "stone", "quantity": 1}),
    advise_state(),
]


def _legs(ans, state):
    """(give leg, receive leg, giver holdings) of a proposal-shaped answer."""
    if state["task"] == "advise":
        return ans["initiator_gives"], ans["responder_gives"], state["initiator"]["holdings"]
    assert ans["action"] == ("counter" if state["task"] == "reply" else "propose")
    return ans["give"], ans["receive"], state["me"]["holdings"]


@pytest.mark.parametrize("state", ALL_TASKS, ids=["propose", "reply", "advise"])
def test_unknown_resource(srv, state):
    ans = json.loads(content_of(run(call(srv, state, model="openai/fake-unknown_resource"))))
    give, receive, _ = _legs(ans, state)
    assert receive["resource"] not in RESOURCES


@pytest.mark.parametrize("state", ALL_TASKS, ids=["propose", "reply", "advise"])
def test_negative_qty(srv, state):
    ans = json.loads(content_of(run(call(srv, state, model="openai/fake-negative_qty"))))
    give, _, _ = _legs(ans, state)
    assert give["quantity"] < 0


@pytest.mark.parametrize("state", ALL_TASKS, ids=["propose", "reply", "advise"])
def test_fractional_qty(srv, state):
    ans = json.loads(content_of(run(call(srv, state, model="openai/fake-fractional_qty"))))
    give, _, _ = _legs(ans, state)
    assert give["quantity"] == 1.5


@pytest.mark.parametrize("state", ALL_TASKS, ids=["propose", "reply", "advise"])
def test_not_owned(srv, state):
    ans = json.loads(content_of(run(call(srv, state, model="openai/fake-not_owned"))))
    give, _, holdings = _legs(ans, state)
    assert give["resource"] in RESOURCES
    assert holdings.get(give["resource"], 0) < give["quantity"]


def test_not_owned_when_holding_everything(srv):
    state = propose_state()
    state["me"]["holdings"] = {r: 2 for r in RESOURCES}
    ans = json.loads(content_of(run(call(srv, state, model="openai/fake-not_owned"))))
    assert ans["give"]["quantity"] > state["me"]["holdings"][ans["give"]["resource"]]


# --------------------------------------------------------------------------- #
# HTTP fault modes -> litellm exception classes (litellm 1.110.2)
# --------------------------------------------------------------------------- #
def test_http_429(srv):
    with pytest.raises(litellm.RateLimitError) as ei:
        run(call(srv, propose_state(), model="openai/fake-http_429"))
    assert ei.value.status_code == 429
    assert srv.count == 1  # max_retries=0: the OpenAI SDK did not retry
    # raw HTTP: OpenAI-style body and Retry-After: 0
    req = urllib.request.Request(
        srv.base_url + "/chat/completions",
        data=json.dumps({"model": "fake-http_429", "messages": messages_for(propose_state())}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(req, timeout=5)
    assert he.value.code == 429 and he.value.headers["Retry-After"] == "0"
    err = json.loads(he.value.read())["error"]
    assert err["code"] == "rate_limit_exceeded" and err["message"]


def test_http_500(srv):
    with pytest.raises(litellm.InternalServerError) as ei:
        run(call(srv, propose_state(), model="openai/fake-http_500"))
    assert ei.value.status_code == 500
    assert srv.count == 1


def test_http_401(srv):
    with pytest.raises(litellm.AuthenticationError) as ei:
        run(call(srv, propose_state(), model="openai/fake-http_401"))
    assert ei.value.status_code == 401


def test_echo_key_leaks_key_into_error_text(srv):
    with pytest.raises(litellm.BadRequestError) as ei:
        run(call(srv, propose_state(), model="openai/fake-echo_key"))
    assert ei.value.status_code == 400
    assert API_KEY in str(ei.value)  # so callers must scrub before storing
    assert srv.headers[-1]["authorization"] == f"Bearer {API_KEY}"


def test_unknown_mode_is_404(srv):
    with pytest.raises(litellm.NotFoundError):
        run(call(srv, propose_state(), model="openai/fake-no_such_mode"))


def test_flaky_429(srv):
    srv.configure(fail_times=2)
    state_a, state_b = propose_state(), advise_state()

    async def go():
        out = []
        for state in (state_a, state_a, state_b, state_a, state_b, state_b):
            try:
                out.append(await call(srv, state, model="openai/fake-flaky_429"))
            except litellm.RateLimitError as e:
                out.append(e)
        return out

    out = run(go())
    kinds = [isinstance(o, litellm.RateLimitError) for o in out]
    # a: 429, 429, ok   b: 429, 429, ok  (counted per distinct prompt)
    assert kinds == [True, True, True, False, True, False]
    assert_legal_proposal(json.loads(content_of(out[3])), state_a, "propose")
    assert srv.count == 6


def test_flaky_429_recovers_with_litellm_retries(srv):
    # num_retries: litellm-level retry (it forces the SDK's max_retries to 0 itself).
    resp = run(call(srv, propose_state(), model="openai/fake-flaky_429", num_retries=2))
    assert json.loads(content_of(resp))["action"] == "propose"
    assert srv.count == 2


def test_default_sdk_retries_when_max_retries_not_passed(srv):
    # Documenting: without max_retries the OpenAI SDK retries 429/500 twice (3 requests).
    async def go():
        return await litellm.acompletion(
            model="openai/fake-http_500", api_base=srv.base_url, api_key=API_KEY, messages=messages_for(propose_state())
        )

    with pytest.raises(litellm.InternalServerError):
        run(go())
    assert srv.count == 3


def test_slow_times_out(srv):
    t0 = time.perf_counter()
    with pytest.raises(litellm.Timeout) as ei:
        run(call(srv, propose_state(), model="openai/fake-slow", timeout=0.5))
    elapsed = time.perf_counter() - t0
    assert 0.4 < elapsed < 5
    # litellm.Timeout subclasses openai.APITimeoutError (-> openai.APIConnectionError),
    # but NOT litellm.APIConnectionError.
    assert isinstance(ei.value, openai.APITimeoutError)
    assert isinstance(ei.value, openai.APIConnectionError)
    assert not isinstance(ei.value, litellm.APIConnectionError)


def test_slow_mode_answers_eventually_when_shortened(srv):
    srv.configure(slow_seconds=0.2)
    resp = run(call(srv, propose_state(), model="openai/fake-slow"))
    assert json.loads(content_of(resp))["action"] == "propose"


def test_connection_refused_is_internal_server_error():
    port = free_port()  # nothing listens here

    async def go():
        return await litellm.acompletion(
            model="openai/fake-cooperative",
            api_base=f"http://127.0.0.1:{port}/v1",
            api_key=API_KEY,
            messages=messages_for(propose_state()),
            max_retries=0,
            timeout=5,
        )

    with pytest.raises(litellm.InternalServerError) as ei:
        run(go())
    # Observed in litellm 1.110.2: NOT an APIConnectionError / Timeout (litellm's or openai's).
    assert not isinstance(ei.value, (litellm.APIConnectionError, openai.APIConnectionError, litellm.Timeout))
    assert isinstance(ei.value, openai.InternalServerError)
    assert "Connection error" in str(ei.value)


def test_configure_switches_default_mid_run(srv):
    state = propose_state()
    assert json.loads(content_of(run(call(srv, state, model="openai/fake"))))["action"] == "propose"
    srv.configure(mode="http_500")
    with pytest.raises(litellm.InternalServerError):
        run(call(srv, state, model="openai/fake"))
    # explicit modes are unaffected by the default
    assert json.loads(content_of(run(call(srv, state, model="openai/fake-cooperative"))))["action"] == "propose"
    srv.configure(mode="cooperative")
    assert json.loads(content_of(run(call(srv, state, model="openai/fake"))))["action"] == "propose"
    with pytest.raises(ValueError):
        srv.configure(mode="bogus")


def test_reset_clears_state(srv):
    run(call(srv, propose_state()))
    srv.configure(mode="http_500", latency_ms=5)
    assert srv.count == 1 and len(srv.requests) == 1
    srv.reset()
    assert srv.count == 0 and srv.requests == [] and srv.mode == "cooperative"


# --------------------------------------------------------------------------- #
# concurrency
# --------------------------------------------------------------------------- #
def test_concurrent_requests_are_not_serialised(srv):
    n = 20

    async def go():
        states = [propose_state(me={**propose_state()["me"], "id": i}) for i in range(n)]
        return await asyncio.gather(*(call(srv, s, model="openai/fake-cooperative@200") for s in states))

    t0 = time.perf_counter()
    results = run(go())
    elapsed = time.perf_counter() - t0
    assert len(results) == n and srv.count == n and len(srv.requests) == n
    assert all(json.loads(content_of(r))["action"] == "propose" for r in results)
    assert elapsed < 2.0, f"{n} x 200 ms took {elapsed:.2f}s: requests were serialised"


# --------------------------------------------------------------------------- #
# cost: unknown models are unpriced unless prices are supplied
# --------------------------------------------------------------------------- #
def test_cost_unmapped_model(srv):
    resp = run(call(srv, propose_state()))
    assert resp._hidden_params.get("response_cost") is None
    with pytest.raises(litellm.exceptions.ModelNotMappedError):
        litellm.completion_cost(completion_response=resp)
    expected = resp.usage.prompt_tokens * 1e-6 + resp.usage.completion_tokens * 2e-6
    cost = litellm.completion_cost(
        completion_response=resp,
        custom_cost_per_token={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
    )
    assert cost == pytest.approx(expected)


def test_cost_per_call_kwargs(srv):
    resp = run(call(srv, propose_state(), input_cost_per_token=1e-6, output_cost_per_token=2e-6))
    expected = resp.usage.prompt_tokens * 1e-6 + resp.usage.completion_tokens * 2e-6
    assert resp._hidden_params["response_cost"] == pytest.approx(expected)


def test_cost_register_model(srv):
    # Registered under the name the server sees (no "openai/"); a latency suffix is part of the name.
    model = "fake-cooperative@1"
    litellm.register_model(
        {model: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "litellm_provider": "openai", "mode": "chat"}}
    )
    resp = run(call(srv, propose_state(), model="openai/" + model))
    expected = resp.usage.prompt_tokens * 1e-6 + resp.usage.completion_tokens * 2e-6
    assert resp._hidden_params["response_cost"] == pytest.approx(expected)
    assert litellm.completion_cost(completion_response=resp) == pytest.approx(expected)


def test_all_modes_listed():
    # MODES is exactly the table of modes the module's docstring documents, in its order, cooperative first.
    import fake_llm_server

    lines = fake_llm_server.__doc__.split("Modes (see ``MODES``):")[1].splitlines()
    rules = [k for k, line in enumerate(lines) if line.startswith("=====")]
    documented = [line.split()[0] for line in lines[rules[0] + 1:rules[1]] if line and not line.startswith(" ")]
    assert list(MODES) == documented and MODES[0] == "cooperative" and len(set(MODES)) == len(MODES)
