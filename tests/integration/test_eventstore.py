"""The shared event-store helpers on every backend: select_in, read_log and TrackingRow."""

from __future__ import annotations

import functools
import itertools

import msgspec
import pytest

from tests.builders import ACCOUNT, D, fill_report, order_report
from trueup import Ledger
from trueup.adapters.eventstore.log import read_log
from trueup.adapters.eventstore.store import IN_IDS, first, select_in
from trueup.domain.order import OrderState
from trueup.projections.tracking import TrackingRow


def add_orders(ledger: Ledger, count: int) -> list[str]:
    cids = [f"C{i}" for i in range(count)]
    for cid in cids:
        ledger.intend(ACCOUNT, cid, "AAPL", "BUY", D(10))
        ledger.ingest(
            [
                order_report("ACCEPTED", cid=cid, broker_id=f"B{cid}", ts=1),
                fill_report(f"E{cid}", 10, 100, cid=cid, broker_id=f"B{cid}", ts=2),
            ]
        )
    ledger.projector.catch_up()
    return cids


def test_select_in_serves_the_ledgers_state_query_in_chunks(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        cids = add_orders(ledger, 5)
        wanted = sorted([*cids[:4], "unknown"])
        statement = (
            "SELECT client_order_id, position FROM {trueup_orders} "
            f"WHERE account = ? AND client_order_id IN {IN_IDS} ORDER BY client_order_id"
        )
        # Fixed leading parameters, ids in chunks of 2, the rows of every chunk in turn.
        rows = list(select_in(ledger.projector.tuples, statement, wanted, [ACCOUNT], chunk=2))
        assert [cid for cid, _ in rows] == cids[:4]
        every = ledger.projector.tuples(
            "SELECT client_order_id, position FROM {trueup_orders} WHERE account = ?", [ACCOUNT]
        )
        assert dict(rows) == {cid: position for cid, position in every if cid in wanted}


def test_select_in_on_a_cursor_and_its_edge_cases(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        cids = add_orders(ledger, 3)
        store = ledger.store
        ids = [str(row["order_id"]) for row in ledger.projector.rows("SELECT order_id FROM {trueup_orders}")]
        statement = f"SELECT state FROM {store.table('trueup_orders')} WHERE order_id IN {IN_IDS}"
        decode = msgspec.json.Decoder(OrderState).decode
        with store.reading() as cursor:
            run = functools.partial(store.fetchall, cursor)
            rows = list(select_in(run, statement, ids, chunk=1))
            assert sorted(decode(first(r)).client_order_id for r in rows) == cids
            assert list(select_in(run, statement, [])) == []  # no ids: no query
            with pytest.raises(ValueError, match="select_in needs"):
                list(select_in(run, "SELECT state FROM t WHERE order_id = ?", ids))


def test_read_log_pages_the_log_and_stops_where_told(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        add_orders(ledger, 3)
        everything = list(read_log(ledger.store, page_size=2))
        assert [e.position for e in everything] == [e.position for e in read_log(ledger.store)]
        start, middle = everything[1], everything[len(everything) // 2]
        # until=int: inclusive position.
        assert [e.position for e in read_log(ledger.store, start.position, middle.position, page_size=3)] == [
            e.position for e in everything if start.position < e.position <= middle.position
        ]
        # until=datetime: up to the first event recorded after it.
        expected = itertools.takewhile(
            lambda e: e.timestamp <= middle.timestamp, (e for e in everything if e.position > start.position)
        )
        got = read_log(ledger.store, start.position, middle.timestamp, page_size=2)
        assert [e.position for e in got] == [e.position for e in expected]


def test_tracking_row_moves_only_as_told(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        row = TrackingRow(ledger.store, "trueup_consumers", "probe")
        with ledger.store.transaction() as cursor:
            row.create_table(cursor)
            assert row.read(cursor) is None
            row.insert(cursor, 5)
            row.insert(cursor, 9)  # an existing row keeps its position
            assert row.read(cursor) == 5
            assert not row.move(cursor, 7, expected=4)  # not where we started: nothing moves
            assert row.move(cursor, 7, expected=5)
            row.move_forward(cursor, 6)  # never backwards
            assert row.read(cursor) == 7
            row.move_forward(cursor, 8)
            assert row.read(cursor) == 8
            row.reset(cursor)
            assert row.read(cursor) == 0
