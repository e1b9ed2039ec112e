"""Read-only views handed to users: plain frozen Structs, safe to keep and compare."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

import msgspec

from trueup.domain.status import OrderFlag, OrderStatus, Side


class FillView(msgspec.Struct, frozen=True):
    """One booked execution of an order."""

    exec_id: str
    """Broker execution id (the latest correction, for IB)."""
    qty: Decimal
    price: Decimal
    ts_event: datetime
    commission: Decimal | None = None
    """None means unknown, never zero."""


class OrderView(msgspec.Struct, frozen=True):
    """What trueup knows about one order."""

    account: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal | None
    """None only for an order known solely from its fills."""
    status: OrderStatus
    flags: frozenset[OrderFlag]
    filled_qty: Decimal
    """Booked real fills plus any inferred quantity."""
    avg_fill_price: Decimal | None
    inferred_qty: Decimal
    """Part of filled_qty booked from a cumulative report, not yet backed by executions."""
    broker_order_ids: tuple[str, ...]
    limit_price: Decimal | None
    strategy: str | None
    origin: str
    """"intent" when we recorded it before sending, "broker" when first seen at the broker."""
    fills: tuple[FillView, ...] = ()
    updated_at: datetime | None = None
    """ts_event of the last status change."""
    created_at: datetime | None = None
    """When the intent was recorded, or the order first seen at the broker."""
    submitted_at: datetime | None = None
    """When SUBMITTED was stored, just before the broker call (our clock)."""
    replaces: str | None = None
    """Client id of the order this replace leg continues (Alpaca replace chains)."""
    replaced_by: str | None = None
    """Client id of the leg that replaced this order, once the broker confirmed it."""

    @property
    def is_open(self) -> bool:
        """Whether the order may still trade."""
        return not self.status.is_terminal


class PositionView(msgspec.Struct, frozen=True):
    """Net position of one instrument in one account."""

    account: str
    symbol: str
    qty: Decimal
    """Signed: > 0 long, < 0 short."""
    avg_cost: Decimal | None
    """Average cost per unit of the open quantity (0 when flat). None when unknown: part of
    the quantity was booked by a repair without a broker cost comparable with ours (never
    a made-up 0); closing those units realizes no P&L."""
    realized_pnl: Decimal


class DiscrepancyView(msgspec.Struct, frozen=True):
    """One recorded discrepancy."""

    id: UUID
    kind: str
    severity: str
    account: str
    key: str
    expected: str
    actual: str
    detail: str
    evidence_id: UUID | None
    evidence_position: int | None
    """Log position of the raw evidence, when it is in the log."""
    position: int
    """Log position of the discrepancy itself."""
    ts_detected: datetime
    resolution: str | None = None
    scope: str | None = None
    """Quarantine scope of an orphan order or a symbol lock."""
    last_seen: datetime | None = None
    """When the problem was last seen (the latest `Discrepancy.Seen`, else when detected)."""
    count: int = 1
    """Sightings of the problem: 1 when raised, one more for each reconcile or report that saw it again."""
    topic: str = ""
    """With kind and key, which problem this is (`trueup.domain.discrepancy.problem_topic`)."""
    resolved_by: str | None = None
    acknowledged: bool = False
    """Resolved by an operator: the same problem seen again unchanged is not raised again."""

    @property
    def problem(self) -> tuple[str, str, str]:
        """The problem this discrepancy records: (kind, subject, topic)."""
        return (self.kind, self.key, self.topic)
