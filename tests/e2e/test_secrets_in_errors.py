"""Secrets never reach output or the store, even when the broker echoes them back in an error.

The fakes are made to answer errors with the request's headers in the body, as some gateways
do: Alpaca's ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` and Kite's ``Authorization: token
api_key:access_token``. The secret must appear nowhere: not in the `BrokerQueryError`, its
traceback (what `log.exception` prints), the STALE_DATA detail or gate reason, the log
capture, the `trueup reconcile` output (table and JSON), or the store file's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e import fake_kite
from tests.e2e.fake_alpaca import FakeAlpaca, running
from tests.e2e.fake_kite import FakeKite
from tests.e2e.test_cli_brokers import (
    KEY,
    KITE_KEY,
    KITE_SECRET,
    KITE_TOKEN,
    SECRET,
    alpaca_env,
    kite_env,
    trueup,
)
from trueup import Ledger
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.adapters.kite.client import KiteClient
from trueup.domain.errors import BrokerQueryError, NotReadyError


@pytest.fixture
def alpaca() -> Iterator[FakeAlpaca]:
    with running() as server:
        server.echo_headers = True
        yield server


@pytest.fixture
def kite() -> Iterator[FakeKite]:
    with fake_kite.running(KITE_KEY, KITE_TOKEN, KITE_SECRET) as server:
        server.echo_headers = True
        yield server


def assert_hidden(secrets: tuple[str, ...], text: str, store: Path | None = None) -> None:
    for secret in secrets:
        assert secret not in text
        if store is not None:
            for file in store.parent.glob(store.name + "*"):  # the -wal file too
                assert secret.encode() not in file.read_bytes()


def test_the_alpaca_fake_does_echo_the_secret(alpaca: FakeAlpaca) -> None:
    """The premise: without redaction the error body carries the secret."""
    import urllib.error
    import urllib.request

    alpaca.fail("GET", "/v2/positions")
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
        f"{alpaca.url}/v2/positions", headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert SECRET in caught.value.read().decode()


@pytest.mark.parametrize("as_json", [True, False])
def test_trueup_reconcile_alpaca_never_prints_or_stores_an_echoed_secret(
    alpaca: FakeAlpaca, tmp_path: Path, as_json: bool
) -> None:
    alpaca.fail("GET", "/v2/positions", status=500, times=10)
    books = tmp_path / "b.db"
    args = ["reconcile", "--broker", "alpaca", "--account", "ALP", "--store", f"sqlite:///{books}"]
    done = trueup(*args, *(["--json"] if as_json else []), env=alpaca_env(alpaca))
    assert "STALE_DATA" in done.stdout  # the failure is reported ...
    assert "500" in done.stdout + done.stderr
    assert_hidden((SECRET, KEY), done.stdout + done.stderr, books)  # ... its secrets are not


@pytest.mark.parametrize("as_json", [True, False])
def test_trueup_reconcile_kite_never_prints_or_stores_an_echoed_token(
    kite: FakeKite, tmp_path: Path, as_json: bool
) -> None:
    kite.fail("GET /orders", times=10)
    books = tmp_path / "b.db"
    args = ["reconcile", "--broker", "kite", "--account", "ZK", "--store", f"sqlite:///{books}"]
    done = trueup(*args, *(["--json"] if as_json else []), env=kite_env(kite))
    assert "STALE_DATA" in done.stdout
    assert_hidden((KITE_TOKEN, KITE_SECRET), done.stdout + done.stderr, books)


def texts_of(error: BaseException) -> str:
    return str(error) + "".join(traceback.format_exception(error))


def test_alpaca_errors_logs_and_stored_events_carry_no_secret(
    alpaca: FakeAlpaca, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = AlpacaClient(KEY, SECRET, account="ALP", url_override=alpaca.url)
    alpaca.fail("GET", "/v2/positions", status=500, times=10)
    alpaca.fail("GET", "/v2/orders:by_client_order_id", status=500, times=10)
    books = tmp_path / "b.db"
    with caplog.at_level(logging.DEBUG), Ledger.open(f"sqlite:///{books}") as ledger:
        result = ledger.reconcile(asyncio.run(client.snapshot("ALP")))
        with pytest.raises(BrokerQueryError) as caught:
            asyncio.run(client.lookup("ALP", "c-1"))
        with pytest.raises(NotReadyError) as refused:
            ledger.check_new_order("ALP", "AAPL", "BUY", Decimal(1))
        reasons = " ".join(ledger.gate_details("ALP")[1]) + str(refused.value)
        details = " ".join(d.detail for d in ledger.discrepancies("ALP"))
    assert "STALE_DATA" in {str(getattr(d.kind, "value", d.kind)) for d in result.discrepancies}
    assert "HTTP 500" in str(caught.value)
    texts = texts_of(caught.value) + details + reasons + caplog.text
    assert_hidden((SECRET, KEY), texts, books)


def test_kite_errors_logs_and_stored_events_carry_no_token(
    kite: FakeKite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = KiteClient(KITE_KEY, KITE_TOKEN, KITE_SECRET, account="ZK", root=kite.url, timeout=2.0)
    kite.fail("GET /orders", times=20)
    books = tmp_path / "b.db"
    with caplog.at_level(logging.DEBUG), Ledger.open(f"sqlite:///{books}") as ledger:
        result = ledger.reconcile(asyncio.run(client.snapshot("ZK")))
        with pytest.raises(BrokerQueryError) as caught:
            asyncio.run(client.lookup("ZK", "c-1"))
        with pytest.raises(NotReadyError) as refused:
            ledger.check_new_order("ZK", "NSE:INFY:CNC", "BUY", Decimal(1))
        reasons = " ".join(ledger.gate_details("ZK")[1]) + str(refused.value)
        details = " ".join(d.detail for d in ledger.discrepancies("ZK"))
    assert "STALE_DATA" in {str(getattr(d.kind, "value", d.kind)) for d in result.discrepancies}
    assert "NetworkException" in str(caught.value)
    texts = texts_of(caught.value) + details + reasons + caplog.text
    assert_hidden((KITE_TOKEN, KITE_SECRET), texts, books)
