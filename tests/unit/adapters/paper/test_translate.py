"""Paper translation: wire messages and answers -> reports (native -> expected tables)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from trueup.adapters.paper.translate import (
    PAPER_SIDE,
    PAPER_STATUS,
    MessageTranslator,
    to_fill_report,
    to_fill_reports,
    to_order_report,
    to_order_reports,
    to_order_status,
    to_position_report,
    to_position_reports,
    to_reports,
)
from trueup.adapters.paper.wire import WIRE_ENCODER, PaperFill, PaperOrder, PaperPosition
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderStatus, ReportSource, Side

ACCOUNT = "PAPER"
D = Decimal
TS = "2025-01-06T14:30:03.000007Z"
TS_UTC = datetime(2025, 1, 6, 14, 30, 3, 7, tzinfo=UTC)


def order_msg(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "order",
        "id": "P00000001",
        "client_order_id": "A1",
        "symbol": "AAPL",
        "side": "buy",
        "qty": "10",
        "status": "partially_filled",
        "filled_qty": "4",
        "avg_price": "100.25",
        "limit_price": None,
        "ts": TS,
    }
    message.update(changes)
    return message


def fill_msg(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "fill",
        "exec_id": "X00000001",
        "order_id": "P00000001",
        "client_order_id": "A1",
        "symbol": "AAPL",
        "side": "sell",
        "qty": "4",
        "price": "100.25",
        "ts": TS,
    }
    message.update(changes)
    return message


def position_msg(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "position",
        "symbol": "TSLA",
        "qty": "-3",
        "avg_cost": "99.5",
        "ts": TS,
    }
    message.update(changes)
    return message


def raw(message: Any) -> str:
    return json.dumps(message)


# --- statuses ------------------------------------------------------------------------------

STATUS_TABLE = [
    pytest.param("new", "0", OrderStatus.ACCEPTED, id="new"),
    pytest.param("partially_filled", "4", OrderStatus.PARTIALLY_FILLED, id="partially_filled"),
    pytest.param("filled", "10", OrderStatus.FILLED, id="filled"),
    pytest.param("canceled", "4", OrderStatus.CANCELED, id="canceled-after-partial"),
    pytest.param("canceled", "0", OrderStatus.CANCELED, id="canceled"),
    pytest.param("rejected", "0", OrderStatus.REJECTED, id="rejected"),
    pytest.param("pending_cancel", "0", OrderStatus.UNKNOWN, id="unknown:pending_cancel"),
    pytest.param("NEW", "0", OrderStatus.UNKNOWN, id="unknown:case-sensitive"),
]


@pytest.mark.parametrize(("raw_status", "filled", "expected"), STATUS_TABLE)
def test_every_status_maps_and_an_unknown_one_is_kept_raw(
    raw_status: str, filled: str, expected: OrderStatus
) -> None:
    # Arrange
    payload = raw(
        order_msg(status=raw_status, filled_qty=filled, avg_price="100.25" if filled != "0" else None)
    )

    # Act
    (report,) = to_reports(payload, account=ACCOUNT)

    # Assert
    assert isinstance(report, OrderReport)
    assert report.status is expected
    assert report.raw_status == raw_status
    assert report.filled_qty == D(filled)


def test_status_table_covers_exactly_the_documented_statuses() -> None:
    assert set(PAPER_STATUS) == {"new", "partially_filled", "filled", "canceled", "rejected"}
    assert to_order_status("expired") is OrderStatus.UNKNOWN
    assert PAPER_SIDE == {"buy": Side.BUY, "sell": Side.SELL}


# --- messages -> reports --------------------------------------------------------------------

MESSAGE_TABLE = [
    pytest.param(
        order_msg(),
        OrderReport(
            account=ACCOUNT,
            client_order_id="A1",
            broker_order_id="P00000001",
            symbol="AAPL",
            side=Side.BUY,
            quantity=D("10"),
            status=OrderStatus.PARTIALLY_FILLED,
            filled_qty=D("4"),
            avg_price=D("100.25"),
            ts_event=TS_UTC,
            raw_status="partially_filled",
            source=ReportSource.PAPER,
        ),
        id="stream:order partially_filled",
    ),
    pytest.param(
        order_msg(
            id="P00000009",
            client_order_id=None,
            side="sell",
            status="new",
            filled_qty="0",
            avg_price=None,
            limit_price="99.50",
        ),
        OrderReport(
            account=ACCOUNT,
            client_order_id=None,
            broker_order_id="P00000009",
            symbol="AAPL",
            side=Side.SELL,
            quantity=D("10"),
            status=OrderStatus.ACCEPTED,
            filled_qty=D("0"),
            avg_price=None,
            ts_event=TS_UTC,
            raw_status="new",
            limit_price=D("99.50"),
            source=ReportSource.PAPER,
        ),
        id="stream:manual limit order (client_order_id null)",
    ),
    pytest.param(
        fill_msg(),
        FillReport(
            account=ACCOUNT,
            client_order_id="A1",
            broker_order_id="P00000001",
            exec_id="X00000001",
            symbol="AAPL",
            side=Side.SELL,
            qty=D("4"),
            price=D("100.25"),
            ts_event=TS_UTC,
        ),
        id="stream:fill",
    ),
    pytest.param(
        position_msg(),
        PositionReport(account=ACCOUNT, symbol="TSLA", qty=D("-3"), avg_cost=D("99.5"), ts_event=TS_UTC),
        id="answer:position short",
    ),
]


@pytest.mark.parametrize(("message", "expected"), MESSAGE_TABLE)
def test_message_translates_to_expected_report(message: dict[str, Any], expected: Any) -> None:
    # Act
    reports = to_reports(raw(message), account=ACCOUNT)

    # Assert
    assert reports == [expected]
    assert MessageTranslator(ACCOUNT)(raw(message)) == [expected]


def test_time_with_an_offset_is_converted_to_utc() -> None:
    (report,) = to_reports(raw(order_msg(ts="2025-01-06T09:30:03.000007-05:00")), account=ACCOUNT)
    assert report.ts_event == TS_UTC
    assert report.ts_event.utcoffset() is not None


def test_single_object_translators() -> None:
    assert to_order_report(raw(order_msg()), account=ACCOUNT).broker_order_id == "P00000001"
    assert to_fill_report(raw(fill_msg()), account=ACCOUNT).exec_id == "X00000001"
    assert to_position_report(raw(position_msg()), account=ACCOUNT).qty == D("-3")


def test_single_object_translators_refuse_another_kind_of_message() -> None:
    with pytest.raises(InvalidReport, match="expected a fill message, got 'position'") as fill_error:
        to_fill_report(raw(position_msg()), account=ACCOUNT)
    assert fill_error.value.field == "$.type"
    with pytest.raises(InvalidReport, match="expected a position message, got 'fill'") as position_error:
        to_position_report(raw(fill_msg()), account=ACCOUNT)
    assert position_error.value.field == "$.type"


def test_list_answers_translate_every_item_in_order() -> None:
    orders = to_order_reports(
        raw([order_msg(), order_msg(id="P00000002", client_order_id="A2")]), account=ACCOUNT
    )
    fills = to_fill_reports(raw([fill_msg(), fill_msg(exec_id="X00000002")]), account=ACCOUNT)
    positions = to_position_reports(
        raw([position_msg(), position_msg(symbol="AAPL", qty="2")]), account=ACCOUNT
    )

    assert [o.client_order_id for o in orders] == ["A1", "A2"]
    assert [f.exec_id for f in fills] == ["X00000001", "X00000002"]
    assert [(p.symbol, p.qty) for p in positions] == [("TSLA", D("-3")), ("AAPL", D("2"))]
    assert to_order_reports("[]", account=ACCOUNT) == []


def test_wire_structs_round_trip_through_the_translator() -> None:
    # Arrange: what the broker encodes
    order = PaperOrder(
        id="P00000003",
        client_order_id="A3",
        symbol="MSFT",
        side="sell",
        qty=D("7"),
        status="filled",
        filled_qty=D("7"),
        avg_price=D("100.0314285714"),
        limit_price=D("100.00"),
        ts=TS_UTC,
    )
    fill = PaperFill(
        exec_id="X00000003",
        order_id="P00000003",
        client_order_id="A3",
        symbol="MSFT",
        side="sell",
        qty=D("7"),
        price=D("100.03"),
        ts=TS_UTC,
    )
    position = PaperPosition(symbol="MSFT", qty=D("-7"), avg_cost=D("100.03"), ts=TS_UTC)

    # Act
    encoded = [WIRE_ENCODER.encode(m).decode() for m in (order, fill, position)]

    # Assert: Decimals travel as strings, and come back identical
    assert '"qty":"7"' in encoded[0]
    assert '"avg_price":"100.0314285714"' in encoded[0]
    assert '"type":"fill"' in encoded[1]
    (o,) = to_reports(encoded[0], account=ACCOUNT)
    (f,) = to_reports(encoded[1], account=ACCOUNT)
    (p,) = to_reports(encoded[2], account=ACCOUNT)
    assert isinstance(o, OrderReport)
    assert (o.avg_price, o.limit_price, o.ts_event) == (D("100.0314285714"), D("100.00"), TS_UTC)
    assert isinstance(f, FillReport)
    assert (f.qty, f.price) == (D("7"), D("100.03"))
    assert isinstance(p, PositionReport)
    assert p.qty == D("-7")


# --- Decimal exactness ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["0.1", "0.30000000000000004", "123456789.123456789123456789", "100.10", "1E-12", "0.000000000000000001"],
)
def test_decimal_strings_are_read_exactly(text: str) -> None:
    (report,) = to_reports(raw(fill_msg(qty=text, price=text)), account=ACCOUNT)
    assert isinstance(report, FillReport)
    assert report.qty == Decimal(text)
    assert str(report.price) == str(Decimal(text))  # trailing zeros and scale kept ("100.10")


def test_sums_of_translated_decimals_are_exact() -> None:
    # 0.1 + 0.2 is 0.3 in Decimal; it would not be through float.
    fills = to_fill_reports(raw([fill_msg(qty="0.1"), fill_msg(exec_id="X2", qty="0.2")]), account=ACCOUNT)
    assert sum((f.qty for f in fills), D(0)) == D("0.3")


def test_a_json_number_is_read_from_its_text_not_through_float() -> None:
    payload = '{"type":"fill","exec_id":"X1","order_id":"P1","client_order_id":"A1","symbol":"AAPL",'
    payload += '"side":"buy","qty":0.1,"price":100.123456789012345678,"ts":"' + TS + '"}'
    (report,) = to_reports(payload, account=ACCOUNT)
    assert isinstance(report, FillReport)
    assert report.qty == D("0.1")
    assert report.price == D("100.123456789012345678")


# --- malformed payloads name the field -----------------------------------------------------

MALFORMED_TABLE = [
    pytest.param(raw(order_msg(qty=True)), "$.qty", id="order:qty bool"),
    pytest.param(raw(order_msg(qty="ten")), "$.qty", id="order:qty not a decimal"),
    pytest.param(raw(order_msg(qty="0")), "$.qty", id="order:qty zero"),
    pytest.param(raw(order_msg(qty="NaN")), "$.qty", id="order:qty NaN"),
    pytest.param(raw(order_msg(filled_qty="-1")), "$.filled_qty", id="order:filled_qty negative"),
    pytest.param(raw(order_msg(limit_price="Infinity")), "$.limit_price", id="order:limit_price infinite"),
    pytest.param(raw(order_msg(side="short")), "$.side", id="order:unknown side"),
    pytest.param(raw(order_msg(id="")), "$.id", id="order:empty id"),
    pytest.param(raw(order_msg(symbol=" ")), "$.symbol", id="order:blank symbol"),
    pytest.param(raw(order_msg(status=None)), "$.status", id="order:status null"),
    pytest.param(raw(order_msg(ts="2025-01-06T14:30:03")), "$.ts", id="order:naive time"),
    pytest.param(raw({k: v for k, v in order_msg().items() if k != "ts"}), "$.ts", id="order:ts missing"),
    pytest.param(
        raw({k: v for k, v in order_msg().items() if k != "filled_qty"}),
        "$.filled_qty",
        id="order:filled_qty missing",
    ),
    pytest.param(raw(fill_msg(price="1,5")), "$.price", id="fill:price with a comma"),
    pytest.param(raw(fill_msg(qty="0")), "$.qty", id="fill:qty zero"),
    pytest.param(raw(fill_msg(exec_id="")), "$.exec_id", id="fill:empty exec_id"),
    pytest.param(
        raw({k: v for k, v in fill_msg().items() if k != "order_id"}),
        "$.order_id",
        id="fill:order_id missing",
    ),
    pytest.param(raw(position_msg(qty=None)), "$.qty", id="position:qty null"),
    pytest.param(raw(order_msg(type="trade")), "$.type", id="message:unknown type"),
    pytest.param(
        raw({k: v for k, v in order_msg().items() if k != "type"}), "$.type", id="message:type missing"
    ),
    pytest.param(raw([order_msg()]), "$", id="message:a list where an object belongs"),
    pytest.param('{"type": "order", ', "$", id="message:truncated JSON"),
]


def test_negative_prices_translate_as_prices() -> None:
    [order] = to_reports(raw(order_msg(avg_price="-0.01")), account=ACCOUNT)
    assert isinstance(order, OrderReport)
    assert order.avg_price == D("-0.01")
    [position] = to_reports(raw(position_msg(avg_cost="-1")), account=ACCOUNT)
    assert isinstance(position, PositionReport)
    assert position.avg_cost == D(-1)


@pytest.mark.parametrize(("payload", "field"), MALFORMED_TABLE)
def test_malformed_message_raises_invalid_report_naming_the_field(payload: str, field: str) -> None:
    with pytest.raises(InvalidReport) as caught:
        to_reports(payload, account=ACCOUNT)

    assert caught.value.field == field
    assert f"at `{field}`" in str(caught.value)
    assert "paper" in str(caught.value)


@pytest.mark.parametrize(
    ("translate", "payload", "field"),
    [
        pytest.param(
            to_order_reports, raw([order_msg(), order_msg(qty="x")]), "$[1].qty", id="orders answer"
        ),
        pytest.param(
            to_fill_reports, raw([fill_msg(), fill_msg(side="hold")]), "$[1].side", id="fills answer"
        ),
        pytest.param(to_position_reports, raw([position_msg(ts=None)]), "$[0].ts", id="positions answer"),
        pytest.param(to_order_reports, raw([fill_msg()]), "$[0].type", id="orders answer with a fill in it"),
        pytest.param(to_fill_report, raw(order_msg()), "$.type", id="fill expected, order given"),
        pytest.param(to_position_report, raw(fill_msg()), "$.type", id="position expected, fill given"),
        pytest.param(to_order_report, raw(fill_msg()), "$.type", id="order expected, fill given"),
    ],
)
def test_malformed_answer_names_the_item_and_field(translate: Any, payload: str, field: str) -> None:
    # A list is translated whole or not at all: one bad item refuses the answer.
    with pytest.raises(InvalidReport) as caught:
        translate(payload, account=ACCOUNT)

    assert caught.value.field == field


def test_a_bad_account_argument_is_not_blamed_on_the_payload() -> None:
    with pytest.raises(InvalidReport) as caught:
        to_reports(raw(order_msg()), account="")

    assert caught.value.field == "account"


def test_translation_is_pure() -> None:
    # Same payload, same reports, however often and whenever translated.
    payload = raw(fill_msg())
    assert to_reports(payload, account=ACCOUNT) == to_reports(payload.encode(), account=ACCOUNT)
    assert MessageTranslator(ACCOUNT) == MessageTranslator(ACCOUNT)
