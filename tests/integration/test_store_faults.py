"""The store under faults: concurrent opens on PostgreSQL, a read-only SQLite file, secrets in URLs."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, _drop_schema
from trueup import Ledger
from trueup.adapters.eventstore.store import parse_store_url, redact

OPENERS = 6


def _open_and_read(
    url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    os.environ.setdefault("EVENTSOURCING_DISABLE_REDEFINITION_CHECK", "y")
    barrier.wait()
    try:
        with Ledger.open(url) as ledger:
            ledger.positions()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test, which names it
        results.put(f"{type(e).__module__}.{type(e).__name__}: {e}")


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", range(3))
def test_processes_opening_a_fresh_schema_at_once_all_succeed(attempt: int) -> None:
    """Before: "tuple concurrently updated" or a raw IntegrityError on pg_type (most rounds)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(OPENERS), context.Queue()
    processes = [context.Process(target=_open_and_read, args=(url, barrier, results)) for _ in range(OPENERS)]
    try:
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    finally:
        _drop_schema(schema)
    assert outcomes == ["ok"] * OPENERS, f"round {attempt}"


_READER = textwrap.dedent(
    """
    import os, sys
    os.environ.setdefault("EVENTSOURCING_DISABLE_REDEFINITION_CHECK", "y")
    from decimal import Decimal
    from trueup import Ledger
    from trueup.domain.errors import StoreError
    with Ledger.open("sqlite:///" + sys.argv[1]) as ledger:
        print("orders", sorted(o.client_order_id for o in ledger.all_orders()))
        print("order", ledger.order("A1", "c1").symbol)
        try:
            ledger.intend("A1", "c9", "X", "BUY", Decimal(1))
        except StoreError as e:
            print("write refused", type(e).__name__)
    """
)


def _as_reader(path: Path) -> subprocess.CompletedProcess[str]:
    """Run the reader on `path` in a process of its own."""
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _READER, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that becomes read-only for this user on `_make_read_only` (a read-only
    bind mount when we are root, whom permissions do not stop; file modes otherwise)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    yield directory
    if (tmp_path / "mounted").exists():
        subprocess.run(["umount", str(directory)], check=True)  # noqa: S603, S607
    directory.chmod(0o755)


def _make_read_only(directory: Path) -> None:
    if os.geteuid() != 0:
        for f in directory.iterdir():
            f.chmod(0o444)
        directory.chmod(0o555)
        return
    bind = subprocess.run(["mount", "--bind", str(directory), str(directory)], check=False)  # noqa: S603, S607
    if bind.returncode != 0:
        pytest.skip("running as root without mount: cannot make a file read-only")
    (directory.parent / "mounted").touch()
    subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)  # noqa: S603, S607


def test_a_read_only_sqlite_file_opens_for_reading(read_only_dir: Path) -> None:
    """Before: Ledger.open raised a raw sqlite3.OperationalError ("attempt to write a readonly database")."""
    path = read_only_dir / "trueup.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        ledger.intend("A1", "c1", "AAPL", "BUY", Decimal(1))
        ledger.all_orders()  # read models caught up
    _make_read_only(read_only_dir)
    done = _as_reader(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["orders ['c1']", "order AAPL", "write refused StoreError"]


def test_a_read_only_file_behind_its_read_models_refuses_stale_reads(read_only_dir: Path) -> None:
    path = read_only_dir / "trueup.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        ledger.intend("A1", "c1", "AAPL", "BUY", Decimal(1))
        ledger.all_orders()
        ledger.intend("A1", "c2", "MSFT", "BUY", Decimal(1))  # the read models lag this one
    _make_read_only(read_only_dir)
    done = _as_reader(path)
    assert done.returncode == 1
    assert "StoreError" in done.stderr
    assert "behind the log" in done.stderr


def test_a_password_in_the_query_is_redacted_and_used() -> None:
    url = "postgresql://trader@db.example:5432/books?schema=s1&password=hunter2"
    assert "hunter2" not in redact(url)
    assert redact(url).endswith("password=***")
    assert "hunter2" not in redact("postgresql://trader:hunter2@db.example/books?password=hunter2")
    assert parse_store_url(url).postgres_conninfo["password"] == "hunter2"  # noqa: S105 - a test value
