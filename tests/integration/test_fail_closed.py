"""Fail closed under broker faults: the gate, the service loop, and the snapshot's cut.

Each case is a way a broker can fail (hang, garbage, an SDK's own CancelledError, a
stream that dies) or a way the books can move under a reconciliation (a fill booked by
another process); each asserts the gate stays shut and nothing is concluded from what
the broker did not say. Real ledgers (memory, SQLite, PostgreSQL) and `FakeBroker`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.builders import ACCOUNT, D, order_report, unique_cid
from tests.conftest import make_store_url
from tests.fakes import FakeBroker, SubmitOutcome
from tests.integration.test_service import eventually, running, scenario
from trueup import Ledger, NotReadyError, OrderStatus
from trueup.adapters.base import OrderRequest, snapshot_or_unknown
from trueup.domain.gate import GateState
from trueup.domain.reports import BrokerSnapshot, FillReport, PositionReport
from trueup.domain.status import Side
from trueup.service import ReconciliationService
from trueup.submission import Submitter, reconcile_from, start_accounts, start_session


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('fc')}") as opened:
        yield opened


def sell(cid: str, qty: int, *, reduce_only: bool = True) -> OrderRequest:
    return OrderRequest(
        account=ACCOUNT,
        client_order_id=cid,
        symbol="AAPL",
        side=Side.SELL,
        quantity=D(qty),
        reduce_only=reduce_only,
    )


def stale_keys(ledger: Ledger) -> list[str]:
    return [d.key for d in ledger.discrepancies(ACCOUNT) if d.kind == "STALE_DATA"]


# -- the gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("together", [False, True], ids=["one-after-the-other", "at-once"])
def test_reduce_only_capacity_is_the_live_position_less_our_working_orders(
    ledger: Ledger, together: bool
) -> None:
    # RECONCILING, the broker long 4 AAPL: one reduce-only SELL 4 may go, a second would flip it.
    broker = FakeBroker()
    broker.set_position(ACCOUNT, "AAPL", D(4), D(100))
    ledger.begin_startup(ACCOUNT)
    submitter = Submitter(ledger, broker)

    async def body() -> list[object]:
        if together:
            return list(
                await asyncio.gather(
                    *(submitter.submit(sell(f"R{i}", 4)) for i in (1, 2)), return_exceptions=True
                )
            )
        first = await submitter.submit(sell("R1", 4))
        try:
            second: object = await submitter.submit(sell("R2", 4))
        except NotReadyError as e:
            second = e
        return [first, second]

    outcomes = asyncio.run(body())
    refused = [o for o in outcomes if isinstance(o, NotReadyError)]
    assert len(refused) == 1, outcomes
    assert "leaves 0" in str(refused[0])
    assert len(broker.submit_calls) == 1
    # What is left after a partial one: SELL 3 working, so 1 more may go, 2 may not.
    with pytest.raises(NotReadyError, match="leaves 0"):
        ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(1), reduce_only=True, live_position=D(4))


def test_reduce_only_counts_only_what_working_orders_have_left_to_fill(ledger: Ledger) -> None:
    ledger.begin_startup(ACCOUNT)
    ledger.intend(ACCOUNT, "W1", "AAPL", "SELL", D(3))
    ledger.ingest(_report("W1", D(3), filled=D(2)))  # 1 left to fill
    ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(2), reduce_only=True, live_position=D(3))
    with pytest.raises(NotReadyError):
        ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(3), reduce_only=True, live_position=D(3))
    # A BUY working does not use a long's reduce-only capacity.
    ledger.intend(ACCOUNT, "W2", "AAPL", "BUY", D(5))
    ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(2), reduce_only=True, live_position=D(3))


class _Hang:
    async def __call__(self, *_: object) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("adapter bug"), asyncio.CancelledError(), "hang", "garbage"],
    ids=["unexpected-error", "sdk-cancelled", "hang", "garbage"],
)
def test_a_recovery_lookup_that_does_not_answer_cleanly_leaves_the_order_unresolved_and_blocked(
    ledger: Ledger, failure: object
) -> None:
    broker = FakeBroker()
    broker.submit_outcome = SubmitOutcome.ACK_LOST
    cid = unique_cid("U")
    broker.unlisted.add(cid)  # only a lookup could tell

    async def body() -> None:
        await start_session(ledger, broker, ACCOUNT)
        await ledger.submit_async(
            OrderRequest(account=ACCOUNT, client_order_id=cid, symbol="AAPL", side=Side.BUY, quantity=D(1)),
            broker,
        )
        if failure == "hang":
            broker.lookup = _Hang()  # type: ignore[method-assign,assignment]
        elif failure == "garbage":

            async def garbage(*_: object) -> object:
                return {"status": "filled"}

            broker.lookup = garbage  # type: ignore[method-assign,assignment]
        else:
            broker.fail_lookup = failure  # type: ignore[assignment]

        async def reconcile(accounts: Any) -> dict[str, Any]:
            return {a: await reconcile_from(ledger, broker, a, timeout=0.2) for a in accounts}

        outcome = (await start_accounts(ledger, broker, [ACCOUNT], reconcile=reconcile, timeout=0.2))[ACCOUNT]
        assert outcome.recovery is not None
        assert outcome.recovery.unresolved == [cid]

    scenario(body)
    state, reasons, _ = ledger.gate_details(ACCOUNT)
    assert state is GateState.BLOCKED
    assert any(cid in r for r in reasons)
    assert ledger.order(ACCOUNT, cid).status is OrderStatus.SUBMITTED  # type: ignore[union-attr]


# -- the service loop ------------------------------------------------------------------------------


def test_a_hung_snapshot_blocks_the_gate_and_the_stream_keeps_booking(ledger: Ledger) -> None:
    broker = FakeBroker()
    service = ReconciliationService(
        ledger, broker, accounts=[ACCOUNT], period=0.05, broker_timeout=0.3, stream_wait=600
    )
    cid = unique_cid("H")

    async def body() -> None:
        await service.start()
        assert ledger.gate(ACCOUNT) is GateState.READY
        ledger.intend(ACCOUNT, cid, "AAPL", "BUY", D(10))
        broker.place(ACCOUNT, cid, "AAPL", "BUY", D(10))
        broker.hang_snapshot = True
        async with running(service) as task:
            await eventually(lambda: ledger.gate(ACCOUNT) is GateState.BLOCKED, "gate BLOCKED", task)
            with pytest.raises(NotReadyError):
                ledger.check_new_order(ACCOUNT, "TSLA", "BUY", D(1))
            # The broker fills the order while its snapshots hang: the stream is booked.
            broker.fill(ACCOUNT, cid, D(10), D(101), stream=True)
            await eventually(
                lambda: ledger.order(ACCOUNT, cid).status is OrderStatus.FILLED, "fill booked", task
            )  # type: ignore[union-attr]
            assert ledger.gate(ACCOUNT) is GateState.BLOCKED
            assert any("no answer within" in d.detail for d in ledger.discrepancies(ACCOUNT))
            broker.hang_snapshot = False  # the broker answers again
            await eventually(lambda: ledger.gate(ACCOUNT) is GateState.READY, "gate READY", task)

    scenario(body)
    assert service.counters.errors >= 1


def _snapshot(**parts: Any) -> BrokerSnapshot:
    fields: dict[str, Any] = {
        "account": ACCOUNT,
        "as_of": datetime.now(UTC),
        "orders": [],
        "fills": [],
        "positions": [],
    }
    fields.update(parts)
    snapshot = BrokerSnapshot(account=ACCOUNT, as_of=datetime.now(UTC), orders=[], fills=[], positions=[])
    for name, value in fields.items():
        msgspec.structs.force_setattr(snapshot, name, value)
    return snapshot


GARBAGE = [
    "none",
    "a-dict",
    "positions-a-string",
    "garbage-in-positions",
    "fill-in-positions",
    "another-accounts-position",
    "as_of-a-string",
]


def _garbage(kind: str) -> object:  # noqa: PLR0911 - one answer per kind
    now = datetime.now(UTC)
    if kind == "none":
        return None
    if kind == "a-dict":
        return {"positions": []}
    if kind == "positions-a-string":
        return _snapshot(positions="flat")
    if kind == "garbage-in-positions":
        return _snapshot(positions=["AAPL 10"])
    if kind == "fill-in-positions":
        fill = FillReport(ACCOUNT, "X1", "B1", "E1", "AAPL", Side.BUY, D(1), D(1), now)
        return _snapshot(positions=[fill])
    if kind == "another-accounts-position":
        return _snapshot(positions=[PositionReport("DU999", "AAPL", D(0), D(0), now)])
    return _snapshot(as_of="yesterday")


@pytest.mark.parametrize("kind", GARBAGE)
def test_a_snapshot_that_is_not_a_usable_snapshot_is_stale_data_and_blocks_the_gate(
    ledger: Ledger, kind: str
) -> None:
    broker = FakeBroker()
    broker.set_position(ACCOUNT, "AAPL", D(10), D(100))
    ledger.intend(ACCOUNT, "P1", "AAPL", "BUY", D(10))
    service = ReconciliationService(ledger, broker, accounts=[ACCOUNT], period=0.05)

    async def body() -> None:
        await service.start()
        broker.garbage_snapshot, broker.snapshot_answer = True, _garbage(kind)
        async with running(service) as task:
            await eventually(lambda: ledger.gate(ACCOUNT) is GateState.BLOCKED, "gate BLOCKED", task)
            cycles = service.counters.cycles + 3
            await eventually(lambda: service.counters.cycles >= cycles, "3 more cycles", task)
            assert ledger.gate(ACCOUNT) is GateState.BLOCKED
            broker.garbage_snapshot = False
            await eventually(lambda: ledger.gate(ACCOUNT) is GateState.READY, "gate READY", task)

    scenario(body)
    # Never read as flat: the position was repaired to the broker's 10 once, never to 0.
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(10)
    assert service.counters.failed_cycles >= 3


def test_snapshot_or_unknown_is_the_one_check_and_keeps_what_is_usable() -> None:
    now = datetime.now(UTC)
    broker = FakeBroker()
    broker.garbage_snapshot = True
    broker.snapshot_answer = _snapshot(positions=["junk"], failures={"fills": "HTTP 503"}, fills=None)
    snapshot = asyncio.run(snapshot_or_unknown(broker, ACCOUNT, now))
    assert snapshot.orders == []
    assert snapshot.positions is None
    assert "hold a str" in snapshot.failures["positions"]
    assert snapshot.failures["fills"] == "HTTP 503"


@pytest.mark.parametrize("where", ["snapshot", "stream"])
def test_a_cancelled_error_raised_by_the_broker_does_not_end_the_service(ledger: Ledger, where: str) -> None:
    broker = FakeBroker()
    service = ReconciliationService(ledger, broker, accounts=[ACCOUNT], period=0.05)
    cid = unique_cid("C")

    async def body() -> None:
        await service.start()
        if where == "snapshot":
            broker.fail_snapshot = asyncio.CancelledError()
        else:
            broker.stream_failures = [asyncio.CancelledError(), asyncio.CancelledError()]
        async with running(service) as task:
            if where == "snapshot":
                await eventually(lambda: ledger.gate(ACCOUNT) is GateState.BLOCKED, "gate BLOCKED", task)
                broker.fail_snapshot = None
                await eventually(lambda: ledger.gate(ACCOUNT) is GateState.READY, "gate READY", task)
            else:
                await eventually(
                    lambda: service.counters.stream_restarts >= 2, "stream restarted twice", task
                )
            # The stream still books what the broker pushes.
            ledger.intend(ACCOUNT, cid, "AAPL", "BUY", D(1))
            broker.place(ACCOUNT, cid, "AAPL", "BUY", D(1), stream=True)
            await eventually(
                lambda: ledger.order(ACCOUNT, cid).status is OrderStatus.ACCEPTED, "streamed", task
            )  # type: ignore[union-attr]
            assert not task.done()

    scenario(body)


def test_an_account_without_a_live_stream_is_blocked_after_the_grace_time(ledger: Ledger) -> None:
    broker = FakeBroker()
    # Every subscription fails: the stream is never live.
    broker.stream_failures = [ConnectionError("stream refused")] * 10_000
    service = ReconciliationService(ledger, broker, accounts=[ACCOUNT], period=0.05, stream_grace=0.2)

    async def body() -> None:
        await service.start()
        async with running(service) as task:
            await eventually(lambda: ledger.gate(ACCOUNT) is GateState.BLOCKED, "gate BLOCKED", task)
            _, reasons, _ = ledger.gate_details(ACCOUNT)
            assert any("no live broker stream" in r for r in reasons)
            assert stale_keys(ledger) == [ACCOUNT]  # one open STALE_DATA, however many cycles
            broker.stream_failures = []  # the stream comes back
            await eventually(lambda: ledger.gate(ACCOUNT) is GateState.READY, "gate READY", task)

    scenario(body)
    assert service.counters.stream_restarts >= 1


# -- across processes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_snapshot_older_than_a_fill_another_process_booked_never_repairs_the_position(
    tmp_path: Path, kind: str
) -> None:
    url = make_store_url(kind, tmp_path)
    broker = FakeBroker()
    with Ledger.open(url) as here, Ledger.open(url) as there:
        here.intend(ACCOUNT, "X1", "AAPL", "BUY", D(10))
        broker.place(ACCOUNT, "X1", "AAPL", "BUY", D(10))
        broker.fill(ACCOUNT, "X1", D(4), D(100), stream=False)
        asyncio.run(reconcile_from(here, broker, ACCOUNT))  # both see 4 filled
        assert here.positions(ACCOUNT)[0].qty == D(4)

        cut = here.last_position()
        old = asyncio.run(broker.snapshot(ACCOUNT))  # the broker says 4 ...
        broker.fill(ACCOUNT, "X1", D(6), D(101), stream=False)
        there.ingest(broker.fills[-1])  # ... and another process books the next 6
        there.ingest(broker.orders[ACCOUNT, "X1"])

        result = here.reconcile(old, cut=cut)
        assert result.retake
        assert result.position_syncs == []
        assert here.positions(ACCOUNT)[0].qty == D(10)
        assert here.order(ACCOUNT, "X1").filled_qty == D(10)  # type: ignore[union-attr]
        # Retaken, the snapshot agrees: nothing to repair, nothing raised.
        again = asyncio.run(reconcile_from(here, broker, ACCOUNT))
        assert not again.retake
        assert again.position_syncs == []
        assert [d.kind for d in here.discrepancies(ACCOUNT, include_resolved=True)] == []


def _report(cid: str, qty: Decimal, *, filled: Decimal) -> Any:
    return order_report(
        OrderStatus.PARTIALLY_FILLED,
        cid=cid,
        broker_id=f"B{cid}",
        qty=int(qty),
        filled=int(filled),
        avg=100,
        side=Side.SELL,
    )
