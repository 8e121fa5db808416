"""Where LLM settings come from: .env.local, then .env, then the environment (which wins).

Loaded in this one place. Keys stay in the process environment, where LiteLLM
reads them; nothing here returns, logs or stores a key's value.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

# (environment variable that enables them, models to suggest), in picker order.
SUGGESTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("OPENAI_API_KEY", ("gpt-4o-mini", "gpt-4o")),
    ("ANTHROPIC_API_KEY", ("anthropic/claude-3-5-haiku-latest", "anthropic/claude-3-5-sonnet-latest")),
    ("GEMINI_API_KEY", ("gemini/gemini-1.5-flash",)),
    ("OLLAMA_API_BASE", ("ollama/llama3.1",)),
)


@cache
def load_env(folder: Path | None = None) -> None:
    """Read .env.local then .env from folder (default: the working directory) into the environment.

    Neither overrides a variable already set, so the environment beats .env.local beats .env.
    """
    from dotenv import load_dotenv

    root = folder or Path.cwd()
    for name in (".env.local", ".env"):
        path = root / name
        if path.is_file():
            load_dotenv(path, override=False)


def available_models() -> list[str]:
    """Models worth offering in an engine picker, given which keys are configured (COMMONPOOL_MODEL first).

    A model on an OpenAI-compatible server (served_api_base) is not listed: only
    the user knows its name, openai/<name>.
    """
    load_env()
    models: list[str] = []
    if os.environ.get("COMMONPOOL_MODEL"):
        models.append(os.environ["COMMONPOOL_MODEL"])
    for variable, names in SUGGESTED:
        if os.environ.get(variable):
            models.extend(names)
    return list(dict.fromkeys(models))


def served_api_base() -> str | None:
    """The OpenAI-compatible server configured by OPENAI_API_BASE, if any."""
    load_env()
    return os.environ.get("OPENAI_API_BASE") or None


def api_key_for(model: str, api_base: str | None) -> str | None:
    """A placeholder key for a keyless OpenAI-compatible server; None lets LiteLLM read the environment.

    The OpenAI SDK refuses to send a request without some key, and local servers
    (llama.cpp, vLLM, LM Studio) accept any.
    """
    if api_base and not os.environ.get("OPENAI_API_KEY") and model.startswith("openai/"):
        return "no-key-needed"
    return None
