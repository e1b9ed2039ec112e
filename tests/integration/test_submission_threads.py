"""The async submit path never touches the store on the event loop's thread.

Regression: `Submitter.submit` called the synchronous ledger (intent, SUBMITTED, the
acknowledgement: several fsync'd transactions) straight on the event loop, stalling the
broker's stream and every other task while the disk worked.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.builders import unique_cid
from trueup import Ledger, OrderStatus
from trueup.adapters.base import OrderRequest, OrderType
from trueup.adapters.paper.broker import PaperBroker
from trueup.submission import Submitter, start_session

ACCOUNT = "PAPER"


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
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ledger, StoreCalls]]:
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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PaperBroker]:
    with PaperBroker(tmp_path / "paper.db", account=ACCOUNT, seed=3) as opened:
        yield opened


def request(cid: str, **changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "account": ACCOUNT,
        "client_order_id": cid,
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": Decimal(10),
        "order_type": OrderType.MARKET,
    }
    return OrderRequest(**{**fields, **changes})  # type: ignore[arg-type]


def test_submit_cancel_and_startup_run_every_ledger_call_off_the_loop(
    ledger: tuple[Ledger, StoreCalls], broker: PaperBroker
) -> None:
    books, calls = ledger

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


def test_the_guard_sees_a_ledger_call_made_on_the_loop(ledger: tuple[Ledger, StoreCalls]) -> None:
    books, calls = ledger

    async def blocking_on_the_loop() -> None:
        calls.loop_thread = threading.get_ident()
        books.order(ACCOUNT, "NOPE")  # what the submit path must never do

    asyncio.run(blocking_on_the_loop())
    # Check: the guard above is not vacuous.
    assert calls.on_loop == ["aggregate"]
