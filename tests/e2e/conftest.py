"""Fake Alpaca servers shared by the Alpaca end-to-end tests (each test gets fresh ones)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import fake_alpaca, fake_alpaca_stream
from tests.e2e.fake_alpaca import FakeAlpaca
from tests.e2e.fake_alpaca_stream import FakeAlpacaStream


@pytest.fixture
def rest() -> Iterator[FakeAlpaca]:
    """The fake Alpaca REST API on 127.0.0.1."""
    with fake_alpaca.running() as server:
        yield server


@pytest.fixture
def ws() -> Iterator[FakeAlpacaStream]:
    """The fake Alpaca trading stream (websocket) on 127.0.0.1."""
    with fake_alpaca_stream.running() as server:
        yield server
