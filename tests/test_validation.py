"""The model checked against what economics knows (issue 3's validation points).

Each pattern is asserted over several seeds. Where it is noisy, the test is a
one-sided sign test: under "no effect" each seed goes either way with
probability 1/2, so k of n seeds going the predicted way has p = P(X >= k),
X ~ Binomial(n, 1/2). With 8 seeds, 7 or more is p < 0.05. The seeds are
fixed, so the tests are deterministic; the p-value says the pattern is not a
coin flip. Figures quoted in docs/MODEL.md come from these runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from commonpool import Personality, SimulationConfig, Traits, metrics, run_simulation
from commonpool.cli import main
from commonpool.population import generate
from commonpool.store import Store

SEEDS = range(8)
ALPHA = 0.05
# 60 people meeting in 2000 exchanges (~67 meetings each): long enough for trade
# to all but stop, short enough that the last of 4 windows still has trades.
MARKET = {"num_participants": 60, "min_exchanges": 2000, "max_exchanges": 2000}
WINDOWS = 4


def sign_test(successes: int, n: int) -> float:
    """One-sided p-value of k or more successes in n fair coin flips."""
    return sum(math.comb(n, k) for k in range(successes, n + 1)) / 2**n


def test_sign_test_matches_the_binomial_tail() -> None:
    assert sign_test(8, 8) == 1 / 256
    assert sign_test(7, 8) == 9 / 256
    assert sign_test(0, 8) == 1


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("market"))
    for seed in SEEDS:
        run_simulation(SimulationConfig(seed=seed, simulation_id=f"market-{seed}", **MARKET), store)
    return store


def _per_seed(store: Store, metric) -> list:  # type: ignore[no-untyped-def]
    con = store.connect()
    try:
        return [metric(con, f"market-{seed}") for seed in SEEDS]
    finally:
        con.close()


# 1. Voluntary exchange is Pareto-improving -------------------------------------------------------


def test_among_cautious_participants_no_trade_lowers_anyones_utility_and_welfare_never_falls(tmp_path) -> None:
    store = Store(tmp_path)
    for seed in range(4):
        run_simulation(
            SimulationConfig(seed=seed, num_participants=30, min_exchanges=1000, max_exchanges=1000,
                             personalities={"cautious": 1.0}, simulation_id=f"cautious-{seed}"),
            store,
        )
    con = store.connect()
    for seed in range(4):
        run_id = f"cautious-{seed}"
        deals = metrics.surplus_split(con, run_id)
        assert len(deals) > 50
        assert deals["initiator_gain"].min() > 0 and deals["responder_gain"].min() > 0
        assert metrics.summary(con, run_id)["individually_rational_share"] == 1.0
        path = metrics.welfare_over_time(con, run_id, windows=50)
        assert (path["change"] >= 0).all()
        assert path["welfare"].is_monotonic_increasing


# 2. Prices converge ------------------------------------------------------------------------------


def test_spread_of_log_exchange_rates_falls_from_first_to_last_measurable_window(market: Store) -> None:
    # The last windows trade too little to measure a spread in most seeds (fewer than
    # metrics.MIN_DISPERSION_DF degrees of freedom: NULL, not 0), so the comparison is
    # with the last window that has one.
    def spread(con, run_id: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        frame = metrics.price_dispersion(con, run_id, windows=WINDOWS)
        pooled = frame[frame["pair"] == "all"].set_index("window")["sd_log_rate"].dropna()
        if 0 not in pooled.index or pooled.index[-1] == 0:
            return np.nan, np.nan
        return pooled.loc[0], pooled.iloc[-1]

    spreads = _per_seed(market, spread)
    fell = sum(last < first for first, last in spreads)  # a NaN (no spread measurable) counts as a failure
    assert sign_test(fell, len(spreads)) < ALPHA, spreads
    first, last = np.nanmean([s[0] for s in spreads]), np.nanmean([s[1] for s in spreads])
    assert last < 0.6 * first, (first, last)


# 3. Trade volume decays --------------------------------------------------------------------------


def test_trade_volume_per_window_decays_as_marginal_values_equalise(market: Store) -> None:
    volumes = _per_seed(market, lambda con, r: metrics.activity(con, r, windows=WINDOWS)["accepted"].tolist())
    decayed = sum(v[-1] < v[0] for v in volumes)
    assert sign_test(decayed, len(volumes)) < ALPHA, volumes
    # Not just first vs last: each window trades less than the one before, in most seeds.
    monotone = sum(all(b <= a for a, b in zip(v, v[1:])) for v in volumes)
    assert sign_test(monotone, len(volumes)) < ALPHA, volumes


# 4. Trade fulfils needs --------------------------------------------------------------------------


def test_need_fulfilment_is_higher_at_the_end_than_at_the_start(market: Store) -> None:
    summaries = _per_seed(market, metrics.summary)
    rose = sum(s["need_fulfilment_final"] > s["need_fulfilment_initial"] for s in summaries)
    assert sign_test(rose, len(summaries)) < ALPHA


def test_need_fulfilment_with_trade_beats_the_same_community_without_any_trade(tmp_path) -> None:
    store = Store(tmp_path)
    # Nobody accepts a swap that gains them less than 5 units of utility: a community that never trades.
    unwilling = Personality(name="unwilling", traits=Traits(min_gain=5.0, max_units=1))
    for seed in range(3):
        config = SimulationConfig(seed=seed, num_participants=30, min_exchanges=800, max_exchanges=800,
                                  simulation_id=f"trade-{seed}")
        run_simulation(config, store)
        roster = [spec.model_copy(update={"personality": "unwilling"})
                  for spec in generate(config, np.random.default_rng(seed)).to_specs()]
        run_simulation(
            config.model_copy(update={"simulation_id": f"no-trade-{seed}", "roster": roster,
                                      "custom_personalities": [unwilling], "personalities": {"unwilling": 1.0}}),
            store,
        )
    con = store.connect()
    for seed in range(3):
        traded, idle = metrics.summary(con, f"trade-{seed}"), metrics.summary(con, f"no-trade-{seed}")
        assert idle["accepted"] == 0
        assert idle["need_fulfilment_initial"] == pytest.approx(traded["need_fulfilment_initial"])  # same community
        assert idle["need_fulfilment_final"] == pytest.approx(idle["need_fulfilment_initial"])
        assert traded["need_fulfilment_final"] > idle["need_fulfilment_final"]


# 5. Generosity is exploited ----------------------------------------------------------------------


def test_generous_participants_gain_less_than_strategic_ones_when_they_trade_with_each_other(market: Store) -> None:
    def gains(con, run_id: str) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
        deals = metrics.surplus_split(con, run_id)
        g_s = deals[(deals.initiator_personality == "generous") & (deals.responder_personality == "strategic")]
        s_g = deals[(deals.initiator_personality == "strategic") & (deals.responder_personality == "generous")]
        generous = np.concatenate([g_s.initiator_gain, s_g.responder_gain])
        strategic = np.concatenate([g_s.responder_gain, s_g.initiator_gain])
        return generous.mean(), strategic.mean(), len(generous)

    per_seed = _per_seed(market, gains)
    assert all(deals >= 30 for _, _, deals in per_seed)
    less = sum(generous < strategic for generous, strategic, _ in per_seed)
    assert sign_test(less, len(per_seed)) < ALPHA, per_seed


# 6. A control run ---------------------------------------------------------------------------------


def test_facilitator_off_control_and_on_run_of_one_community_both_complete_and_compare(tmp_path: Path, capsys) -> None:
    store = Store(tmp_path)
    base = SimulationConfig(seed=3, num_participants=40, min_exchanges=1500, max_exchanges=1500)
    on = run_simulation(base.model_copy(update={"simulation_id": "with-facilitator"}), store)
    off = run_simulation(base.model_copy(update={"simulation_id": "control", "facilitator": False}), store)
    assert (on.status, off.status) == ("completed", "completed")

    con = store.connect()
    both = metrics.compare(con, ["with-facilitator", "control"]).set_index("run_id")
    # Same community at the start ...
    for column in ("welfare_initial", "need_fulfilment_initial", "gini_utility_initial"):
        assert both.loc["control", column] == pytest.approx(both.loc["with-facilitator", column])
    # ... different runs after it.
    assert both.loc["control", "accepted"] != both.loc["with-facilitator", "accepted"]
    assert metrics.anchoring(con, "with-facilitator") is not None
    assert metrics.anchoring(con, "control") is None

    shown = {}
    for run_id in ("with-facilitator", "control"):
        assert main(["metrics", run_id, "--json", "--store", str(tmp_path)]) == 0
        shown[run_id] = json.loads(capsys.readouterr().out)["summary"]
    assert shown["control"]["accepted"] == both.loc["control", "accepted"]
    assert shown["with-facilitator"]["welfare_final"] == pytest.approx(both.loc["with-facilitator", "welfare_final"])
