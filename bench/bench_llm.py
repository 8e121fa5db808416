"""LLM-run speed against the local fake server (issue 4: wall <= 1.3x critical path, < 5 ms CPU per call,
cached re-run >= 1,000 decisions/s).

Run: python bench/bench_llm.py [--latency-ms 200] [--participants 40] [--exchanges 200] [--concurrency 20]

The server runs in its own process, so the CPU time measured here is ours alone.
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
from commonpool.store import Store  # noqa: E402

SERVER = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from fake_llm_server import FakeLLMServer
server = FakeLLMServer(latency_ms=float(sys.argv[2])).start()
print(server.base_url, flush=True)
threading.Event().wait()
"""


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
        import_litellm()  # its 2-4 s import is a one-off, not per-call overhead
        with tempfile.TemporaryDirectory() as folder:
            store = Store(Path(folder))
            config = SimulationConfig(
                simulation_id="live", seed=11, num_participants=args.participants,
                min_exchanges=args.exchanges, max_exchanges=args.exchanges,
                model="openai/fake", facilitator_model="openai/fake", api_base=base_url,
                concurrency=args.concurrency,
            )
            cpu, wall = time.process_time(), time.perf_counter()
            live = run_simulation(config, store)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

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
    print(f"cpu={cpu:.2f}s cpu_per_call={cpu / calls * 1000:.2f}ms (engine, recording and LiteLLM included; server excluded)")
    print(f"cached rerun: status={cached.status} provider_calls={fresh} decisions={decisions} wall={cached_wall:.2f}s "
          f"-> {decisions / cached_wall:,.0f} decisions/s")


if __name__ == "__main__":
    main()
