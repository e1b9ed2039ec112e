"""The paper broker: determinism, persistence, duplicate refusal, every fault kind, and the books.

Everything runs against real SQLite files in tmp_path; the end-to-end tests drive a real
`trueup.Ledger` on a memory store with the broker's own stream and snapshot.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trueup import BrokerQueryError, ConfigError, Ledger, NotReadyError, OrderReport, OrderStatus, Side
from trueup.adapters.base import (
    BrokerClient,
    OrderRequest,
    OrderType,
    RawMessage,
    Reconnected,
    StreamItem,
    SubmitRejected,
    SubmitUncertain,
)
from trueup.adapters.paper.broker import FaultKind, FaultPlan, PaperBroker
from trueup.submission import start_session

ACCOUNT = "PAPER"
D = Decimal
REPO = Path(__file__).resolve().parents[2]
ALL_FAULTS = FaultPlan(drop=0.15, duplicate=0.15, delay=0.15, reorder=0.15)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def market(cid: str, symbol: str = "AAPL", side: Side = Side.BUY, qty: int | str = 10) -> OrderRequest:
    return OrderRequest(account=ACCOUNT, client_order_id=cid, symbol=symbol, side=side, quantity=D(qty))


def limit(cid: str, price: str, symbol: str = "MSFT", side: Side = Side.SELL, qty: int = 7) -> OrderRequest:
    return OrderRequest(
        account=ACCOUNT,
        client_order_id=cid,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        order_type=OrderType.LIMIT,
        limit_price=D(price),
    )


async def drain(broker: PaperBroker) -> list[StreamItem]:
    """Every stream item deliverable now."""
    return [item async for item in broker.stream(follow=False)]


def payloads(items: list[StreamItem]) -> list[str]:
    return [item.payload for item in items if isinstance(item, RawMessage)]


def open_broker(path: Path, seed: int = 7, faults: FaultPlan | None = None) -> PaperBroker:
    return PaperBroker(path, account=ACCOUNT, seed=seed, faults=faults)


# A fixed session: submits of every kind, steps, drains, a cancel and the injected faults.
SCRIPT_LENGTH = 24


async def play(broker: PaperBroker, start: int = 0, stop: int = SCRIPT_LENGTH) -> list[Any]:
    """Run steps [start, stop) of the script; return everything observable, in order."""
    seen: list[Any] = []
    for i in range(start, stop):
        if i < 12:
            request = (
                limit(f"L{i}", f"{100 + (i % 3) - 1}.00", side=(Side.BUY, Side.SELL)[i % 2])
                if i % 4 == 3
                else market(f"M{i}", ("AAPL", "MSFT", "TSLA")[i % 3], (Side.BUY, Side.SELL)[i % 2], 3 + i)
            )
            ack = await broker.submit(request)
            seen.append(("ack", ack.broker_order_id, ack.raw))
        if i == 5:
            seen.append(("manual", broker.manual_order("TSLA", Side.SELL, D(4))))
        if i == 7:
            seen.append(("shift", broker.shift_position("MSFT", D(-2), D("101.5"))))
        if i == 9:
            await broker.cancel(ACCOUNT, "L3", None)
        if i == 14:
            broker.disconnect()
        seen.append(("step", broker.step()))
        seen.extend(("item", item) for item in await drain(broker))
    return seen


def truth(broker: PaperBroker) -> dict[str, Any]:
    return {
        "orders": broker.orders(),
        "fills": broker.fills(),
        "positions": broker.positions(),
        "faults": broker.faults(),
        "step": broker.current_step,
        "prices": {s: broker.price(s) for s in ("AAPL", "MSFT", "TSLA")},
    }


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_and_calls_give_identical_orders_fills_and_callbacks(tmp_path: Path) -> None:
    # Arrange
    a = open_broker(tmp_path / "a.db", seed=7, faults=ALL_FAULTS)
    b = open_broker(tmp_path / "b.db", seed=7, faults=ALL_FAULTS)

    # Act
    seen_a, seen_b = run(play(a)), run(play(b))

    # Assert: every ack, stream item (payload, kind, translator), order, fill, position, fault
    assert seen_a == seen_b
    assert truth(a) == truth(b)
    assert len(truth(a)["fills"]) > 10
    assert {f.kind for f in a.faults()} >= {
        FaultKind.DROP,
        FaultKind.DUPLICATE,
        FaultKind.DELAY,
        FaultKind.REORDER,
        FaultKind.DISCONNECT,
        FaultKind.MANUAL_ORDER,
        FaultKind.SHIFT_POSITION,
    }
    a.close()
    b.close()


def test_another_seed_gives_another_market(tmp_path: Path) -> None:
    a = open_broker(tmp_path / "a.db", seed=7)
    b = open_broker(tmp_path / "b.db", seed=8)
    run(play(a))
    run(play(b))
    assert [(f.qty, f.price) for f in a.fills()] != [(f.qty, f.price) for f in b.fills()]


def test_faults_never_change_the_market(tmp_path: Path) -> None:
    # The fault dice are a separate generator: prices and executions are the same with
    # or without faults; only what the stream delivers differs.
    calm = open_broker(tmp_path / "calm.db", seed=3)
    rough = open_broker(tmp_path / "rough.db", seed=3, faults=ALL_FAULTS)
    calm_seen, rough_seen = run(play(calm)), run(play(rough))

    assert calm.orders() == rough.orders()
    assert calm.fills() == rough.fills()
    assert calm.positions() == rough.positions()
    assert [s for s in calm_seen if s[0] == "item"] != [s for s in rough_seen if s[0] == "item"]
    assert not [f for f in calm.faults() if f.kind in {FaultKind.DROP, FaultKind.DUPLICATE}]


def test_market_orders_fill_sometimes_in_parts_and_far_limits_wait(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db", seed=5)

    async def session() -> None:
        for i in range(16):
            await broker.submit(market(f"M{i}", qty=20))
        await broker.submit(limit("FAR", "1.00", symbol="AAPL", side=Side.BUY))
        for _ in range(15):
            broker.step()

    run(session())
    orders = {o.client_order_id: o for o in broker.orders()}
    fills = broker.fills()
    per_order = Counter(f.client_order_id for f in fills)
    assert all(orders[f"M{i}"].status is OrderStatus.FILLED for i in range(16))
    assert all(sum(f.qty for f in fills if f.client_order_id == f"M{i}") == D(20) for i in range(16))
    assert max(per_order.values()) > 1, "some market order should have filled in parts"
    assert orders["FAR"].status is OrderStatus.ACCEPTED
    assert orders["FAR"].filled_qty == 0
    assert all(f.price == f.price.quantize(D("0.01")) for f in fills)  # integer ticks


# --- persistence ------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 6, 14, 20])
def test_reopening_mid_session_continues_exactly_like_an_uninterrupted_run(tmp_path: Path, cut: int) -> None:
    # Arrange: one uninterrupted run
    whole = open_broker(tmp_path / "whole.db", seed=11, faults=ALL_FAULTS)
    whole_seen = run(play(whole))

    # Act: the same calls, with the file closed and reopened (faults=None keeps the plan)
    first = open_broker(tmp_path / "cut.db", seed=11, faults=ALL_FAULTS)
    seen = run(play(first, 0, cut))
    first.close()
    second = open_broker(tmp_path / "cut.db", seed=11)
    seen += run(play(second, cut))

    # Assert
    assert seen == whole_seen
    assert truth(second) == truth(whole)


def test_an_accepted_order_is_in_the_file_before_submit_returns(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    ack = run(broker.submit(market("A1")))

    # Another connection (as another process would) sees it at once.
    other = open_broker(tmp_path / "p.db")
    found = run(other.lookup(ACCOUNT, "A1"))
    assert found is not None
    assert found.broker_order_id == ack.broker_order_id


def test_orders_survive_sigkill_at_any_moment(tmp_path: Path) -> None:
    # The broker lives in the engine's process: kill that process with SIGKILL right
    # after a submit returned, mid-session, and every acknowledged order is in the file.
    path = tmp_path / "p.db"
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from decimal import Decimal
        from trueup.adapters.base import OrderRequest
        from trueup.adapters.paper.broker import FaultPlan, PaperBroker
        broker = PaperBroker({str(path)!r}, seed=4, faults=FaultPlan(delay=0.5))
        async def main():
            for i in range(30):
                ack = await broker.submit(OrderRequest(account="PAPER", client_order_id=f"K{{i}}",
                    symbol="AAPL", side="BUY", quantity=Decimal(5)))
                print(ack.broker_order_id, flush=True)
                broker.step()
                if i == 17:
                    os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
        """
    )
    result = subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", child],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    acked = result.stdout.decode().split()
    assert len(acked) == 18

    broker = open_broker(tmp_path / "p.db", seed=4)
    assert [o.broker_order_id for o in broker.orders()] == acked
    assert broker.current_step == 18  # the 18th step() never ran
    # The file is consistent: every fill belongs to an order and no order is overfilled.
    for order in broker.orders():
        assert (
            sum(f.qty for f in broker.fills() if f.broker_order_id == order.broker_order_id)
            == order.filled_qty
        )
    # ... and it goes on trading.
    run(broker.submit(market("AFTER")))
    assert broker.step() == 19


