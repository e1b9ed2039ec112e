"""SIGKILL at each point of the submit path, restart, reconcile: no duplicate, no lost or doubled fill.

The engine runs in a child process (`python -m trueup.demo`), trading against the paper
broker with faults; `TRUEUP_CRASH_AT` kills it with SIGKILL at the n-th time it reaches
a crash point. The parent restarts, recovers and reconciles, and compares the books
with the broker's own file: every client id placed at most once, every execution booked
exactly once, every position equal. A few seeds run in `make test`; `make soak` runs many.

The paper file accepts a reused client id (the demo creates it so, as IB accepts a reused
orderRef): a re-sent order would be placed a second time, so "placed at most once" is a
check that can fail, and `test_the_check_sees_a_recovery_that_resends` shows it does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trueup import Ledger
from trueup.adapters.base import OrderRequest, OrderType
from trueup.adapters.paper.broker import PaperBroker
from trueup.demo import ACCOUNT, compare, restart
from trueup.domain.status import OrderStatus

REPO = Path(__file__).resolve().parents[2]
CRASH_POINTS = (
    "submit.before_broker_call",
    "submit.after_broker_call",
    "stream.before_ingest",
    "ingest.mid_batch",
)


async def resend_unacknowledged(ledger: Ledger, broker: PaperBroker) -> list[str]:
    """A deliberately broken recovery: send again every order whose acknowledgement was lost."""
    resent = []
    for order in ledger.open_orders(ACCOUNT):
        if order.status is not OrderStatus.SUBMITTED or order.quantity is None:
            continue
        request = OrderRequest(
            account=ACCOUNT,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=OrderType.MARKET if order.limit_price is None else OrderType.LIMIT,
            limit_price=order.limit_price,
        )
        await broker.submit(request)
        resent.append(order.client_order_id)
    return resent


def crash_and_recover(
    tmp_path: Path, point: str, seed: int, *, orders: int = 12, broken_recovery: bool = False
) -> list[str]:
    store = f"sqlite:///{tmp_path / 'books.db'}"
    paper = tmp_path / "paper.db"
    nth = 2 + seed % 5
    env = {**os.environ, "TRUEUP_CRASH_AT": f"{point}:{nth}", "PYTHONPATH": str(REPO)}
    child = subprocess.run(  # noqa: S603 - our interpreter, our module
        [sys.executable, "-m", "trueup.demo", store, str(paper), str(seed), str(orders)],
        env=env,
        check=False,
        capture_output=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    broker = PaperBroker(paper, account=ACCOUNT, seed=seed)
    assert broker.accepts_duplicates  # else a re-send would be refused and never seen
    try:
        with Ledger.open(store) as ledger:
            if broken_recovery:
                assert asyncio.run(resend_unacknowledged(ledger, broker))
            asyncio.run(restart(ledger, broker))
            return compare(ledger, broker)
    finally:
        broker.close()


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("seed", [1, 2])
def test_crash_at_each_point_loses_and_doubles_nothing(tmp_path: Path, point: str, seed: int) -> None:
    assert crash_and_recover(tmp_path, point, seed) == []


@pytest.mark.parametrize("seed", [1, 2])
def test_the_check_sees_a_recovery_that_resends(tmp_path: Path, seed: int) -> None:
    # Killed right after the broker took an order, before its acknowledgement was stored:
    # a recovery that re-sends it instead of looking it up places it twice.
    problems = crash_and_recover(tmp_path, "submit.after_broker_call", seed, broken_recovery=True)
    assert any(p.endswith("placed 2 times at the broker") for p in problems), problems


@pytest.mark.soak
@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("seed", range(3, 43))
def test_crash_many_seeds(tmp_path: Path, point: str, seed: int) -> None:
    assert crash_and_recover(tmp_path, point, seed, orders=30) == []
