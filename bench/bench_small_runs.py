"""Small-run efficiency: a sweep's typical run against a big one, per exchange.

Run: python bench/bench_small_runs.py [--runs N] [--big-exchanges N]

A parameter sweep is thousands of small runs (60 participants, 2,000 exchanges,
facilitator on, rules brain), so what a small run costs beyond its exchanges
(setup, per-round overhead, writing, run_metrics) decides a sweep's speed. This
times N small runs into one store (as a sweep writes them; median of N after a
warm-up run) and one big run (1,000 participants, 200,000 exchanges) in the same
process, splits each into phases and prints exchanges/s of both and their ratio.

Phases are exclusive wall time, measured by wrapping the engine's calls:
setup = config, population, run folder and meta; rounds = pairing, advice,
negotiation and settlement; recording = turning rounds into rows, writing and
compacting the Parquet files; run_metrics = engine.record_run_metrics.
--clock cpu measures this process's CPU time instead of wall time: steadier on
a shared machine, blind to waiting on the disk. --fsync off (the default) writes
as a sweep's workers do (durable.set_sync); --fsync on as a single `run` does. Not a test: figures vary with
the machine.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonpool import SimulationConfig, engine  # noqa: E402
from commonpool.recorder import Recorder  # noqa: E402
from commonpool.store import RunWriter, Store  # noqa: E402
from commonpool.store.durable import set_sync  # noqa: E402

PHASES = ("setup", "rounds", "recording", "run_metrics")


class PhaseClock:
    """Exclusive wall time per phase: a wrapped call's time goes to its phase, minus the calls nested in it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []
        self._mark = 0.0

    def _switch(self, now: float) -> None:
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._mark = now

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._switch(self.clock())
            self._stack.append(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._switch(self.clock())
                self._stack.pop()

        return timed


# What each phase wraps: (owner, attribute). run_simulation itself counts as
# rounds; everything else it calls that is not listed here counts there too.
WRAPPED = {
    "setup": [(engine, "resolve"), (engine, "generate"), (engine, "run_meta"), (RunWriter, "__init__"),
              (Recorder, "__init__")],
    "recording": [(Recorder, name) for name in ("write_population", "add_offers", "add_advice", "add_exchanges",
                                                "add_transfers", "end_round", "flush")]
    + [(RunWriter, "close")],
    "run_metrics": [(engine, "record_run_metrics")],
    "rounds": [(engine, "run_simulation")],
}


@contextmanager
def clocked(clock_fn: Callable[[], float]) -> Iterator[PhaseClock]:
    """Wrap the engine's calls with a fresh PhaseClock; undone on exit."""
    clock = PhaseClock(clock_fn)
    saved = []
    for phase, targets in WRAPPED.items():
        for owner, name in targets:
            original = getattr(owner, name)
            saved.append((owner, name, original))
            setattr(owner, name, clock.wrap(phase, original))
    try:
        yield clock
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def timed_run(
    config: SimulationConfig, store: Store, clock_fn: Callable[[], float]
) -> tuple[int, float, dict[str, float]]:
    """One run: its exchanges, seconds and seconds per phase."""
    with clocked(clock_fn) as clock:
        started = clock_fn()
        result = engine.run_simulation(config, store)
        wall = clock_fn() - started
    assert result.status == "completed", result.error
    return result.exchanges, wall, dict(clock.seconds)


def small_config(seed: int, exchanges: int, participants: int) -> SimulationConfig:
    return SimulationConfig(
        seed=seed, simulation_id=f"small-{seed}", num_participants=participants,
        min_exchanges=exchanges, max_exchanges=exchanges, facilitator=True,
    )


def report(label: str, exchanges: int, wall: float, phases: dict[str, float]) -> None:
    per = {p: phases.get(p, 0.0) for p in PHASES}
    split = "  ".join(f"{p} {1e3 * s:7.1f} ms ({1e6 * s / exchanges:5.1f} us/ex)" for p, s in per.items())
    print(f"{label}: {exchanges} exchanges, {1e3 * wall:8.1f} ms, {exchanges / wall:9,.0f} exchanges/s")
    print(f"    {split}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20, help="small runs timed (after one warm-up)")
    parser.add_argument("--participants", type=int, default=60)
    parser.add_argument("--exchanges", type=int, default=2000)
    parser.add_argument("--big-participants", type=int, default=1000)
    parser.add_argument("--big-exchanges", type=int, default=200_000)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--fsync", choices=("on", "off"), default="off",
                        help="off (default) writes as a sweep's workers do: their runs are made durable when packed")
    args = parser.parse_args()
    set_sync(args.fsync == "on")
    clock_fn = time.perf_counter if args.clock == "wall" else time.process_time

    with tempfile.TemporaryDirectory() as root:
        store = Store(Path(root))
        timed_run(small_config(10_000, args.exchanges, args.participants), store, clock_fn)  # imports, first-call caches
        runs = [
            timed_run(small_config(seed, args.exchanges, args.participants), store, clock_fn) for seed in range(args.runs)
        ]
        big_config = SimulationConfig(
            seed=7, simulation_id="big", num_participants=args.big_participants,
            min_exchanges=args.big_exchanges, max_exchanges=args.big_exchanges, facilitator=True,
        )
        big_exchanges, big_wall, big_phases = timed_run(big_config, store, clock_fn)

    exchanges = runs[0][0]
    wall = statistics.median(r[1] for r in runs)
    phases = {p: statistics.median(r[2].get(p, 0.0) for r in runs) for p in PHASES}
    print(f"small: {args.participants} participants x {args.exchanges} exchanges, facilitator on, rules brain; "
          f"median of {args.runs} runs into one store (phases: median of each); {args.clock} time; fsync {args.fsync}")
    report("small", exchanges, wall, phases)
    report("big  ", big_exchanges, big_wall, big_phases)
    small_rate, big_rate = exchanges / wall, big_exchanges / big_wall
    print(f"small / big throughput per exchange: {small_rate / big_rate:.2f} "
          f"({small_rate:,.0f} vs {big_rate:,.0f} exchanges/s)")


if __name__ == "__main__":
    main()
