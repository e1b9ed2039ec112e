"""One problem, one alarm: a discrepancy seen again is updated, never raised again.

And its resolution sticks: `Ledger.resolve_lost` settles a LOST order in one call, and an
operator's `resolve_discrepancy` stands while the problem is seen unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import ACCOUNT, D, at, fill_report, order_report, unique_cid
from trueup import BrokerSnapshot, Ledger, NotReadyError, OrderStatus, PositionReport, Side
from trueup.domain.discrepancy import LostOutcome
from trueup.domain.gate import GateState
from trueup.domain.reconcile import PositionPolicy

NOW = 100.0


def snap(
    *, orders: list | None = None, positions: list | None = None, as_of: float = NOW - 1
) -> BrokerSnapshot:
    """A complete-history snapshot: an open order it omits is missing at the broker."""
    return BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(as_of),
        orders=[] if orders is None else orders,
        fills=[],
        positions=[] if positions is None else positions,
        complete_history=True,
    )


class Clock:
    """A clock the test moves: each reconcile is a new cycle."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self):  # type: ignore[no-untyped-def]
        return at(self.now)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock) -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('one')}", clock=clock) as opened:
        yield opened


def sent(ledger: Ledger, cid: str = "C1", symbol: str = "AAPL") -> None:
    ledger.intend(ACCOUNT, cid, symbol, "BUY", D(10))
    ledger.ingest(order_report("PENDING_NEW", cid=cid, broker_id=f"B-{cid}", symbol=symbol, ts=1))


def cycles(ledger: Ledger, clock: Clock, n: int, **parts: object) -> None:
    for _ in range(n):
        clock.now += 5
        ledger.reconcile(snap(as_of=clock.now - 1, **parts))  # type: ignore[arg-type]


def of_kind(ledger: Ledger, kind: str, *, include_resolved: bool = False) -> list:
    return [d for d in ledger.discrepancies(ACCOUNT, include_resolved=include_resolved) if d.kind == kind]


# -- a LOST order is one discrepancy ------------------------------------------------------------


def test_a_lost_order_is_one_discrepancy_however_long_it_stays_lost(ledger: Ledger, clock: Clock) -> None:
    sent(ledger)
    cycles(ledger, clock, 3)
    reasons_when_lost = ledger.gate_details(ACCOUNT)[1]
    cycles(ledger, clock, 20)
    [lost] = of_kind(ledger, "LOST", include_resolved=True)
    [missing] = of_kind(ledger, "MISSING_AT_BROKER", include_resolved=True)
    assert (lost.count, missing.count) == (21, 23)  # lost from the 3rd cycle on
    assert lost.last_seen == at(clock.now)
    assert lost.ts_detected < lost.last_seen
    state, reasons, locks = ledger.gate_details(ACCOUNT)
    assert state is GateState.BLOCKED
    assert reasons == reasons_when_lost
    assert len(reasons) == 1
    assert "AAPL" in locks  # a lost order locks its symbol (docs/rules.md)


def test_resolve_lost_gone_closes_the_order_lifts_the_lock_and_opens_the_gate(
    ledger: Ledger, clock: Clock
) -> None:
    sent(ledger)
    cycles(ledger, clock, 4)
    gate = ledger.resolve_lost(ACCOUNT, "C1", outcome="gone", by="alice", reason="not in the broker's UI")
    assert gate is GateState.READY
    assert ledger.gate_details(ACCOUNT)[2] == {}
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.status is OrderStatus.CANCELED
    resolved = of_kind(ledger, "LOST", include_resolved=True) + of_kind(
        ledger, "MISSING_AT_BROKER", include_resolved=True
    )
    assert {(d.resolution, d.resolved_by) for d in resolved} == {("gone: not in the broker's UI", "alice")}
    ledger.check_new_order(ACCOUNT, "AAPL", "BUY", D(1))
    # The next reconciles respect it: nothing raised again, the gate stays open.
    cycles(ledger, clock, 5)
    assert ledger.discrepancies(ACCOUNT) == []
    assert ledger.gate(ACCOUNT) is GateState.READY


