"""Alpaca's vocabulary: its status, side and stream-event strings, and what each means here.

The tables the translators (`translate.py`) read, `to_order_status` (a status refined by
fill progress) and `normalize_symbol` (the canonical, slash-free symbol). Pure; every
name is re-exported by `translate`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from trueup.domain.status import OrderFlag, OrderStatus, Side

__all__ = [
    "ALPACA_ACTIVITY_SIDE",
    "ALPACA_EVENT_CLEARS_FLAG",
    "ALPACA_EVENT_SETS_FLAG",
    "ALPACA_FILL_EVENTS",
    "ALPACA_ORDER_SIDE",
    "ALPACA_POSITION_SIGN",
    "ALPACA_STATUS",
    "ALPACA_STATUS_FLAGS",
    "normalize_symbol",
    "to_order_status",
]

# --- tables -------------------------------------------------------------------------------

ALPACA_STATUS: Final[dict[str, OrderStatus]] = {
    "accepted": OrderStatus.PENDING_NEW,  # received, not yet routed (often outside market hours)
    "pending_new": OrderStatus.PENDING_NEW,  # routed, not yet accepted for execution
    "pending_review": OrderStatus.PENDING_NEW,  # enum only, undocumented: under review
    "new": OrderStatus.ACCEPTED,
    "accepted_for_bidding": OrderStatus.ACCEPTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,  # may carry filled_qty > 0
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
    "replaced": OrderStatus.REPLACED,  # terminal for this id only; `replaced_by` continues it
    # Working statuses that carry a flag instead of a rank; like every ACCEPTED one they
    # are refined by filled_qty in `to_order_status` (ACCEPTED or PARTIALLY_FILLED).
    "held": OrderStatus.ACCEPTED,  # bracket/OTO legs waiting for their parent
    "stopped": OrderStatus.ACCEPTED,  # a trade is guaranteed, not yet occurred
    "suspended": OrderStatus.ACCEPTED,  # not eligible for trading; ambiguous, reconcile
    "pending_cancel": OrderStatus.ACCEPTED,  # still fillable
    "pending_replace": OrderStatus.ACCEPTED,  # still fillable
    "done_for_day": OrderStatus.ACCEPTED,  # not terminal: GTC orders trade again tomorrow
    "calculated": OrderStatus.ACCEPTED,  # FILLED when filled_qty reaches qty, see to_order_status
}
"""Alpaca `order.status` -> normalized status; anything else is UNKNOWN."""

ALPACA_STATUS_FLAGS: Final[dict[str, frozenset[OrderFlag]]] = {
    "held": frozenset({OrderFlag.HELD}),
    "stopped": frozenset({OrderFlag.HELD}),
    "suspended": frozenset({OrderFlag.HELD}),
    "pending_cancel": frozenset({OrderFlag.CANCEL_PENDING}),
    "pending_replace": frozenset({OrderFlag.REPLACE_PENDING}),
    "done_for_day": frozenset({OrderFlag.DONE_FOR_DAY}),
    "calculated": frozenset({OrderFlag.DONE_FOR_DAY}),  # dropped when it maps to FILLED
}
"""Flags a raw status sets; statuses not listed set none."""

ALPACA_ORDER_SIDE: Final[dict[str, Side]] = {"buy": Side.BUY, "sell": Side.SELL}
"""Order `side`; anything else is an invalid payload."""

ALPACA_ACTIVITY_SIDE: Final[dict[str, Side]] = {
    "buy": Side.BUY,
    "buy_minus": Side.BUY,
    "sell": Side.SELL,
    "sell_plus": Side.SELL,
    "sell_short": Side.SELL,
    "sell_short_exempt": Side.SELL,
    # Deliberately absent: `cross`, `cross_short`, `undisclosed` (listed by Alpaca's
    # TradeActivitySide, no direction we can book): such an activity is refused.
}
"""FILL activity `side` (Alpaca's TradeActivitySide) -> direction."""

ALPACA_POSITION_SIGN: Final[dict[str, int]] = {"long": 1, "short": -1}
"""Position `side` -> sign of the quantity."""

ALPACA_FILL_EVENTS: Final[frozenset[str]] = frozenset({"fill", "partial_fill"})
"""Stream events that carry one execution (`execution_id`, `qty`, `price`)."""

ALPACA_EVENT_SETS_FLAG: Final[dict[str, OrderFlag]] = {
    "pending_cancel": OrderFlag.CANCEL_PENDING,
    "pending_replace": OrderFlag.REPLACE_PENDING,
}
"""Stream events that set a flag whatever the embedded order status says."""

ALPACA_EVENT_CLEARS_FLAG: Final[dict[str, OrderFlag]] = {
    "order_cancel_rejected": OrderFlag.CANCEL_PENDING,
    "order_replace_rejected": OrderFlag.REPLACE_PENDING,
}
"""Stream events that clear a flag, even if the embedded status still says pending."""


# --- statuses and symbols -----------------------------------------------------------------


def to_order_status(
    raw_status: str,
    *,
    qty: Decimal,
    filled_qty: Decimal,
) -> tuple[OrderStatus, frozenset[OrderFlag]]:
    """Normalized status and flags of an Alpaca order status, refined by its fill progress.

    1. Unknown string -> UNKNOWN, no flags (the report changes nothing; raw kept).
    2. `calculated` with `filled_qty >= qty` -> FILLED (settlement pending), no flags.
    3. Any status whose table entry is ACCEPTED -> PARTIALLY_FILLED once `filled_qty > 0`:
       the rank is kept through `pending_cancel`, `pending_replace`, `done_for_day`,
       `calculated`, `held`, `stopped`, `suspended` and a `new` with fills.
    """
    base = ALPACA_STATUS.get(raw_status)
    if base is None:
        return OrderStatus.UNKNOWN, frozenset()
    if raw_status == "calculated" and filled_qty >= qty:
        return OrderStatus.FILLED, frozenset()
    flags = ALPACA_STATUS_FLAGS.get(raw_status, frozenset())
    if base is OrderStatus.ACCEPTED and filled_qty > 0:
        return OrderStatus.PARTIALLY_FILLED, flags
    return base, flags


def normalize_symbol(symbol: str) -> str:
    """The canonical symbol: crypto pairs without the slash (`BTC/USD` -> `BTCUSD`), else unchanged."""
    return symbol.replace("/", "")
