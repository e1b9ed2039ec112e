"""Alpaca translation: official payloads and documented statuses -> expected reports (native -> expected tables)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from trueup.adapters.alpaca.translate import (
    ALPACA_STATUS,
    activity_fill_keys,
    fill_dedupe_key,
    normalize_symbol,
    replace_client_order_id,
    to_fill_reports_from_activities,
    to_order_reports,
    to_order_reports_from_bulk,
    to_order_status,
    to_position_reports,
    to_reports_from_trade_update,
    trade_update_fill_key,
)
from trueup.adapters.base import check_client_order_id
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderFlag, OrderStatus, Side

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "alpaca"
ACCOUNT = "PA3ALPACA01"
AS_OF = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
D = Decimal

Report = OrderReport | FillReport | PositionReport


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- official fixtures ----------------------------------------------------------------------

# The same order body is returned by four routes in alpaca-py's tests (note the stray backtick
# in "AAPL`": it is the official test data, and translation keeps symbols verbatim).
AAPL_ACCEPTED = OrderReport(
    account=ACCOUNT,
    client_order_id="eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4",
    broker_order_id="61e69015-8549-4bfd-b9c3-01e75843f47d",
    symbol="AAPL`",
    side=Side.BUY,
    quantity=D("1"),
    status=OrderStatus.PENDING_NEW,
    filled_qty=D("0"),
    avg_price=None,
    ts_event=utc(2021, 3, 16, 18, 38, 1, 942282),
    raw_status="accepted",
)


def _orders(raw: bytes) -> Sequence[Report]:
    return to_order_reports(raw, account=ACCOUNT)


def _bulk(raw: bytes) -> Sequence[Report]:
    return to_order_reports_from_bulk(raw, account=ACCOUNT)


def _positions(raw: bytes) -> Sequence[Report]:
    return to_position_reports(raw, account=ACCOUNT, as_of=AS_OF)


def _activities(raw: bytes) -> Sequence[Report]:
    return to_fill_reports_from_activities(raw, account=ACCOUNT)


def _trade_update(raw: bytes) -> Sequence[Report]:
    return to_reports_from_trade_update(raw, account=ACCOUNT)


def _activity_fill(
    exec_id: str, order_id: str, symbol: str, side: Side, qty: str, price: str, ts: datetime
) -> FillReport:
    return FillReport(
        account=ACCOUNT,
        client_order_id=None,
        broker_order_id=order_id,
        exec_id=exec_id,
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=D(price),
        ts_event=ts,
    )


AMZN_ORDER = "cddf433b-1a41-497d-ae31-50b1fee56fff"
TSLA_ORDER = "5f4a07dc-6503-4cbf-902a-8c6608401d97"

FIXTURE_TABLE: list[Any] = [
    pytest.param(
        "test_order_routes.py__test_market_order.json",
        _orders,
        [AAPL_ACCEPTED],
        id="rest:POST /v2/orders",
    ),
    pytest.param(
        "test_order_routes.py__test_get_order_by_id.json",
        _orders,
        [AAPL_ACCEPTED],
        id="rest:GET /v2/orders/{id}",
    ),
    pytest.param(
        "test_order_routes.py__test_get_order_by_client_id.json",
        _orders,
        [AAPL_ACCEPTED],
        id="rest:GET /v2/orders:by_client_order_id",
    ),
    pytest.param(
        "test_order_routes.py__test_replace_order.json",
        _orders,
        [AAPL_ACCEPTED],
        id="rest:PATCH /v2/orders/{id}",
    ),
    pytest.param(
        # JSON numbers ("qty": 1, "filled_avg_price": 0) and a `replaces` link: the order keeps
        # its own client_order_id and names the order it replaced (the ledger chains them).
        "test_order_routes.py__test_get_orders.json",
        _orders,
        [
            OrderReport(
                account=ACCOUNT,
                client_order_id="string",
                broker_order_id="0b11f089-722d-4ced-9beb-e2eeed3637dc",
                symbol="SPY",
                side=Side.BUY,
                quantity=D("1"),
                status=OrderStatus.ACCEPTED,
                filled_qty=D("0"),
                avg_price=D("0"),
                ts_event=utc(2019, 8, 24, 14, 15, 22),
                raw_status="new",
                replaces="9f7d75bc-a9a2-40b0-9082-0fc0a09817ff",
            ),
        ],
        id="rest:GET /v2/orders",
    ),
    pytest.param(
        # The 200 item's body is the closing order, `BTC/USD` in an answer keyed `BTCUSD`;
        # the two 403 items describe the request and yield nothing.
        "test_position_routes.py__test_close_all_positions.json",
        _bulk,
        [
            OrderReport(
                account=ACCOUNT,
                client_order_id="c6814ede-8c93-4480-9a27-7a00853d9881",
                broker_order_id="e6419d12-56e4-4d67-a61b-f6e464e1f8a8",
                symbol="BTCUSD",
                side=Side.SELL,
                quantity=D("0.0283"),
                status=OrderStatus.PENDING_NEW,
                filled_qty=D("0"),
                avg_price=None,
                ts_event=utc(2022, 7, 27, 8, 12, 33, 669027),  # "08:12:33.66902729Z"
                raw_status="pending_new",
            ),
        ],
        id="rest:DELETE /v2/positions",
    ),
    pytest.param(
        "test_order_routes.py__test_cancel_orders.json",
        _bulk,
        [],  # per-id HTTP statuses only: no order state to report
        id="rest:DELETE /v2/orders",
    ),
    pytest.param(
        "test_position_routes.py__test_get_all_positions.json",
        _positions,
        [PositionReport(account=ACCOUNT, symbol="AAPL", qty=D("5"), avg_cost=D("100.0"), ts_event=AS_OF)],
        id="rest:GET /v2/positions",
    ),
    pytest.param(
        "account-trade-activity-v2.yaml__example.json",
        _activities,
        [
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "904837e3-3b76-47ec-b432-046db621571b@1",
                "904837e3-3b76-47ec-b432-046db621571b",
                "LPCN",
                Side.BUY,
                "1",
                "1.63",
                utc(2019, 5, 24, 15, 34, 6, 977000),
            ),
        ],
        id="rest:GET /v2/account/activities/FILL (one object)",
    ),
    pytest.param(
        # Three CSD activities skipped, one FILL kept.
        "test_account_activities_routes.py__setup_reqmock_for_paginated_account_activities_response.json",
        _activities,
        [
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "b677e464-c2d0-4fdd-a4b1-8830b386aa50@10.177047834",
                "b677e464-c2d0-4fdd-a4b1-8830b386aa50",
                "GOOGL",
                Side.BUY,
                "9",
                "2630.95",
                utc(2022, 3, 4, 14, 53, 18, 500245),
            ),
        ],
        id="broker:GET /v1/accounts/activities (CSD+FILL page)",
    ),
    pytest.param(
        "test_account_activities_routes.py__test_get_activities_for_account_max_items_and_single_request_date.json",
        _activities,
        [
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "cddf433b-1a41-497d-ae31-50b1fee56fff@1.792161878",
                AMZN_ORDER,
                "AMZN",
                Side.BUY,
                "1.792161878",
                "2907.15",
                utc(2022, 3, 4, 18, 54, 20, 903569),
            ),
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "cddf433b-1a41-497d-ae31-50b1fee56fff@2.792161878",
                AMZN_ORDER,
                "AMZN",
                Side.BUY,
                "1",
                "2907.15",
                utc(2022, 3, 4, 18, 54, 20, 898220),
            ),
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "642695e3-def7-4637-9525-2e7f698ebfc7@0.058773239",
                "642695e3-def7-4637-9525-2e7f698ebfc7",
                "GOOGL",
                Side.SELL,
                "0.058773239",
                "2644.84",
                utc(2022, 3, 4, 17, 39, 22, 801228),
            ),
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "5f4a07dc-6503-4cbf-902a-8c6608401d97@1.998065556",
                TSLA_ORDER,
                "TSLA",
                Side.SELL,
                "1.998065556",
                "837.45",
                utc(2022, 3, 4, 17, 39, 22, 310917),
            ),
            _activity_fill(
                # fill_exec_id(order_id, cum_qty): the key the stream's fill gets too
                "5f4a07dc-6503-4cbf-902a-8c6608401d97@5.998065556",
                TSLA_ORDER,
                "TSLA",
                Side.SELL,
                "4",
                "837.45",
                utc(2022, 3, 4, 17, 39, 22, 305629),
            ),
        ],
        id="broker:GET /v1/accounts/activities (fill/partial_fill)",
    ),
    pytest.param(
        # Times: "17:45:05.024916716Z" rounds to .024917; the order's "-04:00" times become UTC.
        "streaming.md__trade_updates_fill_example.json",
        _trade_update,
        [
            FillReport(
                account=ACCOUNT,
                client_order_id="4642fd68-d59a-47d7-a9ac-e22f536828d1",
                broker_order_id="a5be8f5e-fdfa-41f5-a644-7a74fe947a8f",
                exec_id="a5be8f5e-fdfa-41f5-a644-7a74fe947a8f@1790.86",  # order id @ filled_qty
                symbol="SOLUSD",
                side=Side.SELL,
                qty=D("1790.86"),
                price=D("105.8988475"),
                ts_event=utc(2022, 4, 19, 17, 45, 5, 24917),
            ),
            OrderReport(
                account=ACCOUNT,
                client_order_id="4642fd68-d59a-47d7-a9ac-e22f536828d1",
                broker_order_id="a5be8f5e-fdfa-41f5-a644-7a74fe947a8f",
                symbol="SOLUSD",
                side=Side.SELL,
                quantity=D("1790.86"),
                status=OrderStatus.FILLED,
                filled_qty=D("1790.86"),
                avg_price=D("105.8988475"),
                ts_event=utc(2022, 4, 19, 17, 45, 5, 24917),
                raw_status="filled",
            ),
        ],
        id="ws:trade_updates fill",
    ),
]


@pytest.mark.parametrize(("name", "translate", "expected"), FIXTURE_TABLE)
def test_official_fixture_translates_to_expected_reports(
    name: str, translate: Callable[[bytes], Sequence[Report]], expected: list[Report]
) -> None:
    # Check the whole report list (Structs compare field by field), then that every time is UTC.
    reports = list(translate(fixture(name)))
    assert reports == expected
    assert all(r.ts_event.tzinfo is UTC for r in reports)


def test_every_fixture_file_is_in_the_table() -> None:
    # Check no official payload is left untested (and none in the table is missing).
    on_disk = {p.name for p in FIXTURES.glob("*.json")}
    in_table = {p.values[0] for p in FIXTURE_TABLE}
    assert on_disk == in_table
    assert len(on_disk) == 12


def test_translators_accept_str_as_well_as_bytes() -> None:
    name = "streaming.md__trade_updates_fill_example.json"
    assert to_reports_from_trade_update(fixture(name).decode(), account=ACCOUNT) == _trade_update(
        fixture(name)
    )


def test_close_all_positions_names_the_same_instrument_both_ways() -> None:
    # The answer keys the position "BTCUSD" and its closing order says "BTC/USD": one instrument.
    (item, *_) = json.loads(fixture("test_position_routes.py__test_close_all_positions.json"))
    assert item["symbol"] == "BTCUSD"
    assert item["body"]["symbol"] == "BTC/USD"
    (report,) = to_order_reports_from_bulk(
        fixture("test_position_routes.py__test_close_all_positions.json"), account=ACCOUNT
    )
    position = json.dumps(
        [{"symbol": item["symbol"], "qty": "0.0283", "side": "long", "avg_entry_price": "1"}]
    )
    assert report.symbol == to_position_reports(position, account=ACCOUNT, as_of=AS_OF)[0].symbol


# --- statuses ---------------------------------------------------------------------------------


def order_json(**fields: Any) -> dict[str, Any]:
    """An Alpaca order body shaped like the Trading API's (`GET /v2/orders/{id}`)."""
    order: dict[str, Any] = {
        "id": "904837e3-3b76-47ec-b432-046db621571b",
        "client_order_id": "TU7K2M9Q4X8Z1B3N5P0R",
        "created_at": "2024-05-01T14:29:59.5Z",
        "updated_at": "2024-05-01T14:30:00.123456Z",
        "submitted_at": "2024-05-01T14:29:59.6Z",
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "notional": None,
        "qty": "10",
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": "simple",
        "order_type": "limit",
        "type": "limit",
        "side": "buy",
        "time_in_force": "day",
        "limit_price": "101.5",
        "stop_price": None,
        "status": "new",
        "extended_hours": False,
        "legs": None,
    }
    order.update(fields)
    return order


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


