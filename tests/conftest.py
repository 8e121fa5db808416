"""Shared fixtures. Tests never reach a real LLM provider: LiteLLM is pointed at
tests/fake_llm_server.py and told to use its bundled cost map."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
sys.path.insert(0, str(Path(__file__).parent))

from commonpool import SimulationConfig, run_simulation  # noqa: E402
from commonpool.engine import RunResult  # noqa: E402
from commonpool.store import Store  # noqa: E402


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """An empty store, also the default one (COMMONPOOL_STORE) for pages and the CLI."""
    root = tmp_path / "store"
    monkeypatch.setenv("COMMONPOOL_STORE", str(root))
    return Store(root)


@pytest.fixture
def simulate(store: Store):
    """Run a small rules simulation into the test's store."""

    def run(**fields: object) -> RunResult:
        base: dict[str, object] = {"seed": 1, "num_participants": 12, "min_exchanges": 60, "max_exchanges": 60}
        base.update(fields)
        return run_simulation(SimulationConfig(**base), store)

    return run


@pytest.fixture(scope="session")
def fake_llm_server():
    """One fake OpenAI-compatible server for the whole session (see fake_llm_server.py)."""
    from fake_llm_server import FakeLLMServer

    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server, monkeypatch: pytest.MonkeyPatch):
    """The session's fake server, back to its defaults (cooperative, no latency, nothing counted).

    Provider keys are removed from the environment, so nothing a test does can use a real one.
    """
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()
