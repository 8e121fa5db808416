"""The offline brain: deterministic, array-at-a-time decisions from personality traits.

A proposal is a point (x, y) on a grid of whole quantities: the initiator gives
x units of resource a, the responder gives y units of b. Every candidate is
scored with both sides' exact utility change (economy.swap_gain).

One rule for openings and counters alike (``qualifies``): a speaker only puts
forward a swap that leaves its partner better off and itself at least
``min_gain`` better off after weighing the partner's gain by ``altruism``
(own gain + altruism x partner gain >= 0), within its ``max_units``. It looks
first at the goods on the table (for an opening: the facilitator's suggested
goods, or without a suggestion its own pick; for a counter: the offer's goods)
and, when no swap of those qualifies, at every other pair of goods, taking the
pair whose qualifying swaps have the most joint gain (``best_goods``): a counter
may change the goods. Where nothing qualifies the opener declines, and a
responder rejects an offer that fails its own test.

Among qualifying swaps of the chosen goods the speaker proposes the one whose
share of the joint gain, g_self / (g_self + g_partner), is nearest its
aspiration, which falls by ``concession`` with each proposal it makes (a
time-dependent concession strategy, Faratin, Sierra & Jennings 1998), pulled
toward the facilitator's suggested rate by ``anchoring``. Strategic speakers
raise their aspiration against partners with a record of accepting
(``memory``).

A reply accepts an offer when it passes the speaker's own test (own gain >=
min_gain and own gain + altruism x partner gain >= 0) and is at least as good
as the counter the speaker would make (the AC_next acceptance condition,
Baarslag et al. 2014); on the last turn any offer that passes is accepted.

In a run of several periods a speaker also looks ahead (world.foresight,
production.Foresight): a unit counts for what it would be worth next period
too (economy.carried_need_value), so storable units that would meet next
period's need are dearer to give than hours that expire at the period's end.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from commonpool import economy
from commonpool.production import Foresight
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
    ahead = world.foresight
    if ahead is not None and ahead.active:
        g_i = g_i + ahead_gain(ahead, i, b, h[i, b], y) + ahead_gain(ahead, i, a, h[i, a], -x)
        g_j = g_j + ahead_gain(ahead, j, a, h[j, a], x) + ahead_gain(ahead, j, b, h[j, b], -y)
    feasible = (x <= h[i, a]) & (y <= h[j, b]) & (x >= 1) & (y >= 1) & (a != b)
    return g_i, g_j, feasible


def ahead_gain(ahead: Foresight, who: np.ndarray, res: np.ndarray, held: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Change in next period's worth (Foresight.value) when who's holding of res moves by change.

    A giver's is negative: it loses the need its units would have met next period,
    beyond this period's (an hour that expires tonight loses it nothing).
    """
    return ahead.value(who, res, held + change) - ahead.value(who, res, held)