ALPACA_ORDER_STATUSES = {
    "new",
    "partially_filled",
    "filled",
    "done_for_day",
    "canceled",
    "expired",
    "replaced",
    "pending_cancel",
    "pending_replace",
    "pending_review",
    "accepted",
    "pending_new",
    "accepted_for_bidding",
    "stopped",
    "rejected",
    "suspended",
    "calculated",
    "held",
}
"""The 18 values of alpaca-py's OrderStatus enum (BROKERS.md 2.1)."""

NONE: frozenset[OrderFlag] = frozenset()
HELD = frozenset({OrderFlag.HELD})
CXL = frozenset({OrderFlag.CANCEL_PENDING})
RPL = frozenset({OrderFlag.REPLACE_PENDING})
DFD = frozenset({OrderFlag.DONE_FOR_DAY})

# raw status, filled_qty of a qty-10 order -> status, flags (BROKERS.md 5.4)
STATUS_TABLE = [
    ("accepted", "0", OrderStatus.PENDING_NEW, NONE),
    ("pending_new", "0", OrderStatus.PENDING_NEW, NONE),
    ("pending_review", "0", OrderStatus.PENDING_NEW, NONE),
    ("new", "0", OrderStatus.ACCEPTED, NONE),
    ("new", "4", OrderStatus.PARTIALLY_FILLED, NONE),  # working with fills: rank from filled_qty
    ("accepted_for_bidding", "0", OrderStatus.ACCEPTED, NONE),
    ("held", "0", OrderStatus.ACCEPTED, HELD),
    ("stopped", "0", OrderStatus.ACCEPTED, HELD),
    ("stopped", "4", OrderStatus.PARTIALLY_FILLED, HELD),
    ("suspended", "0", OrderStatus.ACCEPTED, HELD),
    ("partially_filled", "4", OrderStatus.PARTIALLY_FILLED, NONE),
    ("pending_cancel", "0", OrderStatus.ACCEPTED, CXL),
    ("pending_cancel", "4", OrderStatus.PARTIALLY_FILLED, CXL),
    ("pending_replace", "0", OrderStatus.ACCEPTED, RPL),
    ("pending_replace", "4", OrderStatus.PARTIALLY_FILLED, RPL),
    ("done_for_day", "0", OrderStatus.ACCEPTED, DFD),
    ("done_for_day", "4", OrderStatus.PARTIALLY_FILLED, DFD),
    ("calculated", "10", OrderStatus.FILLED, NONE),
    ("calculated", "4", OrderStatus.PARTIALLY_FILLED, DFD),
    ("calculated", "0", OrderStatus.ACCEPTED, DFD),
    ("filled", "10", OrderStatus.FILLED, NONE),
    ("canceled", "0", OrderStatus.CANCELED, NONE),
    ("canceled", "4", OrderStatus.CANCELED, NONE),
    ("expired", "0", OrderStatus.EXPIRED, NONE),
    ("rejected", "0", OrderStatus.REJECTED, NONE),
    ("replaced", "0", OrderStatus.REPLACED, NONE),
    ("a_status_from_2030", "0", OrderStatus.UNKNOWN, NONE),
    ("FILLED", "10", OrderStatus.UNKNOWN, NONE),  # exact strings only
]


