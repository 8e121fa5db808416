"""A sweep of typical research runs on 1 worker, 2 workers and Ray: how the executors scale.

    .venv/bin/python bench/bench_sweep.py [--runs 1000] [--participants 60] [--exchanges 2000]

Each run is the issue's typical research run (60 participants, 2,000 exchanges,
facilitator on, rules brain), replicated --runs times (one point, a seed per
replication), into a fresh store per executor, in one process so the ratios are
measured under the same conditions. Prints wall time, runs/s and exchanges/s per
executor, the speed-up of 2 workers over 1 (target >= 1.8x) and Ray's time against
the local pool with the same number of workers (target <= 1.3x). Ray's own
start-up (~5 s here) is included, as a user pays it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from commonpool.experiments.spec import parse_spec
from commonpool.experiments.sweep import run_sweep
from commonpool.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--participants", type=int, default=60)
    parser.add_argument("--exchanges", type=int, default=2000)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    spec = parse_spec({
        "name": "bench", "replications": args.runs, "seed": 1,
        "base": {"num_participants": args.participants, "min_exchanges": args.exchanges,
                 "max_exchanges": args.exchanges},
    })
    cases = [("local, 1 worker", "local", 1), ("local, 2 workers", "local", 2)]
    if not args.skip_ray:
        cases.append(("ray, 2 workers", "ray", 2))
    print(f"sweep of {args.runs} runs x {args.exchanges} exchanges, {args.participants} participants, rules, facilitator on")
    seconds: dict[str, float] = {}
    for label, executor, workers in cases:
        root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
        try:
            started = time.perf_counter()
            result = run_sweep(spec, Store(root), executor=executor, workers=workers, sweep_id="bench")
            seconds[label] = time.perf_counter() - started
            assert result.status == "completed", result
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rate = args.runs / seconds[label]
        print(f"  {label:<18} {seconds[label]:8.1f} s  {rate:6.2f} runs/s  {rate * args.exchanges:9,.0f} exchanges/s")
    print(f"2 workers vs 1: {seconds['local, 1 worker'] / seconds['local, 2 workers']:.2f}x faster (target >= 1.8x)")
    if "ray, 2 workers" in seconds:
        print(f"ray vs local pool (2 workers): {seconds['ray, 2 workers'] / seconds['local, 2 workers']:.2f}x the time "
              "(target <= 1.3x)")


if __name__ == "__main__":
    main()
