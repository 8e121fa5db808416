"""The analyses: every metric is one DuckDB query over the public tables.

The dashboard, the CLI and the tests call these functions, so a number in a
chart, in `commonpool metrics` and in a test is the same number. Each function
takes a connection from ``Store(root).connect()`` and returns a pandas
DataFrame (a dict for the summaries); the contract is docs/metrics-api.md and
the definitions are also tabled in docs/MODEL.md.

Conventions shared by every query:

- Utility is never recomputed here: it is read from what the engine recorded
  with economy.utility. A participant's utility at the start is
  participants.initial_utility; at the end it is the ``*_utility_after`` of
  their last accepted exchange (nothing else changes holdings), else the
  initial one.
- Need fulfilment is economy.NEED_FULFILMENT_SQL over (held, need) rows.
- Holdings are valued at the facilitator's valuations of the run's last
  round (the same prices for the initial and final holdings, so a change in
  their Gini is a change of distribution, not of prices). A control run has
  no facilitator and so no valuations: each unit then counts 1.
- Windows split a run's exchanges (all outcomes) into ``windows`` equal
  slices by exchange_id, numbered 0..windows-1 (DuckDB's ntile, so slice
  sizes differ by at most one).
- Float sums, means, SDs and correlations that run_metrics reads are ordered
  aggregates (``sum(x ORDER BY key)`` on a key unique within the group):
  DuckDB otherwise adds floats in whatever order rows reach the aggregate,
  which differs between identical runs in the last bit; in a fixed order the
  same tables give the same numbers to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import json
import threading
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from commonpool import economy
from commonpool.config import SimulationConfig
from commonpool.economy import NEED_FULFILMENT_SQL
from commonpool.facilitator import MarketHistory
from commonpool.optimum import best_mutual_swaps, utilitarian_optimum
from commonpool.personalities import Traits
from commonpool.population import Population
from commonpool.protocol import World
from commonpool.store.errors import RunNotFoundError
from commonpool.store.reader import sql_string

# A trade counts as individually rational for a side when its utility did not
# fall by more than float noise (both sides' utilities are recomputed sums).
_TOLERANCE = 1e-9

# A dispersion (SD) resting on fewer degrees of freedom than this is withheld
# (NULL, "too few trades"/"too few holders"): at 5 df the 95% interval of an SD
# already spans [0.62 s, 2.45 s] (chi-square), and at 1 df an SD of exactly 0
# only says two trades were alike.
MIN_DISPERSION_DF = 5

# --- shared CTEs ---------------------------------------------------------------------------------
# Each is defined once and pasted into the queries that need it; {runs} is the
# run filter (a literal IN-list, so DuckDB can skip other runs' Parquet files).

_SIDES = """
sides AS (  -- one row per participant per exchange it took part in, from its own side
    SELECT run_id, exchange_id, outcome, turns, 'initiator' AS role,
           initiator_id AS participant_id, responder_id AS partner_id,
           initiator_utility_after - initiator_utility_before AS gain,
           responder_utility_after - responder_utility_before AS partner_gain,
           initiator_utility_after AS utility_after
    FROM exchanges WHERE {runs}
    UNION ALL
    SELECT run_id, exchange_id, outcome, turns, 'responder',
           responder_id, initiator_id,
           responder_utility_after - responder_utility_before,
           initiator_utility_after - initiator_utility_before,
           responder_utility_after
    FROM exchanges WHERE {runs}
)"""

_UTILITY = _SIDES + """,
people AS (
    SELECT run_id, participant_id, name, personality, initial_utility FROM participants WHERE {runs}
),
last_deal AS (  -- utility after each participant's last accepted exchange
    SELECT run_id, participant_id, arg_max(utility_after, exchange_id) AS utility_after
    FROM sides WHERE outcome = 'accepted' GROUP BY run_id, participant_id
),
utility AS (  -- initial and final utility of every participant
    SELECT p.run_id, p.participant_id, p.name, p.personality,
           p.initial_utility AS initial,
           coalesce(d.utility_after, p.initial_utility) AS final
    FROM people AS p LEFT JOIN last_deal AS d USING (run_id, participant_id)
)"""

_NEED_ROWS = """
need_rows AS (  -- participant x resource: units needed and held, at the start and at the end
    SELECT n.run_id, n.participant_id, 'initial' AS "when", n.need, coalesce(h.quantity, 0) AS held
    FROM needs AS n LEFT JOIN initial_holdings AS h USING (run_id, participant_id, resource)
    WHERE n.{runs}
    UNION ALL
    SELECT n.run_id, n.participant_id, 'final', n.need, coalesce(h.quantity, 0)
    FROM needs AS n LEFT JOIN final_holdings AS h USING (run_id, participant_id, resource)
    WHERE n.{runs}
)"""

_HOLDING_VALUES = """
last_valuations AS (  -- the facilitator's valuations of the run's last round
    SELECT run_id, resource, arg_max(valuation, round) AS valuation
    FROM valuations WHERE {runs} GROUP BY run_id, resource
),
prices AS (  -- control runs have no valuations: one unit counts 1
    SELECT r.run_id, r.name AS resource, coalesce(v.valuation, 1.0) AS price
    FROM resources AS r LEFT JOIN last_valuations AS v ON v.run_id = r.run_id AND v.resource = r.name
    WHERE r.{runs}
),
held AS (
    SELECT run_id, participant_id, 'initial' AS "when", resource, quantity FROM initial_holdings WHERE {runs}
    UNION ALL
    SELECT run_id, participant_id, 'final', resource, quantity FROM final_holdings WHERE {runs}
),
holding_values AS (  -- each participant's holdings at those prices, at the start and at the end
    SELECT p.run_id, p.participant_id, w."when", coalesce(sum(h.quantity * pr.price ORDER BY h.resource), 0) AS value
    FROM participants AS p
    CROSS JOIN (VALUES ('initial'), ('final')) AS w("when")
    LEFT JOIN held AS h ON h.run_id = p.run_id AND h.participant_id = p.participant_id AND h."when" = w."when"
    LEFT JOIN prices AS pr ON pr.run_id = h.run_id AND pr.resource = h.resource
    WHERE p.{runs}
    GROUP BY p.run_id, p.participant_id, w."when"
)"""

# Gini (1912), rank form, of the values of a group ranked i = 1..n (ascending) in columns i, n, value.
_GINI = "2 * sum(i * value ORDER BY i) / nullif(max(n) * sum(value ORDER BY i), 0) - (max(n) + 1) / max(n)"

# Long form of the two distributed quantities: (run, quantity, when, participant, value).
_DISTRIBUTION = (
    _UTILITY
    + ","
    + _HOLDING_VALUES
    + """,
distribution AS (
    SELECT run_id, 'utility' AS quantity, 'initial' AS "when", participant_id, initial AS value FROM utility
    UNION ALL SELECT run_id, 'utility', 'final', participant_id, final FROM utility
    UNION ALL SELECT run_id, 'holdings', "when", participant_id, value FROM holding_values
),
ranked AS (  -- ascending rank i = 1..n of each value within its distribution
    SELECT *, row_number() OVER (PARTITION BY run_id, quantity, "when" ORDER BY value, participant_id) AS i,
           count(*) OVER (PARTITION BY run_id, quantity, "when") AS n
    FROM distribution
),
inequality AS (
    -- Gini (1912), rank form: G = 2 sum_i i x_(i) / (n sum_i x_i) - (n + 1) / n.
    -- Nash welfare (Nash 1950; Kaneko & Nakamura 1979) as the geometric mean of
    -- utilities, 0 when anyone's is 0. Rawls (1971): the least utility.
    SELECT run_id, quantity, "when",
           """
    + _GINI
    + """ AS gini,
           CASE WHEN min(value) > 0 THEN exp(avg(ln(greatest(value, 1e-300)) ORDER BY i)) ELSE 0.0 END AS nash,
           min(value) AS minimum
    FROM ranked GROUP BY run_id, quantity, "when"
)"""
)

_WINDOWED = """
windowed AS (  -- each exchange's window: equal slices by exchange_id
    SELECT *, ntile($windows) OVER (PARTITION BY run_id ORDER BY exchange_id) - 1 AS "window"
    FROM exchanges WHERE {runs}
)"""

_RATES = (
    _WINDOWED
    + """,
