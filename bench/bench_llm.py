"""LLM-run speed against the local fake server (issue 4: wall <= 1.3x critical path, < 5 ms CPU per call,
cached re-run >= 1,000 decisions/s; issue 11: a CLI run's first request within one LiteLLM import + 1 s
of process start, its exit within 1 s of the last reply).

Run: python bench/bench_llm.py [--latency-ms 200] [--participants 40] [--exchanges 200] [--concurrency 20]
                               [--startup-only] [--startup-runs 3]

Start-up comes first: `commonpool run` as a fresh process against a fake server in
this process, timed from just before the process is spawned to the server's first
request, and from the server's last reply to the process's exit; and, for scale,
how long `import litellm` takes in a fresh interpreter on this machine.

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


def litellm_import_s() -> float:
    """Seconds `import litellm` takes in a fresh interpreter (the yardstick of the start-up target)."""
    code = "import time, os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; t = time.perf_counter(); import litellm; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def cli_startup(latency_ms: float) -> tuple[float, float, float, int]:
    """(process start -> first request, last reply -> exit, whole process, exit code) of one CLI LLM run."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_llm_server import FakeLLMServer

    environment = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "OPENAI_API_BASE"}
    with FakeLLMServer(latency_ms=latency_ms) as server, tempfile.TemporaryDirectory() as folder:
        args = [
            sys.executable, "-m", "commonpool", "run", "--store", folder, "--seed", "3", "--num-participants", "10",
            "--min-exchanges", "20", "--max-exchanges", "20", "--model", "openai/fake", "--facilitator-model", "openai/fake",
            "--api-base", server.base_url, "--no-progress",
        ]
        started = time.monotonic()
        code = subprocess.run(args, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL).returncode
        ended = time.monotonic()
        arrivals, replies = server.arrivals, server.replies
    if not arrivals:
        return float("nan"), float("nan"), ended - started, code
    return arrivals[0] - started, ended - max(replies), ended - started, code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--startup-only", action="store_true", help="only the CLI start-up and exit figures")
    parser.add_argument("--startup-runs", type=int, default=3)
    args = parser.parse_args()

    yardstick = litellm_import_s()
    for k in range(args.startup_runs):
        first, tail, whole, code = cli_startup(args.latency_ms)
        print(f"cli run {k + 1}: first request {first:.2f}s after start (target <= import litellm {yardstick:.2f}s + 1 s), "
              f"exit {tail:.2f}s after the last reply (target <= 1 s), whole {whole:.2f}s, exit code {code}")
    if args.startup_only:
        return

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
