"""Run-store throughput: append 1M exchanges + 2.5M offers, compact, query.

Prints rows/s, compaction time and peak RSS. Usage:
    .venv/bin/python bench/bench_store.py [--exchanges 1000000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonpool.store import RunWriter, Store  # noqa: E402

RESOURCES = np.array(["books", "tools", "cooking_lesson", "repair", "childcare_hours", "bread", "bike_repair", "garden"])
OUTCOMES = np.array(["accepted", "rejected", "no_deal", "invalid", "error"])
ACTIONS = np.array(["propose", "counter", "accept", "reject"])


def exchange_batch(rng: np.random.Generator, start: int, n: int) -> dict[str, object]:
    ids = np.arange(start, start + n, dtype=np.int64)
    return {
        "exchange_id": ids,
        "round": (ids // 50).astype(np.int32),
        "period": np.ones(n, dtype=np.int32),
        "initiator_id": rng.integers(0, 100, n, dtype=np.int32),
        "responder_id": rng.integers(0, 100, n, dtype=np.int32),
        "outcome": OUTCOMES[rng.integers(0, 5, n)],
        "turns": rng.integers(1, 6, n, dtype=np.int16),
        "initiator_gives": RESOURCES[rng.integers(0, 8, n)],
        "initiator_gives_qty": rng.integers(1, 4, n),
        "responder_gives": RESOURCES[rng.integers(0, 8, n)],
        "responder_gives_qty": rng.integers(1, 4, n),
        "initiator_utility_before": rng.random(n),
        "initiator_utility_after": rng.random(n),
        "responder_utility_before": rng.random(n),
        "responder_utility_after": rng.random(n),
        "reason": pa.nulls(n, pa.string()),
    }


def offer_batch(rng: np.random.Generator, start: int, n: int) -> dict[str, object]:
    messages = np.array([f"I can give {q} {r} for your {r2}" for q in range(1, 4) for r in RESOURCES for r2 in RESOURCES])
    return {
        "exchange_id": np.arange(start, start + n, dtype=np.int64) // 5 * 2,
        "turn": (np.arange(n) % 5).astype(np.int16),
        "speaker_id": rng.integers(0, 100, n, dtype=np.int32),
        "action": ACTIONS[rng.integers(0, 4, n)],
        "initiator_gives": RESOURCES[rng.integers(0, 8, n)],
        "initiator_gives_qty": rng.integers(1, 4, n),
        "responder_gives": RESOURCES[rng.integers(0, 8, n)],
        "responder_gives_qty": rng.integers(1, 4, n),
        "message": messages[rng.integers(0, len(messages), n)],
        "source": np.full(n, "rules"),
        "fallback_reason": pa.nulls(n, pa.string()),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="exchanges per append (offers: 2.5x)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Batches are generated once and re-appended with new ids, so generation cost
    # and memory stay out of the figures.
    ex = exchange_batch(rng, 0, args.batch)
    n_offers = args.batch * 5 // 2
    of = offer_batch(rng, 0, n_offers)
    print(f"peak RSS after generating one batch: {peak_rss_mib():.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        writer = RunWriter(Path(tmp), "bench", {"seed": 0})
        t0 = time.perf_counter()
        appended = 0
        for start in range(0, args.exchanges, args.batch):
            writer.append("exchanges", {**ex, "exchange_id": ex["exchange_id"] + start})  # type: ignore[operator]
            writer.append("offers", {**of, "exchange_id": of["exchange_id"] + start})  # type: ignore[operator]
            appended += args.batch
        writer.flush()
        t_append = time.perf_counter() - t0
        rows = appended + appended * 5 // 2
        print(f"append+flush: {appended:,} exchanges + {appended * 5 // 2:,} offers in {t_append:.2f} s")
        print(f"  {appended / t_append:,.0f} exchanges/s, {rows / t_append:,.0f} rows/s (both tables)")
        t1 = time.perf_counter()
        writer.close("completed")
        t_close = time.perf_counter() - t1
        # The committed files only: the parts they replace wait in the trash for the grace period.
        tables = json.loads((Path(tmp) / "runs" / "bench" / "run.json").read_text())["manifest"]["tables"]
        size = sum(entry["base_bytes"] + entry["parts_bytes"] for entry in tables.values()) / 2**20
        print(f"close (compaction): {t_close:.2f} s; compacted files {size:.0f} MiB")
        print(f"peak RSS after writing and compacting: {peak_rss_mib():.0f} MiB")
        store = Store(Path(tmp))
        t2 = time.perf_counter()
        n = store.query("SELECT count(*) AS n FROM offers o JOIN exchanges e USING (run_id, exchange_id)").column("n")[0]
        t_query = time.perf_counter() - t2
        print(f"reader join offers x exchanges: {n} rows matched in {t_query:.2f} s")
    print(f"peak RSS after the reader query: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