def test_reopening_with_another_account_is_refused(tmp_path: Path) -> None:
    open_broker(tmp_path / "p.db").close()
    with pytest.raises(ConfigError, match="serves account 'PAPER'"):
        PaperBroker(tmp_path / "p.db", account="OTHER")


def test_a_closed_broker_says_so(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    broker.close()
    broker.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        broker.step()


# --- submit, lookup, cancel ---------------------------------------------------------------------


def test_duplicate_client_order_id_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    first = run(broker.submit(market("DUP1")))
    items_before = run(drain(broker))

    with pytest.raises(SubmitRejected, match="duplicate client_order_id 'DUP1'"):
        run(broker.submit(market("DUP1", symbol="TSLA", qty=99)))

    # Nothing created: one order, no callback, and the same after a reopen.
    assert [o.broker_order_id for o in broker.orders()] == [first.broker_order_id]
    assert run(drain(broker)) == []
    assert len(items_before) == 1
    broker.close()
    reopened = open_broker(tmp_path / "p.db")
    with pytest.raises(SubmitRejected, match="duplicate"):
        run(reopened.submit(market("DUP1")))
    assert len(reopened.orders()) == 1


def test_the_file_itself_refuses_a_second_order_with_one_client_id(tmp_path: Path) -> None:
    # The proof does not rest on the check in submit(): the UNIQUE index refuses it too.
    broker = open_broker(tmp_path / "p.db")
    run(broker.submit(market("U1")))
    conn = sqlite3.connect(tmp_path / "p.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO orders (id, client_order_id, symbol, side, qty, status, filled_qty, fill_cost, ts, "
            "created_step, manual) VALUES ('P9', 'U1', 'AAPL', 'buy', '1', 'new', '0', '0', 'x', 0, 0)"
        )
    conn.close()


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(market("has space"), id="client id with a space"),
        pytest.param(market("A" * 21), id="client id too long"),
        pytest.param(market("Q0", qty=0), id="zero quantity"),
        pytest.param(market("Q1", qty=-5), id="negative quantity"),
        pytest.param(
            OrderRequest(
                account=ACCOUNT,
                client_order_id="L0",
                symbol="AAPL",
                side=Side.BUY,
                quantity=D(1),
                order_type=OrderType.LIMIT,
            ),
            id="limit without a price",
        ),
        pytest.param(
            OrderRequest(
                account=ACCOUNT,
                client_order_id="M0",
                symbol="AAPL",
                side=Side.BUY,
                quantity=D(1),
                limit_price=D(1),
            ),
            id="market with a price",
        ),
        pytest.param(
            OrderRequest(
                account="ELSEWHERE", client_order_id="E0", symbol="AAPL", side=Side.BUY, quantity=D(1)
            ),
            id="another account",
        ),
    ],
)
def test_an_invalid_request_is_refused_and_stores_nothing(tmp_path: Path, request_: OrderRequest) -> None:
    broker = open_broker(tmp_path / "p.db")
    with pytest.raises(SubmitRejected, match="nothing placed"):
        run(broker.submit(request_))
    assert broker.orders() == []
    assert run(drain(broker)) == []


