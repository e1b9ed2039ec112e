"""End to end: `trueup reconcile --broker alpaca|kite|ib`, the installed command, against the fake brokers.

Credentials come from the environment only; the secrets must appear in no output and not in
the books.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e import fake_kite, fake_tws
from tests.e2e.fake_alpaca import FakeAlpaca, running
from tests.e2e.fake_kite import FakeKite
from tests.e2e.fake_tws import FakeTws
from trueup import Ledger
from trueup.adapters.base import OrderRequest, OrderType
from trueup.adapters.ib.client import IbClient
from trueup.submission import start_session

KEY, SECRET = "PKCLIKEY", "cli-s3cr3t-never-shown"
KITE_KEY, KITE_TOKEN, KITE_SECRET = "kiteclikey", "kite-cli-token-never-shown", "kite-cli-secret-never-shown"


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with running() as server:
        yield server


def trueup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The console script installed next to this interpreter (`pip install -e .`).
    command = shutil.which("trueup", path=str(Path(sys.executable).parent))
    assert command is not None, "the trueup console script is not installed"
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def alpaca_env(fake: FakeAlpaca, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    env.update(APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET, APCA_API_BASE_URL=fake.url, **extra)
    return env


def test_reconcile_alpaca_with_credentials_from_the_environment(fake: FakeAlpaca, tmp_path: Path) -> None:
    with fake.lock:
        ours = fake._place({"symbol": "AAPL", "qty": "2", "side": "buy", "client_order_id": "EXT1"})
    fake.fill("EXT1", "2", "150")
    books = tmp_path / "books.db"

    done = trueup(
        "reconcile",
        "--broker",
        "alpaca",
        "--account",
        "ALP",
        "--store",
        f"sqlite:///{books}",
        "--json",
        env=alpaca_env(fake),
    )

    assert done.returncode in {0, 2}, done.stderr  # 2: a CRITICAL discrepancy is open
    result = json.loads(done.stdout)
    assert not result["stale"]
    found = {(d["kind"], d["key"]) for d in result["discrepancies"]}
    assert ("ORPHAN_ORDER", "EXT1") in found  # placed at the broker, never by us
    assert "GET /v2/orders" in fake.requests
    # The books now hold what the broker holds: the order, its fill, the position.
    store = f"sqlite:///{books}"
    positions = json.loads(trueup("positions", "--store", store, "--json", env=alpaca_env(fake)).stdout)
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "2")]
    orders = json.loads(trueup("orders", "--all", "--store", store, "--json", env=alpaca_env(fake)).stdout)
    assert [(o["client_order_id"], o["status"], o["filled_qty"]) for o in orders] == [("EXT1", "FILLED", "2")]
    # The secret reaches Alpaca as a header, and nowhere else: not the output, not the books.
    assert SECRET not in done.stdout + done.stderr
    assert SECRET.encode() not in books.read_bytes()
    assert ours["id"].encode() in books.read_bytes()  # the raw answer was stored


def test_reconcile_alpaca_failure_is_stale_not_flat(fake: FakeAlpaca, tmp_path: Path) -> None:
    fake.fail("GET", "/v2/positions", status=500, times=5)
    done = trueup(
        "reconcile",
        "--broker",
        "alpaca",
        "--account",
        "ALP",
        "--store",
        f"sqlite:///{tmp_path / 'b.db'}",
        "--json",
        env=alpaca_env(fake),
    )
    result = json.loads(done.stdout)
    assert result["stale"]
    assert "STALE_DATA" in {d["kind"] for d in result["discrepancies"]}
    assert result["gate"] == "BLOCKED"
    assert SECRET not in done.stdout + done.stderr


def test_reconcile_alpaca_without_credentials_names_the_variables(fake: FakeAlpaca, tmp_path: Path) -> None:
    env = alpaca_env(fake)
    del env["APCA_API_SECRET_KEY"]
    done = trueup("reconcile", "--broker", "alpaca", "--store", f"sqlite:///{tmp_path / 'b.db'}", env=env)
    assert done.returncode != 0
    assert "APCA_API_SECRET_KEY" in done.stderr
    assert fake.requests == []  # nothing was asked without credentials


@pytest.fixture
def kite() -> Iterator[FakeKite]:
    with fake_kite.running(KITE_KEY, KITE_TOKEN, KITE_SECRET) as server:
        yield server


def kite_env(fake: FakeKite) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITE_")}
    env.update(
        KITE_API_KEY=KITE_KEY, KITE_ACCESS_TOKEN=KITE_TOKEN, KITE_API_SECRET=KITE_SECRET, KITE_ROOT=fake.url
    )
    return env


def test_reconcile_kite_books_an_order_placed_by_hand(kite: FakeKite, tmp_path: Path) -> None:
    form = {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": "5",
        "product": "CNC",
        "order_type": "MARKET",
    }
    with kite.lock:
        placed = kite.place("regular", form)
    kite.fill(placed["order_id"], 5, "1500.5")
    books = tmp_path / "books.db"

    done = trueup(
        "reconcile",
        "--broker",
        "kite",
        "--account",
        "ZK",
        "--store",
        f"sqlite:///{books}",
        "--json",
        env=kite_env(kite),
    )

    result = json.loads(done.stdout)
    assert not result["stale"]
    assert "ORPHAN_ORDER" in {d["kind"] for d in result["discrepancies"]}
    positions = json.loads(
        trueup("positions", "--store", f"sqlite:///{books}", "--json", env=kite_env(kite)).stdout
    )
    assert [(p["symbol"], p["qty"]) for p in positions] == [("NSE:INFY:CNC", "5")]
    for secret in (KITE_TOKEN, KITE_SECRET):
        assert secret not in done.stdout + done.stderr
        assert secret.encode() not in books.read_bytes()


def test_reconcile_kite_with_an_expired_token_blocks_and_says_why(kite: FakeKite, tmp_path: Path) -> None:
    kite.expire_token()
    done = trueup(
        "reconcile",
        "--broker",
        "kite",
        "--account",
        "ZK",
        "--store",
        f"sqlite:///{tmp_path / 'b.db'}",
        "--json",
        env=kite_env(kite),
    )
    result = json.loads(done.stdout)
    assert (result["stale"], result["gate"]) == (True, "BLOCKED")
    assert any("access token expired" in reason for reason in result["gate_reasons"])
    assert KITE_TOKEN not in done.stdout + done.stderr


@pytest.fixture
def tws() -> Iterator[FakeTws]:
    with fake_tws.running("DU777") as server:
        yield server


def ib_env(fake: FakeTws) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IB_")}
    env.update(IB_HOST="127.0.0.1", IB_PORT=str(fake.port), IB_CLIENT_ID="9")
    return env


def test_reconcile_ib_books_an_order_entered_in_tws(tws: FakeTws, tmp_path: Path) -> None:
    tws.place_external("MSFT", "3", "410.25")
    books = f"sqlite:///{tmp_path / 'books.db'}"

    done = trueup(
        "reconcile", "--broker", "ib", "--account", "DU777", "--store", books, "--json", env=ib_env(tws)
    )

    result = json.loads(done.stdout)
    assert not result["stale"], done.stderr
    assert "ORPHAN_ORDER" in {d["kind"] for d in result["discrepancies"]}
    positions = json.loads(trueup("positions", "--store", books, "--json", env=ib_env(tws)).stdout)
    assert [(p["symbol"], Decimal(p["qty"])) for p in positions] == [("MSFT", Decimal(3))]
    assert tws.connected_client_ids() == []  # the one-off client disconnected


def test_reconcile_ib_with_tws_down_is_stale_never_flat(tws: FakeTws, tmp_path: Path) -> None:
    tws.drop(down=True)
    books = f"sqlite:///{tmp_path / 'books.db'}"
    done = trueup(
        "reconcile", "--broker", "ib", "--account", "DU777", "--store", books, "--json", env=ib_env(tws)
    )
    result = json.loads(done.stdout)
    assert (result["stale"], result["gate"]) == (True, "BLOCKED")
    assert result["position_syncs"] == 0


def test_reconcile_ib_with_another_client_id_sees_the_engines_working_orders(
    tws: FakeTws, tmp_path: Path
) -> None:
    # The engine (clientId 7) has a working order; a one-off reconcile runs as clientId 9.
    # TWS's reqOpenOrders would list only clientId 9's orders: read as complete, the engine's
    # order would be "missing". The client asks for every client's open orders.
    books = f"sqlite:///{tmp_path / 'books.db'}"

    async def engine() -> None:
        with Ledger.open(books) as ledger:
            client = IbClient("127.0.0.1", tws.port, 7, account="DU777")
            await client.connect()
            await start_session(ledger, client, "DU777")
            order = OrderRequest(
                account="DU777",
                client_order_id="W1",
                symbol="AAPL",
                side="BUY",  # type: ignore[arg-type]
                quantity=Decimal(5),
                order_type=OrderType.LIMIT,
                limit_price=Decimal(1),
            )
            await ledger.submit_async(order, client)
            await client.close()

    asyncio.run(engine())
    done = trueup(
        "reconcile", "--broker", "ib", "--account", "DU777", "--store", books, "--json", env=ib_env(tws)
    )
    result = json.loads(done.stdout)
    assert not result["stale"], done.stderr
    assert "MISSING_AT_BROKER" not in {d["kind"] for d in result["discrepancies"]}
    assert result["gate"] == "READY"
