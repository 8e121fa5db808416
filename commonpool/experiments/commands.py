"""`commonpool sweep ...`: run, list, show, export and resume sweeps from the command line.

    commonpool sweep run SPEC.toml [--workers 2] [--executor local|ray]
    commonpool sweep run --vary facilitator=true,false --replications 20 --num-participants 60
    commonpool sweep list | show ID [--json] | export ID --format csv|parquet|json | resume ID

Bad specs print one line naming the key and what is allowed, exit 2, and write nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonpool.cli import BadInput, Parser, _cell, _choice, _print_table, add_run_flags, config_from_args
from commonpool.config import SimulationConfig
from commonpool.experiments.spec import SAMPLERS, SpecError, load_spec, parse_spec, parse_vary

# The store and the executors (DuckDB, pyarrow, numpy: a quarter of a second) are imported
# when a sweep command runs, not when the CLI builds its parser for every command (an LLM
# run's first worker starts only once the flags are read).
if TYPE_CHECKING:
    from commonpool.store import Store


def add_sweep_parser(sub: argparse._SubParsersAction, store: argparse.ArgumentParser) -> None:
    sweep = sub.add_parser("sweep", parents=[store], help="run and analyse experiments: many runs over a design")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True, parser_class=Parser)

    run = sweep_sub.add_parser("run", parents=[store], help="plan and run a sweep (a TOML spec and/or flags)")
    run.add_argument("spec", nargs="?", type=Path, default=None, help="TOML experiment spec")
    run.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2|LO:HI[:STEP]",
                     help="a factor: levels, or a range (repeatable)")
    run.add_argument("--replications", default=None, help="runs per point (default 1, or the spec's)")
    run.add_argument("--sampler", default=None, help=" | ".join(SAMPLERS))
    run.add_argument("--samples", default=None, help="points for random/lhs, base N for sobol, trajectories for morris")
    run.add_argument("--sweep-seed", default=None, help="the seed every run's seed is drawn from (default: drawn)")
    run.add_argument("--name", default=None, help="a name for the sweep (also starts its id)")
    run.add_argument("--sweep-id", default=None, help="the sweep's id (default: generated)")
    _add_execution_flags(run)
    add_run_flags(run)

    listing = sweep_sub.add_parser("list", parents=[store], help="every sweep, newest first")
    listing.add_argument("--json", action="store_true")
    show = sweep_sub.add_parser("show", parents=[store], help="a sweep's status and its results per point")
    show.add_argument("sweep_id")
    show.add_argument("--json", action="store_true")
    show.add_argument("--metric", action="append", default=[], help="only these metrics (repeatable)")
    show.add_argument("--bootstrap", default="0", help="also a percentile bootstrap CI from this many resamples")
    export = sweep_sub.add_parser("export", parents=[store], help="a sweep's outcomes and summary as files")
    export.add_argument("sweep_id")
    export.add_argument("--format", default="csv", help="csv | parquet | json")
    export.add_argument("--dest", type=Path, default=None, help="folder (default: exports/<sweep_id>/)")
    resume = sweep_sub.add_parser("resume", parents=[store], help="continue a stopped sweep")
    resume.add_argument("sweep_id")
    _add_execution_flags(resume, executor_default=None)


def _add_execution_flags(parser: argparse.ArgumentParser, executor_default: str | None = "local") -> None:
    parser.add_argument("--executor", default=executor_default, help="local (worker processes) | ray")
    parser.add_argument("--workers", default=None, help="worker processes (default: one per core)")
    parser.add_argument("--ray-address", default=None, help="auto | ray://HOST:PORT (default: a local Ray for the sweep)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _whole(flag: str, text: str | None, low: int, high: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{flag}: {text!r} is not a whole number; allowed: {low} to {high}") from None
    if not low <= value <= high:
        raise BadInput(f"{flag}: {value} is out of range; allowed: {low} to {high}")
    return value


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec document: the TOML file if given, then the flags over it."""
    document: dict[str, Any] = load_spec(args.spec) if args.spec is not None else {}
    # Run flags set the base where they differ from `run`'s defaults (so a spec's base is not reset by them).
    flags = config_from_args(args).model_dump(mode="json", exclude={"seed", "simulation_id"})
    defaults = SimulationConfig().model_dump(mode="json")
    given = {k: v for k, v in flags.items() if v != defaults.get(k)}
    document["base"] = {**document.get("base", {}), **given}
    if args.seed is not None:
        raise BadInput("--seed: a sweep draws each run's seed from --sweep-seed; use that instead")
    if args.output_dir is not None:
        raise BadInput("--output-dir: a sweep writes no JSON logs; use `commonpool sweep export`")
    if args.simulation_id is not None:
        raise BadInput("--simulation-id: a sweep names its runs after the sweep; use --sweep-id")
    factors = dict(document.get("factors", {}))
    for item in args.vary:
        name, factor = parse_vary(item)
        factors[name] = factor
    document["factors"] = factors
    if args.sampler is not None:
        document["sampler"] = _choice("--sampler", args.sampler, SAMPLERS)
    for flag, key, low, high in (("--replications", "replications", 1, 100_000),
                                 ("--samples", "samples", 1, 1_000_000),
                                 ("--sweep-seed", "seed", 0, 2**63 - 1)):
        value = _whole(flag, getattr(args, key if key != "seed" else "sweep_seed"), low, high)
        if value is not None:
            document[key] = value
    if args.name is not None:
        document["name"] = args.name
    return document