@pytest.mark.parametrize(
    ("raw_status", "filled", "status", "flags"),
    STATUS_TABLE,
    ids=[f"{row[0]}-filled{row[1]}" for row in STATUS_TABLE],
)
def test_each_status_maps_per_table(
    raw_status: str, filled: str, status: OrderStatus, flags: frozenset[OrderFlag]
) -> None:
    (report,) = to_order_reports(dumps(order_json(status=raw_status, filled_qty=filled)), account=ACCOUNT)
    assert report.status is status
    assert report.flags == flags
    assert report.raw_status == raw_status  # kept verbatim, unknown ones too
    assert report.filled_qty == D(filled)
    assert to_order_status(raw_status, qty=D(10), filled_qty=D(filled)) == (status, flags)


def test_status_table_covers_exactly_the_18_alpaca_statuses() -> None:
    assert set(ALPACA_STATUS) == ALPACA_ORDER_STATUSES
    assert {row[0] for row in STATUS_TABLE} >= ALPACA_ORDER_STATUSES


def test_status_table_matches_alpaca_py_enum() -> None:
    enums = pytest.importorskip("alpaca.trading.enums")
    assert set(ALPACA_STATUS) == {s.value for s in enums.OrderStatus}


def test_unknown_status_does_not_fail_the_list() -> None:
    # Regression (BROKERS.md 2.2): alpaca-py's models refuse a status missing from their enum,
    # and its stream then stops consuming silently. Here the unknown one is UNKNOWN, raw kept,
    # and the rest of the answer still translates.
    raw = dumps([order_json(id="a", status="new"), order_json(id="b", status="queued_for_auction")])
    first, second = to_order_reports(raw, account=ACCOUNT)
    assert (first.status, second.status) == (OrderStatus.ACCEPTED, OrderStatus.UNKNOWN)
    assert second.raw_status == "queued_for_auction"
    assert second.broker_order_id == "b"


