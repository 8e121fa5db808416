"""The one definition of what a holding is worth to a participant.

Utility of participant i holding h_ir units of each resource r:

    U_i(h) = sum_r [ lambda * min(h_ir, n_ir)  +  w_ir * ln(1 + h_ir) ]

- n_ir is i's *need* of r (units it must reach). Each unit up to the need is
  worth a flat ``need_weight`` (lambda): needs are not traded away lightly.
- w_ir is i's *want* weight of r. The log term gives every resource a
  diminishing marginal value (Bernoulli's log utility; the same shape as the
  Cobb-Douglas welfare in Epstein & Axtell, *Growing Artificial Societies*,
  1996, ch. IV), which is what makes marginal rates of substitution converge
  as people trade.

Quantities are whole units, so marginal values are discrete differences:
gain_r(h) = v_r(h + 1) - v_r(h), loss_r(h) = v_r(h) - v_r(h - 1).

Need fulfilment of a set of holdings = sum_r min(h_r, n_r) / sum_r n_r (1.0
when nothing is needed).

Over periods (production.py), needs recur: at the end of period t a participant
consumes c_irt = min(h_irt, n_ir) of what it holds then, h_irt. That period's
utility is U_i(h_it), which reads as consumption plus holding:

    u_it = sum_r [ lambda * c_irt  +  w_ir * ln(1 + h_irt) ]

and a run's utility is the discounted sum  U_i = sum_{t=1..P} delta^(t-1) * u_it
(delta = ``discount``). With one period and nothing consumed (the default
model), U_i is the utility of the final holdings, as above.

Looking ahead (the rules brain, before the last period): units of r that
outlast this period's consumption, k = h - min(h, n), carry over when r is
storable (less its expected spoilage), and next period meet need beyond what
production brings then, s' (p more for a good; max(p, k) for a skill topped up
to capacity p). Their worth now is

    a_r(h) = delta * lambda * [ min(s'(k), n) - min(s'(0), n) ]

(``carried_need_value``): a unit of a good that will be needed next period is
worth more than this period's utility says, and an hour that expires tonight
is worth only that. The brains, the facilitator, the engine and the
metrics all use these functions (the SQL form lives below too), so "welfare
rose" means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np

# SQL form of need fulfilment over columns named held / need, used by metrics.
NEED_FULFILMENT_SQL = "coalesce(sum(least(held, need))::DOUBLE / nullif(sum(need), 0), 1.0)"


def resource_value(
    held: np.ndarray, need: np.ndarray, want: np.ndarray, need_weight: float
) -> np.ndarray:
    """v_r(h) = lambda * min(h, n) + w * ln(1 + h), elementwise; h is clipped at 0."""
    h = np.maximum(held, 0)
    return need_weight * np.minimum(h, need) + want * np.log1p(h)


def utility(
    holdings: np.ndarray, needs: np.ndarray, wants: np.ndarray, need_weight: float
) -> np.ndarray:
    """U_i for every row (participant) of a holdings matrix: the sum of v_r over resources."""
    return resource_value(holdings, needs, wants, need_weight).sum(axis=-1)


def loss_of_giving(
    held: np.ndarray, need: np.ndarray, want: np.ndarray, qty: np.ndarray, need_weight: float
) -> np.ndarray:
    """Utility lost by giving qty units of a resource held: v(h) - v(h - qty)."""
    return resource_value(held, need, want, need_weight) - resource_value(held - qty, need, want, need_weight)


def gain_of_getting(
    held: np.ndarray, need: np.ndarray, want: np.ndarray, qty: np.ndarray, need_weight: float
) -> np.ndarray:
    """Utility gained by getting qty more units of a resource: v(h + qty) - v(h)."""
    return resource_value(held + qty, need, want, need_weight) - resource_value(held, need, want, need_weight)


def swap_gain(
    held_give: np.ndarray,
    held_get: np.ndarray,
    need_give: np.ndarray,
    need_get: np.ndarray,
    want_give: np.ndarray,
    want_get: np.ndarray,
    qty_give: np.ndarray,
    qty_get: np.ndarray,
    need_weight: float,
) -> np.ndarray:
    """Change in U from giving qty_give of one resource and getting qty_get of another.

    Only the two resources involved change, so this is the exact utility change,
    not an approximation. Arrays broadcast.
    """
    return gain_of_getting(held_get, need_get, want_get, qty_get, need_weight) - loss_of_giving(
        held_give, need_give, want_give, qty_give, need_weight
    )


def marginal_gain(
    holdings: np.ndarray, needs: np.ndarray, wants: np.ndarray, need_weight: float
) -> np.ndarray:
    """Value of one more unit of each resource: v_r(h + 1) - v_r(h)."""
    return resource_value(holdings + 1, needs, wants, need_weight) - resource_value(
        holdings, needs, wants, need_weight
    )


def marginal_loss(
    holdings: np.ndarray, needs: np.ndarray, wants: np.ndarray, need_weight: float
) -> np.ndarray:
    """Value lost by giving one unit of each resource: v_r(h) - v_r(h - 1); +inf where h = 0."""
    loss = resource_value(holdings, needs, wants, need_weight) - resource_value(
        holdings - 1, needs, wants, need_weight
    )
    return np.where(holdings > 0, loss, np.inf)


def need_fulfilment(holdings: np.ndarray, needs: np.ndarray) -> np.ndarray:
    """Share of needed units held, per row: sum min(h, n) / sum n (1.0 where nothing is needed)."""
    total = needs.sum(axis=-1)
    met = np.minimum(holdings, needs).sum(axis=-1)
    return np.where(total > 0, met / np.maximum(total, 1), 1.0)


def marginal_value(
    holdings: np.ndarray, needs: np.ndarray, wants: np.ndarray, need_weight: float
) -> np.ndarray:
    """Marginal value of each resource in whole units, the discrete derivative of v_r.

    m_r(h) = [v_r(h + 1) - v_r(h - 1)] / 2 for h >= 1: the central difference, the
    midpoint of what the next unit would add (marginal_gain) and what the last one
    would cost (marginal_loss); at h = 0 there is no last unit, so m_r(0) = v_r(1) - v_r(0).
    A participant's marginal rate of substitution of b for a is m_b / m_a: the
    units of a one unit of b is worth to it (Epstein & Axtell 1996, ch. IV, with
    whole-unit differences in place of derivatives).
    """
    gain = marginal_gain(holdings, needs, wants, need_weight)
    loss = resource_value(holdings, needs, wants, need_weight) - resource_value(
        holdings - 1, needs, wants, need_weight
    )
    return np.where(holdings > 0, (gain + loss) / 2, gain)


def consumption(holdings: np.ndarray, needs: np.ndarray) -> np.ndarray:
    """Units consumed at a period's end: c = min(h, n), up to the need of each resource."""
    return np.minimum(np.maximum(holdings, 0), needs)


def discounted(period_utility: np.ndarray, period: int, discount: float) -> np.ndarray:
    """Weight of period `period` (from 1) in a run's utility: delta^(t-1) * u_t; their sum is the run's utility."""
    return period_utility * discount ** (period - 1)


def carried_need_value(
    carried: np.ndarray, produced: np.ndarray, need: np.ndarray, topped_up: np.ndarray,
    need_weight: float, discount: float,
) -> np.ndarray:
    """a(k) = delta * lambda * [min(s(k), n) - min(s(0), n)]: the next period's need that k carried units meet.

    s(k), next period's supply, is max(p, k) where the resource is topped up to a capacity p
    (topped_up), else p + k. carried may be fractional (expected units after spoilage).
    """
    supply = np.where(topped_up, np.maximum(produced, carried), produced + carried)
    return discount * need_weight * (np.minimum(supply, need) - np.minimum(produced, need))
