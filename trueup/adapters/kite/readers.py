"""Kite's shared payload readers: decoding with JSON-path errors and the checks of single fields. Pure.

What `translate.py` and `groups.py` both read Kite payloads with, so neither reaches into
the other's private helpers:

* `READER` and its `invalid`, `decode`, `located`, `finite` (`trueup.adapters.payloads`):
  every error is an `InvalidReport` naming the JSON path of the bad field;
* the decoders of each payload (`ORDERS`, `TRADES`, `POSITIONS`, `HOLDINGS`), built once;
* `read_body`: a REST answer's body with or without Kite's `{"status": "success",
  "data": ...}` envelope (an `error` envelope is refused at `$.status`);
* `read_update`: the order of a postback body or a WebSocket `{"type": "order"}` frame;
* field readers: `read_time` (IST -> UTC), `read_symbol`, `read_non_empty`;
* `verify_postback` / `require_verified`: a postback's checksum.

The statuses, sides and report building stay in `translate.py`. No clock, no I/O, no
kiteconnect.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Final

import msgspec

from trueup.adapters.kite.ids import instrument_symbol, symbol_part_problem
from trueup.adapters.kite.wire import (
    KiteEnvelope,
    KiteHolding,
    KiteOrder,
    KitePosition,
    KitePositions,
    KitePostbackChecksum,
    KiteTrade,
    KiteUpdateEnvelope,
    ist_to_utc,
)
from trueup.adapters.payloads import PayloadReader

__all__ = [
    "FILL_FIELDS",
    "HOLDINGS",
    "ORDERS",
    "ORDER_FIELDS",
    "POSITIONS",
    "POSITION_FIELDS",
    "READER",
    "TRADES",
    "decode",
    "finite",
    "invalid",
    "located",
    "read_body",
    "read_non_empty",
    "read_symbol",
    "read_time",
    "read_update",
    "require_verified",
    "verify_postback",
]

# Errors name the JSON path of the bad field (see trueup.adapters.payloads).
READER: Final = PayloadReader("kite")
"""Decodes Kite payloads; its errors name the broker, the account and the field's JSON path."""
invalid = READER.invalid
decode = READER.decode
located = READER.located
finite = READER.finite

# Decoders are built once and reused (msgspec perf tips).
_BODY: Final = msgspec.json.Decoder(list[msgspec.Raw] | KiteEnvelope)
ORDERS: Final = msgspec.json.Decoder(list[KiteOrder])
"""The body of `GET /orders` and `GET /orders/{order_id}`."""
_ORDER: Final = msgspec.json.Decoder(KiteOrder)
TRADES: Final = msgspec.json.Decoder(list[KiteTrade])
"""The body of `GET /trades` and `GET /orders/{order_id}/trades`."""
POSITIONS: Final = msgspec.json.Decoder(KitePositions)
"""The body of `GET /portfolio/positions`."""
HOLDINGS: Final = msgspec.json.Decoder(list[KiteHolding])
"""The body of `GET /portfolio/holdings`."""
_UPDATE: Final = msgspec.json.Decoder(KiteUpdateEnvelope)
_CHECKSUM: Final = msgspec.json.Decoder(KitePostbackChecksum)

ORDER_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "order_id",
    "symbol": "tradingsymbol",
    "quantity": "quantity",
    "filled_qty": "filled_quantity",
    "avg_price": "average_price",
    "limit_price": "price",
    "ts_event": "order_timestamp",
}
"""OrderReport field -> Kite order field, to name the JSON path of a refused value (`located`)."""

FILL_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "order_id",
    "exec_id": "trade_id",
    "symbol": "tradingsymbol",
    "qty": "quantity",
    "price": "average_price",
    "ts_event": "fill_timestamp",
}
"""FillReport field -> Kite trade field (`located`)."""

POSITION_FIELDS: Final[dict[str, str]] = {
    "symbol": "tradingsymbol",
    "qty": "quantity",
    "avg_cost": "average_price",
}
"""PositionReport field -> Kite position field (`located`)."""


def read_time(value: str, *, what: str, account: str, path: str) -> datetime:
    """A Kite time (`"2021-05-31 09:18:57"`, IST) in UTC; the format was checked at decode."""
    try:
        return ist_to_utc(value)
    except ValueError as e:  # the right shape but no such date or time: "2021-02-30 25:00:00"
        detail = f"not a date and time 'YYYY-MM-DD HH:MM:SS' (IST), got {value!r} ({e})"
        raise invalid(what=what, account=account, path=path, detail=detail) from e


