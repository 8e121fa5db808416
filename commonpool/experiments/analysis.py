"""Statistics of stored experiment outcomes: pure functions of DataFrames.

The input is the long outcomes table a sweep stores: one row per run and
metric, with columns `run_id, point_id, replication, metric, value` and one
column per factor holding that point's value. Every other column is read as a
factor. Nothing here runs a simulation, so a finished sweep can be re-analysed
(by the CLI, the dashboard or a test) without re-running it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from commonpool.experiments import sampler

OUTCOME_COLUMNS = ("run_id", "point_id", "replication", "metric", "value")


def factor_columns(outcomes: pd.DataFrame) -> list[str]:
    """The factor columns of an outcomes frame: every column but the outcome ones."""
    return [c for c in outcomes.columns if c not in OUTCOME_COLUMNS]


def summarize(
    outcomes: pd.DataFrame,
    by: Sequence[str] = ("point_id",),
    level: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Per group of `by` and metric: n, mean, sd, se and a confidence interval.

    NaN values are dropped first and `n` counts what is left; a group with no
    values left keeps its row, with n = 0 and NaN statistics.

    ci_low/ci_high is Student's t interval, mean +- t_{(1+level)/2, n-1} * sd / sqrt(n),
    exact for normal data and NaN for n < 2 (no spread to estimate). With
    `bootstrap` > 0, boot_low/boot_high is Efron's percentile bootstrap
    (Efron & Tibshirani 1993, ch. 13): the (1-level)/2 and (1+level)/2
    quantiles of the means of `bootstrap` resamples drawn with replacement,
    seeded by `seed`; also NaN for n < 2, where every resample is the same.
    """
    # A bare column name is one key, not a sequence of one-letter columns.
    keys = list(dict.fromkeys([*([by] if isinstance(by, str) else by), "metric"]))
    _check_columns(outcomes, [*keys, "value"], "summarize")
    _check_level(level)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer (resamples), got {bootstrap!r}")

    values = outcomes["value"].astype(float)
    groups = values.groupby([outcomes[k] for k in keys], sort=True, dropna=False)
    table = groups.agg(["count", "mean", "std"]).rename(columns={"count": "n", "std": "sd"})
    table["se"] = table["sd"] / np.sqrt(table["n"])
    table["ci_low"], table["ci_high"] = _t_interval(table["mean"], table["se"], table["n"], level)
    if bootstrap:
        rng = np.random.default_rng(seed)
        bounds = [_bootstrap_interval(g.dropna().to_numpy(), level, bootstrap, rng) for _, g in groups]
        table["boot_low"] = [low for low, _ in bounds]
        table["boot_high"] = [high for _, high in bounds]
    table["n"] = table["n"].astype(int)
    return table.reset_index()