# --- nested legs, replace chains ----------------------------------------------------------------


def test_bracket_order_yields_parent_then_each_leg() -> None:
    parent = order_json(
        id="p-1",
        client_order_id="TUBRACKET1",
        order_class="bracket",
        status="partially_filled",
        filled_qty="3",
        filled_avg_price="100.25",
        limit_price="100.5",
        legs=[
            order_json(
                id="tp-1",
                client_order_id="TUBRACKET1TP",
                order_class="bracket",
                side="sell",
                status="held",
                limit_price="110",
                updated_at="2024-05-01T14:30:01Z",
            ),
            order_json(
                id="sl-1",
                client_order_id="TUBRACKET1SL",
                order_class="bracket",
                side="sell",
                order_type="stop",
                status="held",
                limit_price=None,
                stop_price="95",
                updated_at="2024-05-01T14:30:02Z",
            ),
        ],
    )
    reports = to_order_reports(dumps([parent]), account=ACCOUNT)
    common = {"account": ACCOUNT, "quantity": D("10"), "avg_price": None, "filled_qty": D("0")}
    assert reports == [
        OrderReport(
            account=ACCOUNT,
            client_order_id="TUBRACKET1",
            broker_order_id="p-1",
            symbol="AAPL",
            side=Side.BUY,
            quantity=D("10"),
            status=OrderStatus.PARTIALLY_FILLED,
            filled_qty=D("3"),
            avg_price=D("100.25"),
            ts_event=utc(2024, 5, 1, 14, 30, 0, 123456),
            raw_status="partially_filled",
            limit_price=D("100.5"),
        ),
        OrderReport(
            **common,
            client_order_id="TUBRACKET1TP",
            broker_order_id="tp-1",
            symbol="AAPL",
            side=Side.SELL,
            status=OrderStatus.ACCEPTED,
            ts_event=utc(2024, 5, 1, 14, 30, 1),
            raw_status="held",
            limit_price=D("110"),
            flags=HELD,
        ),
        OrderReport(
            **common,
            client_order_id="TUBRACKET1SL",
            broker_order_id="sl-1",
            symbol="AAPL",
            side=Side.SELL,
            status=OrderStatus.ACCEPTED,
            ts_event=utc(2024, 5, 1, 14, 30, 2),
            raw_status="held",
            limit_price=None,
            flags=HELD,
        ),
    ]


def test_offset_and_nanosecond_times_become_utc_microseconds() -> None:
    # Alpaca writes "-04:00" offsets and nanoseconds (streaming.md example); reports hold UTC.
    raw = dumps(order_json(updated_at="2024-05-01T10:30:00.123456789-04:00"))
    (report,) = to_order_reports(raw, account=ACCOUNT)
    assert report.ts_event.tzinfo is UTC
    assert report.ts_event == utc(2024, 5, 1, 14, 30, 0, 123457)


def test_legs_of_legs_follow_depth_first() -> None:
    inner = order_json(id="c-1-1", status="held")
    tree = order_json(id="p", legs=[order_json(id="c-1", legs=[inner]), order_json(id="c-2")])
    assert [r.broker_order_id for r in to_order_reports(dumps(tree), account=ACCOUNT)] == [
        "p",
        "c-1",
        "c-1-1",
        "c-2",
    ]


def test_replacement_order_keeps_its_own_client_order_id() -> None:
    # The new leg of a replace carries the fresh id we sent with the PATCH, not the base id.
    fresh = replace_client_order_id("TU7K2M9Q4X8Z1B3N5P0R", 1)
    old = order_json(id="old-1", status="replaced", replaced_by="new-1")
    new = order_json(id="new-1", client_order_id=fresh, replaces="old-1", qty="12")
    old_report, new_report = to_order_reports(dumps([old, new]), account=ACCOUNT)
    assert (old_report.status, old_report.client_order_id) == (OrderStatus.REPLACED, "TU7K2M9Q4X8Z1B3N5P0R")
    assert (new_report.status, new_report.client_order_id) == (OrderStatus.ACCEPTED, "TU7K2M9Q4X8Z1B3N5PR1")
    assert (new_report.broker_order_id, new_report.quantity) == ("new-1", D("12"))


REPLACE_IDS = [
    ("AB12", 1, "AB12R1"),
    ("AB12", 2, "AB12R2"),
    ("AB12", 10, "AB12R10"),
    ("TU7K2M9Q4X8Z1B3N5P", 1, "TU7K2M9Q4X8Z1B3N5PR1"),  # 18 + 2: fits, not cut
    ("TU7K2M9Q4X8Z1B3N5P0R", 1, "TU7K2M9Q4X8Z1B3N5PR1"),  # 20: cut to 18
    ("TU7K2M9Q4X8Z1B3N5P0R", 12, "TU7K2M9Q4X8Z1B3N5R12"),  # 20: cut to 17
]


@pytest.mark.parametrize(("base", "n", "expected"), REPLACE_IDS, ids=[f"{b}-{n}" for b, n, _ in REPLACE_IDS])
def test_replace_client_order_id(base: str, n: int, expected: str) -> None:
    result = replace_client_order_id(base, n)
    assert result == expected
    check_client_order_id(result)  # fits every broker's field: 1-20 [A-Za-z0-9]


def test_replace_client_order_ids_are_distinct_and_deterministic() -> None:
    base = "TU7K2M9Q4X8Z1B3N5P0R"
    ids = [replace_client_order_id(base, n) for n in range(1, 1001)]
    assert len(set(ids)) == 1000
    assert base not in ids
    assert ids == [replace_client_order_id(base, n) for n in range(1, 1001)]


