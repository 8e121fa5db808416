"""LLM runs against the fake server: every misbehaviour ends in a finished (or cleanly failed) run
that conserves every unit and shows the fault in llm_calls; caching, concurrency and resume replay exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer, extract_state, free_port

from commonpool import SimulationConfig, run_simulation
from commonpool.cli import main as cli_main
from commonpool.engine import RunProgress, RunResult
from commonpool.protocol import FacilitatorReply, ParticipantReply
from commonpool.resume import resume_simulation
from commonpool.store import Store

CANARY = "sk-canary-0a1b2c3d4e5f60718293a4b5"
ROOT = Path(__file__).resolve().parents[1]
# Tables a run's decisions determine; llm_calls differs between runs by latency and cached.
DECIDED = {
    "exchanges": "exchange_id",
    "offers": "exchange_id, turn",
    "advice": "exchange_id",
    "transfers": "exchange_id, from_id",
}


def llm_run(server: FakeLLMServer, store: Store, mode: str = "cooperative", **fields: object) -> RunResult:
    base: dict[str, object] = {
        "seed": 4, "num_participants": 6, "min_exchanges": 9, "max_exchanges": 9,
        "model": f"openai/fake-{mode}", "facilitator_model": "openai/fake", "api_base": server.base_url,
        "llm_max_retries": 1, "llm_timeout_s": 5, "cost_per_1k_prompt_tokens": 0.001,
        "cost_per_1k_completion_tokens": 0.002,
    }
    base.update(fields)
    return run_simulation(SimulationConfig(**base), store)


def rows(store: Store, sql: str, run_id: str) -> list[tuple]:
    return store.connect().execute(sql, parameters=[run_id]).fetchall()


def decided_tables(store: Store, run_id: str) -> dict[str, list[tuple]]:
    con = store.connect()
    return {
        table: con.execute(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY {order}", [run_id]).fetchall()
        for table, order in DECIDED.items()
    }


def assert_conserved(store: Store, run_id: str) -> None:
    """initial_holdings + transfers in - out = final_holdings >= 0; only accepted swaps move units, two legs each."""
    con = store.connect()
    unbalanced = con.execute(
        """SELECT count(*) FROM (SELECT resource, sum(quantity) q FROM initial_holdings WHERE run_id = $r GROUP BY ALL) i
           FULL JOIN (SELECT resource, sum(quantity) q FROM final_holdings WHERE run_id = $r GROUP BY ALL) f USING (resource)
           WHERE i.q IS DISTINCT FROM f.q""",
        {"r": run_id},
    ).fetchone()[0]
    negative = con.execute("SELECT count(*) FROM final_holdings WHERE run_id = $r AND quantity < 0", {"r": run_id}).fetchone()[0]
    legs = con.execute(
        """SELECT count(*) FROM exchanges e LEFT JOIN (SELECT exchange_id, count(*) n FROM transfers WHERE run_id = $r GROUP BY 1) t
           USING (exchange_id) WHERE e.run_id = $r AND coalesce(t.n, 0) <> CASE WHEN e.outcome = 'accepted' THEN 2 ELSE 0 END""",
        {"r": run_id},
    ).fetchone()[0]
    assert (unbalanced, negative, legs) == (0, 0, 0)


def test_cooperative_run_decides_by_model_and_records_every_call(fake_llm: FakeLLMServer, store: Store) -> None:
    result = llm_run(fake_llm, store)
    assert result.status == "completed" and result.exchanges == 9
    sources = dict(rows(store, "SELECT source, count(*) FROM offers WHERE run_id = ? GROUP BY 1", result.run_id))
    assert set(sources) == {"llm"}
    calls = rows(store, "SELECT count(*), sum(cost_usd), count(error), min(call_id), max(call_id) FROM llm_calls WHERE run_id = ?", result.run_id)[0]
    assert calls[0] == fake_llm.count == result.llm["llm_calls"]
    assert calls[1] == pytest.approx(result.llm["cost_usd"]) and calls[1] > 0
    assert calls[2:] == (0, 1, calls[0])
    run = store.connect().execute("SELECT llm_calls, cost_usd, prompt_tokens FROM runs WHERE run_id = ?", [result.run_id]).fetchone()
    assert run[0] == calls[0] and run[1] == pytest.approx(calls[1]) and run[2] > 0
    words = rows(store, "SELECT message FROM offers WHERE run_id = ? AND turn = 1", result.run_id)
    assert all(m.startswith("How about I give you") for (m,) in words)  # the model's own words
    assert_conserved(store, result.run_id)


def test_prompts_carry_the_state_block_memory_and_fenced_user_text(fake_llm: FakeLLMServer, store: Store) -> None:
    llm_run(fake_llm, store, min_exchanges=12, max_exchanges=12)
    participant = [r for r in fake_llm.requests if "legal_actions" in r["messages"][-1]["content"]]
    state = json.loads(participant[-1]["messages"][-1]["content"].split("```json\n")[1].split("\n```")[0])
    assert {"me", "partner", "advice", "legal_actions", "resources"} <= set(state)
    assert "traits" in state["me"]["personality"] and state["me"]["notes"]
    assert any(r["messages"][-1]["content"].count('"memory": [{') for r in participant)  # later rounds remember
    assert "treat them as facts" in participant[0]["messages"][0]["content"]


@pytest.mark.parametrize("mode", ["fenced_json", "prose_json"])
def test_json_wrapped_in_fences_or_prose_is_accepted(fake_llm: FakeLLMServer, store: Store, mode: str) -> None:
    result = llm_run(fake_llm, store, mode)
    assert result.status == "completed"
    assert rows(store, "SELECT DISTINCT source FROM offers WHERE run_id = ?", result.run_id) == [("llm",)]
    assert_conserved(store, result.run_id)


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("invalid_json", "no JSON object"),
        ("wrong_schema", "Field required"),
        ("unknown_resource", "unknown resource 'unobtainium'"),
        ("negative_qty", "greater than or equal to 1"),
        ("fractional_qty", "valid integer"),
        ("not_owned", "cannot give"),
    ],
)
def test_a_bad_reply_gets_one_repair_then_the_rules_decide(fake_llm: FakeLLMServer, store: Store, mode: str, problem: str) -> None:
    result = llm_run(fake_llm, store, mode)
    assert result.status == "completed" and result.exchanges == 9
    fallbacks = rows(store, "SELECT source, fallback_reason, turn FROM offers WHERE run_id = ?", result.run_id)
    assert {s for s, _, _ in fallbacks} == {"fallback"}
    assert all("after a repair request" in reason for _, reason, _ in fallbacks)
    # On the last turn the fake's forced counter is itself illegal, which is reported first.
    assert all(problem in reason for _, reason, turn in fallbacks if turn < 6)
    per_turn = rows(
        store,
        "SELECT count(*), count(error) FILTER (WHERE error LIKE 'invalid reply:%') FROM llm_calls WHERE run_id = ? AND role <> 'facilitator'",
        result.run_id,
    )[0]
    assert per_turn == (2 * len(fallbacks), 2 * len(fallbacks))  # the request and its repair, both faulted
    assert_conserved(store, result.run_id)


def test_rate_limits_are_retried_until_they_pass(fake_llm: FakeLLMServer, store: Store) -> None:
    fake_llm.configure(fail_times=1)
    result = llm_run(fake_llm, store, "flaky_429", llm_max_retries=2)
    assert result.status == "completed"
    assert rows(store, "SELECT DISTINCT source FROM offers WHERE run_id = ?", result.run_id) == [("llm",)]
    attempts = rows(store, "SELECT attempt, count(error) > 0 FROM llm_calls WHERE run_id = ? AND role <> 'facilitator' GROUP BY 1 ORDER BY 1", result.run_id)
    assert attempts == [(1, True), (2, False)]
    assert_conserved(store, result.run_id)


@pytest.mark.parametrize(("mode", "setting", "source"), [("http_429", "fallback", "fallback"), ("http_500", "fail", None)])
def test_persistent_provider_errors_fall_back_or_mark_the_exchange(
    fake_llm: FakeLLMServer, store: Store, mode: str, setting: str, source: str | None
) -> None:
    result = llm_run(fake_llm, store, mode, on_llm_failure=setting)
    assert result.status == "completed"
    offers = rows(store, "SELECT DISTINCT source FROM offers WHERE run_id = ?", result.run_id)
    assert offers == [(source,)]
    if source is None:
        assert rows(store, "SELECT DISTINCT outcome FROM exchanges WHERE run_id = ?", result.run_id) == [("error",)]
    errors = rows(store, "SELECT attempt, error FROM llm_calls WHERE run_id = ? AND role = 'initiator'", result.run_id)
    assert {a for a, _ in errors} == {1, 2} and all(e and ("RateLimit" in e or "InternalServer" in e) for _, e in errors)
    assert_conserved(store, result.run_id)


def test_slow_replies_time_out_and_the_run_goes_on(fake_llm: FakeLLMServer, store: Store) -> None:
    fake_llm.configure(slow_seconds=2)
    started = time.perf_counter()
    result = llm_run(
        fake_llm, store, "slow", num_participants=4, min_exchanges=2, max_exchanges=2, llm_timeout_s=0.3,
        llm_max_retries=0, on_llm_failure="fallback",
    )
    assert result.status == "completed" and time.perf_counter() - started < 10
    assert all("Timeout" in e for (e,) in rows(store, "SELECT error FROM llm_calls WHERE run_id = ? AND role <> 'facilitator'", result.run_id))
    assert_conserved(store, result.run_id)


@pytest.mark.parametrize("mode", ["http_401", "refused"])
def test_auth_errors_and_refused_connections_fail_the_run_cleanly(fake_llm: FakeLLMServer, store: Store, mode: str) -> None:
    fields: dict[str, object] = {"facilitator_model": None}
    if mode == "refused":
        fields["api_base"] = f"http://127.0.0.1:{free_port()}/v1"
    result = llm_run(fake_llm, store, "http_401" if mode == "http_401" else "cooperative", **fields)
    assert result.status == "failed" and result.error
    info = store.run(result.run_id)
    assert info.status == "failed" and info.meta["error"] == result.error
    assert ("Authentication" if mode == "http_401" else "Connection error") in result.error
    assert rows(store, "SELECT count(*) FROM llm_calls WHERE run_id = ? AND error IS NOT NULL", result.run_id)[0][0] > 0
    assert_conserved(store, result.run_id)


def test_refused_connection_with_fallback_completes_on_rules(fake_llm: FakeLLMServer, store: Store) -> None:
    result = llm_run(fake_llm, store, api_base=f"http://127.0.0.1:{free_port()}/v1", on_llm_failure="fallback")
    assert result.status == "completed"
    assert rows(store, "SELECT DISTINCT source FROM offers WHERE run_id = ?", result.run_id) == [("fallback",)]
    assert rows(store, "SELECT DISTINCT source FROM advice WHERE run_id = ?", result.run_id) == [("fallback",)]


def test_budget_stops_the_run_before_it_spends_more(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    unlimited = llm_run(fake_llm, Store(tmp_path / "a"), min_exchanges=15, max_exchanges=15)
    budget = unlimited.llm["cost_usd"] / 2
    store = Store(tmp_path / "b")  # its own cache, so the calls cost again
    result = llm_run(fake_llm, store, min_exchanges=15, max_exchanges=15, budget_usd=budget)
    assert result.status == "failed" and "budget" in (result.error or "")
    assert 0 < result.exchanges < 15 and result.llm["cost_usd"] <= budget
    assert_conserved(store, result.run_id)


def test_a_repeated_run_is_answered_from_the_cache_with_identical_tables(fake_llm: FakeLLMServer, store: Store) -> None:
    first = llm_run(fake_llm, store, simulation_id="first")
    calls = fake_llm.count
    again = llm_run(fake_llm, store, simulation_id="again")
    assert fake_llm.count == calls
    assert decided_tables(store, "first") == decided_tables(store, "again")
    assert rows(store, "SELECT bool_and(cached), sum(cost_usd) FROM llm_calls WHERE run_id = ?", "again") == [(True, 0.0)]
    assert again.llm["llm_calls"] == first.llm["llm_calls"]


def test_a_cached_rerun_never_imports_litellm(fake_llm: FakeLLMServer, store: Store) -> None:
    llm_run(fake_llm, store, simulation_id="warm")
    script = (
        "import sys; from commonpool import SimulationConfig, run_simulation; "
        "c = SimulationConfig.model_validate_json(sys.argv[1]); r = run_simulation(c, sys.argv[2]); "
        "print(r.status, 'litellm' in sys.modules)"
    )
    config = store.run("warm").meta["config"] | {"simulation_id": "cold"}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config), str(store.root)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.stdout.split() == ["completed", "False"], out.stderr


def test_results_do_not_depend_on_concurrency(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    fake_llm.configure(latency_ms=5)
    one = llm_run(fake_llm, Store(tmp_path / "one"), concurrency=1, num_participants=10, min_exchanges=15, max_exchanges=15)
    many = llm_run(fake_llm, Store(tmp_path / "many"), concurrency=20, num_participants=10, min_exchanges=15, max_exchanges=15)
    assert decided_tables(Store(tmp_path / "one"), one.run_id) == decided_tables(Store(tmp_path / "many"), many.run_id)
    order = "SELECT exchange_id, turn, role, participant_id FROM llm_calls WHERE run_id = ? ORDER BY call_id"
    assert rows(Store(tmp_path / "one"), order, one.run_id) == rows(Store(tmp_path / "many"), order, many.run_id)


def test_an_exchange_does_not_wait_for_the_rounds_slowest_answer(fake_llm: FakeLLMServer, store: Store) -> None:
    """Exchanges of a round negotiate on their own: a fast pair's reply goes out while a slow model is still thinking."""
    slow_s = 1.5
    slow, fast = f"fake-cooperative@{slow_s * 1000:.0f}", "fake-cooperative"
    result = llm_run(
        fake_llm, store, model=None, facilitator_model=None, num_participants=12, min_exchanges=6, max_exchanges=6,
        personality_models={"cautious": f"openai/{slow}", "generous": f"openai/{fast}", "strategic": f"openai/{fast}"},
    )
    assert result.status == "completed" and result.exchanges == 6
    calls = [(body["model"], extract_state(body["messages"])["task"], at) for body, at in zip(fake_llm.requests, fake_llm.arrivals)]
    slow_proposals = [at for model, task, at in calls if model == slow and task == "propose"]
    fast_replies = [at for model, task, at in calls if model == fast and task == "reply"]
    assert slow_proposals and fast_replies, calls  # the round has both, or this test proves nothing
    # In lockstep every reply would wait for the slow proposal's answer, slow_s after it went out.
    assert min(fast_replies) < min(slow_proposals) + slow_s / 2, calls
    assert_conserved(store, result.run_id)


