"""Continuing an interrupted, failed or cancelled run from where it stopped, without paying again.

A run is a deterministic function of its stored config and seed, except for
what the brains decided; and what they decided in the rounds already recorded
is in the store. So a resumed run replays those rounds from the store (the
pairs drawn, the deals settled, each side's memory of the last offer) rather
than asking any brain again, then carries on deciding the rest. No call is
made for a recorded round, whether its answers are in the cache or not, and
a decision that fell back to the rules brain stays exactly as recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from commonpool.config import SimulationConfig
from commonpool.engine import Deciders, RunProgress, RunResult, run_simulation, settle_round
from commonpool.ledger import Ledger
from commonpool.protocol import ACCEPTED, NO_RESOURCE, ExchangeBatch, World
from commonpool.store import RunWriter, Store
from commonpool.store.reader import sql_string
from commonpool.store.schema import OUTCOMES

RESUMABLE = ("interrupted", "failed", "cancelled")


class ResumeError(ValueError):
    """A run that cannot be resumed; the message says why."""


@dataclass
class Recorded:
    """A reopened run and the rounds it already holds, keyed by round number."""

    writer: RunWriter
    rounds: dict[int, dict[str, np.ndarray]]
    llm_totals: dict[str, float]
    next_call_id: int
    periods: frozenset[int] = frozenset()  # periods (from 1) whose end, and the next one's production, are recorded

    def has_round(self, round_: int) -> bool:
        return round_ in self.rounds

    def has_period(self, period: int) -> bool:
        return period in self.periods

    def replay_round(
        self,
        round_: int,
        world: World,
        ledger: Ledger,
        deciders: Deciders,
        ids: np.ndarray,
        initiator: np.ndarray,
        responder: np.ndarray,
        max_turns: int,
    ) -> int:
        """Bring the ledger, market history and memories to the end of a recorded round; returns its deals."""
        row = self.rounds[round_]
        if not (
            np.array_equal(row["exchange_id"], ids)
            and np.array_equal(row["initiator"], initiator)
            and np.array_equal(row["responder"], responder)
        ):
            raise ResumeError(
                f"round {round_} does not replay as recorded (different pairs); the stored config no longer reproduces the run"
            )
        batch = ExchangeBatch.open(round_, ids, initiator, responder, max_turns, None)
        batch.cur_a, batch.cur_qa, batch.cur_b, batch.cur_qb = row["res_a"], row["qty_a"], row["res_b"], row["qty_b"]
        accepted = row["outcome"] == ACCEPTED
        _, settlement = settle_round(world, ledger, batch, accepted)
        if not settlement.valid.all():
            raise ResumeError(f"round {round_}: a recorded deal no longer settles; the stored run is inconsistent")
        deciders.end_round(batch, row["outcome"])
        return int(accepted.sum())


def load_recorded(writer: RunWriter, resources: list[str]) -> Recorded:
    """Read the committed rounds of a reopened run straight from its Parquet parts."""
    con = duckdb.connect(":memory:")

    def source(table: str) -> str | None:
        files = writer.committed_files(table)
        return "read_parquet([" + ", ".join(sql_string(str(f)) for f in files) + "])" if files else None

    exchanges, offers, calls = source("exchanges"), source("offers"), source("llm_calls")
    ended = source("period_utility")
    periods = frozenset(
        int(p) for (p,) in (con.execute(f"SELECT DISTINCT period FROM {ended}").fetchall() if ended else [])
    )
    rounds: dict[int, dict[str, np.ndarray]] = {}
    if exchanges is not None:
        # The last proposal of each exchange is the offer both sides remember (and, if accepted, the deal).
        last_offer = (
            f"""SELECT exchange_id, arg_max(initiator_gives, turn) AS a, arg_max(initiator_gives_qty, turn) AS qa,
                       arg_max(responder_gives, turn) AS b, arg_max(responder_gives_qty, turn) AS qb
                FROM {offers} WHERE action IN ('propose', 'counter') GROUP BY exchange_id"""
            if offers is not None
            else "SELECT NULL::BIGINT AS exchange_id, NULL AS a, NULL::BIGINT AS qa, NULL AS b, NULL::BIGINT AS qb"
        )
        table = con.execute(
            f"""SELECT e.round, e.exchange_id, e.initiator_id, e.responder_id, e.outcome::VARCHAR AS outcome,
                       o.a::VARCHAR AS a, coalesce(o.qa, 0) AS qa, o.b::VARCHAR AS b, coalesce(o.qb, 0) AS qb
                FROM {exchanges} e LEFT JOIN ({last_offer}) o USING (exchange_id)
                ORDER BY e.exchange_id"""
        ).fetchnumpy()
        index = {name: k for k, name in enumerate(resources)}
        codes = {name: k for k, name in enumerate(OUTCOMES)}

        def coded(values: np.ndarray, lookup: dict[str, int]) -> np.ndarray:
            return np.array([lookup.get(v, NO_RESOURCE) if isinstance(v, str) else NO_RESOURCE for v in values], dtype=np.int64)

        round_of = np.asarray(table["round"])
        for round_ in np.unique(round_of).tolist():
            at = round_of == round_
            rounds[int(round_)] = {
                "exchange_id": np.asarray(table["exchange_id"])[at].astype(np.int64),
                "initiator": np.asarray(table["initiator_id"])[at].astype(np.int64),
                "responder": np.asarray(table["responder_id"])[at].astype(np.int64),
                "outcome": coded(np.asarray(table["outcome"])[at], codes).astype(np.int8),
                "res_a": coded(np.asarray(table["a"])[at], index),
                "qty_a": np.asarray(table["qa"])[at].astype(np.int64),
                "res_b": coded(np.asarray(table["b"])[at], index),
                "qty_b": np.asarray(table["qb"])[at].astype(np.int64),
            }
    totals = {"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    next_call_id = 1
    if calls is not None:
        count, prompt, completion, cost, last = con.execute(
            f"""SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
                       coalesce(sum(cost_usd), 0.0), coalesce(max(call_id), 0) FROM {calls}"""
        ).fetchone()
        totals = {"llm_calls": int(count), "prompt_tokens": int(prompt), "completion_tokens": int(completion), "cost_usd": float(cost)}
        next_call_id = int(last) + 1
    con.close()
    return Recorded(writer, rounds, totals, next_call_id, periods)


def resume_simulation(
    run_id: str,
    store: Store | Path | str,
    progress: Callable[[RunProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Continue run_id in its own folder from its last recorded round to the end."""
    store = store if isinstance(store, Store) else Store(Path(store))
    info = store.run(run_id)
    if info.status not in RESUMABLE:
        raise ResumeError(f"run {run_id!r} is {info.status}; only {', '.join(RESUMABLE)} runs can be resumed")
    config = SimulationConfig.model_validate(info.meta["config"])
    try:
        writer = RunWriter.reopen(store.root, run_id)
    except ValueError as exc:
        raise ResumeError(str(exc)) from None
    try:
        recorded = load_recorded(writer, [r.name for r in config.resources])
    except Exception:
        writer.close("failed", "resume could not read the recorded rounds")
        raise
    return run_simulation(config, store, progress=progress, should_stop=should_stop, resume=recorded)
