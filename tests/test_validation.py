"""The model checked against what economics knows: each claim of the README's Validation
section as a seeded test.

Most claims are read from one small sweep of the README's validation study
(data/samples/validation.toml: the default mix, 60 participants x 2,000 exchanges,
facilitator on and off), run here with 8 replications instead of the study's 30,
through the same sweep machinery. Replication r of both conditions runs with the
same seed, so facilitator on and off are compared run by run (analysis.paired).

Where a pattern is noisy the test is a one-sided sign test: under "no effect" each
seed goes either way with probability 1/2, so k of n seeds going the predicted way
has p = P(X >= k), X ~ Binomial(n, 1/2); with 8 seeds, 7 or more is p < 0.05. The
seeds are fixed, so the tests are deterministic; the p-value says the pattern is
not a coin flip. The README's figures come from the 30-replication study, not from
these runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from commonpool import Personality, SimulationConfig, Traits, economy, metrics, run_simulation
from commonpool.cli import main
from commonpool.experiments import results
from commonpool.experiments.spec import load_spec, parse_spec
from commonpool.experiments.sweep import run_sweep
from commonpool.optimum import best_mutual_swaps, greedy_bilateral_trading, utilitarian_optimum
from commonpool.population import generate
from commonpool.store import Store

ALPHA = 0.05
SPEC = Path(__file__).resolve().parents[1] / "data" / "samples" / "validation.toml"
REPLICATIONS = 8
# 60 people meeting in 2000 exchanges (~67 meetings each): long enough for trade
# to all but stop, short enough that the first windows have trades to measure.
WINDOWS = 4


def sign_test(successes: int, n: int) -> float:
    """One-sided p-value of k or more successes in n fair coin flips."""
    return sum(math.comb(n, k) for k in range(successes, n + 1)) / 2**n


def test_sign_test_matches_the_binomial_tail() -> None:
    assert sign_test(8, 8) == 1 / 256
    assert sign_test(7, 8) == 9 / 256
    assert sign_test(0, 8) == 1


@dataclass
class Study:
    store: Store
    data: results.SweepData
    market: list[str]  # facilitator-on run ids, by replication
    control: list[str]  # facilitator-off run ids, same seeds


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    store = Store(tmp_path_factory.mktemp("validation"))
    spec = parse_spec({**load_spec(SPEC), "replications": REPLICATIONS})
    run_sweep(spec, store, "local", 2, sweep_id="validation")
    data = results.load(store, "validation")
    runs = data.outcomes.drop_duplicates("run_id").sort_values("replication")
    assert len(runs) == 2 * REPLICATIONS  # every run completed
    return Study(store, data, runs[runs.facilitator == True]["run_id"].tolist(),  # noqa: E712
                 runs[runs.facilitator == False]["run_id"].tolist())  # noqa: E712


def _per_seed(study: Study, metric, runs: list[str] | None = None) -> list:  # type: ignore[no-untyped-def]
    con = study.store.connect()
    try:
        return [metric(con, run_id) for run_id in (study.market if runs is None else runs)]
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


# 2. An opening is a swap the partner wants ---------------------------------------------------------


def test_almost_every_opening_made_is_accepted_because_it_must_help_the_partner(study: Study) -> None:
    def openings(con, run_id: str) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
        return con.execute(
            "SELECT count(*), count(*) FILTER (WHERE o.action = 'propose'),"
            " count(*) FILTER (WHERE o.action = 'propose' AND e.outcome = 'accepted')"
            " FROM exchanges AS e JOIN offers AS o USING (run_id, exchange_id)"
            " WHERE e.run_id = ? AND o.turn = 1", [run_id]).fetchone()

    for run_id, (meetings, opened, accepted) in zip(study.market + study.control,
                                                    _per_seed(study, openings, study.market + study.control)):
        # Most meetings end at turn 1 with a decline: late in a run no swap qualifies ...
        assert opened < 0.5 * meetings, (run_id, meetings, opened)
        # ... and what is opened, the partner nearly always takes (or counters into a deal).
        assert accepted >= 0.8 * opened, (run_id, opened, accepted)


# 3. The market against the optimum ----------------------------------------------------------------


def test_the_market_reaches_most_of_the_optimal_gain_but_less_than_a_greedy_matchmaker(study: Study) -> None:
    def efficiencies(con, run_id: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        c = metrics.community(con, run_id)
        welfare = lambda h: economy.utility(h, c.needs, c.wants, c.need_weight).sum()  # noqa: E731
        start = welfare(c.initial)
        possible = welfare(utilitarian_optimum(c.initial.sum(axis=0), c.needs, c.wants, c.need_weight)) - start
        greedy = welfare(greedy_bilateral_trading(c.world(c.initial), c.max_units)) - start
        return metrics.allocative_efficiency(con, run_id)["efficiency"], greedy / possible

    per_seed = _per_seed(study, efficiencies)
    assert all(0.85 < market < 1 and 0.85 < greedy <= 1 + 1e-9 for market, greedy in per_seed), per_seed
    below = sum(market < greedy for market, greedy in per_seed)
    assert sign_test(below, len(per_seed)) < ALPHA, per_seed
    # The sweep stored the same efficiency per run: its CI over seeds lies below 1.
    on = results.summary(study.data).query("facilitator == True and metric == 'efficiency'").iloc[0]
    assert on["n"] == REPLICATIONS and on["ci_high"] < 1, on


def test_greedy_matchmaker_stops_where_no_pair_has_a_swap_both_would_take(study: Study) -> None:
    con = study.store.connect()
    c = metrics.community(con, study.market[0])
    reached = greedy_bilateral_trading(c.world(c.initial), c.max_units)
    assert (reached.sum(axis=0) == c.initial.sum(axis=0)).all() and (reached >= 0).all()
    first, second = np.triu_indices(len(c.participant_ids), 1)
    assert np.isnan(best_mutual_swaps(c.world(reached), first, second, c.max_units)).all()
    assert (economy.utility(reached, c.needs, c.wants, c.need_weight)
            >= economy.utility(c.initial, c.needs, c.wants, c.need_weight) - 1e-9).all()  # voluntary swaps only


# 4. Gains left on the table -----------------------------------------------------------------------


def test_trade_leaves_few_pairs_with_a_swap_both_would_take(study: Study) -> None:
    def shares(con, run_id: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        c = metrics.community(con, run_id)
        first, second = np.triu_indices(len(c.participant_ids), 1)
        at_start = np.mean(~np.isnan(best_mutual_swaps(c.world(c.initial), first, second, c.max_units)))
        return at_start, metrics.gains_left_on_table(con, run_id)["share"]

    per_seed = _per_seed(study, shares)
    assert all(end < 0.1 * start for start, end in per_seed), per_seed
    # Near but not at pairwise optimality: some pairs still have a swap left, in most seeds.
    left = sum(end > 0 for _, end in per_seed)
    assert sign_test(left, len(per_seed)) < ALPHA, per_seed


# 5. Marginal rates of substitution ----------------------------------------------------------------


def test_traders_mrs_converge_but_the_spread_across_holders_stalls_well_above_a_common_price(study: Study) -> None:
    def paths(con, run_id: str) -> tuple[list[float], list[int], list[float]]:  # type: ignore[no-untyped-def]
        spread = metrics.mrs_dispersion(con, run_id, windows=8)
        spread = spread[spread["pair"] == "all"]
        gaps = metrics.mrs_prices(con, run_id, windows=WINDOWS).groupby("window")["mrs_gap"].mean()
        return spread["sd_log_mrs"].tolist(), spread["df"].tolist(), gaps.tolist()

    per_seed = _per_seed(study, paths)
    # Every SD here stands on hundreds of holders, far above the 5-df floor.
    assert all(min(df) >= metrics.MIN_DISPERSION_DF for _, df, _ in per_seed)
    # Between the two sides of a trade, valuations meet: the gap is smaller in the last window's trades.
    closer = sum(gaps[-1] < gaps[0] for _, _, gaps in per_seed)
    assert sign_test(closer, len(per_seed)) < ALPHA, per_seed
    # Across holders the spread falls in the first half of the run ...
    start, half, end = (np.array([sd[k] for sd, _, _ in per_seed]) for k in (0, 4, 8))
    assert (half < start).all(), (start, half)
    # ... and then hardly moves: the second half does less than a tenth of the first half's work,
    stalled = sum(abs(e - h) < 0.1 * (s - h) for s, h, e in zip(start, half, end))
    assert sign_test(stalled, len(per_seed)) < ALPHA, (start, half, end)
    # ... leaving a spread far from the 0 of a common price.
    assert (end > 0.2 * start).all(), (start, end)


# 6. Exchange rates --------------------------------------------------------------------------------


def test_spread_of_log_exchange_rates_falls_from_first_to_last_measurable_window(study: Study) -> None:
    # The last windows trade too little to measure a spread in most seeds (fewer than
    # metrics.MIN_DISPERSION_DF degrees of freedom: NULL, not 0), so the comparison is
    # with the last window that has one.
    def spread(con, run_id: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        frame = metrics.price_dispersion(con, run_id, windows=WINDOWS)
        pooled = frame[frame["pair"] == "all"].set_index("window")["sd_log_rate"].dropna()
        if 0 not in pooled.index or pooled.index[-1] == 0:
            return np.nan, np.nan
        return pooled.loc[0], pooled.iloc[-1]

    spreads = _per_seed(study, spread)
    fell = sum(last < first for first, last in spreads)  # a NaN (no spread measurable) counts as a failure
    assert sign_test(fell, len(spreads)) < ALPHA, spreads
    first, last = np.nanmean([s[0] for s in spreads]), np.nanmean([s[1] for s in spreads])
    assert last < 0.6 * first, (first, last)


def test_a_window_with_fewer_than_5_degrees_of_freedom_has_no_price_spread_rather_than_0(study: Study) -> None:
    def last_window(con, run_id: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
        pooled = metrics.price_dispersion(con, run_id, windows=WINDOWS).query("pair == 'all'")
        return int(pooled["df"].iloc[-1]), pooled["sd_log_rate"].iloc[-1]

    per_seed = _per_seed(study, last_window)
    assert all(np.isnan(sd) == (df < metrics.MIN_DISPERSION_DF) for df, sd in per_seed), per_seed
    # The last quarter of a run trades too little to measure in most seeds, and the sweep left it out.
    thin = sum(df < metrics.MIN_DISPERSION_DF for df, _ in per_seed)
    assert sign_test(thin, len(per_seed)) < ALPHA, per_seed
    stored = study.data.outcomes.query("facilitator == True and metric == 'price_sd_last'")
    assert len(stored) == len(per_seed) - thin


# 7. Trade volume decays --------------------------------------------------------------------------


def test_trade_volume_per_window_decays_as_marginal_values_equalise(study: Study) -> None:
    volumes = _per_seed(study, lambda con, r: metrics.activity(con, r, windows=WINDOWS)["accepted"].tolist())
    decayed = sum(v[-1] < v[0] for v in volumes)
    assert sign_test(decayed, len(volumes)) < ALPHA, volumes
    # Not just first vs last: each window trades less than the one before, in most seeds.
    monotone = sum(all(b <= a for a, b in zip(v, v[1:])) for v in volumes)
    assert sign_test(monotone, len(volumes)) < ALPHA, volumes


# 8. Trade fulfils needs --------------------------------------------------------------------------


def test_need_fulfilment_is_higher_at_the_end_than_at_the_start(study: Study) -> None:
    summaries = _per_seed(study, metrics.summary)
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


# 9. Generosity is exploited ----------------------------------------------------------------------


def test_generous_participants_gain_less_than_strategic_ones_when_they_trade_with_each_other(study: Study) -> None:
    def gains(con, run_id: str) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
        deals = metrics.surplus_split(con, run_id)
        g_s = deals[(deals.initiator_personality == "generous") & (deals.responder_personality == "strategic")]
        s_g = deals[(deals.initiator_personality == "strategic") & (deals.responder_personality == "generous")]
        generous = np.concatenate([g_s.initiator_gain, s_g.responder_gain])
        strategic = np.concatenate([g_s.responder_gain, s_g.initiator_gain])
        return generous.mean(), strategic.mean(), len(generous)

    per_seed = _per_seed(study, gains)
    assert all(deals >= 30 for _, _, deals in per_seed)
    less = sum(generous < strategic for generous, strategic, _ in per_seed)
    assert sign_test(less, len(per_seed)) < ALPHA, per_seed


# 10. The facilitator ---------------------------------------------------------------------------------


def test_without_a_facilitator_more_meetings_end_in_a_deal_and_welfare_is_no_different(study: Study) -> None:
    # Facilitator off minus on, the same community (seed) on both sides.
    paired = results.paired_comparisons(study.data)["facilitator"].set_index("metric")
    assert (paired["n"][["acceptance_rate", "welfare_change", "efficiency"]] == REPLICATIONS).all()
    acceptance = paired.loc["acceptance_rate"]
    assert acceptance["mean_diff"] > 0 and sign_test(int(acceptance["wins_b"]), REPLICATIONS) < ALPHA, acceptance
    # An equivalence claim: the whole 95% interval of the difference lies within 2% of the
    # welfare gain (and 0.02 of efficiency), so "no difference" is a measurement, not a failure to find one.
    gain = study.data.outcomes.query("metric == 'welfare_change'")["value"].mean()
    welfare = paired.loc["welfare_change"]
    assert -0.02 * gain < welfare["ci_low"] and welfare["ci_high"] < 0.02 * gain, (welfare, gain)
    efficiency = paired.loc["efficiency"]
    assert -0.02 < efficiency["ci_low"] and efficiency["ci_high"] < 0.02, efficiency


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
