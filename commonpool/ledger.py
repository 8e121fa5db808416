"""Holdings, atomic swaps and a period's flows: the only code that moves resources.

A swap is: initiator gives qty_a units of resource a, responder gives qty_b
units of resource b. It settles whole or not at all. Validation happens before
any unit moves, so an invalid swap changes nothing and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reason codes for swaps that do not settle (index into REASONS).
OK = 0
INITIATOR_SHORT, RESPONDER_SHORT, ALREADY_SETTLED = 6, 7, 8
REASONS = (
    "",
    "trading with oneself",
    "unknown participant",
    "unknown resource",
    "same resource on both sides",
    "quantity must be a positive whole number",
    "initiator does not hold enough of what it gives",
    "responder does not hold enough of what it gives",
    "participant already settled a swap in this batch",
)


def check_swaps(
    holdings: np.ndarray,
    initiator: np.ndarray,
    responder: np.ndarray,
    res_a: np.ndarray,
    qty_a: np.ndarray,
    res_b: np.ndarray,
    qty_b: np.ndarray,
) -> np.ndarray:
    """Why each swap could not settle against these holdings (OK where it could): the one definition of a valid swap.

    Quantities may arrive as floats (an LLM said 1.5): they must be whole. The
    ledger settles only swaps that pass; an LLM brain asks for a repair of one that does not.
    """
    n, r = holdings.shape
    i = np.asarray(initiator, dtype=np.int64)
    j = np.asarray(responder, dtype=np.int64)
    a = np.asarray(res_a, dtype=np.int64)
    b = np.asarray(res_b, dtype=np.int64)
    qa_raw = np.asarray(qty_a, dtype=np.float64)
    qb_raw = np.asarray(qty_b, dtype=np.float64)
    reason = np.zeros(len(i), dtype=np.int8)

    def flag(mask: np.ndarray, code: int) -> None:
        reason[(reason == OK) & mask] = code

    flag(i == j, 1)
    flag((i < 0) | (i >= n) | (j < 0) | (j >= n), 2)
    flag((a < 0) | (a >= r) | (b < 0) | (b >= r), 3)
    flag(a == b, 4)
    whole = (qa_raw == np.floor(qa_raw)) & (qb_raw == np.floor(qb_raw))
    flag(~whole | ~(qa_raw >= 1) | ~(qb_raw >= 1) | ~np.isfinite(qa_raw) | ~np.isfinite(qb_raw), 5)
    ok = reason == OK
    qa = np.where(ok, qa_raw, 0).astype(np.int64)
    qb = np.where(ok, qb_raw, 0).astype(np.int64)
    ii, jj = np.where(ok, i, 0), np.where(ok, j, 0)
    aa, bb = np.where(ok, a, 0), np.where(ok, b, 0)
    flag(ok & (holdings[ii, aa] < qa), INITIATOR_SHORT)
    flag(ok & (holdings[jj, bb] < qb), RESPONDER_SHORT)
    return reason


@dataclass
class Settlement:
    valid: np.ndarray  # bool per swap
    reason: np.ndarray  # int8 index into REASONS per swap


class Ledger:
    def __init__(self, holdings: np.ndarray) -> None:
        if holdings.ndim != 2 or (holdings < 0).any():
            raise ValueError("holdings must be a participants x resources matrix of units >= 0")
        self._h = holdings.astype(np.int64, copy=True)

    @property
    def holdings(self) -> np.ndarray:
        """A read-only view: brains look, only settle() changes it."""
        view = self._h.view()
        view.flags.writeable = False
        return view

    def total(self) -> np.ndarray:
        return self._h.sum(axis=0)

    def settle(
        self,
        initiator: np.ndarray,
        responder: np.ndarray,
        res_a: np.ndarray,
        qty_a: np.ndarray,
        res_b: np.ndarray,
        qty_b: np.ndarray,
    ) -> Settlement:
        """Validate then apply a batch of swaps; each is all-or-nothing.

        A participant may settle at most one swap per batch, which keeps every
        check against the holdings it was made on.
        """
        n = self._h.shape[0]
        reason = check_swaps(self._h, initiator, responder, res_a, qty_a, res_b, qty_b)
        i = np.asarray(initiator, dtype=np.int64)
        j = np.asarray(responder, dtype=np.int64)
        ok = reason == OK
        seen = np.concatenate([i[ok], j[ok]])
        if len(np.unique(seen)) != len(seen):
            counts = np.bincount(seen, minlength=n)
            twice = ok & ((counts[np.where(ok, i, 0)] > 1) | (counts[np.where(ok, j, 0)] > 1))
            reason[twice] = ALREADY_SETTLED
            ok = reason == OK

        # Only rows that passed are moved; their quantities are whole, so the cast is exact.
        i, j = i[ok], j[ok]
        a, b = np.asarray(res_a, dtype=np.int64)[ok], np.asarray(res_b, dtype=np.int64)[ok]
        qa = np.asarray(qty_a, dtype=np.float64)[ok].astype(np.int64)
        qb = np.asarray(qty_b, dtype=np.float64)[ok].astype(np.int64)
        # Disjoint participants: fancy-index updates cannot collide.
        self._h[i, a] -= qa
        self._h[j, a] += qa
        self._h[j, b] -= qb
        self._h[i, b] += qb
        return Settlement(valid=reason == OK, reason=reason)

    def add(self, units: np.ndarray) -> None:
        """Units that enter the economy (production): a participants x resources matrix of whole units >= 0."""
        units = np.asarray(units, dtype=np.int64)
        if units.shape != self._h.shape or (units < 0).any():
            raise ValueError("units added must be a participants x resources matrix of units >= 0")
        self._h += units

    def remove(self, units: np.ndarray) -> None:
        """Units that leave it (consumption, expiry, spoilage): all or nothing, never more than is held."""
        units = np.asarray(units, dtype=np.int64)
        if units.shape != self._h.shape or (units < 0).any() or (units > self._h).any():
            raise ValueError("units removed must be a participants x resources matrix of units >= 0, at most those held")
        self._h -= units
