"""Crash-safe submission through the paper broker: write-ahead, send once, recover by lookup."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.builders import at, unique_cid
from tests.fakes import FakeBroker
from trueup import InvalidReport, Ledger, NotReadyError, OrderStatus
from trueup.adapters.base import OrderRequest, OrderType
from trueup.adapters.paper.broker import PaperBroker
from trueup.demo import drain
from trueup.domain.gate import GateState
from trueup.submission import Submitter, start_session

ACCOUNT = "PAPER"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PaperBroker]:
    with PaperBroker(tmp_path / "paper.db", account=ACCOUNT, seed=3) as opened:
        yield opened


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('sub')}") as opened:
        yield opened


def request(cid: str, **changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "account": ACCOUNT,
        "client_order_id": cid,
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": Decimal(5),
    }
    fields.update(changes)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def started(ledger: Ledger, broker: PaperBroker) -> None:
    asyncio.run(start_session(ledger, broker, ACCOUNT))


def test_submit_stores_intent_then_ack_and_broker_id(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    view = ledger.submit(request("A1"), broker)
    assert view.status is OrderStatus.ACCEPTED
    assert view.broker_order_ids
    assert view.broker_order_ids[0].startswith("P")
    assert view.submitted_at is not None
    topics = [e.topic for e in ledger.events()]
    # Write-ahead: intent and SUBMITTED are stored before the broker's answer.
    assert topics.index("trueup:Order.Intended") < topics.index("trueup:Order.Submitted")
    assert topics.index("trueup:Order.Submitted") < topics.index("trueup:Order.BrokerIdLinked")
    ack = next(
        e
        for e in ledger.events()
        if e.topic == "trueup:BrokerMessage.Received" and e.event.kind == "submit_ack"
    )
    assert '"client_order_id":"A1"' in ack.event.payload


def test_submitting_an_existing_client_id_sends_nothing(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    first = ledger.submit(request("A1"), broker)
    again = ledger.submit(request("A1", quantity=Decimal(99)), broker)
    assert again.client_order_id == first.client_order_id
    assert again.quantity == Decimal(5)
    assert [o.client_order_id for o in broker.orders()] == ["A1"]


def test_client_id_must_fit_every_broker_field(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    with pytest.raises(InvalidReport, match="20 characters"):
        ledger.submit(request("TOO-LONG-AND-NOT_ALNUM-ID"), broker)
    assert broker.orders() == []


def test_gate_refuses_before_startup_and_nothing_is_sent(ledger: Ledger, broker: PaperBroker) -> None:
    ledger.begin_startup(ACCOUNT)
    with pytest.raises(NotReadyError, match="RECONCILING"):
        ledger.submit(request("A1"), broker)
    assert broker.orders() == []
    assert ledger.order(ACCOUNT, "A1") is None


def test_broker_rejection_is_stored_as_rejected(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    view = ledger.submit(request("R1", symbol="NOPE"), broker)
    assert view.status is OrderStatus.REJECTED


def test_unknown_outcome_stays_in_flight_and_recovery_resolves_it(
    ledger: Ledger, broker: PaperBroker
) -> None:
    started(ledger, broker)
    broker.outage(3)
    views = [ledger.submit(request(f"U{i}"), broker) for i in range(6)]
    assert {v.status for v in views} == {OrderStatus.SUBMITTED}
    for _ in range(4):
        broker.step()
    report = asyncio.run(Submitter(ledger, broker).recover(ACCOUNT))
    placed = {o.client_order_id for o in broker.orders()}
    assert set(report.found) == placed
    assert set(report.abandoned) == {f"U{i}" for i in range(6)} - placed
    for cid in report.abandoned:
        order = ledger.order(ACCOUNT, cid)
        assert order is not None
        assert order.status is OrderStatus.REJECTED
    # Nothing was re-sent: each client id at most once at the broker.
    assert len(broker.orders()) == len(placed)


def test_reduce_only_checks_the_brokers_live_position(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    ledger.submit(request("B1", quantity=Decimal(4)), broker)
    for _ in range(5):
        broker.step()
    asyncio.run(drain(ledger, broker))
    ledger.begin_startup(ACCOUNT)  # new orders refused, reduce-only still allowed
    with pytest.raises(NotReadyError, match="does not reduce"):
        ledger.submit(request("B2", side="SELL", quantity=Decimal(9), reduce_only=True), broker)
    view = ledger.submit(request("B3", side="SELL", quantity=Decimal(4), reduce_only=True), broker)
    assert view.status is not OrderStatus.INTENDED


def test_cancel_passes_the_gate(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    ledger.submit(request("L1", order_type=OrderType.LIMIT, limit_price=Decimal(1)), broker)
    ledger.begin_startup(ACCOUNT)
    asyncio.run(Submitter(ledger, broker).cancel(ACCOUNT, "L1"))
    asyncio.run(drain(ledger, broker))
    order = ledger.order(ACCOUNT, "L1")
    assert order is not None
    assert order.status is OrderStatus.CANCELED


class DayScopedBroker(FakeBroker):
    """A broker whose lists start at `window_start` (Kite's trading day, IB Gateway's midnight)."""

    def __init__(self, window_start: datetime) -> None:
        super().__init__()
        self.window_start = window_start

    def history_start(self, now: datetime) -> datetime:  # the window is fixed here
        return self.window_start


@pytest.mark.parametrize(
    ("window", "outcome"), [("after the send", "unresolved"), ("before it", "abandoned")]
)
def test_recovery_never_closes_an_order_a_day_scoped_broker_can_no_longer_see(
    window: str, outcome: str
) -> None:
    # Sent yesterday, crashed before the answer, restarted today: the broker's lists start
    # today, so not finding the order proves nothing (it may have filled). Only an order sent
    # inside the window may be closed as never placed.
    sent_at = at(100)
    with Ledger.open(f"memory://{unique_cid('day')}", clock=lambda: sent_at) as ledger:
        ledger.intend(ACCOUNT, "N1", "AAPL", "BUY", Decimal(5))
        ledger.mark_submitted(ACCOUNT, "N1")
        start = at(200) if window == "after the send" else at(50)
        broker = DayScopedBroker(start)
        recovery, _ = asyncio.run(start_session(ledger, broker, ACCOUNT))  # type: ignore[arg-type]
        order = ledger.order(ACCOUNT, "N1")
        assert order is not None
        if outcome == "unresolved":
            assert (recovery.unresolved, recovery.abandoned) == (["N1"], [])
            assert order.status is OrderStatus.SUBMITTED  # not closed: its outcome is unknown
            state, reasons, _ = ledger.gate_details(ACCOUNT)
            assert state is GateState.BLOCKED
            assert reasons == ("submit N1 awaiting broker lookup",)
        else:
            assert (recovery.unresolved, recovery.abandoned) == ([], ["N1"])
            assert order.status is OrderStatus.REJECTED


# -- the event loop ---------------------------------------------------------------------------
# Regression: `Submitter.submit` called the synchronous ledger (intent, SUBMITTED, the
# acknowledgement: several fsync'd transactions) straight on the event loop, stalling the
# broker's stream and every other task while the disk worked.


class StoreCalls:
    """Records every store access made on a given thread (the event loop's)."""

    def __init__(self) -> None:
        self.loop_thread: int | None = None
        self.on_loop: list[str] = []
        self.elsewhere = 0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self.loop_thread:
                self.on_loop.append(name)
            else:
                self.elsewhere += 1
            return fn(*args, **kwargs)

        return recorded


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ledger, StoreCalls]]:
    calls = StoreCalls()
    with Ledger.open(f"sqlite:///{tmp_path / 'books.db'}") as opened:
        store = opened.store
        # Every way the ledger reaches the database: aggregate reads, batched reads, SQL
        # transactions (projections, queries), event writes and log reads.
        for name in ("aggregate", "stored_events", "reading", "transaction"):
            monkeypatch.setattr(store, name, calls.wrap(name, getattr(store, name)))
        monkeypatch.setattr(store.app.events, "put", calls.wrap("events.put", store.app.events.put))
        recorder = store.app.recorder
        for name in ("select_notifications", "max_notification_id"):
            monkeypatch.setattr(recorder, name, calls.wrap(name, getattr(recorder, name)))
        yield opened, calls


