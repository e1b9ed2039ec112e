"""The Order aggregate: one order's lifecycle, rebuilt from its events.

State changes only through the nested events below; the rules that decide which
events a broker report causes live in `trueup.domain.rules` as pure functions. The
state they build is `trueup.domain.order_state.OrderState`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from trueup.domain.ids import order_id
from trueup.domain.money import ZERO
from trueup.domain.order_state import AmendRequest, BookedFill, OrderState, exec_key
from trueup.domain.status import OrderFlag, OrderStatus, Side

__all__ = ["AmendRequest", "BookedFill", "Change", "Order", "OrderState", "exec_key"]


class Order(Aggregate):
    """One order, keyed by account and client order id."""

    TOPIC = "trueup:Order"

    @staticmethod
    def create_id(account: str, client_order_id: str) -> UUID:
        """Deterministic id: the same client order id always names the same order."""
        return order_id(account, client_order_id)

    class Event(Aggregate.Event):
        """Base of order events."""

        TOPIC = "trueup:Order.Event"

    class Intended(Event, Aggregate.Created):
        """We recorded the intent to place this order, before sending anything."""

        TOPIC = "trueup:Order.Intended"
        account: str
        client_order_id: str
        symbol: str
        side: Side
        quantity: Decimal
        limit_price: Decimal | None
        strategy: str | None
        ts_intended: datetime

    class Discovered(Event, Aggregate.Created):
        """The broker reported an order we had no record of."""

        TOPIC = "trueup:Order.Discovered"
        account: str
        client_order_id: str
        symbol: str
        side: Side
        quantity: Decimal | None
        limit_price: Decimal | None
        ts_discovered: datetime

    class BrokerIdLinked(Event):
        """The broker's id for this order became known."""

        TOPIC = "trueup:Order.BrokerIdLinked"
        broker_order_id: str

        def apply(self, aggregate: Order) -> None:
            """Remember the id (one order may have several: replace chains, slices)."""
            aggregate.state.broker_order_ids = (*aggregate.state.broker_order_ids, self.broker_order_id)

    class Chained(Event):
        """This order is a replace leg: it continues the order `replaces` (our client id)."""

        TOPIC = "trueup:Order.Chained"
        replaces: str

        def apply(self, aggregate: Order) -> None:
            """Remember the predecessor."""
            aggregate.state.replaces = self.replaces

    class Superseded(Event):
        """The broker confirmed a replacement: the order continues as `replaced_by`."""

        TOPIC = "trueup:Order.Superseded"
        replaced_by: str

        def apply(self, aggregate: Order) -> None:
            """Remember the successor."""
            aggregate.state.replaced_by = self.replaced_by

    class StatusUpdated(Event):
        """Status or flags moved (forward in rank, or flags/time at equal rank)."""

        TOPIC = "trueup:Order.StatusUpdated"
        status: OrderStatus
        flags: frozenset[OrderFlag]
        raw_status: str
        source: str
        ts_event: datetime | None
        """Time of the report that set this; kept unchanged when fills imply the move."""
        reason: str

        def apply(self, aggregate: Order) -> None:
            """Take the new status, flags and time."""
            aggregate.state.status = self.status
            aggregate.state.flags = self.flags
            aggregate.state.raw_status = self.raw_status
            aggregate.state.status_ts = self.ts_event

    class AmendRequested(Event):
        """We are about to ask the broker to change the order's terms: stored before the call.

        A report with the requested quantity is then the broker confirming it; any other
        quantity change is one nobody asked for (`decide_order_report`).
        """

        TOPIC = "trueup:Order.AmendRequested"
        quantity: Decimal | None
        limit_price: Decimal | None
        ts_requested: datetime
        by: str = ""
        """Who asked: "" for the submit path, the operator's name for `trueup amend`."""

        def apply(self, aggregate: Order) -> None:
            """Remember the request until the broker confirms it."""
            request = AmendRequest(self.quantity, self.limit_price, self.ts_requested)
            aggregate.state.amend_requests = (*aggregate.state.amend_requests, request)

    class Amended(Event):
        """The broker's quantity or limit price changed (modify/replace confirmed)."""

        TOPIC = "trueup:Order.Amended"
        quantity: Decimal
        limit_price: Decimal | None
        ts_event: datetime

        def apply(self, aggregate: Order) -> None:
            """Take the broker's terms; the request they answer, and older ones, are done."""
            state = aggregate.state
            if state.quantity != self.quantity:
                requests = state.amend_requests
                matched = next((i for i, r in enumerate(requests) if r.covers(self.quantity)), None)
                if matched is not None:
                    state.amend_requests = requests[matched + 1 :]
            state.quantity = self.quantity
            state.limit_price = self.limit_price
            state.amend_ts = self.ts_event

    class FillBooked(Event):
        """A real execution was booked; it supersedes up to `superseded_qty` inferred."""

        TOPIC = "trueup:Order.FillBooked"
        exec_id: str
        key: str
        revision: int
        qty: Decimal
        price: Decimal
        ts_event: datetime
        commission: Decimal | None
        superseded_qty: Decimal
        """Inferred quantity this execution now accounts for."""
        inferred_price: Decimal | None
        """Price of the inferred quantity still outstanding, re-derived from the report."""

        def apply(self, aggregate: Order) -> None:
            """Book the fill and shrink the inferred part."""
            aggregate.state.book(
                self.key,
                BookedFill(
                    self.exec_id,
                    self.revision,
                    self.qty,
                    self.price,
                    self.ts_event,
                    self.commission,
                ),
            )
            state = aggregate.state
            state.set_inferred(state.inferred_qty - self.superseded_qty, self.inferred_price)

    class FillCorrected(Event):
        """A broker correction replaced an earlier execution (IB ".01" -> ".02")."""

        TOPIC = "trueup:Order.FillCorrected"
        exec_id: str
        key: str
        revision: int
        qty: Decimal
        price: Decimal
        ts_event: datetime
        commission: Decimal | None
        previous_exec_id: str
        superseded_qty: Decimal
        inferred_price: Decimal | None

        def apply(self, aggregate: Order) -> None:
            """Replace the fill under the same key."""
            aggregate.state.book(
                self.key,
                BookedFill(
                    self.exec_id,
                    self.revision,
                    self.qty,
                    self.price,
                    self.ts_event,
                    self.commission,
                ),
            )
            state = aggregate.state
            state.set_inferred(state.inferred_qty - self.superseded_qty, self.inferred_price)

    class FillInferred(Event):
        """A cumulative report ran ahead of the executions we have: the gap is booked, priced.

        `inferred_qty` is the whole inferred part afterwards (`qty` of it is new), priced at
        `price` so that the order's average matches the broker's `reported_avg`.
        """

        TOPIC = "trueup:Order.FillInferred"
        qty: Decimal
        inferred_qty: Decimal
        price: Decimal
        reported_filled: Decimal
        reported_avg: Decimal | None
        ts_event: datetime

        def apply(self, aggregate: Order) -> None:
            """Grow the inferred part and remember the report it matches."""
            aggregate.state.set_inferred(self.inferred_qty, self.price)
            aggregate.state.reported_filled = self.reported_filled
            aggregate.state.reported_avg = self.reported_avg

    class CommissionRecorded(Event):
        """The commission of a booked execution arrived (IB sends it after the fill)."""

        TOPIC = "trueup:Order.CommissionRecorded"
        key: str
        commission: Decimal

        def apply(self, aggregate: Order) -> None:
            """Attach the commission to the fill."""
            fill = aggregate.state.fills[self.key]
            aggregate.state.fills[self.key] = msgspec.structs.replace(fill, commission=self.commission)

    class Submitted(Event):
        """We are about to send the order: stored before the broker call (in flight)."""

        TOPIC = "trueup:Order.Submitted"
        ts_submitted: datetime

        def apply(self, aggregate: Order) -> None:
            """SUBMITTED, unless a broker report already moved it further."""
            state = aggregate.state
            state.submitted_at = self.ts_submitted
            if state.status.rank < OrderStatus.SUBMITTED.rank:
                state.status = OrderStatus.SUBMITTED

    class Abandoned(Event):
        """Recovery proved the order is not at the broker; it is closed here, never re-sent."""

        TOPIC = "trueup:Order.Abandoned"
        reason: str

        def apply(self, aggregate: Order) -> None:
            """Close the order as REJECTED: it never existed at the broker."""
            aggregate.state.status = OrderStatus.REJECTED
            aggregate.state.flags = frozenset()
            aggregate.state.raw_status = f"abandoned: {self.reason}"

    class Attached(Event):
        """An orphan record turned out to be this order: its fills and inferred part move here.

        The orphan was tracked under an external id until a report named our client id
        with the same broker id. The moved fills are already in the position (booked on the
        orphan), so moving them changes no position; they are deduplicated by execution key
        (one this order already holds is kept, and the booking un-books its twin from the
        position).
        """

        TOPIC = "trueup:Order.Attached"
        orphan: str
        """The external client id (`~<broker id>`) the order was tracked under."""
        broker_order_id: str
        fills: tuple[BookedFill, ...]
        inferred_qty: Decimal
        inferred_price: Decimal | None
        reported_filled: Decimal
        reported_avg: Decimal | None
        status: OrderStatus
        """The orphan's status: taken if it ranks higher and this order is still open."""

        def apply(self, aggregate: Order) -> None:
            """Take the orphan's broker id, fills, inferred part and status."""
            state = aggregate.state
            if self.broker_order_id not in state.broker_order_ids:
                state.broker_order_ids = (*state.broker_order_ids, self.broker_order_id)
            for fill in self.fills:
                key = exec_key(fill.exec_id)[0]
                if key not in state.fills:
                    state.book(key, fill)
            if self.inferred_qty > state.inferred_qty:
                state.set_inferred(self.inferred_qty, self.inferred_price)
                state.reported_filled = self.reported_filled
                state.reported_avg = self.reported_avg
            if not state.status.is_terminal and self.status.rank > state.status.rank:
                state.status = self.status
            state.missing_cycles = 0

    class AttachedTo(Event):
        """This orphan record is our order `client_order_id`: closed, its fills moved there."""

        TOPIC = "trueup:Order.AttachedTo"
        client_order_id: str

        def apply(self, aggregate: Order) -> None:
            """Empty the record (REPLACED by our order), so nothing is counted twice."""
            state = aggregate.state
            state.status = OrderStatus.REPLACED
            state.flags = frozenset()
            state.raw_status = f"attached to our order {self.client_order_id}"
            state.replaced_by = self.client_order_id
            state.fills = {}
            state.real_filled = ZERO
            state.real_cost = ZERO
            state.set_inferred(ZERO, None)
            state.reported_filled = ZERO
            state.reported_avg = None

    class DeclaredGone(Event):
        """An operator settled a LOST order as gone: closed here as CANCELED, never re-sent.

        CANCELED, not REJECTED: the order may have worked at the broker, and fills that
        still arrive are booked (reaching the quantity makes it FILLED, the one terminal
        correction).
        """

        TOPIC = "trueup:Order.DeclaredGone"
        by: str
        reason: str

        def apply(self, aggregate: Order) -> None:
            """Close the order; it is no longer missing."""
            state = aggregate.state
            state.status = OrderStatus.CANCELED
            state.flags = frozenset()
            state.raw_status = f"declared gone by {self.by}: {self.reason}"
            state.missing_cycles = 0

    class Found(Event):
        """An operator settled a LOST order as found at the broker: it stays open, counted afresh."""

        TOPIC = "trueup:Order.Found"
        by: str
        reason: str

        def apply(self, aggregate: Order) -> None:
            """Reset the missing count: the next snapshot that omits it starts from one."""
            aggregate.state.missing_cycles = 0

    class Updated(Event):
        """ORDER_UPDATED: reconciliation brought the order in line with a broker snapshot.

        Stored after the events it derived (acceptance, amendments, fills, final status),
        as the one summary of what the snapshot changed. It names the order (account,
        client order id, symbol) so a subscriber needs no second lookup; events stored
        before those fields existed decode with them empty (docs/events.md).
        """

        TOPIC = "trueup:Order.Updated"
        status_before: OrderStatus | None
        """None when the order was unknown before this snapshot (an orphan: never INTENDED)."""
        status_after: OrderStatus
        filled_before: Decimal
        filled_after: Decimal
        evidence_id: UUID
        account: str = ""
        client_order_id: str = ""
        symbol: str = ""

    class MissingAtBroker(Event):
        """Open here, absent from a complete-history snapshot, `cycles` times in a row."""

        TOPIC = "trueup:Order.MissingAtBroker"
        cycles: int
        evidence_id: UUID

        def apply(self, aggregate: Order) -> None:
            """Count the cycle."""
            aggregate.state.missing_cycles = self.cycles

    class SeenAtBroker(Event):
        """Listed by the broker again after being missing."""

        TOPIC = "trueup:Order.SeenAtBroker"
        evidence_id: UUID

        def apply(self, aggregate: Order) -> None:
            """Reset the missing count."""
            aggregate.state.missing_cycles = 0

    def __init__(  # noqa: PLR0913 - one parameter per field of the created events
        self,
        *,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        quantity: Decimal | None,
        limit_price: Decimal | None,
        strategy: str | None = None,
        ts_intended: datetime | None = None,
        ts_discovered: datetime | None = None,
    ) -> None:
        """Initialise from Intended (origin "intent") or Discovered (origin "broker")."""
        self.state: OrderState = OrderState(
            account=account,
            client_order_id=client_order_id,
            symbol=symbol,
            side=Side(side),
            quantity=quantity,
            limit_price=limit_price,
            strategy=strategy,
            origin="intent" if ts_intended is not None else "broker",
            status_ts=ts_discovered,
            created_at=ts_intended or ts_discovered,
        )

    @classmethod
    def intend(  # noqa: PLR0913 - the terms of an order
        cls,
        *,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        quantity: Decimal,
        limit_price: Decimal | None,
        strategy: str | None,
        ts: datetime,
    ) -> Order:
        """Record the intent to place an order (write-ahead, before any broker call)."""
        return cls._create(
            cls.Intended,
            id=order_id(account, client_order_id),
            account=account,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            limit_price=limit_price,
            strategy=strategy,
            ts_intended=ts,
        )

    @classmethod
    def discover(  # noqa: PLR0913 - the terms the broker gave
        cls,
        *,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        quantity: Decimal | None,
        limit_price: Decimal | None,
        ts: datetime,
    ) -> Order:
        """Start tracking an order first seen in a broker report."""
        return cls._create(
            cls.Discovered,
            id=order_id(account, client_order_id),
            account=account,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            limit_price=limit_price,
            ts_discovered=ts,
        )

    def record(self, changes: list[Change]) -> None:
        """Trigger the events a rule decided, in order."""
        for change in changes:
            self.trigger_event(change.event, **change.fields)


class Change(msgspec.Struct, frozen=True):
    """One event a rule decided to trigger: the event class and its fields."""

    event: type[Order.Event]
    fields: dict[str, Any]
