"""Altair chart builders, each fed by the DataFrame of one commonpool.metrics function
(or, for sweeps, of commonpool.experiments.results).

Builders only draw: the numbers come from metrics (DuckDB over the store), so
a chart and a test read the same figures. Inputs are aggregates (windows,
pairs, personalities), never one row per exchange, with two exceptions that
are reduced here before drawing: the trade network keeps its busiest edges,
and facilitator adherence is binned into a grid. Every chart stays well under
Altair's 5,000-row limit whatever the size of the run.
"""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

from commonpool.personalities import BUILTIN
from commonpool.store.schema import OUTCOME_LABELS, OUTCOMES

# The built-in personalities keep one colour on every chart and page; custom
# ones take the next colours of the same scheme.
PERSONALITY_DOMAIN: list[str] = list(BUILTIN)
_SCHEME = "tableau10"

# A network drawing with more edges than this is a hairball; the busiest edges
# carry the picture.
MAX_NETWORK_EDGES = 400
# More participants than this make the circle a solid ring: the busiest traders
# are drawn, and the title says how many of how many.
MAX_NETWORK_NODES = 120

# Width follows the page column; the height asked for is the plot's, and the
# title, axes and legends are added to it. Without this Streamlit fits the
# whole chart, legend included, into the height, and a tall legend clips the
# chart and spills over the next one.
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")
# Counts are whole numbers: no 0.5 ticks, no 9.000000.
COUNT_AXIS = alt.Axis(format=",d", tickMinStep=1)
COUNT_LEGEND = alt.Legend(format=",d", tickMinStep=1)
WINDOW_AXIS = alt.Axis(format="d", tickMinStep=1, title="window")
PERIOD_AXIS = alt.Axis(format="d", tickMinStep=1, title="period")


def _over(column: str) -> alt.X:
    """The time axis of a chart: equal windows of exchanges, or the periods of a living run."""
    return alt.X(f"{column}:Q", axis=PERIOD_AXIS if column == "period" else WINDOW_AXIS)


def fitted(chart: alt.Chart | alt.LayerChart) -> alt.Chart | alt.LayerChart:
    """A single or layered chart as wide as its column (facets and concatenations cannot follow a column)."""
    return chart.properties(width="container", autosize=FIT_WIDTH)


def bottom_legend(columns: int, title: str | None = None, label_limit: int = 180) -> alt.Legend:
    """A legend under the plot, in columns, so it never makes the chart wider or taller than asked."""
    return alt.Legend(orient="bottom", columns=columns, labelLimit=label_limit, title=title, symbolLimit=0)


def personality_color(personalities: list[str], title: str = "personality") -> alt.Color:
    """Colour by personality, built-ins first so they keep their colours across runs."""
    domain = PERSONALITY_DOMAIN + sorted(set(personalities) - set(PERSONALITY_DOMAIN))
    return alt.Color("personality:N", title=title, scale=alt.Scale(domain=domain, scheme=_SCHEME))


def activity_chart(activity: pd.DataFrame) -> alt.LayerChart:
    """Acceptance rate (left axis) and mean turns (right axis) window by window; from metrics.activity.

    Windows are equal slices of the run, so their exchange counts are flat and not drawn.
    """
    base = alt.Chart(activity).encode(x=alt.X("first_exchange:Q", title="exchange # (start of window)",
                                              axis=COUNT_AXIS))
    tooltip = ["window", alt.Tooltip("first_exchange:Q", format=","), alt.Tooltip("last_exchange:Q", format=","),
               alt.Tooltip("exchanges:Q", format=","), alt.Tooltip("accepted:Q", format=","),
               alt.Tooltip("acceptance_rate:Q", format=".1%"), alt.Tooltip("mean_turns:Q", format=".2f")]
    rate = base.mark_line(point=alt.OverlayMarkDef(color="#1f77b4"), color="#1f77b4").encode(
        y=alt.Y("acceptance_rate:Q", title="acceptance rate (blue)", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        tooltip=tooltip,
    )
    turns = base.mark_line(point=alt.OverlayMarkDef(color="#ff7f0e"), color="#ff7f0e", strokeDash=[4, 3]).encode(
        y=alt.Y("mean_turns:Q", title="mean turns (orange)", scale=alt.Scale(zero=True)),
        tooltip=tooltip,
    )
    return fitted(alt.layer(rate, turns).resolve_scale(y="independent").properties(
        title="Activity and acceptance over the run", height=260
    ))


# One colour per outcome, in schema.OUTCOMES order: agreement green, the two ways
# of parting grey, the two failures warm.
OUTCOME_COLOURS = ["#2ca02c", "#9e9e9e", "#cfcfcf", "#ff7f0e", "#d62728"]


def agreement_by_turn_chart(by_turn: pd.DataFrame) -> alt.Chart:
    """When negotiations end, and how: exchanges per turn and outcome; from metrics.agreement_by_turn."""
    present = [o for o in OUTCOMES if o in by_turn and by_turn[o].sum() > 0] or ["accepted"]
    folded = by_turn.melt(id_vars=["turn"], value_vars=present, var_name="outcome", value_name="exchanges")
    folded["outcome"] = folded["outcome"].map(OUTCOME_LABELS)
    labels = [OUTCOME_LABELS[o] for o in OUTCOMES]
    return fitted(alt.Chart(folded).mark_bar().encode(
        x=alt.X("turn:O", title="turn the exchange ended", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("exchanges:Q", stack=True, axis=COUNT_AXIS),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=labels, range=OUTCOME_COLOURS),
                        legend=bottom_legend(3, "outcome", 220)),
        tooltip=["turn", "outcome", alt.Tooltip("exchanges:Q", format=",")],
    ).properties(title="Turns to the end of a negotiation", height=220))


