"""Local OpenAI-compatible servers (llama.cpp, vLLM, Ollama, LM Studio): the reply's shape is asked for,
a server that refuses a format gets a lesser one, timeouts and 429s lower the requests in flight, a parroted
example or a cut-off reply never passes as a decision, and the CLI has the flags to tune all of it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_llm_server import FakeLLMServer
from test_llm_runs import assert_conserved, llm_run, rows

from commonpool import SimulationConfig, run_simulation
from commonpool.cli import main as cli_main
from commonpool.engine import RunProgress
from commonpool.llm.chat import CallRecord, ChatRequest, Reply
from commonpool.llm.limit import LimitedModel
from commonpool.llm.workers import worker_count
from commonpool.protocol import ParticipantReply
from commonpool.store import Store


def formats(server: FakeLLMServer) -> list[str | None]:
    return [(body.get("response_format") or {}).get("type") for body in server.requests]


def test_auto_sends_the_protocols_schema_to_an_api_base_server(fake_llm: FakeLLMServer, store: Store) -> None:
    """LiteLLM cannot know a custom model takes a schema; a local server does, so auto sends it."""
    result = llm_run(fake_llm, store, facilitator_model=None)
    assert result.status == "completed"
    assert set(formats(fake_llm)) == {"json_schema"}
    schema = fake_llm.requests[0]["response_format"]["json_schema"]
    assert schema["name"] == "ParticipantReply" and schema["schema"] == ParticipantReply.model_json_schema()


@pytest.mark.parametrize(("mode", "lesser"), [("no_schema", "json_object"), ("no_format", None)])
def test_a_server_that_refuses_the_schema_gets_a_lesser_format_and_is_remembered(
    fake_llm: FakeLLMServer, store: Store, mode: str, lesser: str | None
) -> None:
    result = llm_run(fake_llm, store, mode, facilitator_model=None, concurrency=1, min_exchanges=12, max_exchanges=12)
    assert result.status == "completed"
    assert rows(store, "SELECT DISTINCT source FROM offers WHERE run_id = ?", result.run_id) == [("llm",)]
    sent = formats(fake_llm)
    refused = [f for f in sent if f is not None and f != lesser]
    # Each worker process learns once (no_format also tries json_object once); after that only the lesser format goes out.
    assert 0 < len(refused) <= (2 if mode == "no_format" else 1) * max(1, worker_count())
    assert sent[-10:] == [lesser] * 10
    notes = rows(store, "SELECT count(*) FROM llm_calls WHERE run_id = ? AND error LIKE '%refused response_format%'", result.run_id)
    assert notes == [(len(refused),)]
    assert_conserved(store, result.run_id)


@pytest.mark.parametrize(("setting", "sent"), [("off", None), ("json_object", "json_object"), ("json_schema", "json_schema")])
def test_structured_output_can_be_chosen(fake_llm: FakeLLMServer, store: Store, setting: str, sent: str | None) -> None:
    result = llm_run(fake_llm, store, structured_output=setting)
    assert result.status == "completed"
    assert set(formats(fake_llm)) == {sent}


def test_a_reply_that_echoes_the_prompts_example_is_not_a_decision(fake_llm: FakeLLMServer, store: Store) -> None:
    """The example used to name real resources (books, tools), so a parroted example passed as the model's choice."""
    result = llm_run(fake_llm, store, "echo_example", facilitator_model="openai/fake-echo_example")
    assert result.status == "completed"
    assert rows(store, "SELECT DISTINCT source FROM offers WHERE run_id = ?", result.run_id) == [("fallback",)]
    assert rows(store, "SELECT DISTINCT source FROM advice WHERE run_id = ?", result.run_id) == [("fallback",)]
    system = fake_llm.requests[0]["messages"][0]["content"]
    assert "placeholders" in system and '"books"' not in system
    assert_conserved(store, result.run_id)


def test_a_cut_off_reply_records_why_it_ended_and_says_so(fake_llm: FakeLLMServer, store: Store) -> None:
    result = llm_run(fake_llm, store, "length", facilitator_model=None)
    assert result.status == "completed"
    reasons = rows(store, "SELECT DISTINCT finish_reason FROM llm_calls WHERE run_id = ?", result.run_id)
    assert reasons == [("length",)]
    fallbacks = rows(store, "SELECT DISTINCT fallback_reason FROM offers WHERE run_id = ?", result.run_id)
    assert all("cut off at 400 tokens (--llm-max-tokens)" in reason for (reason,) in fallbacks)