def test_resolve_lost_found_books_the_broker_report_and_keeps_counting_if_it_is_still_absent(
    ledger: Ledger, clock: Clock
) -> None:
    sent(ledger)
    cycles(ledger, clock, 3)
    found = order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=4, avg=101, ts=50)
    gate = ledger.resolve_lost(
        ACCOUNT, "C1", outcome=LostOutcome.FOUND, by="bob", reason="working at the broker", report=found
    )
    assert gate is GateState.READY
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert (order.status, order.filled_qty) == (OrderStatus.PARTIALLY_FILLED, D(4))
    # Listed by the broker from now on: booked normally, nothing raised.
    listed = order_report("ACCEPTED", cid="C1", broker_id="B-C1", filled=4, avg=101, ts=50)
    cycles(
        ledger, clock, 3, orders=[listed], positions=[PositionReport(ACCOUNT, "AAPL", D(4), D(101), at(1))]
    )
    assert ledger.discrepancies(ACCOUNT) == []
    # Omitted again: missing counted from one, a new LOST after lost_after cycles (it is the truth).
    cycles(ledger, clock, 3, positions=[PositionReport(ACCOUNT, "AAPL", D(4), D(101), at(1))])
    assert [d.kind for d in ledger.discrepancies(ACCOUNT)] == ["MISSING_AT_BROKER", "LOST"]


def test_resolve_lost_refuses_without_operator_or_open_lost(ledger: Ledger, clock: Clock) -> None:
    sent(ledger)
    with pytest.raises(LookupError):
        ledger.resolve_lost(ACCOUNT, "C1", outcome="gone", by="alice", reason="checked")
    cycles(ledger, clock, 3)
    with pytest.raises(PermissionError):
        ledger.resolve_lost(ACCOUNT, "C1", outcome="gone", by=" ", reason="checked")
    with pytest.raises(ValueError, match="not a valid"):
        ledger.resolve_lost(ACCOUNT, "C1", outcome="vanished", by="alice", reason="checked")


def test_an_in_flight_lost_order_is_settled_by_the_same_call(ledger: Ledger) -> None:
    ledger.intend(ACCOUNT, "C2", "TSLA", "BUY", D(1))
    ledger.mark_submitted(ACCOUNT, "C2")
    ledger.declare_lost(ACCOUNT, "C2", not_found=3, failed=0)
    ledger.declare_lost(ACCOUNT, "C2", not_found=4, failed=1)  # declared once
    assert len(of_kind(ledger, "LOST")) == 1
    with pytest.raises(NotReadyError):
        ledger.check_new_order(ACCOUNT, "TSLA", Side.BUY, D(1))
    ledger.reconcile(snap(orders=None))
    ledger.resolve_lost(ACCOUNT, "C2", outcome="gone", by="carol", reason="rejected at the broker")
    assert ledger.gate_details(ACCOUNT)[2] == {}
    assert ledger.gate(ACCOUNT) is GateState.READY


# -- every kind: updated, and an operator's resolution sticks -----------------------------------


def test_a_position_mismatch_under_alert_is_one_discrepancy_updated_with_the_latest_figures(
    ledger: Ledger, clock: Clock
) -> None:
    for qty in (5, 6, 7):
        clock.now += 5
        ledger.reconcile(
            snap(positions=[PositionReport(ACCOUNT, "MSFT", D(qty), D(10), at(1))], as_of=clock.now - 1),
            policy=PositionPolicy.ALERT,
        )
    [missing] = ledger.discrepancies(ACCOUNT)
    assert (missing.kind, missing.count, missing.actual) == ("MISSING_LOCAL_POSITION", 3, "7 @ 10")


def test_an_acknowledged_problem_is_not_raised_again_while_unchanged_and_is_once_it_changes(
    ledger: Ledger, clock: Clock
) -> None:
    def seen(qty: int) -> None:
        clock.now += 5
        positions = [PositionReport(ACCOUNT, "MSFT", D(qty), D(10), at(1))] if qty else []
        ledger.reconcile(snap(positions=positions, as_of=clock.now - 1), policy=PositionPolicy.ALERT)

    seen(5)
    [first] = ledger.discrepancies(ACCOUNT)
    ledger.resolve_discrepancy(first.id, resolution="known: a transfer in", by="dave")
    seen(5)
    seen(5)
    assert ledger.discrepancies(ACCOUNT) == []  # stands while unchanged
    seen(8)
    [changed] = ledger.discrepancies(ACCOUNT)
    assert changed.id != first.id
    assert changed.actual == "8 @ 10"
    ledger.resolve_discrepancy(changed.id, resolution="known", by="dave")
    seen(0)  # seen gone: the acknowledgement ends
    seen(8)
    [recurred] = ledger.discrepancies(ACCOUNT)
    assert recurred.id not in (first.id, changed.id)


