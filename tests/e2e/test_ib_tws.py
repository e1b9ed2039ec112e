"""End to end: the real ib_async client, through IbClient, against a wire-level fake TWS.

Every scenario drives the real `Ledger` from the client's stream (raw payloads stored,
then translated) and ends with the ledger equal to the fake broker's own books: each
order's status and filled quantity, each execution (latest revision), each position.
Reconnect and crash scenarios run the `ReconciliationService` / `start_session` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from tests.builders import unique_cid
from tests.e2e import fake_tws
from tests.e2e.fake_tws import FakeTws
from trueup import Ledger, OrderStatus
from trueup.adapters.base import OrderRequest, OrderType, RawMessage, Reconnected, StreamItem, SubmitUncertain
from trueup.adapters.ib.client import IbClient
from trueup.domain.discrepancy import DiscrepancyKind
from trueup.domain.errors import BrokerQueryError
from trueup.domain.status import OrderFlag, Side
from trueup.service import ReconciliationService
from trueup.submission import Submitter, look_up, start_session

ACCOUNT = fake_tws.ACCOUNT
CLIENT_ID = 7
DEADLINE = 15.0

logging.getLogger("ib_async").setLevel(logging.CRITICAL)


@pytest.fixture
def fake() -> Iterator[FakeTws]:
    with fake_tws.running() as server:
        yield server


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('ib')}") as opened:
        yield opened


def new_client(fake: FakeTws, **knobs: float) -> IbClient:
    settings = {"connect_timeout": 5.0, "request_timeout": 5.0, "ack_timeout": 5.0, "reconnect_delay": 0.05}
    settings.update(knobs)
    return IbClient("127.0.0.1", fake.port, CLIENT_ID, account=ACCOUNT, **settings)  # type: ignore[arg-type]


def request(cid: str, qty: int = 10, side: Side = Side.BUY, limit: str | None = None) -> OrderRequest:
    return OrderRequest(
        account=ACCOUNT,
        client_order_id=cid,
        symbol="AAPL",
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=Decimal(limit) if limit else None,
    )


class Pump:
    """Feeds the client's stream into the ledger, as the service does, until a condition holds."""

    def __init__(self, client: IbClient, ledger: Ledger) -> None:
        self.ledger = ledger
        self.items: AsyncIterator[StreamItem] = client.stream()
        self.reconnects = 0

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while not condition():
            remaining = end - loop.time()
            if remaining <= 0:
                pytest.fail(f"not reached within {DEADLINE}s: {what}")
            try:
                item = await asyncio.wait_for(anext(self.items), remaining)
            except TimeoutError:
                pytest.fail(f"not reached within {DEADLINE}s: {what}")
            if isinstance(item, RawMessage):
                self.ledger.ingest_raw(
                    item.payload, item.translate, account=item.account, source=item.source, kind=item.kind
                )
            else:
                assert isinstance(item, Reconnected)
                self.reconnects += 1


async def drive(fn: Callable[[], object]) -> object:
    """Run a (blocking, thread-safe) fake action without blocking the client's loop."""
    return await asyncio.to_thread(fn)


def status_of(ledger: Ledger, cid: str) -> OrderStatus | None:
    view = ledger.order(ACCOUNT, cid)
    return None if view is None else view.status


def filled_of(ledger: Ledger, cid: str) -> Decimal:
    view = ledger.order(ACCOUNT, cid)
    return Decimal(-1) if view is None else view.filled_qty


def settled(ledger: Ledger, cid: str, status: OrderStatus) -> bool:
    """The order has `status` and every execution's commission report has arrived."""
    view = ledger.order(ACCOUNT, cid)
    return view is not None and view.status is status and all(f.commission is not None for f in view.fills)


def expected_status(order: fake_tws.FakeOrder) -> OrderStatus:
    if order.status == "Filled":
        return OrderStatus.FILLED
    if order.status in {"Cancelled", "ApiCancelled"}:
        return OrderStatus.CANCELED
    if order.status == "Inactive" and order.why_held != "locate":
        return OrderStatus.REJECTED
    return OrderStatus.PARTIALLY_FILLED if order.filled else OrderStatus.ACCEPTED