def test_a_model_that_takes_a_schema_is_sent_the_protocols_schema_and_priced_from_the_list(
    fake_llm: FakeLLMServer, store: Store
) -> None:
    """gpt-4o-mini (served here by the fake server) takes response_format and is in LiteLLM's price list."""
    result = llm_run(
        fake_llm, store, model="openai/gpt-4o-mini", facilitator_model="openai/gpt-4o-mini",
        cost_per_1k_prompt_tokens=None, cost_per_1k_completion_tokens=None,
    )
    assert result.status == "completed"
    sent = {body["response_format"]["json_schema"]["name"]: body["response_format"] for body in fake_llm.requests}
    assert set(sent) == {"ParticipantReply", "FacilitatorReply"}
    assert sent["ParticipantReply"]["type"] == "json_schema"
    assert sent["ParticipantReply"]["json_schema"]["schema"] == ParticipantReply.model_json_schema()
    assert sent["FacilitatorReply"]["json_schema"]["schema"] == FacilitatorReply.model_json_schema()
    calls, priced, cheapest = rows(
        store, "SELECT count(*), count(cost_usd), min(cost_usd) FROM llm_calls WHERE run_id = ? AND NOT cached", result.run_id
    )[0]
    assert calls == priced > 0 and cheapest > 0
    assert result.llm["cost_usd"] > 0
    assert_conserved(store, result.run_id)


