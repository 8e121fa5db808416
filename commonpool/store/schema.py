"""The public tables of the run store: one place that names every column and its type.

The writer validates chunks against these schemas, the reader builds empty views
from them when a table has no file yet, and the README documents them. Every
table carries run_id. Resource columns hold resource names (dictionary-encoded
on disk, so repeating a name costs nothing).
"""

from __future__ import annotations

import pyarrow as pa

_RES = pa.dictionary(pa.int16(), pa.string())

# Tables written as Parquet chunks under data/runs/<run_id>/<table>/.
TABLES: dict[str, pa.Schema] = {
    "resources": pa.schema(
        [
            ("run_id", pa.string()),
            ("resource_id", pa.int16()),
            ("name", pa.string()),
            ("kind", pa.string()),
        ]
    ),
    "participants": pa.schema(
        [
            ("run_id", pa.string()),
            ("participant_id", pa.int32()),
            ("name", pa.string()),
            ("personality", pa.string()),
            ("traits", pa.string()),  # JSON object of the personality's trait values
            ("notes", pa.string()),
            ("brain", pa.string()),  # "rules" or a LiteLLM model string
            ("initial_utility", pa.float64()),  # economy.utility of the initial holdings
        ]
    ),
    "initial_holdings": pa.schema(
        [
            ("run_id", pa.string()),
            ("participant_id", pa.int32()),
            ("resource", _RES),
            ("quantity", pa.int64()),
        ]
    ),
    "needs": pa.schema(
        [
            ("run_id", pa.string()),
            ("participant_id", pa.int32()),
            ("resource", _RES),
            ("need", pa.int64()),
            ("want", pa.float64()),
        ]
    ),
    "exchanges": pa.schema(
        [
            ("run_id", pa.string()),
            ("exchange_id", pa.int64()),
            ("round", pa.int32()),
            ("period", pa.int32()),  # the period (from 1) the exchange happened in; 1 in a one-period run
            ("initiator_id", pa.int32()),
            ("responder_id", pa.int32()),
            ("outcome", _RES),  # accepted, rejected, no_deal, invalid, error
            ("turns", pa.int16()),
            ("initiator_gives", _RES),
            ("initiator_gives_qty", pa.int64()),
            ("responder_gives", _RES),
            ("responder_gives_qty", pa.int64()),
            ("initiator_utility_before", pa.float64()),
            ("initiator_utility_after", pa.float64()),
            ("responder_utility_before", pa.float64()),
            ("responder_utility_after", pa.float64()),
            ("reason", pa.string()),
        ]
    ),
    "offers": pa.schema(
        [
            ("run_id", pa.string()),
            ("exchange_id", pa.int64()),
            ("turn", pa.int16()),
            ("speaker_id", pa.int32()),
            ("action", _RES),  # propose, counter, accept, reject
            ("initiator_gives", _RES),
            ("initiator_gives_qty", pa.int64()),
            ("responder_gives", _RES),
            ("responder_gives_qty", pa.int64()),
            ("message", pa.string()),  # the speaker's words: model text, or the rules brain's template
            ("source", _RES),  # rules, llm, fallback
            ("fallback_reason", pa.string()),
        ]
    ),
    "advice": pa.schema(
        [
            ("run_id", pa.string()),
            ("exchange_id", pa.int64()),
            ("round", pa.int32()),
            ("initiator_gives", _RES),
            ("initiator_gives_qty", pa.int64()),
            ("responder_gives", _RES),
            ("responder_gives_qty", pa.int64()),
            ("typical_rate", pa.float64()),  # past mean units of initiator_gives per unit of responder_gives
            ("typical_rate_trades", pa.int64()),  # accepted trades behind typical_rate
            ("initiator_deals", pa.int64()),  # initiator's accepted deals before this exchange
            ("initiator_meetings", pa.int64()),
            ("responder_deals", pa.int64()),
            ("responder_meetings", pa.int64()),
            ("note", pa.string()),
            ("source", _RES),
        ]
    ),
    "valuations": pa.schema(
        [
            ("run_id", pa.string()),
            ("round", pa.int32()),
            ("resource", _RES),
            ("valuation", pa.float64()),
        ]
    ),
    "transfers": pa.schema(
        [
            ("run_id", pa.string()),
            ("exchange_id", pa.int64()),
            ("from_id", pa.int32()),
            ("to_id", pa.int32()),
            ("resource", _RES),
            ("quantity", pa.int64()),
        ]
    ),
    "llm_calls": pa.schema(
        [
            ("run_id", pa.string()),
            ("call_id", pa.int64()),
            ("exchange_id", pa.int64()),
            ("turn", pa.int16()),
            ("role", pa.string()),  # initiator, responder, facilitator
            ("participant_id", pa.int32()),
            ("model", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("latency_ms", pa.float64()),
            ("cached", pa.bool_()),
            ("attempt", pa.int16()),
            ("error", pa.string()),
            ("finish_reason", pa.string()),  # why the reply ended (stop, length...); NULL without a reply
        ]
    ),
    # A period's ledger events besides swaps (production.py): units produced, consumed,
    # expired or spoiled; quantity > 0, its sign given by kind (produced adds, the rest remove).
    "flows": pa.schema(
        [
            ("run_id", pa.string()),
            ("period", pa.int32()),
            ("participant_id", pa.int32()),
            ("resource", _RES),
            ("quantity", pa.int64()),
            ("kind", _RES),  # produced, consumed, expired, spoiled
        ]
    ),
    # Each participant's outcome at each period's end (runs of more than one period).
    "period_utility": pa.schema(
        [
            ("run_id", pa.string()),
            ("period", pa.int32()),
            ("participant_id", pa.int32()),
            ("utility", pa.float64()),  # economy.utility of the holdings just before consumption
            ("discounted_utility", pa.float64()),  # discount^(period-1) x utility; summed: the run's utility
            ("needed", pa.int64()),  # units needed this period
            ("unmet", pa.int64()),  # units of that need not consumed
        ]
    ),
    # Outcome metrics of a run, computed once by metrics.run_metrics when the run
    # ends, so that a sweep of thousands of runs is summarised without rescanning
    # their exchanges. A metric of a group carries it after a colon
    # ("surplus_share:generous").
    "run_metrics": pa.schema(
        [
            ("run_id", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
        ]
    ),
}

# Columns added to a table after runs had been stored without them. Such a table is
# read by column name, so an older run's rows read NULL there.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"llm_calls": ("finish_reason",), "exchanges": ("period",)}

OUTCOMES = ("accepted", "rejected", "no_deal", "invalid", "error")
# How every chart, filter and table names an outcome: the stored word, and what it
# means where the word alone misleads (protocol.py defines each outcome).
OUTCOME_LABELS: dict[str, str] = {
    "accepted": "accepted",
    "rejected": "rejected (walked away early)",
    "no_deal": "no_deal (last offer refused)",
    "invalid": "invalid (ledger refused it)",
    "error": "error",
}
ACTIONS = ("propose", "counter", "accept", "reject")
FLOW_KINDS = ("produced", "consumed", "expired", "spoiled")
SOURCES = ("rules", "llm", "fallback")
RUN_STATUSES = ("running", "completed", "failed", "interrupted", "cancelled")

# The `runs` view: one row per run, built by the reader from each run.json (not
# from Parquet, because a run's status and counters change while it runs). The
# writer checks meta and update() values against these types, so a wrong type
# fails in the engine that wrote it rather than later in every reader.
RUNS: pa.Schema = pa.schema(
    [
        ("run_id", pa.string()),
        ("status", pa.string()),  # one of RUN_STATUSES; "interrupted" is computed by the reader
        ("seed", pa.int64()),
        ("engine", pa.string()),
        ("model", pa.string()),
        ("facilitator", pa.string()),  # "rules", a model string, or "off" (control run)
        ("num_participants", pa.int64()),
        ("exchanges_target", pa.int64()),
        ("exchanges_recorded", pa.int64()),
        ("accepted", pa.int64()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("llm_calls", pa.int64()),
        ("error", pa.string()),
        ("config", pa.string()),  # JSON text of run.json's "config" object
        ("sweep_id", pa.string()),  # the sweep that planned this run, NULL for a single run
        ("point_id", pa.int64()),  # its point of the sweep's design, from 0
        ("replication", pa.int64()),  # its replication at that point, from 0
        ("point", pa.string()),  # JSON object: factor name -> the value of this run
    ]
)

SWEEP_STATUSES = RUN_STATUSES

# The `sweeps` view: one row per sweep, built by the reader from each
# <store>/sweeps/<sweep_id>/sweep.json (written by the sweep's driver, like run.json
# by a run's writer; "interrupted" is computed when the driver is gone).
SWEEPS: pa.Schema = pa.schema(
    [
        ("sweep_id", pa.string()),
        ("status", pa.string()),  # one of SWEEP_STATUSES
        ("name", pa.string()),
        ("sampler", pa.string()),  # grid, random, lhs, sobol, morris
        ("executor", pa.string()),  # local or ray
        ("workers", pa.int64()),
        ("seed", pa.int64()),  # the sweep seed every run's seed is drawn from
        ("points", pa.int64()),
        ("replications", pa.int64()),
        ("runs_planned", pa.int64()),
        ("runs_done", pa.int64()),
        ("runs_failed", pa.int64()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", pa.float64()),
        ("error", pa.string()),
        ("spec", pa.string()),  # JSON text of the experiment spec
    ]
)
