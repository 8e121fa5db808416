"""LLM-run speed against the local fake server (issue 4: wall <= 1.3x critical path, < 5 ms CPU per call,
cached re-run >= 1,000 decisions/s; issue 11: a CLI run's first request within one LiteLLM import + 1 s
of process start, its exit within 1 s of the last reply).

Run: python bench/bench_llm.py [--latency-ms 200] [--participants 40] [--exchanges 200] [--concurrency 20]
                               [--startup-only] [--startup-runs 5] [--tree PATH]

Start-up comes first: `commonpool run` as a fresh process against a fake server in
this process, timed from just before the process is spawned to the server's first
request, and from the server's last reply to the process's exit; and, for scale,
how long `import litellm` takes in a fresh interpreter just before each run (the
machine's load changes, so each run is compared with its own yardstick). Each
phase in between is timed too (bench/phases/sitecustomize.py marks them in the run
and its workers) and printed with the medians over the runs. --tree runs another
checkout's commonpool (say, `git archive HEAD` unpacked) with this venv, so a
change can be measured against what it replaces in one session.

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


# Phases of a CLI LLM run, from the marks of bench/phases/sitecustomize.py: (label, from, to), each
# mark "name>" or "name<" of the run's process, "w:" of its first worker; "spawn", "first request",
# "last reply" and "exit" are this process's own times.
STARTUP_PHASES = [
    ("python + CLI imports", "spawn", "config>"),
    ("worker spawned at", "spawn", "spawn worker>"),
    ("worker python + imports", "spawn worker>", "w:import litellm>"),
    ("worker import litellm", "w:import litellm>", "w:import litellm<"),
    ("litellm loaded -> run starts", "w:import litellm<", "run_simulation>"),
    ("run set-up -> first call", "run_simulation>", "first call>"),
    ("worker: call -> on the wire", "w:worker first complete>", "first request"),
    ("FIRST REQUEST at", "spawn", "first request"),
]
EXIT_PHASES = [
    ("last reply -> run_metrics", "last reply", "run_metrics>"),
    ("run_metrics", "run_metrics>", "run_metrics<"),
    ("writer close", "writer close>", "writer close<"),
    ("summary", "summary>", "summary<"),
    ("summary -> exit", "summary<", "exit"),
    ("LAST REPLY -> EXIT", "last reply", "exit"),
]


def cli_startup(latency_ms: float, tree: Path = ROOT) -> tuple[dict[str, float], int]:
    """The marks (seconds after spawn) of one CLI LLM run of tree's commonpool, and its exit code."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_llm_server import FakeLLMServer

    environment = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "OPENAI_API_BASE"}
    with FakeLLMServer(latency_ms=latency_ms) as server, tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "phases.log"
        environment.update(COMMONPOOL_PHASES_LOG=str(log), PYTHONPATH=str(ROOT / "bench" / "phases"))
        args = [
            sys.executable, "-m", "commonpool", "run", "--store", str(Path(folder) / "store"), "--seed", "3",
            "--num-participants", "10", "--min-exchanges", "20", "--max-exchanges", "20", "--model", "openai/fake",
            "--facilitator-model", "openai/fake", "--api-base", server.base_url, "--no-progress",
        ]
        started = time.monotonic()
        code = subprocess.run(args, cwd=tree, env=environment, stdout=subprocess.DEVNULL).returncode
        ended = time.monotonic()
        arrivals, replies = server.arrivals, server.replies
        lines = [(line.split(" ", 1)[0], *line.split(" ", 1)[1].rsplit(" ", 1)) for line in log.read_text().splitlines()]
    run_pid = lines[0][0]  # the first to start is the run's process
    worker_pid = next((pid for pid, name, _ in lines if pid != run_pid), None)
    marks = {"spawn": 0.0, "exit": ended - started}
    if arrivals:
        marks.update({"first request": arrivals[0] - started, "last reply": max(replies) - started})
    for pid, name, at in lines:
        key = name if pid == run_pid else f"w:{name}" if pid == worker_pid else None
        if key is not None:
            marks.setdefault(key, float(at) - started)  # the first time each happens
    for pid, name, at in lines:  # a phase's end: the last time (run_metrics, writer close are once)
        if pid == run_pid and name.endswith("<"):
            marks[name] = float(at) - started
    return marks, code


def print_phases(runs: list[tuple[dict[str, float], float]]) -> None:
    """One column per run and the median, per phase; then first request and exit against their targets."""
    from statistics import median

    def cell(value: float | None) -> str:
        return "     -" if value is None else f"{value:6.2f}"

    width = max(len(label) for label, _, _ in STARTUP_PHASES + EXIT_PHASES) + 2
    print(f"{'seconds':<{width}}" + "".join(f"  run {k + 1}" for k in range(len(runs))) + "  median")
    for label, start, end in [("import litellm (fresh)", "", ""), *STARTUP_PHASES, *EXIT_PHASES]:
        values = [
            yardstick if not start else (marks[end] - marks[start] if start in marks and end in marks else None)
            for marks, yardstick in runs
        ]
        known = [v for v in values if v is not None]
        print(f"{label:<{width}}" + "".join(f" {cell(v)}" for v in values) + f" {cell(median(known) if known else None)}")
    first = [m["first request"] - y for m, y in runs if "first request" in m]
    ratio = [m["first request"] / y for m, y in runs if "first request" in m]
    tail = [m["exit"] - m["last reply"] for m, _ in runs if "last reply" in m]
    if first:
        print(f"first request - import litellm: median {median(first):.2f} s (target <= 1 s); "
              f"first request / import litellm: median {median(ratio):.2f}")
        print(f"last reply -> exit: median {median(tail):.2f} s (target <= 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--startup-only", action="store_true", help="only the CLI start-up and exit figures")
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose `commonpool run` start-up is timed")
    args = parser.parse_args()

    runs = []
    for _ in range(args.startup_runs):
        yardstick = litellm_import_s()
        marks, code = cli_startup(args.latency_ms, args.tree.resolve())
        if code:
            print(f"a run exited with code {code}")
        runs.append((marks, yardstick))
    print_phases(runs)
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