rates AS (  -- every accepted swap as a rate of its alphabetical pair
    SELECT run_id, exchange_id, "window",
           least(initiator_gives, responder_gives) || '/' || greatest(initiator_gives, responder_gives) AS pair,
           CASE WHEN initiator_gives < responder_gives
                THEN initiator_gives_qty::DOUBLE / responder_gives_qty
                ELSE responder_gives_qty::DOUBLE / initiator_gives_qty END AS rate
    FROM windowed WHERE outcome = 'accepted'
)"""
)

_EDGES = """
meetings AS (  -- one row per exchange, the pair in id order
    SELECT run_id, least(initiator_id, responder_id) AS a, greatest(initiator_id, responder_id) AS b,
           initiator_id, responder_id, exchange_id, outcome = 'accepted' AS traded
    FROM exchanges WHERE {runs}
),
trade_edges AS (  -- the trade network: undirected, unweighted, both directions listed
    SELECT DISTINCT run_id, a AS u, b AS v FROM meetings WHERE traded
    UNION SELECT DISTINCT run_id, b, a FROM meetings WHERE traded
),
degrees AS (SELECT run_id, u, count(*) AS degree FROM trade_edges GROUP BY run_id, u),
triangles AS (  -- links among each node's partners, each counted once
    SELECT e1.run_id, e1.u, count(*) AS links
    FROM trade_edges AS e1
    JOIN trade_edges AS e2 ON e2.run_id = e1.run_id AND e2.u = e1.u AND e1.v < e2.v
    JOIN trade_edges AS e3 ON e3.run_id = e1.run_id AND e3.u = e1.v AND e3.v = e2.v
    GROUP BY e1.run_id, e1.u
),
nodes AS (
    -- Local clustering coefficient (Watts & Strogatz 1998): links among a node's
    -- trade partners / (k (k - 1) / 2); 0 when k < 2 (the networkx convention).
    SELECT p.run_id, p.participant_id, p.name, p.personality,
           coalesce(d.degree, 0) AS degree,
           CASE WHEN coalesce(d.degree, 0) < 2 THEN 0.0
                ELSE coalesce(t.links, 0) / (d.degree * (d.degree - 1) / 2.0) END AS clustering
    FROM participants AS p
    LEFT JOIN degrees AS d ON d.run_id = p.run_id AND d.u = p.participant_id
    LEFT JOIN triangles AS t ON t.run_id = p.run_id AND t.u = p.participant_id
    WHERE p.{runs}
)"""


def memory_connection(
    run_id: str, tables: dict[str, pa.Table], config: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection where one run's tables, held in memory, read as the store's views do.

    tables are named as the public tables (final_holdings included) and lack
    run_id, which every view adds; `runs` has the run's run_id and config (as
    JSON text, as in the store). The engine computes a finished run's metrics
    here from what it just recorded, with the same queries as over the store,
    instead of reading its files back (which costs more than the queries).

    It is a cursor on one in-memory database per thread, its views temporary
    (they vanish with the cursor, and no other cursor sees them): opening a
    fresh database cost ~18-35 ms, a sixth of a small run's metrics, which a
    sweep pays for every run.
    """
    base = getattr(_MEMORY, "database", None)
    if base is None:
        base = _MEMORY.database = duckdb.connect(":memory:")
    con = base.cursor()
    for name, table in tables.items():
        con.register(f"_{name}", table)
        con.execute(f'CREATE TEMP VIEW "{name}" AS SELECT {sql_string(run_id)} AS run_id, * FROM "_{name}"')
    settings = sql_string(json.dumps(config)) if config is not None else "NULL"
    con.execute(f"CREATE TEMP VIEW runs AS SELECT {sql_string(run_id)} AS run_id, {settings}::VARCHAR AS config")
    return con


_MEMORY = threading.local()


def _runs(run_ids: Sequence[str], column: str = "run_id") -> str:
    return f"{column} IN ({', '.join(sql_string(r) for r in run_ids)})"


def _sql(template: str, run_ids: Sequence[str]) -> str:
    # The CTEs write "{runs}" for an unqualified filter and "x.{runs}" for a qualified one.
    return template.replace("{runs}", _runs(run_ids))


def _check_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> None:
    found = {row[0] for row in con.execute(f"SELECT run_id FROM runs WHERE {_runs(run_ids)}").fetchall()}
    for run_id in run_ids:
        if run_id not in found:
            raise RunNotFoundError(run_id)


def _frame(
    con: duckdb.DuckDBPyConnection, template: str, run_id: str, params: dict[str, Any] | None = None
) -> pd.DataFrame:
    _check_runs(con, [run_id])
    return con.execute(_sql(template, [run_id]), params or {}).df()


def plain(value: Any) -> Any:
    """A JSON-friendly Python scalar: numpy numbers become int/float, NaN becomes None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- summary -------------------------------------------------------------------------------------

_SUMMARY_SQL = (
    "WITH"
    + _DISTRIBUTION
    + ","
    + _NEED_ROWS
    + f""",
selected AS (SELECT run_id FROM runs WHERE {{runs}}),
activity AS (
    SELECT run_id,
           count(*) AS exchanges,
           count(*) FILTER (outcome = 'accepted') AS accepted,
           count(*) FILTER (outcome = 'invalid') AS invalid,
           count(*) FILTER (outcome = 'error') AS errors,
           avg(turns) FILTER (outcome = 'accepted') AS mean_turns_to_agreement,
           count(*) FILTER (outcome = 'accepted'
                            AND initiator_utility_after >= initiator_utility_before - {_TOLERANCE}
                            AND responder_utility_after >= responder_utility_before - {_TOLERANCE}) AS rational
    FROM exchanges WHERE {{runs}} GROUP BY run_id
),
decisions AS (  -- fallbacks among the decisions an LLM was asked for
    SELECT run_id, count(*) FILTER (source = 'fallback') AS fallbacks,
           count(*) FILTER (source IN ('llm', 'fallback')) AS llm_decisions
    FROM offers WHERE {{runs}} GROUP BY run_id
),
calls AS (
    SELECT run_id, count(*) AS llm_calls, sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens, sum(cost_usd ORDER BY call_id) AS cost_usd,
           avg(cached::INTEGER) AS cache_hit_rate
    FROM llm_calls WHERE {{runs}} GROUP BY run_id
),
welfare AS (
    SELECT run_id, sum(initial ORDER BY participant_id) AS welfare_initial, sum(final ORDER BY participant_id) AS welfare_final
    FROM utility GROUP BY run_id
),
fulfilment_when AS (SELECT run_id, "when", {NEED_FULFILMENT_SQL} AS share FROM need_rows GROUP BY run_id, "when"),
fulfilment AS (
    SELECT run_id, any_value(share) FILTER ("when" = 'initial') AS need_fulfilment_initial,
           any_value(share) FILTER ("when" = 'final') AS need_fulfilment_final
    FROM fulfilment_when GROUP BY run_id
)
SELECT s.run_id,
       coalesce(a.exchanges, 0) AS exchanges,
       coalesce(a.accepted, 0) AS accepted,
       a.accepted / nullif(a.exchanges, 0) AS acceptance_rate,
       a.invalid / nullif(a.exchanges, 0) AS invalid_rate,
       a.errors / nullif(a.exchanges, 0) AS error_rate,
       d.fallbacks / nullif(d.llm_decisions, 0) AS fallback_rate,
       a.mean_turns_to_agreement,
       w.welfare_initial, w.welfare_final, w.welfare_final - w.welfare_initial AS welfare_change,
       a.rational / nullif(a.accepted, 0) AS individually_rational_share,
       f.need_fulfilment_initial, f.need_fulfilment_final,
       ui.nash AS nash_welfare_initial, uf.nash AS nash_welfare_final,
       ui.minimum AS rawls_initial, uf.minimum AS rawls_final,
       hi.gini AS gini_holdings_initial, hf.gini AS gini_holdings_final,
       ui.gini AS gini_utility_initial, uf.gini AS gini_utility_final,
       coalesce(c.llm_calls, 0) AS llm_calls,
       coalesce(c.prompt_tokens, 0)::BIGINT AS prompt_tokens,
       coalesce(c.completion_tokens, 0)::BIGINT AS completion_tokens,
       coalesce(c.cost_usd, 0.0) AS cost_usd,
       c.cache_hit_rate,
       coalesce(c.llm_calls, 0) / nullif(a.exchanges, 0) AS calls_per_exchange
FROM selected AS s
LEFT JOIN activity AS a USING (run_id)
LEFT JOIN decisions AS d USING (run_id)
LEFT JOIN calls AS c USING (run_id)
LEFT JOIN welfare AS w USING (run_id)
LEFT JOIN fulfilment AS f USING (run_id)
LEFT JOIN inequality AS ui ON ui.run_id = s.run_id AND ui.quantity = 'utility' AND ui."when" = 'initial'
LEFT JOIN inequality AS uf ON uf.run_id = s.run_id AND uf.quantity = 'utility' AND uf."when" = 'final'
LEFT JOIN inequality AS hi ON hi.run_id = s.run_id AND hi.quantity = 'holdings' AND hi."when" = 'initial'
LEFT JOIN inequality AS hf ON hf.run_id = s.run_id AND hf.quantity = 'holdings' AND hf."when" = 'final'
"""
)


def compare(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per run, in the order given: run_id plus every key of summary().

    See summary() for the definitions; this is the same query over several runs.
    """
    run_ids = list(dict.fromkeys(run_ids))
    if not run_ids:
        # "" is never a run id (the writer refuses it): the columns, no rows.
        return con.execute(_sql(_SUMMARY_SQL, [""])).df()
    _check_runs(con, run_ids)
    frame = con.execute(_sql(_SUMMARY_SQL, run_ids)).df()
    order = {r: k for k, r in enumerate(run_ids)}
    return frame.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)


def summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """The run in one dict.

    Activity: exchanges (all outcomes); accepted; acceptance_rate = accepted /
    exchanges; invalid_rate and error_rate likewise; fallback_rate = offers
    whose source is 'fallback' / offers an LLM was asked for (source llm or
    fallback), None for a rules-only run; mean_turns_to_agreement = mean turns
    of accepted exchanges.

    Welfare: welfare_initial / welfare_final = sum of participants' initial /
    final utility (economy.utility, as recorded), welfare_change their
    difference; individually_rational_share = share of accepted trades where
    neither side's utility fell (Pareto-improving voluntary exchange);
    need_fulfilment_* = sum_i,r min(h_ir, n_ir) / sum_i,r n_ir over the whole
    community (economy.NEED_FULFILMENT_SQL); nash_welfare_* = geometric mean of
    utilities (Nash social welfare, Nash 1950, Kaneko & Nakamura 1979; the
    n-th root of the product, 0 when anyone has 0); rawls_* = the least
    utility (Rawls 1971, maximin).

    Distribution: gini_holdings_* = Gini (1912) of each participant's
    holdings valued at the facilitator's last-round valuations (1 per unit in
    a control run), gini_utility_* = Gini of utilities; G = 2 sum_i i x_(i) /
    (n sum x) - (n + 1) / n with x ascending.

    Cost (LLM runs): llm_calls, prompt_tokens, completion_tokens, cost_usd
    (sums over llm_calls), cache_hit_rate = share of calls served from cache
    (None without calls), calls_per_exchange = llm_calls / exchanges.
    """
    row = compare(con, [run_id]).iloc[0].to_dict()
    row.pop("run_id")
    return {key: plain(value) for key, value in row.items()}


