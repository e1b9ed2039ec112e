"""The account's positions from `positions()` plus `holdings()`, and the Kite trading day. Pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.adapters.kite.test_translate import ACCOUNT, AS_OF, fixture
from trueup.adapters.kite.translate import to_account_positions, to_position_reports
from trueup.adapters.kite.wire import trading_day_start
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import PositionReport

D = Decimal


def position(
    symbol: str, quantity: int, average: str, *, exchange: str = "NSE", product: str = "CNC"
) -> dict[str, Any]:
    return {
        "exchange": exchange,
        "tradingsymbol": symbol,
        "product": product,
        "quantity": quantity,
        "average_price": D(average),
    }


def holding(
    symbol: str, *, realised: int, t1: int = 0, used: int = 0, average: str, **more: Any
) -> dict[str, Any]:
    return {
        "exchange": "NSE",
        "tradingsymbol": symbol,
        "product": "CNC",
        "quantity": realised,  # without t1: whether Kite counts it there is not documented
        "opening_quantity": realised + t1,
        "realised_quantity": realised,
        "t1_quantity": t1,
        "used_quantity": used,
        "average_price": D(average),
        # Kite lists `mtf` on every holding (fixture holdings.json), all zero when none are held.
        "mtf": {"quantity": 0, "used_quantity": 0, "average_price": 0, "value": 0, "initial_margin": 0},
        **more,
    }


def dumps(value: Any) -> str:
    return json.dumps({"status": "success", "data": value}, default=str)


def combined(net: list[dict[str, Any]], held: list[dict[str, Any]]) -> dict[str, tuple[Decimal, Decimal]]:
    reports = to_account_positions(dumps({"net": net, "day": []}), dumps(held), account=ACCOUNT, as_of=AS_OF)
    return {r.symbol: (r.qty, r.avg_cost) for r in reports}


def test_official_holdings_add_to_the_official_positions() -> None:
    reports = to_account_positions(
        fixture("positions.json"), fixture("holdings.json"), account=ACCOUNT, as_of=AS_OF
    )
    today = to_position_reports(fixture("positions.json"), account=ACCOUNT, as_of=AS_OF)
    carried = [
        PositionReport(account=ACCOUNT, symbol="NSE:AARON:CNC", qty=D(1), avg_cost=D(161), ts_event=AS_OF),
        PositionReport(account=ACCOUNT, symbol="NSE:AARON:MTF", qty=D(1000), avg_cost=D(100), ts_event=AS_OF),
        PositionReport(
            account=ACCOUNT, symbol="BSE:SBIN:CNC", qty=D(16), avg_cost=D("801.78125"), ts_event=AS_OF
        ),
    ]
    assert reports == today + carried


@pytest.mark.parametrize(
    ("net", "held", "expected"),
    [
        # Bought yesterday: only in holdings, not delivered yet (t1).
        ([], [holding("SBIN", realised=0, t1=10, average="500")], {"NSE:SBIN:CNC": (D(10), D(500))}),
        # Delivered part and T1 part: two disjoint parts, each share once.
        ([], [holding("SBIN", realised=6, t1=4, average="500")], {"NSE:SBIN:CNC": (D(10), D(500))}),
        # Sold 4 of the holding today: -4 in positions(), used_quantity 4 (not subtracted twice).
        (
            [position("SBIN", -4, "520")],
            [holding("SBIN", realised=10, used=4, average="500")],
            {"NSE:SBIN:CNC": (D(6), D(500))},
        ),
        # Sold all of it today: flat, listed.
        (
            [position("SBIN", -10, "520")],
            [holding("SBIN", realised=10, used=10, average="500")],
            {"NSE:SBIN:CNC": (D(0), D(0))},
        ),
        # Bought 10 more today at 600: weighted.
        (
            [position("SBIN", 10, "600")],
            [holding("SBIN", realised=10, average="500")],
            {"NSE:SBIN:CNC": (D(20), D(550))},
        ),
        # A CNC position today and a holding of another instrument, an NRML position carried.
        (
            [position("INFY", 5, "1500"), position("NIFTYFUT", 3, "100", exchange="NFO", product="NRML")],
            [holding("SBIN", realised=10, average="500")],
            {
                "NSE:INFY:CNC": (D(5), D(1500)),
                "NFO:NIFTYFUT:NRML": (D(3), D(100)),
                "NSE:SBIN:CNC": (D(10), D(500)),
            },
        ),
    ],
    ids=["t1 only", "realised and t1", "sold part today", "sold all today", "bought more today", "others"],
)
def test_each_share_is_counted_once(
    net: list[dict[str, Any]], held: list[dict[str, Any]], expected: dict[str, tuple[Decimal, Decimal]]
) -> None:
    assert combined(net, held) == expected


def test_mtf_shares_are_their_own_position() -> None:
    mtf = {"quantity": 50, "used_quantity": 0, "average_price": 480, "value": 24000, "initial_margin": 0}
    held = [holding("SBIN", realised=10, average="500", mtf=mtf)]
    net = [position("SBIN", 5, "490", product="MTF")]
    assert combined(net, held) == {
        "NSE:SBIN:CNC": (D(10), D(500)),
        "NSE:SBIN:MTF": (D(55), D("480.9090909091")),
    }


def test_a_bad_holdings_answer_is_refused_whole_with_its_path() -> None:
    net = dumps({"net": [], "day": []})
    bad = dumps(
        [
            holding("SBIN", realised=10, average="500"),
            {**holding("INFY", realised=1, average="1"), "t1_quantity": "x"},
        ]
    )
    with pytest.raises(InvalidReport) as raised:
        to_account_positions(net, bad, account=ACCOUNT, as_of=AS_OF)
    assert raised.value.field == "$.data[1].t1_quantity"
    twice = dumps([holding("SBIN", realised=10, average="500")] * 2)
    with pytest.raises(InvalidReport, match="held twice"):
        to_account_positions(net, twice, account=ACCOUNT, as_of=AS_OF)
    error = json.dumps({"status": "error", "error_type": "NetworkException", "message": "down"})
    with pytest.raises(InvalidReport, match="NetworkException"):
        to_account_positions(net, error, account=ACCOUNT, as_of=AS_OF)


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (
            datetime(2024, 5, 1, 20, 0, tzinfo=UTC),
            datetime(2024, 5, 1, 18, 30, tzinfo=UTC),
        ),  # 01:30 IST May 2
        (
            datetime(2024, 5, 1, 18, 29, tzinfo=UTC),
            datetime(2024, 4, 30, 18, 30, tzinfo=UTC),
        ),  # 23:59 IST May 1
        (datetime(2024, 5, 1, 18, 30, tzinfo=UTC), datetime(2024, 5, 1, 18, 30, tzinfo=UTC)),  # midnight IST
        (datetime(2024, 5, 1, 9, 0, tzinfo=UTC), datetime(2024, 4, 30, 18, 30, tzinfo=UTC)),
    ],
)
def test_the_trading_day_starts_at_midnight_in_kolkata(now: datetime, start: datetime) -> None:
    assert trading_day_start(now) == start
    assert trading_day_start(now).tzinfo is UTC


def test_the_trading_day_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        trading_day_start(datetime(2024, 5, 1, 9, 0))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize(
    ("drop", "path"),
    [
        (("t1_quantity",), "$.data[0].t1_quantity"),
        (("mtf",), "$.data[0].mtf"),
        (("mtf", "quantity"), "$.data[0].mtf.quantity"),
    ],
)
def test_a_missing_quantity_field_is_unknown_not_zero(drop: tuple[str, ...], path: str) -> None:
    """1,000 MTF shares (or T+1 shares) must not vanish because Kite left a field out."""
    mtf = {"quantity": 1000, "used_quantity": 0, "average_price": 100, "value": 100000, "initial_margin": 0}
    row = holding("AARON", realised=1, t1=5, average="161", mtf=mtf)
    if len(drop) == 1:
        del row[drop[0]]
    else:
        del row[drop[0]][drop[1]]
    with pytest.raises(InvalidReport) as raised:
        to_account_positions(dumps({"net": [], "day": []}), dumps([row]), account=ACCOUNT, as_of=AS_OF)
    assert raised.value.field == path