@functools.cache
def _grid(q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (x, y) in 1..q x 1..q as [1, q * q] rows, and ln(x / y) of each; read-only, made once per q."""
    x, y = np.meshgrid(np.arange(1, q + 1), np.arange(1, q + 1), indexing="ij")
    x, y = x.ravel()[None, :], y.ravel()[None, :]
    log_rate = np.log(x / y)
    for array in (x, y, log_rate):
        array.flags.writeable = False
    return x, y, log_rate


def _legs(world: World, giver: np.ndarray, taker: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """giver handing 1..q units of each resource to taker: giver's loss, taker's gain, giver holds them ([row, r, q])."""
    h, n, w, lam = world.holdings, world.population.needs, world.population.wants, world.need_weight
    qty = np.arange(1, q + 1)
    loss = economy.loss_of_giving(h[giver][:, :, None], n[giver][:, :, None], w[giver][:, :, None], qty, lam)
    gain = economy.gain_of_getting(h[taker][:, :, None], n[taker][:, :, None], w[taker][:, :, None], qty, lam)
    if world.foresight is not None and world.foresight.active:
        # Looking ahead (production.Foresight): what the units would be worth next period counts too.
        loss = loss - world.foresight.change(giver, h[giver][:, :, None], -qty)
        gain = gain + world.foresight.change(taker, h[taker][:, :, None], qty)
    return loss, gain, qty <= h[giver][:, :, None]


def round_legs(world: World, batch: ExchangeBatch) -> tuple[np.ndarray, ...]:
    """Both legs of any swap, per batch row: the initiator giving 1..q of each resource (its loss, the
    responder's gain, whether it holds them), then the responder giving (its loss, the initiator's gain, holds).

    Utility is separable, so a swap's gains are one leg's gain minus the other's loss
    (economy.swap_gain, term by term). Holdings stay put until the round settles, so
    the legs are computed once per round for every row (batch.memo) and serve the
    facilitator and every turn, on any pair of goods.
    """
    legs = batch.memo.get("legs")
    if not isinstance(legs, tuple):
        q = grid_size(world)
        loss_i, gain_j, holds_i = _legs(world, batch.initiator, batch.responder, q)
        loss_j, gain_i, holds_j = _legs(world, batch.responder, batch.initiator, q)
        legs = (loss_i, gain_j, holds_i, loss_j, gain_i, holds_j)
        batch.memo["legs"] = legs
        # The best joint gain of each leg over 1..m units, for every m (best_goods' bound).
        batch.memo["leg_bounds"] = tuple(
            np.maximum.accumulate(np.where(holds, gain - loss, -np.inf), axis=2)
            for loss, gain, holds in ((loss_i, gain_j, holds_i), (loss_j, gain_i, holds_j))
        )
    return legs


def grid_gains(
    world: World, batch: ExchangeBatch, rows: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """swap_gains of every grid swap for rows on resources (a, b) ([row, grid point], _grid's order), from round_legs."""
    loss_i, gain_j, holds_i, loss_j, gain_i, holds_j = round_legs(world, batch)
    g_i = gain_i[rows, b][:, None, :] - loss_i[rows, a][:, :, None]  # [row, x, y]
    g_j = gain_j[rows, a][:, :, None] - loss_j[rows, b][:, None, :]
    feasible = holds_i[rows, a][:, :, None] & holds_j[rows, b][:, None, :] & (a != b)[:, None, None]
    shape = (len(rows), g_i.shape[1] * g_i.shape[2])
    return g_i.reshape(shape), g_j.reshape(shape), feasible.reshape(shape)


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


def qualifies(
    g_self: np.ndarray, g_partner: np.ndarray, min_gain: np.ndarray, altruism: np.ndarray
) -> np.ndarray:
    """The one rule every proposal and counter passes: the partner gains, and the speaker's own test.

    The partner must end up better off (g_partner > 0), and the speaker at least
    min_gain better off (g_self >= min_gain) after weighing the partner's gain by
    altruism (g_self + altruism * g_partner >= 0). Feasibility is checked apart.
    """
    return (g_partner > 0) & (g_self >= min_gain) & (g_self + altruism * g_partner >= 0)


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
    ok = feasible & (x <= limit) & (y <= limit) & qualifies(g_s, g_p, traits["min_gain"][speaker][:, None], altruism)
    total = g_s + g_p
    share = g_s / np.where(total > 0, total, 1.0)
    score = np.abs(share - aspiration) - 1e-6 * total
    if batch.advice is not None:
        advice = batch.advice
        anchored = (advice.res_a[rows] == a) & (advice.res_b[rows] == b)
        # Advice without a swap (res NO_RESOURCE, quantities 0) anchors nothing.
        suggested = np.log(np.maximum(advice.qty_a[rows], 1) / np.maximum(advice.qty_b[rows], 1))[:, None]
        distance = np.abs(log_rate - suggested) * anchored[:, None]
        score = score + ANCHOR_WEIGHT * traits["anchoring"][speaker][:, None] * distance
    score = np.where(ok, score, np.inf)
    best = np.argmin(score, axis=1)
    found = np.isfinite(score[np.arange(len(rows)), best])
    k = np.arange(len(rows))
    return x[0, best], y[0, best], found, value[k, best]


Test = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def best_goods(
    world: World, batch: ExchangeBatch, rows: np.ndarray, limit: np.ndarray, floor: np.ndarray, test: Test
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of goods at once: per row, the pair (a, b) whose passing swaps have the most joint gain.

    A swap is the initiator giving 1..limit units of a for 1..limit units of b;
    test(g_i, g_j, k) says which pass for rows k. Returns a, b and whether any
    pair has a passing swap. Utility is separable, so the joint gain of a swap is
    the joint gain of its a leg plus that of its b leg; a pair whose best legs
    together gain less than floor (a joint gain every passing swap reaches) is
    skipped unscored, which is most pairs once the market has settled.
    """
    q = grid_size(world)
    loss_i, gain_j, holds_i, loss_j, gain_i, holds_j = round_legs(world, batch)
    bound_a, bound_b = batch.memo["leg_bounds"]  # type: ignore[misc]
    units = np.minimum(limit, q).astype(np.int64) - 1
    reach = bound_a[rows, :, units][:, :, None] + bound_b[rows, :, units][:, None, :]
    goods = reach.shape[1]
    reach[:, np.arange(goods), np.arange(goods)] = -np.inf
    k, a, b = np.nonzero(reach >= floor[:, None, None] - 1e-9)

    row = rows[k]
    g_i = gain_i[row, b][:, None, :] - loss_i[row, a][:, :, None]  # [candidate pair, x, y]
    g_j = gain_j[row, a][:, :, None] - loss_j[row, b][:, None, :]
    within = np.arange(1, q + 1) <= limit[k][:, None]
    can_a, can_b = holds_i[row, a] & within, holds_j[row, b] & within
    ok = can_a[:, :, None] & can_b[:, None, :] & test(g_i, g_j, k)
    joint = np.where(ok, g_i + g_j, -np.inf).max(axis=(1, 2), initial=-np.inf)
    best = np.full((len(rows), goods * goods), -np.inf)
    best[k, a * goods + b] = joint
    pick = np.argmax(best, axis=1)
    return pick // goods, pick % goods, np.isfinite(best[np.arange(len(rows)), pick])


def speaker_goods(
    world: World, batch: ExchangeBatch, rows: np.ndarray, initiator_speaks: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """best_goods under the speaker's own rule (qualifies, within its max_units)."""
    speaker = batch.initiator[rows] if initiator_speaks else batch.responder[rows]
    traits = world.population.traits
    min_gain, altruism = traits["min_gain"][speaker], traits["altruism"][speaker]

    def test(g_i: np.ndarray, g_j: np.ndarray, k: np.ndarray) -> np.ndarray:
        g_s, g_p = (g_i, g_j) if initiator_speaks else (g_j, g_i)
        return qualifies(g_s, g_p, min_gain[k][:, None, None], altruism[k][:, None, None])

    # A qualifying swap has g_p > 0 and g_s >= min_gain, so joint gain > min_gain; with
    # altruism <= 1 also joint >= g_s + altruism * g_p >= 0.
    floor = np.where(altruism <= 1, np.maximum(min_gain, 0.0), min_gain)
    return best_goods(world, batch, rows, traits["max_units"][speaker], floor, test)


def propose_on(
    world: World, batch: ExchangeBatch, rows: np.ndarray, a: np.ndarray, b: np.ndarray, initiator_speaks: bool
) -> tuple[np.ndarray, ...]:
    """The speaker's proposal: on goods (a, b) if a swap of them qualifies, else on the goods whose do with most joint gain.

    Returns a, x, b, y, found, value (choose_swap's).
    """
    x, y, found, value = choose_swap(world, batch, rows, a, b, initiator_speaks)
    if not found.all():
        miss = np.flatnonzero(~found)
        other_a, other_b, other = speaker_goods(world, batch, rows[miss], initiator_speaks)
        there = miss[other]
        if len(there):
            a, b = a.copy(), b.copy()
            a[there], b[there] = other_a[other], other_b[other]
            x[there], y[there], found[there], value[there] = choose_swap(
                world, batch, rows[there], a[there], b[there], initiator_speaks
            )
    return a, x, b, y, found, value


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
        a, b = own_pick(world, i, j)
        if batch.advice is not None:
            suggested = batch.advice.res_a[rows] != NO_RESOURCE
            a = np.where(suggested, batch.advice.res_a[rows], a)
            b = np.where(suggested, batch.advice.res_b[rows], b)
        a, x, b, y, found, _ = propose_on(world, batch, rows, a, b, initiator_speaks=True)
        decisions = Decisions.empty(len(rows))
        decisions.action[:] = np.where(found, PROPOSE, REJECT)
        # A decline carries no swap.
        decisions.res_a[found], decisions.qty_a[found] = a[found], x[found]
        decisions.res_b[found], decisions.qty_b[found] = b[found], y[found]
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

        if batch.turn < batch.max_turns:
            ca, cx, cb, cy, found, counter_value = propose_on(world, batch, rows, a, b, initiator_speaks)
        else:
            ca, cx, cb, cy = a, qa, b, qb
            found = np.zeros(len(rows), dtype=bool)
            counter_value = np.full(len(rows), np.inf)
        accept = passes & (~found | (offer_value >= counter_value - 1e-9))
        counter = ~accept & found

        decisions = Decisions.empty(len(rows))
        decisions.action[:] = np.where(accept, ACCEPT, np.where(counter, COUNTER, REJECT))
        decisions.res_a[:], decisions.res_b[:] = np.where(counter, ca, a), np.where(counter, cb, b)
        decisions.qty_a[:] = np.where(counter, cx, qa)
        decisions.qty_b[:] = np.where(counter, cy, qb)
        decisions.source[:] = RULES
        switched = np.flatnonzero(counter & ((ca != a) | (cb != b)))
        if len(switched):
            decisions.message[switched] = switch_messages(
                world.population.resources, initiator_speaks, a[switched], b[switched],
                ca[switched], cx[switched], cb[switched], cy[switched],
            )
        return decisions


class RulesFacilitator:
    """Advises each pair from both sides' marginal values and the market's history.

    It picks the goods: the resource the responder would gain most from relative
    to what the initiator would lose, against the one the initiator would gain
    most from relative to the responder's loss. When no swap of those goods
    leaves both better off, it looks at every pair of goods and takes the one
    whose mutually beneficial swaps have the most joint gain (best_goods). On the
    goods chosen it suggests the quantities whose rate is nearest its valuations
    among swaps that leave both better off (Nash product breaks ties). When no
    swap of any goods leaves both better off, it suggests none (NO_RESOURCE, 0)
    and its note says so.

    In a run of several periods it writes every note itself (period_notes): each
    names the period, and the typical rate it cites is this period's (or the
    latest period's in which the goods traded; facilitator.py says why). In a
    one-period run the recorder words the notes, once, at the end.
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
        helps = (feasible & (g_i > 0) & (g_j > 0)).any(axis=1)
        if not helps.all():
            miss = np.flatnonzero(~helps)
            other_a, other_b, other = best_goods(
                world, batch, rows[miss], np.full(len(miss), x.max()), np.zeros(len(miss)),
                lambda g_i, g_j, _: (g_i > 0) & (g_j > 0),
            )
            there = miss[other]
            a[there], b[there], helps[there] = other_a[other], other_b[other], True
            g_i[there], g_j[there], feasible[there] = grid_gains(world, batch, rows[there], a[there], b[there])
        valuations = world.valuations if world.valuations is not None else np.ones(h.shape[1])
        fair = np.log(valuations[b] / valuations[a])[:, None]
        both = feasible & (g_i > 0) & (g_j > 0)
        score = np.where(both, np.abs(log_rate - fair) - 1e-6 * g_i * g_j, np.inf)
        best = np.argmin(score, axis=1)
        note = None
        if not helps.all():
            names = np.array(world.population.names, dtype=object)
            note = np.full(len(rows), None, dtype=object)
            note[~helps] = no_swap_notes(names[i[~helps]], names[j[~helps]], int(x.max()))
        advice = AdviceBatch(
            res_a=np.where(helps, a, NO_RESOURCE),
            qty_a=np.where(helps, x[0, best], 0),
            res_b=np.where(helps, b, NO_RESOURCE),
            qty_b=np.where(helps, y[0, best], 0),
            source=np.full(len(rows), RULES, dtype=np.int8),
            note=note,
        )
        if world.periods > 1:
            advice.note = period_notes(world, i, j, advice)
        return advice


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
    rate_period: np.ndarray | None = None,
    period: int | None = None,
) -> pa.Array:
    """The facilitator's note: the typical past rate it saw, its suggestion (who gives what), both partners' records.

    In a run of several periods, rate_period (MarketHistory.rate_period) and the period
    under way say whether the rate is this period's or an earlier one's, and the note says so;
    period_notes puts the period in front.
    """
    rounded = np.round(np.nan_to_num(typical_rate), 2)
    rate = pc.cast(pa.array(rounded), pa.string())
    rate_words = _join(
        "ran at about ", rate, " ", pc.if_else(pa.array(rounded == 1), _singular(res_a), res_a),
        " per ", _singular(res_b), " (", _counted(rate_trades, "trade"), "). ",
    )
    if period is None or rate_period is None:
        seen = _join("Past trades ", rate_words)
        unseen = _join("No trades of ", res_a, " for ", res_b, " yet, so I valued them by scarcity. ")
    else:
        earlier = _join(
            "no trades of ", res_a, " for ", res_b, " yet this period; in period ", _text(rate_period), " they ", rate_words
        )
        seen = pc.if_else(pa.array(np.asarray(rate_period) == period), _join("trades this period ", rate_words), earlier)
        unseen = _join("no trades of ", res_a, " for ", res_b, " yet, so I valued them by scarcity. ")
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


def period_notes(world: World, initiator: np.ndarray, responder: np.ndarray, advice: AdviceBatch) -> np.ndarray:
    """The facilitator's notes in a run of several periods: each says the period, and cites this period's rates.

    A suggested swap's note cites the pair's typical rate of this period, or of the latest
    period in which it traded (MarketHistory.rate_period); a note without a swap (advice.note)
    gets the period in front.
    """
    history, names = world.history, np.array(world.population.names, dtype=object)
    resources = np.array(world.population.resources, dtype=object)
    prefix = f"Period {world.period} of {world.periods}: "
    notes = np.full(len(initiator), None, dtype=object)
    swap = advice.res_a >= 0
    if advice.note is not None and (~swap).any():
        notes[~swap] = prefix + advice.note[~swap]
    if swap.any():
        a, b = advice.res_a[swap], advice.res_b[swap]
        rate, trades = history.typical_rate(a, b)
        i, j = initiator[swap], responder[swap]
        words = advice_notes(
            pa.array(resources[a], pa.string()), advice.qty_a[swap], pa.array(resources[b], pa.string()), advice.qty_b[swap],
            rate, trades, pa.array(names[i], pa.string()), (history.deals[i], history.meetings[i]),
            pa.array(names[j], pa.string()), (history.deals[j], history.meetings[j]),
            rate_period=history.rate_period(a, b), period=world.period,
        )
        notes[swap] = prefix + np.array(words.to_pylist(), dtype=object)
    return notes


def switch_messages(
    resources: list[str], initiator_speaks: bool,
    old_a: np.ndarray, old_b: np.ndarray, a: np.ndarray, qty_a: np.ndarray, b: np.ndarray, qty_b: np.ndarray,
) -> np.ndarray:
    """Words for counters that change the goods on the table, from the speaker's side (few rows: a Python loop)."""
    names = np.array(resources, dtype=object)
    old_give, old_get = (names[old_a], names[old_b]) if initiator_speaks else (names[old_b], names[old_a])
    give, get = (names[a], names[b]) if initiator_speaks else (names[b], names[a])
    give_q, get_q = (qty_a, qty_b) if initiator_speaks else (qty_b, qty_a)

    def units(q: int, name: str) -> str:
        return f"{q} {singular(name) if q == 1 else name}"

    return np.array(
        [
            f"No swap of my {og} for your {ot} works for me. How about other goods: my {units(gq, g)} for your {units(tq, t)}?"
            for og, ot, gq, g, tq, t in zip(old_give, old_get, give_q.tolist(), give, get_q.tolist(), get)
        ],
        dtype=object,
    )


def no_swap_notes(initiator_name: np.ndarray, responder_name: np.ndarray, most_units: int) -> np.ndarray:
    """The facilitator's note when no swap helps both sides: it suggests none, and says why."""
    return (
        f"I checked every swap of 1 to {most_units} units of any two goods, and each one leaves "
        + initiator_name + " or " + responder_name
        + " worse off (what one of you could give, the other values less than it would cost), so I suggest none."
    )
