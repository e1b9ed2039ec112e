"""Reconciliation scenarios: local state + a broker snapshot -> the events and state expected.

Named by situation: cold start (empty books), warm start (books from an earlier session),
positions, and runtime checks (the gate). Each runs on an in-memory store with a fixed clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from tests.builders import ACCOUNT, D, at, fill_report, order_report, unique_cid
from trueup import BrokerSnapshot, Ledger, NotReadyError, OrderStatus, PositionReport, Side
from trueup.domain.gate import OVERRIDE_PERMISSION, GateState
from trueup.domain.reconcile import PositionPolicy
from trueup.domain.reports import FillReport, OrderReport

NOW = 100.0


def snap(
    orders: list[OrderReport] | None = None,
    fills: list[FillReport] | None = None,
    positions: list[PositionReport] | None = None,
    *,
    complete: bool = False,
    as_of: float = NOW - 1,
) -> BrokerSnapshot:
    return BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(as_of),
        orders=orders,
        fills=fills,
        positions=positions,
        complete_history=complete,
    )


def pos(symbol: str, qty: str | int, avg: str | int) -> PositionReport:
    return PositionReport(ACCOUNT, symbol, D(qty), D(avg), at(NOW - 1))


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('scn')}", clock=lambda: at(NOW)) as opened:
        yield opened


def topics(result: object) -> list[str]:
    return [type(e).__qualname__ for e in result.events]  # type: ignore[attr-defined]


def kinds_of(result: object) -> list[str]:
    return [e.kind for e in result.discrepancies]  # type: ignore[attr-defined]


def order_kinds(result: object) -> list[str]:
    """Discrepancy kinds about orders: these scenarios leave the broker's positions unfetched."""
    return [k for k in kinds_of(result) if k != "STALE_DATA"]


def sent(ledger: Ledger, cid: str = "C1", qty: int = 10, symbol: str = "AAPL", side: str = "BUY") -> None:
    """An order we intended and the broker acknowledged."""
    ledger.intend(ACCOUNT, cid, symbol, side, D(qty))
    ledger.ingest(
        order_report(
            "PENDING_NEW", cid=cid, broker_id=f"B-{cid}", qty=qty, symbol=symbol, side=Side(side), ts=1
        )
    )


# -- cold start ------------------------------------------------------------------------------


def test_cold_start_flat_broker_stores_nothing_and_opens_the_gate(ledger: Ledger) -> None:
    ledger.begin_startup(ACCOUNT)
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[], complete=True))
    assert result.events == []
    assert result.gate is GateState.READY


def test_cold_start_orphan_order_is_discovered_and_quarantines_every_strategy(ledger: Ledger) -> None:
    result = ledger.reconcile(
        snap(
            orders=[order_report("ACCEPTED", cid=None, broker_id="X1", symbol="TSLA")], fills=[], positions=[]
        )
    )
    assert kinds_of(result) == ["ORPHAN_ORDER"]
    assert ledger.quarantined_scopes(ACCOUNT) == {"*:TSLA"}
    [(orphan, scope)] = ledger.orphan_orders(ACCOUNT)
    assert (orphan.client_order_id, scope) == ("~X1", "*:TSLA")
    order = ledger.order(ACCOUNT, "~X1")
    assert order is not None
    assert (order.origin, order.status) == ("broker", OrderStatus.ACCEPTED)
    with pytest.raises(NotReadyError, match=r"orphan order quarantines \*:TSLA"):
        ledger.check_new_order(ACCOUNT, "TSLA", "BUY", D(1), strategy="momo")


def test_cold_start_orphan_in_claimed_symbol_quarantines_only_the_claimant(ledger: Ledger) -> None:
    ledger.claim(ACCOUNT, "TSLA", "momo")
    ledger.reconcile(
        snap(
            orders=[order_report("ACCEPTED", cid=None, broker_id="X1", symbol="TSLA")], fills=[], positions=[]
        )
    )
    assert ledger.quarantined_scopes(ACCOUNT) == {"momo:TSLA"}
    with pytest.raises(NotReadyError, match="momo:TSLA"):
        ledger.check_new_order(ACCOUNT, "TSLA", "BUY", D(1), strategy="momo")
    ledger.check_new_order(ACCOUNT, "TSLA", "BUY", D(1), strategy="meanrev")


