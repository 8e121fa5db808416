"""The offline brain: deterministic, array-at-a-time decisions from personality traits.

A proposal is a point (x, y) on a grid of whole quantities: the initiator gives
x units of resource a, the responder gives y units of b. Every candidate is
scored with both sides' exact utility change (economy.swap_gain). A speaker
proposes the candidate whose share of the joint gain, g_self / (g_self +
g_partner), is nearest its aspiration, which falls by ``concession`` with each
proposal it makes (a time-dependent concession strategy, Faratin, Sierra &
Jennings 1998), pulled toward the facilitator's suggested rate by
``anchoring``. Strategic speakers raise their aspiration against partners with
a record of accepting (``memory``). A candidate must leave the partner better
off and the speaker at least ``min_gain`` better off after weighing the
partner's gain by ``altruism``.

A reply accepts an offer when it passes that same test and is at least as
good as the counter the speaker would make (the AC_next acceptance condition,
Baarslag et al. 2014); on the last turn any offer that passes is accepted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from commonpool import economy
from commonpool.protocol import (
    ACCEPT,
    COUNTER,
    NO_RESOURCE,
    PROPOSE,
    REJECT,
    RULES,
    AdviceBatch,
    Decisions,
    ExchangeBatch,
    World,
    speaker_is_initiator,
)
from commonpool.wording import singular

ANCHOR_WEIGHT = 0.1  # share-distance units per unit of |log rate - log suggested rate| at anchoring 1


def grid_size(world: World) -> int:
    return int(world.population.traits["max_units"].max())


def swap_gains(
    world: World, i: np.ndarray, j: np.ndarray, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sides' utility change, and feasibility, for i giving x of a to j for y of b (broadcasting)."""
    h, n, w, lam = world.holdings, world.population.needs, world.population.wants, world.need_weight
    i, j, a, b = (v.reshape(v.shape + (1,) * (x.ndim - 1)) if x.ndim > 1 else v for v in (i, j, a, b))
    g_i = economy.swap_gain(h[i, a], h[i, b], n[i, a], n[i, b], w[i, a], w[i, b], x, y, lam)
    g_j = economy.swap_gain(h[j, b], h[j, a], n[j, b], n[j, a], w[j, b], w[j, a], y, x, lam)
    feasible = (x <= h[i, a]) & (y <= h[j, b]) & (x >= 1) & (y >= 1) & (a != b)
    return g_i, g_j, feasible


