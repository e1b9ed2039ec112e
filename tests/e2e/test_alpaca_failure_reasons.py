"""A snapshot part Alpaca answered with an HTTP error carries the error's text, secrets redacted.

Against the local fake Alpaca with the real alpaca-py client: the failed part is unknown
(None, never empty), `BrokerSnapshot.failures` says why (status and Alpaca's message), the
STALE_DATA detail and the gate reason repeat it, and a secret the error body echoes back
(the fake answers with the request's headers, as some gateways do) appears in none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.builders import unique_cid
from tests.e2e.fake_alpaca import FakeAlpaca, running
from trueup import Ledger
from trueup.adapters.alpaca.client import AlpacaClient

ACCOUNT = "ALPACA"
KEY, SECRET = "PKREASONKEY", "reason-s3cr3t-never-shown"
PARTS = {
    "orders": "/v2/orders",
    "fills": "/v2/account/activities/FILL",
    "positions": "/v2/positions",
}


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with running() as server:
        server.echo_headers = True
        yield server


@pytest.mark.parametrize("part", list(PARTS))
def test_a_part_failed_with_an_http_error_says_why(fake: FakeAlpaca, part: str) -> None:
    message = f"{part} service unavailable: maintenance window 02:00-02:30"
    fake.fail("GET", PARTS[part], status=503, times=1, message=message)
    client = AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=fake.url)
    snapshot = asyncio.run(client.snapshot(ACCOUNT))
    assert getattr(snapshot, part) is None  # unknown, never read as empty
    why = snapshot.failures[part]
    assert "HTTP 503" in why
    assert "maintenance window 02:00-02:30" in why  # Alpaca's own words
    assert SECRET not in why
    assert KEY not in why
    assert "***" in why  # the echoed headers were there, masked
    for other in set(PARTS) - {part}:
        assert getattr(snapshot, other) is not None
        assert other not in snapshot.failures
    with Ledger.open(f"memory://{unique_cid('why')}") as ledger:
        ledger.begin_startup(ACCOUNT)
        assert ledger.reconcile(snapshot).stale
        (stale,) = [d for d in ledger.discrepancies(ACCOUNT) if d.kind == "STALE_DATA"]
        assert "maintenance window 02:00-02:30" in stale.detail
        gate, reasons, _ = ledger.gate_details(ACCOUNT)
        assert gate.name == "BLOCKED"
        assert any("maintenance window 02:00-02:30" in r for r in reasons), reasons
        for shown in (stale.detail, *reasons):
            assert SECRET not in shown
            assert KEY not in shown


def test_a_part_that_answered_has_no_failure(fake: FakeAlpaca) -> None:
    client = AlpacaClient(KEY, SECRET, account=ACCOUNT, url_override=fake.url)
    snapshot = asyncio.run(client.snapshot(ACCOUNT))
    assert snapshot.failures == {}
    assert snapshot.orders == []
    assert snapshot.fills == []
    assert snapshot.positions == []
