"""How far an allocation is from the best ones: the exact utilitarian optimum,
swaps two participants could still agree on, and what a matchmaker executing the
best bilateral swap again and again reaches (a benchmark for the market).

Utility (economy.py) is separable across resources and concave in whole units
of each, so the utilitarian optimum over whole-unit reallocations of the same
totals, max sum_i U_i(h_i) subject to sum_i h_ir = T_r and h_ir >= 0, splits
into one problem per resource, each solved exactly by handing out its units one
at a time to whoever gains most from the next unit (the greedy algorithm for
separable concave resource allocation: Gross 1956; Ibaraki & Katoh,
*Resource Allocation Problems*, 1988, ch. 4). Equivalently: the T_r largest of
all marginal gains v_ir(k + 1) - v_ir(k), which are non-increasing in k for
each participant, so the chosen ones are a prefix of each participant's list.

Gains left on the table are judged swap by swap with the rules brain's own
grid and swap_gains (brains/rules.py), so "a swap both would take" means the
same here as in a negotiation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from commonpool import economy
from commonpool.brains.rules import _grid, swap_gains
from commonpool.protocol import World

# A gain counts when it exceeds float noise (utilities are sums of logs).
GAIN_TOLERANCE = 1e-9


def utilitarian_optimum(
    totals: np.ndarray, needs: np.ndarray, wants: np.ndarray, need_weight: float
) -> np.ndarray:
    """Holdings [participant, resource] that maximise total utility given each resource's total units.

    Per resource, the totals[r] largest marginal gains over every participant's
    k-th unit win. Each participant's candidates are its first `depth` units,
    depth doubling until nobody takes all of them (so no unit it might win is
    left out); ties go to the lower participant index, then the earlier unit,
    so the answer is the same on every machine. Any tie-break gives the same
    total utility.
    """
    people, resources = needs.shape
    optimum = np.zeros((people, resources), dtype=np.int64)
    for r in range(resources):
        total = int(totals[r])
        if total == 0 or people == 0:
            continue
        depth = min(total, 16)
        while True:
            units = np.arange(depth)[None, :]
            gains = economy.marginal_gain(units, needs[:, r, None], wants[:, r, None], need_weight)
            won = np.argsort(-gains.ravel(), kind="stable")[:total]
            taken = np.bincount(won // depth, minlength=people)
            if depth == total or taken.max() < depth:
                break
            depth = min(2 * depth, total)
        optimum[:, r] = taken
    return optimum


def best_mutual_swaps(world: World, first: np.ndarray, second: np.ndarray, max_units: int) -> np.ndarray:
    """For each pair (first[k], second[k]) at the world's holdings: the largest joint
    utility gain of a whole-unit swap that leaves both strictly better off, NaN if none.

    Swaps are first gives x of a, second gives y of b, a != b, 1 <= x, y <= max_units
    (the rules brain's grid), both directions of every resource pair; only
    resources the giver holds are tried.
    """
    holdings, needs, wants, lam = world.holdings, world.population.needs, world.population.wants, world.need_weight
    resources = holdings.shape[1]
    give, get = np.nonzero(~np.eye(resources, dtype=bool))
    x, y, _ = _grid(max_units)
    # A swap can only help a side if getting the most units it could beats giving the fewest:
    # gains rise and losses rise with quantity, so this rules out most candidates before the grid.
    most_gain = economy.gain_of_getting(holdings, needs, wants, np.full_like(holdings, max_units), lam)
    least_loss = economy.marginal_loss(holdings, needs, wants, lam)
    best = np.full(len(first), -np.inf)
    chunk = max(1, 200_000 // max(len(give), 1))
    for start in range(0, len(first), chunk):
        i, j = first[start:start + chunk], second[start:start + chunk]
        pair = np.repeat(np.arange(len(i)), len(give))
        a, b = np.tile(give, len(i)), np.tile(get, len(i))
        ip, jp = i[pair], j[pair]
        held = (
            (holdings[ip, a] > 0) & (holdings[jp, b] > 0)
            & (most_gain[ip, b] > least_loss[ip, a] + GAIN_TOLERANCE)
            & (most_gain[jp, a] > least_loss[jp, b] + GAIN_TOLERANCE)
        )
        pair, a, b = pair[held], a[held], b[held]
        g_i, g_j, feasible = swap_gains(world, i[pair], j[pair], a, b, x, y)
        mutual = feasible & (g_i > GAIN_TOLERANCE) & (g_j > GAIN_TOLERANCE)
        joint = np.where(mutual, g_i + g_j, -np.inf).max(axis=1, initial=-np.inf)
        np.maximum.at(best[start:start + chunk], pair, joint)
    return np.where(np.isfinite(best), best, np.nan)


def greedy_bilateral_trading(world: World, max_units: int) -> np.ndarray:
    """Holdings a central matchmaker reaches from the world's holdings by executing, one at
    a time, the whole-unit swap (best_mutual_swaps' grid) with the largest joint gain among
    every pair's swaps that leave both sides strictly better off, until no pair has one.

    A benchmark between the market and the optimum: it trades only by voluntary
    bilateral swaps, as participants do, but sees every pair at once and never
    settles for less than the best swap on offer. The world's holdings are not changed.
    """
    holdings = world.holdings.copy()
    world = dataclasses.replace(world, holdings=holdings)
    resources = holdings.shape[1]
    first, second = np.triu_indices(holdings.shape[0], 1)
    best = best_mutual_swaps(world, first, second, max_units)
    give, get = np.nonzero(~np.eye(resources, dtype=bool))
    x, y, _ = _grid(max_units)
    while not np.isnan(best).all():
        k = int(np.nanargmax(best))
        i, j = int(first[k]), int(second[k])
        g_i, g_j, feasible = swap_gains(world, np.full(len(give), i), np.full(len(give), j), give, get, x, y)
        joint = np.where(feasible & (g_i > GAIN_TOLERANCE) & (g_j > GAIN_TOLERANCE), g_i + g_j, -np.inf)
        pair, cell = np.unravel_index(int(np.argmax(joint)), joint.shape)
        a, b, qa, qb = give[pair], get[pair], int(x.ravel()[cell]), int(y.ravel()[cell])
        holdings[i, a] -= qa
        holdings[j, a] += qa
        holdings[j, b] -= qb
        holdings[i, b] += qb
        # Only pairs with i or j in them can have changed.
        touched = np.nonzero((first == i) | (first == j) | (second == i) | (second == j))[0]
        best[touched] = best_mutual_swaps(world, first[touched], second[touched], max_units)
    return holdings