def _execution(args: argparse.Namespace) -> tuple[str | None, int | None]:
    from commonpool.experiments.executor import EXECUTORS

    executor = None if args.executor is None else _choice("--executor", args.executor, EXECUTORS)
    workers = _whole("--workers", args.workers, 1, 1024)
    if args.ray_address is not None and executor != "ray":
        raise BadInput("--ray-address: only with --executor ray")
    return executor, workers


class _SweepBar:
    """A progress bar of runs done of the total, with failures and the time left."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="run", dynamic_ncols=True)

    def update(self, progress: Any) -> None:
        self.bar.total = progress.total
        self.bar.n = progress.done + progress.failed
        self.bar.set_postfix_str(f"failed {progress.failed}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def cmd_sweep(args: argparse.Namespace, store_root: Path) -> int:
    handlers = {"run": _run, "list": _list, "show": _show, "export": _export, "resume": _resume}
    try:
        from commonpool.store import Store

        return handlers[args.sweep_command](args, Store(store_root))
    except SpecError as exc:
        raise BadInput(str(exc)) from None


def _run(args: argparse.Namespace, store: Store) -> int:
    from commonpool.experiments.sweep import run_sweep

    spec = parse_spec(spec_from_args(args))
    executor, workers = _execution(args)
    if args.sweep_id is not None and (store.root / "sweeps" / args.sweep_id).exists():
        raise BadInput(f"--sweep-id: a sweep named {args.sweep_id!r} already exists in {store.root}; choose another")
    return _drive(args, store, lambda progress: run_sweep(
        spec, store, executor or "local", workers, args.ray_address, args.sweep_id, progress=progress))


def _resume(args: argparse.Namespace, store: Store) -> int:
    from commonpool.experiments.sweep import resume_sweep

    executor, workers = _execution(args)
    _known(store, args.sweep_id)
    return _drive(args, store, lambda progress: resume_sweep(
        store, args.sweep_id, executor, workers, args.ray_address, progress=progress))


def _drive(args: argparse.Namespace, store: Store, start: Any) -> int:
    bar = None if args.no_progress or not sys.stderr.isatty() else _SweepBar()
    try:
        result = start(bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    print(f"sweep {result.sweep_id}: {result.status}, {result.done} of {result.total} runs done, "
          f"{result.failed} failed, in {result.seconds:.1f}s")
    for run_id, reason in list(result.failures.items())[:5]:
        print(f"  failed {run_id}: {reason}")
    print(f"see: commonpool sweep show {result.sweep_id}")
    return 0 if result.status == "completed" else 1


def _known(store: Store, sweep_id: str) -> None:
    try:
        store.sweep(sweep_id)
    except LookupError:
        raise BadInput(f"sweep_id: no sweep named {sweep_id!r} in {store.root}; see `commonpool sweep list`") from None


def _list(args: argparse.Namespace, store: Store) -> int:
    sweeps = store.sweeps()
    if args.json:
        print(json.dumps([_public(s.meta, s.status) for s in sweeps], indent=2, default=str))
        return 0
    if not sweeps:
        print(f"no sweeps in {store.root}")
        return 0
    rows = [(s.sweep_id, s.status, str(s.meta.get("sampler", "")), f"{s.meta.get('runs_done', 0)}/{s.meta.get('runs_planned', '')}",
             str(s.meta.get("runs_failed", 0)), str(s.meta.get("started_at") or "")[:19]) for s in sweeps]
    _print_table(("sweep_id", "status", "sampler", "runs", "failed", "started"), rows)
    return 0


def _public(meta: dict[str, Any], status: str) -> dict[str, Any]:
    hidden = {"pid", "pid_start_time", "host"}
    return {**{k: v for k, v in meta.items() if k not in hidden}, "status": status}


def _show(args: argparse.Namespace, store: Store) -> int:
    from commonpool.experiments import results

    _known(store, args.sweep_id)
    info = store.sweep(args.sweep_id)
    data = results.load(store, args.sweep_id)
    bootstrap = _whole("--bootstrap", args.bootstrap, 0, 100_000) or 0
    table = results.summary(data, bootstrap=bootstrap)
    if args.metric:
        unknown = sorted(set(args.metric) - set(data.metrics))
        if unknown:
            raise BadInput(f"--metric: unknown metric {unknown[0]!r}; allowed: {', '.join(data.metrics)}")
        table = table[table["metric"].isin(args.metric)]
    paired = {f: t[t["metric"].isin(args.metric)] if args.metric else t for f, t in results.paired_comparisons(data).items()}
    metrics = args.metric or data.metrics
    sensitivity = {m: s for m in metrics if (s := _safe_sensitivity(results, data, m)) is not None}
    if args.json:
        print(json.dumps({
            "sweep": _public(info.meta, info.status),
            "summary": _records(table),
            "paired": {f: _records(t) for f, t in paired.items()},
            "sensitivity": {m: _records(t) for m, t in sensitivity.items()},
        }, indent=2, default=str))
        return 0
    meta = info.meta
    print(f"sweep {info.sweep_id}: {info.status}; {meta.get('sampler')} sampler, {meta.get('points')} points x "
          f"{meta.get('replications')} replications; {meta.get('runs_done')} done, {meta.get('runs_failed')} failed")
    if table.empty:
        print("no completed runs yet")
        return 0
    _print_frame(table)
    for factor, frame in paired.items():
        levels = data.spec.factors[factor]
        print(f"\npaired: {factor} {levels[1]!r} minus {levels[0]!r}, matched on seed")
        _print_frame(frame)
    for metric, frame in sensitivity.items():
        print(f"\nsensitivity of {metric} ({data.spec.sampler})")
        _print_frame(frame)
    return 0


def _safe_sensitivity(results: Any, data: Any, metric: str) -> Any:
    """Indices need every point of the design; a sweep still missing runs has none yet."""
    try:
        return results.sensitivity(data, metric)
    except ValueError:
        return None


def _records(frame: Any) -> list[dict[str, Any]]:
    from commonpool.metrics import plain

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _print_frame(frame: Any) -> None:
    _print_table(list(frame.columns), [[_cell(v) for v in row.values()] for row in _records(frame)])


def _export(args: argparse.Namespace, store: Store) -> int:
    from commonpool.experiments import results

    fmt = _choice("--format", args.format, ("csv", "parquet", "json"))
    _known(store, args.sweep_id)
    dest = args.dest or Path("exports") / args.sweep_id
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"--dest: {str(dest)!r} exists and is not a folder")
    from commonpool.csv_safe import neutralise_frame

    data = results.load(store, args.sweep_id)
    tables = {"outcomes": data.outcomes, "summary": results.summary(data)}
    dest.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        path = dest / f"{name}.{fmt}"
        if fmt == "csv":
            neutralise_frame(frame).to_csv(path, index=False)  # a spreadsheet opens it: no formulas
        elif fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            path.write_text(json.dumps(_records(frame), indent=1, default=str))
    info = store.sweep(args.sweep_id)
    (dest / "sweep.json").write_text(json.dumps(_public(info.meta, info.status), indent=2, default=str))
    print(f"wrote {', '.join(f'{n}.{fmt}' for n in tables)} and sweep.json to {dest}")
    return 0
