"""Kite wire structs: Kite Connect v3 JSON as msgspec decodes it, Kite's field names kept.

Each struct declares only the fields trueup reads; the rest of a payload is skipped.
Statuses, sides, order types and products are typed `str`, so an unknown value decodes
and reaches the tables in `translate.py` (UNKNOWN, raw kept) instead of failing the
decode. Quantities and prices are `Decimal`, decoded from the text of Kite's JSON numbers
(`"average_price": 72.755`), never through float.

Times: Kite writes India Standard Time without an offset, `"2021-05-31 09:18:57"`. The
structs keep that string (`KiteTime`, format checked at decode, so a bad one is refused
with its JSON path) and `ist_to_utc` turns it into a tz-aware UTC datetime. Asia/Kolkata
has had no DST since 1945, so the conversion is a fixed -05:30. `trades[].order_timestamp`
is time-only (`"09:16:39"`) and is never an event time. Nothing here imports kiteconnect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final
from zoneinfo import ZoneInfo

import msgspec

__all__ = [
    "IST",
    "KITE_TIME_FORMAT",
    "KiteAutoslice",
    "KiteAutosliceChild",
    "KiteChildError",
    "KiteEnvelope",
    "KiteHolding",
    "KiteHoldingMtf",
    "KiteIceberg",
    "KiteOrder",
    "KiteOrderMeta",
    "KitePosition",
    "KitePositions",
    "KitePostbackChecksum",
    "KiteTime",
    "KiteTrade",
    "KiteUpdateEnvelope",
    "ist_to_utc",
    "trading_day_start",
]

IST: Final = ZoneInfo("Asia/Kolkata")
"""The zone of every Kite time (India Standard Time, UTC+05:30)."""

KITE_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
"""`"2021-05-31 09:18:57"`: Kite's only date-time format (pykiteconnect parses exactly these 19 chars)."""

KiteTime = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z")]
"""A Kite date-time string, IST without offset: `"2021-05-31 09:18:57"`."""


def ist_to_utc(value: str) -> datetime:
    """A Kite time (IST, no offset) as a tz-aware UTC datetime.

    `"2021-05-31 09:18:57"` -> `2021-05-31 03:48:57+00:00`;
    `"2021-06-01 02:00:00"` -> `2021-05-31 20:30:00+00:00` (the UTC date is the day before).

    Raises:
        ValueError: `value` is not `YYYY-MM-DD HH:MM:SS` or not a real date and time.
    """
    return datetime.strptime(value, KITE_TIME_FORMAT).replace(tzinfo=IST).astimezone(UTC)


def trading_day_start(now: datetime) -> datetime:
    """The start of the Kite trading day `now` falls in: midnight in Asia/Kolkata, as UTC.

    Kite's order book and trades cover this day only. `2024-05-01 20:00 UTC` (01:30 IST on
    May 2) -> `2024-05-01 18:30 UTC`.

    Raises:
        ValueError: `now` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        msg = f"now must be timezone-aware, got naive {now.isoformat()}"
        raise ValueError(msg)
    local = now.astimezone(IST)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


class KiteEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """Kite's response envelope `{"status": "success", "data": ...}` or `{"status": "error", ...}`."""

    status: str | None = None
    """`success` or `error`; None when the payload is a bare body without the envelope."""
    data: msgspec.Raw = msgspec.Raw()
    """The body, decoded in a second step so errors can name `$.data...`."""
    message: str | None = None
    """Error text of an `error` envelope."""
    error_type: str | None = None
    """`TokenException`, `InputException`, `OrderException`, ... of an `error` envelope."""


class KiteIceberg(msgspec.Struct, frozen=True, kw_only=True):
    """`meta.iceberg` of an iceberg leg: `{"leg": 1, "legs": 5, "total_quantity": 1000, ...}`."""

    leg: int | None = None
    """This leg's number, from 1."""
    legs: int | None = None
    """How many legs the iceberg order has."""
    total_quantity: Decimal | None = None
    """The whole iceberg order's quantity (each leg's `quantity` is one leg's)."""


