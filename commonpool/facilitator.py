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

In a run of several periods (production.py) it follows prices period by period:

- The scarcity term is this period's: the units held now are this period's
  supply (what was carried over plus what was produced at its start, less
  what has been consumed, expired or spoiled at the last period's end), and
  needs recur every period, so unmet need is what this period still lacks.
  Valuations are recomputed every round from the ledger, so the first round
  of a period already sees its new supply.
- The learned prices p_r (and alpha) carry over from period to period: the
  economy renews the same way every period, so last period's prices are the
  best guess for this one, and being a running average with rate
  ``LEARNING_RATE`` they move to this period's trades within a few rounds.
- The typical rate is this period's: the mean over this period's trades of
  the pair, or, before the pair has traded this period, over the trades of
  the latest period in which it did (``rate_period`` says which; the note
  names it). A mean over the whole run would, in a long run, mostly cite the
  periods before prices settled, and mix periods in which the goods were
  plentiful with those in which they were scarce.
- Records of deals and meetings are the whole run's: reputation outlives a
  period.

With one period nothing of that differs: the typical rate is the mean over
every past trade, as before.
"""

from __future__ import annotations

import numpy as np

LEARNING_RATE = 0.3


class MarketHistory:
    def __init__(self, n_participants: int, n_resources: int) -> None:
        # This period's trades per ordered pair: sum log(units of row per unit of col), and how many.
        self.log_rate_sum = np.zeros((n_resources, n_resources))
        self.rate_trades = np.zeros((n_resources, n_resources), dtype=np.int64)
        # The same for the latest earlier period in which the pair traded, and that period (0: none).
        self.earlier_log_rate_sum = np.zeros((n_resources, n_resources))
        self.earlier_rate_trades = np.zeros((n_resources, n_resources), dtype=np.int64)
        self.earlier_period = np.zeros((n_resources, n_resources), dtype=np.int64)
        self.period = 1
        self.log_price = np.zeros(n_resources)
        self.trades = 0
        self.deals = np.zeros(n_participants, dtype=np.int64)
        self.meetings = np.zeros(n_participants, dtype=np.int64)

    def new_period(self) -> None:
        """A new period starts: this period's trades become the pairs' latest earlier ones."""
        traded = self.rate_trades > 0
        self.earlier_log_rate_sum[traded] = self.log_rate_sum[traded]
        self.earlier_rate_trades[traded] = self.rate_trades[traded]
        self.earlier_period[traded] = self.period
        self.log_rate_sum[:] = 0.0
        self.rate_trades[:] = 0
        self.period += 1

    def typical_rate(self, res_a: np.ndarray, res_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Geometric-mean units of a given per unit of b in past trades, and how many trades (0: NaN).

        The trades are this period's, or before the pair has traded this period, those of
        the latest period in which it did (rate_period). A negative resource (advice
        without a swap) has no trades.
        """
        known = (res_a >= 0) & (res_b >= 0)
        a, b = np.where(known, res_a, 0), np.where(known, res_b, 0)
        now = self.rate_trades[a, b] > 0
        count = np.where(known, np.where(now, self.rate_trades[a, b], self.earlier_rate_trades[a, b]), 0)
        log_sum = np.where(now, self.log_rate_sum[a, b], self.earlier_log_rate_sum[a, b])
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.exp(log_sum / count)
        return np.where(count > 0, rate, np.nan), count

    def rate_period(self, res_a: np.ndarray, res_b: np.ndarray) -> np.ndarray:
        """The period (from 1) whose trades typical_rate averages for each pair; 0 where there are none."""
        known = (res_a >= 0) & (res_b >= 0)
        a, b = np.where(known, res_a, 0), np.where(known, res_b, 0)
        latest = np.where(self.rate_trades[a, b] > 0, self.period, self.earlier_period[a, b])
        return np.where(known, latest, 0)

    def acceptance_record(self, participants: np.ndarray) -> np.ndarray:
        """Laplace-smoothed share of a participant's meetings that ended in a deal."""
        return (self.deals[participants] + 1) / (self.meetings[participants] + 2)

    def valuations(self, holdings: np.ndarray, needs: np.ndarray, wants: np.ndarray) -> np.ndarray:
        """v_r from the holdings now (this period's supply) and needs (each period's), and the learned prices."""
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