@functools.cache
def _grid(q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (x, y) in 1..q x 1..q as [1, q * q] rows, and ln(x / y) of each; read-only, made once per q."""
    x, y = np.meshgrid(np.arange(1, q + 1), np.arange(1, q + 1), indexing="ij")
    x, y = x.ravel()[None, :], y.ravel()[None, :]
    log_rate = np.log(x / y)
    for array in (x, y, log_rate):
        array.flags.writeable = False
    return x, y, log_rate


@dataclass
class _GridGains:
    """swap_gains over the grid for each row of a round, on the resources (res_a, res_b) it was asked for.

    A row's initiator, responder and holdings do not change within a round, and
    every decision of a row is about the same two resources, so the grid is
    scored once per row and round instead of once per turn and speaker.
    """

    res_a: np.ndarray  # per batch row; NO_RESOURCE until computed
    res_b: np.ndarray
    g_i: np.ndarray  # [batch row, grid point]
    g_j: np.ndarray
    feasible: np.ndarray


def grid_gains(
    world: World, batch: ExchangeBatch, rows: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """swap_gains of every grid swap for rows on resources (a, b), computed once per row and round (batch.memo)."""
    x, y, _ = _grid(grid_size(world))
    memo = batch.memo.get("grid")
    if not isinstance(memo, _GridGains):
        size, points = len(batch.initiator), x.shape[1]
        memo = _GridGains(
            np.full(size, NO_RESOURCE), np.full(size, NO_RESOURCE),
            np.empty((size, points)), np.empty((size, points)), np.empty((size, points), dtype=bool),
        )
        batch.memo["grid"] = memo
    miss = (memo.res_a[rows] != a) | (memo.res_b[rows] != b)
    if miss.any():
        new = rows[miss]
        memo.g_i[new], memo.g_j[new], memo.feasible[new] = swap_gains(
            world, batch.initiator[new], batch.responder[new], a[miss], b[miss], x, y
        )
        memo.res_a[new], memo.res_b[new] = a[miss], b[miss]
    return memo.g_i[rows], memo.g_j[rows], memo.feasible[rows]


def offer_gains(
    world: World, batch: ExchangeBatch, rows: np.ndarray,
    a: np.ndarray, qa: np.ndarray, b: np.ndarray, qb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """swap_gains of each row's offer: read off the row's grid when the offer is on it (a rules offer always is)."""
    q = grid_size(world)
    if ((qa >= 1) & (qa <= q) & (qb >= 1) & (qb <= q)).all():
        g_i, g_j, feasible = grid_gains(world, batch, rows, a, b)
        k = np.arange(len(rows))
        point = (qa - 1) * q + (qb - 1)  # _grid's order: x major, y minor
        return g_i[k, point], g_j[k, point], feasible[k, point]
    return swap_gains(world, batch.initiator[rows], batch.responder[rows], a, b, qa, qb)


def choose_swap(
    world: World,
    batch: ExchangeBatch,
    rows: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    initiator_speaks: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The speaker's proposal on resources (a, b): quantities x, y, whether any candidate qualifies, its value.

    Value is the speaker's own judgement g_self + altruism * g_partner.
    """
    i, j = batch.initiator[rows], batch.responder[rows]
    speaker, partner = (i, j) if initiator_speaks else (j, i)
    traits = world.population.traits
    x, y, log_rate = _grid(grid_size(world))
    g_i, g_j, feasible = grid_gains(world, batch, rows, a, b)
    g_s, g_p = (g_i, g_j) if initiator_speaks else (g_j, g_i)

    side = 0 if initiator_speaks else 1
    pull = traits["memory"][speaker] * (world.history.acceptance_record(partner) - 0.5)
    aspiration = np.clip(
        traits["aspiration"][speaker] + pull - traits["concession"][speaker] * batch.proposals[rows, side], 0.0, 1.0
    )[:, None]
    limit = traits["max_units"][speaker][:, None]
    altruism = traits["altruism"][speaker][:, None]
    value = g_s + altruism * g_p
    ok = (
        feasible
        & (x <= limit)
        & (y <= limit)
        & (g_p > 0)
        & (g_s >= traits["min_gain"][speaker][:, None])
        & (value >= 0)
    )
    total = g_s + g_p
    share = g_s / np.where(total > 0, total, 1.0)
    score = np.abs(share - aspiration) - 1e-6 * total
    if batch.advice is not None:
        suggested = np.log(batch.advice.qty_a[rows] / batch.advice.qty_b[rows])[:, None]
        anchored = (batch.advice.res_a[rows] == a) & (batch.advice.res_b[rows] == b)
        distance = np.abs(log_rate - suggested) * anchored[:, None]
        score = score + ANCHOR_WEIGHT * traits["anchoring"][speaker][:, None] * distance
    score = np.where(ok, score, np.inf)
    best = np.argmin(score, axis=1)
    found = np.isfinite(score[np.arange(len(rows)), best])
    k = np.arange(len(rows))
    return x[0, best], y[0, best], found, value[k, best]


def best_for_self(
    world: World, batch: ExchangeBatch, rows: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The initiator's most self-serving feasible swap that still passes its own min_gain."""
    i = batch.initiator[rows]
    x, y, _ = _grid(grid_size(world))
    g_i, _, feasible = grid_gains(world, batch, rows, a, b)
    traits = world.population.traits
    limit = traits["max_units"][i][:, None]
    ok = feasible & (x <= limit) & (y <= limit) & (g_i >= traits["min_gain"][i][:, None])
    score = np.where(ok, -g_i, np.inf)
    best = np.argmin(score, axis=1)
    return x[0, best], y[0, best], np.isfinite(score[np.arange(len(rows)), best])


def own_pick(world: World, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Without advice, the initiator looks only at its own marginal values.

    It asks for what it would gain most from among what the partner holds, and
    offers what it would miss least among what it holds.
    """
    h, n, w, lam = world.holdings, world.population.needs, world.population.wants, world.need_weight
    gain = np.where(h[j] > 0, economy.marginal_gain(h[i], n[i], w[i], lam), -np.inf)
    b = np.argmax(gain, axis=1)
    loss = economy.marginal_loss(h[i], n[i], w[i], lam)
    loss[np.arange(len(i)), b] = np.inf
    a = np.argmin(loss, axis=1)
    return a, b


class RulesBrain:
    """Brain protocol: propose (turn 1) and reply (later turns) for a batch of exchange rows."""

    def propose(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        i, j = batch.initiator[rows], batch.responder[rows]
        if batch.advice is not None:
            a, b = batch.advice.res_a[rows], batch.advice.res_b[rows]
        else:
            a, b = own_pick(world, i, j)
        x, y, found, _ = choose_swap(world, batch, rows, a, b, initiator_speaks=True)
        if not found.all():
            # Nothing helps both: the opener asks for what it would gain most from, on
            # its own terms; if even that breaks its own rule it declines to trade.
            sx, sy, self_found = best_for_self(world, batch, rows, a, b)
            x, y = np.where(found, x, sx), np.where(found, y, sy)
            found = found | self_found
        decisions = Decisions.empty(len(rows))
        decisions.action[:] = np.where(found, PROPOSE, REJECT)
        decisions.res_a[:], decisions.qty_a[:], decisions.res_b[:], decisions.qty_b[:] = a, x, b, y
        decisions.source[:] = RULES
        return decisions

    def reply(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> Decisions:
        initiator_speaks = speaker_is_initiator(batch.turn)
        speaker = batch.speakers(rows)
        traits = world.population.traits
        a, qa, b, qb = batch.cur_a[rows], batch.cur_qa[rows], batch.cur_b[rows], batch.cur_qb[rows]
        g_i, g_j, feasible = offer_gains(world, batch, rows, a, qa, b, qb)
        g_s, g_p = (g_i, g_j) if initiator_speaks else (g_j, g_i)
        offer_value = g_s + traits["altruism"][speaker] * g_p
        passes = feasible & (g_s >= traits["min_gain"][speaker]) & (offer_value >= 0)

        can_counter = batch.turn < batch.max_turns
        if can_counter:
            cx, cy, found, counter_value = choose_swap(world, batch, rows, a, b, initiator_speaks)
        else:
            cx, cy = qa, qb
            found = np.zeros(len(rows), dtype=bool)
            counter_value = np.full(len(rows), np.inf)
        accept = passes & (~found | (offer_value >= counter_value - 1e-9))
        counter = ~accept & found

        decisions = Decisions.empty(len(rows))
        decisions.action[:] = np.where(accept, ACCEPT, np.where(counter, COUNTER, REJECT))
        decisions.res_a[:], decisions.res_b[:] = a, b
        decisions.qty_a[:] = np.where(counter, cx, qa)
        decisions.qty_b[:] = np.where(counter, cy, qb)
        decisions.source[:] = RULES
        return decisions


class RulesFacilitator:
    """Advises each pair from both sides' marginal values and the market's history.

    It suggests the resource the responder would gain most from relative to what
    the initiator would lose, against the one the initiator would gain most from
    relative to the responder's loss, in the quantities whose rate is nearest its
    valuations among those that leave both better off (Nash product breaks ties).
    """

    def advise(self, world: World, batch: ExchangeBatch, rows: np.ndarray) -> AdviceBatch:
        h, n, w, lam = world.holdings, world.population.needs, world.population.wants, world.need_weight
        i, j = batch.initiator[rows], batch.responder[rows]
        k = np.arange(len(rows))
        gain_i = economy.marginal_gain(h[i], n[i], w[i], lam)
        gain_j = economy.marginal_gain(h[j], n[j], w[j], lam)
        loss_i = economy.marginal_loss(h[i], n[i], w[i], lam)
        loss_j = economy.marginal_loss(h[j], n[j], w[j], lam)
        a = np.argmax(gain_j - loss_i, axis=1)
        towards_i = gain_i - loss_j
        towards_i[k, a] = -np.inf
        b = np.argmax(towards_i, axis=1)

        x, y, log_rate = _grid(grid_size(world))
        g_i, g_j, feasible = grid_gains(world, batch, rows, a, b)
        valuations = world.valuations if world.valuations is not None else np.ones(h.shape[1])
        fair = np.log(valuations[b] / valuations[a])[:, None]
        both = feasible & (g_i > 0) & (g_j > 0)
        score = np.where(both, np.abs(log_rate - fair) - 1e-6 * g_i * g_j, np.inf)
        # When nothing helps both, suggest the least bad swap rather than none.
        fallback = np.where(feasible, -np.minimum(g_i, g_j), np.inf)
        score = np.where(both.any(axis=1)[:, None], score, 1e6 + fallback)
        best = np.argmin(score, axis=1)
        return AdviceBatch(
            res_a=a,
            qty_a=x[0, best],
            res_b=b,
            qty_b=y[0, best],
            source=np.full(len(rows), RULES, dtype=np.int8),
        )


# --- the rules brain's words -------------------------------------------------------------------
# Built column-at-a-time with Arrow compute, so a million transcripts cost no Python loop.


def _join(*parts: object) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _singular(names: pa.Array) -> pa.Array:
    """Each resource name for one unit ('bread loaf'), worked out once per distinct name."""
    encoded = names.dictionary_encode()
    return pa.array([singular(n) for n in encoded.dictionary.to_pylist()], pa.string()).take(encoded.indices)


def _units(quantity: np.ndarray, names: pa.Array) -> pa.Array:
    """'1 book', '2 books' for each row."""
    return _join(_text(quantity), " ", pc.if_else(pa.array(np.asarray(quantity) == 1), _singular(names), names))


def _counted(number: np.ndarray, noun: str) -> pa.Array:
    """'1 deal', '3 deals' for each row."""
    number = np.asarray(number)
    return _join(_text(number), pa.array(np.where(number == 1, f" {noun}", f" {noun}s")))


def offer_repeats(
    exchange_id: np.ndarray, turn: np.ndarray, action: np.ndarray,
    res_a: np.ndarray, qty_a: np.ndarray, res_b: np.ndarray, qty_b: np.ndarray,
) -> np.ndarray:
    """For each offer, how many times in a row its speaker had already made the very same one (0: new).

    The same speaker spoke two turns earlier in the same exchange. Rows may come
    in any order; every turn of an exchange must be among them.
    """
    n = len(turn)
    repeats = np.zeros(n, dtype=np.int64)
    if n == 0:
        return repeats
    key = np.asarray(exchange_id, dtype=np.int64) * 64 + np.asarray(turn, dtype=np.int64)  # turns are at most 20
    order = np.argsort(key, kind="stable")
    at = np.minimum(np.searchsorted(key[order], key - 2), n - 1)
    earlier = order[at]
    offers = (action == PROPOSE) | (action == COUNTER)
    same = (
        (key[earlier] == key - 2) & offers & offers[earlier]
        & (res_a == res_a[earlier]) & (qty_a == qty_a[earlier]) & (res_b == res_b[earlier]) & (qty_b == qty_b[earlier])
    )
    for t in np.unique(turn[same]):  # in turn order, so a chain of repeats counts up
        rows = same & (turn == t)
        repeats[rows] = repeats[earlier[rows]] + 1
    return repeats


def offer_messages(
    action: np.ndarray,
    turn: np.ndarray,
    initiator_speaks: np.ndarray,
    res_a: pa.Array,
    qty_a: np.ndarray,
    res_b: pa.Array,
    qty_b: np.ndarray,
    repeats: np.ndarray | None = None,
) -> pa.Array:
    """Template messages for rules offers, phrased from the speaker's side: "my 2 books for your 1 tool".

    repeats (offer_repeats) words an offer its speaker already made as standing
    by it, so no counter repeats an earlier one word for word.
    """
    speaks = pa.array(initiator_speaks)
    amount_a, amount_b = _units(qty_a, res_a), _units(qty_b, res_b)
    swap = _join("my ", pc.if_else(speaks, amount_a, amount_b), " for your ", pc.if_else(speaks, amount_b, amount_a))
    propose = _join("I'd like to trade ", swap, ".")
    counter = _join("How about ", swap, " instead?")
    repeats = np.zeros(len(action), dtype=np.int64) if repeats is None else np.asarray(repeats)
    again = pc.if_else(
        pa.array(repeats == 1),
        _join("I'll stay with ", swap, "."),
        _join("That's ", _text(repeats + 1), " times I've offered ", swap, "; it still stands."),
    )
    accept = _join("Deal: ", swap, ".")
    reject = pc.if_else(
        pa.array(turn == 1),
        pa.array(["No thanks: I don't see a swap with you that works for me right now."] * len(action)),
        pa.array(["That doesn't work for me, so I'll pass."] * len(action)),
    )
    act = pa.array(action)
    offer = pc.if_else(pa.array(repeats > 0), again, pc.if_else(pc.equal(act, PROPOSE), propose, counter))
    return pc.if_else(
        pc.or_(pc.equal(act, PROPOSE), pc.equal(act, COUNTER)),
        offer,
        pc.if_else(pc.equal(act, ACCEPT), accept, reject),
    )


def advice_notes(
    res_a: pa.Array,
    qty_a: np.ndarray,
    res_b: pa.Array,
    qty_b: np.ndarray,
    typical_rate: np.ndarray,
    rate_trades: np.ndarray,
    initiator_name: pa.Array,
    initiator_record: tuple[np.ndarray, np.ndarray],
    responder_name: pa.Array,
    responder_record: tuple[np.ndarray, np.ndarray],
) -> pa.Array:
    """The facilitator's note: the typical past rate it saw, its suggestion (who gives what), both partners' records."""
    rounded = np.round(np.nan_to_num(typical_rate), 2)
    rate = pc.cast(pa.array(rounded), pa.string())
    seen = _join(
        "Past trades ran at about ", rate, " ", pc.if_else(pa.array(rounded == 1), _singular(res_a), res_a),
        " per ", _singular(res_b), " (", _counted(rate_trades, "trade"), "). ",
    )
    unseen = _join("No trades of ", res_a, " for ", res_b, " yet, so I valued them by scarcity. ")
    history = pc.if_else(pa.array(np.asarray(rate_trades) > 0), seen, unseen)

    def record(name: pa.Array, deals: np.ndarray, meetings: np.ndarray) -> pa.Array:
        met = _join(name, " has closed ", _counted(deals, "deal"), " in ", _counted(meetings, "meeting"))
        return pc.if_else(pa.array(np.asarray(meetings) > 0), met, _join(name, " has not met anyone yet"))

    return _join(
        history,
        "I suggest ", initiator_name, " gives ", _units(qty_a, res_a), " and ", responder_name, " gives ",
        _units(qty_b, res_b), ". ",
        record(initiator_name, *initiator_record), "; ", record(responder_name, *responder_record), ".",
    )
