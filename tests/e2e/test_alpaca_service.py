"""End to end: the ReconciliationService driving AlpacaClient (REST and stream) against both fakes.

The wiring a user runs: startup reconciliation, orders through the service, fills arriving on
the `trade_updates` stream, a dropped stream whose missed fills come back through the REST
reconciliation after the reconnect, and a replace chain; the books end equal to the fake's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.fake_alpaca import FakeAlpaca, assert_books_equal
from tests.e2e.fake_alpaca_stream import FakeAlpacaStream, trade_update
from trueup import Ledger, OrderStatus
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.adapters.base import OrderRequest, OrderType
from trueup.domain.gate import GateState
from trueup.service import ReconciliationService
from trueup.submission import Submitter

ACCOUNT = "ALPACA"
KEY, SECRET = "PKSVCKEY", "svc-s3cr3t-never-shown"
WITHIN = 30.0


@pytest.fixture
def client(rest: FakeAlpaca, ws: FakeAlpacaStream) -> Iterator[AlpacaClient]:
    opened = AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=rest.url, stream_url_override=ws.url)
    yield opened
    opened.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(f"sqlite:///{tmp_path / 'books.db'}") as opened:
        yield opened


@asynccontextmanager
async def serving(service: ReconciliationService) -> AsyncIterator[asyncio.Task[None]]:
    await service.start()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], bool], what: str, task: asyncio.Task[None]) -> None:
    try:
        async with asyncio.timeout(WITHIN):
            while not check():
                assert not task.done(), f"the service stopped while waiting for {what}"
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {WITHIN}s: {what}")


def push_fill(rest: FakeAlpaca, ws: FakeAlpacaStream, cid: str, qty: str, price: str) -> None:
    rest.fill(cid, qty, price)
    order = rest.order_by_cid(cid)
    assert order is not None
    event = "fill" if order["status"] == "filled" else "partial_fill"
    ws.push(trade_update(event, order, execution_id=str(uuid.uuid4()), qty=qty, price=price))


def filled(ledger: Ledger, cid: str) -> Decimal | None:
    order = ledger.order(ACCOUNT, cid)
    return None if order is None else order.filled_qty


def test_service_books_stream_fills_recovers_a_drop_and_follows_a_replace(
    rest: FakeAlpaca, ws: FakeAlpacaStream, client: AlpacaClient, ledger: Ledger
) -> None:
    service = ReconciliationService(ledger, client, accounts=[ACCOUNT], period=3600.0)

    async def body() -> None:
        async with serving(service) as task:
            assert ledger.gate(ACCOUNT) is GateState.READY
            await eventually(lambda: ws.connections >= 1, "the stream connected", task)
            limit = {"order_type": OrderType.LIMIT, "limit_price": Decimal(100)}
            await service.submit(
                OrderRequest(
                    account=ACCOUNT,
                    client_order_id="S1",
                    symbol="AAPL",
                    side="BUY",
                    quantity=Decimal(10),
                    **limit,
                )  # type: ignore[arg-type]
            )
            push_fill(rest, ws, "S1", "3", "100")
            await eventually(lambda: filled(ledger, "S1") == Decimal(3), "the streamed fill booked", task)

            # The stream drops; a fill happens while it is down and is never pushed.
            ws.drop()
            rest.fill("S1", "2", "99.5")
            await eventually(lambda: filled(ledger, "S1") == Decimal(5), "the missed fill recovered", task)
            assert service.counters.reconnects >= 1

            # Replace the rest of the order; the new leg fills on the stream.
            leg = await Submitter(ledger, client).replace(ACCOUNT, "S1", quantity=Decimal(5))
            assert leg.client_order_id == "S1R1"
            old = rest.order_by_cid("S1")
            assert old is not None
            ws.push(trade_update("replaced", old, execution_id=str(uuid.uuid4())))
            push_fill(rest, ws, "S1R1", "5", "100")
            await eventually(lambda: filled(ledger, "S1R1") == Decimal(5), "the new leg filled", task)
            await eventually(
                lambda: getattr(ledger.order(ACCOUNT, "S1"), "status", None) is OrderStatus.REPLACED,
                "the old leg replaced",
                task,
            )

        assert_books_equal(ledger, rest, ACCOUNT)
        assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(10))]
        assert [d.kind for d in ledger.discrepancies(ACCOUNT)] == []
        assert service.counters.errors == 0

    asyncio.run(asyncio.wait_for(body(), 120))