def read_body(raw: bytes | str, *, what: str, account: str) -> tuple[bytes | str | msgspec.Raw, str]:
    """The body of a REST answer and its JSON path: `$.data` inside the envelope, `$` when bare."""
    decoded = decode(_BODY, raw, what=what, account=account)
    if isinstance(decoded, list) or decoded.status is None:
        return raw, "$"
    if decoded.status != "success":
        detail = (
            f"expected status 'success', got {decoded.status!r}"
            f" ({decoded.error_type or 'no error_type'}: {decoded.message or 'no message'})"
        )
        raise invalid(what=what, account=account, path="$.status", detail=detail)
    if not bytes(memoryview(decoded.data)):
        raise invalid(what=what, account=account, path="$.data", detail="a success envelope without data")
    return decoded.data, "$.data"


def read_symbol(item: KiteOrder | KiteTrade | KitePosition, *, what: str, account: str, path: str) -> str:
    """`instrument_symbol` of a payload object; a bad part is refused at its own JSON path."""
    parts = (("exchange", item.exchange), ("tradingsymbol", item.tradingsymbol), ("product", item.product))
    for name, value in parts:
        problem = symbol_part_problem(value)
        if problem is not None:
            raise invalid(what=what, account=account, path=f"{path}.{name}", detail=problem)
    return instrument_symbol(item.exchange, item.tradingsymbol, item.product)


def read_non_empty(value: str, *, what: str, account: str, path: str) -> str:
    """`value` if it is not blank (an id), else refused at `path`."""
    if not value.strip():
        raise invalid(what=what, account=account, path=path, detail=f"must be non-empty, got {value!r}")
    return value


def read_update(raw: bytes | str, *, account: str) -> tuple[KiteOrder, str]:
    """The order of an update and its JSON path: `$.data` in a WebSocket frame, `$` for a postback."""
    what = "order update"
    envelope = decode(_UPDATE, raw, what=what, account=account)
    if envelope.kind is None:
        return decode(_ORDER, raw, what=what, account=account), "$"
    if envelope.kind != "order":
        detail = f"expected 'order', got {envelope.kind!r}"
        raise invalid(what=what, account=account, path="$.type", detail=detail)
    return decode(_ORDER, envelope.data, what=what, account=account, prefix="$.data"), "$.data"


def verify_postback(raw: bytes | str, api_secret: str) -> bool:
    """Whether a postback body's `checksum` is `sha256(order_id + order_timestamp + api_secret)` hex.

    Computed on the raw `order_timestamp` string exactly as the body has it
    (`"2022-03-03 09:24:25"`), never on a parsed datetime, and compared in constant time
    (`hmac.compare_digest`). A missing or blank checksum (WebSocket updates have one)
    is False: such an update cannot be authenticated this way.

    Raises:
        ValueError: `api_secret` is empty (anyone could compute the checksum).
        InvalidReport: the body is not JSON or lacks a string `order_id` /
            `order_timestamp`; `field` is the JSON path (`$.order_timestamp`).
    """
    if not api_secret:
        msg = "api_secret must be non-empty"
        raise ValueError(msg)
    body = decode(_CHECKSUM, raw, what="postback", account=None)
    if not body.checksum:
        return False
    expected = hashlib.sha256(f"{body.order_id}{body.order_timestamp}{api_secret}".encode()).hexdigest()
    return hmac.compare_digest(expected.encode(), body.checksum.encode())


def require_verified(raw: bytes | str, api_secret: str, *, account: str) -> None:
    """Refuse a postback body whose checksum does not verify (`verify_postback`) at `$.checksum`.

    Raises:
        InvalidReport: the checksum is missing or wrong (`$.checksum`), or the body is
            malformed (`field` its JSON path).
        ValueError: `api_secret` is empty.
    """
    if not verify_postback(raw, api_secret):
        detail = (
            "checksum missing or not sha256(order_id + order_timestamp + api_secret): "
            "not verified, not applied"
        )
        raise invalid(what="postback", account=account, path="$.checksum", detail=detail)
