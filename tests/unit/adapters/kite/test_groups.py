"""Kite logical order book: slices of one tag -> one order; day positions; postbacks verified first."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from tests.unit.adapters.kite.test_translate import (
    ACCOUNT,
    AS_OF,
    ORDERS,
    OUR_ID,
    fixture,
    order_json,
    utc,
)
from trueup.adapters.kite.groups import (
    AutoslicePlacement,
    KiteOrderRef,
    Placing,
    to_autoslice_placement,
    to_order_book,
    with_client_order_ids,
)
from trueup.adapters.kite.translate import (
    is_slice,
    to_fill_reports,
    to_position_reports,
    to_reports_from_postback,
    to_reports_from_update,
)
from trueup.adapters.kite.wire import KiteOrder
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import PositionReport
from trueup.domain.status import OrderFlag, OrderStatus

D = Decimal
SECRET = "postback-secret"  # noqa: S105 - a test secret
PARENT = "1914227164488687616"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def child(
    order_id: str, status: str, *, quantity: int = 4, filled: int = 0, avg: float = 0, **more: Any
) -> dict[str, Any]:
    """An autoslice child of our order OUR_ID, shaped like orders.json's autoslice row."""
    return order_json(
        order_id=order_id,
        status=status,
        quantity=quantity,
        filled_quantity=filled,
        average_price=avg,
        tags=[OUR_ID, "autoslice", f"autoslice:{PARENT}"],
        **more,
    )


# --- the official order book, logically -------------------------------------------------------


def test_official_order_book_aggregates_only_the_iceberg_leg() -> None:
    # orders.json: every order has its own tag or none, except the iceberg leg (leg 1 of 5,
    # REJECTED): the logical iceberg order is 1000 (meta.iceberg.total_quantity) and ended.
    book = to_order_book(fixture("orders.json"), account=ACCOUNT)
    iceberg = msgspec.structs.replace(
        ORDERS[3],
        quantity=D(1000),
        raw_status="1 slices: 1 REJECTED",
        status=OrderStatus.REJECTED,
        quantity_basis="sum of the 1 Kite orders with this tag",
    )
    assert book.orders == [*ORDERS[:3], iceberg, *ORDERS[4:]]
    assert book.members["icebergord"] == [
        KiteOrderRef(order_id="220524001859672", variety="iceberg", working=False, is_slice=True)
    ]
    assert book.order_tags == {"220524001859672": "icebergord", "9000000000000000": "XXXXX"}
    assert book.find("icebergord") == iceberg
    assert book.find("nosuchtag") is None


def test_official_autoslice_answer_names_placed_and_refused_children() -> None:
    placement = to_autoslice_placement(fixture("autoslice_response.json"), account=ACCOUNT)
    assert placement == AutoslicePlacement(
        parent_order_id=PARENT,
        placed=["1914227164534824960", "1914227164580962304", "1914227164681625600"],
        refused=[
            "MarginException: Insufficient funds. Required margin is 228365.92 but available margin is 228358.50."
        ],
    )


def test_autoslice_child_with_neither_id_nor_error_is_refused() -> None:
    raw = dumps({"status": "success", "data": {"order_id": PARENT, "children": [{"order_id": "1"}, {}]}})
    with pytest.raises(InvalidReport) as caught:
        to_autoslice_placement(raw, account=ACCOUNT)
    assert caught.value.field == "$.data.children[1]"


def test_official_day_positions() -> None:
    reports = to_position_reports(fixture("positions.json"), account=ACCOUNT, as_of=AS_OF, book="day")
    assert reports == [
        PositionReport(
            account=ACCOUNT,
            symbol="MCX:GOLDGUINEA17DECFUT:NRML",
            qty=D(-3),
            avg_cost=D(23340),
            ts_event=AS_OF,
        ),
        PositionReport(
            account=ACCOUNT,
            symbol="MCX:LEADMINI17DECFUT:NRML",
            qty=D(1),
            avg_cost=D("161.05"),
            ts_event=AS_OF,
        ),
        PositionReport(account=ACCOUNT, symbol="NSE:SBIN:CO", qty=D(0), avg_cost=D(0), ts_event=AS_OF),
    ]


def test_day_positions_without_a_day_list_are_refused() -> None:
    with pytest.raises(InvalidReport) as caught:
        to_position_reports(dumps({"net": []}), account=ACCOUNT, as_of=AS_OF, book="day")
    assert caught.value.field == "$.day"
    assert to_position_reports(dumps({"net": []}), account=ACCOUNT, as_of=AS_OF) == []