def test_cold_start_broker_position_we_lack_is_repaired(ledger: Ledger) -> None:
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[pos("AAPL", 100, "150.25")]))
    assert kinds_of(result) == ["MISSING_LOCAL_POSITION"]
    assert len(result.position_syncs) == 1
    assert [(f.qty, f.price) for f in result.position_syncs[0].fills] == [(D(100), Decimal("150.25"))]
    [position] = ledger.positions(ACCOUNT)
    assert (position.qty, position.avg_cost) == (D(100), Decimal("150.25"))
    assert ledger.discrepancies(ACCOUNT) == []  # repaired: resolved
    assert result.gate is GateState.READY


def test_cold_start_broker_position_under_alert_is_only_reported(ledger: Ledger) -> None:
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[pos("AAPL", 100, 150)]), policy="alert")
    assert kinds_of(result) == ["MISSING_LOCAL_POSITION"]
    assert result.position_syncs == []
    assert ledger.positions(ACCOUNT) == []
    assert [d.kind for d in ledger.discrepancies(ACCOUNT)] == ["MISSING_LOCAL_POSITION"]


def test_cold_start_failed_orders_query_is_stale_never_missing(ledger: Ledger) -> None:
    sent(ledger)
    ledger.begin_startup(ACCOUNT)
    result = ledger.reconcile(snap(orders=None, fills=None, positions=[], complete=True))
    assert sorted(kinds_of(result)) == ["STALE_DATA", "STALE_DATA"]
    assert result.stale
    assert result.gate is GateState.BLOCKED
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.PENDING_NEW  # not "missing", not canceled


def test_stale_data_names_the_brokers_reason_in_the_discrepancy_and_the_gate(ledger: Ledger) -> None:
    failures = {"orders": "HTTP 503", "fills": "HTTP 503", "positions": "token expired"}
    snapshot = msgspec.structs.replace(snap(orders=None, fills=None, positions=None), failures=failures)
    result = ledger.reconcile(snapshot)
    assert result.gate is GateState.BLOCKED
    details = sorted(d.detail for d in ledger.discrepancies(ACCOUNT))
    assert [d.split(";")[0] for d in details] == [
        "broker fills unknown (HTTP 503)",
        "broker orders unknown (HTTP 503)",
        "broker positions unknown (token expired)",
    ]
    _, reasons, _ = ledger.gate_details(ACCOUNT)
    assert reasons == (
        "broker data stale: orders, fills unknown (HTTP 503) (see STALE_DATA)",
        "broker data stale: positions unknown (token expired) (see STALE_DATA)",
    )
    # The same failure next cycle, in other words, is the same open discrepancy, not three more.
    again = {part: f"{why} again" for part, why in failures.items()}
    ledger.reconcile(msgspec.structs.replace(snapshot, failures=again))
    assert len(ledger.discrepancies(ACCOUNT)) == 3


def test_cold_start_failed_positions_query_is_never_flat(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 10, 100, cid=None, broker_id="X9"))
    result = ledger.reconcile(snap(orders=[], fills=[], positions=None))
    assert kinds_of(result) == ["STALE_DATA"]
    assert "NAKED_POSITION" not in kinds_of(result)
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(10)


def test_cold_start_snapshot_too_old_concludes_nothing(ledger: Ledger) -> None:
    result = ledger.reconcile(
        snap(
            orders=[order_report("ACCEPTED", cid=None, broker_id="X1")],
            positions=[pos("AAPL", 5, 1)],
            as_of=NOW - 3600,
        )
    )
    assert kinds_of(result) == ["STALE_DATA"]
    assert ledger.order(ACCOUNT, "~X1") is None
    assert ledger.positions(ACCOUNT) == []
    assert result.gate is GateState.BLOCKED


# -- warm start ------------------------------------------------------------------------------


def test_warm_broker_filled_without_fills_books_one_inferred_fill(ledger: Ledger) -> None:
    sent(ledger)
    result = ledger.reconcile(
        snap(
            orders=[order_report("FILLED", cid="C1", broker_id="B-C1", filled=10, avg=101)],
            fills=[],
            positions=[pos("AAPL", 10, 101)],
        )
    )
    assert topics(result).count("Order.FillInferred") == 1
    assert len(result.order_updates) == 1
    update = result.order_updates[0]
    assert (update.status_before, update.status_after) == (OrderStatus.PENDING_NEW, OrderStatus.FILLED)
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert (order.filled_qty, order.inferred_qty, order.avg_fill_price) == (D(10), D(10), D(101))
    assert kinds_of(result) == []


