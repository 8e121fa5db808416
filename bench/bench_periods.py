"""A living economy's cost: a run of many periods against a one-period run of the same size (issue 13's speed target:
1,000 participants, 100 periods, 500,000 exchanges within 1.3x of the one-period run).

Run: python bench/bench_periods.py [--participants 1000] [--periods 100] [--exchanges 500000] [--repeats 1]
Prints each run's wall time (simulate + record + compact + run_metrics), their ratio, the time spent at period
boundaries (consumption, expiry, spoilage, production and their flows rows), how many trades each run made and
how many messages (offers) it negotiated, with the CPU time per message: a living economy keeps trading, so part
of its extra time is the extra negotiation, not the periods. Not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonpool import SimulationConfig, engine, run_simulation  # noqa: E402
from commonpool.store import Store  # noqa: E402

boundary_seconds = 0.0


def _timed(fn):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        global boundary_seconds
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            boundary_seconds += time.perf_counter() - started

    return wrapper


def one_run(participants: int, periods: int, exchanges: int) -> tuple[float, float, float, int, int]:
    """Wall and CPU seconds, seconds at period boundaries, trades accepted, and messages (offers) negotiated."""
    global boundary_seconds
    boundary_seconds = 0.0
    config = SimulationConfig(seed=7, num_participants=participants, min_exchanges=exchanges,
                              max_exchanges=exchanges, periods=periods)
    with tempfile.TemporaryDirectory() as store:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_simulation(config, store)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        offers = Store(Path(store)).query("SELECT count(*) AS n FROM offers").column("n")[0].as_py()
    return wall, cpu, boundary_seconds, result.accepted, offers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--periods", type=int, default=100)
    parser.add_argument("--exchanges", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    engine.end_period = _timed(engine.end_period)
    engine.start_period = _timed(engine.start_period)
    print(f"participants={args.participants} exchanges={args.exchanges} resources=8 facilitator=on")
    ratios = []
    for repeat in range(args.repeats):
        # Alternate which goes first, so a warm cache or a busy neighbour does not favour one side.
        order = (1, args.periods) if repeat % 2 == 0 else (args.periods, 1)
        walls, per_offer = {}, {}
        for periods in order:
            wall, cpu, boundary, accepted, offers = one_run(args.participants, periods, args.exchanges)
            walls[periods], per_offer[periods] = wall, cpu / offers
            print(f"  periods={periods:<5} wall={wall:7.2f}s cpu={cpu:7.2f}s  at period boundaries={boundary:6.2f}s  "
                  f"accepted={accepted:,} ({accepted / args.exchanges:.1%})  messages={offers:,} "
                  f"({1e6 * cpu / offers:.1f} us CPU each)")
        ratios.append(walls[args.periods] / walls[1])
        print(f"  ratio {args.periods} periods / 1 period = {ratios[-1]:.2f}x; "
              f"per message negotiated = {per_offer[args.periods] / per_offer[1]:.2f}x")
    if len(ratios) > 1:
        print(f"ratios: min {min(ratios):.2f}x, max {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
