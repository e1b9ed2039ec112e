"""End to end: the real alpaca-py TradingStream, through AlpacaStream, against a fake trading stream."""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.builders import unique_cid
from tests.e2e.fake_alpaca import FakeAlpaca, assert_books_equal
from tests.e2e.fake_alpaca_stream import FakeAlpacaStream, trade_update
from trueup import Ledger, OrderStatus
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.adapters.alpaca.stream import AlpacaStream
from trueup.adapters.alpaca.translate import fill_exec_id
from trueup.adapters.base import OrderRequest, RawMessage, Reconnected
from trueup.domain.reports import FillReport, OrderReport
from trueup.submission import start_session

ACCOUNT = "ALPACA"
KEY, SECRET = "PKTESTKEY", "s3cr3t-never-shown"
DEADLINE = 20.0


class Consumer:
    """Iterates `AlpacaStream.items()` in its own thread and event loop."""

    def __init__(self, stream: AlpacaStream) -> None:
        self.stream = stream
        self.items: queue.Queue[RawMessage | Reconnected] = queue.Queue()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._go()), daemon=True)
        self.thread.start()

    async def _go(self) -> None:
        async for item in self.stream.items():
            self.items.put(item)

    def next(self, timeout: float = DEADLINE) -> RawMessage | Reconnected:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no stream item within {timeout}s")

    def next_raw(self) -> RawMessage:
        item = self.next()
        assert isinstance(item, RawMessage), item
        return item

    def close(self) -> None:
        self.stream.stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()
        assert self.stream.join(DEADLINE)


@pytest.fixture
def client(rest: FakeAlpaca) -> AlpacaClient:
    return AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=rest.url)


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('e2e')}") as opened:
        yield opened


def consume(ws: FakeAlpacaStream, *, silence_after: float = 120.0) -> Consumer:
    stream = AlpacaStream(KEY, SECRET, account=ACCOUNT, url_override=ws.url, silence_after=silence_after)
    consumer = Consumer(stream)
    ws.wait_connections(1)
    return consumer


@pytest.fixture
def consumer(ws: FakeAlpacaStream) -> Iterator[Consumer]:
    running = consume(ws)
    yield running
    running.close()


def submit(ledger: Ledger, client: AlpacaClient, cid: str, qty: int = 10) -> None:
    request = OrderRequest(
        account=ACCOUNT, client_order_id=cid, symbol="AAPL", side="BUY", quantity=Decimal(qty)
    )  # type: ignore[arg-type]

    async def go() -> None:
        await start_session(ledger, client, ACCOUNT)  # type: ignore[arg-type]  # REST part only
        await ledger.submit_async(request, client)  # type: ignore[arg-type]

    asyncio.run(go())


def fill(rest: FakeAlpaca, ws: FakeAlpacaStream, cid: str, qty: str, price: str) -> bool:
    """Execute at the REST fake, then push the matching trade update; False if the stream missed it."""
    rest.fill(cid, qty, price)
    order = rest.order_by_cid(cid)
    assert order is not None
    event = "fill" if order["status"] == "filled" else "partial_fill"
    # A stream execution id of its own: the fill must still be booked once across both
    # sources (the ledger keys Alpaca fills by order id and cumulative quantity).
    exec_id = str(uuid.uuid4())
    return ws.push(trade_update(event, order, execution_id=exec_id, qty=qty, price=price))


def ingest(ledger: Ledger, item: RawMessage) -> None:
    ledger.ingest_raw(item.payload, item.translate, account=item.account, source=item.source, kind=item.kind)


def test_messages_arrive_raw_and_translate_to_a_filled_order(
    rest: FakeAlpaca, ws: FakeAlpacaStream, client: AlpacaClient, ledger: Ledger, consumer: Consumer
) -> None:
    submit(ledger, client, "S1")
    order = rest.order_by_cid("S1")
    assert order is not None
    assert ws.push(trade_update("new", order))
    new = consumer.next_raw()
    assert (new.account, new.source, new.kind) == (ACCOUNT, "alpaca", "trade_updates")
    assert '"stream":"trade_updates"' in new.payload
    ingest(ledger, new)

    assert fill(rest, ws, "S1", "4", "100")
    partial = consumer.next_raw()
    reports = list(partial.translate(partial.payload))
    assert isinstance(reports[0], FillReport)
    assert (reports[0].qty, reports[0].price) == (Decimal(4), Decimal(100))
    assert isinstance(reports[1], OrderReport)
    assert reports[1].status is OrderStatus.PARTIALLY_FILLED
    ingest(ledger, partial)
    s1 = ledger.order(ACCOUNT, "S1")
    assert s1 is not None
    assert s1.status is OrderStatus.PARTIALLY_FILLED
    assert s1.filled_qty == Decimal(4)

    assert fill(rest, ws, "S1", "6", "101")
    ingest(ledger, consumer.next_raw())
    s1 = ledger.order(ACCOUNT, "S1")
    assert s1 is not None
    assert s1.status is OrderStatus.FILLED
    assert s1.filled_qty == Decimal(10)
    assert sorted(f.exec_id for f in s1.fills) == sorted(
        fill_exec_id(a["order_id"], Decimal(a["cum_qty"])) for a in rest.activities
    )

    # Alpaca replays new -> fill after a terminal event: stored, changes nothing.
    assert ws.push(trade_update("new", order, execution_id=new_exec(new)))
    filled = rest.order_by_cid("S1")
    assert filled is not None
    assert ws.push(trade_update("fill", filled, execution_id=rest.activities[-1]["id"], qty="6", price="101"))
    ingest(ledger, consumer.next_raw())
    ingest(ledger, consumer.next_raw())
    s1 = ledger.order(ACCOUNT, "S1")
    assert s1 is not None
    assert s1.status is OrderStatus.FILLED
    assert s1.filled_qty == Decimal(10)
    assert len(s1.fills) == 2
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(10))]
    assert_books_equal(ledger, rest, ACCOUNT)


