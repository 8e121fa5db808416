"""Before a run writes anything: does every model it names have the key it needs?

LiteLLM knows which environment variables each provider reads
(litellm.validate_environment). A run without them used to start, fail every
call and end `completed` with every exchange an error; now the CLI refuses it
in one line naming the variable. The check runs where LiteLLM is loaded anyway:
in the first LLM worker process (started early, so its import overlaps the
run's set-up), or in this process when COMMONPOOL_LLM_WORKERS=0. The same
answer carries LiteLLM's prices for each model, so the run's process never
imports LiteLLM just to price a call. Keys' values never leave this module's
callers' environment: only variable names are reported.
"""

from __future__ import annotations

from typing import Any

from commonpool.config import SimulationConfig
from commonpool.llm.cost import Prices, listed_prices, remember_listed
from commonpool.llm.settings import api_key_for, load_env

# Long enough for a cold LiteLLM import on a loaded machine; past it the run goes ahead unchecked.
CHECK_TIMEOUT_S = 120.0


def check_here(models: list[str], api_base: str | None) -> dict[str, dict[str, Any]]:
    """Per model: the environment variables LiteLLM says it lacks, and its listed prices (or None)."""
    from commonpool.llm.client import import_litellm

    litellm = import_litellm()
    answers: dict[str, dict[str, Any]] = {}
    for model in models:
        try:
            found = litellm.validate_environment(model=model, api_key=api_key_for(model, api_base), api_base=api_base)
            missing = [str(name) for name in found.get("missing_keys") or []]
        except Exception:  # a provider LiteLLM cannot describe: let the first call tell
            missing = []
        try:
            prices = listed_prices(model)
        except Exception:
            prices = None
        answers[model] = {
            "missing": missing,
            "prices": None if prices is None else (prices.prompt_per_token, prices.completion_per_token),
        }
    return answers


def models_by_flag(config: SimulationConfig) -> dict[str, str]:
    """Each model the run may call -> the flag (or file) that named it first."""
    named: dict[str, str] = {}
    if config.facilitator and config.facilitator_model:
        named.setdefault(config.facilitator_model, "--facilitator-model")
    if config.model:
        named.setdefault(config.model, "--model")
    for model in config.personality_models.values():
        named.setdefault(model, "--personality-model")
    for member in config.roster or []:
        if member.brain not in (None, "rules"):
            named.setdefault(str(member.brain), "--roster")
    return named


def missing_credentials(config: SimulationConfig, names: dict[str, str] | None = None) -> str | None:
    """One line naming the first model whose key is not set and the variable it needs; None when all are set.

    The line starts with the flag that named the model, or what names says the flag is
    called where the user chose it (the dashboard's form). Also remembers each model's
    listed prices for the run (see cost.remember_listed).
    """
    from commonpool.llm.workers import shared_pool, worker_count

    named = models_by_flag(config)
    if not named:
        return None
    load_env()
    models = sorted(named)
    if worker_count():
        pool = shared_pool()
        pool.share_environment()  # the check reads the worker's environment, which must be this one
        answers = pool.check(models, config.api_base, CHECK_TIMEOUT_S)
    else:
        answers = check_here(models, config.api_base)
    if answers is None:
        return None
    for model, answer in answers.items():
        prices = answer.get("prices")
        remember_listed(model, None if prices is None else Prices(float(prices[0]), float(prices[1])))
    for model in models:
        missing = answers.get(model, {}).get("missing") or []
        if missing:
            return (
                f"{(names or {}).get(named[model], named[model])}: {model} needs {' and '.join(missing)}, which is not set; "
                "put it in .env.local or the environment (see .env.example)"
            )
    return None
