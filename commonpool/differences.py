"""What sets runs apart: the settings that differ between the configs of runs being compared,
so a chart's series read "facilitator off · seed 12" instead of two run ids cut in a legend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _mix(config: dict[str, Any]) -> str:
    if config.get("roster"):
        return "roster"
    weights = config.get("personalities") or {}
    total = sum(w for w in weights.values() if w > 0) or 1
    return ", ".join(f"{name} {w / total:.0%}" for name, w in sorted(weights.items()) if w > 0)


def _count(value: object) -> str:
    """A whole number with thousands separators; anything else (a damaged run's missing value) as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _engine(value: object) -> str:
    return str(value) if value else "rules"


# Each setting a person would name, how to read it from a run's config, and how to say it.
SETTINGS: dict[str, Callable[[dict[str, Any]], str]] = {
    "facilitator": lambda c: "facilitator on" if c.get("facilitator", True) else "facilitator off",
    "facilitator engine": lambda c: f"facilitator {_engine(c.get('facilitator_model'))}",
    "engine": lambda c: f"engine {_engine(c.get('model'))}",
    "engine per personality": lambda c: ", ".join(f"{k}: {v}" for k, v in sorted((c.get("personality_models") or {}).items()))
    or "engine per personality: none",
    "mix": lambda c: f"mix {_mix(c)}",
    "participants": lambda c: f"{_count(c.get('num_participants', '?'))} participants",
    "exchanges": lambda c: f"{_count(c.get('min_exchanges', '?'))}-{_count(c.get('max_exchanges', '?'))} exchanges"
    if c.get("min_exchanges") != c.get("max_exchanges") else f"{_count(c.get('max_exchanges', '?'))} exchanges",
    "pairing": lambda c: f"pairing {c.get('pairing', 'random')}",
    "max turns": lambda c: f"max {c.get('max_turns', '?')} turns",
    "resources": lambda c: "resources " + ", ".join(r["name"] for r in c.get("resources") or []),
    "need weight": lambda c: f"need weight {c.get('need_weight', '?')}",
    "temperature": lambda c: f"temperature {c.get('temperature', 0)}",
    "seed": lambda c: f"seed {c.get('seed')}",
}


def what_differs(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The settings whose value is not the same in every run: {setting: {run_id: value as said}}."""
    said = {name: {run_id: describe(config) for run_id, config in configs.items()}
            for name, describe in SETTINGS.items()}
    return {name: values for name, values in said.items() if len(set(values.values())) > 1}


def series_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A label per run naming what sets it apart (e.g. "facilitator off · seed 12").

    Runs that differ in nothing shown, or share a label, are told apart by their run id.
    """
    differs = what_differs(configs)
    labels = {run_id: " · ".join(values[run_id] for values in differs.values()) for run_id in configs}
    seen = list(labels.values())
    return {run_id: label if label and seen.count(label) == 1 else (f"{label} · {run_id}" if label else run_id)
            for run_id, label in labels.items()}
