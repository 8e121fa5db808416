"""Run store at sweep scale: 10,000 small runs, before and after packing.

Prints wall and CPU time (CPU is the steadier figure when other work shares the
machine): Store.runs(), Store.run_list() and `commonpool runs list` over all runs, connect() to all
runs and to one, a sweep-summary query (avg value per metric over run_metrics
of every run) and a one-run query, then the same after Store.pack() of every run,
and the pack's own time. Usage:
    .venv/bin/python bench/bench_store_scale.py [--runs 10000] [--store PATH]
The runs hold the rows of one real 60-exchange rules run, each written through
RunWriter under its own id, stored as one sweep of 10,000 replications (sweep.json, design.json), so
making them takes a few minutes rather than a sweep's hour; the sweep's summary is
timed as `commonpool sweep show` computes it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commonpool import SimulationConfig, run_simulation  # noqa: E402
from commonpool.experiments import results  # noqa: E402
from commonpool.experiments.spec import parse_spec  # noqa: E402
from commonpool.experiments.sweep import plan  # noqa: E402
from commonpool.store import TABLES, RunWriter, Store  # noqa: E402
from commonpool.store.writer import _RESERVED  # noqa: E402

SUMMARY = "SELECT metric, avg(value) AS mean, count(*) AS runs FROM run_metrics GROUP BY metric ORDER BY metric"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: steadier than wall time on a busy machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, work: Callable[[], Any], repeat: int = 3) -> Any:
    """The best of repeat timings, wall and CPU (the first run also warms the page cache)."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), cpu_seconds()
        result = work()
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, cpu_seconds() - started_cpu)
    print(f"  {label:<58} {wall * 1000:>9,.0f} ms wall {cpu * 1000:>9,.0f} ms CPU")
    return result


def make_store(root: Path, runs: int) -> list[str]:
    template = Store(root / "template")
    run_simulation(SimulationConfig(simulation_id="t", seed=1, num_participants=12, min_exchanges=60, max_exchanges=60),
                   template)
    con = template.connect()
    # The stored columns of each table (the advice view adds a valuations column the writer does not take).
    tables = {name: con.sql(f'SELECT {", ".join(schema.names[1:])} FROM "{name}"').to_arrow_table()
              for name, schema in TABLES.items()}
    con.close()
    meta = {k: v for k, v in template.run("t").meta.items() if k not in _RESERVED}
    # A sweep of `runs` replications of one point, stored as `commonpool sweep run` stores it:
    # each run written through RunWriter (its own rows, manifest and commit), then the sweep's files.
    spec = parse_spec({"name": "bench", "replications": runs, "seed": 1,
                       "base": {"num_participants": 12, "min_exchanges": 60, "max_exchanges": 60}})
    runs_planned = plan(spec, "bench")
    ids = [runs_planned.run_id(k) for k in range(runs)]
    for k, run_id in enumerate(ids):
        with RunWriter(root, run_id, {**meta, "sweep_id": "bench", "point_id": 0, "replication": k, "point": {}}) as w:
            for name, table in tables.items():
                if table.num_rows:
                    w.append(name, {c: table.column(c) for c in table.column_names})
    folder = root / "sweeps" / "bench"
    folder.mkdir(parents=True)
    (folder / "design.json").write_text(json.dumps({"points": runs_planned.points, "unit": None}))
    (folder / "sweep.json").write_text(json.dumps({
        "sweep_id": "bench", "status": "completed", "sampler": "grid", "points": 1, "replications": runs,
        "runs_planned": runs, "runs_done": runs, "runs_failed": 0, "spec": spec.model_dump(mode="json")}))
    shutil.rmtree(template.root)
    return ids


def read_every_run_json(root: Path) -> None:
    for entry in os.scandir(root / "runs"):
        with open(os.path.join(entry.path, "run.json"), encoding="utf-8") as f:
            json.loads(f.read())


def measure(store: Store, one: str) -> None:
    timed("floor: read and parse every run.json, nothing else", lambda: read_every_run_json(store.root))
    timed("Store.runs()", store.runs)
    timed("Store.run_list() (what `runs list` prints; packed runs cached)", store.run_list)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "commonpool", "--store", str(store.root), "runs", "list"]
    timed("`commonpool runs list` (a whole process)", lambda: subprocess.run(cli, env=env, capture_output=True, check=True))
    empty = [*cli[:4], str(store.root / "no-such-store"), *cli[5:]]
    timed("  the same process on an empty store (start-up, imports)",
          lambda: subprocess.run(empty, env=env, capture_output=True, check=True))
    timed("connect() to every run", lambda: store.connect().close())
    timed(f"connect([{one!r}])", lambda: store.connect([one]).close())
    rows = timed("sweep summary over every run (connect + query)", lambda: store.query(SUMMARY))
    print(f"    ({rows.num_rows} metrics, {rows.column('runs')[0].as_py():,} runs each)")
    timed("one run's exchanges, connect([run]) + query",
          lambda: store.query("SELECT count(*) FROM exchanges", run_ids=[one]))
    timed("the sweep's summary: results.load + summary (what `sweep show` computes)",
          lambda: results.summary(results.load(store, "bench")))
    show = [*cli[:5], "sweep", "show", "bench", "--metric", "welfare_change"]
    timed("`commonpool sweep show bench --metric welfare_change` (a whole process)",
          lambda: subprocess.run(show, env=env, capture_output=True, check=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    root = args.store or Path(tempfile.mkdtemp(prefix="commonpool-scale-"))
    started = time.perf_counter()
    ids = make_store(root, args.runs)
    files = sum(1 for _ in (root / "runs").rglob("*.parquet"))
    print(f"{args.runs:,} runs, {files:,} Parquet files, made in {time.perf_counter() - started:.1f} s ({root})")
    store = Store(root)
    print("before packing:")
    measure(store, ids[len(ids) // 2])
    timed(f"Store.pack() of {len(ids):,} runs", lambda: store.pack(ids, "bench-0000"), repeat=1)
    print("after packing (own files still in the trash, as within the grace period):")
    measure(store, ids[len(ids) // 2])
    if args.store is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
