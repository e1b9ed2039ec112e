"""Reports the rules must accept: a pending replace, an orphan that turns out to be ours.

And an inferred fill priced far outside its order's range: booked, but said.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.builders import ACCOUNT, D, at, fill_report, new_order, order_report, unique_cid
from trueup import Ledger, OrderFlag, OrderStatus
from trueup.domain.rules import decide_fill, decide_order_report

PENDING = frozenset({OrderFlag.REPLACE_PENDING})


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('acc')}", clock=lambda: at(100)) as opened:
        yield opened


def kinds(ledger: Ledger) -> list[str]:
    return [d.kind for d in ledger.discrepancies(ACCOUNT)]


# -- REPLACE_PENDING ---------------------------------------------------------------------------


def test_fills_at_the_old_terms_while_a_replace_is_pending_are_no_overfill(ledger: Ledger) -> None:
    ledger.intend(ACCOUNT, "C1", "INFY", "BUY", D(10))
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="K1", symbol="INFY", qty=10, ts=1))
    ledger.request_amend(ACCOUNT, "C1", quantity=D(8))  # what Submitter.modify stores before the call
    # Kite MODIFY PENDING: the report carries the requested quantity, 4, not yet in force.
    ledger.ingest(
        order_report("ACCEPTED", cid="C1", broker_id="K1", symbol="INFY", qty=4, ts=2, flags=PENDING)
    )
    ledger.ingest(
        [fill_report(f"E{i}", 2, 100, cid=None, broker_id="K1", symbol="INFY", ts=3 + i) for i in range(3)]
    )
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert (order.quantity, order.filled_qty, order.status) == (D(10), D(6), OrderStatus.PARTIALLY_FILLED)
    assert kinds(ledger) == []
    # Confirmed without the flag: the new terms apply (here refused, below the executions booked).
    ledger.ingest(
        order_report("ACCEPTED", cid="C1", broker_id="K1", symbol="INFY", qty=8, filled=6, avg=100, ts=9)
    )
    order = ledger.order(ACCOUNT, "C1")
    assert order is not None
    assert order.quantity == D(8)


def test_a_pending_replace_report_with_a_cumulative_at_the_old_terms_is_no_overfill() -> None:
    order = new_order(10)
    outcome = decide_order_report(
        order.state, order_report("ACCEPTED", qty=4, filled=6, avg=100, flags=PENDING)
    )
    assert [f.kind for f in outcome.findings if f.kind == "OVERFILL"] == []
    order.record(outcome.changes)
    assert (order.state.quantity, order.state.filled_qty) == (D(10), D(6))


# -- an orphan that names our client id later ----------------------------------------------------


def test_a_report_naming_our_id_for_an_orphan_attaches_it_once_counted(ledger: Ledger) -> None:
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.mark_submitted(ACCOUNT, "C1")
    # First seen untagged (IB without orderRef): an orphan ~P7, its symbol quarantined.
    ledger.ingest(order_report("ACCEPTED", cid=None, broker_id="P7", qty=10, ts=1))
    ledger.ingest(fill_report("E1", 3, 100, cid=None, broker_id="P7", ts=2))
    ledger.ingest(order_report("ACCEPTED", cid=None, broker_id="P7", qty=10, filled=5, avg=101, ts=3))
    assert kinds(ledger) == ["ORPHAN_ORDER"]
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(5)
    # Then a report names our client id with the same broker id: it is our order.
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="P7", qty=10, filled=5, avg=101, ts=4))
    ledger.ingest(fill_report("E1", 3, 100, cid="C1", broker_id="P7", ts=2))  # a repeat: counted once
    ledger.ingest(fill_report("E2", 2, 104, cid=None, broker_id="P7", ts=5))  # supersedes the inferred 2
    ours = ledger.order(ACCOUNT, "C1")
    orphan = ledger.order(ACCOUNT, "~P7")
    assert ours is not None
    assert orphan is not None
    assert (ours.filled_qty, ours.inferred_qty, ours.status) == (D(5), D(0), OrderStatus.PARTIALLY_FILLED)
    assert [f.exec_id for f in ours.fills] == ["E1", "E2"]
    assert ours.broker_order_ids == ("P7",)
    assert (orphan.status, orphan.filled_qty, orphan.replaced_by) == (OrderStatus.REPLACED, D(0), "C1")
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(5)  # nothing double-counted
    assert kinds(ledger) == []  # quarantine lifted, no INVALID_REPORT
    assert ledger.quarantined_scopes(ACCOUNT) == frozenset()
    assert ledger.projector.rebuild() > 0
    assert ledger.order(ACCOUNT, "C1") == ours


@pytest.mark.parametrize("ours_first", [True, False])
def test_an_execution_booked_on_both_the_orphan_and_our_order_counts_once_on_attach(
    ledger: Ledger, ours_first: bool
) -> None:
    """Our order booked E1 (by client id alone), the orphan ~P7 booked it too (by broker id alone)."""
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.mark_submitted(ACCOUNT, "C1")
    ours_fill = fill_report("E1", 4, 100, cid="C1", broker_id=None, ts=2)
    orphan_fill = fill_report("E1", 4, 100, cid=None, broker_id="P7", ts=2)
    for report in [ours_fill, orphan_fill] if ours_first else [orphan_fill, ours_fill]:
        ledger.ingest(report)
    ledger.ingest(fill_report("E2", 1, 110, cid=None, broker_id="P7", ts=3))  # on the orphan only
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(9)  # E1 twice, as the two records stand before they are linked
    # A report names our client id with the orphan's broker id: one order, E1 once.
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="P7", qty=10, filled=5, avg=102, ts=4))
    ours = ledger.order(ACCOUNT, "C1")
    assert ours is not None
    assert sorted(f.exec_id for f in ours.fills) == ["E1", "E2"]
    assert ours.filled_qty == D(5)
    [position] = ledger.positions(ACCOUNT)
    assert position.qty == D(5)  # the broker's: 4 + 1
    assert position.avg_cost == D(102)  # (4 * 100 + 1 * 110) / 5, the duplicate un-booked at its cost
    assert ledger.projector.rebuild() > 0
    [rebuilt] = ledger.positions(ACCOUNT)
    assert (rebuilt.qty, rebuilt.avg_cost) == (D(5), D(102))


def test_a_report_naming_another_order_of_ours_is_still_refused(ledger: Ledger) -> None:
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.intend(ACCOUNT, "C2", "AAPL", "BUY", D(10))
    ledger.ingest(order_report("ACCEPTED", cid="C1", broker_id="B1", ts=1))
    ledger.ingest(order_report("ACCEPTED", cid="C2", broker_id="B1", ts=2))
    assert "INVALID_REPORT" in kinds(ledger)


# -- an inferred fill priced far outside --------------------------------------------------------


@pytest.mark.parametrize(
    ("avg", "far"),
    [
        ("3002.50", False),  # 5 @ 3000 then 8 @ avg 3002.50: 3 inferred @ 3006.67 (docs/rules.md)
        ("3030", False),  # 3 inferred @ 3080: within the band
        ("3100", True),  # 3 inferred @ 3266.67: above the limit by more than 5%
        ("3400", True),  # 3 inferred @ 4066.67: far above every fill, the average and the limit
        ("2400", True),  # 3 inferred @ 1440
    ],
)
def test_an_inferred_fill_far_outside_the_orders_prices_is_booked_and_said(avg: str, far: bool) -> None:
    order = new_order(10, limit="3050")
    order.record(decide_fill(order.state, fill_report("E1", 5, 3000)).changes)
    outcome = decide_order_report(order.state, order_report("ACCEPTED", filled=8, avg=avg, limit=3050))
    order.record(outcome.changes)
    assert order.state.inferred_qty == D(3)  # booked as before
    said = [f for f in outcome.findings if f.kind == "FILL_MISMATCH"]
    assert bool(said) is far
    if far:
        assert "far outside" in said[0].detail
        assert str(order.state.inferred_price) in said[0].detail