# --- aggregation of slices ----------------------------------------------------------------------

# (slices as (status, quantity, filled, avg), expected status, filled, avg, raw_status)
SLICE_TABLE = [
    ([("OPEN", 4, 0, 0), ("OPEN", 2, 0, 0)], OrderStatus.ACCEPTED, 0, None, "2 slices: 2 OPEN"),
    (
        [("COMPLETE", 4, 4, 100), ("OPEN", 2, 0, 0)],
        OrderStatus.PARTIALLY_FILLED,
        4,
        "100",
        "2 slices: 1 COMPLETE, 1 OPEN",
    ),
    (
        [("COMPLETE", 4, 4, 100), ("OPEN", 2, 1, 103)],
        OrderStatus.PARTIALLY_FILLED,
        5,
        "100.6",
        "2 slices: 1 COMPLETE, 1 OPEN",
    ),
    (
        [("COMPLETE", 4, 4, 100), ("COMPLETE", 2, 2, 103)],
        OrderStatus.FILLED,
        6,
        "101",
        "2 slices: 2 COMPLETE",
    ),
    (
        [("COMPLETE", 4, 4, 100), ("REJECTED", 2, 0, 0)],
        OrderStatus.CANCELED,
        4,
        "100",
        "2 slices: 1 COMPLETE, 1 REJECTED",
    ),
    ([("REJECTED", 4, 0, 0), ("REJECTED", 2, 0, 0)], OrderStatus.REJECTED, 0, None, "2 slices: 2 REJECTED"),
    (
        [("CANCELLED", 4, 1, 100), ("COMPLETE", 2, 2, 100)],
        OrderStatus.CANCELED,
        3,
        "100",
        "2 slices: 1 CANCELLED, 1 COMPLETE",
    ),
    (
        [("PUT ORDER REQ RECEIVED", 4, 0, 0), ("COMPLETE", 2, 2, 100)],
        OrderStatus.PARTIALLY_FILLED,
        2,
        "100",
        "2 slices: 1 PUT ORDER REQ RECEIVED, 1 COMPLETE",
    ),
    (
        [("OPEN PENDING", 4, 0, 0), ("REJECTED", 2, 0, 0)],
        OrderStatus.PENDING_NEW,
        0,
        None,
        "2 slices: 1 OPEN PENDING, 1 REJECTED",
    ),
    (
        [("COMPLETE", 4, 4, 100), ("SOMETHING NEW", 2, 0, 0)],
        OrderStatus.UNKNOWN,
        4,
        "100",
        "2 slices: 1 COMPLETE, 1 SOMETHING NEW",
    ),
]


@pytest.mark.parametrize(
    ("slices", "status", "filled", "avg", "raw_status"), SLICE_TABLE, ids=[row[-1] for row in SLICE_TABLE]
)
def test_slices_of_one_tag_are_one_logical_order(
    slices: list[tuple[str, int, int, float]],
    status: OrderStatus,
    filled: int,
    avg: str | None,
    raw_status: str,
) -> None:
    rows = [
        child(f"19142271645{i}", s, quantity=q, filled=f, avg=a, order_timestamp=f"2024-05-01 09:15:0{i}")
        for i, (s, q, f, a) in enumerate(slices)
    ]
    book = to_order_book(dumps(rows), account=ACCOUNT)
    (report,) = book.orders
    assert report.client_order_id == OUR_ID
    assert report.broker_order_id == "191422716450"
    assert report.quantity == D(sum(q for _, q, _, _ in slices))
    assert (report.status, report.filled_qty, report.raw_status) == (status, D(filled), raw_status)
    assert report.avg_price == (None if avg is None else D(avg))
    assert report.limit_price == D("1500.5")
    assert report.ts_event == utc(2024, 5, 1, 3, 45, 1)  # the latest, exchange_update_timestamp "09:15:01"
    assert [m.order_id for m in book.members[OUR_ID]] == [r["order_id"] for r in rows]
    assert book.order_tags == {r["order_id"]: OUR_ID for r in rows}