def test_an_unknown_symbol_is_stored_as_a_rejected_order_with_its_callback(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")

    ack = run(broker.submit(market("R1", symbol="NOPE")))

    assert ack.report is not None
    assert ack.report.status is OrderStatus.REJECTED
    (order,) = broker.orders()
    assert (order.client_order_id, order.status, order.raw_status) == ("R1", OrderStatus.REJECTED, "rejected")
    (item,) = run(drain(broker))
    assert isinstance(item, RawMessage)
    assert item.translate(item.payload) == [order]
    broker.step()
    assert broker.fills() == []


def test_ack_carries_the_raw_answer_and_its_report(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    ack = run(broker.submit(limit("L1", "99.95")))
    assert ack.broker_order_id == "P00000001"
    assert msgspec.json.decode(ack.raw)["client_order_id"] == "L1"
    assert ack.report == run(broker.lookup(ACCOUNT, "L1"))
    assert ack.report is not None
    assert (ack.report.status, ack.report.limit_price) == (OrderStatus.ACCEPTED, D("99.95"))


def test_lookup_returns_none_only_when_the_broker_has_no_such_order(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    run(broker.submit(market("A1")))
    assert run(broker.lookup(ACCOUNT, "NOPE")) is None
    assert run(broker.lookup(ACCOUNT, "A1")) is not None
    with pytest.raises(BrokerQueryError, match="serves account"):
        run(broker.lookup("OTHER", "A1"))
    with pytest.raises(BrokerQueryError, match="serves account"):
        run(broker.snapshot("OTHER"))


def test_cancel_working_order_then_nothing_more_executes(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    ack = run(broker.submit(limit("L1", "1.00", symbol="AAPL", side=Side.BUY)))
    run(drain(broker))

    run(broker.cancel(ACCOUNT, "L1", ack.broker_order_id))

    (item,) = run(drain(broker))
    assert isinstance(item, RawMessage)
    (report,) = item.translate(item.payload)
    assert isinstance(report, OrderReport)
    assert report.status is OrderStatus.CANCELED
    for _ in range(5):
        broker.step()
    assert broker.fills() == []
    # Cancelling a finished order changes nothing and says nothing; an unknown one raises.
    run(broker.cancel(ACCOUNT, "L1", None))
    assert run(drain(broker)) == []
    with pytest.raises(BrokerQueryError, match="no order"):
        run(broker.cancel(ACCOUNT, "GHOST", None))


def test_cancel_refuses_a_broker_id_of_another_client_id(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    first = run(broker.submit(limit("L1", "1.00", symbol="AAPL", side=Side.BUY)))
    run(broker.submit(limit("L2", "1.00", symbol="AAPL", side=Side.BUY)))
    with pytest.raises(BrokerQueryError, match="carries client_order_id 'L1'"):
        run(broker.cancel(ACCOUNT, "L2", first.broker_order_id))
    assert all(o.status is OrderStatus.ACCEPTED for o in broker.orders())


def test_paper_broker_meets_the_broker_client_protocol(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    assert isinstance(broker, BrokerClient)
    assert broker.name == "paper"


def test_a_following_stream_waits_for_callbacks_and_cancelling_it_loses_nothing(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")

    async def session() -> list[StreamItem]:
        stream = broker.stream(poll_interval=0.001)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), timeout=0.02)  # nothing yet: it waits
        await broker.submit(market("A1"))
        fresh = broker.stream(poll_interval=0.001)
        return [await asyncio.wait_for(anext(fresh), timeout=1)]

    (item,) = run(session())
    assert isinstance(item, RawMessage)
    assert item.kind == "order"


# --- faults ---------------------------------------------------------------------------------------


def fault_session(
    path: Path, plan: FaultPlan, seed: int = 21, orders: int = 10, steps: int = 12
) -> tuple[PaperBroker, list[tuple[int, StreamItem]]]:
    """Submit market orders, step and drain; return the broker and (step, item) delivered."""
    broker = open_broker(path, seed=seed, faults=plan)
    delivered: list[tuple[int, StreamItem]] = []

    async def session() -> None:
        for i in range(orders):
            await broker.submit(
                market(f"F{i}", ("AAPL", "MSFT", "TSLA")[i % 3], (Side.BUY, Side.SELL)[i % 2], 4 + i)
            )
        for _ in range(steps):
            step = broker.step()
            delivered.extend((step, item) for item in await drain(broker))

    run(session())
    return broker, delivered


def fill_ids(items: list[tuple[int, StreamItem]]) -> list[str]:
    return [
        msgspec.json.decode(item.payload)["exec_id"]
        for _, item in items
        if isinstance(item, RawMessage) and item.kind == "fill"
    ]


def test_drop_a_callback_is_never_delivered_but_is_in_the_snapshot(tmp_path: Path) -> None:
    broker, delivered = fault_session(tmp_path / "p.db", FaultPlan(drop=0.3))
    drops = [f for f in broker.faults() if f.kind is FaultKind.DROP]
    dropped_fills = [f.exec_id for f in drops if f.exec_id]
    dropped_orders = [f.callback for f in drops if f.exec_id is None]
    assert dropped_fills
    assert dropped_orders

    snapshot = run(broker.snapshot(ACCOUNT))
    assert snapshot.fills is not None
    assert snapshot.orders is not None
    delivered_fills = set(fill_ids(delivered))
    for exec_id in dropped_fills:
        assert exec_id not in delivered_fills
        assert exec_id in {f.exec_id for f in snapshot.fills}
    # Every execution reaches the stream or is accounted for by a DROP fault.
    assert delivered_fills | set(dropped_fills) == {f.exec_id for f in snapshot.fills}
    assert all(f.detail.startswith(f"callback #{f.callback}") for f in drops)


def test_duplicate_a_callback_is_delivered_twice(tmp_path: Path) -> None:
    broker, delivered = fault_session(tmp_path / "p.db", FaultPlan(duplicate=0.5))
    counts = Counter(item.payload for _, item in delivered if isinstance(item, RawMessage))
    duplicated = [f for f in broker.faults() if f.kind is FaultKind.DUPLICATE]
    assert duplicated
    assert sum(1 for n in counts.values() if n == 2) == len(duplicated)
    assert all(n in {1, 2} for n in counts.values())
    for fault in duplicated:
        if fault.exec_id is not None:
            assert fill_ids(delivered).count(fault.exec_id) == 2


def test_delay_a_callback_is_held_the_logged_number_of_steps(tmp_path: Path) -> None:
    broker, delivered = fault_session(tmp_path / "p.db", FaultPlan(delay=0.4, max_delay=3))
    delays = [f for f in broker.faults() if f.kind is FaultKind.DELAY and f.exec_id]
    assert delays
    when = {
        msgspec.json.decode(item.payload)["exec_id"]: step
        for step, item in delivered
        if isinstance(item, RawMessage) and item.kind == "fill"
    }
    for fault in delays:
        held = int(fault.detail.split(" held ")[1].split(" ")[0])
        assert fault.exec_id is not None
        assert when[fault.exec_id] == fault.step + held


def test_reorder_a_callback_arrives_after_later_ones(tmp_path: Path) -> None:
    broker, delivered = fault_session(tmp_path / "p.db", FaultPlan(reorder=0.3, reorder_window=2))
    reordered = [f for f in broker.faults() if f.kind is FaultKind.REORDER]
    assert reordered
    messages = [
        (item.kind, msgspec.json.decode(item.payload))
        for _, item in delivered
        if isinstance(item, RawMessage)
    ]
    # Callbacks carry the market clock: a reordered one arrives after a later-stamped one.
    stamps = [m["ts"] for _, m in messages]
    assert stamps != sorted(stamps)
    # A reordered fill arrives after the order update emitted right after it (same stamp).
    overtaken = 0
    for fault in (f for f in reordered if f.exec_id):
        fill_at, fill = next(
            (i, m) for i, (k, m) in enumerate(messages) if k == "fill" and m["exec_id"] == fault.exec_id
        )
        update_at = [
            i
            for i, (k, m) in enumerate(messages)
            if k == "order" and m["id"] == fault.order_id and m["ts"] == fill["ts"]
        ]
        overtaken += bool(update_at) and update_at[0] < fill_at
    assert overtaken > 0
    # Nothing is lost by reordering: every callback emitted is delivered once.
    assert len(messages) == broker_callbacks(broker)


def broker_callbacks(broker: PaperBroker) -> int:
    # Two callbacks per execution (fill, order update), one per order placed.
    return 2 * len(broker.fills()) + len(broker.orders())


def test_outage_fails_queries_and_makes_submits_uncertain_for_its_steps(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db", seed=2)
    run(broker.submit(market("A1")))
    broker.outage(2)

    # Snapshot parts are None, never empty; lookup and cancel raise; submit is uncertain.
    snapshot = run(broker.snapshot(ACCOUNT))
    assert (snapshot.orders, snapshot.fills, snapshot.positions) == (None, None, None)
    assert not snapshot.complete_history
    with pytest.raises(BrokerQueryError, match="outage"):
        run(broker.lookup(ACCOUNT, "A1"))
    with pytest.raises(BrokerQueryError, match="outage"):
        run(broker.cancel(ACCOUNT, "A1", None))
    outcomes = {}
    for i in range(6):
        with pytest.raises(SubmitUncertain):
            run(broker.submit(market(f"U{i}")))
    broker.step()
    assert run(broker.snapshot(ACCOUNT)).orders is None  # still out: 2 steps
    broker.step()

    # Over: the log says which uncertain submits reached the broker, and lookup agrees.
    snapshot = run(broker.snapshot(ACCOUNT))
    assert snapshot.orders is not None
    for fault in (
        f for f in broker.faults() if f.kind is FaultKind.OUTAGE and f.detail.startswith("submit ")
    ):
        cid = fault.detail.split()[1]
        outcomes[cid] = run(broker.lookup(ACCOUNT, cid))
        assert (outcomes[cid] is not None) == ("placed as" in fault.detail)
        assert (fault.order_id is not None) == ("placed as" in fault.detail)
    assert len(outcomes) == 6
    assert any(v is None for v in outcomes.values())
    assert any(v is not None for v in outcomes.values())


def test_disconnect_next_item_is_reconnected_and_callbacks_meanwhile_are_lost(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db", seed=2, faults=FaultPlan(delay=1.0, max_delay=1))

    async def session() -> tuple[list[StreamItem], list[StreamItem]]:
        await broker.submit(market("A1"))  # its callback is held a step
        broker.disconnect()  # ... and lost with the connection
        await broker.submit(market("A2"))  # emitted while disconnected: lost
        broker.step()
        first = await drain(broker)
        await broker.submit(market("A3"))
        broker.step()
        broker.step()
        return first, await drain(broker)

    first, after = run(session())

    assert first[0] == Reconnected(account=ACCOUNT, source="paper")
    assert payloads(first) == []  # everything emitted before the reconnect is gone
    assert any('"client_order_id":"A3"' in p for p in payloads(after))
    lost = [f for f in broker.faults() if f.kind is FaultKind.DISCONNECT and f.callback]
    assert {f.order_id for f in lost} >= {"P00000001", "P00000002"}
    # The snapshot still has everything the lost callbacks carried.
    snapshot = run(broker.snapshot(ACCOUNT))
    assert snapshot.orders is not None
    assert [o.client_order_id for o in snapshot.orders] == ["A1", "A2", "A3"]


def test_manual_order_has_no_client_id_and_is_in_the_snapshot(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    report = broker.manual_order("TSLA", Side.BUY, D(5))
    broker.step()

    snapshot = run(broker.snapshot(ACCOUNT))
    assert snapshot.orders is not None
    (order,) = snapshot.orders
    assert order.client_order_id is None
    assert order.broker_order_id == report.broker_order_id
    assert order.status is OrderStatus.FILLED
    (fault,) = broker.faults()
    assert (fault.kind, fault.order_id) == (FaultKind.MANUAL_ORDER, report.broker_order_id)
    with pytest.raises(ValueError, match="not traded"):
        broker.manual_order("NOPE", Side.BUY, D(1))
    with pytest.raises(ValueError, match="quantity must be > 0"):
        broker.manual_order("TSLA", Side.BUY, D(0))


def test_shift_position_changes_the_position_without_order_fill_or_callback(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db")
    run(broker.submit(market("A1", symbol="MSFT", qty=4)))
    broker.step()
    run(drain(broker))
    before = {p.symbol: p for p in broker.positions()}

    after = broker.shift_position("MSFT", D(3), D(310))
    other = broker.shift_position("AAPL", D(-2), D("99.5"))

    snapshot = run(broker.snapshot(ACCOUNT))
    assert snapshot.positions is not None
    held = {p.symbol: p for p in snapshot.positions}
    assert held["MSFT"].qty == before["MSFT"].qty + 3 == after.qty
    assert held["MSFT"].avg_cost == after.avg_cost
    assert (held["AAPL"].qty, held["AAPL"].avg_cost) == (D(-2), D("99.5")) == (other.qty, other.avg_cost)
    assert len(broker.fills()) == len(snapshot.fills or []) == 1
    assert len(broker.orders()) == 1
    assert run(drain(broker)) == []
    shifts = [f for f in broker.faults() if f.kind is FaultKind.SHIFT_POSITION]
    assert [f.detail.split()[0] for f in shifts] == ["MSFT", "AAPL"]
    # Shifting back to flat removes the position from the list.
    broker.shift_position("AAPL", D(2), D(100))
    assert "AAPL" not in {p.symbol for p in broker.positions()}


def test_the_fault_log_survives_a_reopen(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "p.db", faults=ALL_FAULTS)
    run(play(broker, 0, 10))
    logged = broker.faults()
    broker.close()
    assert open_broker(tmp_path / "p.db").faults() == logged
    assert [f.id for f in logged] == list(range(1, len(logged) + 1))


def test_fault_plan_refuses_a_bad_probability() -> None:
    with pytest.raises(ConfigError, match=r"FaultPlan\.drop"):
        FaultPlan(drop=1.5)
    with pytest.raises(ConfigError, match=r"FaultPlan\.max_delay"):
        FaultPlan(max_delay=0)


# --- end to end: the books equal the broker ------------------------------------------------------


async def pump(ledger: Ledger, broker: PaperBroker) -> None:
    """Feed every deliverable stream item to the ledger; reconcile after a reconnect."""
    async for item in broker.stream(follow=False):
        if isinstance(item, RawMessage):
            ledger.ingest_raw(
                item.payload, item.translate, account=item.account, source=item.source, kind=item.kind
            )
        else:
            ledger.reconcile(await broker.snapshot(item.account))


def assert_books_equal_broker(ledger: Ledger, broker: PaperBroker) -> None:
    # Open orders: same broker orders, same quantities, statuses and fill progress.
    broker_open = {o.broker_order_id: o for o in broker.orders() if not o.status.is_terminal}
    ledger_open = {o.broker_order_ids[-1]: o for o in ledger.open_orders(ACCOUNT)}
    assert ledger_open.keys() == broker_open.keys()
    for broker_id, open_view in ledger_open.items():
        truth_ = broker_open[broker_id]
        assert (open_view.status, open_view.filled_qty, open_view.quantity) == (
            truth_.status,
            truth_.filled_qty,
            truth_.quantity,
        )
    # Every order's final state, and no order twice.
    for order in broker.orders():
        cid = order.client_order_id or f"~{order.broker_order_id}"
        view = ledger.order(ACCOUNT, cid)
        assert view is not None, cid
        assert (view.status, view.filled_qty) == (order.status, order.filled_qty), cid
    placed = Counter(o.client_order_id for o in broker.orders() if o.client_order_id)
    assert max(placed.values()) == 1
    # Every execution booked once, at the broker's quantity and price; nothing else.
    booked = {
        f.exec_id: (f.qty, f.price) for o in ledger.as_of(ledger.last_position()).orders for f in o.fills
    }
    assert booked == {f.exec_id: (f.qty, f.price) for f in broker.fills()}
    # Positions: quantity and average cost.
    assert {p.symbol: (p.qty, p.avg_cost) for p in ledger.positions(ACCOUNT)} == {
        p.symbol: (p.qty, p.avg_cost) for p in broker.positions()
    }


@pytest.mark.parametrize(
    ("seed", "faults"),
    [
        pytest.param(1, None, id="seed1-no-faults"),
        pytest.param(2, ALL_FAULTS, id="seed2-faults"),
        pytest.param(3, FaultPlan(drop=0.3, duplicate=0.3, delay=0.3, reorder=0.3), id="seed3-heavy-faults"),
    ],
)
def test_end_to_end_the_ledger_equals_the_broker_after_reconcile(
    tmp_path: Path, seed: int, faults: FaultPlan | None
) -> None:
    broker = open_broker(tmp_path / "p.db", seed=seed, faults=faults)
    ledger = Ledger.open(f"memory://{uuid.uuid4().hex}")
    refused: list[str] = []

    async def session() -> None:
        await start_session(ledger, broker, ACCOUNT)
        for i in range(15):
            if i % 5 == 4:
                request = limit(f"E{i}", ("1.00", "99.90", "100.10")[i % 3], side=Side.BUY)
            else:
                request = market(
                    f"E{i}", ("AAPL", "MSFT", "TSLA")[i % 3], (Side.BUY, Side.SELL)[i % 2], 2 + i
                )
            try:
                await ledger.submit_async(request, broker)  # the broker's submit, through the ledger
            except NotReadyError:
                # The manual order quarantines TSLA while it works: the gate sends nothing.
                refused.append(request.client_order_id)
            broker.step()
            await pump(ledger, broker)
            if i == 6:
                broker.manual_order("TSLA", Side.BUY, D(5))
            if i == 8:
                broker.shift_position("MSFT", D(3), D(310))
            if i == 10:
                broker.disconnect()
        for _ in range(15):
            broker.step()
            await pump(ledger, broker)
        result = ledger.reconcile(await broker.snapshot(ACCOUNT))
        assert not result.stale

    run(session())

    assert_books_equal_broker(ledger, broker)
    assert ledger.open_orders(ACCOUNT), "the far limit order should still be working"
    assert len(refused) < 5
    assert not {o.client_order_id for o in broker.orders()} & set(refused)
    ledger.close()
    broker.close()


def test_end_to_end_recovery_looks_up_submits_lost_in_an_outage(tmp_path: Path) -> None:
    # Submits during an outage are uncertain: the ledger keeps them SUBMITTED, recovery
    # looks each one up once the broker answers again, and nothing is sent twice.
    broker = open_broker(tmp_path / "p.db", seed=9)
    ledger = Ledger.open(f"memory://{uuid.uuid4().hex}")

    async def session() -> Any:
        await start_session(ledger, broker, ACCOUNT)
        broker.outage(1)
        for i in range(6):
            await ledger.submit_async(market(f"O{i}"), broker)
        broker.step()
        recovery, _ = await start_session(ledger, broker, ACCOUNT)
        for _ in range(5):
            broker.step()
            await pump(ledger, broker)
        ledger.reconcile(await broker.snapshot(ACCOUNT))
        return recovery

    recovery = run(session())

    placed = {f.detail.split()[1] for f in broker.faults() if "placed as" in f.detail}
    assert set(recovery.found) == placed
    assert set(recovery.abandoned) == {f"O{i}" for i in range(6)} - placed
    assert_books_equal_broker(ledger, broker)


def test_a_file_that_accepts_duplicates_places_a_reused_client_id_twice(tmp_path: Path) -> None:
    # IB accepts a reused orderRef: in this mode the paper broker does too, so a test can
    # see an order sent twice in the broker's own list.
    request = OrderRequest(
        account="PAPER", client_order_id="DUP1", symbol="AAPL", side=Side.BUY, quantity=Decimal(1)
    )
    with PaperBroker(tmp_path / "p.db", accept_duplicates=True) as broker:
        first = asyncio.run(broker.submit(request))
        second = asyncio.run(broker.submit(request))
        assert first.broker_order_id != second.broker_order_id
        assert [o.client_order_id for o in broker.orders()] == ["DUP1", "DUP1"]
        looked_up = asyncio.run(broker.lookup("PAPER", "DUP1"))
        assert looked_up is not None
        assert looked_up.broker_order_id == first.broker_order_id
    with PaperBroker(tmp_path / "p.db") as reopened:
        assert reopened.accepts_duplicates  # the file's choice stays
    with pytest.raises(ConfigError, match="accept_duplicates"):
        PaperBroker(tmp_path / "p.db", accept_duplicates=False)
