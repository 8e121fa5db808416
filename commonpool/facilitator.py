"""What the facilitator knows: the market's history, and the valuations it draws from it.

Valuation rule (per round, non-binding):

    log v_r = (1 - alpha) * log s_r + alpha * p_r,  centred so the geometric mean is 1

- s_r, scarcity: (unmet need units + total want weight + 1) / (units held + 1),
  over the whole community;
- p_r, the log price learned from accepted trades: after each round every
  accepted swap "qty_a of a for qty_b of b" pulls p_b - p_a toward
  log(qty_a / qty_b) (a least-squares step, rate ``LEARNING_RATE``);
- alpha = T / (T + 10 R), T accepted trades so far, R resources: the more
  trades it has seen, the more it trusts history over scarcity.

It also keeps, per ordered resource pair, the mean log rate of past trades
(the "typical rate" its note cites) and each participant's record of deals
and meetings.
"""

from __future__ import annotations

import numpy as np

LEARNING_RATE = 0.3


class MarketHistory:
    def __init__(self, n_participants: int, n_resources: int) -> None:
        self.log_rate_sum = np.zeros((n_resources, n_resources))  # sum log(units of row per unit of col)
        self.rate_trades = np.zeros((n_resources, n_resources), dtype=np.int64)
        self.log_price = np.zeros(n_resources)
        self.trades = 0
        self.deals = np.zeros(n_participants, dtype=np.int64)
        self.meetings = np.zeros(n_participants, dtype=np.int64)

    def typical_rate(self, res_a: np.ndarray, res_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Geometric-mean units of a given per unit of b in past trades, and how many trades (0: NaN).

        A negative resource (advice without a swap) has no trades.
        """
        known = (res_a >= 0) & (res_b >= 0)
        count = np.where(known, self.rate_trades[res_a, res_b], 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.exp(self.log_rate_sum[res_a, res_b] / count)
        return np.where(count > 0, rate, np.nan), count

    def acceptance_record(self, participants: np.ndarray) -> np.ndarray:
        """Laplace-smoothed share of a participant's meetings that ended in a deal."""
        return (self.deals[participants] + 1) / (self.meetings[participants] + 2)

    def valuations(self, holdings: np.ndarray, needs: np.ndarray, wants: np.ndarray) -> np.ndarray:
        unmet = np.maximum(needs - holdings, 0).sum(axis=0)
        scarcity = np.log((unmet + wants.sum(axis=0) + 1) / (holdings.sum(axis=0) + 1))
        alpha = self.trades / (self.trades + 10 * holdings.shape[1])
        log_v = (1 - alpha) * (scarcity - scarcity.mean()) + alpha * self.log_price
        return np.exp(log_v - log_v.mean())

    def record(
        self,
        initiator: np.ndarray,
        responder: np.ndarray,
        settled: np.ndarray,
        res_a: np.ndarray,
        qty_a: np.ndarray,
        res_b: np.ndarray,
        qty_b: np.ndarray,
    ) -> None:
        """Learn from a round: everyone met; settled swaps are deals and prices."""
        np.add.at(self.meetings, initiator, 1)
        np.add.at(self.meetings, responder, 1)
        np.add.at(self.deals, initiator[settled], 1)
        np.add.at(self.deals, responder[settled], 1)
        a, b = res_a[settled], res_b[settled]
        if len(a) == 0:
            return
        log_rate = np.log(qty_a[settled] / qty_b[settled])
        np.add.at(self.log_rate_sum, (a, b), log_rate)
        np.add.at(self.log_rate_sum, (b, a), -log_rate)
        np.add.at(self.rate_trades, (a, b), 1)
        np.add.at(self.rate_trades, (b, a), 1)
        error = log_rate - (self.log_price[b] - self.log_price[a])
        step = np.zeros_like(self.log_price)
        seen = np.zeros_like(self.log_price)
        np.add.at(step, b, error)
        np.add.at(step, a, -error)
        np.add.at(seen, a, 1)
        np.add.at(seen, b, 1)
        self.log_price += LEARNING_RATE * step / np.maximum(seen, 1)
        self.log_price -= self.log_price.mean()
        self.trades += len(a)
