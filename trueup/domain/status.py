"""Normalized order statuses, their ranks, order flags and sides.

The rank rule: a report moves an
order only forward in rank; equal rank updates flags and times; lower rank changes
nothing. Terminal statuses share the top rank so that one terminal never overrides
another; the only terminal-to-terminal move is the CANCELED -> FILLED correction.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    """Normalized lifecycle status of an order, independent of the broker."""

    INTENDED = "INTENDED"
    """Recorded locally, not sent (write-ahead intent)."""
    SUBMITTED = "SUBMITTED"
    """Sent to the broker, no answer yet: in flight."""
    PENDING_NEW = "PENDING_NEW"
    """Received by the broker, not yet confirmed working."""
    ACCEPTED = "ACCEPTED"
    """Working (or held) at the broker, no fills."""
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    """Working with 0 < filled < quantity."""
    FILLED = "FILLED"
    """Filled quantity equals the order quantity."""
    CANCELED = "CANCELED"
    """Cancelled; may carry a partial fill."""
    REJECTED = "REJECTED"
    """Refused by the broker or the exchange."""
    EXPIRED = "EXPIRED"
    """Time in force ended."""
    REPLACED = "REPLACED"
    """This broker order was superseded by a replacement (Alpaca)."""
    UNKNOWN = "UNKNOWN"
    """A broker status string no table maps; such a report changes nothing."""

    @property
    def rank(self) -> int:
        """Rank of the status; UNKNOWN has none (-1) and never moves an order."""
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        """Whether the status ends the order's life."""
        return self in TERMINAL_STATUSES


_RANK: dict[OrderStatus, int] = {
    OrderStatus.INTENDED: 0,
    OrderStatus.SUBMITTED: 5,
    OrderStatus.PENDING_NEW: 10,
    OrderStatus.ACCEPTED: 20,
    OrderStatus.PARTIALLY_FILLED: 30,
    OrderStatus.FILLED: 100,
    OrderStatus.CANCELED: 100,
    OrderStatus.REJECTED: 100,
    OrderStatus.EXPIRED: 100,
    OrderStatus.REPLACED: 100,
    OrderStatus.UNKNOWN: -1,
}

TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.REPLACED,
    },
)
"""Statuses that end an order's life (all rank 100)."""

IN_FLIGHT_STATUSES: frozenset[OrderStatus] = frozenset({OrderStatus.SUBMITTED, OrderStatus.PENDING_NEW})
"""Statuses of an order sent but not yet confirmed working by the broker."""

WORKING_STATUSES: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.INTENDED,
        OrderStatus.SUBMITTED,
        OrderStatus.PENDING_NEW,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
    },
)
"""Statuses of an order that may still trade (open orders)."""


class OrderFlag(StrEnum):
    """Conditions orthogonal to the rank: fills may still arrive while they hold."""

    CANCEL_PENDING = "cancel_pending"
    """A cancel was requested and not yet confirmed."""
    REPLACE_PENDING = "replace_pending"
    """A modify/replace was requested and not yet confirmed."""
    HELD = "held"
    """Accepted but dormant: IB PreSubmitted or locate hold, Alpaca held, Kite TRIGGER PENDING."""
    DONE_FOR_DAY = "done_for_day"
    """Alpaca: no more fills today; not terminal."""
    UNCONFIRMED_TERMINAL = "unconfirmed_terminal"
    """A client library claimed a terminal status the broker has not confirmed (ib_async)."""


class Side(StrEnum):
    """Direction of an order or fill."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the sign of the position change."""
        return 1 if self is Side.BUY else -1


class ReportSource(StrEnum):
    """Who produced a report, which decides how far it is trusted."""

    BROKER = "broker"
    """A message from the broker (stream, callback, poll)."""
    CLIENT = "client"
    """A status a client library made up locally (ib_async PendingSubmit, error-driven Cancelled)."""
    RECONCILE = "reconcile"
    """Derived by the reconciler from a broker snapshot."""
    PAPER = "paper"
    """The built-in paper broker."""
