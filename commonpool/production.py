"""What participants make and use up, period by period: the flows that keep an economy alive.

A run is a sequence of ``periods`` (config). Its exchanges (drawn from
[min_exchanges, max_exchanges], the run's total) are split evenly over them
(``split_exchanges``). With one period nothing below happens: the endowments
are only reallocated, the model as it always was. With P > 1:

- Period 1 starts from the initial holdings.
- At the end of every period, in this order (``Renewal.end_period``):
  consumed: c = min(h, n) of each resource (economy.consumption), the need
  recurring every period; that period's utility is economy.utility of the
  holdings just before, and its unmet need is n - c.
  expired: whatever is left of a time or skill resource not declared
  ``storable`` (unused hours do not keep).
  spoiled: of a storable resource with ``spoilage`` s, each unit left is lost
  with probability s (Binomial(h, s), from the run's own seeded stream).
- At the start of periods 2..P (``Renewal.start_period``), with p_ir what i
  produces of r (``produces``): a time or skill resource is topped up to its
  capacity p (p - h units when it holds less); a good gains p units.

Each step moves units through the ledger and is a row of the ``flows`` table,
so conservation still reads from the tables alone:
initial + produced - consumed - expired - spoiled + transfers in - out = final >= 0.

The generator's producers (``draw_producers``) come from a stream of their own,
default_rng([seed, 1]), drawn only when P > 1, so the default run's random
stream, and with it every table of a one-period run, is what it always was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from commonpool import economy
from commonpool.config import SimulationConfig
from commonpool.store.schema import FLOW_KINDS

PRODUCED, CONSUMED, EXPIRED, SPOILED = range(len(FLOW_KINDS))
RENEWING_KINDS = ("time", "skill")  # produced up to a capacity rather than at a rate

# The generator's producers: each participant makes 1-5 units a period of each resource it
# holds a surplus of. With needs of 2-4 units of up to two resources, a resource's total
# production and total need per period are about equal (both ~3 units per specialist/needer).
PRODUCTION_UNITS = (1, 5)


def split_exchanges(total: int, periods: int) -> np.ndarray:
    """Exchanges of each period: the run's total split evenly, the first total % periods getting one more."""
    counts = np.full(periods, total // periods, dtype=np.int64)
    counts[: total % periods] += 1
    return counts


def is_living(config: SimulationConfig) -> bool:
    """Whether anything is produced or consumed: only a run of more than one period."""
    return config.periods > 1


def draw_producers(special: np.ndarray, n_resources: int, seed: int) -> np.ndarray:
    """What each generated participant produces a period: 1-5 units of each of its surplus resources.

    special[i] are the resources participant i holds a surplus of. Drawn from
    default_rng([seed, 1]), never from the run's main stream.
    """
    rng = np.random.default_rng([seed, 1])
    n = special.shape[0]
    produces = np.zeros((n, n_resources), dtype=np.int64)
    low, high = PRODUCTION_UNITS
    produces[np.arange(n)[:, None], special] = rng.integers(low, high + 1, size=special.shape)
    return produces


@dataclass
class PeriodEnd:
    """What one period's end did, per participant x resource, and each participant's outcome."""

    consumed: np.ndarray  # int64 [participant, resource]
    expired: np.ndarray
    spoiled: np.ndarray
    utility: np.ndarray  # float64 [participant]: economy.utility of the holdings before consumption
    needed: np.ndarray  # int64 [participant]: units needed this period
    unmet: np.ndarray  # int64 [participant]: needed - consumed


class Renewal:
    """The period-end and period-start rules of one run (see the module docstring)."""

    def __init__(self, config: SimulationConfig, kinds: list[str], resources: list[str],
                 produces: np.ndarray, needs: np.ndarray, wants: np.ndarray) -> None:
        self.produces = produces.astype(np.int64)
        self.needs = needs
        self.wants = wants
        self.need_weight = config.need_weight
        storable = np.array([k not in RENEWING_KINDS or r in config.storable for k, r in zip(kinds, resources)])
        self.expires = ~storable
        self.capacity = np.array([k in RENEWING_KINDS for k in kinds])
        self.spoilage = np.array([config.spoilage.get(r, 0.0) if s else 0.0 for r, s in zip(resources, storable)])
        self.rng = np.random.default_rng([int(config.seed or 0), 2])

    def end_period(self, holdings: np.ndarray) -> PeriodEnd:
        """Consumption, expiry and spoilage at a period's end, against holdings (not yet applied)."""
        utility = economy.utility(holdings, self.needs, self.wants, self.need_weight)
        consumed = economy.consumption(holdings, self.needs).astype(np.int64)
        left = holdings - consumed
        expired = np.where(self.expires, left, 0).astype(np.int64)
        spoiled = np.zeros_like(left)
        spoils = np.flatnonzero(self.spoilage > 0)
        if len(spoils):
            spoiled[:, spoils] = self.rng.binomial(left[:, spoils], self.spoilage[spoils])
        needed = self.needs.sum(axis=1)
        return PeriodEnd(consumed, expired, spoiled, utility, needed, needed - consumed.sum(axis=1))

    def start_period(self, holdings: np.ndarray) -> np.ndarray:
        """Units produced at a period's start: capacity resources topped up to p, goods p more."""
        topped_up = np.maximum(self.produces - holdings, 0)
        return np.where(self.capacity, topped_up, self.produces).astype(np.int64)


@dataclass
class Foresight:
    """What a unit held now is worth next period (economy.carried_need_value), for brains that look ahead.

    Zero in the last period: nothing comes after it. Expiring resources carry nothing.
    """

    renewal: Renewal
    discount: float
    last_period: bool = False

    @property
    def active(self) -> bool:
        return not self.last_period

    def value(self, participants: np.ndarray, resources: np.ndarray, held: np.ndarray) -> np.ndarray:
        """a_r(h) of participants holding held units of resources (the three broadcast together)."""
        if self.last_period:
            return np.zeros(np.broadcast(participants, resources, held).shape)
        r = self.renewal
        need, produced = r.needs[participants, resources], r.produces[participants, resources]
        return self._carried_value(held, need, produced, self.kept_share()[resources], r.capacity[resources])

    def change(self, participants: np.ndarray, held: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """a(h + moved) - a(h) for every resource of participants: held [row, resource, 1], moved [k] -> [row, resource, k].

        The rules brain's legs (one per giver and taker, every round): rows are gathered once.
        """
        r = self.renewal
        need = r.needs[participants][:, :, None]
        produced = r.produces[participants][:, :, None]
        kept, capacity = self.kept_share()[None, :, None], r.capacity[None, :, None]
        return (self._carried_value(held + moved, need, produced, kept, capacity)
                - self._carried_value(held, need, produced, kept, capacity))

    def kept_share(self) -> np.ndarray:
        """Per resource, the expected share of a unit left after consumption that reaches next period."""
        return np.where(self.renewal.expires, 0.0, 1.0 - self.renewal.spoilage)

    def _carried_value(
        self, held: np.ndarray, need: np.ndarray, produced: np.ndarray, kept: np.ndarray, capacity: np.ndarray
    ) -> np.ndarray:
        carried = np.maximum(held - need, 0) * kept
        return economy.carried_need_value(carried, produced, need, capacity, self.renewal.need_weight, self.discount)
