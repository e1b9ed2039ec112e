"""Float noise is not an overfill, and negative prices are prices (issue 13)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.builders import ACCOUNT, D, apply, at, fill_report, kinds, new_order, order_report, unique_cid
from trueup import Ledger
from trueup.domain.errors import InvalidReport
from trueup.domain.money import QUANTITY_TOLERANCE
from trueup.domain.reports import FillReport, PositionReport
from trueup.domain.status import OrderStatus, Side

NOISE = Decimal("1e-10")


def test_the_tolerance_is_the_positions_one() -> None:
    assert Decimal("1e-9") == QUANTITY_TOLERANCE


def test_a_cumulative_within_the_tolerance_above_the_quantity_is_filled_not_an_overfill() -> None:
    order = new_order(100)
    outcomes = apply(order, order_report("FILLED", filled=D(100) + NOISE, avg=10, qty=100))
    assert kinds(outcomes) == []  # before: CRITICAL OVERFILL, report refused
    assert order.state.status is OrderStatus.FILLED


def test_a_cumulative_within_the_tolerance_below_the_quantity_is_filled() -> None:
    order = new_order(100)
    outcomes = apply(order, order_report("FILLED", filled=D(100) - NOISE, avg=10, qty=100))
    assert kinds(outcomes) == []  # before: FILL_MISMATCH "FILLED but the cumulative is short"
    assert order.state.status is OrderStatus.FILLED


def test_an_execution_within_the_tolerance_above_the_quantity_is_booked() -> None:
    order = new_order(100)
    outcomes = apply(order, fill_report("E1", 60, 10), fill_report("E2", D(40) + NOISE, 10))
    assert kinds(outcomes) == []  # before: CRITICAL OVERFILL, execution refused
    assert order.state.filled_qty == D(100) + NOISE
    assert order.state.status is OrderStatus.FILLED


def test_beyond_the_tolerance_it_is_still_an_overfill() -> None:
    order = new_order(100)
    assert kinds(apply(order, order_report("FILLED", filled="100.000000002", avg=10, qty=100))) == [
        "OVERFILL"
    ]
    assert kinds(apply(order, fill_report("E1", "100.000000002", 10))) == ["OVERFILL"]


# -- negative prices -------------------------------------------------------------------------


def test_reports_carry_negative_prices_but_not_negative_quantities() -> None:
    assert fill_report("E1", 1, "-37.63").price == D("-37.63")
    assert order_report("FILLED", filled=1, avg="-37.63", limit="-40", qty=1).avg_price == D("-37.63")
    assert PositionReport(ACCOUNT, "CLK0", D(1), D("-37.63"), at(0)).avg_cost == D("-37.63")
    with pytest.raises(InvalidReport, match="qty must be > 0"):
        fill_report("E1", -1, "10")
    with pytest.raises(InvalidReport, match="price must be finite"):
        FillReport(ACCOUNT, "C1", "B1", "E1", "CLK0", Side.BUY, D(1), Decimal("-Infinity"), at(0))


def test_an_inferred_fill_below_zero_is_booked_when_the_order_trades_below_zero() -> None:
    order = new_order(10, symbol="CLK0")
    outcomes = apply(
        order,
        fill_report("E1", 3, "-30", symbol="CLK0"),
        order_report("PARTIALLY_FILLED", filled=8, avg="-35", symbol="CLK0"),
    )
    # 5 inferred at -38: below zero and near the real fills and the average (not far outside).
    assert kinds(outcomes) == []  # before: FILL_MISMATCH "average cannot be matched"
    assert order.state.inferred_price == Decimal(-38)
    assert order.state.avg_fill_price == D("-35")


def test_a_price_below_zero_derived_from_positive_prices_is_still_a_mismatch() -> None:
    order = new_order(10)
    outcomes = apply(order, fill_report("E1", 5, "100"), order_report("PARTIALLY_FILLED", filled=8, avg="50"))
    assert kinds(outcomes) == ["FILL_MISMATCH"]


def test_fills_averages_and_positions_below_zero() -> None:
    with Ledger.open("memory://neg13") as ledger:
        ledger.intend(ACCOUNT, "C1", "CLK0", "BUY", D(10))
        ledger.ingest(
            [fill_report("E1", 4, "-37.63", symbol="CLK0"), fill_report("E2", 6, "-10", symbol="CLK0")]
        )
        order = ledger.order(ACCOUNT, "C1")
        assert order is not None
        assert (order.status, order.avg_fill_price) == (OrderStatus.FILLED, Decimal("-21.052"))
        ledger.intend(ACCOUNT, "C2", "CLK0", "SELL", D(10))
        ledger.ingest(
            fill_report("E3", 10, "5", cid="C2", broker_id="B2", symbol="CLK0", side=Side.SELL, ts=3)
        )
        [position] = ledger.positions(ACCOUNT, include_flat=True)
        assert (position.qty, position.realized_pnl) == (D(0), Decimal("260.520"))


# Regression (fuzz soak, seeds 9 and 19): a position cost of 1E+400 from a garbled payload was
# booked, then every `positions()` read raised decimal.InvalidOperation (the derived average
# could not be quantized in 60 digits). A figure that large is garbage: an invalid report.
@pytest.mark.parametrize("value", ["1E+400", "-1E+18", "1000000000000000000"])
def test_a_figure_beyond_any_market_is_an_invalid_report_not_a_crash(value: str) -> None:
    with pytest.raises(InvalidReport, match="in magnitude"):
        fill_report("E1", 1, value)
    with pytest.raises(InvalidReport, match="in magnitude"):
        PositionReport(ACCOUNT, "AAPL", Decimal(value), Decimal(1), at(1))
    with Ledger.open(f"memory://{unique_cid('huge')}") as ledger:
        with pytest.raises(InvalidReport, match="in magnitude"):
            ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", Decimal(value).copy_abs())
        ledger.ingest_raw("{}", lambda _raw: [fill_report("E1", 1, value)], account=ACCOUNT, source="t", kind="t")
        assert [d.kind for d in ledger.discrepancies(ACCOUNT)] == ["INVALID_REPORT"]
        assert ledger.positions(ACCOUNT) == []


def test_a_figure_just_below_the_bound_is_booked() -> None:
    with Ledger.open(f"memory://{unique_cid('big')}") as ledger:
        ledger.ingest(fill_report("E1", 1, "999999999999999999"))
        assert [p.qty for p in ledger.positions(ACCOUNT)] == [Decimal(1)]