def paired(
    outcomes: pd.DataFrame,
    factor: str,
    a: object,
    b: object,
    level: float = 0.95,
) -> pd.DataFrame:
    """Paired comparison of condition b against condition a of `factor`.

    Conditions that share seeds (replication r of every point runs with the
    same seed) are matched on (every other factor, replication, metric), and
    the difference b - a is taken within each pair; this removes the
    run-to-run noise both conditions share. One row per metric and per
    combination of the other factors, with:

    - mean_diff, sd, n, ci_low, ci_high: Student's t interval on the differences;
    - sign_p: two-sided exact sign test (binomial, p = 1/2) on wins_b against
      wins_a, ties dropped; NaN when every pair ties;
    - wilcoxon_p: two-sided Wilcoxon signed-rank test (Wilcoxon 1945), zero
      differences dropped; NaN when n < 2 or every difference is zero;
    - wins_b, wins_a: pairs where b is larger, and where a is.

    Pairs with a NaN on either side are dropped; unmatched rows are ignored.
    """
    _check_columns(outcomes, [factor, "replication", "metric", "value"], "paired")
    if factor in OUTCOME_COLUMNS:
        raise ValueError(f"factor must be a factor column, not {factor!r}")
    _check_level(level)
    others = [c for c in factor_columns(outcomes) if c != factor]
    keys = [*others, "replication", "metric"]
    sides = []
    for name, condition in (("a", a), ("b", b)):
        side = outcomes.loc[outcomes[factor] == condition, [*keys, "value"]]
        if side.empty:
            present = ", ".join(map(repr, outcomes[factor].drop_duplicates().tolist()))
            raise ValueError(f"factor {factor!r} has no outcomes with {name}={condition!r}; values present: {present}")
        if side.duplicated(keys).any():
            raise ValueError(
                f"factor {factor!r}={condition!r}: more than one outcome per (other factors, replication, metric), "
                "so pairs are ambiguous; the outcomes frame needs one column per factor that varies"
            )
        sides.append(side)
    pairs = sides[0].merge(sides[1], on=keys, suffixes=("_a", "_b"))
    pairs["diff"] = pairs["value_b"].astype(float) - pairs["value_a"].astype(float)
    pairs = pairs.dropna(subset=["diff"])

    rows = []
    for group_keys, group in pairs.groupby([*others, "metric"], sort=True, dropna=False):
        d = group["diff"].to_numpy()
        n = len(d)
        mean, sd = d.mean(), (d.std(ddof=1) if n > 1 else np.nan)
        low, high = _t_interval(mean, sd / np.sqrt(n), n, level)
        wins_b, wins_a = int((d > 0).sum()), int((d < 0).sum())
        rows.append({
            **dict(zip([*others, "metric"], group_keys)),
            "n": n,
            "mean_diff": mean,
            "sd": sd,
            "ci_low": low,
            "ci_high": high,
            "sign_p": stats.binomtest(wins_b, wins_a + wins_b).pvalue if wins_a + wins_b else np.nan,
            "wilcoxon_p": stats.wilcoxon(d).pvalue if n >= 2 and (wins_a + wins_b) else np.nan,
            "wins_b": wins_b,
            "wins_a": wins_a,
        })
    columns = [*others, "metric", "n", "mean_diff", "sd", "ci_low", "ci_high", "sign_p", "wilcoxon_p", "wins_b", "wins_a"]
    return pd.DataFrame(rows, columns=columns)