def test_warm_cumulative_ahead_books_inferred_at_matching_price(ledger: Ledger) -> None:
    sent(ledger)
    ledger.ingest(fill_report("E1", 5, 3000, cid="C1", broker_id="B-C1"))
    result = ledger.reconcile(
        snap(orders=[order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=8, avg="3002.50")], fills=[])
    )
    [inferred] = [e for e in result.events if type(e).__qualname__ == "Order.FillInferred"]
    assert (inferred.qty, inferred.price) == (D(3), Decimal("3006.6666666667"))


def test_warm_broker_ahead_derives_events_in_lifecycle_order(ledger: Ledger) -> None:
    sent(ledger)
    result = ledger.reconcile(
        snap(
            orders=[
                order_report("CANCELED", cid="C1", broker_id="B-C1", filled=4, avg="100.5", qty=10, ts=9)
            ],
            fills=[
                fill_report("E2", 2, 101, cid="C1", broker_id="B-C1", ts=6),
                fill_report("E1", 2, 100, cid="C1", broker_id="B-C1", ts=5),
            ],
        )
    )
    order_events = [
        (type(e).__qualname__, getattr(e, "status", None) or getattr(e, "exec_id", None))
        for e in result.events
        if type(e).__qualname__.startswith("Order.")
    ]
    assert order_events == [
        ("Order.StatusUpdated", OrderStatus.ACCEPTED),
        ("Order.FillBooked", "E1"),
        ("Order.StatusUpdated", OrderStatus.PARTIALLY_FILLED),
        ("Order.FillBooked", "E2"),
        ("Order.StatusUpdated", OrderStatus.CANCELED),
        ("Order.Updated", None),
    ]
    # The snapshot is stored first, as the evidence of everything derived from it.
    logged = [
        e
        for e in ledger.events()
        if e.topic.startswith(("trueup:BrokerMessage", "trueup:Order.StatusUpdated"))
    ]
    assert logged[-4].event.source == "snapshot"
    assert all(e.evidence_id == logged[-4].event.originator_id for e in result.order_updates)


def test_warm_same_fill_twice_in_snapshot_is_applied_once(ledger: Ledger) -> None:
    sent(ledger)
    fill = fill_report("E1", 3, 100, cid="C1", broker_id="B-C1")
    ledger.reconcile(
        snap(
            orders=[order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=3, avg=100)],
            fills=[fill, fill],
        )
    )
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert (order.filled_qty, len(order.fills)) == (D(3), 1)


def test_warm_snapshot_fills_supersede_an_inferred_fill(ledger: Ledger) -> None:
    sent(ledger)
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=6, avg=100, ts=2))
    ledger.reconcile(
        snap(
            orders=[order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=6, avg=100, ts=3)],
            fills=[fill_report("E1", 6, 100, cid="C1", broker_id="B-C1")],
        )
    )
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert (order.filled_qty, order.inferred_qty) == (D(6), 0)
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(6)


def test_warm_conflicting_terminal_keeps_ours_and_reports(ledger: Ledger) -> None:
    sent(ledger)
    ledger.ingest(order_report("CANCELED", cid="C1", broker_id="B-C1", ts=2))
    result = ledger.reconcile(
        snap(orders=[order_report("EXPIRED", cid="C1", broker_id="B-C1", ts=3)], fills=[])
    )
    assert order_kinds(result) == ["STATUS_CONFLICT"]
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.CANCELED


def test_warm_cancel_raced_by_fill_becomes_filled(ledger: Ledger) -> None:
    sent(ledger)
    ledger.ingest(
        [
            fill_report("E1", 6, 100, cid="C1", broker_id="B-C1"),
            order_report("CANCELED", cid="C1", broker_id="B-C1", filled=6, avg=100, ts=3),
        ]
    )
    ledger.reconcile(
        snap(
            orders=[order_report("FILLED", cid="C1", broker_id="B-C1", filled=10, avg=100, ts=4)],
            fills=[fill_report("E2", 4, 100, cid="C1", broker_id="B-C1", ts=3)],
        )
    )
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert (order.status, order.filled_qty, order.inferred_qty) == (OrderStatus.FILLED, D(10), 0)


def test_warm_broker_cumulative_behind_our_executions_is_a_fill_mismatch(ledger: Ledger) -> None:
    sent(ledger)
    ledger.ingest(fill_report("E1", 6, 100, cid="C1", broker_id="B-C1"))
    result = ledger.reconcile(
        snap(orders=[order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=4, avg=100, ts=3)], fills=[])
    )
    assert order_kinds(result) == ["FILL_MISMATCH"]
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.filled_qty == D(6)  # filled never decreases