def assert_books_equal(ledger: Ledger, fake: FakeTws, *cids: str) -> None:
    """The ledger holds exactly what the fake broker holds: orders, executions, positions."""
    for cid in cids:
        broker = fake.order(cid)
        view = ledger.order(ACCOUNT, cid)
        assert view is not None, cid
        assert view.status is expected_status(broker), (cid, view.status, broker.status)
        assert view.filled_qty == broker.filled, (cid, view.filled_qty, broker.filled)
        assert view.inferred_qty == 0, cid
        assert str(broker.perm_id) in view.broker_order_ids
        assert sorted(f.exec_id for f in view.fills) == fake.execution_ids(cid)
        executions = {e.exec_id: e for e in fake.executions.values()}
        for booked in view.fills:
            execution = executions[booked.exec_id]
            assert (booked.qty, booked.price) == (execution.shares, execution.price)
            assert booked.commission == execution.commission
    qty, avg = fake.position("AAPL")
    positions = {p.symbol: p for p in ledger.positions(ACCOUNT, include_flat=True)}
    held = positions.get("AAPL")
    assert (held.qty if held else Decimal(0)) == qty
    if qty:
        assert held is not None
        # IB sends the average as a double; the ledger quantizes derived prices to 1e-10.
        assert abs(held.avg_cost - avg) < Decimal("1e-8"), (held.avg_cost, avg)


def kinds(ledger: Ledger) -> list[str]:
    return sorted(str(d.kind) for d in ledger.discrepancies(ACCOUNT, include_resolved=True))


async def session(ledger: Ledger, client: IbClient) -> Pump:
    """Connect, start the books (recovery + reconciliation), and start pumping the stream."""
    await client.connect()
    await start_session(ledger, client, ACCOUNT)
    return Pump(client, ledger)


# --- scenarios ------------------------------------------------------------------------------


