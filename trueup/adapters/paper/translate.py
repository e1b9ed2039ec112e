"""Pure translation of paper broker payloads into trueup reports.

Raw JSON in (str or bytes, exactly as the paper broker sent it) with the account as an
argument, reports out: no clock, no I/O, no broker state. The wire format is described
in `wire.py`. A malformed payload raises `InvalidReport` whose `field` is the JSON path
of the bad field (`$.qty`, `$[2].ts`); a list answer is translated whole or not at all.

* one stream message (order update, fill or position) -> `to_reports`;
* the orders answer -> `to_order_reports`, one order -> `to_order_report`;
* the fills answer -> `to_fill_reports`;
* the positions answer -> `to_position_reports`.

Order reports carry `source=ReportSource.PAPER` and the raw status verbatim; a status the
`PAPER_STATUS` table does not know becomes `OrderStatus.UNKNOWN` (the rules keep it and
raise UNKNOWN_STATUS) instead of failing the decode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, TypeVar

import msgspec

from trueup.adapters.paper.wire import PaperFill, PaperMessage, PaperOrder, PaperPosition
from trueup.adapters.payloads import PayloadReader
from trueup.domain.reports import FillReport, OrderReport, PositionReport, Report
from trueup.domain.status import OrderStatus, ReportSource, Side

__all__ = [
    "PAPER_SIDE",
    "PAPER_STATUS",
    "MessageTranslator",
    "to_fill_report",
    "to_fill_reports",
    "to_order_report",
    "to_order_reports",
    "to_order_status",
    "to_position_report",
    "to_position_reports",
    "to_reports",
]

# --- tables -------------------------------------------------------------------------------

PAPER_STATUS: Final[dict[str, OrderStatus]] = {
    "new": OrderStatus.ACCEPTED,  # the paper broker confirms at once: working, no fills
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,  # may carry filled_qty > 0 (cancelled after a partial)
    "rejected": OrderStatus.REJECTED,  # unknown symbol: stored at the broker, never worked
}
"""Paper `status` -> normalized status; anything else is UNKNOWN."""

PAPER_SIDE: Final[dict[str, Side]] = {"buy": Side.BUY, "sell": Side.SELL}
"""Paper `side` -> direction; anything else is an invalid payload."""

_ORDER_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "id",  # raised when neither id is present: the broker id is required
    "symbol": "symbol",
    "side": "side",
    "quantity": "qty",
    "filled_qty": "filled_qty",
    "avg_price": "avg_price",
    "limit_price": "limit_price",
    "ts_event": "ts",
}
"""OrderReport field -> paper order field, to name the JSON path of a refused value."""

_FILL_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "order_id",
    "exec_id": "exec_id",
    "symbol": "symbol",
    "side": "side",
    "qty": "qty",
    "price": "price",
    "ts_event": "ts",
}
_POSITION_FIELDS: Final[dict[str, str]] = {
    "symbol": "symbol",
    "qty": "qty",
    "avg_cost": "avg_cost",
    "ts_event": "ts",
}

_R = TypeVar("_R", FillReport, PositionReport)

# Decoders are built once and reused (msgspec perf tips).
_MESSAGE = msgspec.json.Decoder(PaperMessage)
_ORDER = msgspec.json.Decoder(PaperOrder)
_ORDERS = msgspec.json.Decoder(list[PaperOrder])
_FILLS = msgspec.json.Decoder(list[PaperFill])
_POSITIONS = msgspec.json.Decoder(list[PaperPosition])

# Errors name the JSON path of the bad field (see trueup.adapters.payloads).
_READER: Final = PayloadReader("paper")
_invalid = _READER.invalid
_decode = _READER.decode
_located = _READER.located


def _side(value: str, *, what: str, account: str, path: str) -> Side:
    side = PAPER_SIDE.get(value)
    if side is None:
        detail = f"side must be one of {sorted(PAPER_SIDE)}, got {value!r}"
        raise _invalid(what=what, account=account, path=f"{path}.side", detail=detail)
    return side


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# --- statuses -----------------------------------------------------------------------------


def to_order_status(raw_status: str) -> OrderStatus:
    """The normalized status of a paper status string; UNKNOWN when the table lacks it."""
    return PAPER_STATUS.get(raw_status, OrderStatus.UNKNOWN)


# --- one struct -> one report ---------------------------------------------------------------


def _order(order: PaperOrder, *, account: str, path: str) -> OrderReport:
    side = _side(order.side, what="order", account=account, path=path)
    with _located("order", account, path, _ORDER_FIELDS):
        return OrderReport(
            account=account,
            client_order_id=order.client_order_id or None,
            broker_order_id=order.id,
            symbol=order.symbol,
            side=side,
            quantity=order.qty,
            status=to_order_status(order.status),
            filled_qty=order.filled_qty,
            avg_price=order.avg_price,
            ts_event=_utc(order.ts),
            raw_status=order.status,
            limit_price=order.limit_price,
            source=ReportSource.PAPER,
        )


def _fill(fill: PaperFill, *, account: str, path: str) -> FillReport:
    side = _side(fill.side, what="fill", account=account, path=path)
    with _located("fill", account, path, _FILL_FIELDS):
        return FillReport(
            account=account,
            client_order_id=fill.client_order_id or None,
            broker_order_id=fill.order_id,
            exec_id=fill.exec_id,
            symbol=fill.symbol,
            side=side,
            qty=fill.qty,
            price=fill.price,
            ts_event=_utc(fill.ts),
        )


def _position(position: PaperPosition, *, account: str, path: str) -> PositionReport:
    with _located("position", account, path, _POSITION_FIELDS):
        return PositionReport(
            account=account,
            symbol=position.symbol,
            qty=position.qty,
            avg_cost=position.avg_cost,
            ts_event=_utc(position.ts),
        )


# --- public translators -----------------------------------------------------------------------


@_READER.translator
def to_reports(raw: bytes | str, *, account: str) -> list[Report]:
    """The report of one stream message: an order update, a fill or a position.

    This is the translator a paper `RawMessage` carries (with `account` bound).

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$.type`, `$.qty`).
    """
    message = _decode(_MESSAGE, raw, what="message", account=account)
    if isinstance(message, PaperOrder):
        return [_order(message, account=account, path="$")]
    if isinstance(message, PaperFill):
        return [_fill(message, account=account, path="$")]
    return [_position(message, account=account, path="$")]


@_READER.translator
def to_order_report(raw: bytes | str, *, account: str) -> OrderReport:
    """The report of one order object (a submit or lookup answer).

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$.filled_qty`).
    """
    return _order(_decode(_ORDER, raw, what="order", account=account), account=account, path="$")


@_READER.translator
def to_order_reports(raw: bytes | str, *, account: str) -> list[OrderReport]:
    """Reports of the orders answer (a JSON list of order objects).

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$[3].status`).
    """
    orders = _decode(_ORDERS, raw, what="orders answer", account=account)
    return [_order(o, account=account, path=f"$[{i}]") for i, o in enumerate(orders)]


def _one(raw: bytes | str, kind: type[_R], name: str, *, account: str) -> _R:
    """The single report of one message, refused at `$.type` if it is another kind."""
    report = to_reports(raw, account=account)[0]
    if not isinstance(report, kind):
        detail = f"expected a {name} message, got {type(report).__struct_config__.tag!r}"
        raise _invalid(what=name, account=account, path="$.type", detail=detail)
    return report


@_READER.translator
def to_fill_report(raw: bytes | str, *, account: str) -> FillReport:
    """The report of one fill object.

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$.price`).
    """
    return _one(raw, FillReport, "fill", account=account)


@_READER.translator
def to_fill_reports(raw: bytes | str, *, account: str) -> list[FillReport]:
    """Reports of the fills answer (a JSON list of fill objects).

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$[0].exec_id`).
    """
    fills = _decode(_FILLS, raw, what="fills answer", account=account)
    return [_fill(f, account=account, path=f"$[{i}]") for i, f in enumerate(fills)]


@_READER.translator
def to_position_report(raw: bytes | str, *, account: str) -> PositionReport:
    """The report of one position object.

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$.avg_cost`).
    """
    return _one(raw, PositionReport, "position", account=account)


@_READER.translator
def to_position_reports(raw: bytes | str, *, account: str) -> list[PositionReport]:
    """Reports of the positions answer (a JSON list of position objects).

    Raises:
        InvalidReport: the payload is malformed; `field` is its JSON path (`$[1].qty`).
    """
    positions = _decode(_POSITIONS, raw, what="positions answer", account=account)
    return [_position(p, account=account, path=f"$[{i}]") for i, p in enumerate(positions)]


class MessageTranslator(msgspec.Struct, frozen=True):
    """`to_reports` with the account bound: the translator a paper `RawMessage` carries.

    A Struct rather than a closure, so two messages from two brokers of the same account
    compare equal (determinism checks compare whole stream items).
    """

    account: str
    """The account every translated report belongs to."""

    def __call__(self, payload: str) -> list[Report]:
        """Translate one stream message (see `to_reports`)."""
        return to_reports(payload, account=self.account)
