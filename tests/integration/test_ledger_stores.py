"""The Ledger on every store: memory, SQLite file and PostgreSQL behave the same."""

from __future__ import annotations

import sys
import threading
from decimal import Decimal

from tests.builders import ACCOUNT, D, fill_report, order_report, unique_cid
from trueup import DiscrepancyKind, Ledger, OrderStatus
from trueup.domain.reports import PositionReport


def snapshot_of(ledger: Ledger) -> tuple[object, ...]:
    """Everything a user can read, for comparing two ledgers."""
    return (
        ledger.open_orders(),
        ledger.positions(include_flat=True),
        [(d.kind, d.key, d.expected, d.actual) for d in ledger.discrepancies(include_resolved=True)],
        [(e.position, e.topic) for e in ledger.events()],
    )


def test_intend_then_broker_reports(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        view = ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10), limit_price=D(101))
        assert view.status is OrderStatus.INTENDED
        ledger.ingest(
            [
                order_report("ACCEPTED", ts=1),
                fill_report("E1", 4, 100, ts=2),
                fill_report("E1", 4, 100, ts=2),  # duplicate: applied once
                order_report("ACCEPTED", filled=8, avg="100.5", ts=3),
            ]
        )
        order = ledger.order(ACCOUNT, "C1")
        assert order is not None
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert order.filled_qty == D(8)
        assert order.inferred_qty == D(4)
        assert order.avg_fill_price == Decimal("100.5")
        [position] = ledger.positions(ACCOUNT)
        assert (position.qty, position.avg_cost) == (D(8), Decimal("100.5"))
        assert [o.client_order_id for o in ledger.open_orders(ACCOUNT)] == ["C1"]
        ledger.ingest([fill_report("E2", 6, 101, ts=4)])
        assert ledger.open_orders(ACCOUNT) == []
        order = ledger.order(ACCOUNT, "C1")
        assert order is not None
        assert order.status is OrderStatus.FILLED
        assert order.inferred_qty == 0
        assert ledger.discrepancies() == []


def test_intend_twice_returns_existing(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        first = ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        again = ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(99))
        assert again == first
        assert sum(1 for e in ledger.events() if e.topic == "trueup:Order.Intended") == 1


