"""SIGKILL at each point of the submit path, restart, reconcile: no duplicate, no lost or doubled fill.

The engine runs in a child process (`python -m trueup.demo`), trading against the paper
broker with faults; `TRUEUP_CRASH_AT` kills it with SIGKILL at the n-th time it reaches
a crash point. The parent restarts, recovers and reconciles, and compares the books
with the broker's own file: every client id placed at most once, every execution booked
exactly once, every position equal. A few seeds run in `make test`; `make soak` runs many.
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
from trueup.adapters.paper.broker import PaperBroker
from trueup.demo import ACCOUNT, compare, restart

REPO = Path(__file__).resolve().parents[2]
CRASH_POINTS = (
    "submit.before_broker_call",
    "submit.after_broker_call",
    "stream.before_ingest",
    "ingest.mid_batch",
)


def crash_and_recover(tmp_path: Path, point: str, seed: int, *, orders: int = 12) -> list[str]:
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
    try:
        with Ledger.open(store) as ledger:
            asyncio.run(restart(ledger, broker))
            return compare(ledger, broker)
    finally:
        broker.close()


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("seed", [1, 2])
def test_crash_at_each_point_loses_and_doubles_nothing(tmp_path: Path, point: str, seed: int) -> None:
    assert crash_and_recover(tmp_path, point, seed) == []


@pytest.mark.soak
@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("seed", range(3, 43))
def test_crash_many_seeds(tmp_path: Path, point: str, seed: int) -> None:
    assert crash_and_recover(tmp_path, point, seed, orders=30) == []
