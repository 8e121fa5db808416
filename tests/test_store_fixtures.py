"""Sample runs for the store and console tests (no tests here; shared helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from commonpool.store import RunWriter

RESOURCES = ["books", "tools", "cooking_lesson", "childcare_hours"]


def sample_columns(n_exchanges: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Columns for every table of a small run, mixing lists, numpy and Arrow inputs."""
    rng = np.random.default_rng(seed)
    n_part = 4
    ex_ids = np.arange(n_exchanges, dtype=np.int64)
    res = np.array(RESOURCES)
    outcomes = np.array(["accepted", "rejected", "no_deal"])
    n_offers = 2 * n_exchanges
    return {
        "resources": {
            "resource_id": list(range(len(RESOURCES))),
            "name": RESOURCES,
            "kind": ["good", "good", "skill", "time"],
        },
        "participants": {
            "participant_id": list(range(n_part)),
            "name": [f"P{i}" for i in range(n_part)],
            "personality": ["cautious", "generous", "strategic", "cautious"],
            "traits": ['{"risk": 0.2}'] * n_part,
            "notes": ["likes books", "", "it's \"quoted\"", "ünïcode"],
            "brain": ["rules"] * n_part,
            "initial_utility": rng.random(n_part),
        },
        "initial_holdings": {
            "participant_id": np.repeat(np.arange(n_part, dtype=np.int32), len(RESOURCES)),
            "resource": np.tile(res, n_part),
            "quantity": np.full(n_part * len(RESOURCES), 5, dtype=np.int64),
        },
        "needs": {
            "participant_id": np.repeat(np.arange(n_part, dtype=np.int32), len(RESOURCES)),
            "resource": pa.array(np.tile(res, n_part)).dictionary_encode(),  # a DictionaryArray input
            "need": np.ones(n_part * len(RESOURCES), dtype=np.int64),
            "want": rng.random(n_part * len(RESOURCES)),
        },
        "exchanges": {
            "exchange_id": ex_ids,
            "round": (ex_ids // 2).astype(np.int32),
            "period": np.ones(n_exchanges, dtype=np.int32),
            "initiator_id": (ex_ids % n_part).astype(np.int32),
            "responder_id": ((ex_ids + 1) % n_part).astype(np.int32),
            "outcome": outcomes[ex_ids % 3],
            "turns": np.full(n_exchanges, 2, dtype=np.int16),
            "initiator_gives": res[ex_ids % 4],
            "initiator_gives_qty": np.ones(n_exchanges, dtype=np.int64),
            "responder_gives": res[(ex_ids + 1) % 4],
            "responder_gives_qty": np.ones(n_exchanges, dtype=np.int64),
            "initiator_utility_before": rng.random(n_exchanges),
            "initiator_utility_after": rng.random(n_exchanges),
            "responder_utility_before": rng.random(n_exchanges),
            "responder_utility_after": rng.random(n_exchanges),
            "reason": [None] * n_exchanges,
        },
        "offers": {
            "exchange_id": np.repeat(ex_ids, 2),
            "turn": np.tile(np.array([0, 1], dtype=np.int16), n_exchanges),
            "speaker_id": np.repeat((ex_ids % n_part).astype(np.int32), 2),
            "action": np.tile(np.array(["propose", "accept"]), n_exchanges),
            "initiator_gives": np.repeat(res[ex_ids % 4], 2),
            "initiator_gives_qty": np.ones(n_offers, dtype=np.int64),
            "responder_gives": np.repeat(res[(ex_ids + 1) % 4], 2),
            "responder_gives_qty": np.ones(n_offers, dtype=np.int64),
            "message": np.full(n_offers, "I offer one for one", dtype=object),
            "source": np.full(n_offers, "rules", dtype=object),
            "fallback_reason": pa.nulls(n_offers, pa.string()),
        },
        "advice": {
            "exchange_id": ex_ids,
            "round": (ex_ids // 2).astype(np.int32),
            "initiator_gives": res[ex_ids % 4],
            "initiator_gives_qty": np.ones(n_exchanges, dtype=np.int64),
            "responder_gives": res[(ex_ids + 1) % 4],
            "responder_gives_qty": np.ones(n_exchanges, dtype=np.int64),
            "typical_rate": np.full(n_exchanges, 1.5),
            "typical_rate_trades": np.arange(n_exchanges, dtype=np.int64),
            "initiator_deals": np.zeros(n_exchanges, dtype=np.int64),
            "initiator_meetings": np.zeros(n_exchanges, dtype=np.int64),
            "responder_deals": np.zeros(n_exchanges, dtype=np.int64),
            "responder_meetings": np.zeros(n_exchanges, dtype=np.int64),
            "note": ["2-3 books for a lesson has been typical"] * n_exchanges,
            "source": ["rules"] * n_exchanges,
        },
        "valuations": {
            "round": np.repeat(np.arange((n_exchanges + 1) // 2, dtype=np.int32), len(RESOURCES)),
            "resource": np.tile(res, (n_exchanges + 1) // 2),
            "valuation": np.tile(np.array([1.0, 2.0, 3.0, 4.0]), (n_exchanges + 1) // 2),
        },
        "transfers": {
            "exchange_id": ex_ids,
            "from_id": (ex_ids % n_part).astype(np.int32),
            "to_id": ((ex_ids + 1) % n_part).astype(np.int32),
            "resource": res[ex_ids % 4],
            "quantity": np.ones(n_exchanges, dtype=np.int64),
        },
        "llm_calls": {
            "call_id": [0],
            "exchange_id": [0],
            "turn": [0],
            "role": ["facilitator"],
            "participant_id": [None],
            "model": ["fake/model"],
            "prompt_tokens": [100],
            "completion_tokens": [20],
            "cost_usd": [0.001],
            "latency_ms": [12.5],
            "cached": [False],
            "attempt": [1],
            "error": [None],
            "finish_reason": ["stop"],
        },
        # A unit produced and then consumed: flows with rows that leave final_holdings as transfers make them.
        "flows": {
            "period": np.array([2, 2], dtype=np.int32),
            "participant_id": np.array([0, 0], dtype=np.int32),
            "resource": [RESOURCES[0], RESOURCES[0]],
            "quantity": np.array([2, 2], dtype=np.int64),
            "kind": ["produced", "consumed"],
        },
        "period_utility": {
            "period": np.ones(n_part, dtype=np.int32),
            "participant_id": np.arange(n_part, dtype=np.int32),
            "utility": rng.random(n_part),
            "discounted_utility": rng.random(n_part),
            "needed": np.full(n_part, 3, dtype=np.int64),
            "unmet": np.arange(n_part, dtype=np.int64),
        },
        "run_metrics": {
            "metric": ["acceptance_rate", "welfare_change"],
            "value": [0.5, float(n_exchanges)],
        },
    }


def row_counts(columns: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {table: len(next(iter(cols.values()))) for table, cols in columns.items()}


def write_sample_run(store_root: Path, run_id: str, n_exchanges: int = 10, seed: int = 7) -> dict[str, int]:
    """A completed run with rows in every table; returns the rows written per table."""
    columns = sample_columns(n_exchanges)
    meta = {"seed": seed, "engine": "rules", "model": None, "facilitator": "rules",
            "num_participants": 4, "exchanges_target": n_exchanges, "config": {"seed": seed, "max_turns": 4}}
    with RunWriter(store_root, run_id, meta, chunk_rows=7) as writer:
        for table, cols in columns.items():
            writer.append(table, cols)
        writer.update(exchanges_recorded=n_exchanges, accepted=(n_exchanges + 2) // 3)
    return row_counts(columns)
