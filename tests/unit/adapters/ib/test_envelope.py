"""The stored form of ib_async events: copy -> JSON -> pure translation gives what the live objects give."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ib_async
import msgspec
import pytest

from tests.unit.adapters.ib.test_translate import (
    ACCOUNT,
    FILL_CASES,
    ORDER_CASES,
    POSITION_CASES,
    aapl,
    log_entry,
    make_fill,
    make_trade,
)
from trueup.adapters.ib.envelope import IbEventTranslator, to_reports
from trueup.adapters.ib.translate import (
    UNSET_INTEGER,
    average_price,
    to_fill_report,
    to_order_report,
    to_position_report,
    to_position_reports,
)
from trueup.adapters.ib.wire import IbEnvelope, fill_wire, position_wire, trade_wire
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderStatus, ReportSource, Side

RECEIVED = datetime(2024, 5, 1, 14, 30, 6, tzinfo=UTC)
D = Decimal
ENCODER = msgspec.json.Encoder()


def stored(event: str, *, local: bool = False, **objects: Any) -> str:
    return ENCODER.encode(IbEnvelope(event=event, received_at=RECEIVED, local=local, **objects)).decode()


@pytest.mark.parametrize(("kwargs", "source"), [pytest.param(k, s, id=i) for i, k, s, _ in ORDER_CASES])
def test_a_stored_trade_translates_like_the_live_one(kwargs: dict[str, Any], source: ReportSource) -> None:
    trade = make_trade(**kwargs)
    live = to_order_report(trade, account=ACCOUNT, ts_event=RECEIVED, source=ReportSource.BROKER)
    [report] = to_reports(stored("orderStatus", trade=trade_wire(trade)), account=ACCOUNT)
    assert report == live


@pytest.mark.parametrize("kwargs", [pytest.param(k, id=i) for i, k, _ in FILL_CASES])
def test_a_stored_fill_translates_like_the_live_one(kwargs: dict[str, Any]) -> None:
    fill = make_fill(**kwargs)
    [report] = to_reports(stored("commissionReport", fill=fill_wire(fill)), account=ACCOUNT)
    assert report == to_fill_report(fill, account=ACCOUNT)


@pytest.mark.parametrize("position", [pytest.param(p, id=i) for i, p, _ in POSITION_CASES])
def test_a_stored_position_translates_like_the_live_one(position: ib_async.Position) -> None:
    [report] = to_reports(stored("position", position=position_wire(position)), account=ACCOUNT)
    assert report == to_position_report(position, account=ACCOUNT, as_of=RECEIVED)


def test_floats_survive_json_exactly_and_unset_stays_unknown() -> None:
    trade = make_trade("Submitted", filled=40.0, remaining=60.0, avg_fill_price=187.41)
    payload = stored("orderStatus", trade=trade_wire(trade))
    assert '"avgFillPrice":187.41' in payload
    assert '"filledQuantity":1.7976931348623157e308' in payload  # UNSET_DOUBLE, kept as is
    [report] = to_reports(payload, account=ACCOUNT)
    assert isinstance(report, OrderReport)
    assert (report.filled_qty, report.avg_price) == (D("40.0"), D("187.41"))


def test_a_nan_is_stored_as_null_and_read_as_unknown() -> None:
    trade = make_trade("Submitted", filled=40.0, remaining=60.0, avg_fill_price=float("nan"))
    payload = stored("orderStatus", trade=trade_wire(trade))
    assert '"avgFillPrice":null' in payload
    [report] = to_reports(payload, account=ACCOUNT)
    assert isinstance(report, OrderReport)
    assert report.avg_price is None


def test_an_unset_integer_perm_id_is_no_broker_id() -> None:
    trade = make_trade("Submitted", perm_id=UNSET_INTEGER)
    [report] = to_reports(stored("orderStatus", trade=trade_wire(trade)), account=ACCOUNT)
    assert isinstance(report, OrderReport)
    assert report.broker_order_id is None


def test_a_status_set_inside_our_own_cancel_call_is_client_side() -> None:
    # ib_async's cancelOrder marks an unsent order (transmit=False) Cancelled at once, no error code.
    trade = make_trade("Cancelled", log=[log_entry("PendingSubmit"), log_entry("Cancelled")])
    payload = stored("orderStatus", local=True, trade=trade_wire(trade))
    [report] = to_reports(payload, account=ACCOUNT)
    assert isinstance(report, OrderReport)
    assert (report.status, report.source) == (OrderStatus.CANCELED, ReportSource.CLIENT)
    [confirmed] = to_reports(stored("orderStatus", trade=trade_wire(trade)), account=ACCOUNT)
    assert confirmed.source is ReportSource.BROKER  # type: ignore[union-attr]


def test_another_accounts_objects_are_stored_but_change_nothing() -> None:
    other = "DU999"
    trade = make_trade("Submitted", account=other)
    fill = make_fill()
    fill.execution.acctNumber = other
    position = ib_async.Position(other, aapl(), 5.0, 100.0)
    assert to_reports(stored("openOrder", trade=trade_wire(trade)), account=ACCOUNT) == []
    assert to_reports(stored("execDetails", fill=fill_wire(fill)), account=ACCOUNT) == []
    assert to_reports(stored("position", position=position_wire(position)), account=ACCOUNT) == []


@pytest.mark.parametrize("event", ["error", "connected", "disconnected"])
def test_evidence_only_events_give_no_report(event: str) -> None:
    assert IbEventTranslator(ACCOUNT)(stored(event)) == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('{"event":"orderStatus","received_at":"2024-05-01T14:30:06Z"}', "$.trade"),
        ('{"event":"execDetails","received_at":"2024-05-01T14:30:06Z"}', "$.fill"),
        ('{"event":"position","received_at":"2024-05-01T14:30:06Z"}', "$.position"),
        ('{"event":"newsBulletin","received_at":"2024-05-01T14:30:06Z"}', "$.event"),
        ('{"event":"orderStatus"}', "$.received_at"),
        (
            '{"event":"error","received_at":"2024-05-01T14:30:06Z","unreadable":"TypeError: x"}',
            "$.unreadable",
        ),
        ("not json", "$"),
    ],
)
def test_a_bad_envelope_is_refused_with_its_path(payload: str, field: str) -> None:
    with pytest.raises(InvalidReport) as raised:
        to_reports(payload, account=ACCOUNT)
    assert raised.value.field == field


def test_a_fill_without_time_is_refused() -> None:
    fill = make_fill()
    wire = fill_wire(fill)
    wire.execution.time = None
    with pytest.raises(InvalidReport) as raised:
        to_reports(stored("execDetails", fill=wire), account=ACCOUNT)
    assert raised.value.field == "fill.execution.time"


def test_positions_are_netted_per_account_and_symbol() -> None:
    rows = [
        ib_async.Position(ACCOUNT, aapl(), 100.0, 10.0),
        ib_async.Position(ACCOUNT, ib_async.Contract(conId=2, symbol="AAPL", exchange="IBIS"), 50.0, 16.0),
        ib_async.Position("DU999", aapl(), 7.0, 1.0),  # another account: not ours
        ib_async.Position(ACCOUNT, ib_async.Contract(conId=3, symbol="MSFT", localSymbol="MSFT"), 0.0, 0.0),
    ]
    reports = to_position_reports(rows, account=ACCOUNT, as_of=RECEIVED)
    assert reports == [
        PositionReport(
            account=ACCOUNT,
            symbol="AAPL",
            qty=D("150.0"),
            avg_cost=D("12.0000000000"),
            ts_event=RECEIVED,
            avg_cost_comparable=False,  # IB avgCost includes commissions (and the multiplier)
        ),
        PositionReport(
            account=ACCOUNT,
            symbol="MSFT",
            qty=D("0.0"),
            avg_cost=D("0.0"),
            ts_event=RECEIVED,
            avg_cost_comparable=False,
        ),
    ]


def fill_report(exec_id: str, qty: str, price: str) -> FillReport:
    return FillReport(
        account=ACCOUNT,
        client_order_id="REF1",
        broker_order_id="1",
        exec_id=exec_id,
        symbol="AAPL",
        side=Side.BUY,
        qty=D(qty),
        price=D(price),
        ts_event=RECEIVED,
    )


def test_average_price_uses_the_latest_revision_and_needs_every_fill() -> None:
    fills = [
        fill_report("0001.a.01.01", "4", "100"),
        fill_report("0001.a.01.02", "4", "101"),  # correction replaces .01
        fill_report("0001.b.01.01", "6", "102"),
    ]
    assert average_price(fills, D(10)) == D("101.6000000000")
    assert average_price(fills, D(12)) is None  # executions missing: no average from a part
    assert average_price([], D(0)) is None