def test_partial_fills_reach_filled_without_a_filled_status_and_the_permid_link_is_stored(
    fake: FakeTws, ledger: Ledger
) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        view = await Submitter(ledger, client).submit(request("P1"))
        assert view.status is OrderStatus.ACCEPTED
        perm_id = str(fake.order("P1").perm_id)
        assert view.broker_order_ids == (perm_id,)
        assert fake.placed == [(CLIENT_ID, fake.order("P1").order_id, "P1")]

        await drive(lambda: fake.fill("P1", "4", "100"))
        await pump.until(lambda: filled_of(ledger, "P1") == 4, "first partial fill")
        assert status_of(ledger, "P1") is OrderStatus.PARTIALLY_FILLED
        # TWS does not always send Filled (market orders): FILLED follows from the executions.
        await drive(lambda: fake.fill("P1", "6", "101.5", send_status=False))
        await pump.until(lambda: settled(ledger, "P1", OrderStatus.FILLED), "filled, with both commissions")
        await client.close()

    asyncio.run(scenario())
    assert_books_equal(ledger, fake, "P1")
    links = [e for e in ledger.events() if e.topic == "trueup:BrokerOrderLink.Linked"]
    assert [(e.event.broker_order_id, e.event.client_order_id) for e in links] == [
        (str(fake.order("P1").perm_id), "P1")
    ]
    raw = [e.event.payload for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"]
    assert any('"event":"execDetails"' in p for p in raw)
    assert kinds(ledger) == []


def test_a_duplicate_and_a_stale_order_status_change_nothing(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("D1"))
        await drive(lambda: fake.fill("D1", "4", "100"))
        await drive(lambda: fake.resend_status("D1"))  # an exact duplicate (ib_async drops it)
        await drive(lambda: fake.fill("D1", "6", "100"))
        await pump.until(lambda: settled(ledger, "D1", OrderStatus.FILLED), "filled")
        # A late duplicate of the partial status arrives after Filled: stored, changes nothing.
        await drive(lambda: fake.resend_status("D1", status="Submitted", filled="4", remaining="6"))
        before = ledger.last_position()
        await pump.until(lambda: ledger.last_position() > before, "late status stored")
        await client.close()

    asyncio.run(scenario())
    assert_books_equal(ledger, fake, "D1")
    assert kinds(ledger) == []


def test_an_execution_correction_replaces_the_fill(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("C1"))
        first = await drive(lambda: fake.fill("C1", "4", "100"))
        await pump.until(lambda: filled_of(ledger, "C1") == 4, "first execution")
        corrected = await drive(lambda: fake.correct(str(first), "100.5"))
        assert str(corrected).endswith(".02")
        await pump.until(
            lambda: (
                [f.exec_id for f in ledger.order(ACCOUNT, "C1").fills] == [corrected]  # type: ignore[union-attr]
                and ledger.order(ACCOUNT, "C1").fills[0].commission is not None
            ),  # type: ignore[union-attr]
            "the .02 revision replaced the .01",
        )
        assert filled_of(ledger, "C1") == 4  # replaced, not added
        await drive(lambda: fake.fill("C1", "6", "101"))
        await pump.until(lambda: settled(ledger, "C1", OrderStatus.FILLED), "filled")
        await client.close()

    asyncio.run(scenario())
    assert_books_equal(ledger, fake, "C1")
    assert kinds(ledger) == []


def test_a_cancel_racing_a_fill_ends_filled(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("R1"))
        await drive(lambda: fake.fill("R1", "4", "100"))
        await pump.until(lambda: filled_of(ledger, "R1") == 4, "partial fill")
        fake.hold_cancels = True
        await Submitter(ledger, client).cancel(ACCOUNT, "R1")
        # ib_async's local PendingCancel is an intent: a flag, no status change.
        await pump.until(
            lambda: OrderFlag.CANCEL_PENDING in ledger.order(ACCOUNT, "R1").flags,  # type: ignore[union-attr]
            "cancel pending",
        )
        assert status_of(ledger, "R1") is OrderStatus.PARTIALLY_FILLED
        await drive(lambda: fake.fill("R1", "6", "100.25"))  # the fill wins the race
        await drive(fake.process_cancels)  # TWS: cannot cancel, state Filled (error 10148)
        await pump.until(lambda: settled(ledger, "R1", OrderStatus.FILLED), "filled")
        # The second order's cancel wins: CANCELED with its partial fill.
        fake.hold_cancels = False
        await Submitter(ledger, client).submit(request("R2", qty=5))
        await drive(lambda: fake.fill("R2", "2", "99"))
        await pump.until(lambda: filled_of(ledger, "R2") == 2, "partial fill of R2")
        await Submitter(ledger, client).cancel(ACCOUNT, "R2")
        await pump.until(lambda: settled(ledger, "R2", OrderStatus.CANCELED), "R2 canceled")
        await client.close()

    asyncio.run(scenario())
    assert fake.order("R1").status == "Filled"
    assert_books_equal(ledger, fake, "R1", "R2")
    assert ledger.order(ACCOUNT, "R1").flags == frozenset()  # type: ignore[union-attr]
    assert kinds(ledger) == []


def test_an_error_driven_local_cancelled_on_a_live_order_is_not_terminal(
    fake: FakeTws, ledger: Ledger
) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("E1", limit="100"))
        await drive(lambda: fake.fill("E1", "3", "100"))
        await pump.until(lambda: filled_of(ledger, "E1") == 3, "partial fill")
        # TWS reports an error tied to the order (e.g. a rejected modification); ib_async marks
        # the order Cancelled locally although it is still working at IB.
        await drive(lambda: fake.error("E1", 201, "Order rejected - reason: modification not allowed"))
        await pump.until(
            lambda: OrderFlag.UNCONFIRMED_TERMINAL in ledger.order(ACCOUNT, "E1").flags,  # type: ignore[union-attr]
            "local Cancelled flagged",
        )
        assert status_of(ledger, "E1") is OrderStatus.PARTIALLY_FILLED
        # Reconciliation asks TWS: the order is open, so the flag goes and the order stays live.
        ledger.reconcile(await client.snapshot(ACCOUNT))
        view = ledger.order(ACCOUNT, "E1")
        assert view is not None
        assert view.status is OrderStatus.PARTIALLY_FILLED
        assert view.flags == frozenset()
        # A fill on the order ib_async thought cancelled is booked like any other.
        await drive(lambda: fake.fill("E1", "2", "100", send_status=False))
        await pump.until(lambda: filled_of(ledger, "E1") == 5, "fill after the local Cancelled")
        await drive(lambda: fake.fill("E1", "5", "100"))
        await pump.until(lambda: settled(ledger, "E1", OrderStatus.FILLED), "filled after all")
        await client.close()

    asyncio.run(scenario())
    assert_books_equal(ledger, fake, "E1")
    assert DiscrepancyKind.STATUS_CONFLICT not in kinds(ledger)