def test_warm_absence_from_open_orders_list_proves_nothing(ledger: Ledger) -> None:
    sent(ledger)
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[], complete=False))
    assert result.events == []


def test_warm_absence_from_complete_history_is_missing_at_broker(ledger: Ledger) -> None:
    sent(ledger)
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[], complete=True))
    assert result.gate is GateState.READY  # an error, not critical
    assert order_kinds(result) == ["MISSING_AT_BROKER"]
    assert result.gate is GateState.READY  # an error, not critical


@pytest.mark.parametrize("sent_in_window", [True, False])
def test_warm_absence_from_a_day_scoped_list_is_missing_and_says_whether_it_is_too_old(
    ledger: Ledger, sent_in_window: bool
) -> None:
    # Kite's and IB Gateway's lists start at a day boundary: an open order they do not list
    # is missing either way; one sent before the window cannot be verified and says so.
    sent(ledger)  # created at NOW (the ledger's clock)
    since = at(NOW - 60) if sent_in_window else at(NOW + 60)
    day_scoped = msgspec.structs.replace(snap(orders=[], fills=[], positions=[]), history_since=since)
    result = ledger.reconcile(day_scoped)
    assert order_kinds(result) == ["MISSING_AT_BROKER"]
    [missing] = [d for d in ledger.discrepancies(ACCOUNT) if d.kind == "MISSING_AT_BROKER"]
    assert ("history window" in missing.actual) is not sent_in_window
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.PENDING_NEW  # never closed on absence alone


def test_warm_missing_for_n_cycles_becomes_lost_and_blocks(ledger: Ledger) -> None:
    sent(ledger)
    found = []
    for cycle in range(3):
        found += order_kinds(
            ledger.reconcile(snap(orders=[], fills=[], positions=[], complete=True, as_of=NOW - 10 + cycle))
        )
    assert found == ["MISSING_AT_BROKER", "LOST"]
    assert ledger.gate(ACCOUNT) is GateState.BLOCKED
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.PENDING_NEW  # nothing re-sent, nothing invented


def test_warm_missing_order_listed_again_is_resolved(ledger: Ledger) -> None:
    sent(ledger)
    ledger.reconcile(snap(orders=[], fills=[], positions=[], complete=True))
    ledger.reconcile(
        snap(
            orders=[order_report("PENDING_NEW", cid="C1", broker_id="B-C1", ts=1)],
            fills=[],
            positions=[],
            complete=True,
            as_of=NOW - 0.5,
        )
    )
    assert ledger.discrepancies(ACCOUNT) == []


def test_warm_intended_order_never_sent_is_not_missing(ledger: Ledger) -> None:
    ledger.intend(ACCOUNT, "C9", "AAPL", "BUY", D(1))
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[], complete=True))
    assert result.events == []


def test_warm_same_snapshot_twice_stores_nothing_new(ledger: Ledger) -> None:
    sent(ledger)
    snapshot = snap(
        orders=[
            order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=4, avg=100, ts=3),
            order_report("ACCEPTED", cid=None, broker_id="X1", ts=2),
        ],
        fills=[fill_report("E1", 4, 100, cid="C1", broker_id="B-C1")],
        positions=[pos("AAPL", 7, 100), pos("MSFT", -3, 50)],
    )
    first = ledger.reconcile(snapshot)
    assert first.events != []
    position = sum(1 for _ in ledger.events())
    assert ledger.reconcile(snapshot).events == []
    assert sum(1 for _ in ledger.events()) == position


def test_warm_same_snapshot_after_restart_stores_nothing_new(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'books.db'}"
    snapshot = snap(
        orders=[order_report("FILLED", cid=None, broker_id="X1", filled=10, avg=5, ts=2)],
        fills=[],
        positions=[pos("AAPL", 10, 5), pos("IBM", 1, 100)],
    )
    with Ledger.open(url, clock=lambda: at(NOW)) as ledger:
        assert ledger.reconcile(snapshot).events != []
        count = sum(1 for _ in ledger.events())
    with Ledger.open(url, clock=lambda: at(NOW)) as ledger:
        assert ledger.reconcile(snapshot).events == []
        assert sum(1 for _ in ledger.events()) == count


def test_warm_unknown_status_in_snapshot_changes_nothing(ledger: Ledger) -> None:
    sent(ledger)
    result = ledger.reconcile(
        snap(orders=[order_report("UNKNOWN", cid="C1", broker_id="B-C1", raw="TRADE_HALT", ts=3)], fills=[])
    )
    assert order_kinds(result) == ["UNKNOWN_STATUS"]
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.PENDING_NEW