def test_rules_and_models_mix_by_personality(fake_llm: FakeLLMServer, store: Store) -> None:
    result = llm_run(fake_llm, store, model=None, facilitator_model=None, personality_models={"strategic": "openai/fake"})
    brains = dict(rows(store, "SELECT personality, any_value(brain) FROM participants WHERE run_id = ? GROUP BY 1", result.run_id))
    assert brains["strategic"] == "openai/fake" and brains["cautious"] == "rules"
    by_speaker = rows(
        store,
        "SELECT DISTINCT p.brain = 'rules', o.source FROM offers o JOIN participants p ON p.run_id = o.run_id AND p.participant_id = o.speaker_id WHERE o.run_id = ?",
        result.run_id,
    )
    assert sorted(by_speaker) == [(False, "llm"), (True, "rules")]


def test_a_failed_run_resumes_to_the_same_tables_without_repeat_calls(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    whole_store, store = Store(tmp_path / "whole"), Store(tmp_path / "broken")
    whole = llm_run(fake_llm, whole_store, model="openai/fake", min_exchanges=15, max_exchanges=15)

    def break_after_two_rounds(progress: RunProgress) -> None:
        if progress.rounds == 2:
            fake_llm.configure(mode="http_401")

    config = SimulationConfig(**whole_store.run(whole.run_id).meta["config"] | {"simulation_id": "broken"})
    failed = run_simulation(config, store, progress=break_after_two_rounds)
    assert failed.status == "failed" and failed.exchanges == 6
    last_call = rows(store, "SELECT max(call_id) FROM llm_calls WHERE run_id = ?", "broken")[0][0]
    fake_llm.configure(mode="cooperative")
    before = fake_llm.count

    resumed = resume_simulation("broken", store)
    assert resumed.status == "completed" and resumed.exchanges == 15
    assert decided_tables(store, "broken") == decided_tables(whole_store, whole.run_id)
    con = store.connect()
    first_asked, paid = con.execute(
        "SELECT min(exchange_id), count(*) FILTER (WHERE NOT cached) FROM llm_calls WHERE run_id = 'broken' AND call_id > ?",
        [last_call],
    ).fetchone()
    assert first_asked > failed.exchanges  # nothing asked again for a recorded round
    assert paid == fake_llm.count - before
    assert store.run("broken").meta["exchanges_recorded"] == 15
    assert_conserved(store, "broken")


def test_a_killed_run_resumes_to_completion(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    args = [
        sys.executable, "-m", "commonpool", "run", "--store", str(store.root), "--simulation-id", "killed", "--seed", "4",
        "--num-participants", "6", "--min-exchanges", "30", "--max-exchanges", "30", "--model", "openai/fake@40",
        "--api-base", fake_llm.base_url, "--no-progress",
    ]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_json = store.root / "runs" / "killed" / "run.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if run_json.exists() and json.loads(run_json.read_text()).get("exchanges_recorded", 0) >= 9:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert store.run("killed").status == "interrupted"
    recorded = store.run("killed").meta["exchanges_recorded"]
    assert 9 <= recorded < 30
    before = store.run("killed").meta["duration_s"]  # as of its last flush
    assert before > 0
    result = resume_simulation("killed", store)
    assert result.status == "completed" and result.exchanges == 30
    assert store.run("killed").meta["duration_s"] >= before + result.seconds * 0.9  # both parts, not only the resumed one
    ids = [i for (i,) in rows(store, "SELECT exchange_id FROM exchanges WHERE run_id = ? ORDER BY 1", "killed")]
    assert ids == list(range(1, 31))
    assert_conserved(store, "killed")


def test_the_canary_key_never_reaches_the_store_or_the_terminal(
    fake_llm: FakeLLMServer, store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    code = cli_main([
        "run", "--store", str(store.root), "--simulation-id", "canary", "--seed", "4", "--num-participants", "4",
        "--min-exchanges", "2", "--max-exchanges", "2", "--model", "openai/fake-echo_key", "--api-base", fake_llm.base_url,
        "--facilitator-model", "openai/fake-http_401", "--no-progress",
    ])
    out = capsys.readouterr()
    assert code == 1 and "failed" in out.out
    assert any(CANARY in json.dumps(h) for h in fake_llm.headers)  # it was sent, and echoed back
    stored = "".join(p.read_bytes().decode("latin-1") for p in (store.root / "runs" / "canary").rglob("*") if p.is_file())
    errors = rows(store, "SELECT string_agg(error, ' ') FROM llm_calls WHERE run_id = ?", "canary")[0][0] or ""
    assert CANARY not in out.out + out.err + stored + errors
    echo = cli_main(["run", "--store", str(store.root), "--simulation-id", "echo", "--seed", "4", "--num-participants", "4",
                     "--min-exchanges", "2", "--max-exchanges", "2", "--model", "openai/fake-echo_key",
                     "--api-base", fake_llm.base_url, "--no-progress"])
    out = capsys.readouterr()
    reasons = rows(store, "SELECT string_agg(fallback_reason, ' ') || string_agg(error, ' ') FROM offers, llm_calls WHERE offers.run_id = ? AND llm_calls.run_id = offers.run_id", "echo")[0][0]
    assert echo == 0 and "Authorization header was: Bearer [redacted]" in reasons
    assert CANARY not in out.out + out.err + reasons


@pytest.mark.parametrize("flag", ["--model", "--facilitator-model"])
def test_a_missing_key_refuses_the_run_before_anything_is_written(
    fake_llm: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    store = tmp_path / "store"
    code = cli_main(["--store", str(store), "run", flag, "gpt-4o-mini", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"{flag}: gpt-4o-mini needs OPENAI_API_KEY" in err, err
    assert not (store / "runs").exists() and fake_llm.count == 0


def test_a_model_on_a_keyless_local_server_needs_no_key(fake_llm: FakeLLMServer, tmp_path: Path) -> None:
    store = tmp_path / "store"
    code = cli_main(["--store", str(store), "run", "--model", "openai/fake", "--api-base", fake_llm.base_url,
                     "--num-participants", "4", "--min-exchanges", "2", "--max-exchanges", "2", "--no-progress"])
    assert code == 0 and fake_llm.count > 0


def test_a_key_missing_at_call_time_is_fatal_not_retried() -> None:
    """The OpenAI SDK's "Missing credentials" reaches LiteLLM's caller as a 500, which used to be retried 3 times."""
    from test_llm_layers import complete, request

    from commonpool.llm.client import LiteLLMModel
    from commonpool.llm.errors import CredentialsError
    from commonpool.llm.retry import RetryModel

    os.environ.pop("OPENAI_API_KEY", None)
    outcome, log = complete(RetryModel(LiteLLMModel(None, 5.0), max_retries=3, base_delay_s=0), request("gpt-4o-mini"))
    assert isinstance(outcome, CredentialsError) and "OPENAI_API_KEY" in str(outcome)
    assert len(log) == 1


def test_a_rejected_key_fails_the_run_even_in_fallback_mode_without_retries(fake_llm: FakeLLMServer, store: Store) -> None:
    result = llm_run(fake_llm, store, "http_401", on_llm_failure="fallback", llm_max_retries=3)
    assert result.status == "failed" and "Authentication" in (result.error or "")
    assert rows(store, "SELECT DISTINCT attempt FROM llm_calls WHERE run_id = ?", result.run_id) == [(1,)]
    assert result.exchanges == 0
    assert_conserved(store, result.run_id)


def test_a_rejected_facilitator_key_fails_the_cli_run(fake_llm: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    code = cli_main(["--store", str(store), "run", "--facilitator-model", "openai/fake-http_401", "--api-base", fake_llm.base_url,
                     "--num-participants", "4", "--min-exchanges", "2", "--max-exchanges", "2", "--no-progress"])
    assert code == 1 and "failed" in capsys.readouterr().out
    assert {r.status for r in Store(store).runs()} == {"failed"}


def test_model_reaches_the_rows_of_a_generated_roster(
    fake_llm: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`commonpool roster` wrote brain=rules in every row, and that silently beat --model."""
    store = tmp_path / "store"
    assert cli_main(["roster", "--num-participants", "4", "--seed", "2"]) == 0
    roster = tmp_path / "roster.csv"
    roster.write_text(capsys.readouterr().out)
    code = cli_main(["--store", str(store), "run", "--roster", str(roster), "--model", "openai/fake", "--api-base", fake_llm.base_url,
                     "--simulation-id", "r", "--min-exchanges", "2", "--max-exchanges", "2", "--no-progress"])
    assert code == 0 and "note:" not in capsys.readouterr().err
    assert rows(Store(store), "SELECT DISTINCT brain FROM participants WHERE run_id = ?", "r") == [("openai/fake",)]


def test_a_roster_row_that_chose_its_engine_keeps_it_and_the_cli_says_so(
    fake_llm: FakeLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert cli_main(["roster", "--num-participants", "4", "--seed", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    first = lines[1].split(",")
    first[header.index("brain")] = "rules"
    roster = tmp_path / "roster.csv"
    roster.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    code = cli_main(["--store", str(store), "run", "--roster", str(roster), "--model", "openai/fake", "--api-base", fake_llm.base_url,
                     "--simulation-id", "r", "--min-exchanges", "2", "--max-exchanges", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and "note: 1 of 4 --roster rows name their own engine in the brain column (rules)" in err
    brains = [b for (b,) in rows(Store(store), "SELECT brain FROM participants WHERE run_id = ? ORDER BY participant_id", "r")]
    assert brains == ["rules", "openai/fake", "openai/fake", "openai/fake"]


def test_the_drill_down_says_when_the_facilitators_advice_was_a_fallback(fake_llm: FakeLLMServer, store: Store) -> None:
    from pages_support import app, texts

    from commonpool.exchange_log import transcript

    result = llm_run(fake_llm, store, model=None, facilitator_model="openai/fake-invalid_json")
    advice = transcript(store.connect(), result.run_id, 1).advice
    assert advice is not None and advice["source"] == "fallback" and "no JSON object" in advice["fallback_reason"]
    at = app("pages/explore.py", {"run": result.run_id, "tab": "Exchange log"})
    captions = [c.value.replace("\\", "") for c in at.caption]  # plain() escapes markdown
    assert any(c.startswith("The facilitator's model gave no usable advice, so this is the rules facilitator's: ")
               and "no JSON object" in c for c in captions), captions
    assert advice["note"] in texts(at)  # the rules facilitator's own note stands in
