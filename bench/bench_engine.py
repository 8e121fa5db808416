"""Rules-engine throughput and peak memory (issue: >= 100k exchanges/s, < 1 GiB at 1M exchanges).

Run: python bench/bench_engine.py [--exchanges N] [--participants N]
Prints exchanges/s and peak RSS. Not a test: figures vary with the machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonpool import SimulationConfig, run_simulation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=1_000_000)
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--no-facilitator", action="store_true")
    args = parser.parse_args()
    config = SimulationConfig(
        seed=7,
        num_participants=args.participants,
        min_exchanges=args.exchanges,
        max_exchanges=args.exchanges,
        facilitator=not args.no_facilitator,
    )
    with tempfile.TemporaryDirectory() as store:
        started = time.perf_counter()
        result = run_simulation(config, store)
        wall = time.perf_counter() - started
        size = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"participants={args.participants} resources=8 facilitator={not args.no_facilitator}")
    print(f"exchanges={result.exchanges} accepted={result.accepted} wall={wall:.2f}s "
          f"(simulate+record+compact)")
    print(f"throughput={result.exchanges / wall:,.0f} exchanges/s")
    print(f"peak_rss={peak_mib:,.0f} MiB store_size={size / 2**20:,.1f} MiB")


if __name__ == "__main__":
    main()