def test_warm_fills_of_unlisted_orders_reach_their_order(ledger: Ledger) -> None:
    # IB lists the day's executions; the order may be missing from the orders part.
    sent(ledger)
    ledger.reconcile(snap(orders=[], fills=[fill_report("E1", 3, 100, cid=None, broker_id="B-C1")]))
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.filled_qty == D(3)


def test_warm_orphan_quarantine_lifts_when_the_orphan_is_done(ledger: Ledger) -> None:
    ledger.reconcile(
        snap(orders=[order_report("ACCEPTED", cid=None, broker_id="X1", ts=1)], fills=[], positions=[])
    )
    assert ledger.quarantined_scopes(ACCOUNT) == {"*:AAPL"}
    ledger.reconcile(
        snap(
            orders=[order_report("CANCELED", cid=None, broker_id="X1", ts=2)],
            fills=[],
            positions=[],
            as_of=NOW - 0.5,
        )
    )
    assert ledger.quarantined_scopes(ACCOUNT) == frozenset()
    assert ledger.orphan_orders(ACCOUNT) == []


# -- positions -------------------------------------------------------------------------------


def test_positions_long_100_vs_broker_short_50_books_two_synthetic_fills(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 100, 10, cid=None, broker_id="X1"))
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[pos("AAPL", -50, 12)]))
    [synced] = result.position_syncs
    # Our 100 close at our own cost (no trade price is known: nothing realized); the
    # broker's comparable average opens the short lot.
    assert [(f.qty, f.price) for f in synced.fills] == [(D(-100), D(10)), (D(-50), D(12))]
    [position] = ledger.positions(ACCOUNT)
    assert (position.qty, position.avg_cost, position.realized_pnl) == (D(-50), D(12), D(0))
    assert "POSITION_MISMATCH" in kinds_of(result)


def test_positions_naked_position_is_critical_and_repaired(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 10, 100, cid=None, broker_id="X1"))
    ledger.begin_startup(ACCOUNT)
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[]))
    [naked] = result.discrepancies
    assert (naked.kind, naked.severity) == ("NAKED_POSITION", "CRITICAL")
    assert ledger.positions(ACCOUNT) == []
    assert [
        d.kind for d in ledger.discrepancies(ACCOUNT, include_resolved=True) if d.kind == "NAKED_POSITION"
    ][0] == "NAKED_POSITION"
    assert all(d.kind != "NAKED_POSITION" for d in ledger.discrepancies(ACCOUNT))


def test_positions_naked_position_under_alert_blocks_the_gate(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 10, 100, cid=None, broker_id="X1"))
    result = ledger.reconcile(
        snap(
            orders=[order_report("FILLED", cid=None, broker_id="X1", filled=10, avg=100)],
            fills=[],
            positions=[],
        ),
        policy="alert",
    )
    assert "NAKED_POSITION" in kinds_of(result)
    assert result.gate is GateState.BLOCKED
    with pytest.raises(NotReadyError, match=r"BLOCKED.*NAKED_POSITION"):
        ledger.check_new_order(ACCOUNT, "MSFT", "BUY", D(1))


def test_positions_lock_policy_locks_the_symbol_until_it_agrees(ledger: Ledger) -> None:
    sent(ledger, "C1", qty=10)
    ledger.ingest(fill_report("E1", 10, 100, cid="C1", broker_id="B-C1"))
    ledger.reconcile(snap(orders=[], fills=[], positions=[pos("AAPL", 12, 100)]), policy=PositionPolicy.LOCK)
    with pytest.raises(NotReadyError, match="AAPL refused: symbol locked"):
        ledger.check_new_order(ACCOUNT, "AAPL", "BUY", D(1))
    ledger.check_new_order(ACCOUNT, "MSFT", "BUY", D(1))
    sent(ledger, "C2", qty=2)
    ledger.ingest(fill_report("E2", 2, 100, cid="C2", broker_id="B-C2"))
    ledger.reconcile(
        snap(orders=[], fills=[], positions=[pos("AAPL", 12, 100)], as_of=NOW - 0.5),
        policy=PositionPolicy.LOCK,
    )
    ledger.check_new_order(ACCOUNT, "AAPL", "BUY", D(1))
    assert ledger.discrepancies(ACCOUNT) == []  # the mismatch resolved itself