def holdings_charts(holdings: pd.DataFrame, over: str = "window") -> list[alt.Chart]:
    """Units of each resource held by each personality group, window by window (or period by
    period, over="period"), one chart per personality (a facet cannot follow the page's width);
    from metrics.holdings_over_time (metrics.holdings_by_period).

    Every chart colours the resources alike, so one legend reads for all.
    """
    resources = sorted(holdings["resource"].unique())
    charts = []
    for personality, rows in holdings.groupby("personality", sort=True):
        charts.append(fitted(alt.Chart(rows).mark_line(point=over == "period").encode(
            x=_over(over),
            y=alt.Y("quantity:Q", title="units held", axis=COUNT_AXIS),
            color=alt.Color("resource:N", scale=alt.Scale(scheme="category20", domain=resources),
                            legend=bottom_legend(2, None, 150)),
            tooltip=[over, "personality", "resource", alt.Tooltip("quantity:Q", format=",")],
        ).properties(title=f"Holdings of the {personality} members", height=200)))
    return charts


def _busiest_pairs(dispersion: pd.DataFrame, top: int) -> pd.DataFrame:
    pairs = dispersion[dispersion["pair"] != "all"]
    busiest = pairs.groupby("pair")["trades"].sum().nlargest(top).index
    return pairs[pairs["pair"].isin(busiest)]


def rates_chart(dispersion: pd.DataFrame, top_pairs: int = 8, over: str = "window") -> alt.Chart:
    """Mean exchange rate of the busiest resource pairs over time (log scale); from
    metrics.price_dispersion (or metrics.prices_by_period, over="period")."""
    pairs = _busiest_pairs(dispersion, top_pairs).dropna(subset=["mean_log_rate"])
    pairs = pairs.assign(rate=np.exp(pairs["mean_log_rate"]))
    return fitted(alt.Chart(pairs).mark_line(point=True).encode(
        x=_over(over),
        y=alt.Y("rate:Q", title="units of the first per unit of the second", scale=alt.Scale(type="log")),
        color=alt.Color("pair:N", legend=bottom_legend(2, "pair (first/second)", 280)),
        tooltip=[over, "pair", alt.Tooltip("trades:Q", format=","), alt.Tooltip("rate:Q", format=".2f")],
    ).properties(title=f"Exchange rates of the {top_pairs} busiest pairs", height=280))


def spread_chart(dispersion: pd.DataFrame, over: str = "window") -> alt.Chart:
    """Price dispersion over time: the standard deviation of log rates; from metrics.price_dispersion
    (or metrics.prices_by_period, over="period")."""
    spread = dispersion[dispersion["pair"] == "all"].dropna(subset=["sd_log_rate"])
    return fitted(alt.Chart(spread).mark_line(point=alt.OverlayMarkDef(color="#d62728"), color="#d62728").encode(
        x=_over(over),
        y=alt.Y("sd_log_rate:Q", title="sd of log rate (all pairs)"),
        tooltip=[over, alt.Tooltip("trades:Q", format=","), alt.Tooltip("df:Q", format=",", title="degrees of freedom"),
                 alt.Tooltip("sd_log_rate:Q", format=".3f")],
    ).properties(title="Spread of exchange rates over time", height=220))


# What each period chart draws from metrics.by_period: column -> (title, y axis format).
PERIOD_FIGURES: dict[str, tuple[str, str]] = {
    "accepted": ("Accepted trades per period", ",d"),
    "fulfilment": ("Need met per period (share of needed units consumed)", "%"),
    "mean_utility": ("Mean utility per period (consumption and holding)", ",.2f"),
    "consumption_gini": ("Gini of consumption per period", ".2f"),
    "repeat_share": ("Repeat partners per period (pairs that traded before)", "%"),
}


def period_charts(by_period: pd.DataFrame) -> list[alt.Chart]:
    """One line chart per figure of metrics.by_period, period on the x axis; a figure a period
    does not have (no trades, nobody consumed) is left out, not drawn as 0."""
    charts = []
    for column, (title, fmt) in PERIOD_FIGURES.items():
        rows = by_period[["period", column]].dropna()
        charts.append(fitted(alt.Chart(rows).mark_line(point=True).encode(
            x=_over("period"),
            y=alt.Y(f"{column}:Q", title=column.replace("_", " "), axis=alt.Axis(format=fmt),
                    scale=alt.Scale(zero=True)),
            tooltip=["period", alt.Tooltip(f"{column}:Q", format=fmt if fmt != "%" else ".1%")],
        ).properties(title=title, height=220)))
    return charts


