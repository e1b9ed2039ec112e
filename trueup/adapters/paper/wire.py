"""Paper broker wire structs: the JSON the paper broker sends, its field names kept.

Every message is one JSON object tagged by `"type"`:

* order update ``{"type": "order", "id": "P00000001", "client_order_id": "A1" | null,
  "symbol": "AAPL", "side": "buy" | "sell", "qty": "10", "status": "new",
  "filled_qty": "0", "avg_price": null | "100.25", "limit_price": null | "99.50",
  "ts": "2025-01-06T14:30:01.000003Z"}``; `client_order_id` is null for an order placed
  by hand at the broker, `limit_price` null for a market order;
* fill ``{"type": "fill", "exec_id": "X00000001", "order_id": "P00000001",
  "client_order_id": "A1" | null, "symbol": "AAPL", "side": "buy", "qty": "4",
  "price": "100.25", "ts": "..."}``: one execution, `qty` not cumulative;
* position ``{"type": "position", "symbol": "AAPL", "qty": "-3", "avg_cost": "100.25",
  "ts": "..."}``: the signed net quantity.

The query answers (orders, fills, positions) are JSON lists of the same objects.
Quantities and prices are Decimal strings (`"0.1"`, never a float); msgspec also reads a
JSON number from its text, never through float. Statuses and sides are typed `str`, so
an unknown one decodes and reaches the tables in `translate.py` instead of failing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

__all__ = [
    "WIRE_ENCODER",
    "AwareDatetime",
    "NonEmptyStr",
    "PaperFill",
    "PaperMessage",
    "PaperOrder",
    "PaperPosition",
]

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timestamp that must carry an offset (`Z`)."""

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
"""An id or symbol: an empty string is refused at decode time, naming the field."""


class PaperOrder(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="order"):
    """An order update (stream) or one item of the orders answer."""

    id: NonEmptyStr
    """The broker's order id, `P` + 8 digits."""
    client_order_id: str | None = None
    """Our id as submitted; null for an order placed by hand at the broker."""
    symbol: NonEmptyStr
    """Instrument symbol, verbatim."""
    side: str
    """`buy` or `sell`."""
    qty: Decimal
    """Order quantity."""
    status: str
    """`new`, `partially_filled`, `filled`, `canceled`, `rejected`."""
    filled_qty: Decimal
    """Cumulative filled quantity."""
    avg_price: Decimal | None = None
    """Average price of the cumulative fills; null before the first fill."""
    limit_price: Decimal | None = None
    """Limit price; null for a market order."""
    ts: AwareDatetime
    """When the order reached this state (the paper market's clock)."""


class PaperFill(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="fill"):
    """One execution (stream) or one item of the fills answer."""

    exec_id: NonEmptyStr
    """Execution id, `X` + 8 digits: the dedupe key."""
    order_id: NonEmptyStr
    """The broker's id of the order executed."""
    client_order_id: str | None = None
    """Our id, echoed on executions; null for a manual order."""
    symbol: NonEmptyStr
    """Instrument symbol."""
    side: str
    """`buy` or `sell`."""
    qty: Decimal
    """Quantity of this execution (not cumulative)."""
    price: Decimal
    """Price of this execution."""
    ts: AwareDatetime
    """Execution time (the paper market's clock)."""


class PaperPosition(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="position"):
    """One item of the positions answer."""

    symbol: NonEmptyStr
    """Instrument symbol."""
    qty: Decimal
    """Signed net quantity: > 0 long, < 0 short."""
    avg_cost: Decimal
    """Average cost per unit of the open quantity."""
    ts: AwareDatetime
    """When the position last changed (the paper market's clock)."""


PaperMessage = PaperOrder | PaperFill | PaperPosition
"""Any one paper message, told apart by its `"type"` tag."""

WIRE_ENCODER = msgspec.json.Encoder(decimal_format="string")
"""Encodes wire structs as the broker sends them: Decimals as strings, exactly."""
