"""Mutated official fixtures through every translator and `Ledger.ingest_raw`, on SQLite and PostgreSQL.

Asserts: no uncaught exception (a translator raises only `TrueupError`), every payload is
stored exactly as received, a payload that did not translate leaves the books as they
were, and every read still works afterwards. `make soak` runs many more seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import _drop_schema, make_store_url
from tests.fuzz.mutations import ACCOUNT, cases
from trueup import Ledger
from trueup.domain.errors import TrueupError
from trueup.domain.messages import BrokerMessage


def _books(ledger: Ledger) -> tuple[object, ...]:
    return (ledger.positions(include_flat=True), ledger.all_orders())


def run_fuzz(url: str, seed: int, count: int) -> None:
    payloads = cases(seed, count)
    with Ledger.open(url) as ledger:
        for name, translate, raw in payloads:
            try:
                translate(raw)
                translated = True
            except TrueupError:
                translated = False
            # anything else propagates and fails the test: translators raise only TrueupError
            before = None if translated else _books(ledger)
            ledger.ingest_raw(raw, translate, account=ACCOUNT, source="fuzz", kind=name)
            if before is not None:
                assert _books(ledger) == before, f"{name}: a payload that did not translate changed the books"
        stored = [e.event.original for e in ledger.events() if isinstance(e.event, BrokerMessage.Received)]
        assert stored == [raw for _, _, raw in payloads]  # every payload, exactly as received
        # every read still works (and the gate still answers)
        ledger.positions()
        ledger.open_orders()
        ledger.discrepancies(include_resolved=True)
        ledger.accounts()
        ledger.projector.rebuild()
        assert ledger.projector.position() == ledger.last_position()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_mutated_fixtures_never_crash_lose_or_poison(kind: str, tmp_path: Path) -> None:
    url = make_store_url(kind, tmp_path)
    try:
        run_fuzz(url, seed=14, count=400)
    finally:
        if kind == "postgres":
            _drop_schema(url.rsplit("schema=", 1)[1])


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_mutated_fixtures_soak(kind: str, seed: int, tmp_path: Path) -> None:
    url = make_store_url(kind, tmp_path)
    try:
        run_fuzz(url, seed=1000 + seed, count=2000)
    finally:
        if kind == "postgres":
            _drop_schema(url.rsplit("schema=", 1)[1])