def holdings_in_period_chart(holdings: pd.DataFrame, period: int) -> alt.Chart:
    """Units of each resource held by each personality group when one period's trading ends;
    from metrics.holdings_by_period."""
    rows = holdings[holdings["period"] == period]
    return fitted(alt.Chart(rows).mark_bar().encode(
        x=alt.X("resource:N", title=None, axis=alt.Axis(labelAngle=-30, labelLimit=140)),
        y=alt.Y("quantity:Q", title="units held", stack=True, axis=COUNT_AXIS),
        color=personality_color(rows["personality"].unique().tolist()).legend(bottom_legend(3)),
        tooltip=["personality", "resource", alt.Tooltip("quantity:Q", format=",")],
    ).properties(title=f"Holdings as period {period}'s trading ends", height=260))


def circle_layout(nodes: pd.DataFrame) -> pd.DataFrame:
    """Nodes on a circle, grouped by personality, so same-personality links show as short chords."""
    ordered = nodes.sort_values(["personality", "participant_id"]).reset_index(drop=True)
    angle = 2 * math.pi * np.arange(len(ordered)) / max(len(ordered), 1)
    return ordered.assign(x=np.cos(angle), y=np.sin(angle))


def busiest_participants(nodes: pd.DataFrame, max_nodes: int = MAX_NETWORK_NODES) -> pd.DataFrame:
    """The max_nodes members with the most trades (then partners): those network_chart draws."""
    return nodes if len(nodes) <= max_nodes else nodes.nlargest(max_nodes, ["trades", "degree"])


def network_chart(nodes: pd.DataFrame, edges: pd.DataFrame, max_edges: int = MAX_NETWORK_EDGES,
                  max_nodes: int = MAX_NETWORK_NODES) -> alt.LayerChart:
    """Who trades with whom: participants coloured by personality, links as thick as their trades.

    From metrics.network_nodes and metrics.network_edges; only pairs that traded
    are drawn, and of those the max_edges busiest. A community of more than
    max_nodes members is drawn as its max_nodes busiest traders and the links
    between them: a thousand dots on a circle are a solid ring that says nothing.
    """
    everyone = len(nodes)
    if everyone > max_nodes:
        nodes = busiest_participants(nodes, max_nodes)
        kept = set(nodes["participant_id"])
        edges = edges[edges["a"].isin(kept) & edges["b"].isin(kept)]
    placed = circle_layout(nodes)
    where = placed.set_index("participant_id")[["x", "y"]]
    traded = edges[edges["trades"] > 0].nlargest(max_edges, "trades")
    links = traded.join(where, on="a").join(where.rename(columns={"x": "x2", "y": "y2"}), on="b")
    axis = alt.Axis(title=None, labels=False, ticks=False, grid=False, domain=False)
    lines = alt.Chart(links).mark_rule(opacity=0.35, color="#666").encode(
        x=alt.X("x:Q", axis=axis), y=alt.Y("y:Q", axis=axis), x2="x2:Q", y2="y2:Q",
        strokeWidth=alt.StrokeWidth("trades:Q", scale=alt.Scale(range=[0.5, 5]), legend=None),
        tooltip=["a_name", "b_name", "meetings", "trades"],
    )
    dots = alt.Chart(placed).mark_circle(opacity=0.9).encode(
        x=alt.X("x:Q", axis=axis), y=alt.Y("y:Q", axis=axis),
        color=personality_color(placed["personality"].tolist()),
        size=alt.Size("trades:Q", scale=alt.Scale(range=[30, 400]), title="trades", legend=COUNT_LEGEND),
        tooltip=["name", "personality", "degree", alt.Tooltip("trades:Q", format=","),
                 alt.Tooltip("clustering:Q", format=".2f")],
    )
    pairs = int((edges["trades"] > 0).sum())
    shown = []
    if len(nodes) < everyone:
        shown.append(f"the {len(nodes):,} busiest of {everyone:,} participants")
    if len(traded) < pairs:
        shown.append(f"the {len(traded):,} busiest of {pairs:,} pairs")
    title = "Who trades with whom" + (f" ({'; '.join(shown)})" if shown else "")
    return alt.layer(lines, dots).properties(
        title=alt.TitleParams(title, limit=0), height=460, width=460
    ).configure_view(strokeWidth=0)


