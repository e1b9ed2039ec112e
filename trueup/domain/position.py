"""The Position aggregate: net quantity, cost basis and realized P&L per account + symbol.

Average-cost netting. The position stores its cost basis (average cost times open
quantity) rather than the average, so that fills on one side add exactly whatever
their order; only closing trades divide. Every change an order's fills make reaches
the position as legs (`position_legs`): a trade, or an adjustment of the open lot
when an inferred fill is repriced or superseded, or an execution corrected.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from trueup.domain.ids import position_id
from trueup.domain.money import ZERO, derived_price, money_context
from trueup.domain.status import Side
from trueup.domain.views import PositionView


class Leg(msgspec.Struct, frozen=True):
    """One change to a position, from one order's fills.

    A trade (`adjust=False`) moves `qty` (signed) at `price`. An adjustment
    (`adjust=True`) changes the lot the order built: `qty` units (signed by the
    order's side) and `cost` of cost basis, without a trade.
    """

    qty: Decimal
    price: Decimal
    cost: Decimal = ZERO
    adjust: bool = False


@money_context
def position_legs(
    side: Side,
    before: tuple[Decimal, Decimal],
    after: tuple[Decimal, Decimal],
    price: Decimal,
) -> list[Leg]:
    """Legs that take an order's contribution from `before` to `after`.

    `before` and `after` are the order's (filled quantity, fill cost). New units
    trade at `price` (the execution's or the inferred price); any remaining change
    of cost reprices units already booked; fewer units un-book at their cost.
    """
    (qty_before, cost_before), (qty_after, cost_after) = before, after
    grown, cost_change = qty_after - qty_before, cost_after - cost_before
    legs: list[Leg] = []
    if grown > 0:
        reprice = cost_change - grown * price
        if reprice:
            legs.append(Leg(qty=ZERO, price=price, cost=reprice, adjust=True))
        legs.append(Leg(qty=side.sign * grown, price=price))
    elif grown < 0 or cost_change:
        legs.append(Leg(qty=side.sign * grown, price=price, cost=cost_change, adjust=True))
    return legs


class SyntheticFill(msgspec.Struct, frozen=True):
    """A fill reconciliation books to make our position equal the broker's."""

    exec_id: str
    """Deterministic ("RECON-..."), so reconciling the same snapshot again adds nothing."""
    qty: Decimal
    """Signed: > 0 buys, < 0 sells."""
    price: Decimal


@money_context
def repair_fills(
    exec_prefix: str, local_qty: Decimal, broker_qty: Decimal, broker_avg: Decimal
) -> list[SyntheticFill]:
    """Synthetic fills taking `local_qty` to `broker_qty`, priced at the broker's average.

    One fill when the side is kept; two when it flips (close ours, open the broker's),
    so realized P&L and the new lot are each booked at one price.
    """
    if local_qty == broker_qty:
        return []
    flips = local_qty != 0 and broker_qty != 0 and (local_qty > 0) != (broker_qty > 0)
    if flips:
        return [
            SyntheticFill(f"{exec_prefix}-1", -local_qty, broker_avg),
            SyntheticFill(f"{exec_prefix}-2", broker_qty, broker_avg),
        ]
    return [SyntheticFill(f"{exec_prefix}-1", broker_qty - local_qty, broker_avg)]


class PositionState(msgspec.Struct, kw_only=True):
    """Net quantity, unsigned cost basis and realized P&L; mutated only by events."""

    account: str
    symbol: str
    qty: Decimal = ZERO
    """Signed: > 0 long, < 0 short."""
    cost: Decimal = ZERO
    """Cost basis of the open quantity: average cost times |qty|."""
    realized_pnl: Decimal = ZERO

    @property
    def avg_cost(self) -> Decimal:
        """Average cost per unit of the open quantity; 0 when flat."""
        return derived_price(self.cost, abs(self.qty)) if self.qty else ZERO

    @money_context
    def trade(self, qty: Decimal, price: Decimal) -> None:
        """Net a trade of signed `qty` at `price` into the position (apply only)."""
        if not self.qty or (self.qty > 0) == (qty > 0):
            self.qty += qty
            self.cost += abs(qty) * price
            return
        closing = min(abs(qty), abs(self.qty))
        closed_cost = self.cost if closing == abs(self.qty) else self.cost * closing / abs(self.qty)
        direction = 1 if self.qty > 0 else -1
        self.realized_pnl += direction * (closing * price - closed_cost)
        self.cost -= closed_cost
        self.qty += qty
        if (self.qty > 0) != (direction > 0) and self.qty:
            # Flipped side: the rest of the trade opens a new lot at the trade price.
            self.cost = abs(self.qty) * price

    @money_context
    def adjust(self, side: Side, leg: Leg) -> None:
        """Change the lot an order built by `leg.qty` units and `leg.cost` (apply only).

        When the position no longer holds that side, the units were closed already:
        a cost change moves realized P&L, and removed units trade back at `leg.price`.
        """
        holds_side = self.qty != 0 and (self.qty > 0) == (side is Side.BUY)
        # leg.qty is signed by the order's side; side.sign * leg.qty is the lot's growth.
        if holds_side and abs(self.qty) + side.sign * leg.qty >= 0:
            self.qty += leg.qty
            self.cost += leg.cost  # cost basis is unsigned on both sides
            if not self.qty:
                # Nothing left open: what cost remains was made or lost.
                self.realized_pnl -= side.sign * self.cost
                self.cost = ZERO
            return
        if leg.qty:
            self.trade(leg.qty, leg.price)
            return
        self.realized_pnl -= side.sign * leg.cost

    def view(self) -> PositionView:
        """A frozen copy of the position."""
        return PositionView(
            account=self.account,
            symbol=self.symbol,
            qty=self.qty,
            avg_cost=self.avg_cost,
            realized_pnl=self.realized_pnl,
        )


class Position(Aggregate):
    """Net position of one symbol in one account."""

    TOPIC = "trueup:Position"

    @staticmethod
    def create_id(account: str, symbol: str) -> UUID:
        """Deterministic id per account and symbol."""
        return position_id(account, symbol)

    class Event(Aggregate.Event):
        """Base of position events."""

        TOPIC = "trueup:Position.Event"

    class Opened(Event, Aggregate.Created):
        """The first fill (or broker position) in this symbol was seen."""

        TOPIC = "trueup:Position.Opened"
        account: str
        symbol: str

    class Changed(Event):
        """An order's fills changed the position."""

        TOPIC = "trueup:Position.Changed"
        client_order_id: str
        side: Side
        legs: tuple[Leg, ...]
        ts_event: datetime

        def apply(self, aggregate: Position) -> None:
            """Apply each leg in order."""
            for leg in self.legs:
                if leg.adjust:
                    aggregate.state.adjust(self.side, leg)
                else:
                    aggregate.state.trade(leg.qty, leg.price)

    class Synced(Event):
        """POSITION_SYNCED: reconciliation set the position to the broker's (policy `repair`).

        The difference is booked as synthetic reconciliation fills priced at the broker's
        average cost (two when the position flips side: one closes, one opens), then the
        cost basis is set to the broker's, so quantity and average both match it.
        """

        TOPIC = "trueup:Position.Synced"
        fills: tuple[SyntheticFill, ...]
        qty: Decimal
        """The quantity after the sync: the broker's."""
        avg_cost: Decimal
        evidence_id: UUID
        ts_event: datetime
        account: str = ""
        """Empty in events stored before the field existed (docs/events.md)."""
        symbol: str = ""
        qty_before: Decimal | None = None
        """Our quantity before the sync (None in events stored before the field existed)."""

        @money_context
        def apply(self, aggregate: Position) -> None:
            """Trade the synthetic fills, then take the broker's cost basis."""
            state = aggregate.state
            for fill in self.fills:
                state.trade(fill.qty, fill.price)
            state.qty = self.qty
            state.cost = abs(self.qty) * self.avg_cost

    def __init__(self, account: str, symbol: str) -> None:
        """Initialise flat."""
        self.state: PositionState = PositionState(account=account, symbol=symbol)

    @classmethod
    def open(cls, account: str, symbol: str) -> Position:
        """Start a flat position."""
        return cls._create(cls.Opened, id=position_id(account, symbol), account=account, symbol=symbol)
