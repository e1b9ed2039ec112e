"""Decoded states kept between reconciliations never hide a change made by another writer."""

from __future__ import annotations

from tests.builders import ACCOUNT, D, at, order_report
from trueup import BrokerSnapshot, Ledger, OrderStatus


def test_reconcile_sees_an_order_another_ledger_closed(store_url: str) -> None:
    # Check: the open-order list kept for periodic runs is re-read once the log moved,
    # including when the write came through another Ledger on the same store.
    with Ledger.open(store_url, clock=lambda: at(100)) as first, Ledger.open(store_url) as second:
        for cid in ("C1", "C2"):
            first.intend(ACCOUNT, cid, "AAPL", "BUY", D(10))
            first.ingest(order_report("ACCEPTED", cid=cid, broker_id=f"B{cid}", ts=1))
        listed = [order_report("ACCEPTED", cid=cid, broker_id=f"B{cid}", ts=1) for cid in ("C1", "C2")]
        complete = BrokerSnapshot(ACCOUNT, at(99), listed, [], [], complete_history=True)
        assert first.reconcile(complete).events == []
        assert first.reconcile(complete).events == []  # steady state: served from what was kept
        assert [s.client_order_id for s in first.queries.open_order_states(ACCOUNT)] == ["C1", "C2"]

        second.ingest(order_report("CANCELED", cid="C2", broker_id="BC2", ts=2))

        assert [s.client_order_id for s in first.queries.open_order_states(ACCOUNT)] == ["C1"]
        only_c1 = BrokerSnapshot(ACCOUNT, at(99), listed[:1], [], [], complete_history=True)
        # C2 is closed now: its absence from a complete snapshot is no discrepancy.
        assert first.reconcile(only_c1).discrepancies == []
        order = first.order(ACCOUNT, "C2")
        assert order is not None
        assert order.status is OrderStatus.CANCELED
