"""Embedding: `ledger.submit` from synchronous code, and `submit_async` from a loop, on each broker.

Synchronous code calls `Ledger.submit` twice in a row with one client, as a new user
would. Each broker's real client library talks to its local fake server. Before the fix
`submit` ran `asyncio.run` per call: the IB client stayed bound to the first call's
closed loop and the second call raised "bound to a different event loop".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.builders import unique_cid
from tests.e2e import fake_alpaca, fake_kite, fake_tws
from trueup import Ledger, OrderStatus
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.adapters.base import OrderRequest
from trueup.adapters.ib.client import IbClient
from trueup.adapters.kite.client import KiteClient
from trueup.domain.errors import NotReadyError
from trueup.domain.gate import GateState
from trueup.domain.reports import BrokerSnapshot
from trueup.domain.status import Side
from trueup.submission import start_session

logging.getLogger("ib_async").setLevel(logging.CRITICAL)

ACKNOWLEDGED = {
    OrderStatus.PENDING_NEW,
    OrderStatus.ACCEPTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.FILLED,
}
KITE_KEYS = ("kitekey", "day1-token", "kite-api-secret")


def ib_client(fake: fake_tws.FakeTws) -> IbClient:
    return IbClient(
        "127.0.0.1",
        fake.port,
        7,
        account=fake_tws.ACCOUNT,
        connect_timeout=5.0,
        request_timeout=5.0,
        ack_timeout=5.0,
    )


@pytest.fixture(params=["ib", "alpaca", "kite"])
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str, Callable[[str], bool]]]:
    """(client, account, has(cid): the fake broker holds an order with our id)."""
    if request.param == "ib":
        with fake_tws.running() as tws:
            yield (
                ib_client(tws),
                fake_tws.ACCOUNT,
                lambda cid: any(o.order_ref == cid for o in tws.orders.values()),
            )
    elif request.param == "alpaca":
        with fake_alpaca.running() as alpaca:
            client = AlpacaClient("PKTESTKEY", "secret", account="ALPACA", url_override=alpaca.url)
            yield client, "ALPACA", lambda cid: any(o["client_order_id"] == cid for o in alpaca.orders)
    else:
        with fake_kite.running(*KITE_KEYS) as kite:
            client = KiteClient(*KITE_KEYS, account="ZK1234", root=kite.url, timeout=2.0)
            yield client, "ZK1234", lambda cid: bool(kite.tagged(cid))


def order(account: str, cid: str) -> OrderRequest:
    symbol = "NSE:SBIN:CNC" if account == "ZK1234" else "AAPL"  # Kite names the exchange
    return OrderRequest(
        account=account, client_order_id=cid, symbol=symbol, side=Side.BUY, quantity=Decimal(1)
    )


def close(ledger: Ledger, client: Any) -> None:
    closed = getattr(client, "close", None)
    if closed is not None:
        result = closed()
        if asyncio.iscoroutine(result):
            ledger.run(result)


def test_sync_submit_twice_reaches_the_broker_and_is_acknowledged(
    broker: tuple[Any, str, Callable[[str], bool]],
) -> None:
    client, account, has = broker
    with Ledger.open(f"memory://{unique_cid('emb')}") as ledger:
        ledger.run(start_session(ledger, client, account))
        first, second = unique_cid("S"), unique_cid("S")
        views = [ledger.submit(order(account, cid), client) for cid in (first, second)]
        for cid, view in zip((first, second), views, strict=True):
            assert has(cid), (cid, view)
            assert view.status in ACKNOWLEDGED, (cid, view.status)  # acknowledged, not "outcome unknown"
            assert view.broker_order_ids, cid
        close(ledger, client)


def test_async_submit_from_a_running_loop(broker: tuple[Any, str, Callable[[str], bool]]) -> None:
    client, account, has = broker

    async def main(ledger: Ledger) -> list[Any]:
        await start_session(ledger, client, account)
        cids = [unique_cid("A"), unique_cid("A")]
        views = [await ledger.submit_async(order(account, cid), client) for cid in cids]
        closed = getattr(client, "close", None)
        if closed is not None and asyncio.iscoroutine(result := closed()):
            await result
        return [(cid, view) for cid, view in zip(cids, views, strict=True)]

    with Ledger.open(f"memory://{unique_cid('emb')}") as ledger:
        for cid, view in asyncio.run(main(ledger)):
            assert has(cid), (cid, view)
            assert view.status in ACKNOWLEDGED, (cid, view.status)


def test_submit_before_start_session_names_the_account() -> None:
    with (
        Ledger.open(f"memory://{unique_cid('emb')}") as ledger,
        pytest.raises(NotReadyError, match=r"^ACC1: new orders refused: gate is RECONCILING"),
    ):
        ledger.check_new_order("ACC1", "AAPL", "BUY", Decimal(1))


def test_sync_call_from_the_ledgers_own_loop_is_refused() -> None:
    with Ledger.open(f"memory://{unique_cid('emb')}") as ledger:

        async def nested() -> object:
            return ledger.run(asyncio.sleep(0))

        with pytest.raises(RuntimeError, match="await the async method"):
            ledger.run(nested())


def test_sync_submit_with_a_client_never_used_before_connects_once_on_the_ledgers_loop() -> None:
    # The session: no event loop anywhere in the user's code. The gate is opened
    # by reconciling the fake's (empty) books by hand; each submit then reaches TWS.
    with fake_tws.running() as tws, Ledger.open(f"memory://{unique_cid('emb')}") as ledger:
        client = ib_client(tws)
        ledger.begin_startup(fake_tws.ACCOUNT)
        now = ledger.clock()
        empty = BrokerSnapshot(
            account=fake_tws.ACCOUNT, as_of=now, orders=[], fills=[], positions=[], history_since=now
        )
        assert ledger.reconcile(empty).gate is GateState.READY
        cids = [unique_cid("N"), unique_cid("N")]
        views = [ledger.submit(order(fake_tws.ACCOUNT, cid), client) for cid in cids]
        for cid, view in zip(cids, views, strict=True):
            assert any(o.order_ref == cid for o in tws.orders.values()), cid
            assert view.status in ACKNOWLEDGED, (cid, view.status)
        ledger.run(client.close())
