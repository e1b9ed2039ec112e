"""The fast paths give what the plain paths give.

Projection: the read-model tables are the same however the log is cut into pages, and
equal a plain fold.

The projector reads rows undecoded, skips what it does not need, loads states in bulk,
carries states from page to page and batches its writes. None of that may change a row:
tables built incrementally with random page sizes, rebuilt with the default pages and
rebuilt by a fresh projector one event per page must be identical, and the orders and
positions they hold must equal an in-memory fold of `Ledger.events()` through the
domain's own `apply()` (the audit replay, which shares none of those shortcuts).

Ingest: orders and broker-id links loaded many at once from their events are the
aggregates the eventsourcing repository rebuilds one by one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import at, unique_cid
from tests.property.test_convergence import delivery, truth
from tests.property.test_reconcile_property import NOW, scenario
from trueup import Ledger
from trueup.application.unit_of_work import UnitOfWork, load
from trueup.domain.ids import broker_link_id, order_id
from trueup.domain.reports import PositionReport
from trueup.projections.projector import Projector

TABLES = ("trueup_orders", "trueup_positions", "trueup_discrepancies", "trueup_fills")


def table_rows(projector: Projector) -> dict[str, list[tuple[object, ...]]]:
    return {
        name: sorted(tuple(row.values()) for row in projector.rows(f"SELECT * FROM {{{name}}}"))
        for name in TABLES
    }


def books_from_tables(ledger: Ledger) -> dict[str, Any]:
    return {
        "orders": sorted(ledger.all_orders(), key=lambda o: (o.account, o.client_order_id)),
        "positions": sorted(ledger.positions(), key=lambda p: (p.account, p.symbol)),
    }


def books_from_fold(ledger: Ledger) -> dict[str, Any]:
    books = ledger.as_of(ledger.last_position())
    return {
        "orders": sorted(books.orders, key=lambda o: (o.account, o.client_order_id)),
        "positions": sorted(books.positions, key=lambda p: (p.account, p.symbol)),
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_tables_do_not_depend_on_paging_and_equal_the_fold(data: st.DataObject) -> None:
    # Check: reports delivered permuted and repeated, a reconciliation with every kind of
    # repair, read-model catch-ups in pages of random sizes between the writes.
    reports = data.draw(truth())
    batches = data.draw(delivery(reports))
    seen, snapshot = data.draw(scenario())
    with Ledger.open(f"memory://{unique_cid('proj')}", clock=lambda: at(NOW)) as ledger:
        for batch in batches:
            ledger.ingest(batch)
            ledger.projector.catch_up(page_size=data.draw(st.integers(1, 7)))
        ledger.ingest(seen)
        ledger.projector.catch_up(page_size=data.draw(st.integers(1, 7)))
        ledger.reconcile(snapshot, policy="repair")
        ledger.projector.catch_up(page_size=data.draw(st.integers(1, 7)))
        incremental = table_rows(ledger.projector)
        assert incremental["trueup_orders"]

        # Check: the tables hold exactly what a plain fold of the log gives.
        assert books_from_tables(ledger) == books_from_fold(ledger)

        # Check: a rebuild (big pages, states carried between them) gives the same rows...
        ledger.projector.rebuild()
        assert table_rows(ledger.projector) == incremental

        # ...and so does a fresh projector (nothing cached) applying one event per page.
        fresh = Projector(ledger.store)
        with ledger.store.transaction() as cursor:
            cursor.execute("UPDATE trueup_tracking SET position = 0")
            for name in TABLES:
                cursor.execute(f"DELETE FROM {name}")
        fresh.catch_up(page_size=1)
        assert table_rows(fresh) == incremental


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_prefetched_orders_and_links_equal_the_repository_ones(data: st.DataObject) -> None:
    reports = data.draw(truth())
    batches = data.draw(delivery(reports))
    with Ledger.open(f"memory://{unique_cid('pref')}", clock=lambda: at(NOW)) as ledger:
        for batch in batches:
            ledger.ingest(batch)
        idents = {
            ident
            for r in reports
            if not isinstance(r, PositionReport)
            for ident in (
                order_id(r.account, r.client_order_id or ""),
                broker_link_id(r.account, r.broker_order_id or ""),
                order_id(r.account, "never-seen"),
            )
        }
        prefetched = UnitOfWork(ledger.store, ledger.clock)
        prefetched.prefetch(idents)
        for ident in idents:
            # Check: same aggregate (id, version, state) or both absent.
            expected = load(ledger.store, ident)
            got = prefetched.get(ident)
            if expected is None:
                assert got is None
                continue
            assert (got.id, got.version, type(got)) == (expected.id, expected.version, type(expected))
            assert vars(got) == vars(expected)
