"""A full disk, for real: a small tmpfs filled to the last byte under a SQLite ledger.

Reads that need nothing written still work, every write raises `StoreError` (never a raw
sqlite3 or eventsourcing error), and an open that fails releases its files. Needs root and
`mount` (skipped otherwise).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from trueup import Ledger
from trueup.domain.errors import StoreError


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(  # noqa: S603 - fixed arguments
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],  # noqa: S607
        check=False,
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)  # noqa: S603, S607


def fill(directory: Path) -> None:
    """Take every free byte of the filesystem under `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def open_files_under(directory: Path) -> list[str]:
    names = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(directory)):
            names.append(target)
    return names


def test_a_full_disk_reads_refuses_writes_as_store_errors(small_disk: Path) -> None:
    url = f"sqlite:///{small_disk / 'trueup.db'}"
    with Ledger.open(url) as ledger:
        for n in range(5):
            ledger.intend("A1", f"c{n}", "AAPL", "BUY", Decimal(1))
        ledger.all_orders()
    fill(small_disk)
    with Ledger.open(url) as ledger:
        assert [o.client_order_id for o in ledger.all_orders()] == [f"c{n}" for n in range(5)]
        assert ledger.order("A1", "c3").symbol == "AAPL"
        with pytest.raises(StoreError):
            ledger.intend("A1", "c5", "AAPL", "BUY", Decimal(1))
        ledger.order("A1", "c0")  # still readable after the refused write
    assert open_files_under(small_disk) == [], "the ledger left files open"


def test_a_new_ledger_on_a_full_disk_fails_with_store_error_and_holds_nothing(small_disk: Path) -> None:
    fill(small_disk)
    with pytest.raises(StoreError):
        Ledger.open(f"sqlite:///{small_disk / 'new.db'}")
    assert open_files_under(small_disk) == []