@pytest.mark.parametrize(
    ("base", "n"),
    [("", 1), ("TU-1", 1), ("A" * 21, 1), ("TU1", 0), ("TU1", -1), ("TU1", True), ("TU1", 10**18)],
    ids=["empty", "dash", "too-long", "zero", "negative", "bool", "huge-n"],
)
def test_replace_client_order_id_refuses_bad_arguments(base: str, n: int) -> None:
    with pytest.raises(ValueError, match=r"must be|too large"):
        replace_client_order_id(base, n)


# --- positions ----------------------------------------------------------------------------------


POSITION_TABLE = [
    ("long", "5", D("5")),
    ("short", "-7", D("-7")),
    ("short", "7", D("-7")),  # signed by side even if Alpaca wrote it unsigned
    ("long", "0", D("0")),
]


@pytest.mark.parametrize(
    ("side", "qty", "expected"), POSITION_TABLE, ids=[f"{s}{q}" for s, q, _ in POSITION_TABLE]
)
def test_position_quantity_is_signed_by_side(side: str, qty: str, expected: Decimal) -> None:
    raw = dumps(
        [
            {
                "symbol": "TSLA",
                "qty": qty,
                "side": side,
                "avg_entry_price": "250.10",
                "asset_class": "us_equity",
            }
        ]
    )
    assert to_position_reports(raw, account=ACCOUNT, as_of=AS_OF) == [
        PositionReport(account=ACCOUNT, symbol="TSLA", qty=expected, avg_cost=D("250.10"), ts_event=AS_OF),
    ]


def test_one_position_object_as_from_get_open_position() -> None:
    raw = dumps({"symbol": "TSLA", "qty": "-3", "side": "short", "avg_entry_price": "250"})
    (report,) = to_position_reports(
        raw, account=ACCOUNT, as_of=AS_OF.astimezone(timezone(timedelta(hours=-4)))
    )
    assert report.qty == D("-3")
    assert report.ts_event.tzinfo is UTC
    assert report.ts_event == AS_OF


# --- symbols ------------------------------------------------------------------------------------

SYMBOLS = [
    ("BTC/USD", "BTCUSD"),
    ("BTCUSD", "BTCUSD"),
    ("ETH/BTC", "ETHBTC"),
    ("AAPL", "AAPL"),
    ("BRK.B", "BRK.B"),
]


@pytest.mark.parametrize(("raw", "canonical"), SYMBOLS, ids=[s for s, _ in SYMBOLS])
def test_normalize_symbol(raw: str, canonical: str) -> None:
    assert normalize_symbol(raw) == canonical


def _symbol_via_order(symbol: str) -> str:
    return to_order_reports(dumps(order_json(symbol=symbol, asset_class="crypto")), account=ACCOUNT)[0].symbol


def _symbol_via_position(symbol: str) -> str:
    raw = dumps(
        [{"symbol": symbol, "qty": "1", "side": "long", "avg_entry_price": "60000", "asset_class": "crypto"}]
    )
    return to_position_reports(raw, account=ACCOUNT, as_of=AS_OF)[0].symbol


def _symbol_via_activity(symbol: str) -> str:
    return to_fill_reports_from_activities(dumps([fill_activity(symbol=symbol)]), account=ACCOUNT)[0].symbol


def _symbol_via_trade_update(symbol: str) -> str:
    message = trade_update("fill", order_json(symbol=symbol, status="filled", filled_qty="10"), qty="10")
    return {r.symbol for r in to_reports_from_trade_update(dumps(message), account=ACCOUNT)}.pop()


@pytest.mark.parametrize("spelling", ["BTC/USD", "BTCUSD"])
@pytest.mark.parametrize(
    "via",
    [_symbol_via_order, _symbol_via_position, _symbol_via_activity, _symbol_via_trade_update],
    ids=["order", "position", "activity", "trade_update"],
)
def test_every_translator_gives_the_canonical_crypto_symbol(via: Callable[[str], str], spelling: str) -> None:
    assert via(spelling) == "BTCUSD"


# --- decimals -----------------------------------------------------------------------------------


def test_string_decimals_are_exact() -> None:
    raw = dumps(
        order_json(
            qty="123456789012345678.123456789",
            filled_qty="10.177047834",
            filled_avg_price="105.8988475",
            limit_price="0.1",
            status="partially_filled",
        )
    )
    (report,) = to_order_reports(raw, account=ACCOUNT)
    assert str(report.quantity) == "123456789012345678.123456789"
    assert str(report.filled_qty) == "10.177047834"
    assert str(report.avg_price) == "105.8988475"
    assert report.limit_price is not None
    assert report.limit_price + D("0.2") == D("0.3")  # no float on the way


def test_json_number_decimals_are_exact_too() -> None:
    # Some payloads (alpaca-py's test_get_orders) send numbers: decoded from their text.
    raw = (
        json.dumps(order_json(limit_price="__L__", qty="__Q__"))
        .replace('"__L__"', "0.1")
        .replace('"__Q__"', "3")
    )
    (report,) = to_order_reports(raw, account=ACCOUNT)
    assert report.limit_price == D("0.1")
    assert report.limit_price != D(0.1)
    assert report.quantity == D(3)


def test_fill_quantities_and_keys_are_exact() -> None:
    raw = dumps([fill_activity(qty="0.000000001", price="2907.150000001", cum_qty="10.177047834")])
    (fill,) = to_fill_reports_from_activities(raw, account=ACCOUNT)
    assert (str(fill.qty), str(fill.price)) == ("1E-9", "2907.150000001")
    assert fill.qty == D("0.000000001")
    assert activity_fill_keys(raw, account=ACCOUNT) == {"20240501143000123::e1": ("ord-9", D("10.177047834"))}


# --- activities ---------------------------------------------------------------------------------


