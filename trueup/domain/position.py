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
        """Set to the broker's figures by reconciliation (policy `repair`)."""

        TOPIC = "trueup:Position.Synced"
        qty: Decimal
        avg_cost: Decimal
        ts_event: datetime
        reason: str

        @money_context
        def apply(self, aggregate: Position) -> None:
            """Take the broker's quantity and cost basis; realized P&L is kept."""
            aggregate.state.qty = self.qty
            aggregate.state.cost = abs(self.qty) * self.avg_cost

    def __init__(self, account: str, symbol: str) -> None:
        """Initialise flat."""
        self.state: PositionState = PositionState(account=account, symbol=symbol)

    @classmethod
    def open(cls, account: str, symbol: str) -> Position:
        """Start a flat position."""
        return cls._create(cls.Opened, id=position_id(account, symbol), account=account, symbol=symbol)