class KiteOrderMeta(msgspec.Struct, frozen=True, kw_only=True):
    """An order's `meta` object (`{}` for most orders); fields used only."""

    iceberg: KiteIceberg | None = None
    """Set on the legs of an iceberg order."""


class KiteOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as Kite sends it; fields used only.

    A row of `GET /orders` or `GET /orders/{order_id}`, a postback body, or the `data` of a
    WebSocket `order` message (all the same shape).
    """

    order_id: str
    """Kite's order id; stable across modifications."""
    status: str
    """Raw status (`OPEN`, `COMPLETE`, `UPDATE`, ...); a string so an unknown one reaches `KITE_STATUS`."""
    order_timestamp: KiteTime
    """When the order (or its latest modification) was registered by Kite's OMS."""
    exchange_update_timestamp: KiteTime | None = None
    """When the order's state last changed at the exchange; null before it reaches the exchange."""
    exchange: str
    """`NSE`, `BSE`, `NFO`, `CDS`, `MCX`, ..."""
    tradingsymbol: str
    """The exchange's symbol: `SBIN`, `USDINR21JUNFUT`, `NIFTY2580724400CE`."""
    product: str
    """`CNC`, `NRML`, `MIS`, `MTF`, `CO`, ...; part of the position key."""
    transaction_type: str
    """`BUY` or `SELL`."""
    order_type: str | None = None
    """`MARKET`, `LIMIT`, `SL`, `SL-M`."""
    quantity: Decimal
    """Ordered quantity (after modifications; an iceberg leg's quantity for iceberg orders)."""
    price: Decimal | None = None
    """Limit price of `LIMIT` and `SL` orders; Kite writes 0 for `MARKET` and `SL-M`."""
    average_price: Decimal | None = None
    """Average price of the cumulative fills; Kite writes 0 while nothing is filled."""
    filled_quantity: Decimal
    """Cumulative filled quantity."""
    tag: str | None = None
    """The first tag set when placing (ours travels here, <= 20 alphanumerics)."""
    tags: list[str] | None = None
    """Every tag: the user's and those Kite adds (`mktp`, `autoslice`, `autoslice:<parent id>`)."""
    variety: str | None = None
    """`regular`, `amo`, `co`, `iceberg`, `auction`: part of the modify and cancel routes."""
    meta: KiteOrderMeta | None = None
    """`{}`, or `{"iceberg": {...}}` on an iceberg leg."""


class KiteTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One execution, a row of `GET /trades` or `GET /orders/{order_id}/trades`; fields used only."""

    trade_id: str
    """Exchange trade id, unique per exchange: the dedupe key is `(exchange, trade_id)`."""
    order_id: str
    """Kite's order id; trades carry no tag."""
    exchange: str
    """`NSE`, `MCX`, ..."""
    tradingsymbol: str
    """The exchange's symbol."""
    product: str
    """`CNC`, `NRML`, `MIS`, ..."""
    transaction_type: str
    """`BUY` or `SELL`."""
    quantity: Decimal
    """Quantity of this execution (not cumulative)."""
    average_price: Decimal
    """Price of this execution."""
    fill_timestamp: KiteTime | None = None
    """When the execution happened (IST): the fill's event time."""
    exchange_timestamp: KiteTime | None = None
    """The exchange's time of the execution (IST); used when `fill_timestamp` is absent."""
    order_timestamp: str | None = None
    """Time of day only (`"09:16:39"`): never used as an event time."""


class KitePosition(msgspec.Struct, frozen=True, kw_only=True):
    """A row of the `net` (or `day`) list of `GET /portfolio/positions`; fields used only."""

    exchange: str
    """`NSE`, `MCX`, ..."""
    tradingsymbol: str
    """The exchange's symbol."""
    product: str
    """`CNC`, `NRML`, `MIS`, ...: Kite keys positions by (exchange, tradingsymbol, product)."""
    quantity: Decimal
    """Signed quantity: > 0 long, < 0 short, 0 for a position closed today (still listed)."""
    average_price: Decimal
    """Average price of the open quantity."""