def test_a_rejection_is_terminal_only_once_tws_lists_it(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        fake.on_place = "reject"
        # Error 201 makes ib_async mark the order Cancelled locally: not TWS's word, so the
        # submit is uncertain and the order stays in flight.
        view = await Submitter(ledger, client).submit(request("J1"))
        assert view.status is OrderStatus.SUBMITTED
        await pump.until(
            lambda: OrderFlag.UNCONFIRMED_TERMINAL in ledger.order(ACCOUNT, "J1").flags,  # type: ignore[union-attr]
            "local Cancelled flagged",
        )
        assert status_of(ledger, "J1") is OrderStatus.SUBMITTED
        # TWS lists it among completed orders (Inactive): now it is REJECTED.
        ledger.reconcile(await client.snapshot(ACCOUNT))
        await client.close()

    asyncio.run(scenario())
    assert fake.order("J1").status == "Inactive"
    assert_books_equal(ledger, fake, "J1")
    assert kinds(ledger) == []


def test_an_inactive_locate_hold_stays_working(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("L1", qty=8, side=Side.SELL))
        await drive(lambda: fake.set_status("L1", "Inactive", why_held="locate"))
        await pump.until(
            lambda: OrderFlag.HELD in ledger.order(ACCOUNT, "L1").flags,  # type: ignore[union-attr]
            "held for a locate",
        )
        assert status_of(ledger, "L1") is OrderStatus.ACCEPTED
        # Reconciling while held keeps it working (TWS lists it among open orders).
        ledger.reconcile(await client.snapshot(ACCOUNT))
        assert status_of(ledger, "L1") is OrderStatus.ACCEPTED
        await drive(lambda: fake.set_status("L1", "Submitted"))  # shares located
        await drive(lambda: fake.fill("L1", "8", "187.43"))
        await pump.until(lambda: settled(ledger, "L1", OrderStatus.FILLED), "short sale filled")
        await client.close()

    asyncio.run(scenario())
    assert_books_equal(ledger, fake, "L1")
    assert fake.position("AAPL")[0] == Decimal(-8)
    assert kinds(ledger) == []


def test_cancelling_a_locate_hold_waits_for_tws(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("L2", qty=5, side=Side.SELL))
        await drive(lambda: fake.set_status("L2", "Inactive", why_held="locate"))
        await pump.until(
            lambda: OrderFlag.HELD in ledger.order(ACCOUNT, "L2").flags,  # type: ignore[union-attr]
            "held for a locate",
        )
        fake.hold_cancels = True
        # ib_async counts Inactive as done (so not among `openTrades()`): the client still
        # finds and cancels it, and nothing is terminal until TWS confirms.
        await Submitter(ledger, client).cancel(ACCOUNT, "L2")
        await _wait_for(lambda: len(fake.pending_cancels) == 1, "cancel request received by TWS")
        assert status_of(ledger, "L2") is OrderStatus.ACCEPTED
        await drive(fake.process_cancels)  # TWS confirms
        await pump.until(lambda: settled(ledger, "L2", OrderStatus.CANCELED), "canceled by TWS")
        await client.close()

    asyncio.run(scenario())
    assert_books_equal(ledger, fake, "L2")
    assert kinds(ledger) == []


def test_fills_missed_while_disconnected_are_recovered_after_the_reconnect(
    fake: FakeTws, ledger: Ledger
) -> None:
    fills_missed_while_disconnected(fake, ledger)


@pytest.mark.parametrize("run", range(3))
def test_the_reconnect_scenario_stops_cleanly_every_time(fake: FakeTws, ledger: Ledger, run: int) -> None:
    # The small share in `make test` of the soak in tests/soak/test_ib_reconnect_soak.py:
    # it once hung in one run of ~40 (the stream task's cancellation was lost).
    fills_missed_while_disconnected(fake, ledger)


def test_a_cancellation_landing_as_an_ib_request_completes_is_not_lost(fake: FakeTws) -> None:
    # The root cause of the reconnect hang, made deterministic: the caller is cancelled in
    # the very loop step in which its request completes. Python 3.11's asyncio.wait_for
    # returned the answer and dropped the cancellation, so the stream task ran on.
    async def scenario() -> bool:
        client = new_client(fake)
        await client.connect()

        async def caller() -> None:
            me = asyncio.current_task()
            assert me is not None

            async def request() -> str:
                asyncio.get_running_loop().call_soon(me.cancel)
                return "answer"

            await client.connection.query("a request", request)
            await asyncio.sleep(0)  # the cancellation must land here at the latest

        task = asyncio.create_task(caller())
        await asyncio.wait({task})
        await client.close()
        return task.cancelled()

    assert asyncio.run(scenario())


def fills_missed_while_disconnected(fake: FakeTws, ledger: Ledger) -> None:
    """Fill, disconnect, a fill while down, reconnect: the service recovers it and stops."""

    async def scenario() -> None:
        client = new_client(fake)
        service = ReconciliationService(ledger, client, accounts=[ACCOUNT], period=3600, inflight_after=3600)
        await client.connect()
        await service.start()
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        await Submitter(ledger, client).submit(request("M1"))
        await drive(lambda: fake.fill("M1", "4", "100"))
        await _wait_for(lambda: filled_of(ledger, "M1") == 4, "first fill streamed")

        await drive(lambda: fake.drop(down=True))  # TWS goes away
        await drive(lambda: fake.fill("M1", "6", "102"))  # nobody connected: missed
        assert filled_of(ledger, "M1") == 4
        await drive(fake.up)
        # The client reconnects with the same clientId, says Reconnected, the service reconciles.
        await _wait_for(lambda: service.counters.reconnects >= 1, "reconnected")
        await _wait_for(lambda: settled(ledger, "M1", OrderStatus.FILLED), "missed fill recovered")
        stop.set()
        async with asyncio.timeout(DEADLINE):  # a stop that hangs is the bug this guards
            await running
        await client.close()

    asyncio.run(scenario())
    assert fake.client_ids_seen == [CLIENT_ID, CLIENT_ID]
    assert_books_equal(ledger, fake, "M1")
    assert kinds(ledger) == []


def test_the_stream_says_reconnected_after_every_reconnect(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        pump = await session(ledger, client)
        for expected in (1, 2):
            await drive(fake.drop)  # TWS restarts: the socket closes, TWS is back at once
            await pump.until(lambda n=expected: pump.reconnects == n, f"reconnect {expected}")
            assert client.connected
        await client.close()

    asyncio.run(scenario())
    assert fake.client_ids_seen == [CLIENT_ID] * 3
    raw = [e.event.payload for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"]
    assert sum('"event":"disconnected"' in p for p in raw) >= 2
    assert sum('"event":"connected"' in p for p in raw) >= 2


@pytest.mark.parametrize("filled_while_down", [True, False], ids=["completed-at-restart", "open-at-restart"])
def test_a_crash_after_place_order_restarts_and_finds_the_order_by_order_ref(
    fake: FakeTws, tmp_path: Path, filled_while_down: bool
) -> None:
    store = f"sqlite:///{tmp_path / 'books.db'}"

    async def before_crash() -> None:
        ledger = Ledger.open(store)
        client = new_client(fake)
        await session(ledger, client)
        # The submit path up to the broker call (trueup.submission), then the broker call;
        # the process dies before the acknowledgement is stored.
        req = request("K1")
        ledger.intend(ACCOUNT, "K1", req.symbol, req.side, req.quantity)
        ledger.mark_submitted(ACCOUNT, "K1")
        await client.submit(req)
        # Crash: neither the client nor the ledger is closed; the loop just ends.

    asyncio.run(before_crash())
    fake.drop()  # TWS notices the dead socket
    if filled_while_down:
        fake.fill("K1", "10", "100")  # a completed order by restart

    async def after_restart() -> Ledger:
        ledger = Ledger.open(store)
        assert status_of(ledger, "K1") is OrderStatus.SUBMITTED
        client = new_client(fake)  # the same clientId
        await client.connect()
        recovery, result = await start_session(ledger, client, ACCOUNT)
        assert recovery.found == ["K1"]
        assert result.gate == "READY", result
        # Submitting the same client id again sends nothing.
        await Submitter(ledger, client).submit(request("K1"))
        await client.close()
        return ledger

    ledger = asyncio.run(after_restart())
    assert [ref for _, _, ref in fake.placed] == ["K1"]  # placed once, never re-sent
    assert fake.client_ids_seen == [CLIENT_ID, CLIENT_ID]
    assert_books_equal(ledger, fake, "K1")
    assert kinds(ledger) == []
    ledger.close()


def test_a_disconnect_during_submit_is_uncertain_and_the_lookup_finds_the_order(
    fake: FakeTws, ledger: Ledger
) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        await session(ledger, client)
        fake.on_place = "drop"  # TWS takes the order, the connection dies before the answer
        with pytest.raises(SubmitUncertain):
            await client.submit(request("U1"))
        fake.on_place = "ack"
        await _wait_for(lambda: client.connected, "reconnected")
        found = await client.lookup(ACCOUNT, "U1")
        assert found is not None
        assert found.broker_order_id == str(fake.order("U1").perm_id)
        assert await client.lookup(ACCOUNT, "NEVERSENT") is None
        # A retry through the client is refused as "already there", never re-sent.
        ack = await client.submit(request("U1"))
        assert ack.broker_order_id == found.broker_order_id
        # A new order after the reconnect gets a fresh orderId.
        await client.submit(request("U2"))
        await client.close()

    asyncio.run(scenario())
    assert [ref for _, _, ref in fake.placed] == ["U1", "U2"]
    assert fake.duplicate_order_ids == []
    assert len({order_id for _, order_id, _ in fake.placed}) == 2


def test_an_order_entered_by_hand_in_tws_is_an_orphan(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        await session(ledger, client)
        perm_id = await drive(lambda: fake.place_external("AAPL", "5", "99.5"))
        result = ledger.reconcile(await client.snapshot(ACCOUNT))
        assert not result.stale
        # Known by permId only (no orderRef): tracked under an external id, linked to it.
        view = ledger.order(ACCOUNT, f"~{perm_id}")
        assert view is not None
        assert (view.status, view.filled_qty, view.broker_order_ids) == (
            OrderStatus.FILLED,
            5,
            (str(perm_id),),
        )
        assert sorted(f.exec_id for f in view.fills) == sorted(
            e.exec_id for e in fake.executions.values() if e.order.perm_id == perm_id
        )
        await client.close()

    asyncio.run(scenario())
    assert "ORPHAN_ORDER" in kinds(ledger)
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", fake.position("AAPL")[0])]


def test_the_snapshot_carries_ibs_answers_and_they_are_stored_first(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        await session(ledger, client)
        perm_id = await drive(lambda: fake.place_external("AAPL", "5", "99.5"))
        snapshot = await client.snapshot(ACCOUNT)
        assert [a.kind for a in snapshot.raw] == [
            "open orders",
            "completed orders",
            "executions",
            "positions",
        ]
        assert all(a.source == "ib" and a.error is None for a in snapshot.raw)
        answers = {a.kind: msgspec.json.decode(a.payload) for a in snapshot.raw}
        listed = [t["order"]["permId"] for t in answers["open orders"] + answers["completed orders"]]
        assert perm_id in listed
        assert sorted(f["execution"]["execId"] for f in answers["executions"]) == sorted(
            e.exec_id for e in fake.executions.values()
        )
        assert [p["contract"]["symbol"] for p in answers["positions"]] == ["AAPL"]
        result = ledger.reconcile(snapshot)  # an orphan: concluded, so the evidence is stored
        assert result.discrepancies
        await client.close()
        stored = [e for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"]
        kept = {e.event.kind: e.event.payload for e in stored if e.event.kind.startswith("answer:")}
        assert kept == {f"answer:{a.kind}": a.payload for a in snapshot.raw}  # verbatim
        first = min(e.position for e in ledger.events() if e.topic == "trueup:Discrepancy.Raised")
        assert max(e.position for e in stored if e.event.kind.startswith("answer:")) < first

    asyncio.run(scenario())


def test_a_lookup_is_booked_on_ibs_answer_verbatim(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        await session(ledger, client)
        fake.on_place = "drop"  # TWS takes the order, the answer is lost: SUBMITTED here
        ledger.intend(ACCOUNT, "L1", "AAPL", "BUY", Decimal(10))
        ledger.mark_submitted(ACCOUNT, "L1")
        with pytest.raises(SubmitUncertain):
            await client.submit(request("L1"))
        fake.on_place = "ack"
        await _wait_for(lambda: client.connected, "reconnected")
        answer = await client.lookup_answer(ACCOUNT, "L1")
        looked = await look_up(ledger, client, ACCOUNT, "L1")
        assert looked.report is not None
        assert looked.report.broker_order_id == str(fake.order("L1").perm_id)
        await client.close()
        assert answer.raw is not None
        lookups = [e.event for e in ledger.events() if getattr(e.event, "kind", "") == "lookup"]
        assert len(lookups) == 1
        body = msgspec.json.decode(lookups[0].payload)
        assert set(body) == {"open orders", "completed orders"}  # IB's two answers, not trueup's report
        assert "L1" in [t["order"]["orderRef"] for t in body["open orders"] + body["completed orders"]]

    asyncio.run(scenario())


def test_a_failed_query_is_stale_data_never_flat(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake, request_timeout=0.5)
        pump = await session(ledger, client)
        await Submitter(ledger, client).submit(request("S1"))
        await drive(lambda: fake.fill("S1", "10", "100"))
        await pump.until(lambda: settled(ledger, "S1", OrderStatus.FILLED), "filled")
        fake.unanswered = {"61", "7"}  # positions and executions never answer
        snapshot = await client.snapshot(ACCOUNT)
        assert snapshot.positions is None
        assert snapshot.fills is None
        assert snapshot.orders is not None
        assert snapshot.complete_history is False
        result = ledger.reconcile(snapshot)
        assert result.stale
        await drive(lambda: fake.drop(down=True))
        await _wait_for(lambda: not client.connected, "disconnected")
        snapshot = await client.snapshot(ACCOUNT)
        assert (snapshot.orders, snapshot.fills, snapshot.positions) == (None, None, None)
        ledger.reconcile(snapshot)
        await client.close()

    asyncio.run(scenario())
    # No ghost sell: the position we hold is still there.
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(10))]
    assert DiscrepancyKind.STALE_DATA in kinds(ledger)
    assert DiscrepancyKind.NAKED_POSITION not in kinds(ledger)
    assert_books_equal(ledger, fake, "S1")


def test_an_execution_landing_during_the_snapshot_is_taken_again_one_cut(
    fake: FakeTws, ledger: Ledger
) -> None:
    # The execution lands after the executions read, before the positions read: taken as
    # it came, the positions would hold it and the executions not, and a repair would
    # book it, then the execution again when it arrives.
    async def scenario() -> None:
        client = new_client(fake)
        await session(ledger, client)
        await Submitter(ledger, client).submit(request("S1", qty=10))
        fake.fills_during_positions = [("S1", "4", "100")]
        snapshot = await client.snapshot(ACCOUNT)
        assert snapshot.fills is not None
        assert snapshot.positions is not None
        assert [f.qty for f in snapshot.fills] == [Decimal(4)]
        assert [p.qty for p in snapshot.positions if p.symbol == "AAPL"] == [Decimal(4)]
        ledger.reconcile(snapshot)
        # Executions that never hold still leave the positions unknown, with the reason.
        fake.fills_during_positions = [("S1", "1", "100")] * 3
        snapshot = await client.snapshot(ACCOUNT)
        assert snapshot.positions is None
        assert "executions kept arriving" in snapshot.failures["positions"]
        ledger.reconcile(snapshot)
        await client.close()

    asyncio.run(scenario())
    assert [
        d.kind for d in ledger.discrepancies(ACCOUNT, include_resolved=True) if d.kind != "STALE_DATA"
    ] == []
    assert [(p.symbol, p.qty) for p in ledger.positions(ACCOUNT)] == [("AAPL", Decimal(7))]


def test_an_execution_below_zero_is_a_fill_not_stale_executions(fake: FakeTws, ledger: Ledger) -> None:
    async def scenario() -> None:
        client = new_client(fake)
        await session(ledger, client)
        await Submitter(ledger, client).submit(request("S1", qty=10))
        await drive(lambda: fake.fill("S1", "10", "-37.63"))
        snapshot = await client.snapshot(ACCOUNT)
        assert snapshot.fills is not None  # before: one such execution made the part STALE_DATA
        assert [f.price for f in snapshot.fills] == [Decimal("-37.63")]
        result = ledger.reconcile(snapshot)
        assert not result.stale
        await client.close()

    asyncio.run(scenario())
    order = ledger.order(ACCOUNT, "S1")
    assert order is not None
    assert (order.status, order.avg_fill_price) == (OrderStatus.FILLED, Decimal("-37.63"))


def test_an_account_the_login_does_not_manage_is_never_reported_flat(fake: FakeTws) -> None:
    async def scenario() -> None:
        client = IbClient("127.0.0.1", fake.port, CLIENT_ID, account="DU999", connect_timeout=5.0)
        with pytest.raises(BrokerQueryError, match="not managed"):
            await client.connect()
        assert not client.connected
        snapshot = await client.snapshot("DU999")
        assert (snapshot.orders, snapshot.fills, snapshot.positions) == (None, None, None)
        await client.close()

    asyncio.run(scenario())


def test_from_env_reads_host_port_and_client_id() -> None:
    client = IbClient.from_env("DU9", {"IB_HOST": "10.0.0.5", "IB_PORT": "4002", "IB_CLIENT_ID": "17"})
    assert (client.host, client.port, client.client_id, client.account) == ("10.0.0.5", 4002, 17, "DU9")
    defaults = IbClient.from_env("DU9", {})
    assert (defaults.host, defaults.port, defaults.client_id) == ("127.0.0.1", 7497, 1)
    from trueup.domain.errors import ConfigError

    with pytest.raises(ConfigError, match="IB_PORT"):
        IbClient.from_env("DU9", {"IB_PORT": "tws"})
    with pytest.raises(ConfigError, match="client_id"):
        IbClient.from_env("DU9", {"IB_CLIENT_ID": "-1"})
    with pytest.raises(ConfigError, match="account"):
        IbClient.from_env(" ", {})


async def _wait_for(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not condition():
        if loop.time() > end:
            pytest.fail(f"not reached within {DEADLINE}s: {what}")
        await asyncio.sleep(0.01)


def test_an_event_that_cannot_be_copied_is_stored_and_reported(ledger: Ledger) -> None:
    class Unreadable:
        @property
        def account(self) -> str:
            raise RuntimeError("broken object")

    async def scenario() -> RawMessage:
        client = IbClient("127.0.0.1", 9, CLIENT_ID, account=ACCOUNT)
        client.connection._on_position(Unreadable())  # the handler never raises
        item = client.connection._queue.get_nowait()
        assert isinstance(item, RawMessage)
        return item

    item = asyncio.run(scenario())
    assert "broken object" in item.payload
    ledger.ingest_raw(item.payload, item.translate, account=item.account, source=item.source, kind=item.kind)
    assert kinds(ledger) == [DiscrepancyKind.INVALID_REPORT]
    raw = [e.event.payload for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"]
    assert raw == [item.payload]


def yesterday() -> datetime:
    return datetime.now(UTC) - timedelta(days=1)


def test_after_midnight_recovery_never_closes_an_order_tws_no_longer_lists(
    fake: FakeTws, tmp_path: Path
) -> None:
    # Sent yesterday, filled, the process died before the answer was stored; today IB Gateway
    # lists neither the completed order nor its executions. Not finding it proves nothing:
    # it stays SUBMITTED and the gate stays BLOCKED naming it (before the fix recovery
    # closed it as never placed, and the position was "repaired" around the lie).
    store = f"sqlite:///{tmp_path / 'books.db'}"

    async def yesterday_session() -> None:
        ledger = Ledger.open(store, clock=yesterday)
        client = new_client(fake)
        await session(ledger, client)
        req = request("Y1")
        ledger.intend(ACCOUNT, "Y1", req.symbol, req.side, req.quantity)
        ledger.mark_submitted(ACCOUNT, "Y1")
        await client.submit(req)  # crash before the acknowledgement is stored

    asyncio.run(yesterday_session())
    fake.drop()
    fake.fill("Y1", "10", "187.5")
    fake.roll_over_day()

    async def today() -> Ledger:
        ledger = Ledger.open(store)
        client = new_client(fake)
        await client.connect()
        recovery, result = await start_session(ledger, client, ACCOUNT)
        assert (recovery.found, recovery.abandoned, recovery.unresolved) == ([], [], ["Y1"])
        assert result.gate == "BLOCKED"
        await client.close()
        return ledger

    ledger = asyncio.run(today())
    assert status_of(ledger, "Y1") is OrderStatus.SUBMITTED  # unknown, not "never placed"
    _, reasons, _ = ledger.gate_details(ACCOUNT)
    assert "submit Y1 awaiting broker lookup" in reasons
    assert [ref for _, _, ref in fake.placed] == ["Y1"]  # nothing re-sent
    ledger.close()


def test_an_order_tws_closed_before_midnight_while_we_were_down_is_missing_not_open_forever(
    fake: FakeTws, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'books.db'}"

    async def yesterday_session() -> None:
        ledger = Ledger.open(store, clock=yesterday)
        client = new_client(fake)
        pump = await session(ledger, client)
        await ledger.submit_async(request("D1", limit="1"), client)
        await pump.until(lambda: status_of(ledger, "D1") is OrderStatus.ACCEPTED, "D1 working")
        await client.close()
        ledger.close()

    asyncio.run(yesterday_session())
    fake.set_status("D1", "Cancelled")  # the day order expired at the close; nobody was listening
    fake.roll_over_day()

    async def today() -> Ledger:
        ledger = Ledger.open(store)
        client = new_client(fake)
        await client.connect()
        await start_session(ledger, client, ACCOUNT)
        await client.close()
        return ledger

    ledger = asyncio.run(today())
    [missing] = [d for d in ledger.discrepancies(ACCOUNT) if d.kind == "MISSING_AT_BROKER"]
    assert missing.key == "D1"
    assert "history window" in missing.actual
    assert status_of(ledger, "D1") is OrderStatus.ACCEPTED  # never closed on absence alone
    ledger.close()
