"""Order use cases of the submit path: intend, mark submitted, amend requests, lookups, and more.

The others: abandon an order, declare one lost.

None of them calls a broker: the submitter and the service do, and record here what they
learned. Each is one transaction through the `Writer`, retried on a conflict.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from trueup.adapters.base import check_client_order_id, check_side, check_symbol
from trueup.application.findings import open_in, record_findings, resolve_all
from trueup.application.gatekeeping import gate_in
from trueup.application.unit_of_work import Events, UnitOfWork, Writer, load, order_id
from trueup.domain.discrepancy import DiscrepancyKind, Finding, Severity
from trueup.domain.errors import InvalidReport
from trueup.domain.gate import LOST_ORDER_LOCK
from trueup.domain.money import MAX_FIGURE
from trueup.domain.order import Order
from trueup.domain.reports import check_storable
from trueup.domain.status import IN_FLIGHT_STATUSES, OrderStatus, Side
from trueup.domain.views import OrderView
from trueup.projections.queries import Queries


def intend(  # noqa: PLR0913, PLR0917 - the terms of an order, positional as in `Ledger.intend`
    writer: Writer,
    account: str,
    client_order_id: str,
    symbol: str,
    side: Side | str,
    quantity: Decimal,
    *,
    limit_price: Decimal | None = None,
    strategy: str | None = None,
    replaces: str | None = None,
) -> OrderView:
    """Record the intent to place an order before anything is sent (see `Ledger.intend`).

    Validates as `submit` does: the client id fits every broker's field, the symbol is one
    a broker could list, the side is BUY or SELL (as the report types take it).

    Raises:
        InvalidReport: naming the field and the value.
    """
    terms: tuple[tuple[str, str | None], ...] = (
        ("account", account),
        ("client_order_id", client_order_id),
        ("symbol", symbol),
    )
    for name, text in terms:
        if not isinstance(text, str) or not text.strip():
            msg = f"{name} must be a non-empty string, got {text!r}"
            raise InvalidReport(msg, field=name)
    for name, text in (*terms, ("strategy", strategy), ("replaces", replaces)):
        check_storable(name, text)
    check_client_order_id(client_order_id)
    check_symbol(symbol)
    side = check_side(side)
    _require_decimal("quantity", quantity, positive=True)
    if limit_price is not None:
        _require_decimal("limit_price", limit_price, positive=True)
    recorded: list[OrderView] = []

    def apply(unit: UnitOfWork) -> None:
        recorded.clear()
        existing = unit.get(order_id(account, client_order_id))
        if existing is not None:
            recorded.append(existing.state.view())  # recorded before: returned unchanged
            return
        order = Order.intend(
            account=account,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            limit_price=limit_price,
            strategy=strategy,
            ts=unit.clock(),
        )
        if replaces is not None:
            order.trigger_event(Order.Chained, replaces=replaces)
        unit.add(order)
        unit.collect(order)
        recorded.append(order.state.view())

    writer.commit(apply, what=f"intend of {client_order_id}")
    return recorded[0]


def mark_submitted(writer: Writer, account: str, client_order_id: str) -> OrderView:
    """Store SUBMITTED for an intended order, just before it is sent (write-ahead)."""

    def apply(unit: UnitOfWork) -> None:
        order = existing_order(unit, account, client_order_id)
        if order.state.status is OrderStatus.INTENDED:
            order.trigger_event(Order.Submitted, ts_submitted=unit.clock())
            unit.collect(order)

    writer.commit(apply)
    return order_view(writer, account, client_order_id)


def request_amend(  # noqa: PLR0913 - the order, its new terms and who asks
    writer: Writer,
    account: str,
    client_order_id: str,
    *,
    quantity: Decimal | None,
    limit_price: Decimal | None,
    by: str = "",
) -> OrderView:
    """Store the terms about to be asked of the broker for a working order (write-ahead).

    Raises:
        InvalidReport: no term given, or a term is malformed.
        LookupError: no such order.
        ValueError: the order is closed.
    """
    if quantity is None and limit_price is None:
        msg = "an amend needs a quantity or a limit price"
        raise InvalidReport(msg, field="quantity")
    if quantity is not None:
        _require_decimal("quantity", quantity, positive=True)
    if limit_price is not None:
        _require_decimal("limit_price", limit_price)

    def apply(unit: UnitOfWork) -> None:
        order = existing_order(unit, account, client_order_id)
        if order.state.status.is_terminal:
            msg = f"{account}: {client_order_id} is {order.state.status}; only a working order can be amended"
            raise ValueError(msg)
        order.trigger_event(
            Order.AmendRequested, quantity=quantity, limit_price=limit_price, ts_requested=unit.clock(), by=by
        )
        unit.collect(order)

    writer.commit(apply, what=f"amend request of {client_order_id}")
    return order_view(writer, account, client_order_id)


def abandon(writer: Writer, account: str, client_order_id: str, reason: str) -> OrderView:
    """Close an order the broker proved it does not have (recovery); nothing is re-sent."""

    def apply(unit: UnitOfWork) -> None:
        order = existing_order(unit, account, client_order_id)
        status = order.state.status
        if status.rank > OrderStatus.SUBMITTED.rank:
            return  # the broker answered meanwhile: nothing to close
        order.trigger_event(Order.Abandoned, reason=reason)
        unit.collect(order)
        finding = Finding(
            DiscrepancyKind.MISSING_AT_BROKER,
            client_order_id,
            f"the {status} order at the broker",
            "not at the broker",
            f"closed here as never placed ({reason}); nothing re-sent",
            Severity.INFO,
        )
        recorded = record_findings(unit, account, [finding], None)
        resolve_all(unit, recorded, "closed as never placed", "recovery")
        # Closed for a known reason: it is no longer missing or lost.
        kinds = {DiscrepancyKind.MISSING_AT_BROKER, DiscrepancyKind.LOST}
        open_in(unit, account).resolve(unit, kinds, client_order_id, f"closed: {reason}", by="recovery")

    writer.commit(apply)
    return order_view(writer, account, client_order_id)


def declare_lost(  # noqa: PLR0913 - the order and the lookups that failed to confirm it
    writer: Writer,
    account: str,
    client_order_id: str,
    *,
    not_found: int,
    failed: int,
    detected: datetime,
) -> Events:
    """Raise LOST for an in-flight order the broker never confirmed, and lock its symbol.

    One transaction: the CRITICAL discrepancy (not raised again while one is open) and the
    symbol lock, which an operator override of the gate does not lift. Nothing is
    re-sent, cancelled or closed: the order may exist at the broker. Stores nothing if a
    report moved the order out of flight since the lookups.

    Only lookups the broker answered ("not found") prove anything: `failed` ones are named
    in the record, never counted (a failing lookup is STALE_DATA, `lookup_failed`).

    Returns:
        The events stored (none if the order is no longer in flight).

    Raises:
        ValueError: no lookup answered "not found": nothing proves the order is lost.
    """
    if not_found < 1:
        msg = f"{client_order_id}: no lookup answered ({failed} failed); a failed lookup is not 'not found'"
        raise ValueError(msg)

    def apply(unit: UnitOfWork) -> None:
        order = unit.get(order_id(account, client_order_id))
        if order is None or order.state.status not in IN_FLIGHT_STATUSES:
            return  # a report moved it on since the lookup: the broker has it
        state = order.state
        if not open_in(unit, account).is_open(DiscrepancyKind.LOST, client_order_id):
            finding = Finding(
                DiscrepancyKind.LOST,
                client_order_id,
                f"{state.status} order known to the broker",
                f"not confirmed by {not_found + failed} lookups ({not_found} not found, {failed} failed)",
                f"in-flight order never confirmed (declared {detected.isoformat()}); "
                f"{state.symbol} locked; nothing re-sent: resolve by hand",
                scope=f"*:{state.symbol}",
            )
            record_findings(unit, account, [finding], None)
        gate = gate_in(unit, account)
        gate.lock(state.symbol, f"LOST in-flight order {client_order_id}", LOST_ORDER_LOCK)
        unit.collect(gate)

    return writer.commit(apply)


LOOKUP_EXPECTED = "an answer to the lookup of this in-flight order"
"""`expected` of the STALE_DATA a failing in-flight lookup raises (one per order while open)."""


def lookup_failed(
    writer: Writer,
    account: str,
    client_order_id: str,
    *,
    failed: int,
    reason: str,
) -> Events:
    """STALE_DATA for an in-flight order the broker could not be asked about; never LOST.

    The order may be working at the broker: absence is unknown, so nothing is declared,
    locked, re-sent or closed. One discrepancy per order while it stays open however
    many lookups fail (`OpenDiscrepancies`); the gate stays BLOCKED while it is open
    (`judge_gate`), and `lookups_settled` resolves it once a lookup answers or the
    order leaves flight.

    Returns:
        The events stored (none if one is open already).
    """
    finding = Finding(
        DiscrepancyKind.STALE_DATA,
        client_order_id,
        LOOKUP_EXPECTED,
        "lookup failed",
        f"{failed} lookup(s) failed ({reason}); the order may be working: not declared lost, "
        "nothing re-sent; new orders wait until the broker answers",
    )
    return writer.commit(lambda unit: open_in(unit, account).record_new(unit, [finding], None))


def lookups_settled(writer: Writer, account: str, client_order_ids: set[str], resolution: str) -> Events:
    """Resolve the open STALE_DATA of failing lookups of these orders (answered, or out of flight)."""

    def apply(unit: UnitOfWork) -> None:
        open_ones = open_in(unit, account)
        for cid in client_order_ids:
            open_ones.resolve(unit, {DiscrepancyKind.STALE_DATA}, cid, resolution, by="service")

    return writer.commit(apply)


def failing_lookups(queries: Queries, account: str) -> set[str]:
    """Client ids of the account's orders with an open STALE_DATA of a failing lookup."""
    return {
        v.key
        for v in queries.discrepancies(account)
        if v.kind == DiscrepancyKind.STALE_DATA and v.expected == LOOKUP_EXPECTED
    }


def existing_order(unit: UnitOfWork, account: str, client_order_id: str) -> Order:
    """The order `client_order_id` as loaded in `unit`.

    Raises:
        LookupError: no such order was recorded.
    """
    order = unit.get(order_id(account, client_order_id))
    if order is None:
        msg = f"{account}: no order {client_order_id!r}; record it with intend() first"
        raise LookupError(msg)
    return order  # type: ignore[no-any-return]


def order_view(writer: Writer, account: str, client_order_id: str) -> OrderView:
    """The order as stored now.

    Raises:
        LookupError: no such order.
    """
    order = load(writer.store, order_id(account, client_order_id))
    if order is None:
        msg = f"{account}: no order {client_order_id!r}"
        raise LookupError(msg)
    return order.state.view()  # type: ignore[no-any-return]


def _require_decimal(name: str, value: object, *, positive: bool = False) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or (positive and value <= 0):
        msg = f"{name} must be a finite{' positive' if positive else ''} Decimal, got {value!r}"
        raise InvalidReport(msg, field=name)
    if abs(value) >= MAX_FIGURE:
        msg = f"{name} must be below {MAX_FIGURE} in magnitude, got {value}"
        raise InvalidReport(msg, field=name)