def test_the_same_snapshot_reconciled_again_is_not_a_new_sighting(ledger: Ledger, clock: Clock) -> None:
    sent(ledger)
    snapshot = snap(as_of=NOW - 1)
    ledger.reconcile(snapshot)
    events = sum(1 for _ in ledger.events())
    ledger.reconcile(snapshot)
    [missing] = ledger.discrepancies(ACCOUNT)
    assert missing.count == 1
    assert sum(1 for _ in ledger.events()) == events + 1  # the order's missing count only


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    lost_orders=st.integers(min_value=0, max_value=3),
    position_qty=st.integers(min_value=1, max_value=50),
)
def test_reconciling_the_same_disagreement_n_times_is_one_discrepancy_per_problem_with_count_n(
    n: int, lost_orders: int, position_qty: int
) -> None:
    clock = Clock()
    with Ledger.open(f"memory://{unique_cid('prop')}", clock=clock, lost_after=1) as ledger:
        for i in range(lost_orders):
            sent(ledger, cid=f"L{i}", symbol=f"S{i}")
        positions = [PositionReport(ACCOUNT, "MSFT", D(position_qty), D(3), at(1))]
        reasons = []
        for _ in range(n):
            clock.now += 5
            ledger.reconcile(snap(positions=positions, as_of=clock.now - 1), policy=PositionPolicy.ALERT)
            reasons.append(ledger.gate_details(ACCOUNT)[1])
        open_ones = ledger.discrepancies(ACCOUNT)
        problems = [d.problem for d in open_ones]
        assert len(problems) == len(set(problems)) == 1 + 2 * lost_orders
        assert all(d.count == n for d in open_ones)
        assert all(r == reasons[0] for r in reasons)
        assert len(reasons[0]) == lost_orders


# -- stores recorded before this rule ----------------------------------------------------------


def test_a_store_from_before_opens_and_its_duplicate_alarms_merge(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Ledger.open(url, clock=clock) as ledger:
        sent(ledger)
    # The read model as an older release created it: no last_seen, sightings, topic, acknowledged.
    with sqlite3.connect(tmp_path / "old.db") as db:
        for column in ("last_seen", "sightings", "topic", "acknowledged"):
            db.execute(f"ALTER TABLE trueup_discrepancies DROP COLUMN {column}")
    with Ledger.open(url, clock=clock) as ledger:
        ledger.projector.rebuild()
        cycles(ledger, clock, 2)
        [missing] = ledger.discrepancies(ACCOUNT)
        assert missing.count == 2


def test_an_old_store_with_one_lost_per_cycle_merges_them_at_the_next_sighting(
    ledger: Ledger, clock: Clock
) -> None:
    # As the code before this rule stored them: a new LOST each cycle, the count in `actual`.
    from trueup.application.findings import OpenDiscrepancies
    from trueup.domain.discrepancy import DiscrepancyKind, Finding

    sent(ledger)
    cycles(ledger, clock, 1)

    def old_style(unit):  # type: ignore[no-untyped-def]
        for cycle in (3, 4):
            finding = Finding(
                DiscrepancyKind.LOST, "C1", "PENDING_NEW at the broker", f"absent {cycle} cycles", "lost"
            )
            OpenDiscrepancies(ACCOUNT, []).record_new(
                unit, [msgspec.structs.replace(finding, topic=str(cycle))], None
            )

    ledger.writer.commit(old_style)
    assert len(of_kind(ledger, "LOST")) == 2
    # Old events carry no topic: the read model derives it, as a rebuild does.
    with ledger.store.transaction() as cursor:
        cursor.execute("UPDATE trueup_discrepancies SET topic = NULL")
    cycles(ledger, clock, 2)
    assert len(of_kind(ledger, "LOST")) == 1
    assert len(ledger.gate_details(ACCOUNT)[1]) == 1


# -- acknowledgements of problems found by booking reports -------------------------------------


def overfilled(ledger: Ledger, clock: Clock) -> str:
    """C1 FILLED 10 @ 100, then an execution E2 of 2 refused as an overfill, acknowledged."""
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="B1", qty=10, ts=1))
    ledger.ingest(fill_report("E1", 10, 100, ts=2))
    ledger.ingest(fill_report("E2", 2, 100, ts=3))
    [overfill] = ledger.discrepancies(ACCOUNT)
    assert overfill.kind == "OVERFILL"
    ledger.resolve_discrepancy(overfill.id, resolution="known: the exchange busts E2", by="dave")
    ledger.ingest(fill_report("E2", 2, 100, ts=3))  # the same execution again: acknowledged
    assert ledger.discrepancies(ACCOUNT) == []
    return overfill.id


