"""`commonpool` / `python -m commonpool`: run, list, show, query and export simulations.

Every subcommand takes --store PATH (default: $COMMONPOOL_STORE or data/).
Bad input prints one line naming the flag and what is allowed, exits 2, and
writes nothing.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pydantic import ValidationError

from commonpool.config import (
    DEFAULT_RESOURCES,
    MAX_PARTICIPANTS,
    ParticipantSpec,
    ResourceSpec,
    SimulationConfig,
    default,
    describe_validation_error,
)
from commonpool.llm.settings import served_api_base
from commonpool.personalities import Personality

if TYPE_CHECKING:
    from commonpool.engine import RunResult
    from commonpool.store import Store

EXIT_BAD_INPUT = 2
# Most rows `commonpool sql` prints (the console also caps a result's bytes).
MAX_SQL_ROWS = 1_000_000

# Config field -> the flag a CLI user typed, so errors name what they can fix.
FLAGS = {
    "num_participants": "--num-participants",
    "min_exchanges": "--min-exchanges",
    "max_exchanges": "--max-exchanges",
    "simulation_id": "--simulation-id",
    "seed": "--seed",
    "max_turns": "--max-turns",
    "resources": "--resources",
    "personalities": "--personalities",
    "pairing": "--pairing",
    "model": "--model",
    "facilitator_model": "--facilitator-model",
    "api_base": "--api-base",
    "concurrency": "--concurrency",
    "budget_usd": "--budget-usd",
    "cost_per_1k_prompt_tokens": "--price-per-1k-prompt",
    "cost_per_1k_completion_tokens": "--price-per-1k-completion",
    "custom_personalities": "--custom-personalities",
    "personality_models": "--personality-model",
    "on_llm_failure": "--on-llm-failure",
    "llm_timeout_s": "--llm-timeout",
    "llm_max_tokens": "--llm-max-tokens",
    "structured_output": "--structured-output",
    "roster": "--roster",
    "periods": "--periods",
    "discount": "--discount",
    "storable": "--storable",
    "spoilage": "--spoilage",
}


class BadInput(Exception):
    """A user error: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def default_store() -> Path:
    return Path(os.environ.get("COMMONPOOL_STORE") or "data")


def add_run_flags(run: argparse.ArgumentParser) -> None:
    """The flags that describe one run (also a sweep's base)."""
    # Numbers are parsed by SimulationConfig, so every bad value gets the same kind of message.
    # A flag left out is left to SimulationConfig too: its defaults are the CLI's and the dashboard's.
    run.add_argument("--num-participants", default=None, metavar="N",
                     help=f"2 to {MAX_PARTICIPANTS:,} (default: {default('num_participants')}; with --roster, its size)")
    run.add_argument("--min-exchanges", default=None, metavar="N", help=f"exchanges at least (default: {default('min_exchanges')})")
    run.add_argument("--max-exchanges", default=None, metavar="N",
                     help=f"exchanges at most; the run draws its count between the two (default: {default('max_exchanges')})")
    run.add_argument("--simulation-id", default=None, help="run id (default: generated)")
    run.add_argument("--output-dir", type=Path, default=None, help="also write the run's JSON log here")
    run.add_argument("--seed", default=None, help="random seed (default: drawn and recorded)")
    run.add_argument("--resources", default=None,
                     help="e.g. books,tools,repairs:skill (name or name:good|skill|time) (default: "
                          f"{', '.join(r.name for r in DEFAULT_RESOURCES)})")
    run.add_argument("--personalities", default=None,
                     help="mix, e.g. cautious=4,generous=3,strategic=3 (default: equal shares of "
                          f"{', '.join(default('personalities'))})")
    run.add_argument("--custom-personalities", type=Path, default=None, help="JSON file: list of {name, traits, description}")
    run.add_argument("--roster", type=Path, default=None, help="CSV or JSON roster of participants")
    run.add_argument("--max-turns", default=None, metavar="N",
                     help=f"messages per exchange, the opening proposal included, 2-20 (default: {default('max_turns')})")
    run.add_argument("--periods", default=None, metavar="P",
                     help="periods the exchanges are split over, 1-10,000; with more than one, every period "
                          f"produces, consumes and expires (default: {default('periods')})")
    run.add_argument("--discount", default=None, metavar="D",
                     help=f"weight of period t's utility: D^(t-1), 0 < D <= 1 (default: {default('discount')})")
    run.add_argument("--storable", default=None, metavar="NAME,...",
                     help="time or skill resources whose unused units carry over to the next period (default: none)")
    run.add_argument("--spoilage", default=None, metavar="NAME=S,...",
                     help="share of a storable resource's stock lost at each period's end, 0-1 (default: none)")
    run.add_argument("--no-facilitator", action="store_true", help="control run: no advice")
    run.add_argument("--pairing", default=None, help=f"random | need (default: {default('pairing')})")
    run.add_argument("--model", default=None, help="LiteLLM model for every participant (default: rules brain)")
    run.add_argument("--facilitator-model", default=None, help="LiteLLM model for the facilitator")
    run.add_argument("--personality-model", action="append", default=[], metavar="NAME=MODEL", help="model for one personality")
    run.add_argument("--api-base", default=None, help="OpenAI-compatible server URL (or OPENAI_API_BASE)")
    run.add_argument("--concurrency", default=None, help=f"LLM calls in flight at once (default: {default('concurrency')})")
    run.add_argument("--budget-usd", default=None, help="stop before spending more than this")
    run.add_argument("--on-llm-failure", default=None, help=f"fail | fallback (default: {default('on_llm_failure')})")
    run.add_argument("--price-per-1k-prompt", default=None, help="USD per 1,000 prompt tokens, for models LiteLLM has no price for")
    run.add_argument("--price-per-1k-completion", default=None, help="USD per 1,000 completion tokens")
    run.add_argument("--llm-timeout", default=None, metavar="SECONDS",
                     help="seconds a model may take to answer one request (default: 60)")
    run.add_argument("--llm-max-tokens", default=None, metavar="N",
                     help="most tokens of one reply, 16-32768 (default: 400 for a participant, 600 for the facilitator)")
    run.add_argument("--structured-output", default=None,
                     help="auto | json_schema | json_object | off: how the reply's shape is asked for (default: auto, "
                          "the protocol's JSON schema where LiteLLM knows the model takes one and to an --api-base server)")


