"""The ledger is the only code that moves units: swaps settle whole or not at all."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from commonpool.ledger import REASONS, Ledger


def one(ledger: Ledger, i: int, j: int, a: int, qa: float, b: int, qb: float):
    return ledger.settle(np.array([i]), np.array([j]), np.array([a]), np.array([qa]), np.array([b]), np.array([qb]))


def test_accepted_swap_moves_both_bundles() -> None:
    ledger = Ledger(np.array([[5, 0], [0, 3]]))
    result = one(ledger, 0, 1, 0, 2, 1, 1)
    assert result.valid.tolist() == [True]
    assert ledger.holdings.tolist() == [[3, 1], [2, 2]]


def test_invalid_swaps_move_nothing_and_say_why() -> None:
    start = np.array([[5, 1, 0], [0, 3, 2]])
    cases = [
        ((0, 0, 0, 1, 1, 1), "trading with oneself"),
        ((0, 7, 0, 1, 1, 1), "unknown participant"),
        ((0, 1, 0, 1, 9, 1), "unknown resource"),
        ((0, 1, 1, 1, 1, 1), "same resource on both sides"),
        ((0, 1, 0, 0, 1, 1), "quantity must be a positive whole number"),
        ((0, 1, 0, -2, 1, 1), "quantity must be a positive whole number"),
        ((0, 1, 0, 1.5, 1, 1), "quantity must be a positive whole number"),
        ((0, 1, 0, 6, 1, 1), "initiator does not hold enough of what it gives"),
        ((0, 1, 0, 1, 1, 4), "responder does not hold enough of what it gives"),
    ]
    for args, why in cases:
        ledger = Ledger(start)
        result = one(ledger, *args)
        assert not result.valid[0], args
        assert REASONS[result.reason[0]] == why, args
        assert (ledger.holdings == start).all(), args


def test_holdings_cannot_be_changed_from_outside() -> None:
    ledger = Ledger(np.array([[1, 1]]))
    view = ledger.holdings
    try:
        view[0, 0] = 99
    except ValueError:
        pass
    assert ledger.holdings[0, 0] == 1


def test_a_participant_settles_at_most_one_swap_per_batch() -> None:
    ledger = Ledger(np.array([[2, 0], [0, 2], [0, 2]]))
    result = ledger.settle(
        np.array([0, 0]), np.array([1, 2]), np.array([0, 0]), np.array([2, 2]), np.array([1, 1]), np.array([1, 1])
    )
    assert not result.valid.any()
    assert ledger.holdings.tolist() == [[2, 0], [0, 2], [0, 2]]


swap = st.tuples(
    st.integers(-1, 5),  # initiator (some out of range)
    st.integers(-1, 5),  # responder
    st.integers(-1, 4),  # resource a
    st.one_of(st.integers(-2, 6), st.floats(-2, 6) | st.just(float("nan"))),
    st.integers(-1, 4),  # resource b
    st.one_of(st.integers(-2, 6), st.floats(-2, 6) | st.just(float("nan"))),
)


@settings(max_examples=300, deadline=None)
@given(
    holdings=st.lists(st.lists(st.integers(0, 6), min_size=4, max_size=4), min_size=5, max_size=5),
    batches=st.lists(st.lists(swap, min_size=1, max_size=4), max_size=12),
)
def test_no_sequence_of_swaps_creates_or_destroys_a_unit(holdings: list[list[int]], batches: list) -> None:
    ledger = Ledger(np.array(holdings))
    total = ledger.total().copy()
    for batch in batches:
        cols = [np.array(c) for c in zip(*batch)]
        before = ledger.holdings.copy()
        result = ledger.settle(*cols)
        assert (ledger.total() == total).all()
        assert (ledger.holdings >= 0).all()
        if not result.valid.any():
            assert (ledger.holdings == before).all()