def new_exec(item: RawMessage) -> str:
    import json

    return str(json.loads(item.payload)["data"]["execution_id"])


def test_text_frames_and_unknown_events_arrive_too(
    rest: FakeAlpaca, ws: FakeAlpacaStream, client: AlpacaClient, ledger: Ledger, consumer: Consumer
) -> None:
    ws.binary = False
    submit(ledger, client, "T1")
    order = rest.order_by_cid("T1")
    assert order is not None
    # An event alpaca-py's TradeEvent enum lacks, and a status its OrderStatus lacks.
    assert ws.push(trade_update("done_for_day", {**order, "status": "done_for_day"}))
    assert ws.push(trade_update("new", {**order, "status": "brand_new_status"}))
    assert ws.push(trade_update("new", order))
    items = [consumer.next_raw() for _ in range(3)]
    assert [i.payload.count("trade_updates") for i in items] == [1, 1, 1]
    for item in items:
        ingest(ledger, item)
    t1 = ledger.order(ACCOUNT, "T1")
    assert t1 is not None
    assert t1.status is OrderStatus.ACCEPTED


def test_missed_fill_during_a_drop_is_recovered_by_rest_reconciliation(
    rest: FakeAlpaca, ws: FakeAlpacaStream, client: AlpacaClient, ledger: Ledger, consumer: Consumer
) -> None:
    submit(ledger, client, "R1")
    assert fill(rest, ws, "R1", "4", "100")
    ingest(ledger, consumer.next_raw())

    ws.down = True
    ws.drop()
    assert not fill(rest, ws, "R1", "6", "102")  # nobody listening: missed
    ws.down = False

    item = consumer.next()
    assert item == Reconnected(account=ACCOUNT, source="alpaca")
    r1 = ledger.order(ACCOUNT, "R1")
    assert r1 is not None
    assert r1.filled_qty == Decimal(4)

    ledger.reconcile(asyncio.run(client.snapshot(ACCOUNT)))

    r1 = ledger.order(ACCOUNT, "R1")
    assert r1 is not None
    wire = rest.order_by_cid("R1")
    assert wire is not None
    assert r1.status is OrderStatus.FILLED
    assert r1.filled_qty == Decimal(wire["filled_qty"]) == Decimal(10)
    assert sorted(f.exec_id for f in r1.fills) == sorted(
        fill_exec_id(a["order_id"], Decimal(a["cum_qty"])) for a in rest.activities
    )
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [
        (symbol, qty) for symbol, (qty, _) in rest.positions.items()
    ]
    assert [d.kind for d in ledger.discrepancies(ACCOUNT)] == []
    assert_books_equal(ledger, rest, ACCOUNT)

    # The new connection delivers again.
    ws.wait_connections(2)
    wire2 = rest.order_by_cid("R1")
    assert wire2 is not None
    assert ws.push(trade_update("new", wire2))
    assert isinstance(consumer.next(), RawMessage)


def test_watchdog_restarts_a_silent_stream(ws: FakeAlpacaStream) -> None:
    consumer = consume(ws, silence_after=0.5)
    try:
        ws.silent = True  # the socket stays open but nothing arrives
        item = consumer.next()
        assert item == Reconnected(account=ACCOUNT, source="alpaca")
        ws.wait_connections(2)
    finally:
        consumer.close()


def test_stop_ends_items_and_secrets_stay_out_of_repr(ws: FakeAlpacaStream) -> None:
    consumer = consume(ws)
    text = repr(consumer.stream)
    assert KEY not in text
    assert SECRET not in text
    consumer.close()
    assert consumer.items.empty()


def test_unencodable_raw_data_is_still_enqueued() -> None:
    stream = AlpacaStream(KEY, SECRET, account=ACCOUNT, url_override="ws://127.0.0.1:9", silence_after=120)

    async def go() -> RawMessage | Reconnected:
        items = stream.items()
        waiter = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0)
        await stream._handler_for(1)({"stream": "trade_updates", "data": {1, 2}})  # a set: not JSON
        item = await asyncio.wait_for(waiter, DEADLINE)
        await items.aclose()
        return item

    item = asyncio.run(go())
    assert isinstance(item, RawMessage)
    assert "trade_updates" in item.payload
    with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: ingest_raw keeps it as INVALID_REPORT
        item.translate(item.payload)
    stream.stop()
    assert stream.join(DEADLINE)
