"""End to end: `trueup reconcile --broker alpaca`, the installed command, against the fake Alpaca."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.fake_alpaca import FakeAlpaca, running

KEY, SECRET = "PKCLIKEY", "cli-s3cr3t-never-shown"


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
        "reconcile", "--broker", "alpaca", "--account", "ALP", "--store", f"sqlite:///{books}", "--json",
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
        "reconcile", "--broker", "alpaca", "--account", "ALP",
        "--store", f"sqlite:///{tmp_path / 'b.db'}", "--json",
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