def build_parser() -> Parser:
    top = Parser(add_help=False)
    top.add_argument("--store", type=Path, default=None, help="run store folder (default: $COMMONPOOL_STORE or data/)")
    # --store may also follow the subcommand; there it has no default of its own, which would
    # otherwise overwrite a --store given before the subcommand.
    store = Parser(add_help=False)
    store.add_argument("--store", type=Path, default=argparse.SUPPRESS, help="run store folder (default: $COMMONPOOL_STORE or data/)")
    parser = Parser(prog="commonpool", description=__doc__.splitlines()[0], parents=[top])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", parents=[store], help="run a simulation and store it")
    add_run_flags(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    runs = sub.add_parser("runs", parents=[store], help="list or show stored runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=Parser)
    listing = runs_sub.add_parser("list", parents=[store], help="every run, newest first")
    listing.add_argument("--json", action="store_true")
    show = runs_sub.add_parser("show", parents=[store], help="one run's status, config and counts")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")

    sql = sub.add_parser("sql", parents=[store], help="read-only SQL over the public tables")
    sql.add_argument("query")
    sql.add_argument("--format", default="table", help="table | csv | json")
    sql.add_argument("--limit", type=int, default=10_000)

    export = sub.add_parser("export", parents=[store], help="write one run's tables to files")
    export.add_argument("run_id")
    export.add_argument("--format", default="parquet", help="json | csv | parquet | duckdb")
    export.add_argument("--dest", type=Path, default=None, help="where (default: exports/<run_id>.<format>)")

    metrics = sub.add_parser("metrics", parents=[store],
                             help="a run's metrics (welfare, needs, inequality, prices, facilitator, network, by "
                                  "personality); several runs side by side")
    metrics.add_argument("run_id", nargs="+", help="one run, or several to compare side by side")
    metrics.add_argument("--json", action="store_true")

    resume = sub.add_parser("resume", parents=[store], help="continue an interrupted or failed run without paying again")
    resume.add_argument("run_id")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")

    roster = sub.add_parser("roster", parents=[store], help="print a generated roster to edit and run with --roster")
    roster.add_argument("--num-participants", default=str(default("num_participants")),
                        help=f"(default: {default('num_participants')})")
    roster.add_argument("--seed", default="0")
    roster.add_argument("--resources", default=None)
    roster.add_argument("--personalities", default=None)
    roster.add_argument("--periods", default="1", help="more than 1: draw what each member produces (produces: columns)")
    roster.add_argument("--format", default="csv", help="csv | json")

    from commonpool.experiments.commands import add_sweep_parser

    add_sweep_parser(sub, store)
    return parser


def _choice(flag: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise BadInput(f"{flag}: {value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return value


def parse_resources(text: str) -> list[ResourceSpec]:
    known = {r.name: r for r in DEFAULT_RESOURCES}
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, kind = (s.strip() for s in item.partition(":"))
        if kind:
            _choice(f"--resources ({name})", kind, ("good", "skill", "time"))
            try:
                specs.append(ResourceSpec(name=name, kind=kind))  # type: ignore[arg-type]
            except ValidationError:
                raise BadInput(
                    f"--resources: {name!r} is not a usable name (1-40 letters, digits, spaces, - _ ')"
                ) from None
        elif name in known:
            specs.append(known[name])
        else:
            raise BadInput(
                f"--resources: unknown resource {name!r}; allowed: {', '.join(known)}, "
                "or a new one as name:good|skill|time"
            )
    if not specs:
        raise BadInput("--resources: the list is empty; name at least two resources")
    return specs


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            mix[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise BadInput(f"--personalities: {item!r} should be name=count, e.g. cautious=4") from None
    if not mix:
        raise BadInput("--personalities: the mix is empty; e.g. cautious=4,generous=3,strategic=3")
    return mix


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    from commonpool.population import RosterError, roster_from_csv, roster_from_json

    fields: dict[str, object] = {"facilitator": not args.no_facilitator}
    optional = {
        "num_participants": args.num_participants,
        "min_exchanges": args.min_exchanges,
        "max_exchanges": args.max_exchanges,
        "max_turns": args.max_turns,
        "periods": args.periods,
        "discount": args.discount,
        "pairing": args.pairing and _choice("--pairing", args.pairing, ("random", "need")),
        "concurrency": args.concurrency,
        "on_llm_failure": args.on_llm_failure and _choice("--on-llm-failure", args.on_llm_failure, ("fail", "fallback")),
        "simulation_id": args.simulation_id,
        "seed": args.seed,
        "model": args.model,
        "facilitator_model": args.facilitator_model,
        "api_base": args.api_base or served_api_base(),
        "budget_usd": args.budget_usd,
        "cost_per_1k_prompt_tokens": args.price_per_1k_prompt,
        "cost_per_1k_completion_tokens": args.price_per_1k_completion,
        "llm_timeout_s": args.llm_timeout,
        "llm_max_tokens": args.llm_max_tokens,
        "structured_output": args.structured_output
        and _choice("--structured-output", args.structured_output, ("auto", "json_schema", "json_object", "off")),
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if args.resources is not None:
        fields["resources"] = parse_resources(args.resources)
    if args.personalities is not None:
        fields["personalities"] = parse_mix(args.personalities)
    if args.storable is not None:
        fields["storable"] = [name.strip() for name in args.storable.split(",") if name.strip()]
    if args.spoilage is not None:
        fields["spoilage"] = parse_spoilage(args.spoilage)
    if args.personality_model:
        pairs = [item.partition("=") for item in args.personality_model]
        if any(not sep or not model for _, sep, model in pairs):
            raise BadInput("--personality-model: use NAME=MODEL, e.g. strategic=gpt-4o-mini")
        fields["personality_models"] = {name: model for name, _, model in pairs}
    if args.custom_personalities is not None:
        fields["custom_personalities"] = read_custom_personalities(args.custom_personalities)
    if args.roster is not None:
        text = _read(args.roster, "--roster")
        try:
            roster = roster_from_json(text) if args.roster.suffix.lower() == ".json" else roster_from_csv(text)
        except RosterError as exc:
            raise BadInput(f"--roster: {exc}") from None
        fields["roster"] = roster
        if args.num_participants is None:
            fields["num_participants"] = len(roster)
        if args.resources is None:
            fields["resources"] = resources_of(roster)
    return validated(fields)


def parse_spoilage(text: str) -> dict[str, float]:
    """--spoilage vegetables=0.2,bread loaves=0.5 as {resource: share}."""
    shares: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.rpartition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise BadInput(f"--spoilage: use NAME=SHARE, e.g. vegetables=0.2 (got {item!r})")
    return shares


def read_custom_personalities(path: Path) -> list[Personality]:
    """The presets in a JSON file; BadInput naming the entry and what is wrong with it."""
    from commonpool.textfile import TextFileError, load_json

    flag = "--custom-personalities"
    try:
        raw = load_json(_read(path, flag))
    except TextFileError as exc:
        raise BadInput(f"{flag}: {str(path)!r}: {exc}") from None
    if not isinstance(raw, list):
        raise BadInput(f"{flag}: expected a JSON list of {{name, traits, description}}, got a {type(raw).__name__}")
    presets = []
    for k, entry in enumerate(raw, start=1):
        try:
            presets.append(Personality.model_validate(entry))
        except ValidationError as exc:
            raise BadInput(f"{flag}: entry {k}: {describe_validation_error(exc)}") from None
    return presets


def resources_of(roster: list[ParticipantSpec]) -> list[ResourceSpec]:
    """The resources a roster names, in order; kinds from the default set, else good."""
    known = {r.name: r for r in DEFAULT_RESOURCES}
    names = dict.fromkeys(name for member in roster for part in (member.holdings, member.needs, member.wants)
                          for name in part)
    try:
        return [known.get(name) or ResourceSpec(name=name, kind="good") for name in names]
    except ValidationError:
        raise BadInput("--roster: a resource name is not usable (1-40 letters, digits, spaces, - _ ')") from None


def validated(fields: dict[str, object]) -> SimulationConfig:
    try:
        return SimulationConfig.model_validate(fields)
    except ValidationError as exc:
        raise BadInput(flag_message(exc)) from None


def flag_message(error: ValidationError) -> str:
    """The first problem, with config field names shown as the flags a user typed."""
    return re.sub(r"\b[a-z_]+\b", lambda word: FLAGS.get(word.group(0), word.group(0)), describe_validation_error(error))


def _read(path: Path, flag: str) -> str:
    """A user's text file, bounded in size and decoded as UTF-8; BadInput naming flag if it cannot be."""
    from commonpool.textfile import TextFileError, read_text

    try:
        return read_text(path)
    except TextFileError as exc:
        raise BadInput(f"{flag}: {str(path)!r}: {exc}") from None
    except OSError as exc:
        raise BadInput(f"{flag}: cannot read {str(path)!r} ({exc.strerror})") from None


def _check_folder(folder: Path, flag: str) -> None:
    """folder is, or can be made, a folder this process writes in; BadInput naming flag if not.

    Checked before a run or export starts, and without leaving anything behind: the
    probe is an anonymous temporary file in the nearest folder that exists.
    """
    existing = folder.absolute()
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder.absolute() else f"cannot create {str(folder)!r}: "
        raise BadInput(f"{flag}: {where}{str(existing)!r} exists and is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise BadInput(f"{flag}: cannot write in {str(existing)!r} ({exc.strerror})") from None


# Any id the store can hold (a sweep's runs have ids longer than --simulation-id allows).
STORED_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _run_id(run_id: str) -> str:
    """A run id as typed, refused in one line if it could not be one (a path, say)."""
    if not STORED_RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"run_id: {run_id!r} is not a run id (1-128 letters, digits, . _ or -, starting with a letter or "
            "digit; not a path); see `commonpool runs list`"
        )
    return run_id


def _check_llm_workers() -> None:
    """COMMONPOOL_LLM_WORKERS, read before anything is written."""
    from commonpool.llm.workers import worker_count

    try:
        worker_count()
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _start_llm_workers() -> None:
    """The first LLM worker, now: its LiteLLM import (seconds) runs while this process sets the run up."""
    from commonpool.llm.workers import shared_pool, worker_count

    if worker_count():
        shared_pool().start()


def _note_roster_engines(config: SimulationConfig) -> None:
    """Say so when --model or --personality-model will not reach roster rows that chose their own engine."""
    if config.roster is None or not (config.model or config.personality_models):
        return
    chosen = [member for member in config.roster if member.brain]
    if chosen:
        engines = ", ".join(sorted({str(member.brain) for member in chosen}))
        print(f"commonpool: note: {len(chosen)} of {len(config.roster)} --roster rows name their own engine in the brain "
              f"column ({engines}), which wins over --model/--personality-model; leave it blank to use them", file=sys.stderr)


def _check_credentials(config: SimulationConfig) -> None:
    """Every model the run names has its key (LiteLLM knows which variable), before anything is written.

    Asked of the first LLM worker (see _start_llm_workers), so LiteLLM is imported once, there.
    """
    from commonpool.llm.preflight import missing_credentials

    problem = missing_credentials(config)
    if problem:
        raise BadInput(problem)


def cmd_run(args: argparse.Namespace, store_root: Path) -> int:
    config = config_from_args(args)
    _note_roster_engines(config)
    if config.uses_llm():
        _check_llm_workers()
        _start_llm_workers()
    from commonpool.engine import run_simulation
    from commonpool.store import RunExistsError, Store, export_run

    store = Store(store_root)
    if config.simulation_id and store.has_run(config.simulation_id):
        raise BadInput(
            f"--simulation-id: a run named {config.simulation_id!r} already exists in {store_root}; choose another id"
        )
    _check_folder(store_root, "--store")
    if args.output_dir is not None:
        _check_folder(args.output_dir, "--output-dir")
    if config.uses_llm():
        import commonpool.brains.llm  # noqa: F401  the run's next import, done while the worker loads LiteLLM

        _check_credentials(config)
    bar = _progress_bar(args.no_progress)
    try:
        result = run_simulation(config, store, progress=bar.update if bar else None)
    except RunExistsError:
        raise BadInput(f"--simulation-id: a run named {config.simulation_id!r} already exists; choose another id") from None
    finally:
        if bar:
            bar.close()
    _report(result, store)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        log = export_run(store, result.run_id, "json", args.output_dir / f"{result.run_id}.json")
        print(f"JSON log: {log}")
    return 0 if result.status == "completed" else 1


def _report(result: RunResult, store: Store) -> None:
    print(f"run {result.run_id}: {result.status}, {result.exchanges} exchanges, {result.accepted} accepted "
          f"({result.accepted / max(result.exchanges, 1):.0%}) in {result.seconds:.2f}s")
    con = store.connect()
    try:
        if result.exchanges:
            # A completed run's figures were just computed and stored (run_metrics); asking again costs 0.1-1 s.
            if result.metrics is not None:
                s: dict[str, object] = result.metrics
            else:
                from commonpool import metrics

                s = metrics.summary(con, result.run_id)

            def shown(key: str, spec: str) -> str:  # a figure with no value (e.g. no needs at all) is "-"
                return "-" if s.get(key) is None else format(s[key], spec)

            needs = f"needs met {shown('need_fulfilment_initial', '.0%')} -> {shown('need_fulfilment_final', '.0%')}"
            if (store.run(result.run_id).meta.get("config") or {}).get("periods", 1) > 1:
                # Needs recur each period: what is held after the last consumption says nothing of needs met.
                from commonpool import metrics

                per = metrics.need_fulfilment_by_period(con, result.run_id)["fulfilment"]
                if len(per):
                    needs = (f"needs met per period {per.mean():.0%} on average "
                             f"(period 1 {per.iloc[0]:.0%}, period {len(per)} {per.iloc[-1]:.0%})")
            print(f"welfare {shown('welfare_initial', '.1f')} -> {shown('welfare_final', '.1f')}, {needs}, "
                  f"Gini of holdings {shown('gini_holdings_initial', '.3f')} -> {shown('gini_holdings_final', '.3f')}")
        if result.llm.get("llm_calls"):
            llm = result.llm
            unpriced = con.execute(
                "SELECT count(*) FROM llm_calls WHERE run_id = ? AND cost_usd IS NULL AND NOT cached AND error IS NULL",
                [result.run_id],
            ).fetchone()[0]
            cost = f"${llm['cost_usd']:.4f}" + (
                f" (+ {unpriced} calls at no known price: set --price-per-1k-prompt/--price-per-1k-completion)"
                if unpriced else ""
            )
            print(f"LLM: {int(llm['llm_calls'])} calls, {int(llm['prompt_tokens'])} prompt + "
                  f"{int(llm['completion_tokens'])} completion tokens, {cost}")
    finally:
        con.close()
    if result.error:
        print(f"error: {result.error}")  # already scrubbed of keys by commonpool.llm
    print(f"stored in {result.path}")
    print(f"explore: commonpool metrics {result.run_id}   |   the dashboard: bash scripts/dashboard.sh")


def cmd_resume(args: argparse.Namespace, store_root: Path) -> int:
    from commonpool.resume import ResumeError, resume_simulation
    from commonpool.store import RunNotFoundError

    _run_id(args.run_id)
    _check_llm_workers()
    _check_stored_credentials(args.run_id, store_root)
    bar = _progress_bar(args.no_progress)
    try:
        result = resume_simulation(args.run_id, store_root, progress=bar.update if bar else None)
    except RunNotFoundError:
        raise BadInput(f"run_id: no run named {args.run_id!r} in {store_root}; see `commonpool runs list`") from None
    except ResumeError as exc:
        raise BadInput(f"run_id: {exc}") from None
    finally:
        if bar:
            bar.close()
    from commonpool.store import Store

    _report(result, Store(store_root))
    return 0 if result.status == "completed" else 1


def _check_stored_credentials(run_id: str, store_root: Path) -> None:
    """_check_credentials for a stored run's config (a run that cannot be read is left to resume to report)."""
    from commonpool.store import Store

    try:
        config = SimulationConfig.model_validate(Store(store_root).run(run_id).meta["config"])
    except Exception:
        return
    if config.uses_llm():
        _start_llm_workers()
        _check_credentials(config)


class _Bar:
    def __init__(self) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm(total=None, unit="exch", file=sys.stderr, dynamic_ncols=True)

    def update(self, progress: object) -> None:
        self.tqdm.total = progress.exchanges_target  # type: ignore[attr-defined]
        self.tqdm.n = progress.exchanges_done  # type: ignore[attr-defined]
        postfix = {"accepted": progress.accepted}  # type: ignore[attr-defined]
        llm = progress.llm  # type: ignore[attr-defined]
        if llm.get("llm_calls"):
            postfix.update(calls=int(llm["llm_calls"]), usd=f"{llm['cost_usd']:.4f}")
        from commonpool.llm.limit import slowed

        if note := slowed(llm):  # the server timed out or said 429: fewer requests in flight
            postfix["in flight"] = note
        self.tqdm.set_postfix(postfix, refresh=False)
        self.tqdm.refresh()

    def close(self) -> None:
        self.tqdm.close()


def _progress_bar(disabled: bool) -> _Bar | None:
    return None if disabled or not sys.stderr.isatty() else _Bar()


def cmd_runs(args: argparse.Namespace, store_root: Path) -> int:
    from commonpool.store import RunNotFoundError, Store

    store = Store(store_root)
    if args.runs_command == "list":
        if args.json:  # every run's whole record
            print(json.dumps([_public(r) for r in store.runs()], indent=2, default=str))
            return 0
        from commonpool.store.listing import table_rows

        listed = store.run_list()
        if not listed:
            print(f"no runs in {store_root}")
            return 0
        _print_table(("run_id", "status", "exchanges", "accepted", "engine", "started"), table_rows(listed))
        return 0
    try:
        info = store.run(_run_id(args.run_id))
    except RunNotFoundError:
        raise BadInput(f"run_id: no run named {args.run_id!r} in {store_root}; see `commonpool runs list`") from None
    if args.json:
        print(json.dumps(_public(info), indent=2, default=str))
    else:
        print("\n".join(_run_text(_public(info))))
    return 0


# Bookkeeping of the store and the process that wrote a run: not part of what a run is.
_INTERNAL = ("pid", "pid_start_time", "host", "manifest", "committed_parts")


def _public(info: object) -> dict[str, object]:
    data = {k: v for k, v in info.meta.items() if k not in _INTERNAL}  # type: ignore[attr-defined]
    data["run_id"], data["status"] = info.run_id, info.status  # type: ignore[attr-defined]
    return data


def _shown(value: object) -> str:
    """A value as a person reads it: '-' for none, JSON (not Python) for anything nested."""
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _config_text(config: dict[str, object]) -> dict[str, str]:
    """A stored config, field by field, as `runs show` prints it."""
    shown: dict[str, str] = {}
    order = {field: k for k, field in enumerate(SimulationConfig.model_fields)}
    for field, value in sorted(config.items(), key=lambda item: order.get(item[0], len(order))):
        if field == "resources" and isinstance(value, list):
            shown[field] = ", ".join(r["name"] if r.get("kind", "good") == "good" else f"{r['name']} ({r['kind']})"
                                     for r in value)
        elif field == "personalities" and isinstance(value, dict):
            shown[field] = ", ".join(f"{name} {_number(float(weight))}" for name, weight in value.items())
        elif field == "custom_personalities" and isinstance(value, list):
            shown[field] = ", ".join(p["name"] for p in value) or "-"
        elif field == "roster" and isinstance(value, list):
            shown[field] = f"{len(value):,} members"
        else:
            shown[field] = _shown(value)
    return shown


def _run_text(data: dict[str, object]) -> list[str]:
    """`runs show` for people: what happened, then the config that made it."""
    meta = dict(data)
    config = meta.pop("config", None)
    lines = [f"run {meta.pop('run_id')}: {meta.pop('status')}"]
    done, target, accepted = meta.pop("exchanges_recorded", None), meta.pop("exchanges_target", None), meta.pop("accepted", None)
    facts: dict[str, str] = {}
    if done is not None:
        facts["exchanges"] = f"{done:,}" + (f" of {target:,}" if target is not None else "")
        if accepted is not None:
            facts["exchanges"] += f", {accepted:,} accepted ({accepted / max(done, 1):.0%})"
    started, finished, seconds = meta.pop("started_at", None), meta.pop("finished_at", None), meta.pop("duration_s", None)
    facts["started"] = str(started or "-").replace("T", " ")[:19]
    if finished:
        facts["finished"] = str(finished).replace("T", " ")[:19] + (f" ({seconds:.2f} s)" if seconds is not None else "")
    calls = meta.pop("llm_calls", 0) or 0
    prompt, completion, cost = (meta.pop(k, 0) or 0 for k in ("prompt_tokens", "completion_tokens", "cost_usd"))
    if calls:
        facts["LLM"] = f"{int(calls):,} calls, {int(prompt):,} prompt + {int(completion):,} completion tokens, ${cost:.4f}"
    facts.update({key: _shown(value) for key, value in meta.items() if value is not None})
    width = max(len(k) for k in facts)
    lines += [f"  {key:<{width}}  {value}" for key, value in facts.items()]
    if isinstance(config, dict):
        fields = _config_text(config)
        width = max(len(k) for k in fields)
        lines += ["config:", *(f"  {key:<{width}}  {value}" for key, value in fields.items())]
    return lines


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_sql(args: argparse.Namespace, store_root: Path) -> int:
    from commonpool.store import ConsoleError, Store, console_query

    fmt = _choice("--format", args.format, ("table", "csv", "json"))
    if not 1 <= args.limit <= MAX_SQL_ROWS:
        raise BadInput(f"--limit: {args.limit} is out of range; allowed: 1 to {MAX_SQL_ROWS:,}")
    try:
        result = console_query(Store(store_root), args.query, limit=args.limit)
    except ConsoleError as exc:
        raise BadInput(f"query: {exc}") from None
    table = result.rows
    if fmt == "json":
        # A MAP is a JSON object ({"books": 1.5}), as in every CSV, not a list of [key, value] pairs.
        print(json.dumps(table.to_pylist(maps_as_pydicts="lossy"), indent=2, default=str))
    elif fmt == "csv":
        from commonpool.csv_safe import arrow_csv

        # Data for programs: nested values as JSON, text exactly as stored (no formula quotes).
        sys.stdout.write(arrow_csv(table, formulas=False))
    else:
        rows = [[("NULL" if v is None else str(v)) for v in row.values()] for row in table.to_pylist()]
        _print_table(table.column_names, rows)
    if result.truncated:
        print(f"(showing the first {args.limit} rows)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace, store_root: Path) -> int:
    from commonpool.store import RunNotFoundError, Store, export_run

    fmt = _choice("--format", args.format, ("json", "csv", "parquet", "duckdb"))
    suffix = {"json": ".json", "duckdb": ".duckdb", "csv": "-csv", "parquet": "-parquet"}[fmt]
    dest = args.dest or Path("exports") / f"{_run_id(args.run_id)}{suffix}"
    store = Store(store_root)
    try:
        store.run(_run_id(args.run_id))
    except RunNotFoundError:
        raise BadInput(f"run_id: no run named {args.run_id!r} in {store_root}; see `commonpool runs list`") from None
    if dest.exists() or dest.is_symlink():
        raise BadInput(f"--dest: {str(dest)!r} already exists; choose a new path")
    _check_folder(dest.parent, "--dest")
    try:
        path = export_run(store, args.run_id, fmt, dest)  # type: ignore[arg-type]
    except RunNotFoundError:
        raise BadInput(f"run_id: no run named {args.run_id!r} in {store_root}; see `commonpool runs list`") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise BadInput(f"--dest: cannot write {str(dest)!r} ({exc.strerror or exc})") from None
    print(path)
    return 0


def cmd_roster(args: argparse.Namespace, store_root: Path) -> int:
    import numpy as np

    from commonpool.population import generate, roster_to_csv, roster_to_json

    fmt = _choice("--format", args.format, ("csv", "json"))
    fields: dict[str, object] = {"num_participants": args.num_participants, "seed": args.seed,
                                 "min_exchanges": 1, "max_exchanges": 1, "periods": args.periods}
    if args.resources is not None:
        fields["resources"] = parse_resources(args.resources)
    if args.personalities is not None:
        fields["personalities"] = parse_mix(args.personalities)
    config = validated(fields)
    population = generate(config, np.random.default_rng(config.seed))
    # A blank brain: the run's engine (--personality-model, then --model, else rules) decides, as the
    # dashboard's generated roster does; writing "rules" here made --model silently do nothing.
    specs = [spec.model_copy(update={"brain": None}) for spec in population.to_specs()]
    print(roster_to_json(specs) if fmt == "json" else roster_to_csv(specs, population.resources), end="")
    return 0


def cmd_metrics(args: argparse.Namespace, store_root: Path) -> int:
    from commonpool.store import RunNotFoundError, Store

    store = Store(store_root)
    run_ids = list(dict.fromkeys(_run_id(r) for r in args.run_id))
    for run_id in run_ids:
        try:
            store.run(run_id)
        except RunNotFoundError:
            raise BadInput(f"run_id: no run named {run_id!r} in {store_root}; see `commonpool runs list`") from None
    con = store.connect(run_ids)
    try:
        shown = [_run_figures(con, run_id) for run_id in run_ids]
    finally:
        con.close()
    if args.json:
        print(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2))
    elif len(shown) == 1:
        _print_figures(shown[0])
    else:
        _print_side_by_side(shown)
    return 0


# Outcome figures (metrics.run_metrics) shown in their own sections; the rest of
# run_metrics beyond summary() and the per-personality figures goes under "outcomes".
_PRICE_FIGURES = ("price_sd_first", "price_sd_last", "price_df_first", "price_df_last")
_FACILITATOR_FIGURES = ("adherence_followed", "adherence_distance", "anchoring")


def _run_figures(con: object, run_id: str) -> dict[str, object]:
    """One run's figures by section, from the functions in commonpool.metrics (never recomputed here).

    NaN is not JSON: a figure a run does not have (no trades, no facilitator) is None.
    """
    from commonpool import metrics

    summary = metrics.summary(con, run_id)  # type: ignore[arg-type]
    outcomes = metrics.run_metrics(con, run_id)  # type: ignore[arg-type]
    groups = metrics.by_personality(con, run_id)  # type: ignore[arg-type]
    sectioned = {*summary, *_PRICE_FIGURES, *_FACILITATOR_FIGURES}
    # Only a run of several periods has periods to show; a one-period run's figures are as they were.
    periods = metrics.by_period(con, run_id) if metrics.run_periods(con, run_id) > 1 else None  # type: ignore[arg-type]
    return {
        "run_id": run_id,
        "summary": summary,
        "prices": {key: outcomes.get(key) for key in _PRICE_FIGURES},
        "facilitator": {key: outcomes.get(key) for key in _FACILITATOR_FIGURES},
        "outcomes": {key: value for key, value in outcomes.items() if key not in sectioned and ":" not in key},
        "network": metrics.network_summary(con, run_id),  # type: ignore[arg-type]
        "by_personality": [{k: metrics.plain(v) for k, v in row.items()} for row in groups.to_dict("records")],
        **({"by_period": [{k: metrics.plain(v) for k, v in row.items()} for row in periods.to_dict("records")]}
           if periods is not None else {}),
    }


_SECTIONS = ("summary", "prices", "facilitator", "outcomes", "network")


def _print_figures(figures: dict[str, object]) -> None:
    flat = [(key, value) for section in _SECTIONS for key, value in figures[section].items()]  # type: ignore[attr-defined]
    width = max(len(key) for key, _ in flat)
    for key, value in flat:
        print(f"{key:>{width}}: {_cell(value)}")
    groups: list[dict[str, object]] = figures["by_personality"]  # type: ignore[assignment]
    if groups:
        print()
        _print_table(list(groups[0]), [[_cell(v) for v in row.values()] for row in groups])
    by_period: list[dict[str, object]] = figures.get("by_period") or []  # type: ignore[assignment]
    if by_period:
        print()
        _print_table(list(by_period[0]), [[_cell(v) for v in row.values()] for row in by_period])


def _print_side_by_side(runs: list[dict[str, object]]) -> None:
    """One row per figure, one column per run: every figure any of the runs has, per personality too."""
    columns: dict[str, list[object]] = {}
    for k, figures in enumerate(runs):
        rows = [(key, value) for section in _SECTIONS for key, value in figures[section].items()]  # type: ignore[attr-defined]
        for group in figures["by_personality"]:  # type: ignore[attr-defined]
            rows += [(f"{key}:{group['personality']}", value) for key, value in group.items() if key != "personality"]
        for key, value in rows:
            columns.setdefault(key, [None] * len(runs))[k] = value
    header = ["figure", *(str(f["run_id"]) for f in runs)]
    table = [[key, *(_cell(v) for v in values)] for key, values in columns.items()]
    widths = [max(len(row[c]) for row in (header, *table)) for c in range(len(header))]
    for row in (header, *table):
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))]
        print("  ".join(cells).rstrip())


def _number(value: float) -> str:
    """A float for people: thousands separators, about 4 significant digits, never 2.192e+04."""
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if magnitude >= 1000 or value == int(value):
        return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
    decimals = min(12, 3 - math.floor(math.log10(magnitude))) if magnitude else 0
    text = f"{value:.{max(decimals, 0)}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) or "0"


def _cell(value: object) -> str:
    """A table cell: '-' for nothing, numbers as _number writes them."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return _number(value)
    return str(value)


def cmd_sweep(args: argparse.Namespace, store_root: Path) -> int:
    from commonpool.experiments.commands import cmd_sweep as sweep

    return sweep(args, store_root)


COMMANDS = {
    "run": cmd_run, "resume": cmd_resume, "runs": cmd_runs, "sql": cmd_sql, "export": cmd_export, "roster": cmd_roster, "metrics": cmd_metrics,
    "sweep": cmd_sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    from commonpool.llm.settings import load_env

    load_env()  # before anything reads COMMONPOOL_STORE, OPENAI_API_BASE or a key
    parser = build_parser()
    args = parser.parse_args(argv)
    store_root = args.store or default_store()
    try:
        if store_root.exists() and not store_root.is_dir():
            raise BadInput(f"--store: {str(store_root)!r} exists and is not a folder (set by --store or $COMMONPOOL_STORE)")
        return COMMANDS[args.command](args, store_root)
    except BadInput as exc:
        print(f"commonpool: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("commonpool: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # A full disk (or quota) is the user's to fix, not a bug: one line, no traceback.
        # The store keeps every flush committed before it, ready for `resume`.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or args.command not in ("run", "resume", "export"):
            raise
        where = store_root
        if args.command == "export":  # an export fills the disk it is written to
            where = args.dest.parent if args.dest else Path("exports")
        print(f"commonpool: error: no space left on device under {where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
