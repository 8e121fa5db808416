"""Turns each round's arrays into rows of the public tables, in batches.

Rounds hand over numpy arrays; nothing here loops over rows in Python. Arrays
are concatenated and converted to Arrow once per flush, which is what lets a
rules run record ~100k exchanges a second.

A run recorded in one flush (a rules run of up to flush_every exchanges: every
run of a typical sweep) also keeps the Arrow tables it wrote, so its outcome
metrics are computed from memory (run_tables) instead of reading the files back.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from commonpool.brains.rules import advice_notes, offer_messages, offer_repeats
from commonpool.population import Population
from commonpool.protocol import NO_RESOURCE, AdviceBatch, Decisions, ExchangeBatch, World, speaker_is_initiator
from commonpool.store import RunWriter
from commonpool.store.schema import ACTIONS, FLOW_KINDS, OUTCOMES, SOURCES, TABLES


def coded(codes: np.ndarray, names: pa.Array) -> pa.DictionaryArray:
    """Names by code as a dictionary column; a negative code is NULL."""
    codes = np.asarray(codes)
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int16), mask=codes < 0), names)


def plain(codes: np.ndarray, names: pa.Array) -> pa.Array:
    codes = np.asarray(codes)
    return names.take(pa.array(np.where(codes < 0, 0, codes), mask=codes < 0))


class Recorder:
    def __init__(self, writer: RunWriter, population: Population, flush_every: int) -> None:
        self.writer = writer
        self.population = population
        self.flush_every = flush_every
        self.resources = pa.array(population.resources, pa.string())
        self.names = pa.array(population.names, pa.string())
        self.outcomes = pa.array(OUTCOMES)
        self.actions = pa.array(ACTIONS)
        self.sources = pa.array(SOURCES)
        self.flow_kinds = pa.array(FLOW_KINDS)
        self.parts: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.pending = 0
        self.period = 1  # the period under way, from 1: the engine moves it on as periods end
        self.llm_rows: list[dict[str, object]] = []
        self.totals: dict[str, float] = {"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        # Every table this recorder wrote, while that is the whole run (see run_tables); None once it is not.
        self.kept: dict[str, list[pa.Table]] | None = defaultdict(list)

    def _append(self, table: str, columns: dict[str, object]) -> None:
        """Hand the writer a table's rows as Arrow of the table's schema, and keep them while the run is whole."""
        rows = _arrow(table, columns)
        self.writer.append(table, {name: rows.column(name) for name in rows.column_names})
        if self.kept is not None:
            self.kept[table].append(rows)

    def run_tables(self, final_holdings: np.ndarray) -> dict[str, pa.Table] | None:
        """The whole run as Arrow tables named as in the store (without run_id), or None.

        None unless this recorder wrote the population and flushed the rounds only
        once, at the end: only then does it hold every row. final_holdings is the
        ledger's (initial holdings plus every transfer, which the tests check).
        """
        if self.kept is None or "participants" not in self.kept:
            return None
        tables = {name: pa.concat_tables(self.kept.get(name) or [_empty(name)]) for name in TABLES if name != "run_metrics"}
        pop = self.population
        tables["final_holdings"] = _arrow(
            "initial_holdings",
            {
                "participant_id": np.repeat(np.arange(pop.size, dtype=np.int32), len(pop.resources)),
                "resource": coded(np.tile(np.arange(len(pop.resources)), pop.size), self.resources),
                "quantity": final_holdings.ravel(),
            },
        )
        return tables

    # --- static tables -----------------------------------------------------------------------

    def write_population(self, initial_utility: np.ndarray) -> None:
        pop, n, r = self.population, self.population.size, len(self.population.resources)
        self._append(
            "resources",
            {"resource_id": np.arange(r, dtype=np.int16), "name": pop.resources, "kind": pop.kinds},
        )
        traits = [json.dumps({t: float(pop.traits[t][i]) for t in pop.traits}) for i in range(n)]
        self._append(
            "participants",
            {
                "participant_id": np.arange(n, dtype=np.int32),
                "name": pop.names,
                "personality": pop.personalities,
                "traits": traits,
                "notes": pop.notes,
                "brain": pop.brains,
                "initial_utility": initial_utility,
            },
        )
        ids = np.repeat(np.arange(n, dtype=np.int32), r)
        res = coded(np.tile(np.arange(r), n), self.resources)
        self._append("initial_holdings", {"participant_id": ids, "resource": res, "quantity": pop.holdings.ravel()})
        self._append(
            "needs", {"participant_id": ids, "resource": res, "need": pop.needs.ravel(), "want": pop.wants.ravel()}
        )
        self.writer.flush()

    # --- per round ---------------------------------------------------------------------------

    def add_offers(self, batch: ExchangeBatch, rows: np.ndarray, decisions: Decisions) -> None:
        size = len(rows)
        self.parts["offers"].append(
            {
                "exchange_id": batch.exchange_ids[rows],
                "turn": np.full(size, batch.turn, dtype=np.int16),
                "speaker_id": batch.speakers(rows),
                "initiator_speaks": np.full(size, speaker_is_initiator(batch.turn)),
                "action": decisions.action,
                "res_a": decisions.res_a,
                "qty_a": decisions.qty_a,
                "res_b": decisions.res_b,
                "qty_b": decisions.qty_b,
                "source": decisions.source,
                "message": decisions.message if decisions.message is not None else np.full(size, None, dtype=object),
                "reason": decisions.reason if decisions.reason is not None else np.full(size, None, dtype=object),
            }
        )

    def add_advice(self, round_: int, world: World, batch: ExchangeBatch, advice: AdviceBatch) -> None:
        size = len(batch.exchange_ids)
        rate, trades = world.history.typical_rate(advice.res_a, advice.res_b)
        h = world.history
        self.parts["advice"].append(
            {
                "exchange_id": batch.exchange_ids,
                "round": np.full(size, round_, dtype=np.int32),
                "initiator": batch.initiator,
                "responder": batch.responder,
                "res_a": advice.res_a,
                "qty_a": advice.qty_a,
                "res_b": advice.res_b,
                "qty_b": advice.qty_b,
                "typical_rate": rate,
                "typical_rate_trades": trades,
                "initiator_deals": h.deals[batch.initiator],
                "initiator_meetings": h.meetings[batch.initiator],
                "responder_deals": h.deals[batch.responder],
                "responder_meetings": h.meetings[batch.responder],
                "source": advice.source,
                "note": advice.note if advice.note is not None else np.full(size, None, dtype=object),
            }
        )
        if world.valuations is not None:
            r = len(world.valuations)
            self.parts["valuations"].append(
                {"round": np.full(r, round_, dtype=np.int32), "resource": np.arange(r), "valuation": world.valuations}
            )

    def add_exchanges(
        self,
        batch: ExchangeBatch,
        outcome: np.ndarray,
        turns: np.ndarray,
        agreed: np.ndarray,
        reason: np.ndarray,
        initiator_utility: tuple[np.ndarray, np.ndarray],
        responder_utility: tuple[np.ndarray, np.ndarray],
    ) -> None:
        size = len(batch.exchange_ids)
        self.parts["exchanges"].append(
            {
                "exchange_id": batch.exchange_ids,
                "round": np.full(size, batch.round, dtype=np.int32),
                "period": np.full(size, self.period, dtype=np.int32),
                "initiator_id": batch.initiator,
                "responder_id": batch.responder,
                "outcome": outcome,
                "turns": turns,
                "res_a": np.where(agreed, batch.cur_a, NO_RESOURCE),
                "qty_a": np.where(agreed, batch.cur_qa, 0),
                "res_b": np.where(agreed, batch.cur_b, NO_RESOURCE),
                "qty_b": np.where(agreed, batch.cur_qb, 0),
                "agreed": agreed,
                "initiator_utility_before": initiator_utility[0],
                "initiator_utility_after": initiator_utility[1],
                "responder_utility_before": responder_utility[0],
                "responder_utility_after": responder_utility[1],
                "reason": reason,
            }
        )
        self.pending += size

    def add_transfers(self, batch: ExchangeBatch, settled: np.ndarray) -> None:
        """Two rows per settled swap: a's units to the responder, b's units to the initiator."""
        k = np.flatnonzero(settled)
        ids = batch.exchange_ids[k]
        i, j = batch.initiator[k], batch.responder[k]
        self.parts["transfers"].append(
            {
                "exchange_id": np.concatenate([ids, ids]),
                "from_id": np.concatenate([i, j]),
                "to_id": np.concatenate([j, i]),
                "resource": np.concatenate([batch.cur_a[k], batch.cur_b[k]]),
                "quantity": np.concatenate([batch.cur_qa[k], batch.cur_qb[k]]),
            }
        )

    def add_flows(self, period: int, kind: int, units: np.ndarray) -> None:
        """A row per participant x resource that a period's flow of this kind moved (units > 0)."""
        who, res = np.nonzero(units)
        self.parts["flows"].append(
            {
                "period": np.full(len(who), period, dtype=np.int32),
                "participant_id": who.astype(np.int32),
                "resource": res,
                "quantity": units[who, res].astype(np.int64),
                "kind": np.full(len(who), kind, dtype=np.int16),
            }
        )

    def add_period_utility(
        self, period: int, utility: np.ndarray, discounted: np.ndarray, needed: np.ndarray, unmet: np.ndarray
    ) -> None:
        n = len(utility)
        self.parts["period_utility"].append(
            {
                "period": np.full(n, period, dtype=np.int32),
                "participant_id": np.arange(n, dtype=np.int32),
                "utility": utility,
                "discounted_utility": discounted,
                "needed": needed.astype(np.int64),
                "unmet": unmet.astype(np.int64),
            }
        )

    def add_llm_calls(self, rows: list[dict[str, object]]) -> None:
        self.llm_rows.extend(rows)
        for row in rows:
            self.totals["llm_calls"] += 1
            for key in ("prompt_tokens", "completion_tokens"):
                self.totals[key] += int(row.get(key) or 0)
            self.totals["cost_usd"] += float(row.get("cost_usd") or 0.0)

    def llm_totals(self) -> dict[str, float]:
        return dict(self.totals)

    def discard_round(self) -> None:
        """Forget the rows of a round that could not finish; its LLM calls, and the flows of a
        period that ended before it, happened and stay."""
        for table in [t for t in self.parts if t not in ("flows", "period_utility")]:
            del self.parts[table]
        self.pending = 0

    def end_round(self, done: int, accepted: int) -> None:
        if self.pending >= self.flush_every:
            # Recorded in several flushes: its rows live in the store, not all here.
            self.kept = None
            self.flush(done, accepted)

    # --- flush -------------------------------------------------------------------------------

    def flush(self, done: int, accepted: int) -> None:
        merged = {name: _concat(parts) for name, parts in self.parts.items() if parts}
        self.parts.clear()
        self.pending = 0
        if "offers" in merged:
            self._append("offers", self._offers(merged["offers"]))
        if "advice" in merged:
            self._append("advice", self._advice(merged["advice"]))
            v = merged["valuations"]
            self._append(
                "valuations",
                {"round": v["round"], "resource": coded(v["resource"], self.resources), "valuation": v["valuation"]},
            )
        if "exchanges" in merged:
            self._append("exchanges", self._exchanges(merged["exchanges"]))
        if "transfers" in merged:
            t = merged["transfers"]
            self._append(
                "transfers",
                {
                    "exchange_id": t["exchange_id"],
                    "from_id": t["from_id"].astype(np.int32),
                    "to_id": t["to_id"].astype(np.int32),
                    "resource": coded(t["resource"], self.resources),
                    "quantity": t["quantity"],
                },
            )
        if "flows" in merged:
            f = merged["flows"]
            self._append(
                "flows",
                {
                    "period": f["period"],
                    "participant_id": f["participant_id"],
                    "resource": coded(f["resource"], self.resources),
                    "quantity": f["quantity"],
                    "kind": coded(f["kind"], self.flow_kinds),
                },
            )
        if "period_utility" in merged:
            self._append("period_utility", merged["period_utility"])
        if self.llm_rows:
            columns = {key: [row.get(key) for row in self.llm_rows] for key in self.llm_rows[0]}
            self._append("llm_calls", columns)
            self.llm_rows = []
        self.writer.flush()
        self.writer.update(exchanges_recorded=done, accepted=accepted, **self.totals)

    def _swap_columns(self, c: dict[str, np.ndarray]) -> dict[str, object]:
        return {
            "initiator_gives": coded(c["res_a"], self.resources),
            "initiator_gives_qty": pa.array(c["qty_a"], pa.int64(), mask=c["res_a"] < 0),
            "responder_gives": coded(c["res_b"], self.resources),
            "responder_gives_qty": pa.array(c["qty_b"], pa.int64(), mask=c["res_b"] < 0),
        }

    def _offers(self, c: dict[str, np.ndarray]) -> dict[str, object]:
        # A round's offers are flushed with its exchanges, so every turn of an exchange is here.
        repeats = offer_repeats(c["exchange_id"], c["turn"], c["action"], c["res_a"], c["qty_a"], c["res_b"], c["qty_b"])
        template = offer_messages(
            c["action"], c["turn"], c["initiator_speaks"], plain(c["res_a"], self.resources), c["qty_a"],
            plain(c["res_b"], self.resources), c["qty_b"], repeats,
        )
        return {
            "exchange_id": c["exchange_id"],
            "turn": c["turn"],
            "speaker_id": c["speaker_id"].astype(np.int32),
            "action": coded(c["action"], self.actions),
            **self._swap_columns(c),
            "message": _prefer(c["message"], template),
            "source": coded(c["source"], self.sources),
            "fallback_reason": pa.array(c["reason"], pa.string()),
        }

    def _advice(self, c: dict[str, np.ndarray]) -> dict[str, object]:
        template = advice_notes(
            plain(c["res_a"], self.resources), c["qty_a"], plain(c["res_b"], self.resources), c["qty_b"],
            c["typical_rate"], c["typical_rate_trades"],
            plain(c["initiator"], self.names), (c["initiator_deals"], c["initiator_meetings"]),
            plain(c["responder"], self.names), (c["responder_deals"], c["responder_meetings"]),
        )
        return {
            "exchange_id": c["exchange_id"],
            "round": c["round"],
            **self._swap_columns(c),
            "typical_rate": pa.array(c["typical_rate"], from_pandas=True),
            "typical_rate_trades": c["typical_rate_trades"],
            "initiator_deals": c["initiator_deals"],
            "initiator_meetings": c["initiator_meetings"],
            "responder_deals": c["responder_deals"],
            "responder_meetings": c["responder_meetings"],
            "note": _prefer(c["note"], template),
            "source": coded(c["source"], self.sources),
        }

    def _exchanges(self, c: dict[str, np.ndarray]) -> dict[str, object]:
        return {
            "exchange_id": c["exchange_id"],
            "round": c["round"],
            "period": c["period"],
            "initiator_id": c["initiator_id"].astype(np.int32),
            "responder_id": c["responder_id"].astype(np.int32),
            "outcome": coded(c["outcome"], self.outcomes),
            "turns": c["turns"],
            **self._swap_columns(c),
            "initiator_utility_before": c["initiator_utility_before"],
            "initiator_utility_after": c["initiator_utility_after"],
            "responder_utility_before": c["responder_utility_before"],
            "responder_utility_after": c["responder_utility_after"],
            "reason": pa.array(c["reason"], pa.string()),
        }


def _arrow(table: str, columns: dict[str, object]) -> pa.Table:
    """columns as an Arrow table of table's schema (run_id left to the writer)."""
    fields = [f for f in TABLES[table] if f.name != "run_id"]
    arrays = [
        values.cast(f.type) if isinstance(values, pa.Array) else pa.array(values, f.type)
        for f, values in ((f, columns[f.name]) for f in fields)
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _empty(table: str) -> pa.Table:
    return pa.schema([f for f in TABLES[table] if f.name != "run_id"]).empty_table()


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _prefer(words: np.ndarray, template: pa.Array) -> pa.Array:
    """A model's own words where it gave some, the template elsewhere."""
    given = pa.array(words, pa.string())
    if given.null_count == len(given):
        return template
    return pc.coalesce(given, template)
