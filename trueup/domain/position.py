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
    price: Decimal | None
    """A closing leg's is our own average cost (it realizes nothing); an opening leg's is
    the broker's average when comparable with ours. None: unknown (never 0)."""


@money_context
def repair_fills(
    exec_prefix: str,
    local: tuple[Decimal, Decimal | None],
    broker_qty: Decimal,
    broker_avg: Decimal | None,
) -> list[SyntheticFill]:
    """Synthetic fills taking our `local` (quantity, average cost) to `broker_qty`.

    A repair knows no trade price: units it removes close at our own average cost, so
    it realizes no P&L; units it adds open at `broker_avg` (None when the broker's
    average is not a cost basis comparable with ours: the new lot's cost is unknown).
    One fill when the side is kept; two when it flips (close ours, open the broker's).
    """
    local_qty, local_avg = local
    if local_qty == broker_qty:
        return []
    flips = local_qty != 0 and broker_qty != 0 and (local_qty > 0) != (broker_qty > 0)
    if flips:
        return [
            SyntheticFill(f"{exec_prefix}-1", -local_qty, local_avg),
            SyntheticFill(f"{exec_prefix}-2", broker_qty, broker_avg),
        ]
    closes = abs(broker_qty) < abs(local_qty)
    return [SyntheticFill(f"{exec_prefix}-1", broker_qty - local_qty, local_avg if closes else broker_avg)]


class PositionState(msgspec.Struct, kw_only=True):
    """Net quantity, unsigned cost basis and realized P&L; mutated only by events."""

    account: str
    symbol: str
    qty: Decimal = ZERO
    """Signed: > 0 long, < 0 short."""
    cost: Decimal = ZERO
    """Cost basis of the open quantity: average cost times |qty|."""
    realized_pnl: Decimal = ZERO
    cost_known: bool = True
    """False while part of the open quantity came from a repair without a comparable broker
    cost: `cost` is then not a cost basis, and closing such units realizes no P&L."""

    @property
    def avg_cost(self) -> Decimal | None:
        """Average cost per unit of the open quantity; 0 when flat; None when unknown."""
        if not self.qty:
            return ZERO
        return derived_price(self.cost, abs(self.qty)) if self.cost_known else None

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
        if self.cost_known:
            self.realized_pnl += direction * (closing * price - closed_cost)
        self.cost -= closed_cost
        self.qty += qty
        if not self.qty:
            self.cost, self.cost_known = ZERO, True
        elif (self.qty > 0) != (direction > 0):
            # Flipped side: the rest of the trade opens a new lot at the trade price.
            self.cost, self.cost_known = abs(self.qty) * price, True

    @money_context
    def sync(self, qty: Decimal, price: Decimal | None) -> None:
        """Book a repair leg of signed `qty` (apply only): closes at cost, opens at `price`.

        A closing leg (never past flat: `repair_fills` splits a flip) removes its share
        of the cost basis and realizes nothing; an opening leg without a price makes the
        lot's cost unknown.
        """
        if self.qty and (self.qty > 0) != (qty > 0):
            closing = (1 if qty > 0 else -1) * min(abs(qty), abs(self.qty))
            if abs(closing) == abs(self.qty):
                self.cost, self.cost_known = ZERO, True
            else:
                self.cost -= self.cost * abs(closing) / abs(self.qty)
            self.qty += closing
            qty -= closing  # what is left opens on the other side
            if not qty:
                return
        self.qty += qty
        if price is None:
            self.cost_known = False
        else:
            self.cost += abs(qty) * price

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
                if self.cost_known:
                    self.realized_pnl -= side.sign * self.cost
                self.cost, self.cost_known = ZERO, True
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

        The difference is booked as synthetic reconciliation fills (two when the position
        flips side: one closes, one opens). With `at_cost` (every repair since it was
        added) closing legs close at our own cost and realize nothing, opening legs open
        at their price or at an unknown cost, and the cost basis becomes the broker's
        only when `avg_cost` is given (comparable with ours). Events stored before
        `at_cost` traded their fills at the broker's average and took it as cost basis,
        and replay the same.
        """

        TOPIC = "trueup:Position.Synced"
        fills: tuple[SyntheticFill, ...]
        qty: Decimal
        """The quantity after the sync: the broker's."""
        avg_cost: Decimal | None
        """The broker's average as our cost basis; None when not comparable (kept/unknown)."""
        evidence_id: UUID
        ts_event: datetime
        at_cost: bool = False
        account: str = ""
        """Empty in events stored before the field existed (docs/events.md)."""
        symbol: str = ""
        qty_before: Decimal | None = None
        """Our quantity before the sync (None in events stored before the field existed)."""

        @money_context
        def apply(self, aggregate: Position) -> None:
            """Book the synthetic fills, then take the broker's cost basis if it is one."""
            state = aggregate.state
            for fill in self.fills:
                if self.at_cost:
                    state.sync(fill.qty, fill.price)
                else:
                    state.trade(fill.qty, fill.price or ZERO)
            state.qty = self.qty
            if self.avg_cost is not None:
                state.cost, state.cost_known = abs(self.qty) * self.avg_cost, True
            elif not self.qty:
                state.cost, state.cost_known = ZERO, True

    def __init__(self, account: str, symbol: str) -> None:
        """Initialise flat."""
        self.state: PositionState = PositionState(account=account, symbol=symbol)

    @classmethod
    def open(cls, account: str, symbol: str) -> Position:
        """Start a flat position."""
        return cls._create(cls.Opened, id=position_id(account, symbol), account=account, symbol=symbol)