PLACING_TABLE = [
    # (children in the book, what this process knows of the placement) -> status, quantity
    pytest.param(
        [("1", "COMPLETE", 4, 4)],
        Placing(quantity=D(10)),
        OrderStatus.PARTIALLY_FILLED,
        D(10),
        id="one child seen, no answer yet",
    ),
    pytest.param(
        [("1", "COMPLETE", 4, 4), ("2", "COMPLETE", 4, 4)],
        Placing(quantity=D(10), children=frozenset({"1", "2", "3"})),
        OrderStatus.PARTIALLY_FILLED,
        D(10),
        id="answered, a child not in the book yet",
    ),
    pytest.param(
        [("1", "COMPLETE", 4, 4), ("2", "COMPLETE", 4, 4), ("3", "COMPLETE", 2, 2)],
        Placing(quantity=D(10)),
        OrderStatus.FILLED,
        D(10),
        id="no answer, children add up to the request",
    ),
    pytest.param(
        [("1", "COMPLETE", 4, 4), ("3", "COMPLETE", 2, 2)],
        Placing(quantity=D(10), children=frozenset({"1", "3"})),
        OrderStatus.FILLED,
        D(6),
        id="answered: one child refused, the rest filled",
    ),
    pytest.param(
        [("1", "OPEN", 4, 0)], Placing(quantity=D(10)), OrderStatus.ACCEPTED, D(10), id="a lone working child"
    ),
    pytest.param(
        [("1", "COMPLETE", 4, 4)],
        None,
        OrderStatus.FILLED,
        D(4),
        id="not placed by this process: as the book says",
    ),
]


@pytest.mark.parametrize(("children", "placing", "status", "quantity"), PLACING_TABLE)
def test_an_autoslice_placement_ends_only_once_its_children_are_known(
    children: list[tuple[str, str, int, int]], placing: Placing | None, status: OrderStatus, quantity: Decimal
) -> None:
    rows = [child(i, s, quantity=q, filled=f, avg=100 if f else 0) for i, s, q, f in children]
    placings = {} if placing is None else {OUR_ID: placing}
    (report,) = to_order_book(dumps(rows), account=ACCOUNT, placing=placings).orders
    assert (report.status, report.quantity) == (status, quantity)
    assert report.filled_qty == D(sum(f for *_, f in children))
    complete = status.is_terminal or placing is None
    assert ("not known complete" in report.raw_status) is not complete or status is OrderStatus.ACCEPTED


def test_flags_of_working_slices_are_kept() -> None:
    rows = [child("1", "CANCEL PENDING"), child("2", "COMPLETE", filled=4, avg=100)]
    (report,) = to_order_book(dumps(rows), account=ACCOUNT).orders
    assert report.status is OrderStatus.PARTIALLY_FILLED
    assert report.flags == frozenset({OrderFlag.CANCEL_PENDING})


def test_an_iceberg_continues_while_legs_remain_after_a_filled_leg() -> None:
    meta = {
        "iceberg": {"leg": 1, "legs": 3, "leg_quantity": 4, "total_quantity": 12, "remaining_quantity": 8}
    }
    leg1 = order_json(
        order_id="1", status="COMPLETE", quantity=4, filled_quantity=4, average_price=100, meta=meta
    )
    (report,) = to_order_book(dumps([leg1]), account=ACCOUNT).orders
    assert (report.quantity, report.status, report.filled_qty) == (D(12), OrderStatus.PARTIALLY_FILLED, D(4))
    last = {"iceberg": {**meta["iceberg"], "leg": 3}}
    legs = [leg1, {**leg1, "order_id": "2"}, {**leg1, "order_id": "3", "meta": last}]
    (report,) = to_order_book(dumps(legs), account=ACCOUNT).orders
    assert (report.quantity, report.status, report.filled_qty) == (D(12), OrderStatus.FILLED, D(12))


def test_a_lone_order_and_external_orders_are_reported_as_they_are() -> None:
    rows = [
        order_json(order_id="1", tag=None, tags=["autoslice", f"autoslice:{PARENT}"]),  # external slice
        order_json(order_id="2", tag=None, tags=["autoslice", f"autoslice:{PARENT}"]),
        order_json(order_id="3"),
    ]
    book = to_order_book(dumps(rows), account=ACCOUNT)
    assert [(r.broker_order_id, r.client_order_id, r.raw_status) for r in book.orders] == [
        ("1", None, "OPEN"),
        ("2", None, "OPEN"),
        ("3", OUR_ID, "OPEN"),
    ]
    assert book.members == {
        OUR_ID: [KiteOrderRef(order_id="3", variety="regular", working=True, is_slice=False)]
    }


def test_a_tag_reused_for_another_instrument_is_not_aggregated() -> None:
    # The rules will refuse the second (another symbol under one client id): loud, not merged.
    rows = [child("1", "OPEN"), child("2", "OPEN", tradingsymbol="TCS")]
    book = to_order_book(dumps(rows), account=ACCOUNT)
    assert [r.symbol for r in book.orders] == ["NSE:INFY:CNC", "NSE:TCS:CNC"]


