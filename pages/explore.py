"""Explore a run: headline figures, charts, and the exchange log read as conversations."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from commonpool import charts, metrics
from commonpool.metrics import MIN_DISPERSION_DF
from commonpool.exchange_log import ending_text, log_page, swap_text, transcript
from commonpool.store.schema import OUTCOME_LABELS, OUTCOMES
from pages._shared import data_version, downloads, metric, pick_run, plain, show_table, store

# Above this many participants the participant-by-participant heatmap is unreadable;
# the network and the personality heatmap still show who trades with whom.
MAX_HEATMAP_PARTICIPANTS = 60

st.title("Explore a run")
runs = store().runs()
info = pick_run(runs)
if info is None:
    st.info("No runs yet: start one on the New simulation page.")
    st.stop()
run_id = info.run_id
con = store().connect([run_id])  # this run's files only, however many runs the store holds
version = data_version(info)


def m(name: str, **kwargs: Any) -> Any:
    return metric(con, name, run_id, version, **kwargs)


def figure(value: float | None, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def change(initial: float | None, final: float | None, fmt: str) -> str | None:
    if initial is None or final is None:
        return None
    return format(final - initial, "+" + fmt)


def change_in_points(initial: float | None, final: float | None) -> str | None:
    """The change of a share in percentage points: 41.8% -> 90.2% is +48.4 pp, not +48.4%."""
    if initial is None or final is None:
        return None
    return f"{(final - initial) * 100:+.1f} pp"


# A run of several periods gets a Periods tab and period sliders; a one-period run's page is as it was.
periods = m("run_periods")

if info.status == "running":
    st.warning("This run is still going: the figures cover the exchanges recorded so far.")
elif info.status != "completed":
    st.warning(plain(f"This run is {info.status}: the figures cover the exchanges it recorded."))

s = m("summary")
if not s.get("exchanges"):
    st.info("This run has no exchanges recorded yet.")
    st.stop()

# --- headline figures -------------------------------------------------------------------------------
# A row that wraps: each figure as wide as its text, so none is ever cut to "+25…" (two rows at 1,000 px).
headline = st.container(horizontal=True, wrap=True, gap="medium")


def figure_box(*args: Any, **kwargs: Any) -> None:
    headline.metric(*args, width="content", **kwargs)


figure_box("Acceptance rate", figure(s["acceptance_rate"], ".1%"),
           help=f"{s['accepted']:,} accepted of {s['exchanges']:,} exchanges")
figure_box("Welfare change", figure(s["welfare_change"], "+,.1f"),
           help="Sum of utilities at the end minus at the start (economy.utility)")
# Needs recur and are consumed each period, so in a run of several what is held after the last
# consumption says nothing of needs met: the periods' own figures do.
need = m("need_fulfilment_by_period")["fulfilment"] if periods > 1 else []
if len(need):
    figure_box("Needs met per period", figure(need.mean(), ".1%"), change_in_points(need.iloc[0], need.iloc[-1]),
               help="Share of each period's needed units consumed, the mean over the periods "
                    "(change from the first period to the last; see the Periods tab)")
else:
    figure_box("Needs met", figure(s["need_fulfilment_final"], ".1%"),
               change_in_points(s["need_fulfilment_initial"], s["need_fulfilment_final"]),
               help="Share of needed units held, at the end (change since the start)")
figure_box("Gini of holdings", figure(s["gini_holdings_final"], ".3f"),
           change(s["gini_holdings_initial"], s["gini_holdings_final"], ".3f"), delta_color="inverse",
           help="0 = everyone holds the same value; at the end (change since the start)")
figure_box("Gini of utility", figure(s["gini_utility_final"], ".3f"),
           change(s["gini_utility_initial"], s["gini_utility_final"], ".3f"), delta_color="inverse")
if s.get("llm_calls"):
    figure_box("LLM cost", f"${s['cost_usd']:.4f}", help=f"{s['llm_calls']:,} calls")
else:
    figure_box("Turns to agree", figure(s["mean_turns_to_agreement"], ".2f"),
               help="Mean turns of accepted exchanges (offline rules run: no LLM cost)")
with st.expander("Every summary figure"):
    summary_table = pd.DataFrame({"figure": list(s), "value": [str(v) for v in s.values()]})
    show_table(summary_table, f"{run_id}-summary", "dl_summary")

def activity_tab() -> None:
    activity = m("activity", windows=20)
    st.altair_chart(charts.activity_chart(activity), width="stretch")
    by_turn = m("agreement_by_turn")
    st.altair_chart(charts.agreement_by_turn_chart(by_turn), width="stretch")
    with st.expander("Data"):
        show_table(activity, f"{run_id}-activity", "dl_activity")
        show_table(by_turn, f"{run_id}-agreement-by-turn", "dl_by_turn")


def holdings_tab() -> None:
    if periods > 1:
        # Windows of exchanges count only swaps; a living run's holdings also grow and shrink at
        # every period's start and end, so they are shown per period.
        holdings = m("holdings_by_period")
        period = st.slider("Period", 1, periods, periods, key="holdings_period",
                           help="Holdings as this period's trading ends, before its consumption")
        st.altair_chart(charts.holdings_in_period_chart(holdings, period), width="stretch")
        over, name = "period", "holdings-by-period"
    else:
        holdings, over, name = m("holdings_over_time", windows=20), "window", "holdings-over-time"
    columns = st.columns(2)
    for i, chart in enumerate(charts.holdings_charts(holdings, over=over)):
        columns[i % 2].altair_chart(chart, width="stretch")
    with st.expander("Data"):
        show_table(holdings, f"{run_id}-{name}", "dl_holdings")


def prices_tab() -> None:
    dispersion = m("price_dispersion", windows=10)
    st.altair_chart(charts.rates_chart(dispersion), width="stretch")
    st.altair_chart(charts.spread_chart(dispersion), width="stretch")
    pooled = dispersion[dispersion["pair"] == "all"]
    thin = pooled.loc[pooled["sd_log_rate"].isna(), "window"].tolist()
    if thin:
        st.caption(f"Too few trades to measure a spread (under {MIN_DISPERSION_DF} degrees of freedom) in "
                   f"window {', '.join(str(w) for w in thin)}: left out, not drawn as 0. Trades and degrees "
                   "of freedom of every window are in the data below.")

    st.subheader("Against the optimum")
    optimum, gains_left = m("allocative_efficiency"), m("gains_left_on_table")
    cols = st.columns(3)
    cols[0].metric("Allocative efficiency", figure(optimum["efficiency"], ".1%"),
                   help=f"Welfare gained, {figure(optimum['realised_gain'], ',.1f')}, of the "
                        f"{figure(optimum['max_gain'], ',.1f')} the exact utilitarian optimum over whole-unit "
                        "reallocations of the same totals would add")
    checked = f"{gains_left['pairs_checked']:,} of {gains_left['pairs_total']:,} pairs"
    cols[1].metric("Pairs with a swap left", f"{gains_left['pairs_with_gains']:,}",
                   help=f"Pairs with a whole-unit swap both would still gain from at the end, among {checked}"
                        + (" (a fixed random sample)" if gains_left["sampled"] else ""))
    cols[2].metric("Best swap left", figure(gains_left["best_gain"], ".3f"),
                   help="The largest joint utility gain of such a swap")
    if optimum["note"]:
        st.caption(plain(optimum["note"]))

    st.subheader("Marginal rates of substitution")
    mrs = m("mrs_dispersion", windows=10)
    left, right = st.columns(2)
    left.altair_chart(charts.mrs_spread_chart(mrs), width="stretch")
    right.altair_chart(charts.mrs_price_chart(m("mrs_prices", windows=10)), width="stretch")
    with st.expander("Data"):
        show_table(dispersion, f"{run_id}-price-dispersion", "dl_dispersion")
        show_table(mrs, f"{run_id}-mrs-dispersion", "dl_mrs_dispersion")


def network_tab() -> None:
    period = None
    if periods > 1:
        chosen = st.select_slider("Trades of", ["the whole run", *range(1, periods + 1)], key="network_period",
                                  format_func=lambda p: p if isinstance(p, str) else f"period {p}")
        period = None if isinstance(chosen, str) else int(chosen)
    nodes = m("network_nodes", period=period)
    # Only the pairs the drawing can show leave the database: a large community is drawn as its
    # busiest members, and a 1,000,000-exchange run met in some 400,000 pairs.
    drawn = charts.busiest_participants(nodes)
    among = None if len(drawn) == len(nodes) else tuple(int(i) for i in drawn["participant_id"])
    edges = m("network_edges", among=among, period=period)
    net = m("network_summary")
    cols = st.columns(4)
    cols[0].metric("Repeat partners", figure(net["repeat_partner_share"], ".1%"))
    cols[1].metric("Reciprocity", figure(net["reciprocity"], ".2f"))
    cols[2].metric("Mean clustering", figure(net["mean_clustering"], ".2f"))
    cols[3].metric("Personality assortativity", figure(net["personality_assortativity"], ".2f"))
    left, right = st.columns(2)
    left.altair_chart(charts.network_chart(nodes, edges), width="stretch")
    right.altair_chart(charts.pairing_heatmap(m("pairing_matrix")), width="stretch")
    if len(nodes) <= MAX_HEATMAP_PARTICIPANTS:
        st.altair_chart(charts.participant_heatmap(nodes, edges))
    else:
        st.caption(f"{len(nodes):,} participants: the participant heatmap is shown for runs of up to "
                   f"{MAX_HEATMAP_PARTICIPANTS}.")
    with st.expander("Data"):
        show_table(nodes, f"{run_id}-network-nodes", "dl_nodes")
        if among is None:
            st.caption(f"{len(edges):,} pairs met.")
        else:
            st.caption("Every pair that met, in the downloads:")
        downloads(edges if among is None else lambda: metrics.network_edges(store().connect([run_id]), run_id,
                                                                             period=period),
                  f"{run_id}-network-edges", "dl_edges")
        show_table(m("pairing_matrix"), f"{run_id}-pairing-matrix", "dl_pairing")


def periods_tab() -> None:
    by_period = m("by_period")
    columns = st.columns(2)
    for i, chart in enumerate(charts.period_charts(by_period)):
        columns[i % 2].altair_chart(chart, width="stretch")
    prices = m("prices_by_period")
    columns[1].altair_chart(charts.spread_chart(prices, over="period"), width="stretch")
    st.altair_chart(charts.rates_chart(prices, over="period"), width="stretch")
    thin = by_period.loc[by_period["price_sd"].isna(), "period"].tolist()
    if thin:
        st.caption(f"Too few trades to measure a spread (under {MIN_DISPERSION_DF} degrees of freedom) in "
                   f"period {', '.join(str(p) for p in thin)}: left out, not drawn as 0.")
    with st.expander("Data"):
        show_table(by_period, f"{run_id}-by-period", "dl_by_period")
        show_table(prices, f"{run_id}-prices-by-period", "dl_prices_by_period")


def personalities_tab() -> None:
    by_personality = m("by_personality")
    st.markdown("**Outcomes by personality**")
    columns = st.columns(2)
    for i, chart in enumerate(charts.by_personality_charts(by_personality)):
        columns[i % 2].altair_chart(chart, width="stretch")
    show_table(by_personality, f"{run_id}-by-personality", "dl_by_personality")


def inequality_tab() -> None:
    left, right = st.columns(2)
    left.altair_chart(charts.lorenz_chart(m("lorenz", quantity="holdings"), "Lorenz curve of holdings value"),
                      width="stretch")
    right.altair_chart(charts.lorenz_chart(m("lorenz", quantity="utility"), "Lorenz curve of utility"), width="stretch")
    needs = m("need_fulfilment")
    with st.expander("Needs met per participant"):
        show_table(needs, f"{run_id}-need-fulfilment", "dl_needs")


def facilitator_tab() -> None:
    if info.meta.get("facilitator") == "off":
        st.info("This is a control run: the facilitator was off, so there is no advice to follow.")
    else:
        adherence = m("facilitator_adherence")
        anchoring = m("anchoring")
        st.metric("Anchoring", figure(anchoring, ".2f"),
                  help="Correlation of the suggested and agreed log rates over accepted deals")
        st.altair_chart(charts.adherence_chart(adherence), width="stretch")
        downloads(adherence, f"{run_id}-facilitator-adherence", "dl_adherence")
    if s.get("llm_calls"):
        st.subheader("LLM cost")
        show_table(m("cost"), f"{run_id}-cost", "dl_cost")


def exchange_log_tab() -> None:
    people = m("network_nodes")
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    outcomes = c1.multiselect("Outcome", list(OUTCOMES), key="log_outcomes", format_func=OUTCOME_LABELS.get)
    who = c2.text_input("Participant name contains", key="log_who")
    personality = c3.selectbox("Personality", ["", *sorted(people["personality"].unique())], key="log_personality",
                               format_func=lambda p: p or "any")
    size = c4.selectbox("Rows", [25, 50, 100], key="log_size")
    total = log_page(con, run_id, outcomes, who, personality, limit=1).total
    pages = max(1, math.ceil(total / size))
    page = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, step=1, key="log_page")
    shown = log_page(con, run_id, outcomes, who, personality, limit=size, offset=(page - 1) * size)
    st.caption(f"{total:,} exchanges match.")
    st.dataframe(shown.rows, hide_index=True)

    def whole_log() -> pd.DataFrame:
        return log_page(store().connect([run_id]), run_id, outcomes, who, personality, limit=max(total, 1)).rows

    downloads(whole_log, f"{run_id}-exchanges", "dl_log")

    if not shown.rows.empty:
        rows = shown.rows.set_index("exchange_id")
        exchange_id = st.selectbox(
            "Read one exchange as a conversation", rows.index.tolist(), key="log_exchange",
            format_func=lambda e: f"#{e} · {rows.at[e, 'initiator']} ↔ {rows.at[e, 'responder']} · {rows.at[e, 'outcome']}",
        )
        t = transcript(con, run_id, int(exchange_id))
        if t is not None:
            e = t.exchange
            st.subheader(plain(f"Exchange #{e['exchange_id']}, round {e['round']}"))
            st.text(f"{e['initiator']} ({e['initiator_personality']}) meets {e['responder']} "
                    f"({e['responder_personality']}).")
            if t.advice is not None:
                a = t.advice
                with st.chat_message("facilitator", avatar=":material/balance:"):
                    st.caption("Facilitator (advice, not binding)")
                    if a["source"] == "fallback":
                        why = f": {a['fallback_reason']}" if a["fallback_reason"] else ""
                        st.caption(plain(f"The facilitator's model gave no usable advice, so this is the rules "
                                         f"facilitator's{why}"))
                    st.text(a["note"] or "")
                    suggested = swap_text(a["initiator_gives"], a["initiator_gives_qty"], a["responder_gives"],
                                          a["responder_gives_qty"])
                    st.text(f"Suggested swap: {e['initiator']} gives {suggested}" if suggested else "No swap suggested.")
                    if not t.valuations.empty:
                        st.dataframe(t.valuations, hide_index=True, width=320)
            for turn in t.turns.itertuples(index=False):
                with st.chat_message(turn.role, avatar=":material/person:" if turn.role == "initiator" else ":material/person_outline:"):
                    st.caption(plain(f"Turn {turn.turn} · {turn.speaker} ({turn.speaker_personality}) · "
                                     f"{turn.action} · {turn.source}"))
                    st.text(turn.message or "")
                    if isinstance(turn.fallback_reason, str) and turn.fallback_reason:
                        st.caption(plain(f"Fell back to the rules brain: {turn.fallback_reason}"))
            st.text(ending_text(e))
            downloads(t.turns, f"{run_id}-exchange-{exchange_id}", "dl_transcript")


# Only the chosen tab is computed and drawn (the tab is kept in the URL, ?tab=Prices): drawing all
# eight at once took 13 s in a browser on a 1,000,000-exchange run, most of it tabs nobody had opened.
SECTIONS = {"Activity": activity_tab, **({"Periods": periods_tab} if periods > 1 else {}), "Holdings": holdings_tab, "Prices": prices_tab, "Network": network_tab,
            "Personalities": personalities_tab, "Inequality": inequality_tab, "Facilitator": facilitator_tab,
            "Exchange log": exchange_log_tab}
for tab, draw in zip(st.tabs(list(SECTIONS), key="tab", bind="query-params"), SECTIONS.values()):
    if tab.open:
        with tab:
            draw()
