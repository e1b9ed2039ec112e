"""Decimal arithmetic for quantities and prices.

All domain arithmetic runs in one wide context so that sums and products of broker
figures are exact; only divisions (average prices) round, and derived prices are
quantized so that applying and later removing them cancels exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import ParamSpec, TypeVar

MONEY = Context(prec=60, rounding=ROUND_HALF_EVEN)
"""Context for domain arithmetic: wide enough that qty * price never rounds."""

PRICE_QUANTUM = Decimal("1e-10")
"""Scale of derived prices (inferred fills, averages): far below any tick size."""

ZERO = Decimal(0)

MAX_FIGURE = Decimal("1e18")
"""Quantities and prices from a broker are below this in magnitude: a larger one is garbage
(no instrument trades at it), and derived prices quantized to PRICE_QUANTUM in the MONEY
context (60 digits) could no longer be computed from it."""

QUANTITY_TOLERANCE = Decimal("1e-9")
"""Quantities closer than this are equal: brokers that send floats (IB) or fractional shares
to 9 places (Alpaca) put noise below it, never a real unit."""

P = ParamSpec("P")
R = TypeVar("R")


def money_context(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` with Decimal operators in the MONEY context."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext(MONEY):
            return func(*args, **kwargs)

    return wrapper


def exceeds(value: Decimal, limit: Decimal) -> bool:
    """Whether quantity `value` is above `limit` by more than QUANTITY_TOLERANCE (float noise)."""
    with localcontext(MONEY):
        return value - limit > QUANTITY_TOLERANCE


def derived_price(numerator: Decimal, denominator: Decimal) -> Decimal:
    """Divide in the MONEY context and quantize to PRICE_QUANTUM (half-even)."""
    with localcontext(MONEY):
        return (numerator / denominator).quantize(PRICE_QUANTUM)
