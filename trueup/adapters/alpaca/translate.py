"""Pure translation of Alpaca Trading API payloads into trueup reports.

Raw JSON in (bytes or str, exactly as Alpaca sent it) with its context as arguments,
reports out: no clock, no I/O, no alpaca-py. A malformed payload raises `InvalidReport`
whose `field` is the JSON path of the bad field (`$[1].qty`, `$.data.order.filled_qty`);
a list is translated whole or not at all, never partially. The wire structs are in
`wire.py`, the status, side and event tables with `to_order_status` and
`normalize_symbol` in `vocabulary.py`; those and `replace_client_order_id` (from
`ids.py`) are re-exported here.

Payloads:

* orders: `GET /v2/orders`, `GET /v2/orders/{id}`, `GET /v2/orders:by_client_order_id`,
  `POST /v2/orders`, `PATCH /v2/orders/{id}` -> `to_order_reports`; the per-item
  (HTTP 207) answers of `DELETE /v2/orders` and `DELETE /v2/positions` ->
  `to_order_reports_from_bulk`;
* positions: `GET /v2/positions`, `GET /v2/positions/{symbol}` -> `to_position_reports`;
* fills: `GET /v2/account/activities/FILL` (Trading API) and Broker API activity pages
  -> `to_fill_reports_from_activities`, with `activity_fill_keys` for cross-source dedupe;
* stream: `trade_updates` messages, with or without the `{"stream", "data"}` envelope
  -> `to_reports_from_trade_update`, with `trade_update_fill_key`.

Decisions:

* Numbers: Alpaca sends quantities and prices as strings (`"qty": "10"`) and, in some
  payloads, as JSON numbers (`"qty": 1`); both decode to `Decimal` from their text,
  never through float.
* Times: converted to UTC. Alpaca sends nanoseconds (`05.024916716Z`) and offsets
  (`-04:00`); msgspec rounds to the nearest microsecond. A time without an offset is
  refused.
* `ts_event`: REST orders use the order's `updated_at` (when the state the report
  describes last changed). Stream reports use the message `timestamp` (the event's own
  time, so an `order_cancel_rejected` is newer than the `pending_cancel` it answers even
  if the embedded `updated_at` did not move), falling back to the embedded order's
  `updated_at` when absent. Fills use the execution time: stream `timestamp`, activity
  `transaction_time`. Positions carry no time: the caller's `as_of`.
* Symbols: the canonical form is the slash-free one (`"BTCUSD"`), produced by
  `normalize_symbol` in every translator. Orders spell crypto pairs `"BTC/USD"`, positions
  and activities `"BTCUSD"`. Dropping the slash needs no table, whereas adding it back
  would need the list of quote currencies and the asset class, which activities do not
  carry. Alpaca's only symbols with a slash are crypto pairs (share classes use a dot,
  `BRK.B`; options use OCC symbols), so nothing else changes. Symbols are otherwise kept
  verbatim: no case folding, no trimming.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, TypeVar

import msgspec

from trueup.adapters.alpaca.ids import replace_client_order_id
from trueup.adapters.alpaca.vocabulary import (
    ALPACA_ACTIVITY_SIDE,
    ALPACA_EVENT_CLEARS_FLAG,
    ALPACA_EVENT_SETS_FLAG,
    ALPACA_FILL_EVENTS,
    ALPACA_ORDER_SIDE,
    ALPACA_POSITION_SIGN,
    ALPACA_STATUS,
    ALPACA_STATUS_FLAGS,
    normalize_symbol,
    to_order_status,
)
from trueup.adapters.alpaca.wire import (
    AlpacaActivityHeader,
    AlpacaBulkItem,
    AlpacaFillActivity,
    AlpacaOrder,
    AlpacaPosition,
    AlpacaTradeUpdate,
    AlpacaTradeUpdateEnvelope,
)
from trueup.adapters.payloads import PayloadReader
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderStatus, Side

__all__ = [
    "ALPACA_ACTIVITY_SIDE",
    "ALPACA_EVENT_CLEARS_FLAG",
    "ALPACA_EVENT_SETS_FLAG",
    "ALPACA_FILL_EVENTS",
    "ALPACA_ORDER_SIDE",
    "ALPACA_POSITION_SIGN",
    "ALPACA_STATUS",
    "ALPACA_STATUS_FLAGS",
    "FillKey",
    "activity_fill_keys",
    "fill_dedupe_key",
    "normalize_symbol",
    "replace_client_order_id",
    "to_fill_reports_from_activities",
    "to_order_reports",
    "to_order_reports_from_bulk",
    "to_order_status",
    "to_position_reports",
    "to_reports_from_trade_update",
    "trade_update_fill_key",
]

FillKey = tuple[str, Decimal]
"""Cross-source fill identity `(order_id, cum_qty)`."""


_ORDER_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "id",
    "symbol": "symbol",
    "side": "side",
    "quantity": "qty",
    "filled_qty": "filled_qty",
    "avg_price": "filled_avg_price",
    "limit_price": "limit_price",
    "ts_event": "updated_at",
}
"""OrderReport field -> Alpaca order field, to name the JSON path of a refused value."""

_FILL_ACTIVITY_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "order_id",
    "exec_id": "id",
    "symbol": "symbol",
    "qty": "qty",
    "price": "price",
    "ts_event": "transaction_time",
}
_TRADE_UPDATE_FILL_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "order.id",
    "exec_id": "execution_id",
    "symbol": "order.symbol",
    "qty": "qty",
    "price": "price",
    "ts_event": "timestamp",
}
_POSITION_FIELDS: Final[dict[str, str]] = {
    "symbol": "symbol",
    "qty": "qty",
    "avg_cost": "avg_entry_price",
}

_T = TypeVar("_T")

# Decoders are built once and reused (msgspec perf tips).
_ORDERS = msgspec.json.Decoder(list[AlpacaOrder] | AlpacaOrder)
_ORDER = msgspec.json.Decoder(AlpacaOrder)
_POSITIONS = msgspec.json.Decoder(list[AlpacaPosition] | AlpacaPosition)
_ACTIVITIES = msgspec.json.Decoder(list[msgspec.Raw] | AlpacaActivityHeader)
_ACTIVITY_HEADER = msgspec.json.Decoder(AlpacaActivityHeader)
_FILL_ACTIVITY = msgspec.json.Decoder(AlpacaFillActivity)
_ENVELOPE = msgspec.json.Decoder(AlpacaTradeUpdateEnvelope)
_TRADE_UPDATE = msgspec.json.Decoder(AlpacaTradeUpdate)
_BULK = msgspec.json.Decoder(list[AlpacaBulkItem])


# --- errors with JSON paths ---------------------------------------------------------------

# Errors name the JSON path of the bad field (see trueup.adapters.payloads).
_READER: Final = PayloadReader("alpaca")
_invalid = _READER.invalid
_decode = _READER.decode
_located = _READER.located
_finite = _READER.finite


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _items(decoded: list[_T] | _T) -> list[tuple[_T, str]]:
    """Pair each object of a list answer (or the one object answer) with its JSON path."""
    if isinstance(decoded, list):
        return [(item, f"$[{i}]") for i, item in enumerate(decoded)]
    return [(decoded, "$")]


# --- symbols, sides (the tables are in `vocabulary.py`) -----------------------------------


def _symbol(value: str | None, *, what: str, account: str, path: str, hint: str = "") -> str:
    if value is None or not value.strip():
        detail = f"symbol must be a non-empty string, got {value!r}{hint}"
        raise _invalid(what=what, account=account, path=path, detail=detail)
    return normalize_symbol(value)


def _side(value: str | None, table: Mapping[str, Side], *, what: str, account: str, path: str) -> Side:
    side = table.get(value or "")
    if side is None:
        detail = f"side must be one of {sorted(table)}, got {value!r}"
        raise _invalid(what=what, account=account, path=path, detail=detail)
    return side


# --- orders -------------------------------------------------------------------------------


def _order_quantity(order: AlpacaOrder, *, account: str, path: str) -> Decimal:
    _finite(order.filled_qty, what="order", account=account, path=f"{path}.filled_qty")
    if order.qty is not None:
        return _finite(order.qty, what="order", account=account, path=f"{path}.qty")
    # A notional order has no share quantity until it is done; only a filled one has a
    # quantity we can state (its filled_qty). Refuse the others rather than invent one.
    if ALPACA_STATUS.get(order.status) is OrderStatus.FILLED and order.filled_qty > 0:
        return order.filled_qty
    detail = f"qty is null (notional={order.notional}, status={order.status!r}); only quantity orders"
    raise _invalid(what="order", account=account, path=f"{path}.qty", detail=detail)


def _order_report(
    order: AlpacaOrder,
    *,
    account: str,
    path: str,
    ts_event: datetime,
    event: str | None = None,
) -> OrderReport:
    """One order (legs excluded) as an OrderReport; `path` is the order object's JSON path.

    `event` is the stream event that carried the order, if any: it may set or clear a flag.
    """
    hint = f" (order_class {order.order_class!r})" if order.order_class else ""
    symbol = _symbol(order.symbol, what="order", account=account, path=f"{path}.symbol", hint=hint)
    side = _side(order.side, ALPACA_ORDER_SIDE, what="order", account=account, path=f"{path}.side")
    quantity = _order_quantity(order, account=account, path=path)
    status, flags = to_order_status(order.status, qty=quantity, filled_qty=order.filled_qty)
    set_flag = ALPACA_EVENT_SETS_FLAG.get(event or "")
    if set_flag is not None and not status.is_terminal and status is not OrderStatus.UNKNOWN:
        flags |= {set_flag}  # a terminal status answers every pending request: no flag
    clear_flag = ALPACA_EVENT_CLEARS_FLAG.get(event or "")
    if clear_flag is not None:
        flags -= {clear_flag}
    with _located("order", account, path, _ORDER_FIELDS):
        return OrderReport(
            account=account,
            client_order_id=order.client_order_id or None,
            broker_order_id=order.id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            status=status,
            filled_qty=order.filled_qty,
            avg_price=order.filled_avg_price,
            ts_event=_utc(ts_event),
            raw_status=order.status,
            limit_price=order.limit_price,
            flags=flags,
            replaces=order.replaces or None,
        )


def _order_tree(order: AlpacaOrder, *, account: str, path: str) -> Iterator[OrderReport]:
    """The order, then each leg (depth first), each stamped with its own `updated_at`."""
    yield _order_report(order, account=account, path=path, ts_event=order.updated_at)
    for i, leg in enumerate(order.legs or ()):
        yield from _order_tree(leg, account=account, path=f"{path}.legs[{i}]")


@_READER.translator
def to_order_reports(raw: bytes | str, *, account: str) -> list[OrderReport]:
    """Order reports from a `/v2/orders` answer: a list or one order; nested legs follow their parent.

    An order that `replaces` another keeps its own `client_order_id` (the fresh id sent with
    the replace, see `replace_client_order_id`) and names the replaced order's id in
    `replaces`; the ledger chains the two. `ts_event` is each order's `updated_at`.

    Raises:
        InvalidReport: the payload is malformed; `field` is the JSON path (`$[2].legs[0].qty`).
    """
    decoded = _decode(_ORDERS, raw, what="order payload", account=account)
    reports: list[OrderReport] = []
    for order, path in _items(decoded):
        reports.extend(_order_tree(order, account=account, path=path))
    return reports


@_READER.translator
def to_order_reports_from_bulk(raw: bytes | str, *, account: str) -> list[OrderReport]:
    """Order reports from the HTTP 207 answer of `DELETE /v2/orders` or `DELETE /v2/positions`.

    Each 2xx item with a body is an order (the closing order of a position, or the
    cancelled order); items without a body or with an error status describe the request,
    not an order's state, and yield nothing (the client reports those).

    Raises:
        InvalidReport: the payload is malformed; `field` is the JSON path (`$[0].body.qty`).
    """
    items = _decode(_BULK, raw, what="bulk answer", account=account)
    reports: list[OrderReport] = []
    for i, item in enumerate(items):
        if not 200 <= item.status < 300 or bytes(memoryview(item.body)) in {b"", b"null"}:
            continue
        path = f"$[{i}].body"
        order = _decode(_ORDER, item.body, what="bulk answer", account=account, prefix=path)
        reports.extend(_order_tree(order, account=account, path=path))
    return reports


# --- positions ----------------------------------------------------------------------------


@_READER.translator
def to_position_reports(raw: bytes | str, *, account: str, as_of: datetime) -> list[PositionReport]:
    """Position reports from `GET /v2/positions` (a list) or `GET /v2/positions/{symbol}` (one).

    The quantity is signed by `side` (`short` -> negative), whatever sign Alpaca wrote; a
    `long` position with a negative quantity contradicts itself and is refused. Alpaca
    lists only open positions: a symbol absent here is flat. `ts_event` is `as_of`.

    Raises:
        InvalidReport: the payload is malformed; `field` is the JSON path (`$[0].side`).
    """
    decoded = _decode(_POSITIONS, raw, what="position payload", account=account)
    reports: list[PositionReport] = []
    for position, path in _items(decoded):
        sign = ALPACA_POSITION_SIGN.get(position.side)
        if sign is None:
            detail = f"side must be one of {sorted(ALPACA_POSITION_SIGN)}, got {position.side!r}"
            raise _invalid(what="position", account=account, path=f"{path}.side", detail=detail)
        _finite(position.qty, what="position", account=account, path=f"{path}.qty")
        if sign > 0 and position.qty < 0:
            detail = f"a long position with a negative qty {position.qty}"
            raise _invalid(what="position", account=account, path=f"{path}.qty", detail=detail)
        with _located("position", account, path, _POSITION_FIELDS):
            reports.append(
                PositionReport(
                    account=account,
                    symbol=_symbol(position.symbol, what="position", account=account, path=f"{path}.symbol"),
                    qty=sign * abs(position.qty),
                    avg_cost=position.avg_entry_price,
                    ts_event=_utc(as_of),
                ),
            )
    return reports


# --- fills: account activities ------------------------------------------------------------


def _fill_activities(raw: bytes | str, *, account: str) -> list[tuple[AlpacaFillActivity, str]]:
    """The FILL activities of an activities answer (list or one object), with their JSON paths."""
    what = "activity payload"
    decoded = _decode(_ACTIVITIES, raw, what=what, account=account)
    if isinstance(decoded, AlpacaActivityHeader):
        items: list[tuple[bytes | str | msgspec.Raw, str, AlpacaActivityHeader]] = [(raw, "$", decoded)]
    else:
        items = []
        for i, item in enumerate(decoded):
            path = f"$[{i}]"
            header = _decode(_ACTIVITY_HEADER, item, what=what, account=account, prefix=path)
            items.append((item, path, header))
    return [
        (_decode(_FILL_ACTIVITY, item, what=what, account=account, prefix=path), path)
        for item, path, header in items
        if header.activity_type == "FILL"  # CSD, DIV, ... are not executions
    ]


@_READER.translator
def to_fill_reports_from_activities(raw: bytes | str, *, account: str) -> list[FillReport]:
    """Fill reports from account activities; non-FILL activities (CSD, DIV, ...) are skipped.

    `exec_id` is `fill_exec_id(order_id, cum_qty)`, the same key the stream's fills get, so
    the ledger books a fill seen on both sources once (the activity `id` only when an
    activity lacks `cum_qty`). Activities do not carry our `client_order_id`.
    `ts_event` is `transaction_time`.

    Raises:
        InvalidReport: the payload is malformed; `field` is the JSON path (`$[3].price`).
    """
    reports: list[FillReport] = []
    for activity, path in _fill_activities(raw, account=account):
        what = "FILL activity"
        side = _side(activity.side, ALPACA_ACTIVITY_SIDE, what=what, account=account, path=f"{path}.side")
        with _located(what, account, path, _FILL_ACTIVITY_FIELDS):
            reports.append(
                FillReport(
                    account=account,
                    client_order_id=None,
                    broker_order_id=activity.order_id,
                    # Without cum_qty the activity id is all there is (cannot match the stream).
                    exec_id=fill_exec_id(activity.order_id, activity.cum_qty)
                    if activity.cum_qty is not None
                    else activity.id,
                    symbol=_symbol(activity.symbol, what=what, account=account, path=f"{path}.symbol"),
                    side=side,
                    qty=activity.qty,
                    price=activity.price,
                    ts_event=_utc(activity.transaction_time),
                ),
            )
    return reports


@_READER.translator
def fill_exec_id(order_id: str, cum_qty: Decimal) -> str:
    """The exec_id of an Alpaca fill, the same from the stream and from activities.

    The stream names an execution by `execution_id`, activities by their own `id`, and
    whether the two match is unverified. Keyed by their shared
    identity `(order_id, cum_qty)` instead, a fill seen on both is booked once by the
    ledger's exec-id dedupe. Example: "904837e3-...@10".
    """
    return f"{order_id}@{cum_qty.normalize():f}"


@_READER.translator
def fill_dedupe_key(order_id: str, cum_qty: Decimal) -> FillKey:
    """The fill identity shared by the stream and activities: `(order_id, cum_qty)`.

    An order's cumulative quantity strictly increases with each execution, so the pair
    names one execution in both sources (stream: `order.id`, `order.filled_qty` after the
    event; activity: `order_id`, `cum_qty`). `cum_qty` is normalized (`10.0` -> `1E+1`) so the
    key is equal whatever trailing zeros either source wrote.
    """
    return (order_id, cum_qty.normalize())


@_READER.translator
def activity_fill_keys(raw: bytes | str, *, account: str) -> dict[str, FillKey]:
    """`exec_id` (activity id) -> `fill_dedupe_key` for each FILL activity of the answer.

    Raises:
        InvalidReport: the payload is malformed or a FILL lacks `cum_qty` (`$[1].cum_qty`).
    """
    keys: dict[str, FillKey] = {}
    for activity, path in _fill_activities(raw, account=account):
        if activity.cum_qty is None:
            what, detail = "FILL activity", "cum_qty is missing"
            raise _invalid(what=what, account=account, path=f"{path}.cum_qty", detail=detail)
        keys[activity.id] = fill_dedupe_key(activity.order_id, activity.cum_qty)
    return keys


# --- stream: trade_updates ----------------------------------------------------------------


def _trade_update(raw: bytes | str, *, account: str) -> tuple[AlpacaTradeUpdate, str]:
    """The trade update and its JSON path: `$.data` inside an envelope, `$` when bare."""
    what = "trade_updates message"
    envelope = _decode(_ENVELOPE, raw, what=what, account=account)
    if envelope.stream is None:
        return _decode(_TRADE_UPDATE, raw, what=what, account=account), "$"
    if envelope.stream != "trade_updates":
        detail = f"expected 'trade_updates', got {envelope.stream!r}"
        raise _invalid(what=what, account=account, path="$.stream", detail=detail)
    return _decode(_TRADE_UPDATE, envelope.data, what=what, account=account, prefix="$.data"), "$.data"


def _fill_from_trade_update(update: AlpacaTradeUpdate, *, account: str, path: str) -> FillReport:
    what = f"trade_updates {update.event!r} message"
    order = update.order
    exec_id, qty, price = update.execution_id, update.qty, update.price
    if not exec_id or qty is None or price is None:
        name = "execution_id" if not exec_id else "qty" if qty is None else "price"
        detail = f"a {update.event} message needs {name}"
        raise _invalid(what=what, account=account, path=f"{path}.{name}", detail=detail)
    symbol = _symbol(order.symbol, what=what, account=account, path=f"{path}.order.symbol")
    side = _side(order.side, ALPACA_ORDER_SIDE, what=what, account=account, path=f"{path}.order.side")
    with _located(what, account, path, _TRADE_UPDATE_FILL_FIELDS):
        return FillReport(
            account=account,
            client_order_id=order.client_order_id or None,
            broker_order_id=order.id,
            # The embedded order's filled_qty is the cumulative after this execution.
            exec_id=fill_exec_id(order.id, order.filled_qty) if order.filled_qty else exec_id,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            ts_event=_utc(update.timestamp or order.updated_at),
        )


@_READER.translator
def to_reports_from_trade_update(raw: bytes | str, *, account: str) -> list[OrderReport | FillReport]:
    """Reports from one `trade_updates` message, enveloped (`{"stream", "data"}`) or bare.

    1. `fill` / `partial_fill`: a FillReport first (`execution_id`, this execution's
       `qty` and `price`, at `timestamp`), then the order's report.
    2. Every event, known or not (`restated`, `pending_review`, events alpaca-py's enum
       lacks such as `done_for_day` or `order_cancel_rejected`, and future ones): the
       OrderReport of the embedded order, its status from `ALPACA_STATUS`.
    3. `pending_cancel` / `pending_replace` set their flag on a working order;
       `order_cancel_rejected` / `order_replace_rejected` clear it even if the embedded
       status still says pending.

    Only the embedded order is reported, not its `legs`: each leg gets its own messages.
    `ts_event` is the message `timestamp`, else the order's `updated_at`.

    Raises:
        InvalidReport: the payload is malformed; `field` is the JSON path
            (`$.data.order.filled_qty`; `$.order...` for a bare message).
    """
    update, path = _trade_update(raw, account=account)
    reports: list[OrderReport | FillReport] = []
    if update.event in ALPACA_FILL_EVENTS:
        reports.append(_fill_from_trade_update(update, account=account, path=path))
    reports.append(
        _order_report(
            update.order,
            account=account,
            path=f"{path}.order",
            ts_event=update.timestamp or update.order.updated_at,
            event=update.event,
        ),
    )
    return reports


@_READER.translator
def trade_update_fill_key(raw: bytes | str, *, account: str) -> FillKey | None:
    """`fill_dedupe_key(order.id, order.filled_qty)` of a fill message; None for other events.

    Raises:
        InvalidReport: the payload is malformed; `field` is the JSON path.
    """
    update, _ = _trade_update(raw, account=account)
    if update.event not in ALPACA_FILL_EVENTS:
        return None
    return fill_dedupe_key(update.order.id, update.order.filled_qty)