# --- activity ------------------------------------------------------------------------------------

_ACTIVITY_SQL = (
    "WITH"
    + _WINDOWED
    + """,
fallbacks AS (SELECT exchange_id, count(*) AS fallbacks FROM offers WHERE {runs} AND source = 'fallback' GROUP BY exchange_id)
SELECT "window", min(exchange_id) AS first_exchange, max(exchange_id) AS last_exchange,
       count(*) AS exchanges,
       count(*) FILTER (outcome = 'accepted') AS accepted,
       count(*) FILTER (outcome = 'accepted') / count(*) AS acceptance_rate,
       avg(turns) AS mean_turns,
       count(*) FILTER (outcome = 'invalid') AS invalid,
       coalesce(sum(f.fallbacks), 0)::BIGINT AS fallbacks
FROM windowed LEFT JOIN fallbacks AS f USING (exchange_id)
GROUP BY "window" ORDER BY "window"
"""
)


def activity(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 20) -> pd.DataFrame:
    """Exchanges per window: how many, accepted and acceptance_rate (accepted /
    exchanges), mean_turns (all outcomes), invalid (agreed swaps the ledger
    refused) and fallbacks (LLM decisions replaced by the rules brain).

    Trade volume per window (``accepted``) is the series whose decay Epstein &
    Axtell (1996, ch. IV) show as marginal rates of substitution equalise.
    """
    return _frame(con, _ACTIVITY_SQL, run_id, {"windows": windows})


_AGREEMENT_BY_TURN_SQL = """
WITH ended AS (
    SELECT turns AS turn, count(*) AS exchanges_ended, count(*) FILTER (outcome = 'accepted') AS accepted,
           count(*) FILTER (outcome = 'rejected') AS rejected, count(*) FILTER (outcome = 'no_deal') AS no_deal,
           count(*) FILTER (outcome = 'invalid') AS invalid, count(*) FILTER (outcome = 'error') AS error
    FROM exchanges WHERE {runs} GROUP BY turns
)
SELECT turn, exchanges_ended, accepted, rejected, no_deal, invalid, error,
       accepted / nullif(sum(accepted) OVER (), 0) AS share_of_agreements
FROM ended ORDER BY turn
"""


