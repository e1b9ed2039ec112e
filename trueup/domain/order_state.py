"""What an order's events established (`OrderState`), and the execution-id rule it books by.

Pure data: mutated only by the `trueup.domain.order.Order` events' apply().
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

import msgspec

from trueup.domain.money import ZERO, derived_price, money_context
from trueup.domain.status import OrderFlag, OrderStatus, Side
from trueup.domain.views import FillView, OrderView

# IB execution ids look like "0000e0d5.6553f0ca.01.01"; a correction differs only in
# the digits after the final period (".01" -> ".02") and replaces the original.
_REVISED_EXEC_ID = re.compile(r"^(?P<base>[^.]+\..+)\.(?P<revision>\d+)$")


def exec_key(exec_id: str) -> tuple[str, int]:
    """Split an execution id into its dedupe key and correction revision.

    "0000e0d5.6553f0ca.01.02" -> ("0000e0d5.6553f0ca.01", 2); ids without the IB
    shape (Alpaca UUIDs, Kite trade ids) are their own key with revision 0.
    """
    match = _REVISED_EXEC_ID.match(exec_id)
    if match is None:
        return exec_id, 0
    return match["base"], int(match["revision"])


class BookedFill(msgspec.Struct, frozen=True):
    """A real execution booked on an order (latest revision for corrected ones)."""

    exec_id: str
    revision: int
    qty: Decimal
    price: Decimal
    ts_event: datetime
    commission: Decimal | None


class AmendRequest(msgspec.Struct, frozen=True):
    """Terms we asked the broker to change an order to, stored before the call (write-ahead).

    None in a field leaves that term as it was.
    """

    quantity: Decimal | None
    limit_price: Decimal | None
    ts_requested: datetime

    def covers(self, quantity: Decimal) -> bool:
        """Whether a broker quantity is the one this request asked for."""
        return self.quantity is not None and self.quantity == quantity


class OrderState(msgspec.Struct, kw_only=True):
    """Everything an order's events established; mutated only by those events' apply()."""

    account: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal | None
    limit_price: Decimal | None
    strategy: str | None
    origin: str
    """"intent" if we recorded it before sending, "broker" if first seen in a report."""
    status: OrderStatus = OrderStatus.INTENDED
    flags: frozenset[OrderFlag] = frozenset()
    raw_status: str | None = None
    status_ts: datetime | None = None
    """ts_event of the report that last set status or flags."""
    amend_ts: datetime | None = None
    """ts_event of the report whose terms (quantity, limit) we hold."""
    broker_order_ids: tuple[str, ...] = ()
    fills: dict[str, BookedFill] = msgspec.field(default_factory=dict)
    """Real executions by dedupe key (see exec_key)."""
    real_filled: Decimal = ZERO
    real_cost: Decimal = ZERO
    inferred_qty: Decimal = ZERO
    """Filled quantity known only from a cumulative report."""
    inferred_price: Decimal | None = None
    reported_filled: Decimal = ZERO
    """Cumulative of the report the inferred part was priced from."""
    reported_avg: Decimal | None = None
    submitted_at: datetime | None = None
    """When we stored SUBMITTED, just before the broker call."""
    created_at: datetime | None = None
    """When we recorded the intent, or first saw the order at the broker."""
    missing_cycles: int = 0
    """Consecutive complete-history snapshots that did not list this open order."""
    replaces: str | None = None
    """Client id of the order this one replaced (Alpaca replace chains: one leg per broker order)."""
    replaced_by: str | None = None
    """Client id of the order that replaced this one, once the broker confirmed it."""
    amend_requests: tuple[AmendRequest, ...] = ()
    """Amends we asked for that the broker has not confirmed yet, oldest first."""

    def requested(self, quantity: Decimal) -> bool:
        """Whether we asked the broker for `quantity` (an amend not yet confirmed)."""
        return any(request.covers(quantity) for request in self.amend_requests)

    @money_context
    def book(self, key: str, fill: BookedFill) -> None:
        """Put `fill` under `key`, replacing an earlier revision (used by apply only)."""
        previous = self.fills.get(key)
        if previous is not None:
            self.real_filled -= previous.qty
            self.real_cost -= previous.qty * previous.price
        self.fills[key] = fill
        self.real_filled += fill.qty
        self.real_cost += fill.qty * fill.price

    def set_inferred(self, qty: Decimal, price: Decimal | None) -> None:
        """Set the inferred part (used by apply only); no quantity means no price."""
        self.inferred_qty = qty
        self.inferred_price = price if qty > 0 else None

    @property
    def filled_qty(self) -> Decimal:
        """Real plus inferred filled quantity."""
        return self.real_filled + self.inferred_qty

    @property
    @money_context
    def fill_cost(self) -> Decimal:
        """Total cost of the filled quantity (real plus inferred)."""
        inferred = self.inferred_qty * self.inferred_price if self.inferred_price else ZERO
        return self.real_cost + inferred

    @property
    def avg_fill_price(self) -> Decimal | None:
        """Average price of the filled quantity, or None before any fill."""
        filled = self.filled_qty
        return derived_price(self.fill_cost, filled) if filled > 0 else None

    def view(self) -> OrderView:
        """A frozen copy of what the order says now."""
        return OrderView(
            account=self.account,
            client_order_id=self.client_order_id,
            symbol=self.symbol,
            side=self.side,
            quantity=self.quantity,
            status=self.status,
            flags=self.flags,
            filled_qty=self.filled_qty,
            avg_fill_price=self.avg_fill_price,
            inferred_qty=self.inferred_qty,
            broker_order_ids=self.broker_order_ids,
            limit_price=self.limit_price,
            strategy=self.strategy,
            origin=self.origin,
            fills=tuple(
                FillView(f.exec_id, f.qty, f.price, f.ts_event, f.commission)
                for f in sorted(self.fills.values(), key=lambda f: (f.ts_event, f.exec_id))
            ),
            updated_at=self.status_ts,
            created_at=self.created_at,
            submitted_at=self.submitted_at,
            replaces=self.replaces,
            replaced_by=self.replaced_by,
        )