def pairing_heatmap(matrix: pd.DataFrame) -> alt.LayerChart:
    """Exchanges and acceptance between personalities (initiator x responder); from metrics.pairing_matrix.

    The colour spans the acceptance rates present, not 0 to 100%: in a large run
    every cell pools thousands of exchanges and the rates sit close together, so
    a fixed scale paints them one pale shade. The legend gives the span.
    """
    rates = matrix["acceptance_rate"].dropna()
    low, high = (float(rates.min()), float(rates.max())) if len(rates) else (0.0, 1.0)
    if high - low < 0.01:
        low, high = max(0.0, low - 0.005), min(1.0, high + 0.005)
    middle = (low + high) / 2
    base = alt.Chart(matrix).encode(
        x=alt.X("personality_b:N", title="responder personality", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("personality_a:N", title="initiator personality"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("acceptance_rate:Q", title="acceptance",
                        scale=alt.Scale(scheme="blues", domain=[low, high], clamp=True),
                        legend=alt.Legend(format=".0%", orient="bottom", gradientLength=160)),
        tooltip=["personality_a", "personality_b", alt.Tooltip("exchanges:Q", format=","),
                 alt.Tooltip("acceptance_rate:Q", format=".1%"),
                 alt.Tooltip("mean_gain_a:Q", format=".2f"), alt.Tooltip("mean_gain_b:Q", format=".2f")],
    )
    labels = base.mark_text(baseline="middle").encode(
        text=alt.Text("exchanges:Q", format=","),
        color=alt.condition(f"datum.acceptance_rate > {middle}", alt.value("white"), alt.value("black")),
    )
    return fitted(alt.layer(cells, labels).properties(
        title=alt.TitleParams("Personalities: exchanges (number), acceptance (colour)", limit=0), height=260
    ))


def participant_heatmap(nodes: pd.DataFrame, edges: pd.DataFrame) -> alt.Chart:
    """Trades between each pair of participants, grouped by personality; for small runs.

    Both halves of the symmetric matrix are drawn, and each row is labelled with
    its personality by a colour strip on the left.
    """
    order = circle_layout(nodes)[["participant_id", "name", "personality"]]
    label = order.assign(label=order["name"] + " #" + order["participant_id"].astype(str))
    names = label.set_index("participant_id")["label"]
    both = pd.concat(
        [edges[["a", "b", "trades", "meetings"]],
         edges[["b", "a", "trades", "meetings"]].rename(columns={"b": "a", "a": "b"})]
    )
    both = both.assign(row=both["a"].map(names), column=both["b"].map(names))
    sort = label["label"].tolist()
    cells = alt.Chart(both).mark_rect().encode(
        x=alt.X("column:N", sort=sort, title=None, axis=alt.Axis(labelAngle=-60)),
        y=alt.Y("row:N", sort=sort, title=None, axis=None),
        color=alt.Color("trades:Q", scale=alt.Scale(scheme="greens"), legend=COUNT_LEGEND),
        tooltip=["row", "column", "meetings", "trades"],
    ).properties(width=340, height=340)
    strip = alt.Chart(label).mark_rect().encode(
        y=alt.Y("label:N", sort=sort, title=None),
        color=personality_color(label["personality"].tolist()),
        tooltip=["label", "personality"],
    ).properties(width=12, height=340)
    return alt.hconcat(strip, cells, spacing=2).resolve_scale(color="independent").properties(
        title="Trades between participants (rows and columns grouped by personality)"
    )


BY_PERSONALITY_MEASURES: dict[str, str] = {
    "utility_gain": "utility gain per member",
    "acceptance_rate": "acceptance rate",
    "surplus_share": "share of deal surplus",
    "need_fulfilment_final": "needs met at the end",
}


# Measures that are shares of a whole, drawn as percentages.
_SHARE_MEASURES = {"acceptance_rate", "surplus_share", "need_fulfilment_final"}


def by_personality_charts(by_personality: pd.DataFrame) -> list[alt.Chart]:
    """Outcomes of each personality side by side, one chart per measure (a facet cannot follow
    the page's width); from metrics.by_personality. The x axis names the personality, so no legend."""
    charts = []
    for measure, title in BY_PERSONALITY_MEASURES.items():
        fmt = ".0%" if measure in _SHARE_MEASURES else ",.2f"
        charts.append(fitted(alt.Chart(by_personality).mark_bar().encode(
            x=alt.X("personality:N", title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{measure}:Q", title=None, axis=alt.Axis(format=fmt.replace(".2f", ".1f"))),
            color=personality_color(by_personality["personality"].tolist()).legend(None),
            tooltip=["personality", alt.Tooltip("participants:Q", format=","),
                     alt.Tooltip(f"{measure}:Q", title=title, format=fmt.replace(".0%", ".1%"))],
        ).properties(title=title, height=200)))
    return charts


def _line_of_equality() -> alt.Chart:
    """The Lorenz curve of a perfectly equal community, drawn dashed for reference."""
    equality = pd.DataFrame({"population_share": [0.0, 1.0], "value_share": [0.0, 1.0]})
    return alt.Chart(equality).mark_line(strokeDash=[4, 4], color="#999").encode(
        x="population_share:Q", y="value_share:Q"
    )


def lorenz_chart(lorenz: pd.DataFrame, title: str = "Lorenz curve") -> alt.LayerChart:
    """Initial and final Lorenz curves against the line of equality; from metrics.lorenz."""
    diagonal = _line_of_equality()
    curves = alt.Chart(lorenz).mark_line().encode(
        x=alt.X("population_share:Q", title="share of participants (poorest first)", axis=alt.Axis(format="%")),
        y=alt.Y("value_share:Q", title="share of the total", axis=alt.Axis(format="%")),
        color=alt.Color("when:N", scale=alt.Scale(domain=["initial", "final"], range=["#aaa", "#1f77b4"]),
                        legend=bottom_legend(2)),
        tooltip=["when", alt.Tooltip("population_share:Q", format=".0%"), alt.Tooltip("value_share:Q", format=".1%")],
    )
    return fitted(alt.layer(diagonal, curves).properties(title=title, height=300))


def adherence_bins(adherence: pd.DataFrame, step: float = 0.25) -> pd.DataFrame:
    """Accepted deals counted on a grid of (suggested, agreed) log rates, step wide."""
    rates = adherence.dropna(subset=["suggested_log_rate", "agreed_log_rate"])
    grid = pd.DataFrame(
        {
            "suggested": (np.round(rates["suggested_log_rate"] / step) * step).round(6),
            "agreed": (np.round(rates["agreed_log_rate"] / step) * step).round(6),
        }
    )
    return grid.value_counts().rename("deals").reset_index()


def adherence_chart(adherence: pd.DataFrame) -> alt.LayerChart:
    """Agreed against suggested log rate of each accepted deal, binned; from metrics.facilitator_adherence.

    Deals on the diagonal did what the facilitator suggested.
    """
    bins = adherence_bins(adherence)
    low = float(min(bins["suggested"].min(), bins["agreed"].min())) if len(bins) else -1.0
    high = float(max(bins["suggested"].max(), bins["agreed"].max())) if len(bins) else 1.0
    cells = alt.Chart(bins).mark_square().encode(
        x=alt.X("suggested:Q", title="suggested log rate"),
        y=alt.Y("agreed:Q", title="agreed log rate"),
        size=alt.Size("deals:Q", scale=alt.Scale(range=[20, 600]), legend=COUNT_LEGEND),
        color=alt.Color("deals:Q", scale=alt.Scale(scheme="purples"), legend=COUNT_LEGEND),
        tooltip=["suggested", "agreed", alt.Tooltip("deals:Q", format=",")],
    )
    diagonal = alt.Chart(pd.DataFrame({"x": [low, high]})).mark_line(strokeDash=[4, 4], color="#999").encode(
        x="x:Q", y="x:Q"
    )
    return fitted(alt.layer(cells, diagonal).properties(title="Facilitator adherence: agreed vs suggested", height=320))


# --- several runs at once (the Compare page) -------------------------------------------------------


def run_color(frame: pd.DataFrame) -> alt.Color:
    """Colour by the `run` column (what sets each run apart), in the order the runs were chosen,
    the legend under the plot with one label per line so a long label is not cut."""
    order = frame["run"].drop_duplicates().tolist()
    return alt.Color("run:N", sort=order, scale=alt.Scale(domain=order, scheme=_SCHEME),
                     legend=bottom_legend(1, "run", 600))


def compare_activity_chart(activity: pd.DataFrame) -> alt.Chart:
    """Acceptance rate over each run's windows, one line per run; activity frames with run_id and run columns."""
    return fitted(alt.Chart(activity).mark_line(point=True).encode(
        x=alt.X("window:Q", axis=alt.Axis(format="d", tickMinStep=1, title="window (twentieth of the run)")),
        y=alt.Y("acceptance_rate:Q", title="acceptance rate", axis=alt.Axis(format="%")),
        color=run_color(activity),
        tooltip=["run", "run_id", "window", alt.Tooltip("exchanges:Q", format=","),
                 alt.Tooltip("acceptance_rate:Q", format=".1%")],
    ).properties(title="Acceptance over time", height=280))


def compare_lorenz_chart(lorenz: pd.DataFrame) -> alt.LayerChart:
    """Final Lorenz curves of several runs; lorenz frames with run_id and run columns."""
    final = lorenz[lorenz["when"] == "final"]
    diagonal = _line_of_equality()
    curves = alt.Chart(final).mark_line().encode(
        x=alt.X("population_share:Q", title="share of participants", axis=alt.Axis(format="%")),
        y=alt.Y("value_share:Q", title="share of final utility", axis=alt.Axis(format="%")),
        color=run_color(final),
        tooltip=["run", "run_id", alt.Tooltip("value_share:Q", format=".1%")],
    )
    return fitted(alt.layer(diagonal, curves).properties(title="Final Lorenz curves of utility", height=300))


def compare_spread_chart(dispersion: pd.DataFrame) -> alt.Chart:
    """Spread of all exchange rates over time, one line per run; price_dispersion frames with run_id and run."""
    spread = dispersion[dispersion["pair"] == "all"].dropna(subset=["sd_log_rate"])
    return fitted(alt.Chart(spread).mark_line(point=True).encode(
        x=alt.X("window:Q", axis=alt.Axis(format="d", tickMinStep=1, title="window (tenth of the run)")),
        y=alt.Y("sd_log_rate:Q", title="sd of log rate"),
        color=run_color(spread),
        tooltip=["run", "run_id", "window", alt.Tooltip("trades:Q", format=","),
                 alt.Tooltip("sd_log_rate:Q", format=".3f")],
    ).properties(title="Spread of exchange rates", height=280))


def compare_by_personality_chart(by_personality: pd.DataFrame) -> alt.Chart:
    """Utility gain per member of each personality, runs side by side within each personality
    (grouped bars, not a facet, so the chart follows its column); by_personality frames with run_id and run."""
    order = by_personality["run"].drop_duplicates().tolist()
    return fitted(alt.Chart(by_personality).mark_bar().encode(
        x=alt.X("personality:N", title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("run:N", sort=order),
        y=alt.Y("utility_gain:Q", title="utility gain per member"),
        color=run_color(by_personality),
        tooltip=["run", "run_id", "personality", alt.Tooltip("participants:Q", format=","),
                 alt.Tooltip("utility_gain:Q", format=",.2f")],
    ).properties(height=220, title="Gains by personality"))


# --- sweeps (the Sweeps page and Compare's conditions) ---------------------------------------------
# Inputs are the frames of commonpool.experiments.results: one row per point or
# factor level and metric, never one per run, so they stay small.


def _is_numeric_factor(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _as_labels(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Factor values as text (true/false, not True/False), for nominal axes."""
    return frame.assign(**{c: frame[c].map(lambda v: str(v).lower() if isinstance(v, bool) else str(v))
                           for c in columns})


def metric_by_factor_chart(by_factor: pd.DataFrame, factor: str, metric: str, level: float = 0.95) -> alt.LayerChart:
    """Mean of a metric at each value of a factor with its confidence interval; from results.by_factor.

    A numeric factor of three values or more draws the interval as a band around
    the line of means; a categorical one (true/false, names) or a pair of values
    as error bars, since nothing is known between its values.
    """
    rows = by_factor[by_factor["metric"] == metric].dropna(subset=["mean"])
    tooltip = [alt.Tooltip(f"{factor}:N"),
               alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("ci_low:Q", format=".4g"),
               alt.Tooltip("ci_high:Q", format=".4g"), "n:Q"]
    title = f"{metric} by {factor}: mean and {level:.0%} CI"
    y = alt.Y("mean:Q", title=metric, scale=alt.Scale(zero=False))
    if _is_numeric_factor(rows[factor]) and rows[factor].nunique() >= 3:
        whole = bool((rows[factor] % 1 == 0).all())
        axis = alt.Axis(format="d", tickMinStep=1) if whole else alt.Axis()
        base = alt.Chart(rows).encode(x=alt.X(f"{factor}:Q", title=factor, scale=alt.Scale(zero=False), axis=axis))
        band = base.mark_area(opacity=0.25, color="#1f77b4").encode(
            y=alt.Y("ci_low:Q", title=metric), y2="ci_high:Q", tooltip=tooltip)
        line = base.mark_line(point=True, color="#1f77b4").encode(y=y, tooltip=tooltip)
        return alt.layer(band, line).properties(title=title, height=300)
    rows = _as_labels(rows, [factor])
    base = alt.Chart(rows).encode(x=alt.X(f"{factor}:N", title=factor, axis=alt.Axis(labelAngle=0)))
    bars = base.mark_rule(color="#1f77b4", strokeWidth=2).encode(
        y=alt.Y("ci_low:Q", title=metric, scale=alt.Scale(zero=False)), y2="ci_high:Q", tooltip=tooltip)
    caps = [base.mark_tick(color="#1f77b4", thickness=2, size=18).encode(y=alt.Y(f"{end}:Q"), tooltip=tooltip)
            for end in ("ci_low", "ci_high")]
    means = base.mark_point(filled=True, size=90, color="#1f77b4").encode(y=y, tooltip=tooltip)
    return alt.layer(bars, *caps, means).properties(title=title, height=300)


def factor_heatmap_chart(summary: pd.DataFrame, x: str, y: str, metric: str, bins: int = 6) -> alt.LayerChart:
    """Mean of a metric over two factors, pooling any others and the replications; from results.summary.

    Each cell is the mean of the point means weighted by their runs, so it equals the
    mean over every run in that cell. A continuous factor (more than ten values, as
    random, LHS and Sobol designs draw) is cut into `bins` equal-width intervals first.
    """
    rows = summary[(summary["metric"] == metric) & (summary["n"] > 0)]
    x_cells, x_order = _heat_axis(rows[x], bins)
    y_cells, y_order = _heat_axis(rows[y], bins)
    cells = (pd.DataFrame({x: x_cells, y: y_cells, "total": rows["mean"] * rows["n"], "n": rows["n"]})
             .groupby([x, y], as_index=False, observed=True).agg(total=("total", "sum"), n=("n", "sum")))
    cells = cells.assign(mean=cells["total"] / cells["n"]).drop(columns="total")
    base = alt.Chart(cells).encode(
        x=alt.X(f"{x}:O", title=x, sort=x_order, axis=alt.Axis(labelAngle=0 if len(x_order) <= 8 else -30)),
        y=alt.Y(f"{y}:O", title=y, sort=y_order),
    )
    tooltip = [x, y, alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("n:Q", title="runs")]
    rect = base.mark_rect().encode(color=alt.Color("mean:Q", title=metric, scale=alt.Scale(scheme="viridis")),
                                   tooltip=tooltip)
    labels = base.mark_text(fontSize=11).encode(
        text=alt.Text("mean:Q", format=".3g"), tooltip=tooltip,
        # Dark text on the light (high) end of viridis, white on the dark end.
        color=alt.condition(f"datum.mean > {float(cells['mean'].quantile(0.6)) if len(cells) else 0}",
                            alt.value("black"), alt.value("white")),
    )
    # The height holds the title, axes and legend as well as the cells.
    return alt.layer(rect, labels).properties(title=f"Mean {metric} by {x} and {y}",
                                              height=130 + 34 * len(y_order))


# A factor with up to this many values keeps one heatmap row or column per value.
_MAX_HEATMAP_LEVELS = 10


def _heat_axis(values: pd.Series, bins: int) -> tuple[pd.Series, list[str]]:
    """A factor's values as heatmap labels and their order: the values themselves, or equal-width intervals."""
    if _is_numeric_factor(values) and values.nunique() > max(bins, _MAX_HEATMAP_LEVELS):
        cut = pd.cut(values.astype(float), bins=bins)
        names = [f"{interval.left:.3g}–{interval.right:.3g}" for interval in cut.cat.categories]
        return cut.cat.rename_categories(names).astype(str), names
    return values.map(_level_name), _sorted_labels(values)


def paired_differences_charts(paired: pd.DataFrame, factor: str, first: object, second: object,
                              level: float = 0.95) -> list[alt.LayerChart]:
    """Mean paired difference (second minus first level of a factor) with its CI, one chart per
    metric on its own scale with zero marked (a facet of them was 460 px wide whatever the
    column); from results.paired_comparisons. When other factors vary, one coloured interval per
    combination of their values."""
    rows = paired.dropna(subset=["mean_diff"])
    others = [c for c in rows.columns if c not in _PAIRED_COLUMNS]
    groups = len(rows.drop_duplicates(others)) if others else 1
    if others:
        rows = rows.assign(condition=rows[others].apply(
            lambda r: ", ".join(f"{k}={_level_name(v)}" for k, v in r.items()), axis=1))
    tooltip = [*(["condition"] if others else []), "metric", alt.Tooltip("mean_diff:Q", format=".4g"),
               alt.Tooltip("ci_low:Q", format=".4g"), alt.Tooltip("ci_high:Q", format=".4g"), "n:Q",
               alt.Tooltip("sign_p:Q", format=".3g"), alt.Tooltip("wilcoxon_p:Q", format=".3g")]
    colour: dict = {"color": alt.value("#d62728")}
    if others:
        colour = {"color": alt.Color("condition:N", legend=bottom_legend(2, ", ".join(others), 240)),
                  "yOffset": alt.YOffset("condition:N")}
    difference = f"{_level_name(second)} minus {_level_name(first)}"
    charts = []
    for metric, frame in rows.groupby("metric", sort=False):
        base = alt.Chart().encode(tooltip=tooltip, **colour)
        zero = alt.Chart().mark_rule(color="#999", strokeDash=[4, 3]).encode(x=alt.datum(0))
        bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=None, scale=alt.Scale(zero=True)),
                                                    x2="ci_high:Q")
        means = base.mark_point(filled=True, size=60, opacity=1).encode(x=alt.X("mean_diff:Q", title=None))
        charts.append(fitted(alt.layer(zero, bars, means, data=frame).properties(
            title=f"{metric}: {factor} {difference}, paired on seed ({level:.0%} CI)", height=14 + 12 * groups)))
    return charts


_PAIRED_COLUMNS = ("metric", "n", "mean_diff", "sd", "ci_low", "ci_high", "sign_p", "wilcoxon_p", "wins_b", "wins_a")


def _sorted_labels(values: pd.Series) -> list[str]:
    unique = values.drop_duplicates().tolist()
    try:
        unique = sorted(unique)
    except TypeError:
        pass
    return [_level_name(v) for v in unique]


def _level_name(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def sobol_indices_chart(indices: pd.DataFrame, metric: str) -> alt.LayerChart:
    """First-order (S1) and total (ST) Sobol' indices per factor with 95% bootstrap error bars;
    from results.sensitivity of a sobol sweep."""
    long = pd.concat([
        indices[["factor", "S1", "S1_conf"]].rename(columns={"S1": "value", "S1_conf": "conf"}).assign(index="S1 (first order)"),
        indices[["factor", "ST", "ST_conf"]].rename(columns={"ST": "value", "ST_conf": "conf"}).assign(index="ST (total)"),
    ], ignore_index=True)
    long = long.assign(low=long["value"] - long["conf"], high=long["value"] + long["conf"])
    index_color = alt.Color("index:N", title="index", scale=alt.Scale(range=["#1f77b4", "#ff7f0e"]))
    base = alt.Chart(long).encode(
        y=alt.Y("factor:N", title=None, axis=alt.Axis(labelLimit=240)),
        yOffset=alt.YOffset("index:N"),
        tooltip=["factor", "index", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("conf:Q", format=".3f")],
    )
    bars = base.mark_bar().encode(x=alt.X("value:Q", title="share of the metric's variance"), color=index_color)
    errors = base.mark_rule(color="black").encode(x="low:Q", x2="high:Q")
    return alt.layer(bars, errors).properties(
        title=f"Sobol' indices of {metric} (95% CI)", height=110 + 48 * len(indices))


def morris_chart(indices: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Morris screening: mu* (mean absolute elementary effect) against sigma per factor; from results.sensitivity.

    Far right: influential; high up: non-linear or interacting with other factors.
    """
    base = alt.Chart(indices).encode(
        x=alt.X("mu_star:Q", title="mu* (importance)"),
        y=alt.Y("sigma:Q", title="sigma (non-linearity, interactions)"),
        tooltip=["factor", alt.Tooltip("mu:Q", format=".4g"), alt.Tooltip("mu_star:Q", format=".4g"),
                 alt.Tooltip("mu_star_conf:Q", format=".4g"), alt.Tooltip("sigma:Q", format=".4g")],
    )
    points = base.mark_point(filled=True, size=80, color="#9467bd")
    errors = base.mark_rule(color="#9467bd").encode(
        x=alt.X("low:Q"), x2="high:Q").transform_calculate(
        low="datum.mu_star - datum.mu_star_conf", high="datum.mu_star + datum.mu_star_conf")
    labels = base.mark_text(align="left", dx=7, dy=-7).encode(text="factor:N")
    return alt.layer(errors, points, labels).properties(title=f"Morris screening of {metric}", height=320)


def conditions_chart(conditions: pd.DataFrame, metric: str, level: float = 0.95) -> alt.LayerChart:
    """Mean of a metric per condition (point of a sweep) with its CI; results.summary rows with a `condition` label."""
    rows = conditions[conditions["metric"] == metric]
    order = rows["condition"].drop_duplicates().tolist()
    tooltip = ["condition", alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("ci_low:Q", format=".4g"),
               alt.Tooltip("ci_high:Q", format=".4g"), "n:Q"]
    base = alt.Chart(rows).encode(
        y=alt.Y("condition:N", title=None, sort=order, axis=alt.Axis(labelLimit=320)),
        color=alt.Color("condition:N", title="condition", sort=order, legend=None),
        tooltip=tooltip,
    )
    # stack=None: with a colour per condition Vega-Lite would otherwise stack the intervals end to end.
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=metric, scale=alt.Scale(zero=False), stack=None), x2="ci_high:Q")
    means = base.mark_point(filled=True, size=90).encode(x=alt.X("mean:Q", stack=None))
    return alt.layer(bars, means).properties(
        title=f"{metric}: mean and {level:.0%} CI per condition", height=110 + 40 * len(order))


def mrs_spread_chart(mrs_dispersion: pd.DataFrame) -> alt.Chart:
    """How far apart holders value goods: pooled SD of log MRS across holders of both goods, at the start and
    after each window, with holders and degrees of freedom; from metrics.mrs_dispersion (withheld moments,
    too few holders, are left out, not drawn as 0)."""
    spread = mrs_dispersion[mrs_dispersion["pair"] == "all"].dropna(subset=["sd_log_mrs"])
    return fitted(alt.Chart(spread).mark_line(point=alt.OverlayMarkDef(color="#9467bd"), color="#9467bd").encode(
        x=alt.X("after_exchange:Q", title="after exchange #", axis=COUNT_AXIS),
        y=alt.Y("sd_log_mrs:Q", title="sd of log MRS (all pairs)", scale=alt.Scale(zero=True)),
        tooltip=[alt.Tooltip("after_exchange:Q", format=","), alt.Tooltip("holders:Q", format=","),
                 alt.Tooltip("df:Q", format=",", title="degrees of freedom"), alt.Tooltip("sd_log_mrs:Q", format=".3f")],
    ).properties(title="Spread of marginal rates of substitution across holders", height=220))


def mrs_price_chart(mrs_prices: pd.DataFrame) -> alt.Chart:
    """Per window, the mean over trades of how far apart the two traders' log MRS were (mrs_gap) and how far
    the agreed log rate was from the trade's MRS price; from metrics.mrs_prices, one row per trade, reduced
    to one row per window here so the chart stays small whatever the run's size."""
    per_window = mrs_prices.groupby("window").agg(
        trades=("exchange_id", "size"),
        traders_apart=("mrs_gap", "mean"),
        rate_from_mrs_price=("log_rate", lambda r: (r - mrs_prices.loc[r.index, "log_mrs_price"]).abs().mean()),
    ).reset_index()
    folded = per_window.melt(id_vars=["window", "trades"], value_vars=["traders_apart", "rate_from_mrs_price"],
                             var_name="measure", value_name="mean_abs_log")
    return fitted(alt.Chart(folded).mark_line(point=True).encode(
        x=alt.X("window:Q", axis=WINDOW_AXIS),
        y=alt.Y("mean_abs_log:Q", title="mean |difference of logs|", scale=alt.Scale(zero=True)),
        color=alt.Color("measure:N", title=None, scale=alt.Scale(
            domain=["traders_apart", "rate_from_mrs_price"], range=["#9467bd", "#8c564b"])),
        tooltip=["window", "trades", "measure", alt.Tooltip("mean_abs_log:Q", format=".3f")],
    ).properties(title="MRS of the two traders, and the deal's rate against their MRS price", height=220))