def sobol_indices(
    outcomes: pd.DataFrame,
    factors: Sequence[sampler.Factor],
    metric: str,
    calc_second_order: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """First-order and total Sobol' indices of `metric`, one row per factor.

    The outcomes must come from `sampler.sobol(factors, n, ..., calc_second_order)`
    with point_id = the row in its output. Each point's value is its mean over
    replications. S1 is Saltelli et al. (2010)'s estimator
    mean(f(B) (f(A_B^i) - f(A))) / V, ST is Jansen's mean((f(A) - f(A_B^i))^2) / 2V
    (Saltelli 2010, table 2), both via SALib; S1_conf/ST_conf are 95%
    bootstrap half-widths, seeded by `seed`. A metric that does not vary across
    points has undefined indices: every column is NaN.
    """
    d = len(sampler.problem(factors)["names"])
    y = _point_means(outcomes, metric, "sobol_indices")
    per_base = 2 * d + 2 if calc_second_order else d + 2
    if len(y) % per_base:
        raise ValueError(
            f"sobol_indices: {len(y)} points do not fit a Saltelli design for {d} factors "
            f"(calc_second_order={calc_second_order}): expected a multiple of {per_base}, "
            "as sampler.sobol with the same factors and calc_second_order draws"
        )
    names = [f.name for f in factors]
    if np.ptp(y) == 0:
        return pd.DataFrame({"factor": names, **{c: np.nan for c in ("S1", "S1_conf", "ST", "ST_conf")}})
    # SALib reads `if seed:`, so a plain 0 would leave its bootstrap unseeded; a Generator is always honoured.
    from SALib.analyze import sobol as salib_sobol  # only a Sobol study pays its import

    si = salib_sobol.analyze(
        sampler.problem(factors), y, calc_second_order=calc_second_order, conf_level=0.95,
        seed=np.random.default_rng(seed),
    )
    return pd.DataFrame({"factor": names, **{c: si[c] for c in ("S1", "S1_conf", "ST", "ST_conf")}})


def morris_indices(
    outcomes: pd.DataFrame,
    factors: Sequence[sampler.Factor],
    metric: str,
    samples_matrix: np.ndarray,
    seed: int = 0,
    num_levels: int = 4,
) -> pd.DataFrame:
    """Morris elementary-effects screening of `metric`, one row per factor.

    `samples_matrix` is the unit-cube matrix `sampler.morris_unit` drew (with
    this `num_levels`), and point_id is its row. Each point's value is its mean
    over replications. mu is the mean elementary effect (Morris 1991), mu_star
    the mean of their absolute values (Campolongo, Cariboni & Saltelli 2007),
    which does not let effects of opposite sign cancel; sigma their standard
    deviation (non-linearity or interaction); mu_star_conf a 95% bootstrap
    half-width, seeded by `seed`. Effects are per unit of the unit cube, so
    they compare across factors of any scale.
    """
    d = len(sampler.problem(factors)["names"])
    x = np.asarray(samples_matrix, dtype=float)
    if x.ndim != 2 or x.shape[1] != d or x.shape[0] % (d + 1) or x.shape[0] < 2 * (d + 1):
        raise ValueError(
            f"samples_matrix must have {d} columns and a multiple of {d + 1} rows (trajectories of d + 1 points, "
            f"at least two), got shape {x.shape}"
        )
    # Elementary effects divide by the grid step, so a matrix drawn on
    # another grid would silently rescale every effect.
    delta = sampler.morris_step(num_levels)
    steps = np.abs(np.diff(x.reshape(-1, d + 1, d), axis=1))
    if not np.allclose(steps[steps > 1e-12], delta):
        raise ValueError(
            f"samples_matrix steps are not the num_levels={num_levels} step {delta:.4g}; "
            "pass the num_levels the sampler used"
        )
    y = _point_means(outcomes, metric, "morris_indices", expected=len(x))
    from SALib.analyze import morris as salib_morris  # only a Morris study pays its import

    si = salib_morris.analyze(sampler.problem(factors), x, y, conf_level=0.95, num_levels=num_levels, seed=seed)
    names = [f.name for f in factors]
    return pd.DataFrame({"factor": names, **{c: np.asarray(si[c], dtype=float) for c in ("mu", "mu_star", "mu_star_conf", "sigma")}})


def _t_interval(mean: pd.Series | float, se: pd.Series | float, n: pd.Series | int, level: float) -> tuple:
    """Student's t interval mean +- t_{(1+level)/2, n-1} * se; NaN where n < 2."""
    half = stats.t.ppf((1 + level) / 2, np.asarray(n, dtype=float) - 1) * se
    return mean - half, mean + half


def _bootstrap_interval(values: np.ndarray, level: float, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    if len(values) < 2:
        return np.nan, np.nan
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _point_means(outcomes: pd.DataFrame, metric: str, caller: str, expected: int | None = None) -> np.ndarray:
    """Mean over replications of `metric` per point, as an array indexed by point_id."""
    _check_columns(outcomes, ["point_id", "metric", "value"], caller)
    rows = outcomes[outcomes["metric"] == metric]
    if rows.empty:
        known = ", ".join(sorted(map(str, outcomes["metric"].unique())))
        raise ValueError(f"{caller}: no outcomes for metric {metric!r}; metrics present: {known}")
    means = rows["value"].astype(float).groupby(rows["point_id"]).mean()
    count = expected if expected is not None else int(means.index.max()) + 1
    means = means.reindex(range(count))
    missing = means.index[means.isna()].tolist()
    if missing or len(means) != rows["point_id"].nunique():
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{caller}: metric {metric!r} needs a value at every point_id 0..{count - 1} in sampler order; "
            f"missing or all-NaN: {shown or 'none'}; outcomes hold {rows['point_id'].nunique()} distinct point_ids"
        )
    return means.to_numpy()


def _check_columns(outcomes: pd.DataFrame, columns: Sequence[str], caller: str) -> None:
    missing = [c for c in columns if c not in outcomes.columns]
    if missing:
        raise ValueError(f"{caller}: outcomes lack column(s) {', '.join(missing)}; has {', '.join(map(str, outcomes.columns))}")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}")
