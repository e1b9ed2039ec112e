"""A ledger and a paper broker never share a SQLite file: each refuses the other's at open.

Both create their tables ``IF NOT EXISTS``; before the check, each added its tables beside
the other's and carried on. The refusal names the file and the tables it found, and leaves
the file as it was.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pytest

from trueup import Ledger
from trueup.adapters.paper.broker import PaperBroker
from trueup.domain.errors import ConfigError, StoreError


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_the_ledger_refuses_a_paper_brokers_file(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    PaperBroker(path, account="PAPER", seed=1).disconnect()
    before = tables(path)
    with pytest.raises(StoreError, match="paper broker") as caught:
        Ledger.open(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert "outbox" in str(caught.value)  # what the file holds
    assert tables(path) == before  # no ledger table was added


def test_the_paper_broker_refuses_a_ledgers_file(tmp_path: Path) -> None:
    path = tmp_path / "books.db"
    with Ledger.open(f"sqlite:///{path}") as ledger:
        ledger.intend(account="PAPER", client_order_id="c1", symbol="AAPL", side="BUY", quantity=Decimal(1))
    before = tables(path)
    with pytest.raises(ConfigError, match="ledger") as caught:
        PaperBroker(path, account="PAPER", seed=1)
    assert str(path) in str(caught.value)
    assert "stored_events" in str(caught.value)
    assert tables(path) == before


def test_each_still_opens_its_own_file_and_a_new_one(tmp_path: Path) -> None:
    PaperBroker(tmp_path / "p.db", account="PAPER", seed=1).disconnect()
    PaperBroker(tmp_path / "p.db", account="PAPER", seed=1).disconnect()
    Ledger.open(f"sqlite:///{tmp_path / 'l.db'}").close()
    Ledger.open(f"sqlite:///{tmp_path / 'l.db'}").close()
    empty = tmp_path / "empty.db"
    empty.touch()
    Ledger.open(f"sqlite:///{empty}").close()
