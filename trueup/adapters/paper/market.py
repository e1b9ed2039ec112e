"""The paper market's rules, as pure functions: prices, crossing, fill sizes, netting.

Prices are integer ticks (a cent each), walked by a seeded generator, and turned into
`Decimal` only at the edge: no float ever touches a price or a quantity. The broker
(`broker.py`) calls these with its stored generator and stores what they return.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Final

from trueup.adapters.paper.rng import SplitMix64
from trueup.domain.money import ZERO, derived_price, money_context

__all__ = [
    "MAX_MOVE_TICKS",
    "PARTIAL_PPM",
    "START_TICKS",
    "TICK",
    "Book",
    "average_cost",
    "book_execution",
    "crosses",
    "fill_size",
    "net_positions",
    "tick_price",
    "walk",
]

TICK: Final = Decimal("0.01")
"""Price of one tick."""
START_TICKS: Final = 10_000
"""Every symbol opens at 100.00."""
MAX_MOVE_TICKS: Final = 20
"""A step moves a price by at most this many ticks either way (uniform)."""
PARTIAL_PPM: Final = 300_000
"""Chance (per million) that an execution takes only part of what remains."""

Book = dict[str, tuple[Decimal, Decimal]]
"""Net position per symbol: (signed quantity, unsigned cost basis of the open quantity)."""


def tick_price(ticks: int) -> Decimal:
    """The price of `ticks` ticks, exactly (10_000 -> Decimal("100.00"))."""
    return Decimal(ticks).scaleb(-2)


def walk(ticks: int, rng: SplitMix64) -> int:
    """The next price of a symbol: one uniform move, never below one tick."""
    return max(1, ticks + rng.between(-MAX_MOVE_TICKS, MAX_MOVE_TICKS))


def crosses(side: str, limit: Decimal | None, price: Decimal) -> bool:
    """Whether an order may execute at `price`: market orders always; limits when crossed."""
    if limit is None:
        return True
    return price <= limit if side == "buy" else price >= limit


def fill_size(remaining: Decimal, rng: SplitMix64) -> Decimal:
    """How much of `remaining` one execution takes: all of it, or a whole part of it.

    Both rolls (partial or not, and the size) are always made, so the generator moves
    the same way whichever way the first roll goes. A partial execution takes 1 to
    floor(remaining) - 1 units, so something always remains; with fewer than two whole
    units remaining the order fills completely.
    """
    partial = rng.chance(PARTIAL_PPM)
    units = int(remaining)
    size = rng.below(max(units - 1, 1)) + 1
    if partial and units >= 2:
        return Decimal(size)
    return remaining


@money_context
def net_positions(trades: Iterable[tuple[str, Decimal, Decimal]]) -> Book:
    """Average-cost netting of signed trades `(symbol, qty, price)`, in the order given.

    Adding to a side adds `|qty| * price` to the cost basis; reducing removes the closed
    share of the basis; crossing through zero opens the remainder at the trade's price.
    """
    book: Book = {}
    for symbol, qty, price in trades:
        held, cost = book.get(symbol, (ZERO, ZERO))
        if not held or (held > 0) == (qty > 0):
            book[symbol] = (held + qty, cost + abs(qty) * price)
            continue
        closing = min(abs(qty), abs(held))
        cost -= cost if closing == abs(held) else cost * closing / abs(held)
        after = held + qty
        if after and (after > 0) != (held > 0):
            cost = abs(after) * price  # flipped: the rest opens a new lot at this price
        book[symbol] = (after, cost if after else ZERO)
    return book


def average_cost(qty: Decimal, cost: Decimal) -> Decimal:
    """Average cost per unit of the open quantity (0 when flat), quantized like the books."""
    return derived_price(cost, abs(qty)) if qty else ZERO


@money_context
def book_execution(filled: Decimal, cost: Decimal, qty: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
    """An order's (filled quantity, fill cost) after executing `qty` at `price`, exactly."""
    return filled + qty, cost + qty * price