def agreement_by_turn(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """For each turn t: exchanges that ended at turn t, how many of them ended in
    each outcome (schema.OUTCOMES), and share_of_agreements = accepted at t / all accepted."""
    return _frame(con, _AGREEMENT_BY_TURN_SQL, run_id)


# --- welfare and distribution --------------------------------------------------------------------

_NEED_FULFILMENT_SQL = (
    "WITH"
    + _NEED_ROWS
    + f""",
per_when AS (SELECT participant_id, "when", {NEED_FULFILMENT_SQL} AS share FROM need_rows GROUP BY participant_id, "when"),
per_participant AS (
    SELECT participant_id, any_value(share) FILTER ("when" = 'initial') AS initial,
           any_value(share) FILTER ("when" = 'final') AS final
    FROM per_when GROUP BY participant_id
)
SELECT p.participant_id, p.name, p.personality, coalesce(n.initial, 1.0) AS initial, coalesce(n.final, 1.0) AS final
FROM participants AS p LEFT JOIN per_participant AS n USING (participant_id)
WHERE p.{{runs}} ORDER BY p.participant_id
"""
)


def need_fulfilment(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Each participant's share of needed units held, sum_r min(h_r, n_r) /
    sum_r n_r (economy.NEED_FULFILMENT_SQL; 1.0 when nothing is needed), at
    the start (initial) and at the end (final)."""
    return _frame(con, _NEED_FULFILMENT_SQL, run_id)


_LORENZ_SQL = (
    "WITH"
    + _DISTRIBUTION
    + """
SELECT "when", 0.0 AS population_share, 0.0 AS value_share
FROM (VALUES ('initial'), ('final')) AS w("when")
UNION ALL
SELECT "when", i / n AS population_share,
       sum(value) OVER (PARTITION BY "when" ORDER BY i) / nullif(sum(value) OVER (PARTITION BY "when"), 0)
FROM ranked WHERE quantity = $quantity
ORDER BY "when" DESC, population_share
"""
)


def lorenz(
    con: duckdb.DuckDBPyConnection, run_id: str, quantity: Literal["holdings", "utility"] = "holdings"
) -> pd.DataFrame:
    """Lorenz curve (Lorenz 1905) of holdings value or utility, initial and
    final: participants sorted by value ascending, population_share = k / n,
    value_share = the k poorest's share of the total; starts at (0, 0).

    Holdings are valued as in summary() (last-round facilitator valuations, 1
    per unit in a control run). The Gini coefficient is twice the area between
    this curve and the diagonal.
    """
    if quantity not in ("holdings", "utility"):
        raise ValueError(f"quantity must be 'holdings' or 'utility', got {quantity!r}")
    return _frame(con, _LORENZ_SQL, run_id, {"quantity": quantity})


_WELFARE_OVER_TIME_SQL = (
    "WITH"
    + _WINDOWED
    + """,
start AS (SELECT sum(initial_utility) AS welfare FROM participants WHERE {runs}),
per_window AS (  -- utility only changes in accepted exchanges, by both sides' recorded gains
    SELECT "window", max(exchange_id) AS last_exchange,
           coalesce(sum(initiator_utility_after - initiator_utility_before
                        + responder_utility_after - responder_utility_before) FILTER (outcome = 'accepted'), 0) AS change
    FROM windowed GROUP BY "window"
)
SELECT "window", last_exchange, change,
       (SELECT welfare FROM start) + sum(change) OVER (ORDER BY "window") AS welfare
FROM per_window ORDER BY "window"
"""
)


def welfare_over_time(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 20) -> pd.DataFrame:
    """Total utility at the end of each window: the initial total plus the
    recorded utility change of both sides of every accepted exchange so far
    (change = the window's part of it). Its last value is summary()'s
    welfare_final up to float rounding."""
    return _frame(con, _WELFARE_OVER_TIME_SQL, run_id, {"windows": windows})


_SURPLUS_SPLIT_SQL = """
WITH deals AS (
    SELECT exchange_id, initiator_id, responder_id,
           initiator_utility_after - initiator_utility_before AS initiator_gain,
           responder_utility_after - responder_utility_before AS responder_gain
    FROM exchanges WHERE {runs} AND outcome = 'accepted'
),
people AS (SELECT participant_id, personality FROM participants WHERE {runs})
SELECT d.exchange_id, i.personality AS initiator_personality, r.personality AS responder_personality,
       d.initiator_gain, d.responder_gain,
       CASE WHEN d.initiator_gain + d.responder_gain > 0
            THEN d.initiator_gain / (d.initiator_gain + d.responder_gain) END AS initiator_share
FROM deals AS d
JOIN people AS i ON i.participant_id = d.initiator_id
JOIN people AS r ON r.participant_id = d.responder_id
ORDER BY d.exchange_id
"""


def surplus_split(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """How each accepted deal's surplus was split: each side's utility gain and
    initiator_share = initiator_gain / (initiator_gain + responder_gain)
    (None when the joint gain is not positive). The symmetric Nash bargaining
    solution (Nash 1950) splits equal-utility-scale surplus 0.5 / 0.5."""
    return _frame(con, _SURPLUS_SPLIT_SQL, run_id)


# --- prices --------------------------------------------------------------------------------------

_EXCHANGE_RATES_SQL = (
    "WITH"
    + _RATES
    + """
SELECT exchange_id, "window", pair, rate, ln(rate) AS log_rate FROM rates ORDER BY exchange_id
"""
)


def exchange_rates(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 10) -> pd.DataFrame:
    """The implicit exchange rate of every accepted trade.

    pair = the two resources in alphabetical order joined by '/', rate = units
    of the first given per unit of the second (the barter price of the second
    in units of the first), log_rate = ln(rate); window as in price_dispersion.
    """
    return _frame(con, _EXCHANGE_RATES_SQL, run_id, {"windows": windows})


_PRICE_DISPERSION_SQL = (
    "WITH"
    + _RATES
    + """,
by_pair AS (
    SELECT "window", pair, count(*) AS trades, count(*) - 1 AS df, avg(ln(rate) ORDER BY exchange_id) AS mean_log_rate,
           stddev_samp(ln(rate) ORDER BY exchange_id) AS sd
    FROM rates GROUP BY "window", pair
),
pooled AS (  -- within-pair spread pooled over pairs: sqrt(sum (n_p - 1) s_p^2 / sum (n_p - 1)); every window, traded or not
    SELECT w."window", 'all' AS pair, coalesce(sum(p.trades), 0) AS trades, coalesce(sum(p.df), 0) AS df,
           NULL::DOUBLE AS mean_log_rate,
           sqrt(sum(p.df * coalesce(p.sd, 0) ^ 2 ORDER BY p.pair) / nullif(sum(p.df), 0)) AS sd
    FROM (SELECT DISTINCT "window" FROM windowed) AS w LEFT JOIN by_pair AS p USING ("window")
    GROUP BY w."window"
),
spreads AS (SELECT * FROM pooled UNION ALL SELECT * FROM by_pair)
SELECT "window", pair, trades::BIGINT AS trades, df::BIGINT AS df, mean_log_rate,
       CASE WHEN df >= $min_df THEN sd END AS sd_log_rate
FROM spreads
ORDER BY "window", pair != 'all', pair
"""
)


def price_dispersion(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 10) -> pd.DataFrame:
    """Per window and resource pair: trades, degrees of freedom (df = trades -
    1), mean and sample standard deviation of the log exchange rate (see
    exchange_rates).

    Falling SD of log price is the convergence result of Epstein & Axtell
    (1996, ch. IV; Mesa's Sugarscape G1mt example shows it for one pair). With
    many pairs, the row pair = 'all' gives the pooled within-pair SD,
    sqrt(sum_p (n_p - 1) s_p^2 / sum_p (n_p - 1)) with df = sum_p (n_p - 1),
    so different price levels of different pairs do not count as dispersion;
    its mean_log_rate is None (log rates of different pairs have no common
    unit). Every window has an 'all' row (trades 0 if none); pairs appear in
    the windows they traded in. sd_log_rate is None when df <
    MIN_DISPERSION_DF: too few trades to measure a spread, which is not a
    spread of 0.
    """
    return _frame(con, _PRICE_DISPERSION_SQL, run_id, {"windows": windows, "min_df": MIN_DISPERSION_DF})


_HOLDINGS_OVER_TIME_SQL = (
    "WITH"
    + _WINDOWED
    + """,
people AS (SELECT participant_id, personality FROM participants WHERE {runs}),
ends AS (SELECT DISTINCT "window" FROM windowed),
start AS (
    SELECT p.personality, h.resource, sum(h.quantity) AS quantity
    FROM initial_holdings AS h JOIN people AS p USING (participant_id)
    WHERE h.{runs} GROUP BY p.personality, h.resource
),
moves AS (  -- each transfer as a gain to the receiver's group and a loss to the giver's
    SELECT exchange_id, to_id AS participant_id, resource, quantity FROM transfers WHERE {runs}
    UNION ALL SELECT exchange_id, from_id, resource, -quantity FROM transfers WHERE {runs}
),
flows AS (
    SELECT w."window", p.personality, m.resource, sum(m.quantity) AS net
    FROM moves AS m JOIN windowed AS w USING (exchange_id) JOIN people AS p USING (participant_id)
    GROUP BY w."window", p.personality, m.resource
)
SELECT e."window", s.personality, s.resource,
       (s.quantity + sum(coalesce(f.net, 0)) OVER (
            PARTITION BY s.personality, s.resource ORDER BY e."window"))::BIGINT AS quantity
FROM ends AS e CROSS JOIN start AS s
LEFT JOIN flows AS f ON f."window" = e."window" AND f.personality = s.personality AND f.resource = s.resource
ORDER BY e."window", s.personality, s.resource
"""
)


def holdings_over_time(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 20) -> pd.DataFrame:
    """Units of each resource held by each personality group at the end of
    each window: initial holdings plus every transfer in, minus every transfer
    out, up to the window's last exchange (the ledger's conservation identity)."""
    return _frame(con, _HOLDINGS_OVER_TIME_SQL, run_id, {"windows": windows})


# --- facilitator ---------------------------------------------------------------------------------

_ADHERENCE_SQL = """
WITH agreed AS (
    SELECT e.exchange_id,
           ln(a.initiator_gives_qty::DOUBLE / a.responder_gives_qty) AS suggested_log_rate,
           ln(e.initiator_gives_qty::DOUBLE / e.responder_gives_qty) AS agreed_log_rate,
           e.initiator_gives = a.initiator_gives AND e.responder_gives = a.responder_gives AS same_resources,
           e.initiator_gives_qty = a.initiator_gives_qty AND e.responder_gives_qty = a.responder_gives_qty AS same_units
    FROM exchanges AS e JOIN advice AS a ON a.run_id = e.run_id AND a.exchange_id = e.exchange_id
    WHERE e.{runs} AND e.outcome = 'accepted' AND a.initiator_gives IS NOT NULL
)
SELECT exchange_id, suggested_log_rate, agreed_log_rate, same_resources,
       CASE WHEN same_resources THEN abs(agreed_log_rate - suggested_log_rate) END AS distance,
       same_resources AND same_units AS followed
FROM agreed ORDER BY exchange_id
"""


def facilitator_adherence(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """For every accepted exchange whose advice suggested a swap (advice
    without one, when no swap helped both sides, has nothing to follow): the suggested and agreed
    log rates, ln(units the initiator gives / units the responder gives);
    same_resources = the deal swapped the suggested resources in the suggested
    direction; distance = |agreed - suggested log rate| when it did (None
    otherwise: a different swap has no comparable rate); followed = the deal
    was exactly the suggested swap. A control run has no rows."""
    return _frame(con, _ADHERENCE_SQL, run_id)


_ANCHORING_SQL = (
    "WITH adherence AS ("
    + _ADHERENCE_SQL.replace("ORDER BY exchange_id", "")
    + """)
SELECT corr(suggested_log_rate, agreed_log_rate ORDER BY exchange_id) FROM adherence WHERE same_resources
"""
)


def anchoring(con: duckdb.DuckDBPyConnection, run_id: str) -> float | None:
    """Anchoring on the facilitator: Pearson correlation of the suggested and
    the agreed log rate over accepted deals on the suggested resources (see
    facilitator_adherence; Tversky & Kahneman 1974 for anchoring). None when
    fewer than two such deals or no variation."""
    _check_runs(con, [run_id])
    return plain(con.execute(_sql(_ANCHORING_SQL, [run_id])).fetchone()[0])


# --- network -------------------------------------------------------------------------------------

_NETWORK_EDGES_SQL = (
    "WITH"
    + _EDGES
    + """,
pairs AS (
    SELECT a, b, count(*) AS meetings, count(*) FILTER (traded) AS trades FROM meetings
    WHERE $among IS NULL OR (list_contains($among, a) AND list_contains($among, b))
    GROUP BY a, b
),
people AS (SELECT participant_id, name, personality FROM participants WHERE {runs})
SELECT pr.a, pr.b, pa.name AS a_name, pb.name AS b_name, pa.personality AS a_personality,
       pb.personality AS b_personality, pr.meetings, pr.trades
FROM pairs AS pr
JOIN people AS pa ON pa.participant_id = pr.a
JOIN people AS pb ON pb.participant_id = pr.b
ORDER BY pr.a, pr.b
"""
)


def _in_period(template: str, period: int | None) -> str:
    """A network query over the exchanges of one period (None: the whole run)."""
    if period is None:
        return template
    return template.replace("FROM exchanges WHERE {runs}", f"FROM exchanges WHERE {{runs}} AND period = {int(period)}")


def network_edges(con: duckdb.DuckDBPyConnection, run_id: str,
                  among: tuple[int, ...] | None = None, period: int | None = None) -> pd.DataFrame:
    """Who met whom: one row per unordered pair that met (a < b), with
    meetings (exchanges of any outcome) and trades (accepted ones).

    among: only pairs of these participants, counted in the database; a drawing
    of a thousand-member community keeps its busiest members, and a 1,000,000-exchange
    run met in some 400,000 pairs that need not reach Python. period: only the
    exchanges of that period (exchanges.period), for a run of several."""
    return _frame(con, _in_period(_NETWORK_EDGES_SQL, period), run_id,
                  {"among": list(among) if among is not None else None})


_NETWORK_NODES_SQL = (
    "WITH"
    + _EDGES
    + """,
traded AS (
    SELECT participant_id, count(*) AS trades FROM (
        SELECT initiator_id AS participant_id FROM meetings WHERE traded
        UNION ALL SELECT responder_id FROM meetings WHERE traded
    ) GROUP BY participant_id
)
SELECT n.participant_id, n.name, n.personality, n.degree, coalesce(t.trades, 0) AS trades, n.clustering
FROM nodes AS n LEFT JOIN traded AS t USING (participant_id)
ORDER BY n.participant_id
"""
)


def network_nodes(con: duckdb.DuckDBPyConnection, run_id: str, period: int | None = None) -> pd.DataFrame:
    """Each participant in the trade network (an edge = at least one accepted
    trade): degree = distinct trade partners, trades = accepted trades it was
    in, clustering = local clustering coefficient (Watts & Strogatz 1998), 0
    when degree < 2. period: the network of that period's trades only."""
    return _frame(con, _in_period(_NETWORK_NODES_SQL, period), run_id)


_NETWORK_SUMMARY_SQL = (
    "WITH"
    + _EDGES
    + """,
pair_trades AS (SELECT a, b, count(*) AS trades FROM meetings WHERE traded GROUP BY a, b),
repeat AS (  -- trades beyond the first of each pair, over all trades
    SELECT (sum(trades) - count(*)) / nullif(sum(trades), 0) AS repeat_partner_share FROM pair_trades
),
initiated AS (SELECT DISTINCT initiator_id AS src, responder_id AS dst FROM meetings WHERE traded),
reciprocity AS (  -- directed links i -> j (i initiated a trade with j) whose reverse also exists
    SELECT avg((EXISTS (SELECT 1 FROM initiated AS r WHERE r.src = i.dst AND r.dst = i.src))::INTEGER) AS reciprocity
    FROM initiated AS i
),
typed AS (  -- each trade edge, both directions, by the personalities at its ends
    SELECT pu.personality AS x, pv.personality AS y
    FROM trade_edges AS e
    JOIN participants AS pu ON pu.run_id = e.run_id AND pu.participant_id = e.u
    JOIN participants AS pv ON pv.run_id = e.run_id AND pv.participant_id = e.v
),
mixing AS (SELECT x, y, count(*) / (SELECT count(*) FROM typed) AS e FROM typed GROUP BY x, y),
marginals AS (SELECT x, sum(e) AS a FROM mixing GROUP BY x),
assortativity AS (
    -- Newman (2003), Mixing patterns in networks, eq. 2: r = (sum_i e_ii - sum_i a_i^2) / (1 - sum_i a_i^2)
    SELECT ((SELECT coalesce(sum(e), 0) FROM mixing WHERE x = y) - sum(a * a)) / nullif(1 - sum(a * a), 0)
           AS personality_assortativity
    FROM marginals
)
SELECT repeat_partner_share, reciprocity, (SELECT avg(clustering) FROM nodes) AS mean_clustering,
       personality_assortativity
FROM repeat, reciprocity, assortativity
"""
)


def network_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """The trade network in four numbers.

    repeat_partner_share = share of accepted trades made with someone the
    participant had already traded with; reciprocity = share of directed
    links i -> j (i initiated an accepted trade with j) whose reverse j -> i
    also exists (Newman, Networks, 2010, sec. 6.11); mean_clustering = mean
    local clustering coefficient over all participants (Watts & Strogatz
    1998); personality_assortativity = Newman's (2003) assortativity
    coefficient of the trade network by personality: 1 if people trade only
    within their personality, 0 if as with random partners, negative if
    across (None when only one personality trades).
    """
    row = _frame(con, _NETWORK_SUMMARY_SQL, run_id).iloc[0].to_dict()
    return {key: plain(value) for key, value in row.items()}


# --- by personality ------------------------------------------------------------------------------

_BY_PERSONALITY_SQL = (
    "WITH"
    + _UTILITY
    + ","
    + _NEED_ROWS
    + f""",
groups AS (
    SELECT personality, count(*) AS participants, avg(final - initial ORDER BY participant_id) AS utility_gain
    FROM utility GROUP BY personality
),
meetings AS (
    SELECT p.personality,
           count(*) FILTER (s.outcome = 'accepted') / count(*) AS acceptance_rate,
           sum(s.gain ORDER BY s.exchange_id, s.role) FILTER (s.outcome = 'accepted')
               / nullif(sum(s.gain + s.partner_gain ORDER BY s.exchange_id, s.role) FILTER (s.outcome = 'accepted'), 0)
               AS surplus_share
    FROM sides AS s JOIN people AS p USING (run_id, participant_id)
    GROUP BY p.personality
),
fulfilment AS (
    SELECT p.personality, {NEED_FULFILMENT_SQL} AS need_fulfilment_final
    FROM need_rows AS n JOIN people AS p USING (run_id, participant_id)
    WHERE n."when" = 'final' GROUP BY p.personality
)
SELECT g.personality, g.participants, g.utility_gain, m.acceptance_rate, m.surplus_share,
       coalesce(f.need_fulfilment_final, 1.0) AS need_fulfilment_final
FROM groups AS g LEFT JOIN meetings AS m USING (personality) LEFT JOIN fulfilment AS f USING (personality)
ORDER BY g.personality
"""
)


def by_personality(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per personality: participants; utility_gain = mean over its members of
    final - initial utility; acceptance_rate = share of the exchanges its
    members took part in that were accepted; surplus_share = its members'
    total gain in their deals / the total joint gain of those deals (a ratio
    of sums, so a deal where one side lost, whose share lies outside [0, 1],
    weighs by its size rather than by its extreme share); need_fulfilment_final = the group's needed units held / needed
    units (economy.NEED_FULFILMENT_SQL)."""
    return _frame(con, _BY_PERSONALITY_SQL, run_id)


_PAIRING_MATRIX_SQL = """
WITH people AS (SELECT participant_id, personality FROM participants WHERE {runs}),
typed AS (  -- every exchange by the personalities of its initiator (a) and responder (b)
    SELECT e.outcome, i.personality AS personality_a, r.personality AS personality_b,
           e.initiator_utility_after - e.initiator_utility_before AS gain_a,
           e.responder_utility_after - e.responder_utility_before AS gain_b
    FROM exchanges AS e
    JOIN people AS i ON i.participant_id = e.initiator_id
    JOIN people AS r ON r.participant_id = e.responder_id
    WHERE e.{runs}
)
SELECT personality_a, personality_b, count(*) AS exchanges,
       count(*) FILTER (outcome = 'accepted') / count(*) AS acceptance_rate,
       avg(gain_a) FILTER (outcome = 'accepted') AS mean_gain_a,
       avg(gain_b) FILTER (outcome = 'accepted') AS mean_gain_b,
       count(*) FILTER (outcome = 'accepted') AS accepted
FROM typed GROUP BY personality_a, personality_b
ORDER BY personality_a, personality_b
"""


def pairing_matrix(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Every (initiator personality a, responder personality b): exchanges,
    acceptance_rate, the mean utility gain per accepted deal of the initiator
    (mean_gain_a) and of the responder (mean_gain_b), and accepted = deals.
    How generous participants fare against strategic ones, in either role,
    is the pair of cells (generous, strategic) and (strategic, generous), or
    surplus_split filtered to those deals."""
    return _frame(con, _PAIRING_MATRIX_SQL, run_id)


# --- cost ----------------------------------------------------------------------------------------

_COST_SQL = """
SELECT role, model, count(*) AS calls, count(*) FILTER (cached) AS cached_calls,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd, avg(latency_ms) AS mean_latency_ms,
       count(*) FILTER (error IS NOT NULL) AS errors
FROM llm_calls WHERE {runs}
GROUP BY role, model ORDER BY role, model
"""


def cost(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """LLM calls per role and model: calls, cached_calls (served from cache),
    token sums, cost_usd, mean latency, and errors (calls that failed). No
    rows for a rules run."""
    return _frame(con, _COST_SQL, run_id)


# --- marginal rates of substitution, the optimum, gains left --------------------------------------

# The swap grid of a run whose participants record no max_units trait (the Traits default).
DEFAULT_MAX_UNITS: int = Traits.model_fields["max_units"].default


@dataclass(frozen=True)
class Community:
    """A run's community as arrays, rows in participant_id order, columns in resource_id order.

    What the MRS, optimum and gains-left metrics feed to economy.py and optimum.py
    (which hold the definitions; nothing economic is computed here).
    """

    participant_ids: np.ndarray
    resources: list[str]
    needs: np.ndarray
    wants: np.ndarray
    initial: np.ndarray
    final: np.ndarray
    initial_utility: np.ndarray  # as recorded
    need_weight: float
    max_units: int  # the largest swap grid any participant searches (rules brain's max_units)

    def world(self, holdings: np.ndarray) -> World:
        """A World holding these holdings, for the rules brain's swap_gains."""
        people, resources = holdings.shape
        population = Population(
            names=[""] * people, personalities=[""] * people, notes=[""] * people, brains=["rules"] * people,
            resources=self.resources, kinds=["good"] * resources, holdings=self.initial,
            needs=self.needs, wants=self.wants, traits={},
        )
        return World(population, holdings, self.need_weight, MarketHistory(people, resources), None)


_COMMUNITY_SQL = """
SELECT p.participant_id, r.resource_id, r.name AS resource,
       coalesce(n.need, 0) AS need, coalesce(n.want, 0.0) AS want,
       coalesce(i.quantity, 0) AS initial, coalesce(f.quantity, 0) AS final
FROM participants AS p CROSS JOIN resources AS r
LEFT JOIN needs AS n ON n.run_id = p.run_id AND n.participant_id = p.participant_id AND n.resource = r.name
LEFT JOIN initial_holdings AS i ON i.run_id = p.run_id AND i.participant_id = p.participant_id AND i.resource = r.name
LEFT JOIN final_holdings AS f ON f.run_id = p.run_id AND f.participant_id = p.participant_id AND f.resource = r.name
WHERE p.{runs} AND r.{runs}
ORDER BY p.participant_id, r.resource_id
"""

_PEOPLE_SQL = """
SELECT participant_id, initial_utility, coalesce(try_cast(json_extract(traits, '$.max_units') AS INTEGER), 0) AS max_units
FROM participants WHERE {runs} ORDER BY participant_id
"""


def community(con: duckdb.DuckDBPyConnection, run_id: str) -> Community:
    """The run's needs, wants, initial and final holdings as arrays, with its need_weight
    (the run's config; SimulationConfig's default when the run has none)."""
    _check_runs(con, [run_id])
    cells = con.execute(_sql(_COMMUNITY_SQL, [run_id])).df()
    people = con.execute(_sql(_PEOPLE_SQL, [run_id])).df()
    config = con.execute(f"SELECT config FROM runs WHERE {_runs([run_id])}").fetchone()[0]
    need_weight = json.loads(config).get("need_weight") if config else None
    if need_weight is None:
        need_weight = SimulationConfig.model_fields["need_weight"].default
    shape = (len(people), len(cells) // max(len(people), 1))
    resources = cells["resource"].iloc[: shape[1]].tolist()

    def matrix(column: str) -> np.ndarray:
        return cells[column].to_numpy().reshape(shape)

    return Community(
        participant_ids=people["participant_id"].to_numpy(), resources=resources,
        needs=matrix("need").astype(np.int64), wants=matrix("want").astype(np.float64),
        initial=matrix("initial").astype(np.int64), final=matrix("final").astype(np.int64),
        initial_utility=people["initial_utility"].to_numpy(dtype=np.float64), need_weight=float(need_weight),
        max_units=int(people["max_units"].max()) if len(people) and people["max_units"].max() > 0 else DEFAULT_MAX_UNITS,
    )


_MRS_TRADES_SQL = (
    "WITH"
    + _WINDOWED
    + """,
moves AS (  -- every transfer as a change of one participant's holding of one resource
    SELECT exchange_id, to_id AS participant_id, resource, quantity AS delta FROM transfers WHERE {runs}
    UNION ALL SELECT exchange_id, from_id, resource, -quantity FROM transfers WHERE {runs}
),
before AS (  -- that holding just before the exchange: initial plus every earlier move
    SELECT m.exchange_id, m.participant_id, m.resource,
           coalesce(h.quantity, 0) + coalesce(sum(m.delta) OVER (
               PARTITION BY m.participant_id, m.resource ORDER BY m.exchange_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS held
    FROM moves AS m
    LEFT JOIN (SELECT participant_id, resource, quantity FROM initial_holdings WHERE {runs}) AS h
           USING (participant_id, resource)
)
SELECT w.exchange_id, w."window",
       least(w.initiator_gives, w.responder_gives) || '/' || greatest(w.initiator_gives, w.responder_gives) AS pair,
       w.initiator_id, w.responder_id,
       least(w.initiator_gives, w.responder_gives) AS first, greatest(w.initiator_gives, w.responder_gives) AS second,
       CASE WHEN w.initiator_gives < w.responder_gives
            THEN w.initiator_gives_qty::DOUBLE / w.responder_gives_qty
            ELSE w.responder_gives_qty::DOUBLE / w.initiator_gives_qty END AS rate,
       max(b.held) FILTER (b.participant_id = w.initiator_id AND b.resource = least(w.initiator_gives, w.responder_gives)) AS initiator_first,
       max(b.held) FILTER (b.participant_id = w.initiator_id AND b.resource = greatest(w.initiator_gives, w.responder_gives)) AS initiator_second,
       max(b.held) FILTER (b.participant_id = w.responder_id AND b.resource = least(w.initiator_gives, w.responder_gives)) AS responder_first,
       max(b.held) FILTER (b.participant_id = w.responder_id AND b.resource = greatest(w.initiator_gives, w.responder_gives)) AS responder_second
FROM windowed AS w JOIN before AS b USING (exchange_id)
WHERE w.outcome = 'accepted'
GROUP BY ALL ORDER BY w.exchange_id
"""
)


def _log_mrs(c: Community, people: np.ndarray, first: np.ndarray, second: np.ndarray,
             held_first: np.ndarray, held_second: np.ndarray) -> np.ndarray:
    """ln MRS of second for first, ln(m_second / m_first) (economy.marginal_value); NaN where a value is 0."""
    lam = c.need_weight
    m_first = economy.marginal_value(held_first, c.needs[people, first], c.wants[people, first], lam)
    m_second = economy.marginal_value(held_second, c.needs[people, second], c.wants[people, second], lam)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mrs = np.log(m_second) - np.log(m_first)
    return np.where(np.isfinite(log_mrs), log_mrs, np.nan)


def mrs_prices(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 10) -> pd.DataFrame:
    """The marginal-rate-of-substitution price of every accepted trade, beside its exchange rate.

    For a participant holding h, m_r = economy.marginal_value (the central
    whole-unit difference [v_r(h + 1) - v_r(h - 1)] / 2, or v_r(1) - v_r(0) at
    h = 0), and its MRS of the pair's second resource for its first is
    m_second / m_first: how many units of the first one unit of the second is
    worth to it. Pairs are named alphabetically as in exchange_rates, whose
    rate (units of the first per unit of the second) is on the same scale.
    Per trade, with both traders' holdings just before it: log_mrs_initiator,
    log_mrs_responder; log_mrs_price = their mean, the log of the geometric
    mean of the two MRS (the bilateral trade price of Epstein & Axtell 1996,
    ch. IV); mrs_gap = |log_mrs_initiator - log_mrs_responder|, how far apart
    the two valued the goods; log_rate = ln(rate) of the deal. A side whose
    marginal value of either good is 0 (no want, need met) has no MRS: NaN.
    """
    return _mrs_prices(con, run_id, windows, community(con, run_id))


def _mrs_prices(con: duckdb.DuckDBPyConnection, run_id: str, windows: int, c: Community) -> pd.DataFrame:
    trades = _frame(con, _MRS_TRADES_SQL, run_id, {"windows": windows})
    index = {name: k for k, name in enumerate(c.resources)}
    first = trades["first"].map(index).to_numpy(dtype=np.int64)
    second = trades["second"].map(index).to_numpy(dtype=np.int64)
    row = {pid: k for k, pid in enumerate(c.participant_ids)}
    sides = {}
    for side in ("initiator", "responder"):
        people = trades[f"{side}_id"].map(row).to_numpy(dtype=np.int64)
        sides[side] = _log_mrs(c, people, first, second, trades[f"{side}_first"].to_numpy(dtype=np.int64),
                               trades[f"{side}_second"].to_numpy(dtype=np.int64))
    return pd.DataFrame({
        "exchange_id": trades["exchange_id"], "window": trades["window"], "pair": trades["pair"],
        "log_mrs_initiator": sides["initiator"], "log_mrs_responder": sides["responder"],
        "log_mrs_price": (sides["initiator"] + sides["responder"]) / 2,
        "mrs_gap": np.abs(sides["initiator"] - sides["responder"]),
        "log_rate": np.log(trades["rate"].to_numpy(dtype=np.float64)),
    })


_WINDOW_FLOWS_SQL = (
    "WITH"
    + _WINDOWED
    + """,
moves AS (
    SELECT exchange_id, to_id AS participant_id, resource, quantity AS delta FROM transfers WHERE {runs}
    UNION ALL SELECT exchange_id, from_id, resource, -quantity FROM transfers WHERE {runs}
)
SELECT w."window", m.participant_id, m.resource, sum(m.delta)::BIGINT AS net
FROM moves AS m JOIN windowed AS w USING (exchange_id)
GROUP BY ALL
"""
)

_WINDOW_ENDS_SQL = (
    "WITH"
    + _WINDOWED
    + """
SELECT "window", max(exchange_id) AS after_exchange FROM windowed GROUP BY "window" ORDER BY "window"
"""
)


def _pooled_sd(sds: list[float], dfs: list[int]) -> float | None:
    """sqrt(sum df_p s_p^2 / sum df_p) over groups with df_p >= 1, in the order given."""
    total = sum(dfs)
    if total == 0:
        return None
    return math.sqrt(sum(df * sd * sd for sd, df in zip(sds, dfs) if df > 0) / total)


def mrs_dispersion(con: duckdb.DuckDBPyConnection, run_id: str, windows: int = 10) -> pd.DataFrame:
    """How far apart participants value goods: the SD of log MRS across all holders
    of both goods of a pair, at the start and after each window.

    One row per moment and pair: after_exchange (0 = the start, else the last
    exchange of the window; window is NULL at the start), pair (alphabetical,
    as in mrs_prices), holders = participants holding at least one unit of
    both goods, df = holders - 1, sd_log_mrs = sample SD of their log MRS of
    the second for the first (mrs_prices' definition; holders with no MRS left
    out). The pair 'all' pools the pairs, sqrt(sum_p df_p s_p^2 / sum_p df_p)
    with df = sum_p df_p, so different price levels of different pairs are not
    counted as dispersion. In a market that found one price per pair it would
    fall towards 0 (Epstein & Axtell 1996, ch. IV). sd_log_mrs is NULL when df
    < MIN_DISPERSION_DF (too few holders), never 0 for want of data.
    """
    return _mrs_dispersion(con, run_id, windows, community(con, run_id))


def _mrs_dispersion(con: duckdb.DuckDBPyConnection, run_id: str, windows: int, c: Community) -> pd.DataFrame:
    ends = _frame(con, _WINDOW_ENDS_SQL, run_id, {"windows": windows})
    flows = _frame(con, _WINDOW_FLOWS_SQL, run_id, {"windows": windows})
    index = {name: k for k, name in enumerate(c.resources)}
    row = {pid: k for k, pid in enumerate(c.participant_ids)}
    net = np.zeros((len(ends),) + c.initial.shape, dtype=np.int64)
    if len(flows):
        net[flows["window"].to_numpy(dtype=np.int64), flows["participant_id"].map(row).to_numpy(dtype=np.int64),
            flows["resource"].map(index).to_numpy(dtype=np.int64)] = flows["net"].to_numpy(dtype=np.int64)
    states = [(None, 0, c.initial)]
    held = c.initial
    for k, (window, after) in enumerate(ends[["window", "after_exchange"]].itertuples(index=False)):
        held = held + net[k]
        states.append((int(window), int(after), held))

    order = sorted(range(len(c.resources)), key=lambda k: c.resources[k])
    pairs = [(a, b) for x, a in enumerate(order) for b in order[x + 1:]]
    people = np.arange(len(c.participant_ids))
    rows = []
    for window, after, held in states:
        sds, dfs, per_pair = [], [], []
        for a, b in pairs:
            holders = people[(held[:, a] > 0) & (held[:, b] > 0)]
            log_mrs = _log_mrs(c, holders, np.full(len(holders), a), np.full(len(holders), b),
                               held[holders, a], held[holders, b])
            log_mrs = log_mrs[~np.isnan(log_mrs)]
            df = max(len(log_mrs) - 1, 0)
            sd = float(np.std(log_mrs, ddof=1)) if df > 0 else None
            sds.append(sd or 0.0)
            dfs.append(df)
            per_pair.append((f"{c.resources[a]}/{c.resources[b]}", len(log_mrs), df, sd))
        pooled = _pooled_sd(sds, dfs)
        rows.append((window, after, "all", sum(p[1] for p in per_pair), sum(dfs), pooled))
        rows.extend((window, after, *p) for p in per_pair)
    frame = pd.DataFrame(rows, columns=["window", "after_exchange", "pair", "holders", "df", "sd_log_mrs"])
    frame["window"] = frame["window"].astype("Int64")
    frame.loc[frame["df"] < MIN_DISPERSION_DF, "sd_log_mrs"] = None
    frame["sd_log_mrs"] = frame["sd_log_mrs"].astype("float64")
    return frame


def allocative_efficiency(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """The realised welfare gain against the largest one possible.

    welfare_optimum = sum_i U_i at the exact utilitarian optimum over
    whole-unit reallocations of the run's totals (optimum.utilitarian_optimum;
    economy.utility); max_gain = welfare_optimum - welfare_initial; realised_gain
    = summary()'s welfare_change (as recorded); efficiency = realised_gain /
    max_gain: 1 when the market reached an optimum, 0 when it gained nothing
    (1 when the start is already optimal and the end is too; None when
    max_gain is 0 but welfare fell). below_start = participants whom that
    optimum leaves with less utility than they started with, i.e. how far it
    is from anything voluntary trade could reach (it maximises the sum, not
    everyone's gain); worst_loss = the largest such loss; note = that said in
    words (None when the optimum leaves nobody below their start).
    """
    return _efficiency(community(con, run_id), summary(con, run_id)["welfare_change"])


def _efficiency(c: Community, realised: float) -> dict[str, Any]:
    optimum = utilitarian_optimum(c.initial.sum(axis=0), c.needs, c.wants, c.need_weight)
    utility = economy.utility(optimum, c.needs, c.wants, c.need_weight)
    welfare_initial = float(c.initial_utility.sum())
    welfare_optimum = float(utility.sum())
    max_gain = welfare_optimum - welfare_initial
    if max_gain > _TOLERANCE:
        efficiency = realised / max_gain
    else:
        efficiency = 1.0 if realised >= -_TOLERANCE else None
    loss = c.initial_utility - utility
    below = int((loss > _TOLERANCE).sum())
    note = None
    if below:
        note = (f"The optimum leaves {below} of {len(loss)} participants below their starting utility "
                f"(worst by {loss.max():.3g}): it maximises the total, which voluntary trade, where "
                "nobody accepts a loss, need not be able to reach.")
    return {
        "welfare_initial": welfare_initial,
        "welfare_optimum": welfare_optimum,
        "max_gain": max_gain,
        "realised_gain": realised,
        "efficiency": efficiency,
        "below_start": below,
        "worst_loss": float(loss.max()) if below else 0.0,
        "note": note,
    }


# Above this many pairs, gains_left_on_table checks a fixed random sample of this many.
MAX_PAIRS_CHECKED = 20_000


def gains_left_on_table(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """Swaps two participants would still both take at the end of the run.

    A pair has gains left when some whole-unit swap between them (one gives x
    units of a, the other y units of b, 1 <= x, y <= the run's largest
    max_units: the rules brain's grid and swap_gains, via
    optimum.best_mutual_swaps) raises both utilities at the final holdings.
    pairs_with_gains = such pairs among pairs_checked; share = their share;
    best_gain = the largest joint gain of such a swap; pairs_total = n(n-1)/2.
    Up to MAX_PAIRS_CHECKED pairs every pair is checked (sampled = False);
    above it, a uniform sample of that many distinct pairs drawn with a fixed
    seed (so a run's figure is reproducible), and estimated_pairs = share x
    pairs_total. A sampled best_gain is a lower bound of the true best. A run at
    a pairwise-optimal allocation has 0 pairs with gains (Feldman 1973).
    """
    return _gains_left(community(con, run_id))


def _gains_left(c: Community) -> dict[str, Any]:
    people = len(c.participant_ids)
    total = people * (people - 1) // 2
    first, second = np.triu_indices(people, 1)
    sampled = total > MAX_PAIRS_CHECKED
    if sampled:
        chosen = np.sort(np.random.default_rng(0).choice(total, size=MAX_PAIRS_CHECKED, replace=False))
        first, second = first[chosen], second[chosen]
    best = best_mutual_swaps(c.world(c.final), first, second, c.max_units)
    found = ~np.isnan(best)
    checked = len(first)
    share = float(found.sum() / checked) if checked else None
    return {
        "pairs_total": total,
        "pairs_checked": checked,
        "sampled": sampled,
        "pairs_with_gains": int(found.sum()),
        "share": share,
        "estimated_pairs": share * total if share is not None else None,
        "best_gain": float(best[found].max()) if found.any() else None,
    }


# --- outcome metrics of a run, for sweeps -------------------------------------------------------

# summary() keys kept as a run's outcome metrics: the figures a study compares
# across replications and conditions (cost and counters are left to `runs`).
_OUTCOME_KEYS = (
    "acceptance_rate",
    "welfare_initial",
    "welfare_final",
    "welfare_change",
    "individually_rational_share",
    "need_fulfilment_initial",
    "need_fulfilment_final",
    "nash_welfare_final",
    "rawls_final",
    "gini_holdings_initial",
    "gini_holdings_final",
    "gini_utility_final",
    "mean_turns_to_agreement",
)


def run_metrics(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, float]:
    """A run's outcome metrics as name -> value, computed from the functions above
    (never redefined here), for the run_metrics table that sweeps are analysed from.

    - The summary() figures of _OUTCOME_KEYS (welfare, need fulfilment,
      acceptance, Nash and Rawls welfare, Gini of holdings and utility).
    - price_sd_first / price_sd_last: pooled within-pair SD of log exchange
      rates (price_dispersion, pair 'all') in the first and last of 4 windows,
      left out when that window has too few trades; price_df_first /
      price_df_last: its degrees of freedom (always there).
    - mrs_sd_initial / mrs_sd_final, mrs_df_initial / mrs_df_final: pooled SD
      of log MRS across holders at the start and at the end (mrs_dispersion);
      mrs_gap_first / mrs_gap_last: mean |difference of the two traders' log
      MRS| over the trades of the first and last of 4 windows (mrs_prices).
    - efficiency, optimum_max_gain, optimum_below_start
      (allocative_efficiency); gains_left_share, gains_left_best
      (gains_left_on_table; best only when some pair has gains left).
    - adherence_followed: share of accepted deals with advice that were exactly
      the suggested swap; adherence_distance: mean |agreed - suggested log
      rate| over deals on the suggested resources (facilitator_adherence);
      anchoring (see anchoring()). Absent in a control run.
    - utility_gain:P, surplus_share:P, acceptance_rate:P for each personality P
      (by_personality).

    A value that is undefined for the run (no trades, no advice) is left out
    rather than stored as NULL, so a mean over runs is over the runs that have it.
    """
    overall = summary(con, run_id)
    values: dict[str, Any] = {key: overall[key] for key in _OUTCOME_KEYS}
    pooled = price_dispersion(con, run_id, windows=4)
    pooled = pooled[pooled["pair"] == "all"]
    if len(pooled):
        for name, k in (("first", 0), ("last", -1)):
            values[f"price_sd_{name}"] = pooled["sd_log_rate"].iloc[k]
            values[f"price_df_{name}"] = pooled["df"].iloc[k]
    c = community(con, run_id)
    spread = _mrs_dispersion(con, run_id, 4, c)
    spread = spread[spread["pair"] == "all"]
    for name, k in (("initial", 0), ("final", -1)):
        values[f"mrs_sd_{name}"] = spread["sd_log_mrs"].iloc[k]
        values[f"mrs_df_{name}"] = spread["df"].iloc[k]
    gaps = _mrs_prices(con, run_id, 4, c).groupby("window")["mrs_gap"].mean()
    if len(gaps):
        values["mrs_gap_first"], values["mrs_gap_last"] = gaps.iloc[0], gaps.iloc[-1]
    efficiency = _efficiency(c, overall["welfare_change"])
    values["efficiency"] = efficiency["efficiency"]
    values["optimum_max_gain"] = efficiency["max_gain"]
    values["optimum_below_start"] = efficiency["below_start"]
    left = _gains_left(c)
    values["gains_left_share"] = left["share"]
    values["gains_left_best"] = left["best_gain"]
    adherence = facilitator_adherence(con, run_id)
    if len(adherence):
        values["adherence_followed"] = adherence["followed"].mean()
        values["adherence_distance"] = adherence["distance"].mean()
        values["anchoring"] = anchoring(con, run_id)
    for row in by_personality(con, run_id).itertuples():
        for key in ("utility_gain", "surplus_share", "acceptance_rate"):
            values[f"{key}:{row.personality}"] = getattr(row, key)
    return {key: float(v) for key, value in values.items() if (v := plain(value)) is not None}



# --- periods (runs of several periods: production.py) --------------------------------------------
# Each figure is per period t = 1..P of the run; a one-period run has no period_utility
# or flows rows, and its exchanges are all period 1.

_PERIOD_LIST = "period_list AS (SELECT range::INTEGER AS period FROM range(1, $periods + 1))"


def run_periods(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """P, the periods of a run (its config's ``periods``; 1 for runs stored before periods existed)."""
    _check_runs(con, [run_id])
    row = con.execute(
        "SELECT coalesce(json_extract(config, '$.periods')::INTEGER, 1) FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 1


def _period_frame(con: duckdb.DuckDBPyConnection, template: str, run_id: str,
                  params: dict[str, Any] | None = None) -> pd.DataFrame:
    return _frame(con, template, run_id, {"periods": run_periods(con, run_id), **(params or {})})


_NEED_FULFILMENT_BY_PERIOD_SQL = f"""
WITH rows AS (  -- what each participant consumed of its need: held = consumed, so min(held, need) = consumed
    SELECT period, participant_id, needed - unmet AS held, needed AS need FROM period_utility WHERE {{runs}}
),
shares AS (SELECT period, participant_id, {NEED_FULFILMENT_SQL} AS share FROM rows GROUP BY period, participant_id),
community AS (
    SELECT period, sum(need) AS needed, sum(need - held) AS unmet, {NEED_FULFILMENT_SQL} AS fulfilment
    FROM rows GROUP BY period
),
means AS (SELECT period, avg(share ORDER BY participant_id) AS mean_fulfilment FROM shares GROUP BY period)
SELECT period, needed::BIGINT AS needed, unmet::BIGINT AS unmet, fulfilment, mean_fulfilment
FROM community JOIN means USING (period) ORDER BY period
"""


def need_fulfilment_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per period: units needed, units of that need not consumed (unmet), the
    community's share of need consumed (fulfilment = sum consumed / sum needed),
    and the mean over participants of each one's share (mean_fulfilment; 1.0 for
    one who needs nothing). Both are economy.NEED_FULFILMENT_SQL over what was
    consumed, c = min(h, n) at the period's end (economy.consumption), read from
    period_utility (needed - unmet = consumed). No rows for a one-period run."""
    return _frame(con, _NEED_FULFILMENT_BY_PERIOD_SQL, run_id)


_UTILITY_BY_PERIOD_SQL = """
SELECT period, count(*) AS participants, avg(utility ORDER BY participant_id) AS mean_utility,
       sum(utility ORDER BY participant_id) AS utility, sum(discounted_utility ORDER BY participant_id) AS discounted_utility,
       sum(sum(discounted_utility ORDER BY participant_id)) OVER (ORDER BY period) AS run_utility_so_far
FROM period_utility WHERE {runs} GROUP BY period ORDER BY period
"""


def utility_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per period t: the community's consumption utility u_t = sum_i U_i(h_it)
    (economy.py: U_i of the holdings the period's consumption is taken from,
    lambda x units consumed plus the log term of holding), its mean per
    participant, the discounted delta^(t-1) u_t, and run_utility_so_far = the
    discounted sum up to t (the run's utility at t = P). From period_utility;
    no rows for a one-period run."""
    return _frame(con, _UTILITY_BY_PERIOD_SQL, run_id)


_TRADES_BY_PERIOD_SQL = f"""
WITH {_PERIOD_LIST}
SELECT p.period, count(e.exchange_id) AS exchanges, count(e.exchange_id) FILTER (e.outcome = 'accepted') AS accepted,
       count(e.exchange_id) FILTER (e.outcome = 'accepted') / nullif(count(e.exchange_id), 0) AS acceptance_rate
FROM period_list AS p LEFT JOIN exchanges AS e ON e.period = p.period AND e.{{runs}}
GROUP BY p.period ORDER BY p.period
"""


def trades_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per period 1..P (exchanges.period): exchanges of any outcome, accepted
    ones, and acceptance_rate = accepted / exchanges (None in a period without
    exchanges). Trade that goes on period after period is what renewal is for
    (issue 13; Epstein & Axtell 1996, ch. IV: agents that metabolise keep trading)."""
    return _period_frame(con, _TRADES_BY_PERIOD_SQL, run_id)


_BY_PERIOD_WINDOWS = """
windowed AS (  -- each exchange's "window" is its period
    SELECT *, period AS "window" FROM exchanges WHERE {runs}
)"""
_PRICES_BY_PERIOD_SQL = _PRICE_DISPERSION_SQL.replace(_WINDOWED, _BY_PERIOD_WINDOWS)


def prices_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """price_dispersion with periods for windows: per period and resource pair,
    trades, df = trades - 1, mean and SD of the log exchange rate (rates as in
    exchange_rates), and pair 'all' = the pooled within-pair SD (Epstein &
    Axtell 1996, ch. IV: the SD of log price falls as trade goes on). Every
    period with exchanges has an 'all' row; sd_log_rate is None when df <
    MIN_DISPERSION_DF (too few trades, not a spread of 0)."""
    frame = _frame(con, _PRICES_BY_PERIOD_SQL, run_id, {"min_df": MIN_DISPERSION_DF})
    return frame.rename(columns={"window": "period"})


_CONSUMPTION_GINI_BY_PERIOD_SQL = (
    """
WITH consumed AS (
    SELECT period, participant_id, sum(quantity) AS units FROM flows WHERE {runs} AND kind = 'consumed'
    GROUP BY period, participant_id
),
per_participant AS (  -- everyone at the period's end, consuming or not
    SELECT u.period, u.participant_id, coalesce(c.units, 0) AS value
    FROM period_utility AS u LEFT JOIN consumed AS c USING (period, participant_id) WHERE u.{runs}
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY period ORDER BY value, participant_id) AS i,
           count(*) OVER (PARTITION BY period) AS n
    FROM per_participant
)
SELECT period, sum(value)::BIGINT AS consumed, """
    + _GINI
    + """ AS gini
FROM ranked GROUP BY period ORDER BY period
"""
)


def consumption_gini_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per period: units consumed (the flows of kind consumed) and the Gini
    (1912, rank form, as in summary()) of units consumed per participant, every
    participant counted (0 for one who consumed nothing). Consumption is worth
    lambda per unit (economy.py), so this is also the Gini of consumption's
    need utility. None when nobody consumed; no rows for a one-period run."""
    return _frame(con, _CONSUMPTION_GINI_BY_PERIOD_SQL, run_id)


_REPEAT_PARTNERS_BY_PERIOD_SQL = f"""
WITH {_PERIOD_LIST},
pair_periods AS (  -- accepted trades of each unordered pair in each period
    SELECT period, least(initiator_id, responder_id) AS a, greatest(initiator_id, responder_id) AS b, count(*) AS trades
    FROM exchanges WHERE {{runs}} AND outcome = 'accepted' GROUP BY ALL
),
firsts AS (SELECT a, b, min(period) AS first_period FROM pair_periods GROUP BY a, b),
per AS (
    SELECT q.period, sum(q.trades) AS trades, count(*) AS pairs,
           count(*) FILTER (f.first_period < q.period) AS repeat_pairs,
           coalesce(sum(q.trades) FILTER (f.first_period < q.period), 0) AS repeat_trades
    FROM pair_periods AS q JOIN firsts AS f USING (a, b) GROUP BY q.period
)
SELECT l.period, coalesce(p.trades, 0)::BIGINT AS trades, coalesce(p.pairs, 0)::BIGINT AS pairs,
       coalesce(p.repeat_pairs, 0)::BIGINT AS repeat_pairs, coalesce(p.repeat_trades, 0)::BIGINT AS repeat_trades,
       p.repeat_pairs / nullif(p.pairs, 0) AS repeat_share
FROM period_list AS l LEFT JOIN per AS p USING (period) ORDER BY l.period
"""


def repeat_partners_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per period: accepted trades, the pairs that traded (unordered), how many
    of those pairs had traded in an earlier period (repeat_pairs) and their
    trades, and repeat_share = repeat_pairs / pairs (None without trades; 0 in
    period 1 by definition). Repeat partners are what reputation and
    commitment in exchange grow from (Kollock 1994, "The emergence of exchange
    structures", American Journal of Sociology 100(2))."""
    return _period_frame(con, _REPEAT_PARTNERS_BY_PERIOD_SQL, run_id)


_HOLDINGS_BY_PERIOD_SQL = f"""
WITH {_PERIOD_LIST},
people AS (SELECT participant_id, personality FROM participants WHERE {{runs}}),
moves AS (  -- every change of holdings, in the period whose trading it precedes or is part of
    SELECT 1 AS period, participant_id, resource::VARCHAR AS resource, quantity FROM initial_holdings WHERE {{runs}}
    UNION ALL
    SELECT e.period, t.to_id, t.resource::VARCHAR, t.quantity
    FROM transfers AS t JOIN exchanges AS e USING (run_id, exchange_id) WHERE t.{{runs}}
    UNION ALL
    SELECT e.period, t.from_id, t.resource::VARCHAR, -t.quantity
    FROM transfers AS t JOIN exchanges AS e USING (run_id, exchange_id) WHERE t.{{runs}}
    UNION ALL  -- produced at the period's start
    SELECT period, participant_id, resource::VARCHAR, quantity FROM flows WHERE {{runs}} AND kind = 'produced'
    UNION ALL  -- consumed, expired, spoiled at its end: gone by the next period's trading
    SELECT period + 1, participant_id, resource::VARCHAR, -quantity FROM flows WHERE {{runs}} AND kind != 'produced'
),
by_group AS (
    SELECT m.period, p.personality, m.resource, sum(m.quantity) AS net
    FROM moves AS m JOIN people AS p USING (participant_id) GROUP BY ALL
),
grid AS (
    SELECT l.period, g.personality, g.resource
    FROM period_list AS l CROSS JOIN (SELECT DISTINCT personality, resource FROM by_group) AS g
)
SELECT period, personality, resource,
       (sum(coalesce(b.net, 0)) OVER (PARTITION BY personality, resource ORDER BY period))::BIGINT AS quantity
FROM grid LEFT JOIN by_group AS b USING (period, personality, resource)
ORDER BY period, personality, resource
"""


def holdings_by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Units of each resource held by each personality group when each period's
    trading ends (before its consumption, expiry and spoilage): initial holdings
    + produced up to that period + transfers of its exchanges and earlier ones
    - what the earlier periods' ends removed (the ledger's conservation
    identity with flows, production.py)."""
    return _period_frame(con, _HOLDINGS_BY_PERIOD_SQL, run_id)


def by_period(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per period 1..P with the headline figure of each function above
    (never recomputed): exchanges, accepted, need fulfilment, mean utility,
    Gini of consumption, the pooled price SD with its df, and repeat_share."""
    frame = trades_by_period(con, run_id)[["period", "exchanges", "accepted"]]
    need = need_fulfilment_by_period(con, run_id)[["period", "fulfilment"]]
    utility = utility_by_period(con, run_id)[["period", "mean_utility"]]
    gini = consumption_gini_by_period(con, run_id)[["period", "gini"]].rename(columns={"gini": "consumption_gini"})
    prices = prices_by_period(con, run_id)
    prices = prices[prices["pair"] == "all"][["period", "sd_log_rate", "df"]].rename(
        columns={"sd_log_rate": "price_sd", "df": "price_df"})
    repeat = repeat_partners_by_period(con, run_id)[["period", "repeat_share"]]
    for part in (need, utility, gini, prices, repeat):
        frame = frame.merge(part, on="period", how="left")
    return frame