def filled_report(ts: float) -> object:
    return order_report("FILLED", cid="C1", broker_id="B1", qty=10, filled=10, avg=100, ts=ts)


def acknowledged(ledger: Ledger) -> list[str]:
    return [d.kind for d in ledger.queries.discrepancies(ACCOUNT, acknowledged=True) if d.acknowledged]


def test_an_acknowledged_booking_problem_stands_while_the_broker_still_shows_it(
    ledger: Ledger, clock: Clock
) -> None:
    overfilled(ledger, clock)
    for _ in range(3):
        clock.now += 5
        ledger.reconcile(
            msgspec.structs.replace(
                snap(as_of=clock.now - 1),
                orders=[filled_report(clock.now - 1)],
                fills=[fill_report("E1", 10, 100, ts=2), fill_report("E2", 2, 100, ts=3)],
            )
        )
        assert ledger.discrepancies(ACCOUNT) == []  # the broker still lists E2: acknowledged
    assert acknowledged(ledger) == ["OVERFILL"]


def test_an_acknowledged_booking_problem_ends_when_a_reconcile_no_longer_shows_it(
    ledger: Ledger, clock: Clock
) -> None:
    first = overfilled(ledger, clock)
    clock.now += 5
    # The broker lists the order FILLED with E1 alone (E2 busted): nothing shows the overfill.
    ledger.reconcile(
        msgspec.structs.replace(
            snap(as_of=clock.now - 1),
            orders=[filled_report(clock.now - 1)],
            fills=[fill_report("E1", 10, 100)],
        )
    )
    assert acknowledged(ledger) == []
    cleared = [e for e in ledger.events() if e.topic == "trueup:Discrepancy.Cleared"]
    assert len(cleared) == 1
    assert "no longer shows" in cleared[0].event.reason
    ledger.ingest(fill_report("E2", 2, 100, ts=3))  # it comes back: a new alarm
    [again] = ledger.discrepancies(ACCOUNT)
    assert (again.kind, again.id != first) == ("OVERFILL", True)


def test_an_acknowledged_booking_problem_of_an_ended_order_ends_when_the_broker_forgets_the_order(
    ledger: Ledger, clock: Clock
) -> None:
    overfilled(ledger, clock)
    clock.now += 5
    # A day-scoped broker after midnight: the order and its executions are no longer listed.
    day_scoped = BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(clock.now - 1),
        orders=[],
        fills=[],
        positions=[PositionReport(ACCOUNT, "AAPL", D(10), D(100), at(1))],
        history_since=at(clock.now - 2),
    )
    ledger.reconcile(day_scoped)
    assert acknowledged(ledger) == []
    assert ledger.discrepancies(ACCOUNT) == []


def test_an_unknown_fills_part_ends_no_acknowledgement(ledger: Ledger, clock: Clock) -> None:
    overfilled(ledger, clock)
    clock.now += 5
    ledger.reconcile(
        msgspec.structs.replace(snap(as_of=clock.now - 1), orders=[filled_report(clock.now - 1)], fills=None)
    )
    assert acknowledged(ledger) == ["OVERFILL"]