def test_submit_cancel_and_startup_run_every_ledger_call_off_the_loop(
    watched: tuple[Ledger, StoreCalls], broker: PaperBroker
) -> None:
    books, calls = watched

    async def session() -> None:
        calls.loop_thread = threading.get_ident()
        recovery, result = await start_session(books, broker, ACCOUNT)
        assert recovery.unresolved == []
        assert result.gate is not None
        submitter = Submitter(books, broker)
        cid = unique_cid("thr")
        order = await submitter.submit(request(cid))
        assert order.status is not OrderStatus.INTENDED
        again = await submitter.submit(request(cid))  # already recorded: nothing sent
        assert again.client_order_id == cid
        limit = unique_cid("lim")
        await submitter.submit(request(limit, order_type=OrderType.LIMIT, limit_price=Decimal(1)))
        await submitter.cancel(ACCOUNT, limit)
        await submitter.recover(ACCOUNT)
        await books.submit_async(request(unique_cid("asy")), broker)

    asyncio.run(session())
    # Check: the store was used (the wrappers see it), never from the loop's thread.
    assert calls.elsewhere > 0
    assert calls.on_loop == []


def test_the_guard_sees_a_ledger_call_made_on_the_loop(watched: tuple[Ledger, StoreCalls]) -> None:
    books, calls = watched

    async def blocking_on_the_loop() -> None:
        calls.loop_thread = threading.get_ident()
        books.order(ACCOUNT, "NOPE")  # what the submit path must never do

    asyncio.run(blocking_on_the_loop())
    # Check: the guard above is not vacuous.
    assert calls.on_loop == ["aggregate"]


def test_recovery_books_the_brokers_lookup_answer_verbatim(ledger: Ledger, broker: PaperBroker) -> None:
    started(ledger, broker)
    for cid in ("F1", "N1"):  # write-ahead of two orders; only F1 reaches the broker
        ledger.intend(ACCOUNT, cid, "AAPL", "BUY", Decimal(5))
        ledger.mark_submitted(ACCOUNT, cid)
    asyncio.run(broker.submit(request("F1")))  # the acknowledgement is lost: a crash here
    found = asyncio.run(broker.lookup_answer(ACCOUNT, "F1"))
    report = asyncio.run(Submitter(ledger, broker).recover(ACCOUNT))
    assert (report.found, report.abandoned) == (["F1"], ["N1"])
    lookups = [e for e in ledger.events() if getattr(e.event, "kind", "") == "lookup"]
    assert found.raw is not None
    # The paper broker's own body (before: trueup's translation of it), then its "none".
    assert [e.event.payload for e in lookups] == [found.raw.payload, "null"]
    order = ledger.order(ACCOUNT, "F1")
    assert order is not None
    assert order.broker_order_ids == (found.report.broker_order_id,)  # type: ignore[union-attr]
    closed = next(e.position for e in ledger.events() if e.topic == "trueup:Order.Abandoned")
    assert lookups[1].position < closed  # the broker's word first, then what is concluded from it
