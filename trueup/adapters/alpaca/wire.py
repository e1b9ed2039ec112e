"""Alpaca wire structs: the Trading API's JSON as msgspec decodes it, Alpaca's field names kept.

Each struct declares only the fields trueup reads; the rest of a payload is skipped.
Broker statuses, events and sides are typed `str`, so an unknown value decodes and
reaches the tables in `translate.py` (UNKNOWN, raw kept) instead of failing the decode.
Quantities and prices are `Decimal`, decoded from Alpaca's strings (`"qty": "10"`) or
JSON numbers (`"qty": 1`) from their text, never through float. Times must carry an
offset. Nothing here imports alpaca-py.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

__all__ = [
    "AlpacaActivityHeader",
    "AlpacaBulkItem",
    "AlpacaFillActivity",
    "AlpacaOrder",
    "AlpacaPosition",
    "AlpacaTradeUpdate",
    "AlpacaTradeUpdateEnvelope",
    "AwareDatetime",
]

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timestamp that must carry an offset (`Z`, `-04:00`)."""


class AlpacaOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the Trading API sends it (`/v2/orders` bodies, stream `order`); fields used only."""

    id: str
    """Alpaca's order id (UUID); a replace creates a new one."""
    client_order_id: str | None = None
    """Our id (<= 128 chars); Alpaca makes one up when none was sent."""
    symbol: str | None = None
    """`AAPL`, `BTC/USD`; null on multi-leg option parents (`order_class` "mleg")."""
    asset_class: str | None = None
    """`us_equity`, `crypto`, `us_option`."""
    side: str | None = None
    """`buy` or `sell`."""
    qty: Decimal | None = None
    """Ordered quantity; null for notional orders."""
    notional: Decimal | None = None
    """Dollar amount of a notional order."""
    filled_qty: Decimal
    """Cumulative filled quantity."""
    filled_avg_price: Decimal | None = None
    """Average price of the cumulative fills."""
    status: str
    """Raw status; a string so that an unknown one reaches `ALPACA_STATUS` instead of failing."""
    order_class: str | None = None
    """`simple`, `bracket`, `oco`, `oto`, `mleg` or empty."""
    order_type: str | None = None
    """`market`, `limit`, `stop`, `stop_limit`, `trailing_stop`."""
    limit_price: Decimal | None = None
    """Limit price, if any."""
    stop_price: Decimal | None = None
    """Stop price, if any."""
    created_at: AwareDatetime | None = None
    """When Alpaca created the order."""
    updated_at: AwareDatetime
    """When the order last changed: the `ts_event` of REST order reports."""
    submitted_at: AwareDatetime | None = None
    """When the order was submitted."""
    filled_at: AwareDatetime | None = None
    """When the order filled completely."""
    canceled_at: AwareDatetime | None = None
    """When the order was cancelled."""
    expired_at: AwareDatetime | None = None
    """When the order expired."""
    failed_at: AwareDatetime | None = None
    """When the order failed (rejected)."""
    replaced_at: AwareDatetime | None = None
    """When the order was replaced."""
    replaces: str | None = None
    """Id of the order this one replaced."""
    replaced_by: str | None = None
    """Id of the order that replaced this one."""
    legs: list[AlpacaOrder] | None = None
    """Child orders of a bracket/OCO/OTO order (with `nested=true`)."""


class AlpacaPosition(msgspec.Struct, frozen=True, kw_only=True):
    """A position as `GET /v2/positions` sends it; fields used only."""

    symbol: str
    """`AAPL`, `BTCUSD`."""
    asset_class: str | None = None
    """`us_equity`, `crypto`, `us_option`."""
    qty: Decimal
    """Quantity; its sign is checked against `side`."""
    side: str
    """`long` or `short`."""
    avg_entry_price: Decimal
    """Average entry price of the open quantity."""


class AlpacaActivityHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The part every account activity has, enough to pick out the FILL ones."""

    activity_type: str
    """`FILL`, `CSD`, `DIV`, ..."""


class AlpacaFillActivity(msgspec.Struct, frozen=True, kw_only=True):
    """A FILL account activity (`GET /v2/account/activities/FILL`, Broker API activities)."""

    id: str
    """`"<yyyymmddhhmmssmmm>::<uuid>"`: the dedupe key within this endpoint."""
    activity_type: str
    """`FILL`."""
    transaction_time: AwareDatetime
    """Execution time."""
    fill_type: str | None = msgspec.field(default=None, name="type")
    """`fill` or `partial_fill` (the order's state after this execution)."""
    price: Decimal
    """Price of this execution."""
    qty: Decimal
    """Quantity of this execution (not cumulative)."""
    side: str
    """`buy`, `sell`, `sell_short`, ... (`ALPACA_ACTIVITY_SIDE`)."""
    symbol: str
    """`AAPL`, `BTCUSD`."""
    order_id: str
    """Alpaca's order id."""
    cum_qty: Decimal | None = None
    """Cumulative filled quantity of the order after this execution."""
    leaves_qty: Decimal | None = None
    """Quantity still open on the order after this execution."""
    order_status: str | None = None
    """The order's status after this execution (newer payloads only)."""
    account_id: str | None = None
    """Alpaca account id (Broker API only); not compared with the `account` argument."""


class AlpacaTradeUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` of a `trade_updates` stream message."""

    event: str
    """`new`, `fill`, `partial_fill`, `pending_cancel`, ...; a string, so unknown events decode."""
    order: AlpacaOrder
    """The order after the event."""
    execution_id: str | None = None
    """Execution id: the dedupe key of `fill`/`partial_fill` (also set on `new`)."""
    timestamp: AwareDatetime | None = None
    """When the event happened (for fills: the execution time)."""
    price: Decimal | None = None
    """Price of this execution (`fill`/`partial_fill`)."""
    qty: Decimal | None = None
    """Quantity of this execution (`fill`/`partial_fill`), not cumulative."""
    position_qty: Decimal | None = None
    """Position in the symbol after the fill."""


class AlpacaTradeUpdateEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """A whole stream message `{"stream": "trade_updates", "data": {...}}` (what `raw_data=True` gives)."""

    stream: str | None = None
    """`trade_updates`; None when the payload is the bare `data` object."""
    data: msgspec.Raw = msgspec.Raw()
    """The trade update, decoded in a second step so errors can name `$.data...`."""


class AlpacaBulkItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the HTTP 207 answer of `DELETE /v2/orders` or `DELETE /v2/positions`."""

    status: int
    """HTTP status of this item."""
    id: str | None = None
    """Order id (`DELETE /v2/orders`)."""
    symbol: str | None = None
    """Position symbol (`DELETE /v2/positions`)."""
    body: msgspec.Raw = msgspec.Raw()
    """The order created or cancelled (2xx), or an error `{"code", "message"}`."""
