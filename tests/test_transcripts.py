"""Transcripts read like people wrote them: counts agree with their nouns, nobody repeats a counter word for
word, a turn-1 decline reads as declining, and every offer says who gives what."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from commonpool.brains.rules import offer_messages, offer_repeats
from commonpool.exchange_log import ending_text, swap_text, transcript
from commonpool.protocol import ACCEPT, COUNTER, PROPOSE, REJECT
from commonpool.wording import count, singular, units

DEFAULT_NAMES = ("books|tools|vegetables|bread loaves|bike repairs|cooking lessons|childcare hours|gardening hours|"
                 "trades|deals|meetings|turns")
ONE_PLURAL = re.compile(rf"(?<![\d.])1 ({DEFAULT_NAMES})\b")


@pytest.mark.parametrize(("plural", "one"), [
    ("books", "book"), ("bread loaves", "bread loaf"), ("childcare hours", "childcare hour"),
    ("bike repairs", "bike repair"), ("vegetables", "vegetable"), ("berries", "berry"), ("glasses", "glass"),
    ("lunches", "lunch"), ("cookies", "cookie"), ("tomatoes", "tomato"), ("sewing", "sewing"),
    ("firewood", "firewood"), ("Swiss", "Swiss"), ("bus", "bus"), ("Children", "Child"),
])
def test_one_unit_takes_the_singular_of_the_last_word(plural: str, one: str) -> None:
    assert singular(plural) == one
    assert units(1, plural) == f"1 {one}" and units(2, plural) == f"2 {plural}" and units(0, plural) == f"0 {plural}"


def test_counts_agree_with_their_nouns() -> None:
    assert [count(n, "turn") for n in (0, 1, 2)] == ["0 turns", "1 turn", "2 turns"]
    assert swap_text("books", 1, "tools", 1) == "1 book for 1 tool"


@pytest.fixture
def long_talks(simulate):
    """A run with long negotiations: 12 turns, so counters repeat and openers decline."""
    return simulate(num_participants=30, min_exchanges=1500, max_exchanges=1500, max_turns=12, seed=2)


def test_no_message_or_note_says_1_of_a_plural(long_talks, store) -> None:
    con = store.connect()
    texts = [m for (m,) in con.sql("SELECT message FROM offers UNION ALL SELECT note FROM advice").fetchall()]
    assert len(texts) > 3000
    assert any(re.search(r"(?<![\d.])1 (book|tool|bread loaf|trade|deal|meeting)\b", t) for t in texts)
    assert [t for t in texts if ONE_PLURAL.search(t)] == []


def test_no_speaker_repeats_an_offer_word_for_word(long_talks, store) -> None:
    con = store.connect()
    repeated = con.sql("""
        SELECT exchange_id, speaker_id, message, count(*) AS n FROM offers
        WHERE action IN ('propose', 'counter') GROUP BY ALL HAVING n > 1""").fetchall()
    assert repeated == []
    standing = con.sql("SELECT count(*) FROM offers WHERE message LIKE 'I''ll stay with my %'").fetchall()[0][0]
    assert standing > 0  # the run does have speakers who hold their ground


def test_every_offer_says_who_gives_what(long_talks, store) -> None:
    con = store.connect()
    offers = con.sql("""
        SELECT o.message, o.initiator_gives_qty, o.initiator_gives, o.responder_gives_qty, o.responder_gives,
               o.speaker_id = e.initiator_id AS initiator_speaks
        FROM offers o JOIN exchanges e USING (run_id, exchange_id)
        WHERE o.action IN ('propose', 'counter', 'accept')""").fetchall()
    for message, qa, a, qb, b, initiator_speaks in offers:
        mine, yours = (units(qa, a), units(qb, b)) if initiator_speaks else (units(qb, b), units(qa, a))
        assert f"my {mine} for your {yours}" in message, message


def test_a_turn_1_decline_reads_as_declining(long_talks, store) -> None:
    con = store.connect()
    declines = con.sql("SELECT DISTINCT message FROM offers WHERE turn = 1 AND action = 'reject'").fetchall()
    assert declines and all(m.startswith("No thanks") for (m,) in declines)
    exchange_id = con.sql("SELECT min(exchange_id) FROM exchanges WHERE turns = 1 AND outcome = 'rejected'").fetchall()[0][0]
    ending = ending_text(transcript(con, long_talks.run_id, exchange_id).exchange)
    assert "declined to trade" in ending and "after 1 turns" not in ending
    agreed = con.sql("SELECT min(exchange_id) FROM exchanges WHERE outcome = 'accepted' AND turns > 1").fetchall()[0][0]
    assert re.search(r"after \d+ turns\. .* gives \d", ending_text(transcript(con, long_talks.run_id, agreed).exchange))


def test_the_facilitator_s_note_names_who_gives_what(long_talks, store) -> None:
    con = store.connect()
    notes = con.sql("""
        SELECT a.note, i.name, a.initiator_gives_qty, a.initiator_gives, r.name, a.responder_gives_qty, a.responder_gives
        FROM advice a JOIN exchanges e USING (run_id, exchange_id)
        JOIN participants i ON i.run_id = a.run_id AND i.participant_id = e.initiator_id
        JOIN participants r ON r.run_id = a.run_id AND r.participant_id = e.responder_id
        WHERE a.initiator_gives IS NOT NULL  -- a suggestion was made
        LIMIT 200""").fetchall()
    assert notes
    for note, initiator, qa, a, responder, qb, b in notes:
        assert f"I suggest {initiator} gives {units(qa, a)} and {responder} gives {units(qb, b)}." in note, note


def test_repeats_count_up_whatever_the_row_order() -> None:
    # One exchange: the initiator proposes X, then counters X twice more; the responder counters Y, Y, then accepts.
    x, y = (0, 2, 1, 3), (1, 1, 0, 2)
    rows = [(1, PROPOSE, x), (2, COUNTER, y), (3, COUNTER, x), (4, COUNTER, y), (5, COUNTER, x), (6, ACCEPT, x)]
    order = np.array([4, 0, 5, 2, 1, 3])
    turn = np.array([r[0] for r in rows])[order]
    action = np.array([r[1] for r in rows])[order]
    swap = np.array([r[2] for r in rows])[order]
    repeats = offer_repeats(np.full(6, 7), turn, action, *swap.T)
    assert dict(zip(turn.tolist(), repeats.tolist())) == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 0}
    names = pa.array(["books", "tools", "vegetables"])
    messages = offer_messages(action, turn, turn % 2 == 1, names.take(swap[:, 0]), swap[:, 1],
                              names.take(swap[:, 2]), swap[:, 3], repeats).to_pylist()
    by_turn = dict(zip(turn.tolist(), messages))
    assert by_turn[1] == "I'd like to trade my 2 books for your 3 tools."
    assert by_turn[3] == "I'll stay with my 2 books for your 3 tools."
    assert by_turn[5] == "That's 3 times I've offered my 2 books for your 3 tools; it still stands."
    assert by_turn[2] == "How about my 2 books for your 1 tool instead?"  # the responder gives b
    assert len(set(messages)) == len(messages)


def test_a_decline_before_any_offer_and_one_after_read_differently() -> None:
    messages = offer_messages(np.array([REJECT, REJECT]), np.array([1, 4]), np.array([True, False]),
                              pa.array([None, "books"], pa.string()), np.array([0, 1]),
                              pa.array([None, "tools"], pa.string()), np.array([0, 1])).to_pylist()
    assert messages[0].startswith("No thanks:") and "pass" in messages[1]
