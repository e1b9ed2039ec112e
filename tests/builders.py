"""Builders for reports and in-memory orders used across the test suite."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trueup.domain.order import Order
from trueup.domain.reports import FillReport, OrderReport
from trueup.domain.rules import Outcome, decide_fill, decide_order_report
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource, Side

T0 = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
ACCOUNT = "DU123"
_ids = itertools.count(1)


def D(value: str | int) -> Decimal:
    """A Decimal from a literal."""
    return Decimal(str(value))


def at(seconds: float) -> datetime:
    """A time `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def unique_cid(prefix: str = "T") -> str:
    """A client order id unique within the test run (20 chars max, alnum)."""
    return f"{prefix}{next(_ids):06d}"


def order_report(
    status: OrderStatus | str,
    *,
    cid: str | None = "C1",
    broker_id: str | None = "B1",
    filled: str | int = 0,
    avg: str | int | None = None,
    qty: str | int = 10,
    ts: float = 1,
    raw: str | None = None,
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    flags: frozenset[OrderFlag] = frozenset(),
    source: ReportSource = ReportSource.BROKER,
    limit: str | int | None = None,
    account: str = ACCOUNT,
    replaces: str | None = None,
) -> OrderReport:
    """An OrderReport with sensible defaults."""
    status = OrderStatus(status)
    return OrderReport(
        account=account,
        client_order_id=cid,
        broker_order_id=broker_id,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        status=status,
        filled_qty=D(filled),
        avg_price=None if avg is None else D(avg),
        ts_event=at(ts),
        raw_status=raw or status.value.lower(),
        limit_price=None if limit is None else D(limit),
        source=source,
        flags=flags,
        replaces=replaces,
    )


def fill_report(
    exec_id: str,
    qty: str | int,
    price: str | int,
    *,
    cid: str | None = "C1",
    broker_id: str | None = "B1",
    ts: float = 2,
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    commission: str | None = None,
    account: str = ACCOUNT,
) -> FillReport:
    """A FillReport with sensible defaults."""
    return FillReport(
        account=account,
        client_order_id=cid,
        broker_order_id=broker_id,
        exec_id=exec_id,
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=D(price),
        ts_event=at(ts),
        commission=None if commission is None else D(commission),
    )


def new_order(
    qty: str | int = 10,
    *,
    cid: str = "C1",
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    limit: str | None = None,
) -> Order:
    """An intended order, in memory (no store)."""
    return Order.intend(
        account=ACCOUNT,
        client_order_id=cid,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        limit_price=None if limit is None else D(limit),
        strategy=None,
        ts=T0,
    )


def apply(order: Order, *reports: OrderReport | FillReport) -> list[Outcome]:
    """Apply reports to an in-memory order through the pure rules; return each outcome."""
    outcomes = []
    for report in reports:
        if isinstance(report, OrderReport):
            outcome = decide_order_report(order.state, report)
        else:
            outcome = decide_fill(order.state, report)
        order.record(outcome.changes)
        outcomes.append(outcome)
    return outcomes


def kinds(outcomes: list[Outcome]) -> list[str]:
    """Discrepancy kinds found across outcomes, in order."""
    return [f.kind.value for o in outcomes for f in o.findings]