def test_positions_same_quantity_other_average_is_synced_to_broker(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 10, 100, cid=None, broker_id="X1"))
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[pos("AAPL", 10, "100.10")]))
    assert kinds_of(result) == ["POSITION_MISMATCH"]
    assert result.discrepancies[0].severity == "WARNING"
    [position] = ledger.positions(ACCOUNT)
    assert (position.qty, position.avg_cost) == (D(10), Decimal("100.1"))


def test_positions_average_on_another_basis_is_not_compared_but_quantity_is(ledger: Ledger) -> None:
    # IB's avgCost includes commissions: only the quantity can be held against ours.
    ledger.ingest(fill_report("E1", 10, 100, cid=None, broker_id="X1"))
    with_fees = msgspec.structs.replace(pos("AAPL", 10, "100.10"), avg_cost_comparable=False)
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[with_fees]))
    assert kinds_of(result) == []
    [position] = ledger.positions(ACCOUNT)
    assert (position.qty, position.avg_cost) == (D(10), D(100))  # ours, not overwritten
    short = msgspec.structs.replace(with_fees, qty=D(8))
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[short]))
    assert kinds_of(result) == ["POSITION_MISMATCH"]


def test_positions_that_agree_store_nothing(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 10, 100, cid=None, broker_id="X1"))
    ledger.reconcile(
        snap(
            orders=[order_report("FILLED", cid=None, broker_id="X1", filled=10, avg=100)],
            fills=[],
            positions=[pos("AAPL", 10, 100)],
        )
    )
    result = ledger.reconcile(
        snap(
            orders=[order_report("FILLED", cid=None, broker_id="X1", filled=10, avg=100)],
            fills=[],
            positions=[pos("AAPL", 10, 100)],
            as_of=NOW - 0.5,
        )
    )
    assert result.events == []


def test_positions_fresh_snapshot_resolves_earlier_stale_data(ledger: Ledger) -> None:
    ledger.reconcile(snap(orders=[], fills=[], positions=None))
    assert [d.kind for d in ledger.discrepancies(ACCOUNT)] == ["STALE_DATA"]
    result = ledger.reconcile(snap(orders=[], fills=[], positions=[], as_of=NOW - 0.5))
    assert ledger.discrepancies(ACCOUNT) == []
    assert result.gate is GateState.READY


# -- runtime checks: the gate ----------------------------------------------------------------


def test_gate_refuses_new_orders_while_reconciling(ledger: Ledger) -> None:
    ledger.begin_startup(ACCOUNT)
    with pytest.raises(NotReadyError, match="new orders refused: gate is RECONCILING"):
        ledger.check_new_order(ACCOUNT, "AAPL", "BUY", D(1))


def test_gate_lets_reduce_only_through_against_the_live_position(ledger: Ledger) -> None:
    ledger.begin_startup(ACCOUNT)
    ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(5), reduce_only=True, live_position=D(10))
    with pytest.raises(NotReadyError, match="does not reduce"):
        ledger.check_new_order(ACCOUNT, "AAPL", "BUY", D(5), reduce_only=True, live_position=D(10))
    with pytest.raises(NotReadyError, match="does not reduce"):
        ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(11), reduce_only=True, live_position=D(10))
    with pytest.raises(NotReadyError, match="live position unknown"):
        ledger.check_new_order(ACCOUNT, "AAPL", "SELL", D(1), reduce_only=True)


def test_gate_override_needs_operator_and_permission_and_is_stored(ledger: Ledger) -> None:
    ledger.begin_startup(ACCOUNT)
    ledger.reconcile(snap(orders=None, fills=None, positions=None))
    assert ledger.gate(ACCOUNT) is GateState.BLOCKED
    with pytest.raises(PermissionError, match="lacks"):
        ledger.override_gate(
            ACCOUNT, operator="alice", permission="read", reason="broker API down, trading manually"
        )
    with pytest.raises(PermissionError, match="operator"):
        ledger.override_gate(ACCOUNT, operator=" ", permission=OVERRIDE_PERMISSION, reason="x")
    assert (
        ledger.override_gate(ACCOUNT, operator="alice", permission=OVERRIDE_PERMISSION, reason="API down")
        is GateState.READY
    )
    [override] = [e.event for e in ledger.events() if e.topic == "trueup:Gate.Changed" and e.event.permission]
    assert (override.by, override.permission) == ("alice", OVERRIDE_PERMISSION)
    # The same blocking reasons do not close it again; new ones do.
    ledger.reconcile(snap(orders=None, fills=None, positions=None, as_of=NOW - 0.5))
    assert ledger.gate(ACCOUNT) is GateState.READY
