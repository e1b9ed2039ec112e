"""Fill rules: dedupe, IB corrections, monotonic filled quantity, inferred fills, overfill."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.builders import D, apply, fill_report, kinds, new_order, order_report
from trueup.domain.order import exec_key
from trueup.domain.status import OrderStatus, Side


@pytest.mark.parametrize(
    ("exec_id", "key", "revision"),
    [
        ("0000e0d5.6553f0ca.01.01", "0000e0d5.6553f0ca.01", 1),
        ("0000e0d5.6553f0ca.01.02", "0000e0d5.6553f0ca.01", 2),
        ("f3e1a6c2-5b7e-4c3a-9a1d-1e2f3a4b5c6d", "f3e1a6c2-5b7e-4c3a-9a1d-1e2f3a4b5c6d", 0),
        ("10000000", "10000000", 0),
        ("123.4", "123.4", 0),
    ],
    ids=["ib-original", "ib-correction", "alpaca-uuid", "kite-trade-id", "plain-decimal"],
)
def test_exec_key(exec_id: str, key: str, revision: int) -> None:
    assert exec_key(exec_id) == (key, revision)


def test_same_execution_twice_is_applied_once() -> None:
    order = new_order()
    outcomes = apply(order, fill_report("E1", 4, 100), fill_report("E1", 4, 100))
    assert order.state.filled_qty == D(4)
    assert len(order.state.fills) == 1
    assert outcomes[1].changes == []
    assert kinds(outcomes) == []


def test_same_execution_with_other_figures_keeps_first_and_raises() -> None:
    order = new_order()
    outcomes = apply(order, fill_report("E1", 4, 100), fill_report("E1", 5, 100))
    assert order.state.filled_qty == D(4)
    assert kinds(outcomes) == ["FILL_MISMATCH"]


def test_ib_correction_replaces_not_adds() -> None:
    order = new_order()
    apply(order, fill_report("0001.abc.01.01", 4, 100, ts=1))
    outcomes = apply(order, fill_report("0001.abc.01.02", 3, Decimal("100.5"), ts=2))
    assert order.state.filled_qty == D(3)
    assert order.state.avg_fill_price == Decimal("100.5")
    assert [c.event.__name__ for c in outcomes[0].changes][0] == "FillCorrected"
    # The original arriving late is stale: nothing changes.
    late = apply(order, fill_report("0001.abc.01.01", 4, 100, ts=1))
    assert late[0].changes == []
    assert order.state.filled_qty == D(3)


def test_commission_arriving_later_is_joined_by_exec_id() -> None:
    order = new_order()
    apply(order, fill_report("E1", 4, 100))
    assert order.state.fills["E1"].commission is None  # unknown, not zero
    apply(order, fill_report("E1", 4, 100, commission="1.25"))
    assert order.state.fills["E1"].commission == Decimal("1.25")
    assert order.state.filled_qty == D(4)


def test_filled_quantity_never_decreases_on_stale_cumulative() -> None:
    order = new_order()
    apply(order, fill_report("E1", 6, 100))
    outcomes = apply(order, order_report("ACCEPTED", filled=2, avg=100, ts=3))
    assert order.state.filled_qty == D(6)
    assert [c.event.__name__ for c in outcomes[0].changes if "Fill" in c.event.__name__] == []


def test_broker_filled_without_fills_books_one_inferred_fill() -> None:
    order = new_order()
    outcomes = apply(order, order_report("FILLED", filled=10, avg="3002.5", ts=1))
    inferred = [c for c in outcomes[0].changes if c.event.__name__ == "FillInferred"]
    assert len(inferred) == 1
    assert inferred[0].fields["qty"] == D(10)
    assert inferred[0].fields["price"] == Decimal("3002.5")
    assert order.state.status is OrderStatus.FILLED
    assert order.state.inferred_qty == D(10)


def test_cumulative_ahead_is_priced_so_the_average_matches() -> None:
    # 5 real at 3000, then the broker says 8 at avg 3002.50 -> 3 inferred at ~3006.67.
    order = new_order()
    apply(order, fill_report("E1", 5, 3000, ts=1))
    outcomes = apply(order, order_report("ACCEPTED", filled=8, avg="3002.50", ts=2))
    inferred = [c for c in outcomes[0].changes if c.event.__name__ == "FillInferred"]
    assert len(inferred) == 1
    assert inferred[0].fields["qty"] == D(3)
    assert inferred[0].fields["price"] == Decimal("3006.6666666667")
    assert order.state.filled_qty == D(8)
    assert order.state.avg_fill_price == Decimal("3002.5000000000")


def test_real_fill_supersedes_inferred_never_doubles() -> None:
    order = new_order()
    apply(order, fill_report("E1", 5, 3000, ts=1), order_report("ACCEPTED", filled=8, avg="3002.50", ts=2))
    apply(order, fill_report("E2", 3, "3006.67", ts=3))
    assert order.state.filled_qty == D(8)
    assert order.state.inferred_qty == 0
    assert order.state.real_filled == D(8)
    assert order.state.inferred_price is None


def test_partial_supersession_reprices_the_remaining_inferred() -> None:
    order = new_order()
    apply(order, order_report("ACCEPTED", filled=8, avg="3002.5", ts=1))
    apply(order, fill_report("E1", 5, 3000, ts=2))
    assert order.state.inferred_qty == D(3)
    # Same as if the fill had come first: the average still matches the report.
    assert order.state.inferred_price == Decimal("3006.6666666667")
    assert order.state.filled_qty == D(8)


def test_inferred_then_larger_cumulative_grows_the_inferred_part() -> None:
    order = new_order()
    apply(order, order_report("ACCEPTED", filled=3, avg=100, ts=1))
    outcomes = apply(order, order_report("ACCEPTED", filled=5, avg=101, ts=2))
    inferred = [c for c in outcomes[0].changes if c.event.__name__ == "FillInferred"]
    assert inferred[0].fields["qty"] == D(2)
    assert order.state.inferred_qty == D(5)
    assert order.state.avg_fill_price == Decimal(101)


def test_fill_beyond_quantity_is_refused() -> None:
    order = new_order(qty=10)
    apply(order, fill_report("E1", 8, 100))
    outcomes = apply(order, fill_report("E2", 3, 100))
    assert order.state.filled_qty == D(8)
    assert kinds(outcomes) == ["OVERFILL"]
    assert outcomes[0].changes == []


def test_cumulative_beyond_quantity_is_refused() -> None:
    order = new_order(qty=10)
    outcomes = apply(order, order_report("ACCEPTED", filled=11, avg=100))
    assert order.state.filled_qty == 0
    assert kinds(outcomes) == ["OVERFILL"]


def test_cumulative_without_price_uses_limit_and_says_so() -> None:
    order = new_order(limit="99")
    outcomes = apply(order, order_report("ACCEPTED", filled=2))
    assert order.state.inferred_qty == D(2)
    assert order.state.inferred_price == D(99)
    assert kinds(outcomes) == ["FILL_MISMATCH"]
    assert outcomes[0].findings[0].level.value == "INFO"


def test_cumulative_without_any_price_is_not_booked() -> None:
    order = new_order()
    outcomes = apply(order, order_report("ACCEPTED", filled=2))
    assert order.state.filled_qty == 0
    assert kinds(outcomes) == ["FILL_MISMATCH"]


def test_fill_with_other_side_is_refused() -> None:
    order = new_order()
    outcomes = apply(order, fill_report("E1", 1, 100, side=Side.SELL))
    assert order.state.filled_qty == 0
    assert kinds(outcomes) == ["INVALID_REPORT"]


def test_fill_on_rejected_order_is_booked_and_flagged() -> None:
    # Never lose a fill: the execution happened, whatever the status said.
    order = new_order()
    apply(order, order_report("REJECTED", ts=1))
    outcomes = apply(order, fill_report("E1", 2, 100, ts=2))
    assert order.state.filled_qty == D(2)
    assert kinds(outcomes) == ["STATUS_CONFLICT"]


def test_fills_arrive_after_terminal_are_accepted() -> None:
    order = new_order()
    apply(order, order_report("EXPIRED", filled=4, avg=100, ts=1))
    apply(order, fill_report("E1", 4, 100, ts=0))
    assert order.state.status is OrderStatus.EXPIRED
    assert order.state.filled_qty == D(4)
    assert order.state.inferred_qty == 0
