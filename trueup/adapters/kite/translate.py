"""Pure translation of Zerodha Kite Connect v3 payloads into trueup reports.

Raw JSON in (bytes or str, exactly as Kite sent it) with its context as arguments,
reports out: no clock, no I/O, no kiteconnect. A malformed payload raises `InvalidReport`
whose `field` is the JSON path of the bad field (`$.data[3].quantity`, `$[0].product`);
a list is translated whole or not at all, never partially. REST answers are accepted
with or without Kite's `{"status": "success", "data": ...}` envelope; an `error` envelope
is refused at `$.status`. The wire structs are in `wire.py`, the decoders and field
readers shared with `groups.py` in `readers.py`; `our_tag`, `is_our_tag`, `group_by_tag`,
`instrument_symbol`, `split_symbol` (from `ids.py`) and `verify_postback` (from
`readers.py`) are re-exported here.

Payloads (all day-scoped):

* `GET /orders` (`orders()`): the latest state of each of today's orders ->
  `to_order_reports`;
* `GET /orders/{order_id}` (`order_history()`): one order's transitions, oldest first ->
  `to_order_reports_from_history`, one report per row;
* `GET /trades` (`trades()`), `GET /orders/{order_id}/trades` (`order_trades()`) ->
  `to_fill_reports`, with `fill_dedupe_key`;
* `GET /portfolio/positions` (`positions()`) -> `to_position_reports` (the `net` list,
  or the `day` list on request);
* postback bodies and WebSocket `{"type": "order", "data": ...}` frames ->
  `to_reports_from_update`; `verify_postback` checks a postback's checksum, and
  `to_reports_from_postback` verifies then translates.

The logical view of the order book (slices of one tag aggregated into one order) is in
`groups.py`.

Decisions:

* Symbols: `f"{exchange}:{tradingsymbol}:{product}"` (`"NSE:SBIN:CNC"`), built by
  `instrument_symbol` in every translator. Kite keys positions by (exchange,
  tradingsymbol, product): the same share bought CNC and MIS is two positions, and an
  NSE and a BSE listing are two instruments. Orders and trades carry the same three
  fields, so fills net into the position Kite reports. Parts are kept verbatim; a part
  that is empty or contains `:` is refused, so `split_symbol` always inverts it.
* Times: Kite writes IST without an offset (`"2021-05-31 09:18:57"`); reports hold UTC
  (`ist_to_utc`). An order's `ts_event` is the later of `order_timestamp` (registered by
  Kite, bumped by each modification) and `exchange_update_timestamp` (last state change
  at the exchange; null until the order reaches it), the time since which the state
  shown has held; `exchange_timestamp` (registration at the exchange) is not used. A
  fill's `ts_event` is `fill_timestamp`, else `exchange_timestamp`; `trades[].
  order_timestamp` is a time of day (`"09:16:39"`) and never used. Positions carry no
  time: the caller's `as_of`.
* Numbers: Kite sends JSON numbers; they decode to `Decimal` from their text. MCX and
  derivative quantities stay in Kite's unit (lots for MCX; `multiplier` is not applied),
  the same in orders, trades and positions.
* Prices: `avg_price` is `average_price` once `filled_quantity > 0`, else None (Kite
  writes 0 for "no fills", not a price). `limit_price` is `price` for `LIMIT` and `SL`
  orders, else None (Kite writes 0 for `MARKET` and `SL-M`).
* Our id: `client_order_id` is `our_tag(order)`: `tag` if it is 1-20 [A-Za-z0-9] and
  not a tag Kite adds itself, else the first such entry of `tags`, else None (an
  external order). Pass `is_ours` to narrow it further. Trades carry no tag: fills name
  the order by `broker_order_id` only.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

from trueup.adapters.kite.ids import (
    TagPredicate,
    group_by_tag,
    instrument_symbol,
    is_our_tag,
    is_slice,
    our_tag,
    split_symbol,
)
from trueup.adapters.kite.readers import (
    FILL_FIELDS,
    HOLDINGS,
    ORDER_FIELDS,
    ORDERS,
    POSITION_FIELDS,
    POSITIONS,
    READER,
    TRADES,
    decode,
    finite,
    invalid,
    located,
    read_body,
    read_non_empty,
    read_symbol,
    read_time,
    read_update,
    require_verified,
    verify_postback,
)
from trueup.adapters.kite.wire import KiteOrder, KitePosition, KiteTrade
from trueup.domain.errors import InvalidReport
from trueup.domain.money import derived_price, money_context
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderFlag, OrderStatus, Side

__all__ = [
    "KITE_LIMIT_ORDER_TYPES",
    "KITE_SIDE",
    "KITE_STATUS",
    "KITE_STATUS_FLAGS",
    "FillKey",
    "TagPredicate",
    "fill_dedupe_key",
    "group_by_tag",
    "instrument_symbol",
    "is_our_tag",
    "is_slice",
    "our_tag",
    "split_symbol",
    "to_account_positions",
    "to_fill_reports",
    "to_order_reports",
    "to_order_reports_from_history",
    "to_order_status",
    "to_position_reports",
    "to_reports_from_postback",
    "to_reports_from_update",
    "update_as_trigger",
    "verify_postback",
]

FillKey = tuple[str, str]
"""Fill identity `(exchange, trade_id)`: trade ids are unique per exchange only."""


# --- tables -------------------------------------------------------------------------------

KITE_STATUS: Final[dict[str, OrderStatus]] = {
    "PUT ORDER REQ RECEIVED": OrderStatus.PENDING_NEW,  # the API's spelling (order_info.json)
    "PUT ORDER REQUEST RECEIVED": OrderStatus.PENDING_NEW,  # the docs' spelling: accept both
    "AMO REQ RECEIVED": OrderStatus.PENDING_NEW,  # after-market order, held until the session
    "VALIDATION PENDING": OrderStatus.PENDING_NEW,  # RMS checks
    "OPEN PENDING": OrderStatus.PENDING_NEW,  # not yet at the exchange; persists if the link is down
    "OPEN": OrderStatus.ACCEPTED,  # PARTIALLY_FILLED once filled_quantity > 0 (a partial fill stays OPEN)
    "COMPLETE": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELED,  # user, EOD, IOC remainder, exchange; may carry fills
    "CANCEL": OrderStatus.CANCELED,  # the postback docs' spelling of the event
    "REJECTED": OrderStatus.REJECTED,  # reason in status_message
    # Working statuses that carry a flag or are events rather than states; like OPEN
    # they are refined by filled_quantity in `to_order_status`, so a pending modify or
    # cancel never takes the rank back below the fills already reported.
    "TRIGGER PENDING": OrderStatus.ACCEPTED,  # SL/SL-M waiting for its trigger: held
    "MODIFY VALIDATION PENDING": OrderStatus.ACCEPTED,  # modify under RMS checks; still fillable
    "MODIFY PENDING": OrderStatus.ACCEPTED,  # modify sent to the exchange; still fillable
    "MODIFIED": OrderStatus.ACCEPTED,  # modify done (transient, OPEN follows); clears replace_pending
    "CANCEL PENDING": OrderStatus.ACCEPTED,  # cancel sent to the exchange; still fillable
    "UPDATE": OrderStatus.ACCEPTED,  # postback/WebSocket only: a modify or a partial fill happened
}
"""Kite `status` -> normalized status; exact strings only, anything else is UNKNOWN."""

KITE_STATUS_FLAGS: Final[dict[str, frozenset[OrderFlag]]] = {
    "TRIGGER PENDING": frozenset({OrderFlag.HELD}),
    "MODIFY VALIDATION PENDING": frozenset({OrderFlag.REPLACE_PENDING}),
    "MODIFY PENDING": frozenset({OrderFlag.REPLACE_PENDING}),
    "CANCEL PENDING": frozenset({OrderFlag.CANCEL_PENDING}),
}
"""Flags a raw status sets; statuses not listed set none (so `MODIFIED`, `OPEN` clear them)."""

KITE_SIDE: Final[dict[str, Side]] = {"BUY": Side.BUY, "SELL": Side.SELL}
"""`transaction_type` -> side; anything else is an invalid payload."""

KITE_LIMIT_ORDER_TYPES: Final = frozenset({"LIMIT", "SL"})
"""Order types whose `price` is a limit price (`MARKET` and `SL-M` carry `price: 0`)."""

# --- statuses, sides ----------------------------------------------------------------------


def to_order_status(raw_status: str, *, filled_qty: Decimal) -> tuple[OrderStatus, frozenset[OrderFlag]]:
    """Normalized status and flags of a Kite order status, refined by its fill progress.

    1. Unknown string (or another spelling: `open`, `Complete`) -> UNKNOWN, no flags
       (the report changes nothing; raw kept).
    2. Any status whose table entry is ACCEPTED -> PARTIALLY_FILLED once `filled_qty > 0`:
       a partial fill shows as `OPEN` (or `UPDATE`) with `filled_quantity > 0`, and the
       rank is kept through `MODIFY ... PENDING`, `MODIFIED`, `CANCEL PENDING`.
    3. Terminal statuses are kept as they are: `CANCELLED` with fills is CANCELED (the
       ledger moves it to FILLED if the fills reach the quantity).
    """
    base = KITE_STATUS.get(raw_status)
    if base is None:
        return OrderStatus.UNKNOWN, frozenset()
    flags = KITE_STATUS_FLAGS.get(raw_status, frozenset())
    if base is OrderStatus.ACCEPTED and filled_qty > 0:
        return OrderStatus.PARTIALLY_FILLED, flags
    return base, flags


def _side(value: str, *, what: str, account: str, path: str) -> Side:
    side = KITE_SIDE.get(value)
    if side is None:
        detail = f"transaction_type must be one of {sorted(KITE_SIDE)}, got {value!r}"
        raise invalid(what=what, account=account, path=path, detail=detail)
    return side


# --- orders -------------------------------------------------------------------------------


def _order_time(order: KiteOrder, *, what: str, account: str, path: str) -> datetime:
    """The later of `order_timestamp` and `exchange_update_timestamp`: since when this state held."""
    ts = read_time(order.order_timestamp, what=what, account=account, path=f"{path}.order_timestamp")
    update = order.exchange_update_timestamp
    if update is None:  # the order has not reached the exchange (REJECTED by RMS, OPEN PENDING)
        return ts
    return max(ts, read_time(update, what=what, account=account, path=f"{path}.exchange_update_timestamp"))


@READER.translator
def order_report(
    order: KiteOrder,
    *,
    account: str,
    path: str,
    is_ours: TagPredicate | None,
    what: str = "order",
) -> OrderReport:
    """One Kite order as an OrderReport; `path` is the order object's JSON path.

    Public for `groups.to_order_book`, which reports each order of the book this way
    before grouping; not in `__all__`, the surface the client and ledger wiring use.
    """
    read_non_empty(order.order_id, what=what, account=account, path=f"{path}.order_id")
    symbol = read_symbol(order, what=what, account=account, path=path)
    side = _side(order.transaction_type, what=what, account=account, path=f"{path}.transaction_type")
    filled = finite(order.filled_quantity, what=what, account=account, path=f"{path}.filled_quantity")
    status, flags = to_order_status(order.status, filled_qty=filled)
    limit_price = order.price if order.order_type in KITE_LIMIT_ORDER_TYPES else None
    ts_event = _order_time(order, what=what, account=account, path=path)
    with located(what, account, path, ORDER_FIELDS):
        return OrderReport(
            account=account,
            client_order_id=our_tag(order, is_ours=is_ours),
            broker_order_id=order.order_id,
            symbol=symbol,
            side=side,
            quantity=order.quantity,
            status=status,
            filled_qty=filled,
            avg_price=order.average_price if filled > 0 else None,
            ts_event=ts_event,
            raw_status=order.status,
            limit_price=limit_price,
            flags=flags,
        )


@READER.translator
def to_order_reports(
    raw: bytes | str, *, account: str, is_ours: TagPredicate | None = None
) -> list[OrderReport]:
    """Order reports from `GET /orders` (`orders()`): one per order, in Kite's order.

    `raw` is the answer with its envelope or the bare `data` list. Each report is the
    order's latest state; `client_order_id` is `our_tag(order, is_ours=is_ours)` (None for
    external orders), `broker_order_id` the `order_id`. Autoslice children and iceberg
    legs are separate orders here; `group_by_tag` groups them.

    Raises:
        InvalidReport: the payload is malformed or an error envelope; `field` is the JSON
            path (`$.data[2].quantity`, `$[2].quantity` without the envelope, `$.status`).
    """
    what = "orders answer"
    body, prefix = read_body(raw, what=what, account=account)
    orders = decode(ORDERS, body, what=what, account=account, prefix=prefix)
    return [
        order_report(order, account=account, path=f"{prefix}[{i}]", is_ours=is_ours)
        for i, order in enumerate(orders)
    ]


@READER.translator
def to_order_reports_from_history(
    raw: bytes | str, *, account: str, is_ours: TagPredicate | None = None
) -> list[OrderReport]:
    """Order reports from `GET /orders/{order_id}` (`order_history()`): one per row, oldest first.

    Kite lists every state the order went through (`PUT ORDER REQ RECEIVED` ...
    `MODIFIED`, `OPEN`); each row becomes a report stamped with that row's time (the
    later of `order_timestamp` and `exchange_update_timestamp`), so replaying them in
    order walks the ledger through the same transitions. Every row must name one order.

    Raises:
        InvalidReport: the payload is malformed, an error envelope, or rows of several
            orders; `field` is the JSON path (`$.data[4].order_id`).
    """
    what = "order history"
    body, prefix = read_body(raw, what=what, account=account)
    rows = decode(ORDERS, body, what=what, account=account, prefix=prefix)
    reports: list[OrderReport] = []
    for i, row in enumerate(rows):
        path = f"{prefix}[{i}]"
        if row.order_id != rows[0].order_id:
            detail = f"the history of {rows[0].order_id!r} has a row of order {row.order_id!r}"
            raise invalid(what=what, account=account, path=f"{path}.order_id", detail=detail)
        reports.append(order_report(row, account=account, path=path, is_ours=is_ours, what=what))
    return reports


# --- fills --------------------------------------------------------------------------------


def _fill_report(trade: KiteTrade, *, account: str, path: str) -> FillReport:
    what = "trade"
    read_non_empty(trade.trade_id, what=what, account=account, path=f"{path}.trade_id")
    symbol = read_symbol(trade, what=what, account=account, path=path)
    side = _side(trade.transaction_type, what=what, account=account, path=f"{path}.transaction_type")
    # fill_timestamp, else exchange_timestamp; order_timestamp is a time of day ("09:16:39").
    if trade.fill_timestamp is not None:
        ts = read_time(trade.fill_timestamp, what=what, account=account, path=f"{path}.fill_timestamp")
    elif trade.exchange_timestamp is not None:
        ts = read_time(
            trade.exchange_timestamp, what=what, account=account, path=f"{path}.exchange_timestamp"
        )
    else:
        detail = "a trade needs fill_timestamp or exchange_timestamp (order_timestamp has no date)"
        raise invalid(what=what, account=account, path=f"{path}.fill_timestamp", detail=detail)
    with located(what, account, path, FILL_FIELDS):
        return FillReport(
            account=account,
            client_order_id=None,  # trades carry no tag; the ledger links them by order_id
            broker_order_id=trade.order_id or None,
            exec_id=trade.trade_id,
            symbol=symbol,
            side=side,
            qty=trade.quantity,
            price=trade.average_price,
            ts_event=ts,
        )


@READER.translator
def to_fill_reports(raw: bytes | str, *, account: str) -> list[FillReport]:
    """Fill reports from `GET /trades` (`trades()`) or `GET /orders/{order_id}/trades` (`order_trades()`).

    One report per trade: `exec_id` is `trade_id`, `qty` this execution's `quantity`,
    `price` its `average_price` (a trade's own price), `broker_order_id` the `order_id`,
    `client_order_id` None (trades carry no tag). Trade ids are unique per exchange only:
    use `fill_dedupe_key` to dedupe across orders or across both endpoints (within one
    order, which trades on one exchange, `exec_id` alone is enough).

    Raises:
        InvalidReport: the payload is malformed or an error envelope; `field` is the JSON
            path (`$.data[1].average_price`).
    """
    what = "trades answer"
    body, prefix = read_body(raw, what=what, account=account)
    trades = decode(TRADES, body, what=what, account=account, prefix=prefix)
    return [_fill_report(trade, account=account, path=f"{prefix}[{i}]") for i, trade in enumerate(trades)]


@READER.translator
def fill_dedupe_key(fill: FillReport) -> FillKey:
    """`(exchange, trade_id)` of a fill made by `to_fill_reports`: the same from both endpoints.

    Raises:
        ValueError: `fill.symbol` is not a Kite symbol (`EXCHANGE:TRADINGSYMBOL:PRODUCT`).
    """
    exchange, _, _ = split_symbol(fill.symbol)
    return (exchange, fill.exec_id)


# --- positions ----------------------------------------------------------------------------


@READER.translator
def to_position_reports(
    raw: bytes | str, *, account: str, as_of: datetime, book: Literal["net", "day"] = "net"
) -> list[PositionReport]:
    """Position reports from `GET /portfolio/positions` (`positions()`): the `net` list by default.

    `qty` is Kite's signed `quantity`; a position closed today stays listed with
    `quantity: 0` and is reported as a qty-0 row (flat), not dropped. `avg_cost` is
    `average_price`; `ts_event` is `as_of`, in UTC. An instrument absent from `net` is
    flat. `book="day"` reads the `day` list instead (today's trading only, e.g. `-3`
    sold today out of a carried position; an answer without it is refused at `$.day`):
    reconciliation compares `net`, the account's positions. Two rows with one symbol
    would make the snapshot ambiguous and are refused.

    Raises:
        InvalidReport: the payload is malformed or an error envelope (`field` is the JSON
            path, `$.data.net[1].quantity`), or `as_of` is naive (`field` "as_of").
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        msg = f"as_of must be timezone-aware, got naive {as_of.isoformat()}"
        raise InvalidReport(msg, field="as_of")
    what = "positions answer"
    body, prefix = read_body(raw, what=what, account=account)
    positions = decode(POSITIONS, body, what=what, account=account, prefix=prefix)
    rows = positions.net if book == "net" else positions.day
    if rows is None:
        raise invalid(what=what, account=account, path=f"{prefix}.day", detail="no `day` list")
    reports: list[PositionReport] = []
    first_seen: dict[str, str] = {}
    for i, position in enumerate(rows):
        path = f"{prefix}.{book}[{i}]"
        symbol = read_symbol(position, what="position", account=account, path=path)
        if symbol in first_seen:
            detail = f"{symbol} is listed twice (first at `{first_seen[symbol]}`)"
            raise invalid(what="position", account=account, path=f"{path}.tradingsymbol", detail=detail)
        first_seen[symbol] = path
        with located("position", account, path, POSITION_FIELDS):
            reports.append(
                PositionReport(
                    account=account,
                    symbol=symbol,
                    qty=position.quantity,
                    avg_cost=position.average_price,
                    ts_event=as_of.astimezone(UTC),
                ),
            )
    return reports


@READER.translator
def to_account_positions(
    positions_raw: bytes | str, holdings_raw: bytes | str, *, account: str, as_of: datetime
) -> list[PositionReport]:
    """The account's positions: `positions()` `net` plus the shares carried in `holdings()`.

    A CNC buy is in `positions()` on its day only; from the next day it is in
    `holdings()`. Read alone, `positions()` says a delivery position
    bought yesterday is flat. Each share is counted once:

    * carried shares: `realised_quantity` (delivered) + `t1_quantity` (bought on an
      earlier day, not delivered yet): two disjoint parts. `quantity` is not used (Kite
      does not say whether it includes `t1_quantity`), nor `opening_quantity` (the same
      shares, as of the morning);
    * today's trading: the CNC row of `positions()` `net` (a buy today is `+n` there; a
      sale of held shares is `-n` there). `used_quantity` (sold today) is not subtracted
      again: those sales are that negative row;
    * MTF shares carried are the holding's `mtf.quantity`, under product `MTF`, plus the
      MTF row of `positions()`.

    A holding adds to the `positions()` row of the same (exchange, tradingsymbol,
    product); holdings of one instrument are listed once. Average: weighted by quantity
    when today's trading added to the holding, the holding's when today sold out of it
    (a sale does not change the cost of what is left), 0 when flat.

    Raises:
        InvalidReport: either payload is malformed or an error envelope (`field` is the JSON
            path: `$.data[0].t1_quantity` of the holdings answer), or `as_of` is naive.
    """
    today = {p.symbol: p for p in to_position_reports(positions_raw, account=account, as_of=as_of)}
    what = "holdings answer"
    body, prefix = read_body(holdings_raw, what=what, account=account)
    holdings = decode(HOLDINGS, body, what=what, account=account, prefix=prefix)
    carried: dict[str, tuple[Decimal, Decimal, str]] = {}
    for i, holding in enumerate(holdings):
        path = f"{prefix}[{i}]"
        parts = [(holding.product, holding.realised_quantity + holding.t1_quantity, holding.average_price)]
        if holding.mtf is not None and holding.mtf.quantity:
            parts.append(("MTF", holding.mtf.quantity, holding.mtf.average_price))
        for product, qty, avg in parts:
            symbol = read_symbol(
                KitePosition(
                    exchange=holding.exchange,
                    tradingsymbol=holding.tradingsymbol,
                    product=product,
                    quantity=qty,
                    average_price=avg,
                ),
                what="holding",
                account=account,
                path=path,
            )
            if symbol in carried:
                detail = f"{symbol} is held twice (first at `{carried[symbol][2]}`)"
                raise invalid(what="holding", account=account, path=f"{path}.tradingsymbol", detail=detail)
            carried[symbol] = (qty, avg, path)
    merged = [report for symbol, report in today.items() if symbol not in carried]
    ts = as_of.astimezone(UTC)
    for symbol, (qty, avg, _) in carried.items():
        row = today.get(symbol)
        day_qty, day_avg = (row.qty, row.avg_cost) if row is not None else (Decimal(0), Decimal(0))
        average = _carried_average(qty, avg, day_qty, day_avg)
        total = qty + day_qty
        report = PositionReport(account=account, symbol=symbol, qty=total, avg_cost=average, ts_event=ts)
        merged.append(report)
    return merged


@money_context
def _carried_average(held: Decimal, held_avg: Decimal, day: Decimal, day_avg: Decimal) -> Decimal:
    """Average cost of a holding plus today's trading in it (`to_account_positions`)."""
    total = held + day
    if total == 0:
        return Decimal(0)
    if held == 0:
        return day_avg
    if day == 0 or (day > 0) != (held > 0):
        return held_avg if (total > 0) == (held > 0) else day_avg  # sold out of it: cost unchanged
    return derived_price(held * held_avg + day * day_avg, total)


# --- postbacks and WebSocket order updates ------------------------------------------------


@READER.translator
def to_reports_from_update(
    raw: bytes | str,
    *,
    account: str,
    is_ours: TagPredicate | None = None,
    slices: Container[str] = frozenset(),
) -> list[OrderReport]:
    """The OrderReport of a postback body or a WebSocket frame `{"type": "order", "data": {...}}`.

    Informative: `KiteClient` applies none of it (`update_as_trigger`), only the refresh
    an update triggers.

    Updates are triggers, not the truth: Kite sends them for fills, modifications and
    status changes (not for placement), possibly out of order (a partial-fill `UPDATE`
    after the `COMPLETE`) and duplicated, and they carry no trade id and no last-fill
    quantity or price. So this gives only the order's report (the rank rule ignores a
    late lower one); on each update the client should refresh `orders()` and fetch
    `order_trades(order_id)` for the fills. WebSocket updates cover every order of the
    user (placed anywhere), postbacks only those of the app's api_key. Postbacks should
    be checked with `verify_postback` first (WebSocket updates have a blank checksum):
    `to_reports_from_postback` does both. `ts_event` is the later of `order_timestamp`
    and `exchange_update_timestamp`.

    The update of a slice gives no report: its quantity, fills and status are the
    slice's, and applied to the logical order its tag names they would shrink its
    quantity or end it while other slices still work. The payload is still valid (kept
    raw by the caller); the order-book refresh it triggers aggregates every slice
    (`groups.to_order_book`). A slice is known by `is_slice` (Kite's `autoslice` tags,
    `meta.iceberg`) or by its `order_id` in `slices`: postbacks carry `tag` but no
    `tags` (postback.json), so an autoslice child's postback looks like a lone order;
    the caller passes the order ids it knows as slices (from the placement's answer
    and from the order book).

    Raises:
        InvalidReport: the payload is malformed or a frame of another type (`$.type`);
            `field` is the JSON path (`$.data.filled_quantity`, `$.filled_quantity`).
    """
    order, path = read_update(raw, account=account)
    report = order_report(order, account=account, path=path, is_ours=is_ours, what="order update")
    if report.client_order_id is not None and (is_slice(order) or order.order_id in slices):
        return []
    return [report]


@READER.translator
def to_reports_from_postback(
    raw: bytes | str,
    *,
    account: str,
    api_secret: str,
    is_ours: TagPredicate | None = None,
    slices: Container[str] = frozenset(),
) -> list[OrderReport]:
    """`to_reports_from_update` of a postback body whose checksum verifies (`verify_postback`).

    A body that fails verification is refused whole: the caller keeps it raw and reports
    it (the ledger's INVALID_REPORT), and nothing in it is applied.

    Raises:
        InvalidReport: the checksum is missing or wrong (`field` `$.checksum`), or the
            body is malformed (`field` its JSON path).
        ValueError: `api_secret` is empty.
    """
    require_verified(raw, api_secret, account=account)
    return to_reports_from_update(raw, account=account, is_ours=is_ours, slices=slices)


@READER.translator
def update_as_trigger(raw: bytes | str, *, account: str, api_secret: str | None = None) -> list[OrderReport]:
    """Check a postback body (`api_secret` given) or a WebSocket frame, and report nothing: a trigger.

    What `KiteClient.stream()` applies of an update: nothing but the fact it came. An
    update is not the truth about an order of ours: a slice's update names the logical
    order's tag with one slice's quantity and status (and may arrive before the placement
    answers, when nothing yet marks it as a slice), updates come late and twice, and a
    postback's checksum covers `order_id` and `order_timestamp` only, so a body with a
    captured checksum verifies whatever else it says. The update is stored raw and the
    order book, re-read on the `RefreshNeeded` that follows, says what changed.

    Raises:
        InvalidReport: a postback's checksum is missing or wrong (`$.checksum`), or the
            payload is not a Kite order update (`field` its JSON path): stored and reported
            as INVALID_REPORT, and no refresh is triggered by it.
    """
    if api_secret is not None:
        require_verified(raw, api_secret, account=account)
    order, path = read_update(raw, account=account)
    order_report(order, account=account, path=path, is_ours=None, what="order update")
    return []