def fill_activity(**fields: Any) -> dict[str, Any]:
    """A Trading API FILL activity (`GET /v2/account/activities/FILL`)."""
    activity: dict[str, Any] = {
        "id": "20240501143000123::e1",
        "activity_type": "FILL",
        "transaction_time": "2024-05-01T14:30:00.123Z",
        "type": "partial_fill",
        "price": "100.25",
        "qty": "4",
        "side": "buy",
        "symbol": "AAPL",
        "leaves_qty": "6",
        "order_id": "ord-9",
        "cum_qty": "4",
        "order_status": "partially_filled",
    }
    activity.update(fields)
    return activity


ACTIVITY_SIDES = [
    ("buy", Side.BUY),
    ("buy_minus", Side.BUY),
    ("sell", Side.SELL),
    ("sell_plus", Side.SELL),
    ("sell_short", Side.SELL),
    ("sell_short_exempt", Side.SELL),
]


@pytest.mark.parametrize(("raw_side", "side"), ACTIVITY_SIDES, ids=[s for s, _ in ACTIVITY_SIDES])
def test_activity_side(raw_side: str, side: Side) -> None:
    (fill,) = to_fill_reports_from_activities(dumps([fill_activity(side=raw_side)]), account=ACCOUNT)
    assert fill.side is side


def test_activity_fill_keys_of_official_page() -> None:
    name = "test_account_activities_routes.py__test_get_activities_for_account_max_items_and_single_request_date.json"
    keys = activity_fill_keys(fixture(name), account=ACCOUNT)
    assert keys["20220304135420903::047e252a-a8a3-4e35-84e2-29814cbf5057"] == (AMZN_ORDER, D("1.792161878"))
    assert keys["20220304135420898::2b9e8979-48b4-4b70-9ba0-008210b76ebf"] == (AMZN_ORDER, D("2.792161878"))
    assert keys["20220304123922305::bc84b8a8-8758-42aa-be3b-618d097c2867"] == (TSLA_ORDER, D("5.998065556"))
    assert len(keys) == 5


# --- trade_updates ------------------------------------------------------------------------------

EVENT_TS = "2024-05-01T14:30:05.5Z"


