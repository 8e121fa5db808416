"""A stored sweep, read back: its design, its outcomes, and their analysis.

Everything here reads the store only (run_metrics rows and the sweep's
design.json), so a finished sweep is re-analysed without re-running anything.
The CLI (`commonpool sweep show/export`), the Sweeps page and the tests all ask
these functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from commonpool.experiments import analysis
from commonpool.experiments.spec import ExperimentSpec, parse_spec
from commonpool.experiments.sweep import sweep_dir
from commonpool.store import Store


@dataclass
class SweepData:
    """One sweep: its spec, its design (points in sampler order) and the outcomes of its completed runs."""

    sweep_id: str
    spec: ExperimentSpec
    points: list[dict[str, Any]]
    unit: list[list[float]] | None
    outcomes: pd.DataFrame  # run_id, point_id, replication, metric, value, then one column per factor

    @property
    def factors(self) -> list[str]:
        return list(self.spec.factors)

    @property
    def metrics(self) -> list[str]:
        return sorted(self.outcomes["metric"].unique())


def load(store: Store, sweep_id: str) -> SweepData:
    """The sweep's spec, design and outcomes; RunNotFoundError-like LookupError if there is no such sweep."""
    info = store.sweep(sweep_id)
    spec = parse_spec(info.meta["spec"])
    design = json.loads((sweep_dir(store, sweep_id) / "design.json").read_text())
    points: list[dict[str, Any]] = design["points"]
    frame = _metrics_of(store, sweep_id)
    factor_frame = pd.DataFrame(points, columns=list(spec.factors)) if spec.factors else pd.DataFrame(index=range(len(points)))
    factor_frame["point_id"] = range(len(points))
    outcomes = frame.merge(factor_frame, on="point_id", how="left")
    return SweepData(sweep_id, spec, points, design.get("unit"), outcomes)


def _metrics_of(store: Store, sweep_id: str) -> pd.DataFrame:
    """run_metrics of the sweep's completed runs, reading only its runs' folders (one scan of them)."""
    columns = ["run_id", "point_id", "replication", "metric", "value"]
    con = store.connect(prefix=f"{sweep_id}-p")
    try:
        return con.execute(
            "SELECT m.run_id, r.point_id, r.replication, m.metric, m.value "
            "FROM run_metrics AS m JOIN runs AS r USING (run_id) WHERE r.sweep_id = ? AND r.status = 'completed' "
            "ORDER BY r.point_id, r.replication, m.metric",
            [sweep_id],
        ).df()[columns]
    finally:
        con.close()


def summary(data: SweepData, level: float = 0.95, bootstrap: int = 0) -> pd.DataFrame:
    """Mean, SD, n and CI of every metric at every point, with the point's factor values."""
    by = ["point_id", *data.factors]
    return analysis.summarize(data.outcomes, by=by, level=level, bootstrap=bootstrap, seed=int(data.spec.seed or 0))


def by_factor(data: SweepData, factor: str, level: float = 0.95, bins: int | None = None) -> pd.DataFrame:
    """Every metric against one factor, pooling the other factors: for a chart of a metric and its CI band.

    With bins, a numeric factor with more distinct values than that (a continuous
    factor of a random, LHS or Sobol design) is pooled into that many equal-width
    bins, each labelled by its middle.
    """
    outcomes = data.outcomes
    values = outcomes[factor]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if bins is not None and numeric and values.nunique() > bins:
        middle = pd.cut(values, bins=bins).map(lambda interval: interval.mid).astype(float)
        outcomes = outcomes.drop(columns=analysis.factor_columns(outcomes)).assign(**{factor: middle})
    return analysis.summarize(outcomes, by=[factor], level=level)


def paired_comparisons(data: SweepData, level: float = 0.95) -> dict[str, pd.DataFrame]:
    """For each factor with exactly two levels in a grid: the paired difference
    (second level minus first) per metric, matched on seed (replication) and the other factors."""
    if data.spec.sampler != "grid" or data.outcomes.empty:
        return {}
    result = {}
    for name, factor in data.spec.factors.items():
        if isinstance(factor, list) and len(factor) == 2:
            result[name] = analysis.paired(data.outcomes, name, factor[0], factor[1], level=level)
    return result


def sensitivity(data: SweepData, metric: str) -> pd.DataFrame | None:
    """Sobol indices (sampler sobol) or Morris mu*/sigma (sampler morris) of one metric; None for other samplers."""
    factors = data.spec.factor_list()
    outcomes = data.outcomes
    if data.spec.sampler == "sobol":
        return analysis.sobol_indices(outcomes, factors, metric, calc_second_order=data.spec.second_order,
                                      seed=int(data.spec.seed or 0))
    if data.spec.sampler == "morris" and data.unit is not None:
        return analysis.morris_indices(outcomes, factors, metric, np.asarray(data.unit), seed=int(data.spec.seed or 0),
                                       num_levels=data.spec.morris_levels)
    return None
