"""The exchange log of a run, a page at a time, and one exchange read as a conversation.

Filtering, counting and paging all happen in DuckDB, so a page of a
million-exchange run costs the same as a page of a small one: only `limit`
rows ever leave the database. User input reaches SQL only as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from commonpool.store.schema import OUTCOMES
from commonpool.wording import count, units

_FILTERED = """
WITH people AS (
    SELECT participant_id, name, personality FROM participants WHERE run_id = $run_id
),
log AS (
    SELECT e.exchange_id, e.round,
           i.name AS initiator, i.personality AS initiator_personality,
           r.name AS responder, r.personality AS responder_personality,
           e.outcome, e.turns,
           e.initiator_gives, e.initiator_gives_qty, e.responder_gives, e.responder_gives_qty,
           e.initiator_utility_after - e.initiator_utility_before AS initiator_gain,
           e.responder_utility_after - e.responder_utility_before AS responder_gain,
           e.reason
    FROM exchanges e
    JOIN people i ON i.participant_id = e.initiator_id
    JOIN people r ON r.participant_id = e.responder_id
    WHERE e.run_id = $run_id
      AND (len($outcomes) = 0 OR list_contains($outcomes, e.outcome::VARCHAR))
      AND ($who = '' OR contains(lower(i.name), lower($who)) OR contains(lower(r.name), lower($who)))
      AND ($personality = '' OR i.personality = $personality OR r.personality = $personality)
)
"""


@dataclass(frozen=True)
class LogPage:
    rows: pd.DataFrame
    total: int  # rows matching the filters, over every page


def log_page(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    outcomes: list[str] | None = None,
    who: str = "",
    personality: str = "",
    limit: int = 50,
    offset: int = 0,
) -> LogPage:
    """Exchanges of run_id in settlement order, filtered by outcome, a name fragment and a personality."""
    unknown = sorted(set(outcomes or []) - set(OUTCOMES))
    if unknown:
        raise ValueError(f"outcomes: unknown {unknown}; allowed: {', '.join(OUTCOMES)}")
    params: dict[str, Any] = {
        "run_id": run_id,
        "outcomes": list(outcomes or []),
        "who": who.strip(),
        "personality": personality,
    }
    total = con.execute(_FILTERED + "SELECT count(*) FROM log", params).fetchone()[0]
    rows = con.execute(
        _FILTERED + "SELECT * FROM log ORDER BY exchange_id LIMIT $limit OFFSET $offset",
        {**params, "limit": max(1, limit), "offset": max(0, offset)},
    ).df()
    return LogPage(rows=rows, total=int(total))


@dataclass(frozen=True)
class Transcript:
    """One negotiation: who met, what each said in turn, and what the facilitator advised."""

    exchange: dict[str, Any]  # the exchange's row, with names and personalities
    turns: pd.DataFrame  # turn, speaker, speaker_personality, role, action, swap columns, message, source, fallback_reason
    advice: dict[str, Any] | None  # the facilitator's suggested swap, note, source and fallback_reason; None when it was off
    valuations: pd.DataFrame  # resource, valuation (empty without a facilitator)


def transcript(con: duckdb.DuckDBPyConnection, run_id: str, exchange_id: int) -> Transcript | None:
    """The conversation of one exchange, or None if the run has no such exchange."""
    found = con.execute(
        _FILTERED + "SELECT * FROM log WHERE exchange_id = $exchange_id",
        {"run_id": run_id, "outcomes": [], "who": "", "personality": "", "exchange_id": exchange_id},
    ).df()
    if found.empty:
        return None
    turns = con.execute(
        """
        SELECT o.turn, p.name AS speaker, p.personality AS speaker_personality,
               CASE WHEN o.speaker_id = e.initiator_id THEN 'initiator' ELSE 'responder' END AS role,
               o.action, o.initiator_gives, o.initiator_gives_qty, o.responder_gives, o.responder_gives_qty,
               o.message, o.source, o.fallback_reason
        FROM offers o
        JOIN exchanges e ON e.run_id = o.run_id AND e.exchange_id = o.exchange_id
        JOIN participants p ON p.run_id = o.run_id AND p.participant_id = o.speaker_id
        WHERE o.run_id = $run_id AND o.exchange_id = $exchange_id
        ORDER BY o.turn
        """,
        {"run_id": run_id, "exchange_id": exchange_id},
    ).df()
    advice = con.execute(
        """
        SELECT initiator_gives, initiator_gives_qty, responder_gives, responder_gives_qty,
               typical_rate, typical_rate_trades, note, source, valuations
        FROM advice WHERE run_id = $run_id AND exchange_id = $exchange_id
        """,
        {"run_id": run_id, "exchange_id": exchange_id},
    ).df()
    if advice.empty:
        return Transcript(found.iloc[0].to_dict(), turns, None, pd.DataFrame({"resource": [], "valuation": []}))
    row = advice.iloc[0].to_dict()
    row["fallback_reason"] = None
    if row["source"] == "fallback":
        # The advice table keeps only that it fell back; why is the facilitator's last call's error.
        row["fallback_reason"] = con.execute(
            """SELECT arg_max(error, call_id) FROM llm_calls
               WHERE run_id = $run_id AND exchange_id = $exchange_id AND role = 'facilitator'""",
            {"run_id": run_id, "exchange_id": exchange_id},
        ).fetchone()[0]
    valuations = row.pop("valuations") or {}
    table = pd.DataFrame({"resource": list(valuations), "valuation": list(valuations.values())})
    return Transcript(found.iloc[0].to_dict(), turns, row, table)


def swap_text(gives: object, gives_qty: object, receives: object, receives_qty: object) -> str:
    """'2 books for 1 tool', or '' when there is no swap (a reject carries none)."""
    if gives is None or receives is None or pd.isna(gives) or pd.isna(receives):
        return ""
    return f"{units(int(gives_qty), str(gives))} for {units(int(receives_qty), str(receives))}"


def ending_text(exchange: dict[str, Any]) -> str:
    """How an exchange ended, in words: its outcome after how many turns, who gave what, both utility changes.

    exchange is a Transcript's row. An initiator that declined on turn 1 made no
    offer, so that reads as declining, not as an offer that was rejected.
    """
    initiator, responder = exchange["initiator"], exchange["responder"]
    turns = int(exchange["turns"])
    if exchange["outcome"] == "rejected" and turns == 1:
        text = f"Outcome: {initiator} declined to trade; no offer was made."
    else:
        text = f"Outcome: {exchange['outcome']} after {count(turns, 'turn')}."
    agreed = swap_text(exchange["initiator_gives"], exchange["initiator_gives_qty"], exchange["responder_gives"],
                       exchange["responder_gives_qty"])
    if agreed:
        text += f" {initiator} gives {agreed}."
    text += (f" Utility change: {initiator} {exchange['initiator_gain']:+.2f}, "
             f"{responder} {exchange['responder_gain']:+.2f}.")
    if isinstance(exchange["reason"], str) and exchange["reason"]:
        text += f" Reason: {exchange['reason']}."
    return text
