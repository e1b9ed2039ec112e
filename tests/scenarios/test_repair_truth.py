"""Repairs invent neither money nor positions (issue 13).

A position repair knows no trade price: units it removes close at our own average cost
(no P&L), units it adds open at the broker's average only when that is a cost basis
comparable with ours, else at an unknown cost (never 0). And a repair never stands for
executions the snapshot could not show, so a real execution is never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest

from tests.builders import ACCOUNT, D, at, fill_report, order_report, unique_cid
from trueup import BrokerSnapshot, Ledger, PositionReport, Side
from trueup.domain.reports import FillReport, OrderReport

NOW = 100.0


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('rt')}", clock=lambda: at(NOW)) as opened:
        yield opened


def snap(
    positions: list[PositionReport],
    orders: list[OrderReport] | None = None,
    fills: list[FillReport] | None = None,
    *,
    as_of: float = NOW - 1,
) -> BrokerSnapshot:
    return BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(as_of),
        orders=[] if orders is None else orders,
        fills=[] if fills is None else fills,
        positions=positions,
    )


def pos(qty: str | int, avg: str | int, *, comparable: bool = True, symbol: str = "AAPL") -> PositionReport:
    return PositionReport(ACCOUNT, symbol, D(qty), D(avg), at(NOW - 1), avg_cost_comparable=comparable)


def holding(ledger: Ledger, qty: int, price: str, *, symbol: str = "AAPL") -> None:
    """Our books hold `qty` (signed) at `price`, from an execution of an order we never sent."""
    side = Side.BUY if qty > 0 else Side.SELL
    ledger.ingest(fill_report("E0", abs(qty), price, cid=None, broker_id="X0", side=side, symbol=symbol))


def position(ledger: Ledger, symbol: str = "AAPL") -> tuple[Decimal, Decimal | None, Decimal]:
    [view] = [p for p in ledger.positions(ACCOUNT, include_flat=True) if p.symbol == symbol]
    return view.qty, view.avg_cost, view.realized_pnl


def open_details(ledger: Ledger) -> list[str]:
    return [d.detail for d in ledger.discrepancies(ACCOUNT, include_resolved=True)]


# -- closing legs realize nothing -------------------------------------------------------------


@pytest.mark.parametrize(("qty", "price"), [(100, "1.20"), (-50, "2.50"), (7, "-37.63")])
def test_a_naked_position_repaired_to_flat_realizes_no_pnl(ledger: Ledger, qty: int, price: str) -> None:
    holding(ledger, qty, price)
    result = ledger.reconcile(snap([]))
    assert "NAKED_POSITION" in [d.kind for d in result.discrepancies]
    assert position(ledger) == (D(0), D(0), D(0))  # before: -120 / +125 booked from a price of 0
    [synced] = result.position_syncs
    assert [(f.qty, f.price) for f in synced.fills] == [(D(-qty), D(price))]


def test_a_partial_repair_closes_at_our_cost_and_keeps_it_when_the_broker_cost_is_not_comparable(
    ledger: Ledger,
) -> None:
    holding(ledger, 100, "10")
    ledger.reconcile(snap([pos(60, "10.4", comparable=False)]))
    assert position(ledger) == (D(60), D(10), D(0))


def test_a_flip_to_an_unknown_broker_cost_books_no_pnl_and_opens_the_lot_at_an_unknown_cost(
    ledger: Ledger,
) -> None:
    holding(ledger, -40, "48.96")
    ledger.reconcile(snap([pos(100, 0)]))  # the broker gives no average
    assert position(ledger) == (D(100), None, D(0))  # before: +1,958.40 realized, lot at cost 0
    [detail] = [d for d in open_details(ledger) if "repaired" in d]
    assert "no P&L realized" in detail
    assert "cost unknown" in detail


def test_a_flip_to_a_cost_on_another_basis_opens_at_an_unknown_cost(ledger: Ledger) -> None:
    holding(ledger, -40, "48.96")
    ledger.reconcile(snap([pos(100, "50.10", comparable=False)]))
    assert position(ledger) == (D(100), None, D(0))
    # An unknown cost is not a cost: selling later realizes nothing made up, and once flat
    # the position is known again.
    ledger.ingest(fill_report("E9", 100, "51", cid=None, broker_id="X9", side=Side.SELL, ts=5))
    assert position(ledger) == (D(0), D(0), D(0))
    ledger.ingest(fill_report("E10", 10, "52", cid=None, broker_id="X10", ts=6))
    assert position(ledger) == (D(10), D(52), D(0))


def test_a_comparable_broker_average_opens_the_new_lot(ledger: Ledger) -> None:
    ledger.reconcile(snap([pos(100, "150.25")]))
    assert position(ledger) == (D(100), Decimal("150.25"), D(0))


def test_an_ib_futures_cost_is_never_booked_as_a_price(ledger: Ledger) -> None:
    # IB's avgCost per contract (multiplier 50, commissions in): not a price, not a cost basis.
    ledger.reconcile(snap([pos(1, "250012.5", comparable=False, symbol="ESM4")]))
    assert position(ledger, "ESM4") == (D(1), None, D(0))
    ledger.ingest(
        fill_report("E1", 1, "5000.25", cid=None, broker_id="X1", side=Side.SELL, symbol="ESM4", ts=5)
    )
    assert position(ledger, "ESM4") == (D(0), D(0), D(0))  # before: -245,002.50 realized


def test_an_unknown_cost_is_set_by_a_later_comparable_report(ledger: Ledger) -> None:
    ledger.reconcile(snap([pos(10, "99", comparable=False)]))
    assert position(ledger)[1] is None
    result = ledger.reconcile(snap([pos(10, "101")], as_of=NOW - 0.5))
    assert [d.kind for d in result.discrepancies] == ["POSITION_MISMATCH"]
    assert position(ledger) == (D(10), D(101), D(0))


# -- a repair never stands for executions the snapshot could not show -----------------------


def test_no_repair_while_the_orders_or_fills_are_unknown_so_the_real_execution_counts_once(
    ledger: Ledger,
) -> None:
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(100))
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="B1", qty=100, ts=1))
    blind = msgspec.structs.replace(snap([pos(100, "10")]), orders=None, fills=None)
    result = ledger.reconcile(blind)
    assert result.position_syncs == []
    mismatch = [d for d in ledger.discrepancies(ACCOUNT) if d.kind == "MISSING_LOCAL_POSITION"]
    assert [d.detail for d in mismatch] == [
        (
            "the broker holds a position we have no record of; not repaired: the broker's orders "
            "or fills are unknown (a repair could count them twice)"
        )
    ]
    ledger.ingest(fill_report("E1", 100, "10", cid="C1", broker_id="B1", ts=3))
    assert position(ledger) == (D(100), D(10), D(0))  # before: 200 against the broker's 100
    fills_only_unknown = msgspec.structs.replace(snap([pos(100, "10")], as_of=NOW - 0.5), fills=None)
    ledger.reconcile(fills_only_unknown)
    ledger.reconcile(snap([pos(100, "10")], as_of=NOW - 0.2))
    assert position(ledger) == (D(100), D(10), D(0))
    assert [d.kind for d in ledger.discrepancies(ACCOUNT) if d.kind != "STALE_DATA"] == []


def test_a_blind_naked_position_is_alerted_not_repaired(ledger: Ledger) -> None:
    holding(ledger, 10, "100")
    result = ledger.reconcile(msgspec.structs.replace(snap([]), fills=None))
    assert result.position_syncs == []
    assert position(ledger)[0] == D(10)
    assert "NAKED_POSITION" in [d.kind for d in ledger.discrepancies(ACCOUNT)]


# -- one problem, one alarm: averages within 0.01% agree ------------------------------------


def test_a_broker_average_within_a_hundredth_of_a_percent_is_not_a_mismatch(ledger: Ledger) -> None:
    holding(ledger, 3, "100.0001")
    holding_cost = position(ledger)[1]
    result = ledger.reconcile(snap([pos(3, "100.01")]))  # 0.0099% apart: the broker rounded
    assert result.discrepancies == []
    assert position(ledger)[1] == holding_cost  # our exact cost, not overwritten
    result = ledger.reconcile(snap([pos(3, "100.02")], as_of=NOW - 0.5))  # 0.0199%: a mismatch
    assert [d.kind for d in result.discrepancies] == ["POSITION_MISMATCH"]
