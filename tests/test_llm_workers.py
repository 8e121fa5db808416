"""LiteLLM calls in worker processes: same answers and errors as in-process, a dead worker fails only its calls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer
from test_llm_layers import CANARY, client, complete, request
from test_llm_runs import decided_tables, llm_run

from commonpool.cli import main as cli_main
from commonpool.llm.chat import CallRecord
from commonpool.llm.cost import Prices
from commonpool.llm.errors import CredentialsError, FatalError, RequestError, TransientError
from commonpool.llm.workers import WORKERS_ENV, WorkerModel, WorkerPool, worker_count
from commonpool.store import Store


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """A pool of its own (one worker), so killing a worker cannot touch the runs' shared pool."""
    own = WorkerPool(1)
    yield own
    own.close()


def in_worker(pool: WorkerPool, server: FakeLLMServer, timeout_s: float = 5.0, prices: Prices | None = None) -> WorkerModel:
    return WorkerModel(server.base_url, timeout_s, prices, pool)


@pytest.mark.parametrize(("value", "count"), [("0", 0), ("3", 3), (" 2 ", 2), ("", min(4, os.cpu_count() or 1))])
def test_worker_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, count: int) -> None:
    monkeypatch.setenv(WORKERS_ENV, value)
    assert worker_count() == count


@pytest.mark.parametrize("value", ["-1", "two", "65", "1.5"])
def test_a_bad_worker_count_names_the_variable_and_what_is_allowed(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(WORKERS_ENV, value)
    with pytest.raises(ValueError, match=rf"{WORKERS_ENV} must be a whole number from 0 to 64.*got '{value}'"):
        worker_count()


def test_the_cli_refuses_a_bad_worker_count_before_writing(
    fake_llm: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(WORKERS_ENV, "lots")
    store = tmp_path / "store"
    code = cli_main(["--store", str(store), "run", "--model", "openai/fake", "--api-base", fake_llm.base_url, "--no-progress"])
    assert code == 2
    assert f"{WORKERS_ENV} must be a whole number from 0 to 64" in capsys.readouterr().err
    assert fake_llm.count == 0 and not (store / "runs").exists()


def test_a_worker_answers_as_the_in_process_client_does(fake_llm: FakeLLMServer, pool: WorkerPool) -> None:
    prices = Prices(1e-6, 2e-6)
    here_text, (here,) = complete(client(fake_llm, prices=prices), request())
    there_text, (there,) = complete(in_worker(pool, fake_llm, prices=prices), request())
    assert there_text == here_text and json.loads(there_text)["action"] == "propose"
    assert (there.prompt_tokens, there.completion_tokens, there.cost_usd) == (here.prompt_tokens, here.completion_tokens, here.cost_usd)
    assert there.cost_usd == pytest.approx(there.prompt_tokens * 1e-6 + there.completion_tokens * 2e-6)


@pytest.mark.parametrize(
    ("mode", "error"),
    [("http_401", CredentialsError), ("http_500", TransientError), ("http_429", TransientError), ("echo_key", RequestError), ("wrong_schema", None)],
)
def test_a_worker_keeps_the_kind_of_each_error(fake_llm: FakeLLMServer, pool: WorkerPool, mode: str, error: type | None) -> None:
    answer, log = complete(in_worker(pool, fake_llm), request(f"openai/fake-{mode}"))
    (record,) = log
    if error is None:  # a bad answer is still an answer: the layers above judge it
        assert isinstance(answer, str) and record.error is None
        return
    assert type(answer) is error and record.error == str(answer)
    if mode == "http_429":
        assert answer.retry_after == 0  # type: ignore[attr-defined]


def test_keys_set_after_the_workers_started_reach_them_and_stay_secret(
    fake_llm: FakeLLMServer, pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    complete(in_worker(pool, fake_llm), request())  # the worker is up, with no key in its environment
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    answer, (record,) = complete(in_worker(pool, fake_llm), request("openai/fake-echo_key"))
    # Without the key the worker would have sent the placeholder for keyless servers.
    assert isinstance(answer, RequestError) and "no-key-needed" not in str(answer)
    assert CANARY in fake_llm.headers[-1]["authorization"]
    assert CANARY not in str(answer) and CANARY not in str(record.error)


def test_a_worker_that_dies_fails_its_calls_and_is_replaced(fake_llm: FakeLLMServer, pool: WorkerPool) -> None:
    model = in_worker(pool, fake_llm, timeout_s=20)
    complete(model, request())
    (pid,) = pool.pids()
    log: list[CallRecord] = []

    async def kill_mid_call() -> Exception:
        call = asyncio.ensure_future(model.complete(request("openai/fake-cooperative@3000"), log))
        while fake_llm.count < 2:  # the slow request has reached the server
            await asyncio.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        try:
            await call
        except Exception as exc:
            return exc
        raise AssertionError("the call outlived its worker")

    error = asyncio.run(kill_mid_call())
    assert isinstance(error, FatalError) and "worker process stopped" in str(error)
    assert log[-1].error == str(error)
    text, _ = complete(model, request())
    assert json.loads(text)["action"] == "propose"
    assert pool.pids() != [pid]


def test_results_do_not_depend_on_worker_processes(fake_llm: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "0")
    here = llm_run(fake_llm, Store(tmp_path / "here"), num_participants=10, min_exchanges=15, max_exchanges=15)
    in_process = fake_llm.count
    monkeypatch.setenv(WORKERS_ENV, "2")
    there = llm_run(fake_llm, Store(tmp_path / "there"), num_participants=10, min_exchanges=15, max_exchanges=15)
    assert here.status == there.status == "completed" and fake_llm.count == 2 * in_process > 0
    assert decided_tables(Store(tmp_path / "here"), here.run_id) == decided_tables(Store(tmp_path / "there"), there.run_id)
