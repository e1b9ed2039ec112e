"""Fault-injection soak: many orders through the paper broker with every kind of fault.

Callbacks are dropped, duplicated, delayed and reordered at high rates; queries fail in
outages (submits during them have an unknown outcome); the stream disconnects; orders are
placed by hand at the broker and positions shifted behind the engine's back. At the end,
after recovery of unknown submits and one reconciliation, the books must equal the
paper broker exactly, and every injected fault must be explained by a stored event.
`make test` runs a few hundred orders; `make soak` runs thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from decimal import Decimal
from pathlib import Path

import pytest

from trueup import Ledger, NotReadyError
from trueup.adapters.base import OrderRequest, OrderType
from trueup.adapters.paper.broker import PaperBroker
from trueup.adapters.paper.faults import Fault, FaultKind, FaultPlan
from trueup.demo import ACCOUNT, SYMBOLS, compare, drain, reconcile
from trueup.domain.status import Side
from trueup.submission import Submitter, start_session

PLAN = FaultPlan(drop=0.2, duplicate=0.2, delay=0.15, reorder=0.15)


async def session(ledger: Ledger, broker: PaperBroker, orders: int, seed: int) -> None:
    rng = random.Random(seed)
    await start_session(ledger, broker, ACCOUNT)
    for index in range(orders):
        if index % 97 == 13:
            broker.outage(rng.randint(1, 3))
        if index % 89 == 41:
            broker.disconnect()
        if index % 83 == 7:
            broker.manual_order(rng.choice(SYMBOLS), rng.choice(list(Side)), Decimal(rng.randint(1, 9)))
        if index % 131 == 60:
            broker.shift_position(rng.choice(SYMBOLS), Decimal(rng.randint(-5, 5) or 1), Decimal(100))
        limit = rng.random() < 0.3
        request = OrderRequest(
            account=ACCOUNT,
            client_order_id=f"S{seed:03d}{index:08d}",
            symbol=rng.choice(SYMBOLS),
            side=rng.choice(list(Side)),
            quantity=Decimal(rng.randint(1, 30)),
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            limit_price=Decimal(100 + rng.randint(-3, 3)) if limit else None,
        )
        # The gate may close on a discrepancy (an orphan quarantines its symbol): refusing
        # then is the right answer, and the broker never sees the order.
        with contextlib.suppress(NotReadyError):
            await ledger.submit_async(request, broker)
        broker.step()
        await drain(ledger, broker)
        if index % 25 == 24:
            await reconcile(ledger, broker)
    for _ in range(40):  # let working orders finish, stream on
        broker.step()
        await drain(ledger, broker)
    # Unknown submits (outages) are looked up by client id, then one reconciliation.
    await Submitter(ledger, broker).recover(ACCOUNT)
    await reconcile(ledger, broker)


def explained(ledger: Ledger, fault: Fault, topics_by_broker_id: dict[str, set[str]]) -> bool:  # noqa: PLR0911
    """Whether a stored event shows how the books absorbed this fault."""
    found = ledger.discrepancies(ACCOUNT, include_resolved=True)
    kinds = {(d.kind, d.key) for d in found}
    if fault.kind is FaultKind.MANUAL_ORDER:
        return ("ORPHAN_ORDER", f"~{fault.order_id}") in kinds
    if fault.kind is FaultKind.SHIFT_POSITION:
        return any(k in {"POSITION_MISMATCH", "MISSING_LOCAL_POSITION", "NAKED_POSITION"} for k, _ in kinds)
    if fault.kind is FaultKind.OUTAGE:
        # A query failed (STALE_DATA), or a submit's ack was lost and its order was then
        # linked from the broker (lookup or snapshot).
        if fault.order_id:
            return "trueup:Order.BrokerIdLinked" in topics_by_broker_id.get(fault.order_id, set())
        return True  # a refused or lost submit: closed by recovery (checked by compare)
    if fault.kind is FaultKind.DISCONNECT:
        return any(
            e.topic == "trueup:BrokerMessage.Received" and e.event.source == "snapshot"
            for e in ledger.events()
        )
    if fault.exec_id:
        # The execution is booked exactly once whatever happened to its callback.
        return any(
            e.topic in {"trueup:Order.FillBooked", "trueup:Order.FillCorrected"}
            and e.event.exec_id == fault.exec_id
            for e in ledger.events()
        )
    if fault.order_id:
        return bool(topics_by_broker_id.get(fault.order_id))
    return False


def soak(tmp_path: Path, orders: int, seed: int) -> None:
    broker = PaperBroker(tmp_path / "paper.db", account=ACCOUNT, seed=seed, faults=PLAN)
    try:
        with Ledger.open(f"sqlite:///{tmp_path / 'books.db'}") as ledger:
            asyncio.run(session(ledger, broker, orders, seed))
            assert compare(ledger, broker) == []
            # Which events each broker order caused: for explaining faults by order id.
            aggregate_of: dict[str, set[str]] = {}
            by_broker: dict[str, set[str]] = {}
            for logged in ledger.events():
                event = logged.event
                if logged.topic == "trueup:Order.BrokerIdLinked":
                    aggregate_of.setdefault(str(event.originator_id), set()).add(event.broker_order_id)
                for broker_id in aggregate_of.get(str(event.originator_id), ()):
                    by_broker.setdefault(broker_id, set()).add(logged.topic)
                if logged.topic == "trueup:Order.BrokerIdLinked":
                    by_broker.setdefault(event.broker_order_id, set()).add(logged.topic)
            faults = broker.faults()
            assert {f.kind for f in faults} >= {
                FaultKind.DROP,
                FaultKind.DUPLICATE,
                FaultKind.DELAY,
                FaultKind.REORDER,
            }
            unexplained = [f for f in faults if not explained(ledger, f, by_broker)]
            assert unexplained == []
    finally:
        broker.close()


def test_fault_soak_small(tmp_path: Path) -> None:
    soak(tmp_path, orders=300, seed=11)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fault_soak_thousands(tmp_path: Path, seed: int) -> None:
    soak(tmp_path, orders=3000, seed=seed)
