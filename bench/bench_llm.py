"""LLM-run speed against the local fake server (issue 4: wall <= 1.3x critical path, < 5 ms CPU per call,
cached re-run >= 1,000 decisions/s).

Run: python bench/bench_llm.py [--latency-ms 200] [--participants 40] [--exchanges 200] [--concurrency 20]

The server runs in its own process; the CPU time reported is ours: the run's process
plus the LLM worker processes (commonpool/llm/workers.py), read from /proc. A short
warm-up run comes first, because LiteLLM's imports (in each worker) are one-off costs.
The critical path is what no amount of concurrency can beat: per round, one
facilitator call then one call per turn the longest exchange took, each a full
latency. Not a test: figures vary with the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from commonpool import SimulationConfig, run_simulation  # noqa: E402
from commonpool.llm.client import import_litellm  # noqa: E402
from commonpool.llm.workers import shared_pool, worker_count  # noqa: E402
from commonpool.store import Store  # noqa: E402

SERVER = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from fake_llm_server import FakeLLMServer
server = FakeLLMServer(latency_ms=float(sys.argv[2])).start()
print(server.base_url, flush=True)
threading.Event().wait()
"""


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ROOT / "tests"), str(args.latency_ms)], stdout=subprocess.PIPE, text=True
    )
    try:
        base_url = server.stdout.readline().strip()  # type: ignore[union-attr]
        # One-offs, not per-call overhead: LiteLLM's 2-4 s import and the modules it loads on its
        # first calls (here, and in each worker process), and pyarrow's first-use import of pandas.
        import_litellm()
        if worker_count():
            shared_pool().warm_up()
        with tempfile.TemporaryDirectory() as folder:
            store = Store(Path(folder))
            config = SimulationConfig(
                simulation_id="live", seed=11, num_participants=args.participants,
                min_exchanges=args.exchanges, max_exchanges=args.exchanges,
                model="openai/fake", facilitator_model="openai/fake", api_base=base_url,
                concurrency=args.concurrency,
            )
            warm_up = config.model_copy(update={"simulation_id": "warm-up", "seed": 12, "min_exchanges": 40, "max_exchanges": 40})
            run_simulation(warm_up, Store(Path(folder) / "warm-up"))
            workers = shared_pool().pids() if worker_count() else []
            helpers = [*workers, server.pid]
            before = [process_cpu(pid) for pid in helpers]
            cpu, wall = time.process_time(), time.perf_counter()
            live = run_simulation(config, store)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            spent = [process_cpu(pid) - b for pid, b in zip(helpers, before)]
            worker_cpu, server_cpu = sum(spent[:-1]), spent[-1]

            con = store.connect()
            steps = con.execute(
                "SELECT sum(1 + turns) FROM (SELECT round, max(turns) AS turns FROM exchanges WHERE run_id = 'live' GROUP BY round)"
            ).fetchone()[0]
            rounds = con.execute("SELECT count(DISTINCT round) FROM exchanges WHERE run_id = 'live'").fetchone()[0]
            calls = int(live.llm["llm_calls"])
            critical = steps * args.latency_ms / 1000

            cached_wall = time.perf_counter()
            cached = run_simulation(config.model_copy(update={"simulation_id": "cached"}), store)
            cached_wall = time.perf_counter() - cached_wall
            decisions = store.connect().execute(
                "SELECT (SELECT count(*) FROM offers WHERE run_id = 'cached') + (SELECT count(*) FROM advice WHERE run_id = 'cached')"
            ).fetchone()[0]
            fresh = store.connect().execute("SELECT count(*) FROM llm_calls WHERE run_id = 'cached' AND NOT cached").fetchone()[0]
    finally:
        server.terminate()
        server.wait()

    print(f"participants={args.participants} exchanges={live.exchanges} concurrency={args.concurrency} "
          f"latency={args.latency_ms:.0f}ms status={live.status}")
    print(f"rounds={rounds} sequential steps (facilitator + turns, per round)={steps} calls={calls}")
    print(f"wall={wall:.2f}s critical_path={critical:.2f}s ratio={wall / critical:.2f}x")
    ours = cpu + worker_cpu
    print(f"cpu: run process {cpu:.2f}s + {len(workers)} LLM worker processes {worker_cpu:.2f}s = {ours:.2f}s "
          f"-> cpu_per_call={ours / calls * 1000:.2f}ms (engine, recording and LiteLLM; the fake server's {server_cpu:.2f}s excluded)")
    print(f"cached rerun: status={cached.status} provider_calls={fresh} decisions={decisions} wall={cached_wall:.2f}s "
          f"-> {decisions / cached_wall:,.0f} decisions/s")


if __name__ == "__main__":
    main()
