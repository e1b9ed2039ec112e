"""Soak: the IB reconnect scenario many times over (`make soak`), where it once hung.

One run in about forty stalled for minutes: stopping the service cancelled its stream
task while the reconnect's reconciliation was in an IB request, and Python 3.11's
`asyncio.wait_for` dropped the cancellation as the request completed, so the task
waited for stream items for ever. `make test` runs a small share of it
(tests/e2e/test_ib_tws.py); the watchdog (tests/watchdog.py) dumps every thread and task
of a run that stalls. Run it in parallel with load to widen the race, e.g.
``for i in 1 2 3 4; do make soak & done``.
"""

from __future__ import annotations

import pytest

from tests.builders import unique_cid
from tests.e2e import fake_tws
from tests.e2e.test_ib_tws import fills_missed_while_disconnected
from trueup import Ledger

RUNS = 60


@pytest.mark.soak
@pytest.mark.parametrize("run", range(RUNS))
def test_the_reconnect_scenario_never_hangs(run: int) -> None:
    with fake_tws.running() as fake, Ledger.open(f"memory://{unique_cid('ibsoak')}") as ledger:
        fills_missed_while_disconnected(fake, ledger)
