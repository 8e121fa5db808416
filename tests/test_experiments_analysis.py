"""Statistics of stored outcomes, checked against answers known in advance:
analytic Sobol' indices, an inert factor, the coverage of a 95% interval,
a known paired shift."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from commonpool.experiments import analysis, sampler
from commonpool.experiments.sampler import Range


def outcomes_frame(points: list[dict[str, object]], values: np.ndarray, metric: str = "y") -> pd.DataFrame:
    """The long outcomes table a sweep stores: values[point_id, replication]."""
    values = np.asarray(values, dtype=float).reshape(len(points), -1)
    rows = [
        {"run_id": f"r{p}_{r}", "point_id": p, "replication": r, "metric": metric, "value": values[p, r], **point}
        for p, point in enumerate(points)
        for r in range(values.shape[1])
    ]
    return pd.DataFrame(rows)


def ishigami(x1: np.ndarray, x2: np.ndarray, x3: np.ndarray, a: float = 7.0, b: float = 0.1) -> np.ndarray:
    return np.sin(x1) + a * np.sin(x2) ** 2 + b * x3**4 * np.sin(x1)


ISHIGAMI_FACTORS = [Range(f"x{i}", -math.pi, math.pi) for i in (1, 2, 3)]


def ishigami_outcomes(n: int, calc_second_order: bool = False) -> pd.DataFrame:
    points = sampler.sobol(ISHIGAMI_FACTORS, n, seed=12, calc_second_order=calc_second_order)
    x = pd.DataFrame(points)
    return outcomes_frame(points, ishigami(x["x1"].to_numpy(), x["x2"].to_numpy(), x["x3"].to_numpy()))


# --- Sobol' and Morris -------------------------------------------------------

def test_sobol_indices_of_ishigami_match_the_analytic_values() -> None:
    indices = analysis.sobol_indices(ishigami_outcomes(1024), ISHIGAMI_FACTORS, "y", seed=1).set_index("factor")
    # Ishigami & Homma (1990), a = 7, b = 0.1; see Saltelli et al. (2008), sec. 4.8.
    assert indices["S1"].to_numpy() == pytest.approx([0.3139, 0.4424, 0.0], abs=0.04)
    assert indices["ST"].to_numpy() == pytest.approx([0.5576, 0.4424, 0.2437], abs=0.04)
    assert (indices[["S1_conf", "ST_conf"]] > 0).all().all()
    assert (indices[["S1_conf", "ST_conf"]] < 0.15).all().all()


def test_sobol_indices_with_a_second_order_design_read_its_longer_layout() -> None:
    indices = analysis.sobol_indices(ishigami_outcomes(1024, calc_second_order=True), ISHIGAMI_FACTORS, "y",
                                     calc_second_order=True, seed=1)
    assert indices["ST"].to_numpy() == pytest.approx([0.5576, 0.4424, 0.2437], abs=0.04)


def test_sobol_indices_use_the_mean_over_replications_of_each_point() -> None:
    single = ishigami_outcomes(64)
    # Two replications either side of the model's value by an amount that
    # depends on x3 (a constant shift would not move any index): their mean is the model's value.
    spread = 5.0 * single["x3"]
    doubled = pd.concat([single.assign(value=single["value"] + spread, replication=0),
                         single.assign(value=single["value"] - spread, replication=1)])
    expected = analysis.sobol_indices(single, ISHIGAMI_FACTORS, "y", seed=3)
    pd.testing.assert_frame_equal(analysis.sobol_indices(doubled, ISHIGAMI_FACTORS, "y", seed=3), expected)


def test_sobol_indices_are_the_same_for_the_same_seed() -> None:
    frame = ishigami_outcomes(64)
    pd.testing.assert_frame_equal(analysis.sobol_indices(frame, ISHIGAMI_FACTORS, "y", seed=0),
                                  analysis.sobol_indices(frame, ISHIGAMI_FACTORS, "y", seed=0))


def test_sobol_indices_reject_points_that_do_not_fit_a_saltelli_design() -> None:
    frame = ishigami_outcomes(64)
    last = frame["point_id"].max()
    with pytest.raises(ValueError, match="do not fit a Saltelli design for 3 factors"):
        analysis.sobol_indices(frame[frame["point_id"] != last], ISHIGAMI_FACTORS, "y")
    with pytest.raises(ValueError, match="missing or all-NaN: 7"):
        analysis.sobol_indices(frame[frame["point_id"] != 7], ISHIGAMI_FACTORS, "y")
    with pytest.raises(ValueError, match="no outcomes for metric 'welfare'; metrics present: y"):
        analysis.sobol_indices(frame, ISHIGAMI_FACTORS, "welfare")


def test_sobol_indices_of_a_metric_that_never_varies_are_nan() -> None:
    frame = ishigami_outcomes(64).assign(value=2.0)
    indices = analysis.sobol_indices(frame, ISHIGAMI_FACTORS, "y")
    assert indices["factor"].tolist() == ["x1", "x2", "x3"]
    assert indices[["S1", "S1_conf", "ST", "ST_conf"]].isna().all().all()


MORRIS_FACTORS = [Range("linear", 0.0, 2.0), Range("inert", 0.0, 1.0), Range("curved", 0.0, 1.0)]


def morris_outcomes(n_trajectories: int, num_levels: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    unit = sampler.morris_unit(MORRIS_FACTORS, n_trajectories, seed=4, num_levels=num_levels)
    points = sampler.from_unit(MORRIS_FACTORS, unit)
    x = pd.DataFrame(points)
    y = 3.0 * x["linear"] + 0.0 * x["inert"] + 5.0 * x["curved"] ** 2
    return outcomes_frame(points, y.to_numpy()), unit


def test_morris_finds_the_inert_factor_and_the_linear_one() -> None:
    frame, unit = morris_outcomes(20)
    indices = analysis.morris_indices(frame, MORRIS_FACTORS, "y", unit, seed=1).set_index("factor")
    # Effects are per unit of the unit cube: 'linear' spans 2, so 3 per unit of x is 6.
    assert indices.loc["linear", "mu"] == pytest.approx(6.0)
    assert indices.loc["linear", "mu_star"] == pytest.approx(6.0)
    assert indices.loc["linear", "sigma"] == pytest.approx(0.0, abs=1e-9)
    assert indices.loc["inert", "mu_star"] == pytest.approx(0.0, abs=1e-12)
    assert indices.loc["inert", "sigma"] == pytest.approx(0.0, abs=1e-12)
    # A curve's effect depends on where it is taken: positive mu*, positive sigma.
    assert indices.loc["curved", "mu_star"] > 1.0
    assert indices.loc["curved", "sigma"] > 0.5
    assert (indices["mu_star_conf"] >= 0).all()


def test_morris_indices_reject_a_matrix_drawn_on_another_grid() -> None:
    frame, unit = morris_outcomes(4, num_levels=6)
    with pytest.raises(ValueError, match="num_levels=4"):
        analysis.morris_indices(frame, MORRIS_FACTORS, "y", unit)
    indices = analysis.morris_indices(frame, MORRIS_FACTORS, "y", unit, num_levels=6).set_index("factor")
    assert indices.loc["linear", "mu_star"] == pytest.approx(6.0)


def test_morris_indices_reject_a_matrix_of_the_wrong_shape() -> None:
    frame, unit = morris_outcomes(4)
    with pytest.raises(ValueError, match="samples_matrix must have 3 columns"):
        analysis.morris_indices(frame, MORRIS_FACTORS, "y", unit[:, :2])


# --- summarize ---------------------------------------------------------------

def normal_samples(count: int, n: int, mean: float, seed: int) -> pd.DataFrame:
    values = np.random.default_rng(seed).normal(mean, 2.0, size=(count, n))
    return outcomes_frame([{} for _ in range(count)], values)


def test_t_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    table = analysis.summarize(normal_samples(2000, 10, mean=5.0, seed=21))
    assert (table["n"] == 10).all()
    coverage = ((table["ci_low"] <= 5.0) & (5.0 <= table["ci_high"])).mean()
    assert 0.935 <= coverage <= 0.965


def test_bootstrap_interval_covers_the_true_mean_about_90_percent_of_the_time() -> None:
    # The percentile bootstrap is known to under-cover at n = 10 (about 91%);
    # a broken resampler (no replacement, unseeded widths) lands far from this.
    table = analysis.summarize(normal_samples(2000, 10, mean=5.0, seed=22), bootstrap=500, seed=3)
    coverage = ((table["boot_low"] <= 5.0) & (5.0 <= table["boot_high"])).mean()
    assert 0.88 <= coverage <= 0.95
    assert ((table["boot_high"] - table["boot_low"]) < (table["ci_high"] - table["ci_low"])).mean() > 0.9


def test_summarize_matches_the_formulas_on_a_small_sample() -> None:
    table = analysis.summarize(outcomes_frame([{}], [[1.0, 2.0, 3.0, 4.0]]))
    row = table.iloc[0]
    sd = math.sqrt(5 / 3)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3} * sd / sqrt(4)
    assert (row["point_id"], row["metric"], row["n"]) == (0, "y", 4)
    assert row[["mean", "sd", "se", "ci_low", "ci_high"]].tolist() == pytest.approx([2.5, sd, sd / 2, 2.5 - half, 2.5 + half])


def test_summarize_drops_nan_values_and_counts_what_is_left() -> None:
    frame = outcomes_frame([{}, {}, {}], [[1.0, np.nan, 3.0], [7.0, np.nan, np.nan], [np.nan] * 3])
    table = analysis.summarize(frame, bootstrap=50).set_index("point_id")
    assert table["n"].tolist() == [2, 1, 0]
    assert table.loc[0, "mean"] == 2.0
    assert not np.isnan(table.loc[0, "ci_low"])
    # One value: a mean, but no spread to build an interval from.
    assert table.loc[1, "mean"] == 7.0
    assert table.loc[1, ["sd", "se", "ci_low", "ci_high", "boot_low", "boot_high"]].isna().all()
    assert table.loc[2, ["mean", "sd", "ci_low", "boot_low"]].isna().all()


def test_summarize_groups_by_factor_and_keeps_each_groups_own_bootstrap() -> None:
    points = [{"facilitator": True}, {"facilitator": False}, {"facilitator": True}]
    values = [[1.0, 2.0, 3.0], [100.0, 110.0, 120.0], [4.0, 5.0, 6.0]]
    table = analysis.summarize(outcomes_frame(points, values), by=("facilitator",), bootstrap=200, seed=1)
    assert table.columns.tolist() == ["facilitator", "metric", "n", "mean", "sd", "se", "ci_low", "ci_high",
                                      "boot_low", "boot_high"]
    by_condition = table.set_index("facilitator")
    assert by_condition.loc[True, "n"] == 6 and by_condition.loc[False, "n"] == 3
    assert by_condition.loc[True, "mean"] == 3.5 and by_condition.loc[False, "mean"] == 110.0
    # Each bootstrap interval sits inside its own group's range of values.
    assert 1.0 <= by_condition.loc[True, "boot_low"] <= by_condition.loc[True, "boot_high"] <= 6.0
    assert 100.0 <= by_condition.loc[False, "boot_low"] <= by_condition.loc[False, "boot_high"] <= 120.0
    # A bare column name groups the same way.
    pd.testing.assert_frame_equal(analysis.summarize(outcomes_frame(points, values), by="facilitator", bootstrap=200, seed=1), table)


def test_bootstrap_is_seeded() -> None:
    frame = normal_samples(5, 10, mean=0.0, seed=1)
    first = analysis.summarize(frame, bootstrap=100, seed=4)
    pd.testing.assert_frame_equal(first, analysis.summarize(frame, bootstrap=100, seed=4))
    assert not first["boot_low"].equals(analysis.summarize(frame, bootstrap=100, seed=5)["boot_low"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"level": 1.0}, "level must be between 0 and 1"),
        ({"bootstrap": -1}, "bootstrap must be a non-negative integer"),
        ({"by": ("pairing",)}, "lack column.*pairing"),
    ],
)
def test_summarize_rejects_bad_arguments_by_name(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        analysis.summarize(normal_samples(2, 3, mean=0.0, seed=1), **kwargs)


# --- paired ------------------------------------------------------------------

def paired_frame(shift: float, noise: float, replications: int = 20) -> pd.DataFrame:
    """Facilitator off/on at two community sizes. Each replication's seed makes a
    large common level (sd 10) both conditions share; on adds `shift` plus small noise."""
    rng = np.random.default_rng(8)
    points, values = [], []
    for size in (10, 20):
        common = rng.normal(0.0, 10.0, replications)
        for facilitator in (False, True):
            points.append({"facilitator": facilitator, "size": size})
            values.append(common + (shift + rng.normal(0.0, noise, replications) if facilitator else 0.0))
    return outcomes_frame(points, np.array(values))


def test_paired_difference_recovers_a_known_shift() -> None:
    table = analysis.paired(paired_frame(shift=1.0, noise=0.1), "facilitator", False, True)
    assert table["size"].tolist() == [10, 20]
    assert (table["metric"] == "y").all()
    assert (table["n"] == 20).all()
    # The common level (sd 10) cancels within pairs: the estimate is as tight as the noise (sd 0.1).
    assert table["mean_diff"].to_numpy() == pytest.approx([1.0, 1.0], abs=0.1)
    assert (table["ci_low"] > 0.8).all() and (table["ci_high"] < 1.2).all()
    assert (table["sign_p"] < 1e-5).all()  # 20 wins of 20: 2 / 2**20
    assert (table["wilcoxon_p"] < 1e-4).all()
    assert (table["wins_b"] == 20).all() and (table["wins_a"] == 0).all()


def test_paired_reversed_conditions_flip_the_sign_and_the_wins() -> None:
    frame = paired_frame(shift=1.0, noise=0.1)
    forward = analysis.paired(frame, "facilitator", False, True)
    backward = analysis.paired(frame, "facilitator", True, False)
    assert backward["mean_diff"].to_numpy() == pytest.approx(-forward["mean_diff"].to_numpy())
    assert backward["wins_a"].tolist() == forward["wins_b"].tolist()


def test_paired_with_no_difference_gives_nan_tests_not_an_exception() -> None:
    table = analysis.paired(paired_frame(shift=0.0, noise=0.0), "facilitator", False, True)
    assert (table["mean_diff"] == 0).all() and (table["sd"] == 0).all()
    assert (table["wins_a"] == 0).all() and (table["wins_b"] == 0).all()
    assert table[["sign_p", "wilcoxon_p"]].isna().all().all()


def test_paired_with_a_single_pair_gives_nan_intervals_not_an_exception() -> None:
    frame = paired_frame(shift=1.0, noise=0.1, replications=1)
    table = analysis.paired(frame, "facilitator", False, True)
    assert (table["n"] == 1).all()
    assert table[["sd", "ci_low", "ci_high", "wilcoxon_p"]].isna().all().all()
    assert (table["sign_p"] == 1.0).all()


def test_paired_matches_on_replication_not_on_row_order() -> None:
    frame = paired_frame(shift=1.0, noise=0.1)
    shuffled = frame.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(analysis.paired(shuffled, "facilitator", False, True),
                                  analysis.paired(frame, "facilitator", False, True))


def test_paired_names_a_condition_that_is_absent() -> None:
    with pytest.raises(ValueError, match="'facilitator' has no outcomes with b='yes'; values present: False, True"):
        analysis.paired(paired_frame(shift=1.0, noise=0.1), "facilitator", False, "yes")


def test_paired_p_values_agree_with_scipy_on_the_differences() -> None:
    frame = paired_frame(shift=0.05, noise=1.0)
    table = analysis.paired(frame, "facilitator", False, True)
    wide = frame[frame["size"] == 10].pivot(index="replication", columns="facilitator", values="value")
    d = (wide[True] - wide[False]).to_numpy()
    row = table[table["size"] == 10].iloc[0]
    assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert row["sign_p"] == pytest.approx(stats.binomtest(int((d > 0).sum()), len(d)).pvalue)
    assert row["mean_diff"] == pytest.approx(d.mean())
