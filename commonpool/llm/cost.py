"""What a call costs: the user's own per-token prices (local models), else LiteLLM's price list."""

from __future__ import annotations

from dataclasses import dataclass

from commonpool.config import SimulationConfig

CHARS_PER_TOKEN = 4  # a rough rule for English; only used to estimate before a call


@dataclass(frozen=True)
class Prices:
    prompt_per_token: float
    completion_per_token: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.prompt_per_token + completion_tokens * self.completion_per_token


def custom_prices(config: SimulationConfig) -> Prices | None:
    """The config's per-1k-token prices, when the user set either."""
    if config.cost_per_1k_prompt_tokens is None and config.cost_per_1k_completion_tokens is None:
        return None
    return Prices((config.cost_per_1k_prompt_tokens or 0.0) / 1000, (config.cost_per_1k_completion_tokens or 0.0) / 1000)


# Models LiteLLM had no price for, which register_unpriced entered in its price list at 0.
_registered_unpriced: set[str] = set()
# Prices a worker process read from LiteLLM's list (preflight), so this process need not import it.
_remembered: dict[str, Prices | None] = {}


def remember_listed(model: str, prices: Prices | None) -> None:
    _remembered[model] = prices


def listed_prices(model: str) -> Prices | None:
    """LiteLLM's prices for a model it knows; None for local or unknown models."""
    from commonpool.llm.client import import_litellm

    if model in _remembered:
        return _remembered[model]
    if model in _registered_unpriced:
        return None
    litellm = import_litellm()
    entry = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1])
    if not entry or entry.get("input_cost_per_token") is None:
        return None
    return Prices(float(entry["input_cost_per_token"]), float(entry.get("output_cost_per_token") or 0.0))


def most_a_call_costs(prices: Prices | None, prompt_chars: int, max_tokens: int) -> float:
    """An upper-ish estimate before sending: the prompt by characters, the full completion allowance."""
    if prices is None:
        return 0.0
    return prices.cost(prompt_chars // CHARS_PER_TOKEN + 1, max_tokens)


def register_unpriced(model: str) -> None:
    """Enter a model LiteLLM does not price in its price list at 0, once per process; its cost stays unknown to us.

    For a model missing from its list, LiteLLM searches the list for look-alikes on
    every call (about 1 ms of CPU), and zero prices passed per call trade that for a
    zero-cost diagnosis; a listed model is looked up directly.
    """
    if model in _registered_unpriced:
        return
    from commonpool.llm.client import import_litellm

    provider = model.split("/", 1)[0] if "/" in model else "openai"
    import_litellm().register_model({model: {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "litellm_provider": provider, "mode": "chat"}})
    _registered_unpriced.add(model)