class KitePositions(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `GET /portfolio/positions`: `{"net": [...], "day": [...]}`."""

    net: list[KitePosition]
    """Carried-forward plus today's positions: the account's net positions."""
    day: list[KitePosition] | None = None
    """Today's trading only (read on request: reconciliation compares `net`)."""


class KiteHoldingMtf(msgspec.Struct, frozen=True, kw_only=True):
    """The `mtf` object of a holding: shares bought with Margin Trading Facility (product `MTF`)."""

    quantity: Decimal
    """MTF shares carried (not part of the holding's CNC quantities); required: missing is
    unknown, never 0 (the holding's positions are then unknown, not flat)."""
    average_price: Decimal = Decimal(0)
    """Their average price."""


class KiteHolding(msgspec.Struct, frozen=True, kw_only=True):
    """A row of `GET /portfolio/holdings` (`holdings()`, fixture `holdings.json`); fields used only.

    Delivery (CNC) shares carried from earlier days. A CNC buy shows in `positions()` on
    its day and moves here the next day: in `t1_quantity` until delivered to the demat
    account, then in `realised_quantity`. Today's trading stays in
    `positions()` (a sale of held shares is a negative CNC position there, and counts in
    `used_quantity` here).
    """

    exchange: str
    """The exchange Kite lists the holding on (`NSE`, `BSE`)."""
    tradingsymbol: str
    """The exchange's symbol."""
    product: str = "CNC"
    """`CNC`."""
    realised_quantity: Decimal
    """Shares delivered to the demat account."""
    t1_quantity: Decimal
    """Shares bought on an earlier day, not delivered yet (T+1); required: missing is unknown."""
    opening_quantity: Decimal | None = None
    """Shares held at the start of the day (informative)."""
    used_quantity: Decimal = Decimal(0)
    """Shares sold today out of the holding (also a negative CNC position in `positions()`)."""
    average_price: Decimal
    """Average price of the holding."""
    mtf: KiteHoldingMtf | None
    """MTF shares of the same instrument (`quantity` 0 if none); required: Kite lists it on
    every holding, and a row without it cannot tell whether MTF shares are held. `null`
    is read as none."""


class KiteUpdateEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """A WebSocket text frame `{"type": "order", "data": {...}}`, or a bare postback body."""

    kind: str | None = msgspec.field(default=None, name="type")
    """`order` or `error`; None for a postback body (which has no `type`)."""
    data: msgspec.Raw = msgspec.Raw()
    """The order update, decoded in a second step so errors can name `$.data...`."""


class KitePostbackChecksum(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a postback body that its checksum covers, kept as the raw strings."""

    order_id: str
    """Kite's order id."""
    order_timestamp: str
    """The raw `"2022-03-03 09:24:25"` string, never parsed: the checksum is computed on it."""
    checksum: str | None = None
    """`sha256(order_id + order_timestamp + api_secret)` hex; blank on WebSocket updates."""


class KiteChildError(msgspec.Struct, frozen=True, kw_only=True):
    """The `error` of an autoslice child that was not placed."""

    error_type: str | None = None
    """`MarginException`, `InputException`, ..."""
    message: str | None = None
    """Kite's explanation: `"Insufficient funds. Required margin is ..."`."""


class KiteAutosliceChild(msgspec.Struct, frozen=True, kw_only=True):
    """One child of an autoslice placement: `{"order_id": ...}` or `{"error": {...}}`."""

    order_id: str | None = None
    """The placed child order's id."""
    error: KiteChildError | None = None
    """Why this child was not placed."""


class KiteAutoslice(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` of `POST /orders/{variety}` with `autoslice=true` (`place_autoslice_order()`)."""

    order_id: str
    """The parent id: named in the children's `autoslice:<parent id>` tag, not an order of its own."""
    children: list[KiteAutosliceChild]
    """The slices, in placement order."""