def test_report_is_stored_before_the_events_it_causes(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.ingest([order_report("ACCEPTED", ts=1), fill_report("E1", 4, 100, ts=2)])
        topics = [e.topic for e in ledger.events(after=1)]
        assert topics[0] == "trueup:BrokerMessage.Received"
        second = topics.index("trueup:BrokerMessage.Received", 1)
        assert "trueup:Order.StatusUpdated" in topics[1:second]
        assert "trueup:Order.FillBooked" in topics[second:]


def test_refused_input_is_kept_and_raises_a_discrepancy(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.ingest([fill_report("E1", 8, 100, ts=1), fill_report("E2", 5, 100, ts=2)])
        [overfill] = ledger.discrepancies(ACCOUNT)
        assert overfill.kind == DiscrepancyKind.OVERFILL
        assert overfill.severity == "CRITICAL"
        assert overfill.key == "C1"
        # The evidence is the stored raw report, earlier in the log.
        assert overfill.evidence_position is not None
        assert overfill.evidence_position < overfill.position
        evidence = next(e for e in ledger.events(after=overfill.evidence_position - 1))
        assert evidence.topic == "trueup:BrokerMessage.Received"
        assert '"exec_id":"E2"' in evidence.event.payload


def test_unknown_order_is_discovered_and_flagged_orphan(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.ingest([order_report("ACCEPTED", cid=None, broker_id="X77", ts=1)])
        order = ledger.order(ACCOUNT, "~X77")
        assert order is not None
        assert order.origin == "broker"
        assert [d.kind for d in ledger.discrepancies()] == [DiscrepancyKind.ORPHAN_ORDER]
        # A fill naming only the broker id reaches the same order through the link.
        ledger.ingest([fill_report("E1", 2, 50, cid=None, broker_id="X77", ts=2)])
        order = ledger.order(ACCOUNT, "~X77")
        assert order is not None
        assert order.filled_qty == D(2)


def test_fill_with_only_broker_id_finds_our_order(store_url: str) -> None:
    # Kite trades carry order_id but no tag.
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, "K1", "INFY", "BUY", D(5))
        ledger.ingest([order_report("ACCEPTED", cid="K1", broker_id="2201", symbol="INFY", qty=5, ts=1)])
        ledger.ingest([fill_report("T1", 5, 1500, cid=None, broker_id="2201", symbol="INFY", ts=2)])
        order = ledger.order(ACCOUNT, "K1")
        assert order is not None
        assert order.status is OrderStatus.FILLED
        assert ledger.discrepancies() == []


def test_replace_leg_is_chained_to_our_order_not_an_orphan(store_url: str) -> None:
    # Alpaca: a replace makes a new broker order naming the old one in `replaces`.
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, "R1", "AAPL", "BUY", D(10))
        ledger.ingest([order_report("PARTIALLY_FILLED", cid="R1", broker_id="b1", filled=4, avg=100, ts=1)])
        ledger.ingest(
            [
                order_report("REPLACED", cid="R1", broker_id="b1", filled=4, avg=100, ts=2),
                order_report("ACCEPTED", cid="made-up", broker_id="b2", qty=6, ts=2, replaces="b1"),
                fill_report("x1", 6, 101, cid=None, broker_id="b2", ts=3),
            ]
        )
        old, new = ledger.order(ACCOUNT, "R1"), ledger.order(ACCOUNT, "made-up")
        assert old is not None
        assert new is not None
        assert (old.status, old.replaced_by) == (OrderStatus.REPLACED, "made-up")
        assert (new.status, new.replaces, new.filled_qty) == (OrderStatus.FILLED, "R1", D(6))
        assert [(p.symbol, p.qty) for p in ledger.positions()] == [("AAPL", D(10))]
        assert ledger.discrepancies() == []


def test_refused_replace_leg_does_not_supersede_the_order(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, "R2", "AAPL", "BUY", D(10))
        ledger.ingest([order_report("ACCEPTED", cid="R2", broker_id="b1", ts=1)])
        ledger.intend(ACCOUNT, "R2R1", "AAPL", "BUY", D(8), replaces="R2")
        ledger.ingest([order_report("REJECTED", cid="R2R1", broker_id=None, qty=8, ts=2, replaces="b1")])
        old, leg = ledger.order(ACCOUNT, "R2"), ledger.order(ACCOUNT, "R2R1")
        assert old is not None
        assert leg is not None
        assert (old.status, old.replaced_by) == (OrderStatus.ACCEPTED, None)
        assert (leg.status, leg.replaces) == (OrderStatus.REJECTED, "R2")


def test_replace_of_an_order_we_never_knew_is_an_orphan(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.ingest([order_report("ACCEPTED", cid="zz", broker_id="b9", ts=1, replaces="b8")])
        order = ledger.order(ACCOUNT, "zz")
        assert order is not None
        assert order.replaces is None
        assert [d.kind for d in ledger.discrepancies()] == [DiscrepancyKind.ORPHAN_ORDER]


def test_raw_payload_that_fails_translation_is_kept(store_url: str) -> None:
    def translate(payload: str) -> list[object]:
        raise ValueError("missing field 'qty' at $.order")

    with Ledger.open(store_url) as ledger:
        ledger.ingest_raw("{garbled", translate, account=ACCOUNT, source="alpaca", kind="trade_updates")  # type: ignore[arg-type]
        [message] = [e for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"]
        assert message.event.payload == "{garbled"
        [invalid] = ledger.discrepancies()
        assert invalid.kind == DiscrepancyKind.INVALID_REPORT
        assert "missing field 'qty'" in invalid.actual
        assert invalid.evidence_position == message.position


def test_position_report_is_evidence_only(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        report = PositionReport(ACCOUNT, "AAPL", D(5), D(100), order_report("ACCEPTED").ts_event)
        assert ledger.ingest(report) == []
        assert [e.topic for e in ledger.events()] == ["trueup:BrokerMessage.Received"]
        assert ledger.positions() == []


def test_close_and_reopen_gives_identical_state(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.intend(ACCOUNT, "C2", "AAPL", "SELL", D(4))
        ledger.ingest(
            [
                order_report("ACCEPTED", ts=1),
                fill_report("E1", 6, 100, ts=2),
                order_report(
                    "ACCEPTED", cid="C2", broker_id="B2", side="SELL", qty=4, filled=4, avg=105, ts=3
                ),
                order_report("CANCELED", filled=6, avg=100, ts=4),
                order_report("EXPIRED", ts=5),  # conflicting terminal: discrepancy
            ]
        )
        before = snapshot_of(ledger)
        order_before = ledger.order(ACCOUNT, "C1")
    if store_url.startswith("memory://"):
        return  # an in-memory store lives only while it is open
    with Ledger.open(store_url) as reopened:
        assert snapshot_of(reopened) == before
        assert reopened.order(ACCOUNT, "C1") == order_before
        # Rebuilding the read models from position 0 gives the same tables.
        reopened.projector.rebuild()
        assert snapshot_of(reopened) == before


def test_two_ledgers_writing_the_same_order_lose_no_update(store_url: str) -> None:
    cid = unique_cid("RACE")
    fills_per_writer = 15
    with Ledger.open(store_url) as first, Ledger.open(store_url) as second:
        first.intend(ACCOUNT, cid, "AAPL", "BUY", D(1000))
        errors: list[BaseException] = []

        def write(ledger: Ledger, prefix: str) -> None:
            try:
                for i in range(fills_per_writer):
                    ledger.ingest(fill_report(f"{prefix}{i}", 1, 100 + i, cid=cid, broker_id=None, ts=i))
            except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
                errors.append(e)

        threads = [
            threading.Thread(target=write, args=(ledger, p)) for ledger, p in ((first, "A"), (second, "B"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for ledger in (first, second):
            order = ledger.order(ACCOUNT, cid)
            assert order is not None
            assert order.filled_qty == D(2 * fills_per_writer)
            assert len(order.fills) == 2 * fills_per_writer
            [position] = ledger.positions(ACCOUNT)
            assert position.qty == D(2 * fills_per_writer)


def test_reads_racing_writes_of_the_same_order_never_fail(store_url: str) -> None:
    # eventsourcing's repository fast-forwards a cached aggregate in place and deep-copies it
    # outside its lock; without the store's own lock a reader copying the order while a
    # writer's get fast-forwards it failed with "dictionary changed size during iteration"
    # (every run, at this switch interval).
    cid = unique_cid("READ")
    errors: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: make the race likely
    try:
        with Ledger.open(store_url) as ledger:
            ledger.intend(ACCOUNT, cid, "AAPL", "BUY", D(1000))
            done = threading.Event()

            def write() -> None:
                try:
                    for i in range(60):
                        ledger.ingest(fill_report(f"W{i}", 1, 100, cid=cid, broker_id=None, ts=i))
                except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
                    errors.append(e)
                finally:
                    done.set()

            def read() -> None:
                try:
                    while not done.is_set():
                        ledger.order(ACCOUNT, cid)
                except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
                    errors.append(e)

            threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            order = ledger.order(ACCOUNT, cid)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert order is not None
    assert order.filled_qty == D(60)


def _table_rows(ledger: Ledger) -> dict[str, list[tuple[object, ...]]]:
    tables = ("trueup_orders", "trueup_positions", "trueup_discrepancies", "trueup_fills")
    return {
        name: sorted(tuple(row.values()) for row in ledger.projector.rows(f"SELECT * FROM {{{name}}}"))
        for name in tables
    }


def test_rebuild_from_position_zero_equals_incremental_projection(store_url: str) -> None:
    from tests.builders import at
    from trueup import BrokerSnapshot

    with Ledger.open(store_url, clock=lambda: at(100)) as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.intend(ACCOUNT, "C2", "MSFT", "SELL", D(5))
        ledger.ingest(
            [
                order_report("ACCEPTED", ts=1),
                fill_report("E1", 4, 100, ts=2, commission="0.5"),
                order_report("ACCEPTED", filled=7, avg=101, ts=3),  # inferred 3
                order_report("ACCEPTED", cid="C2", broker_id="B2", symbol="MSFT", side="SELL", qty=5, ts=1),
                fill_report(
                    "0001.aa.01.01", 2, 300, cid="C2", broker_id="B2", symbol="MSFT", side="SELL", ts=2
                ),
                fill_report(
                    "0001.aa.01.02", 3, 301, cid="C2", broker_id="B2", symbol="MSFT", side="SELL", ts=3
                ),
                fill_report("E9", 99, 1, ts=4),  # overfill: refused, discrepancy
            ]
        )
        ledger.reconcile(
            BrokerSnapshot(
                account=ACCOUNT,
                as_of=at(99),
                orders=[order_report("ACCEPTED", cid=None, broker_id="X1", symbol="IBM", ts=5)],
                fills=[fill_report("E2", 3, 102, ts=5)],
                positions=[
                    PositionReport(ACCOUNT, "AAPL", D(7), Decimal("100.857142857"), at(99)),
                    PositionReport(ACCOUNT, "TSLA", D(-2), D(250), at(99)),
                ],
            )
        )
        incremental = _table_rows(ledger)
        assert all(incremental.values())  # every table has rows to compare
        ledger.projector.rebuild()
        assert _table_rows(ledger) == incremental