def test_fills_get_our_id_from_their_orders_tag() -> None:
    trades = json.loads(fixture("trades.json"))["data"]
    fills = to_fill_reports(dumps(trades), account=ACCOUNT)
    tagged = with_client_order_ids(fills, {fills[0].broker_order_id or "": OUR_ID})
    assert tagged[0].client_order_id == OUR_ID
    assert tagged[0] == msgspec.structs.replace(fills[0], client_order_id=OUR_ID)
    assert tagged[1:] == [f for f in fills[1:] if f.broker_order_id != fills[0].broker_order_id]


def test_is_slice() -> None:
    def kite(**fields: Any) -> KiteOrder:
        return msgspec.json.decode(dumps(order_json(**fields)), type=KiteOrder)

    assert is_slice(kite(tags=[OUR_ID, "autoslice", "autoslice:1"]))
    assert is_slice(kite(tags=["AUTOSLICE:1"]))
    assert is_slice(kite(meta={"iceberg": {"leg": 1, "legs": 2}}))
    assert not is_slice(kite())
    assert not is_slice(kite(meta=None, tags=None))


# --- updates of slices and postbacks ---------------------------------------------------------------


def test_update_of_one_slice_gives_no_report() -> None:
    # Applied alone, a slice's COMPLETE would end the logical order with the slice's quantity.
    update = child("1", "COMPLETE", filled=4, avg=100)
    assert to_reports_from_update(dumps(update), account=ACCOUNT) == []
    assert to_reports_from_update(dumps({"type": "order", "data": update}), account=ACCOUNT) == []


def test_update_of_an_order_known_as_a_slice_gives_no_report() -> None:
    # Postbacks carry `tag` but no `tags` (postback.json): an autoslice child's postback looks
    # like a lone order, so the caller names the order ids it knows as slices.
    body = json.loads(fixture("postback.json")) | {"tag": OUR_ID}
    assert "tags" not in body
    (lone,) = to_reports_from_update(dumps(body), account=ACCOUNT)
    assert lone.client_order_id == OUR_ID
    assert to_reports_from_update(dumps(body), account=ACCOUNT, slices={body["order_id"]}) == []
    assert to_reports_from_update(dumps(body), account=ACCOUNT, slices={"another"}) == [lone]
    # An external order (no tag of ours) is reported alone whatever: it is its own order.
    external = body | {"tag": None}
    assert len(to_reports_from_update(dumps(external), account=ACCOUNT, slices={body["order_id"]})) == 1
    verified = signed(body)
    assert (
        to_reports_from_postback(verified, account=ACCOUNT, api_secret=SECRET, slices={body["order_id"]})
        == []
    )


def signed(body: dict[str, Any], secret: str = SECRET) -> bytes:
    checksum = hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode()).hexdigest()
    return dumps(body | {"checksum": checksum})


def test_verified_postback_translates() -> None:
    body = order_json(status="UPDATE", filled_quantity=4, average_price=1500)
    (report,) = to_reports_from_postback(signed(body), account=ACCOUNT, api_secret=SECRET)
    assert (report.status, report.filled_qty, report.raw_status) == (
        OrderStatus.PARTIALLY_FILLED,
        D(4),
        "UPDATE",
    )
    assert to_reports_from_update(signed(body), account=ACCOUNT) == [report]


@pytest.mark.parametrize(
    "raw",
    [
        signed(order_json(status="COMPLETE", filled_quantity=10), secret="another-secret"),  # noqa: S106 - a test secret
        dumps(order_json(status="COMPLETE", filled_quantity=10)),  # no checksum
        dumps(order_json(status="COMPLETE", filled_quantity=10, checksum="")),  # blank: a WebSocket update
        # The checksum covers order_id and order_timestamp only: tamper with those.
        signed(order_json()).replace(b'"2024-05-01 09:15:00"', b'"2024-05-01 09:15:09"'),
        signed(order_json()).replace(b'"240501000000001"', b'"240501000000002"'),
    ],
    ids=["wrong secret", "no checksum", "blank checksum", "other timestamp", "other order"],
)
def test_postback_that_fails_verification_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidReport) as caught:
        to_reports_from_postback(raw, account=ACCOUNT, api_secret=SECRET)
    assert caught.value.field == "$.checksum"
    assert "not verified, not applied" in str(caught.value)


def test_postback_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="api_secret"):
        to_reports_from_postback(signed(order_json()), account=ACCOUNT, api_secret="")
