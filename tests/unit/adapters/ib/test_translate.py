"""IB translation: real ib_async objects shaped like BROKERS.md 1.2/1.6 -> expected reports."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import ib_async
import msgspec
import pytest
from ib_async.util import UNSET_DOUBLE as IB_UNSET_DOUBLE

from trueup.adapters.ib.translate import (
    IB_STATUS,
    UNSET_DOUBLE,
    to_fill_report,
    to_order_report,
    to_position_report,
)
from trueup.domain.errors import InvalidReport
from trueup.domain.order import exec_key
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource, Side

ACCOUNT = "DU123"
PERM_ID = 1_734_001_234
REF = "ENG1REF1"
TS = datetime(2024, 5, 1, 14, 30, 5, tzinfo=UTC)
AS_OF = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)
EXEC_ID = "0000e0d5.6553f0ca.01.01"
EXEC_TIME = datetime(2024, 5, 1, 14, 30, 4, tzinfo=UTC)
D = Decimal

HELD = frozenset({OrderFlag.HELD})
CANCEL_PENDING = frozenset({OrderFlag.CANCEL_PENDING})
BROKER, CLIENT, RECONCILE = ReportSource.BROKER, ReportSource.CLIENT, ReportSource.RECONCILE


def aapl() -> ib_async.Contract:
    return ib_async.Contract(
        conId=265598, symbol="AAPL", secType="STK", exchange="SMART", currency="USD", localSymbol="AAPL"
    )


def log_entry(status: str, error_code: int = 0, message: str = "") -> ib_async.TradeLogEntry:
    return ib_async.TradeLogEntry(time=TS, status=status, message=message, errorCode=error_code)


def make_trade(
    status: str,
    *,
    filled: float = 0.0,
    remaining: float = 100.0,
    avg_fill_price: float = 0.0,
    why_held: str = "",
    log: list[ib_async.TradeLogEntry] | None = None,
    order_ref: str = REF,
    perm_id: int = PERM_ID,
    filled_quantity: float = IB_UNSET_DOUBLE,
    total: float = 100.0,
    action: str = "BUY",
    order_type: str = "LMT",
    lmt_price: float | None = 187.43,
    account: str = ACCOUNT,
) -> ib_async.Trade:
    order = ib_async.Order(
        orderId=7,
        clientId=1,
        permId=perm_id,
        action=action,
        totalQuantity=total,
        orderType=order_type,
        lmtPrice=lmt_price,
        tif="DAY",
        orderRef=order_ref,
        account=account,
        filledQuantity=filled_quantity,
    )
    order_status = ib_async.OrderStatus(
        orderId=7,
        status=status,
        filled=filled,
        remaining=remaining,
        avgFillPrice=avg_fill_price,
        permId=perm_id,
        clientId=1,
        whyHeld=why_held,
    )
    entries = [log_entry(status)] if log is None else log
    return ib_async.Trade(contract=aapl(), order=order, orderStatus=order_status, fills=[], log=entries)


BASE = OrderReport(
    account=ACCOUNT,
    client_order_id=REF,
    broker_order_id=str(PERM_ID),
    symbol="AAPL",
    side=Side.BUY,
    quantity=D("100.0"),
    status=OrderStatus.ACCEPTED,
    filled_qty=D("0.0"),
    avg_price=None,
    ts_event=TS,
    raw_status="Submitted",
    limit_price=D("187.43"),
    source=BROKER,
    flags=frozenset(),
)


def expect(**changes: Any) -> OrderReport:
    return msgspec.structs.replace(BASE, **changes)


def partial(**changes: Any) -> OrderReport:
    # 40 of 100 filled at 187.41
    return expect(filled_qty=D("40.0"), avg_price=D("187.41"), **changes)


FILLS_40: dict[str, Any] = {"filled": 40.0, "remaining": 60.0, "avg_fill_price": 187.41}
FILLS_100: dict[str, Any] = {"filled": 100.0, "remaining": 0.0, "avg_fill_price": 187.41}

# (test id, make_trade kwargs, caller's source, expected report)
ORDER_CASES: list[tuple[str, dict[str, Any], ReportSource, OrderReport]] = [
    (
        "ApiPending",
        {"status": "ApiPending"},
        BROKER,
        expect(status=OrderStatus.PENDING_NEW, raw_status="ApiPending"),
    ),
    (
        "PendingSubmit-local",
        {"status": "PendingSubmit", "perm_id": 0, "remaining": 0.0},
        BROKER,
        expect(
            status=OrderStatus.PENDING_NEW, raw_status="PendingSubmit", broker_order_id=None, source=CLIENT
        ),
    ),
    (
        "PreSubmitted",
        {"status": "PreSubmitted"},
        BROKER,
        expect(raw_status="PreSubmitted", flags=HELD),
    ),
    (
        "PreSubmitted-partial",
        {"status": "PreSubmitted", **FILLS_40},
        BROKER,
        partial(status=OrderStatus.PARTIALLY_FILLED, raw_status="PreSubmitted", flags=HELD),
    ),
    ("Submitted", {"status": "Submitted"}, BROKER, expect()),
    (
        "Submitted-partial",
        {"status": "Submitted", **FILLS_40},
        BROKER,
        partial(status=OrderStatus.PARTIALLY_FILLED),
    ),
    (
        "Submitted-remaining-0-is-FILLED",  # TWS may never send Filled for a market order
        {"status": "Submitted", **FILLS_100},
        BROKER,
        expect(status=OrderStatus.FILLED, filled_qty=D("100.0"), avg_price=D("187.41")),
    ),
    (
        "Submitted-reconcile-source-kept",
        {"status": "Submitted"},
        RECONCILE,
        expect(source=RECONCILE),
    ),
    ("ApiUpdate", {"status": "ApiUpdate"}, BROKER, expect(raw_status="ApiUpdate")),
    (
        "ApiUpdate-partial",
        {"status": "ApiUpdate", **FILLS_40},
        BROKER,
        partial(status=OrderStatus.PARTIALLY_FILLED, raw_status="ApiUpdate"),
    ),
    (
        "ApiUpdate-remaining-0-is-FILLED",
        {"status": "ApiUpdate", **FILLS_100},
        BROKER,
        expect(
            status=OrderStatus.FILLED, raw_status="ApiUpdate", filled_qty=D("100.0"), avg_price=D("187.41")
        ),
    ),
    (
        "ValidationError-warning-2109",
        {"status": "ValidationError", "log": [log_entry("Submitted"), log_entry("ValidationError", 2109)]},
        BROKER,
        expect(raw_status="ValidationError", source=CLIENT),
    ),
    (
        "ValidationError-partial",
        {"status": "ValidationError", **FILLS_40, "log": [log_entry("ValidationError", 399)]},
        BROKER,
        partial(status=OrderStatus.PARTIALLY_FILLED, raw_status="ValidationError", source=CLIENT),
    ),
    (
        "ValidationError-404-locate-hold",
        {"status": "ValidationError", "log": [log_entry("ValidationError", 404)]},
        BROKER,
        expect(raw_status="ValidationError", source=CLIENT, flags=HELD),
    ),
    (
        "PendingCancel-local",
        {"status": "PendingCancel"},
        BROKER,
        expect(raw_status="PendingCancel", source=CLIENT, flags=CANCEL_PENDING),
    ),
    (
        "PendingCancel-after-partial",
        {"status": "PendingCancel", **FILLS_40},
        BROKER,
        partial(
            status=OrderStatus.PARTIALLY_FILLED,
            raw_status="PendingCancel",
            source=CLIENT,
            flags=CANCEL_PENDING,
        ),
    ),
    (
        "ApiCancelled",
        {"status": "ApiCancelled"},
        BROKER,
        expect(status=OrderStatus.CANCELED, raw_status="ApiCancelled"),
    ),
    (
        "Cancelled-by-TWS",
        {"status": "Cancelled", "log": [log_entry("Submitted"), log_entry("Cancelled")]},
        BROKER,
        expect(status=OrderStatus.CANCELED, raw_status="Cancelled"),
    ),
    (
        "Cancelled-by-TWS-after-partial",
        {"status": "Cancelled", **FILLS_40},
        BROKER,
        partial(status=OrderStatus.CANCELED, raw_status="Cancelled"),
    ),
    (
        "Cancelled-error-202-unconfirmed",
        {"status": "Cancelled", "log": [log_entry("Submitted"), log_entry("Cancelled", 202)]},
        BROKER,
        expect(status=OrderStatus.CANCELED, raw_status="Cancelled", source=CLIENT),
    ),
    *[
        (
            f"Cancelled-error-{code}-is-REJECTED",
            {
                "status": "Cancelled",
                "perm_id": 0,
                "log": [log_entry("PendingSubmit"), log_entry("Cancelled", code)],
            },
            BROKER,
            expect(status=OrderStatus.REJECTED, raw_status="Cancelled", source=CLIENT, broker_order_id=None),
        )
        for code in (201, 103, 110, 200, 460)
    ],
    (
        "Cancelled-TWS-confirms-after-error",  # a TWS status appended after ib_async's own
        {"status": "Cancelled", "log": [log_entry("Cancelled", 201), log_entry("Cancelled")]},
        BROKER,
        expect(status=OrderStatus.CANCELED, raw_status="Cancelled"),
    ),
    (
        # ib_async logs a fill under the current status; it does not confirm a local Cancelled.
        "Cancelled-error-then-fill-still-unconfirmed",
        {
            "status": "Cancelled",
            "log": [
                log_entry("Submitted"),
                log_entry("Cancelled", 201),
                log_entry("Cancelled", message="Fill 10.0@187.41"),
            ],
        },
        BROKER,
        expect(status=OrderStatus.REJECTED, raw_status="Cancelled", source=CLIENT),
    ),
    (
        "Cancelled-code-of-an-earlier-warning-ignored",  # the code belongs to the entry's own status only
        {"status": "Cancelled", "log": [log_entry("ValidationError", 399)]},
        BROKER,
        expect(status=OrderStatus.CANCELED, raw_status="Cancelled"),
    ),
    (
        "Filled",
        {"status": "Filled", **FILLS_100},
        BROKER,
        expect(status=OrderStatus.FILLED, raw_status="Filled", filled_qty=D("100.0"), avg_price=D("187.41")),
    ),
    (
        "Inactive-locate-hold",
        {"status": "Inactive", "why_held": "locate", "action": "SELL"},
        BROKER,
        expect(raw_status="Inactive", flags=HELD, side=Side.SELL),
    ),
    (
        "Inactive-rejected",
        {"status": "Inactive"},
        BROKER,
        expect(status=OrderStatus.REJECTED, raw_status="Inactive"),
    ),
    (
        "unknown-status",
        {"status": "Frozen"},
        BROKER,
        expect(status=OrderStatus.UNKNOWN, raw_status="Frozen"),
    ),
    (
        "completed-Filled-uses-filledQuantity",  # reqCompletedOrders: orderStatus.filled == 0
        {"status": "Filled", "remaining": 0.0, "filled_quantity": 100.0, "log": []},
        RECONCILE,
        expect(status=OrderStatus.FILLED, raw_status="Filled", filled_qty=D("100.0"), source=RECONCILE),
    ),
    (
        "completed-Cancelled-partial",
        {"status": "Cancelled", "remaining": 0.0, "filled_quantity": 30.0, "log": []},
        RECONCILE,
        expect(status=OrderStatus.CANCELED, raw_status="Cancelled", filled_qty=D("30.0"), source=RECONCILE),
    ),
    (
        "manual-order-no-orderRef",
        {"status": "Submitted", "order_ref": ""},
        BROKER,
        expect(client_order_id=None),
    ),
    (
        "foreign-orderRef-is-not-ours",  # the fake-TWS ref of BROKERS.md 1.2 has a '-'
        {"status": "Submitted", "order_ref": "ENG-ref-1"},
        BROKER,
        expect(client_order_id=None),
    ),
    (
        "avgFillPrice-UNSET_DOUBLE-is-unknown",
        {"status": "Submitted", "filled": 40.0, "remaining": 60.0, "avg_fill_price": IB_UNSET_DOUBLE},
        BROKER,
        expect(status=OrderStatus.PARTIALLY_FILLED, filled_qty=D("40.0")),
    ),
    (
        "market-order-has-no-limit",
        {"status": "Submitted", "order_type": "MKT", "lmt_price": 0.0},
        BROKER,
        expect(limit_price=None),
    ),
    (
        "market-order-ignores-a-stale-lmtPrice",
        {"status": "Submitted", "order_type": "MKT", "lmt_price": 187.43},
        BROKER,
        expect(limit_price=None),
    ),
    (
        "lmtPrice-UNSET_DOUBLE",
        {"status": "Submitted", "order_type": "STP", "lmt_price": IB_UNSET_DOUBLE},
        BROKER,
        expect(limit_price=None),
    ),
    (
        "float-quantities-via-str",  # Decimal(0.1) would be 0.1000000000000000055511151231257827...
        {"status": "Submitted", "total": 0.3, "filled": 0.1, "remaining": 0.2, "avg_fill_price": 0.07},
        BROKER,
        expect(
            status=OrderStatus.PARTIALLY_FILLED,
            quantity=D("0.3"),
            filled_qty=D("0.1"),
            avg_price=D("0.07"),
        ),
    ),
    (
        "empty-account-on-order",  # orders placed without an account (single-account login)
        {"status": "Submitted", "account": ""},
        BROKER,
        expect(),
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "source", "expected"),
    [pytest.param(kwargs, source, expected, id=case_id) for case_id, kwargs, source, expected in ORDER_CASES],
)
def test_order_report(kwargs: dict[str, Any], source: ReportSource, expected: OrderReport) -> None:
    report = to_order_report(make_trade(**kwargs), account=ACCOUNT, ts_event=TS, source=source)
    assert report == expected
    # Struct equality compares every field; spell out the ones the ledger acts on.
    assert (report.status, report.flags, report.source) == (expected.status, expected.flags, expected.source)


def test_every_documented_status_has_a_case() -> None:
    covered = {kwargs["status"] for _, kwargs, _, _ in ORDER_CASES}
    assert set(IB_STATUS) <= covered
    assert set(IB_STATUS) == {
        "ApiPending",
        "PendingSubmit",
        "PreSubmitted",
        "Submitted",
        "ApiUpdate",
        "ValidationError",
        "PendingCancel",
        "ApiCancelled",
        "Cancelled",
        "Filled",
        "Inactive",
    }


def test_order_ts_event_is_converted_to_utc() -> None:
    new_york = timezone(timedelta(hours=-4))
    local = datetime(2024, 5, 1, 10, 30, 5, tzinfo=new_york)
    report = to_order_report(make_trade("Submitted"), account=ACCOUNT, ts_event=local, source=BROKER)
    assert report.ts_event == TS
    assert report.ts_event.tzinfo is UTC


def test_futures_order_uses_local_symbol() -> None:
    trade = make_trade("Submitted")
    trade.contract = ib_async.Contract(conId=1, symbol="ES", secType="FUT", localSymbol="ESM4")
    assert to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER).symbol == "ESM4"
    trade.contract = ib_async.Contract(symbol="MSFT", secType="STK")  # unqualified: no localSymbol yet
    assert to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER).symbol == "MSFT"


def test_unset_double_constant_matches_ib_async() -> None:
    assert UNSET_DOUBLE == IB_UNSET_DOUBLE == sys.float_info.max


# --- malformed orders ---------------------------------------------------------------------------


def _set(trade: ib_async.Trade, path: str, value: object) -> ib_async.Trade:
    *parents, name = path.split(".")
    obj: object = trade
    for parent in parents:
        obj = getattr(obj, parent)
    setattr(obj, name, value)
    return trade


MALFORMED_ORDERS = [
    ("orderStatus.status", None, "trade.orderStatus.status"),
    ("orderStatus", object(), "trade.orderStatus.status"),
    ("order.action", "HOLD", "trade.order.action"),
    ("order.totalQuantity", 0.0, "trade.order.totalQuantity"),
    ("order.totalQuantity", IB_UNSET_DOUBLE, "trade.order.totalQuantity"),
    ("orderStatus.filled", math.nan, "trade.orderStatus.filled"),
    ("orderStatus.filled", -5.0, "trade.orderStatus.filled"),
    ("orderStatus.filled", "40", "trade.orderStatus.filled"),
    ("orderStatus.filled", True, "trade.orderStatus.filled"),
    ("order.lmtPrice", math.inf, "trade.order.lmtPrice"),
    ("order.account", "DU999", "trade.order.account"),
    ("contract.localSymbol", None, "trade.contract.localSymbol"),
    ("order.permId", "123", "trade.order.permId"),
    ("log", None, "trade.log"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"), MALFORMED_ORDERS, ids=[f"{p}={v!r}" for p, v, _ in MALFORMED_ORDERS]
)
def test_malformed_trade_names_the_attribute(path: str, value: object, field: str) -> None:
    trade = _set(make_trade("Submitted", **FILLS_40), path, value)
    with pytest.raises(InvalidReport) as info:
        to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER)
    assert info.value.field == field
    assert field in str(info.value)
    assert ACCOUNT in str(info.value)


def test_trade_without_any_id_is_refused() -> None:
    trade = make_trade("Submitted", order_ref="", perm_id=0)
    with pytest.raises(InvalidReport) as info:
        to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER)
    assert info.value.field == "trade.order.orderRef"


def test_trade_without_symbol_is_refused() -> None:
    trade = make_trade("Submitted")
    trade.contract = ib_async.Contract(conId=265598)
    with pytest.raises(InvalidReport) as info:
        to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER)
    assert info.value.field == "trade.contract.symbol"


def test_bad_log_error_code_is_refused() -> None:
    trade = make_trade("Cancelled", log=[log_entry("Cancelled")])
    trade.log[-1].errorCode = "201"  # type: ignore[assignment]
    with pytest.raises(InvalidReport) as info:
        to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER)
    assert info.value.field == "trade.log[-1].errorCode"


def test_naive_ts_event_is_refused() -> None:
    naive = datetime(2024, 5, 1, 14, 30, 5)  # noqa: DTZ001 - the point of the test
    with pytest.raises(InvalidReport) as info:
        to_order_report(make_trade("Submitted"), account=ACCOUNT, ts_event=naive, source=BROKER)
    assert info.value.field == "ts_event"


# --- fills --------------------------------------------------------------------------------------


def make_fill(
    *,
    exec_id: str = EXEC_ID,
    side: str = "BOT",
    shares: float = 40.0,
    price: float = 187.41,
    order_ref: str = REF,
    perm_id: int = PERM_ID,
    time: datetime = EXEC_TIME,
    acct: str = ACCOUNT,
    commission: ib_async.CommissionReport | None = None,
) -> ib_async.Fill:
    execution = ib_async.Execution(
        execId=exec_id,
        time=time,
        acctNumber=acct,
        exchange="ISLAND",
        side=side,
        shares=shares,
        price=price,
        permId=perm_id,
        clientId=1,
        orderId=7,
        cumQty=shares,
        avgPrice=price,
        orderRef=order_ref,
    )
    # ib_async's execDetails builds every Fill with a blank CommissionReport() and merges the real one later.
    report = ib_async.CommissionReport() if commission is None else commission
    return ib_async.Fill(aapl(), execution, report, datetime(2024, 5, 1, 14, 30, 9, tzinfo=UTC))


FILL_BASE = FillReport(
    account=ACCOUNT,
    client_order_id=REF,
    broker_order_id=str(PERM_ID),
    exec_id=EXEC_ID,
    symbol="AAPL",
    side=Side.BUY,
    qty=D("40.0"),
    price=D("187.41"),
    ts_event=EXEC_TIME,
    commission=None,
)


def fill_expect(**changes: Any) -> FillReport:
    return msgspec.structs.replace(FILL_BASE, **changes)


FILL_CASES: list[tuple[str, dict[str, Any], FillReport]] = [
    ("commission-not-yet-known", {}, fill_expect()),
    (
        "commission-set",
        {"commission": ib_async.CommissionReport(execId=EXEC_ID, commission=1.0, currency="USD")},
        fill_expect(commission=D("1.0")),
    ),
    (
        "commission-zero-reported-by-TWS",  # same execId: TWS sent it, a real zero (e.g. IBKR Lite)
        {"commission": ib_async.CommissionReport(execId=EXEC_ID, commission=0.0, currency="USD")},
        fill_expect(commission=D("0.0")),
    ),
    (
        "commission-UNSET_DOUBLE",
        {"commission": ib_async.CommissionReport(execId=EXEC_ID, commission=IB_UNSET_DOUBLE, currency="USD")},
        fill_expect(),
    ),
    (
        "commission-of-another-execution",
        {"commission": ib_async.CommissionReport(execId="0000e0d5.6553f0ca.02.01", commission=1.0)},
        fill_expect(),
    ),
    ("sold", {"side": "SLD"}, fill_expect(side=Side.SELL)),
    (
        "correction-exec-id-kept-verbatim",
        {"exec_id": "0000e0d5.6553f0ca.01.02", "price": 187.42},
        fill_expect(exec_id="0000e0d5.6553f0ca.01.02", price=D("187.42")),
    ),
    (
        "manual-order-no-orderRef",
        {"order_ref": ""},
        fill_expect(client_order_id=None),
    ),
    ("foreign-orderRef", {"order_ref": "ENG-ref-1"}, fill_expect(client_order_id=None)),
    ("no-permId", {"perm_id": 0}, fill_expect(broker_order_id=None)),
    (
        "execution-time-to-utc",
        {"time": datetime(2024, 5, 1, 20, 0, 4, tzinfo=timezone(timedelta(hours=5, minutes=30)))},
        fill_expect(),
    ),
    ("float-via-str", {"shares": 0.1, "price": 0.07}, fill_expect(qty=D("0.1"), price=D("0.07"))),
]


@pytest.mark.parametrize(("kwargs", "expected"), [pytest.param(k, e, id=i) for i, k, e in FILL_CASES])
def test_fill_report(kwargs: dict[str, Any], expected: FillReport) -> None:
    report = to_fill_report(make_fill(**kwargs), account=ACCOUNT)
    assert report == expected
    assert report.commission == expected.commission  # None vs Decimal("0.0") compare unequal
    assert report.ts_event.tzinfo is UTC


def test_correction_shares_the_dedupe_key_of_the_original() -> None:
    original = to_fill_report(make_fill(), account=ACCOUNT)
    corrected = to_fill_report(make_fill(exec_id="0000e0d5.6553f0ca.01.02"), account=ACCOUNT)
    assert exec_key(original.exec_id) == ("0000e0d5.6553f0ca.01", 1)
    assert exec_key(corrected.exec_id) == ("0000e0d5.6553f0ca.01", 2)


MALFORMED_FILLS: list[tuple[str, dict[str, Any], str]] = [
    ("side", {"side": "BUY"}, "fill.execution.side"),
    ("zero-shares", {"shares": 0.0}, "fill.execution.shares"),
    ("unset-price", {"price": IB_UNSET_DOUBLE}, "fill.execution.price"),
    ("no-exec-id", {"exec_id": ""}, "fill.execution.execId"),
    ("epoch-time", {"time": datetime(1970, 1, 1, tzinfo=UTC)}, "fill.execution.time"),
    ("naive-time", {"time": datetime(2024, 5, 1, 14, 30, 4)}, "fill.execution.time"),  # noqa: DTZ001
    ("other-account", {"acct": "DU999"}, "fill.execution.acctNumber"),
    ("no-id-at-all", {"order_ref": "", "perm_id": 0}, "fill.execution.orderRef"),
    (
        "commission-nan",
        {"commission": ib_async.CommissionReport(execId=EXEC_ID, commission=math.nan)},
        "fill.commissionReport.commission",
    ),
]


@pytest.mark.parametrize(("kwargs", "field"), [pytest.param(k, f, id=i) for i, k, f in MALFORMED_FILLS])
def test_malformed_fill_names_the_attribute(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidReport) as info:
        to_fill_report(make_fill(**kwargs), account=ACCOUNT)
    assert info.value.field == field
    assert field in str(info.value)


def test_fill_without_execution_is_refused() -> None:
    fill = ib_async.Fill(aapl(), None, ib_async.CommissionReport(), EXEC_TIME)  # type: ignore[arg-type]
    with pytest.raises(InvalidReport) as info:
        to_fill_report(fill, account=ACCOUNT)
    assert info.value.field == "fill.execution.execId"


# --- positions ----------------------------------------------------------------------------------


POSITION_CASES: list[tuple[str, ib_async.Position, PositionReport]] = [
    (
        "long",
        ib_async.Position(ACCOUNT, aapl(), 100.0, 187.41),
        PositionReport(
            account=ACCOUNT,
            symbol="AAPL",
            qty=D("100.0"),
            avg_cost=D("187.41"),
            ts_event=AS_OF,
            avg_cost_comparable=False,
        ),
    ),
    (
        "short",
        ib_async.Position(ACCOUNT, aapl(), -50.0, 190.02),
        PositionReport(
            account=ACCOUNT,
            symbol="AAPL",
            qty=D("-50.0"),
            avg_cost=D("190.02"),
            ts_event=AS_OF,
            avg_cost_comparable=False,
        ),
    ),
    (
        "flat-row-kept",  # reqPositions lists size-0 rows
        ib_async.Position(ACCOUNT, aapl(), 0.0, 0.0),
        PositionReport(
            account=ACCOUNT,
            symbol="AAPL",
            qty=D("0.0"),
            avg_cost=D("0.0"),
            ts_event=AS_OF,
            avg_cost_comparable=False,
        ),
    ),
    (
        "flat-row-unset-cost",
        ib_async.Position(ACCOUNT, aapl(), 0.0, IB_UNSET_DOUBLE),
        PositionReport(
            account=ACCOUNT,
            symbol="AAPL",
            qty=D("0.0"),
            avg_cost=D("0"),
            ts_event=AS_OF,
            avg_cost_comparable=False,
        ),
    ),
    (
        "future-local-symbol",  # avgCost includes the multiplier (50)
        ib_async.Position(
            ACCOUNT, ib_async.Contract(conId=1, symbol="ES", secType="FUT", localSymbol="ESM4"), 2.0, 262512.5
        ),
        PositionReport(
            account=ACCOUNT,
            symbol="ESM4",
            qty=D("2.0"),
            avg_cost=D("262512.5"),
            ts_event=AS_OF,
            avg_cost_comparable=False,
        ),
    ),
]


@pytest.mark.parametrize(("position", "expected"), [pytest.param(p, e, id=i) for i, p, e in POSITION_CASES])
def test_position_report(position: ib_async.Position, expected: PositionReport) -> None:
    report = to_position_report(position, account=ACCOUNT, as_of=AS_OF)
    assert report == expected
    assert report.qty == expected.qty


MALFORMED_POSITIONS: list[tuple[str, ib_async.Position, str]] = [
    ("other-account", ib_async.Position("DU999", aapl(), 10.0, 1.0), "position.account"),
    ("nan-size", ib_async.Position(ACCOUNT, aapl(), math.nan, 1.0), "position.position"),
    ("unset-size", ib_async.Position(ACCOUNT, aapl(), IB_UNSET_DOUBLE, 1.0), "position.position"),
    ("unset-cost-not-flat", ib_async.Position(ACCOUNT, aapl(), 10.0, IB_UNSET_DOUBLE), "position.avgCost"),
    (
        "no-symbol",
        ib_async.Position(ACCOUNT, ib_async.Contract(conId=1), 10.0, 1.0),
        "position.contract.symbol",
    ),
]


@pytest.mark.parametrize(("position", "field"), [pytest.param(p, f, id=i) for i, p, f in MALFORMED_POSITIONS])
def test_malformed_position_names_the_attribute(position: ib_async.Position, field: str) -> None:
    with pytest.raises(InvalidReport) as info:
        to_position_report(position, account=ACCOUNT, as_of=AS_OF)
    assert info.value.field == field
    assert field in str(info.value)


def test_negative_prices_translate_as_prices() -> None:
    # WTI futures settled at -37.63 on 2020-04-20: one such execution is a fill, not a bad answer.
    fill = to_fill_report(make_fill(price=-37.63), account=ACCOUNT)
    assert fill.price == D("-37.63")
    trade = _set(make_trade("Submitted", **FILLS_40), "orderStatus.avgFillPrice", -1.5)
    assert to_order_report(trade, account=ACCOUNT, ts_event=TS, source=BROKER).avg_price == D("-1.5")
    spread = to_position_report(ib_async.Position(ACCOUNT, aapl(), 10.0, -1.0), account=ACCOUNT, as_of=AS_OF)
    assert spread.avg_cost == D("-1.0")


def test_a_futures_average_cost_is_per_unit_of_price_not_per_contract() -> None:
    # ES at 5,000.25 with multiplier 50: IB's avgCost is 250,012.5 (plus commissions).
    es = ib_async.Contract(conId=1, symbol="ES", secType="FUT", localSymbol="ESM4", multiplier="50")
    report = to_position_report(ib_async.Position(ACCOUNT, es, 1.0, 250012.5), account=ACCOUNT, as_of=AS_OF)
    assert (report.avg_cost, report.avg_cost_comparable) == (D("5000.25"), False)
    bad = ib_async.Contract(conId=1, symbol="ES", secType="FUT", localSymbol="ESM4", multiplier="x")
    with pytest.raises(InvalidReport) as info:
        to_position_report(ib_async.Position(ACCOUNT, bad, 1.0, 250012.5), account=ACCOUNT, as_of=AS_OF)
    assert info.value.field == "position.contract.multiplier"


# --- no SDK needed ------------------------------------------------------------------------------


def test_translation_imports_without_ib_async() -> None:
    # Block any `ib_async` import, then import trueup and the adapter: they must not need the SDK.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ib_async' or name.startswith('ib_async.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trueup, trueup.adapters.ib, trueup.adapters.ib.translate\n"
        "import trueup.adapters.ib.wire, trueup.adapters.ib.envelope\n"
        "assert not [m for m in sys.modules if m == 'ib_async' or m.startswith('ib_async.')]\n"
        "try:\n"
        "    import trueup.adapters.ib.client\n"
        "except ImportError as e:\n"
        "    assert \"pip install 'trueup[ib]'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('the client imported without ib_async')\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