def test_finish_reason_is_recorded_for_answers_and_kept_in_the_cache(fake_llm: FakeLLMServer, store: Store) -> None:
    llm_run(fake_llm, store, simulation_id="first")
    llm_run(fake_llm, store, simulation_id="again")
    for run_id in ("first", "again"):
        assert rows(store, "SELECT DISTINCT finish_reason FROM llm_calls WHERE run_id = ?", run_id) == [("stop",)]


def test_max_tokens_is_settable(fake_llm: FakeLLMServer, store: Store) -> None:
    llm_run(fake_llm, store, llm_max_tokens=123)
    assert {body["max_tokens"] for body in fake_llm.requests} == {123}


def test_runs_stored_before_finish_reason_existed_still_read(fake_llm: FakeLLMServer, store: Store) -> None:
    llm_run(fake_llm, store, simulation_id="old")
    llm_run(fake_llm, store, simulation_id="new")
    folder = store.root / "runs" / "old"
    info = json.loads((folder / "run.json").read_text())
    entry = info["manifest"]["tables"]["llm_calls"]
    path = folder / "llm_calls" / entry["base"]
    pq.write_table(pq.read_table(path).drop(["finish_reason"]), path)
    entry["base_bytes"] = path.stat().st_size
    (folder / "run.json").write_text(json.dumps(info))
    read = dict(rows(store, "SELECT run_id, count(finish_reason) FROM llm_calls WHERE run_id <> ? GROUP BY 1", ""))
    assert read["old"] == 0 and read["new"] > 0


class Congested:
    """A model whose calls meet a timeout while `congested` is set."""

    def __init__(self) -> None:
        self.congested = False

    async def complete(self, request: ChatRequest, log: list[CallRecord], attempt: int = 1) -> Reply:
        await asyncio.sleep(0)
        record = CallRecord(model=request.model, congestion=self.congested)
        log.append(record)
        return Reply("{}", record)


def test_timeouts_halve_the_requests_in_flight_and_successes_raise_them_one_at_a_time() -> None:
    inner = Congested()
    limited = LimitedModel(inner, 16)
    request = ChatRequest(model="m", messages=(("user", "hi"),))

    async def calls(n: int) -> None:
        await asyncio.gather(*(limited.complete(request, []) for _ in range(n)))

    inner.congested = True
    asyncio.run(calls(16))  # one burst of timeouts is one signal
    assert limited.state() == {"in_flight_limit": 8, "concurrency": 16, "limit_cuts": 1}
    asyncio.run(calls(8))
    assert limited.state()["in_flight_limit"] == 4
    inner.congested = False
    asyncio.run(calls(4))  # one window of successes: one more
    assert limited.state()["in_flight_limit"] == 5
    asyncio.run(calls(400))
    assert limited.state()["in_flight_limit"] == 16


def test_rate_limits_lower_the_requests_in_flight_and_progress_says_so(fake_llm: FakeLLMServer, store: Store) -> None:
    seen: list[dict[str, float]] = []
    fake_llm.configure(fail_times=1)
    config = SimulationConfig(
        seed=4, num_participants=16, min_exchanges=16, max_exchanges=16, model="openai/fake-flaky_429",
        facilitator_model=None, api_base=fake_llm.base_url, llm_max_retries=2, concurrency=8,
    )
    result = run_simulation(config, store, progress=lambda p: seen.append(p.llm))
    assert result.status == "completed"
    assert seen[0]["limit_cuts"] >= 1 and seen[0]["in_flight_limit"] < 8 and seen[0]["concurrency"] == 8


def test_the_cli_takes_the_local_server_flags(fake_llm: FakeLLMServer, store: Store) -> None:
    code = cli_main([
        "run", "--store", str(store.root), "--simulation-id", "local", "--num-participants", "4", "--min-exchanges", "2",
        "--max-exchanges", "2", "--model", "openai/fake", "--api-base", fake_llm.base_url, "--structured-output", "json_object",
        "--llm-timeout", "7.5", "--llm-max-tokens", "200", "--no-progress",
    ])
    assert code == 0
    config = store.run("local").meta["config"]
    assert (config["structured_output"], config["llm_timeout_s"], config["llm_max_tokens"]) == ("json_object", 7.5, 200)
    assert {(b["response_format"]["type"], b["max_tokens"]) for b in fake_llm.requests} == {("json_object", 200)}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--structured-output", "xml", "--structured-output: 'xml' is not allowed; choose one of: auto, json_schema, json_object, off"),
        ("--llm-timeout", "0", "--llm-timeout"),
        ("--llm-max-tokens", "5", "--llm-max-tokens"),
    ],
)
def test_bad_local_server_flags_are_refused_before_anything_is_written(
    fake_llm: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    store = tmp_path / "store"
    code = cli_main(["--store", str(store), "run", "--model", "openai/fake", "--api-base", fake_llm.base_url, flag, value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not store.exists() and fake_llm.count == 0
