"""End to end: the real alpaca-py TradingClient, through AlpacaClient, against a fake Alpaca HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.builders import unique_cid
from tests.e2e.fake_alpaca import FakeAlpaca, running
from trueup import Ledger, OrderStatus
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.adapters.alpaca.translate import fill_exec_id
from trueup.adapters.base import OrderRequest, OrderType
from trueup.submission import Submitter, start_session

ACCOUNT = "ALPACA"
KEY, SECRET = "PKTESTKEY", "s3cr3t-never-shown"


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with running() as server:
        yield server


@pytest.fixture
def client(fake: FakeAlpaca) -> AlpacaClient:
    return AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=fake.url)


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('e2e')}") as opened:
        yield opened


def request(cid: str, **changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "account": ACCOUNT,
        "client_order_id": cid,
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": Decimal(10),
    }
    fields.update(changes)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def run_session(ledger: Ledger, client: AlpacaClient, *steps: OrderRequest) -> None:
    async def go() -> None:
        await start_session(ledger, client, ACCOUNT)  # type: ignore[arg-type]  # REST part only
        for step in steps:
            await ledger.submit_async(step, client)  # type: ignore[arg-type]

    asyncio.run(go())


def reconcile(ledger: Ledger, client: AlpacaClient):
    return ledger.reconcile(asyncio.run(client.snapshot(ACCOUNT)))


def kinds(ledger: Ledger) -> list[str]:
    return [d.kind for d in ledger.discrepancies(ACCOUNT)]


def test_partial_fill_session_reconciles_to_the_fakes_state(
    fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger
) -> None:
    run_session(
        ledger,
        client,
        request("A1"),
        request("L1", order_type=OrderType.LIMIT, limit_price=Decimal("101.5"), quantity=Decimal(2)),
    )
    a1 = ledger.order(ACCOUNT, "A1")
    assert a1 is not None
    assert a1.status is OrderStatus.ACCEPTED
    wire = fake.order_by_cid("A1")
    assert wire is not None
    assert a1.broker_order_ids == (wire["id"],)
    fake.fill("A1", "4", "100")
    fake.fill("A1", "2", "103")

    result = reconcile(ledger, client)

    assert not result.stale
    a1 = ledger.order(ACCOUNT, "A1")
    assert a1 is not None
    assert a1.status is OrderStatus.PARTIALLY_FILLED
    assert a1.filled_qty == Decimal(6)
    assert sorted(f.exec_id for f in a1.fills) == sorted(
        fill_exec_id(a["order_id"], Decimal(a["cum_qty"])) for a in fake.activities
    )
    assert {(f.qty, f.price) for f in a1.fills} == {(Decimal(4), Decimal(100)), (Decimal(2), Decimal(103))}
    l1 = ledger.order(ACCOUNT, "L1")
    assert l1 is not None
    assert l1.status is OrderStatus.ACCEPTED
    assert l1.limit_price == Decimal("101.5")
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(6))]
    assert {o.client_order_id for o in ledger.all_orders(ACCOUNT)} == {
        o["client_order_id"] for o in fake.orders
    }
    assert kinds(ledger) == []


def test_cancel_through_the_client(fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger) -> None:
    run_session(ledger, client, request("C1", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
    asyncio.run(Submitter(ledger, client).cancel(ACCOUNT, "C1"))  # type: ignore[arg-type]
    reconcile(ledger, client)
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.CANCELED


def test_504_then_placed_is_acknowledged_once(fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger) -> None:
    # alpaca-py retries the POST after the 504; the retry meets 422 40010001 ("already used").
    fake.fail_next_submit("504")
    run_session(ledger, client, request("G1"))
    assert fake.requests.count("POST /v2/orders") == 2
    assert [o["client_order_id"] for o in fake.orders] == ["G1"]
    order = ledger.order(ACCOUNT, "G1")
    assert order is not None
    assert order.status is OrderStatus.ACCEPTED
    assert order.broker_order_ids == (fake.orders[0]["id"],)
    reconcile(ledger, client)
    assert [o.client_order_id for o in ledger.all_orders(ACCOUNT)] == ["G1"]
    assert kinds(ledger) == []


def test_dropped_submit_stays_in_flight_and_recovery_books_it(
    fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger
) -> None:
    fake.fail_next_submit("drop")
    run_session(ledger, client, request("D1"))
    order = ledger.order(ACCOUNT, "D1")
    assert order is not None
    assert order.status is OrderStatus.SUBMITTED
    recovery, _ = asyncio.run(start_session(ledger, client, ACCOUNT))  # type: ignore[arg-type]
    assert recovery.found == ["D1"]
    order = ledger.order(ACCOUNT, "D1")
    assert order is not None
    assert order.status is OrderStatus.ACCEPTED
    assert fake.requests.count("POST /v2/orders") == 1
    assert len(fake.orders) == 1


def test_422_already_used_is_already_placed_not_rejected(
    fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger
) -> None:
    with fake.lock:
        existing = fake._place({"symbol": "AAPL", "qty": "10", "side": "buy", "client_order_id": "E1"})
    run_session(ledger, client, request("E1"))
    order = ledger.order(ACCOUNT, "E1")
    assert order is not None
    assert order.status is OrderStatus.ACCEPTED
    assert order.broker_order_ids == (existing["id"],)
    assert len(fake.orders) == 1


def test_other_4xx_is_a_rejection(fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger) -> None:
    fake.fail("POST", "/v2/orders", status=403)
    run_session(ledger, client, request("R1"))
    order = ledger.order(ACCOUNT, "R1")
    assert order is not None
    assert order.status is OrderStatus.REJECTED


def test_lookup_absent_is_none_and_failure_is_an_error(fake: FakeAlpaca, client: AlpacaClient) -> None:
    from trueup.domain.errors import BrokerQueryError

    assert asyncio.run(client.lookup(ACCOUNT, "NOPE1")) is None
    fake.fail("GET", "/v2/orders:by_client_order_id", status=500)
    with pytest.raises(BrokerQueryError, match="HTTP 500"):
        asyncio.run(client.lookup(ACCOUNT, "NOPE1"))


def test_external_order_is_an_orphan(fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger) -> None:
    run_session(ledger, client)
    fake.place_external()
    reconcile(ledger, client)
    assert "ORPHAN_ORDER" in kinds(ledger)


def test_positions_500_is_stale_and_positions_untouched(
    fake: FakeAlpaca, client: AlpacaClient, ledger: Ledger
) -> None:
    run_session(ledger, client, request("P1"))
    fake.fill("P1", "10", "50")
    reconcile(ledger, client)
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(10))]
    fake.fail("GET", "/v2/positions", status=500)
    snapshot = asyncio.run(client.snapshot(ACCOUNT))
    assert snapshot.positions is None
    assert snapshot.orders is not None
    result = ledger.reconcile(snapshot)
    assert result.stale
    assert "STALE_DATA" in kinds(ledger)
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(10))]


def test_orders_page_forward_with_overlap_and_dedupe(fake: FakeAlpaca) -> None:
    client = AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=fake.url, order_page_size=2)
    with fake.lock:
        placed = [fake._place({"symbol": "AAPL", "qty": "1", "side": "buy"}) for _ in range(5)]
    snapshot = asyncio.run(client.snapshot(ACCOUNT))
    assert snapshot.orders is not None
    assert [o.broker_order_id for o in snapshot.orders] == [o["id"] for o in placed]
    assert snapshot.complete_history
    assert fake.requests.count("GET /v2/orders") >= 3


def test_orders_paging_that_cannot_advance_is_incomplete_history(fake: FakeAlpaca) -> None:
    client = AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=fake.url, order_page_size=2)
    with fake.lock:
        placed = [fake._place({"symbol": "AAPL", "qty": "1", "side": "buy"}) for _ in range(3)]
        for order in placed:
            order["submitted_at"] = placed[0]["submitted_at"]
    snapshot = asyncio.run(client.snapshot(ACCOUNT))
    assert snapshot.orders is not None
    assert not snapshot.complete_history


def test_orders_failure_is_unknown_never_empty(fake: FakeAlpaca, client: AlpacaClient) -> None:
    fake.fail("GET", "/v2/orders", status=500)
    fake.fail("GET", "/v2/account/activities/FILL", status=500)
    snapshot = asyncio.run(client.snapshot(ACCOUNT))
    assert snapshot.orders is None
    assert snapshot.fills is None
    assert not snapshot.complete_history
    assert snapshot.positions == []


def test_secrets_stay_out_of_repr_and_errors(fake: FakeAlpaca, client: AlpacaClient) -> None:
    from trueup.domain.errors import BrokerQueryError

    assert SECRET not in repr(client)
    fake.fail("GET", "/v2/orders:by_client_order_id", status=500)
    with pytest.raises(BrokerQueryError) as caught:
        asyncio.run(client.lookup(ACCOUNT, "X1"))
    assert SECRET not in str(caught.value)
