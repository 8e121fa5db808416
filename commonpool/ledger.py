"""Holdings and atomic swaps: the only code that moves resources.

A swap is: initiator gives qty_a units of resource a, responder gives qty_b
units of resource b. It settles whole or not at all. Validation happens before
any unit moves, so an invalid swap changes nothing and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reason codes for swaps that do not settle (index into REASONS).
OK = 0
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

        Quantities may arrive as floats (an LLM said 1.5): they are checked to be
        whole before anything moves. A participant may settle at most one swap per
        batch, which keeps every check against the holdings it was made on.
        """
        n, r = self._h.shape
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
        flag(ok & (self._h[ii, aa] < qa), 6)
        flag(ok & (self._h[jj, bb] < qb), 7)

        ok = reason == OK
        seen = np.concatenate([i[ok], j[ok]])
        if len(np.unique(seen)) != len(seen):
            counts = np.bincount(seen, minlength=n)
            flag(ok & ((counts[np.where(ok, i, 0)] > 1) | (counts[np.where(ok, j, 0)] > 1)), 8)
            ok = reason == OK

        i, j, a, b, qa, qb = i[ok], j[ok], a[ok], b[ok], qa[ok], qb[ok]
        # Disjoint participants: fancy-index updates cannot collide.
        self._h[i, a] -= qa
        self._h[j, a] += qa
        self._h[j, b] -= qb
        self._h[i, b] += qb
        return Settlement(valid=reason == OK, reason=reason)