def trade_update(event: str, order: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A `trade_updates` stream message in its envelope."""
    data: dict[str, Any] = {"event": event, "timestamp": EVENT_TS, "order": order}
    if event in {"fill", "partial_fill"}:
        data |= {
            "execution_id": "8c2a5c6e-7f9e-4f0a-9d1b-3a5e2c1d0f44",
            "price": "100.25",
            "position_qty": "10",
        }
    data.update(fields)
    return {"stream": "trade_updates", "data": data}


# event, embedded order status, its filled_qty (qty 10) -> report kinds, status, flags
EVENT_TABLE = [
    ("new", "new", "0", ["order"], OrderStatus.ACCEPTED, NONE),
    ("accepted", "accepted", "0", ["order"], OrderStatus.PENDING_NEW, NONE),
    ("pending_new", "pending_new", "0", ["order"], OrderStatus.PENDING_NEW, NONE),
    ("pending_review", "pending_review", "0", ["order"], OrderStatus.PENDING_NEW, NONE),
    ("restated", "new", "0", ["order"], OrderStatus.ACCEPTED, NONE),
    ("stopped", "stopped", "0", ["order"], OrderStatus.ACCEPTED, HELD),
    ("suspended", "suspended", "0", ["order"], OrderStatus.ACCEPTED, HELD),
    ("done_for_day", "done_for_day", "4", ["order"], OrderStatus.PARTIALLY_FILLED, DFD),
    ("calculated", "calculated", "10", ["order"], OrderStatus.FILLED, NONE),
    ("canceled", "canceled", "4", ["order"], OrderStatus.CANCELED, NONE),
    ("expired", "expired", "0", ["order"], OrderStatus.EXPIRED, NONE),
    ("rejected", "rejected", "0", ["order"], OrderStatus.REJECTED, NONE),
    ("replaced", "replaced", "0", ["order"], OrderStatus.REPLACED, NONE),
    ("pending_cancel", "pending_cancel", "4", ["order"], OrderStatus.PARTIALLY_FILLED, CXL),
    ("pending_cancel", "partially_filled", "4", ["order"], OrderStatus.PARTIALLY_FILLED, CXL),
    ("pending_cancel", "filled", "10", ["order"], OrderStatus.FILLED, NONE),
    ("pending_replace", "new", "0", ["order"], OrderStatus.ACCEPTED, RPL),
    ("order_cancel_rejected", "partially_filled", "4", ["order"], OrderStatus.PARTIALLY_FILLED, NONE),
    ("order_cancel_rejected", "pending_cancel", "4", ["order"], OrderStatus.PARTIALLY_FILLED, NONE),
    ("order_cancel_rejected", "pending_replace", "0", ["order"], OrderStatus.ACCEPTED, RPL),
    ("order_replace_rejected", "pending_replace", "0", ["order"], OrderStatus.ACCEPTED, NONE),
    ("fill", "filled", "10", ["fill", "order"], OrderStatus.FILLED, NONE),
    ("partial_fill", "partially_filled", "4", ["fill", "order"], OrderStatus.PARTIALLY_FILLED, NONE),
    ("an_event_from_2030", "new", "0", ["order"], OrderStatus.ACCEPTED, NONE),
    ("an_event_from_2030", "a_status_from_2030", "0", ["order"], OrderStatus.UNKNOWN, NONE),
]


@pytest.mark.parametrize(
    ("event", "order_status", "filled", "kinds", "status", "flags"),
    EVENT_TABLE,
    ids=[f"{row[0]}({row[1]})" for row in EVENT_TABLE],
)
def test_trade_update_event(
    event: str,
    order_status: str,
    filled: str,
    kinds: list[str],
    status: OrderStatus,
    flags: frozenset[OrderFlag],
) -> None:
    message = trade_update(event, order_json(status=order_status, filled_qty=filled), qty="4")
    reports = to_reports_from_trade_update(dumps(message), account=ACCOUNT)
    assert [type(r).__struct_config__.tag for r in reports] == kinds
    order = reports[-1]
    assert isinstance(order, OrderReport)
    assert (order.status, order.flags, order.raw_status) == (status, flags, order_status)
    assert order.filled_qty == D(filled)
    assert order.ts_event == utc(2024, 5, 1, 14, 30, 5, 500000)  # the message timestamp


def test_trade_update_fill_is_this_execution_not_the_cumulative() -> None:
    # Alpaca-API#103: event qty/price are this execution's; order.filled_qty is cumulative.
    message = trade_update(
        "fill",
        order_json(status="filled", filled_qty="10", filled_avg_price="100.1"),
        qty="6",
        price="100.25",
    )
    fill, order = to_reports_from_trade_update(dumps(message), account=ACCOUNT)
    assert fill == FillReport(
        account=ACCOUNT,
        client_order_id="TU7K2M9Q4X8Z1B3N5P0R",
        broker_order_id="904837e3-3b76-47ec-b432-046db621571b",
        exec_id="904837e3-3b76-47ec-b432-046db621571b@10",  # order id @ cumulative after it
        symbol="AAPL",
        side=Side.BUY,
        qty=D("6"),
        price=D("100.25"),
        ts_event=utc(2024, 5, 1, 14, 30, 5, 500000),
    )
    assert isinstance(order, OrderReport)
    assert (order.filled_qty, order.avg_price) == (D("10"), D("100.1"))


def test_bare_trade_update_equals_enveloped() -> None:
    message = trade_update("partial_fill", order_json(status="partially_filled", filled_qty="4"), qty="4")
    assert to_reports_from_trade_update(
        dumps(message["data"]), account=ACCOUNT
    ) == to_reports_from_trade_update(dumps(message), account=ACCOUNT)


def test_trade_update_without_timestamp_uses_order_updated_at() -> None:
    message = trade_update("canceled", order_json(status="canceled"))
    del message["data"]["timestamp"]
    (order,) = to_reports_from_trade_update(dumps(message), account=ACCOUNT)
    assert order.ts_event == utc(2024, 5, 1, 14, 30, 0, 123456)


def test_trade_update_reports_only_the_embedded_order_not_its_legs() -> None:
    message = trade_update(
        "new", order_json(order_class="bracket", legs=[order_json(id="leg", status="held")])
    )
    assert [r.broker_order_id for r in to_reports_from_trade_update(dumps(message), account=ACCOUNT)] == [
        "904837e3-3b76-47ec-b432-046db621571b",
    ]


def test_trade_update_events_of_alpaca_py_enum_all_translate() -> None:
    enums = pytest.importorskip("alpaca.trading.enums")
    for event in enums.TradeEvent:
        message = trade_update(event.value, order_json(status="new"), qty="1")
        assert (
            to_reports_from_trade_update(dumps(message), account=ACCOUNT)[-1].status is OrderStatus.ACCEPTED
        )


def test_stream_and_activity_name_the_same_fill_by_order_and_cum_qty() -> None:
    # BROKERS.md 2.5: activity ids and execution_ids may differ; (order_id, cum_qty) does not.
    order = order_json(id="ord-9", status="partially_filled", filled_qty="4.0")
    message = trade_update("partial_fill", order, qty="4")
    activity = fill_activity(id="20240501143000123::other-uuid", order_id="ord-9", cum_qty="4")
    stream_key = trade_update_fill_key(dumps(message), account=ACCOUNT)
    activity_keys = activity_fill_keys(dumps([activity]), account=ACCOUNT)
    assert stream_key == ("ord-9", D("4"))
    assert activity_keys == {"20240501143000123::other-uuid": stream_key}
    assert fill_dedupe_key("ord-9", D("4.000")) == fill_dedupe_key("ord-9", D("4"))
    assert str(fill_dedupe_key("ord-9", D("4.000"))[1]) == "4"


def test_trade_update_fill_key_is_none_for_other_events() -> None:
    assert trade_update_fill_key(dumps(trade_update("new", order_json())), account=ACCOUNT) is None


def test_trade_update_fill_key_of_official_example() -> None:
    key = trade_update_fill_key(fixture("streaming.md__trade_updates_fill_example.json"), account=ACCOUNT)
    assert key == ("a5be8f5e-fdfa-41f5-a644-7a74fe947a8f", D("1790.86"))


# --- malformed payloads -------------------------------------------------------------------------


def _orders_str(obj: Any) -> Callable[[], object]:
    return lambda: to_order_reports(dumps(obj), account=ACCOUNT)


def _positions_of(obj: Any) -> Callable[[], object]:
    return lambda: to_position_reports(dumps(obj), account=ACCOUNT, as_of=AS_OF)


def _activities_of(obj: Any) -> Callable[[], object]:
    return lambda: to_fill_reports_from_activities(dumps(obj), account=ACCOUNT)


def _update_of(obj: Any) -> Callable[[], object]:
    return lambda: to_reports_from_trade_update(dumps(obj), account=ACCOUNT)


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


MALFORMED = [
    pytest.param(
        _orders_str([order_json(), order_json(qty="ten")]), "$[1].qty", id="order qty not a decimal"
    ),
    pytest.param(
        _orders_str(_without(order_json(), "updated_at")), "$.updated_at", id="order missing updated_at"
    ),
    pytest.param(
        _orders_str([order_json(updated_at="2024-05-01T14:30:00")]), "$[0].updated_at", id="order naive time"
    ),
    pytest.param(_orders_str([order_json(qty="0")]), "$[0].qty", id="order qty zero"),
    pytest.param(_orders_str([order_json(filled_qty="NaN")]), "$[0].filled_qty", id="order filled_qty NaN"),
    pytest.param(_orders_str([order_json(filled_qty=True)]), "$[0].filled_qty", id="order filled_qty bool"),
    pytest.param(_orders_str([order_json(side="short")]), "$[0].side", id="order side unknown"),
    pytest.param(
        _orders_str([order_json(symbol=None, order_class="mleg")]), "$[0].symbol", id="order without symbol"
    ),
    pytest.param(
        _orders_str([order_json(legs=[order_json(), order_json(qty=[1])])]), "$[0].legs[1].qty", id="leg qty"
    ),
    pytest.param(_orders_str([order_json(qty=None, notional="500")]), "$[0].qty", id="notional order"),
    pytest.param(_orders_str(_without(order_json(), "status")), "$.status", id="order missing status"),
    pytest.param(lambda: to_order_reports(b'[{"id": ', account=ACCOUNT), "$", id="not JSON"),
    pytest.param(_orders_str("a string"), "$", id="order not an object"),
    pytest.param(
        _positions_of([{"symbol": "AAPL", "qty": "5", "side": "long", "avg_entry_price": True}]),
        "$[0].avg_entry_price",
        id="position avg price bool",
    ),
    pytest.param(
        _positions_of([{"symbol": "AAPL", "qty": "-5", "side": "long", "avg_entry_price": "1"}]),
        "$[0].qty",
        id="position long negative",
    ),
    pytest.param(
        _positions_of([{"symbol": "AAPL", "qty": "5", "side": "flat", "avg_entry_price": "1"}]),
        "$[0].side",
        id="position side unknown",
    ),
    pytest.param(
        _activities_of([{"activity_type": "CSD", "id": "c"}, _without(fill_activity(), "price")]),
        "$[1].price",
        id="activity missing price",
    ),
    pytest.param(_activities_of([fill_activity(side="cross")]), "$[0].side", id="activity side cross"),
    pytest.param(_activities_of([fill_activity(qty="0")]), "$[0].qty", id="activity qty zero"),
    pytest.param(_activities_of([{"id": "x"}]), "$[0].activity_type", id="activity without type"),
    pytest.param(
        lambda: activity_fill_keys(dumps([_without(fill_activity(), "cum_qty")]), account=ACCOUNT),
        "$[0].cum_qty",
        id="activity key without cum_qty",
    ),
    pytest.param(
        _update_of(trade_update("new", order_json(filled_qty="x"))),
        "$.data.order.filled_qty",
        id="trade_update order filled_qty",
    ),
    pytest.param(
        _update_of(_without(trade_update("new", order_json())["data"], "order")),
        "$.order",
        id="bare trade_update without order",
    ),
    pytest.param(
        _update_of(trade_update("fill", order_json(status="filled"), execution_id=None, qty="1")),
        "$.data.execution_id",
        id="fill without execution_id",
    ),
    pytest.param(
        _update_of(trade_update("partial_fill", order_json(status="partially_filled", filled_qty="4"))),
        "$.data.qty",
        id="partial_fill without qty",
    ),
    pytest.param(
        _update_of(trade_update("fill", order_json(status="filled"), qty="-1")),
        "$.data.qty",
        id="fill negative qty",
    ),
    pytest.param(
        _update_of({"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}),
        "$.stream",
        id="not a trade_updates message",
    ),
    pytest.param(
        lambda: to_order_reports_from_bulk(
            dumps([{"symbol": "AAPL", "status": 200, "body": order_json(qty="?")}]), account=ACCOUNT
        ),
        "$[0].body.qty",
        id="bulk body qty",
    ),
]


@pytest.mark.parametrize(("call", "path"), MALFORMED)
def test_malformed_payload_names_the_json_path(call: Callable[[], object], path: str) -> None:
    with pytest.raises(InvalidReport) as caught:
        call()
    assert caught.value.field == path
    assert f"`{path}`" in str(caught.value)
    assert ACCOUNT in str(caught.value)


# --- no SDK needed ------------------------------------------------------------------------------


def test_a_negative_average_entry_price_is_a_price_not_a_malformed_position() -> None:
    # Credit spreads (multi-leg options) are priced below zero; the broker is the judge.
    [position] = _positions_of([{"symbol": "AAPL", "qty": "5", "side": "long", "avg_entry_price": "-1.25"}])()  # type: ignore[misc]
    assert position.avg_cost == Decimal("-1.25")


def test_translation_imports_without_alpaca_py() -> None:
    # Block any `alpaca` import, then import trueup and the adapter: they must not need the SDK.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'alpaca' or name.startswith('alpaca.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trueup, trueup.adapters.alpaca, trueup.adapters.alpaca.translate\n"
        "assert not [m for m in sys.modules if m == 'alpaca' or m.startswith('alpaca.')]\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_a_fill_seen_on_the_stream_and_in_activities_has_one_exec_id() -> None:
    # BROKERS.md section 7: activity ids and stream execution_ids may differ; both sources
    # must still name the same execution, or the ledger would book it twice.
    message = trade_update(
        "partial_fill",
        order_json(status="partially_filled", filled_qty="4", filled_avg_price="100"),
        qty="4",
        price="100",
    )
    stream_fill, _ = to_reports_from_trade_update(dumps(message), account=ACCOUNT)
    activity = {
        "id": "20240501143005500::5d0de7b8-0000-4000-8000-000000000001",
        "activity_type": "FILL",
        "transaction_time": "2024-05-01T14:30:05.5Z",
        "type": "partial_fill",
        "price": "100",
        "qty": "4",
        "side": "buy",
        "symbol": "AAPL",
        "leaves_qty": "6",
        "order_id": "904837e3-3b76-47ec-b432-046db621571b",
        "cum_qty": "4.0",
        "order_status": "partially_filled",
    }
    [activity_fill] = to_fill_reports_from_activities(dumps([activity]), account=ACCOUNT)
    assert isinstance(stream_fill, FillReport)
    assert stream_fill.exec_id == activity_fill.exec_id == "904837e3-3b76-47ec-b432-046db621571b@4"
