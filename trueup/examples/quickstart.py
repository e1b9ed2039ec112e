"""A short session on the Ledger API: intend, ingest out-of-order broker reports, read the books.

Run with `make demo` (or `python -m trueup.examples.quickstart [STORE]`). It uses the
default SQLite store (`trueup.db`, or TRUEUP_STORE) unless a store URL is given.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trueup import FillReport, Ledger, OrderReport, OrderStatus, OrderView, Side


def main(argv: list[str] | None = None) -> int:
    """Run the example and print what the ledger concluded."""
    args = sys.argv[1:] if argv is None else argv
    store = args[0] if args else None
    account = "DEMO"
    cid = f"QS{uuid.uuid4().hex[:18].upper()}"  # 20 chars [A-Z0-9]: fits every broker's field
    t0 = datetime.now(UTC)

    def order(status: OrderStatus, filled: str, avg: str | None, seconds: int, raw: str) -> OrderReport:
        return OrderReport(
            account=account,
            client_order_id=cid,
            broker_order_id="BRK-1",
            symbol="AAPL",
            side=Side.BUY,
            quantity=Decimal(10),
            status=status,
            filled_qty=Decimal(filled),
            avg_price=None if avg is None else Decimal(avg),
            ts_event=t0 + timedelta(seconds=seconds),
            raw_status=raw,
        )

    def fill(exec_id: str, qty: str, price: str, seconds: int) -> FillReport:
        return FillReport(
            account=account,
            client_order_id=cid,
            broker_order_id="BRK-1",
            exec_id=exec_id,
            symbol="AAPL",
            side=Side.BUY,
            qty=Decimal(qty),
            price=Decimal(price),
            ts_event=t0 + timedelta(seconds=seconds),
        )

    with Ledger.open(store) as ledger:
        print(f"store: {ledger!r}")
        ledger.intend(account, cid, "AAPL", Side.BUY, Decimal(10), limit_price=Decimal(190))
        print(f"1. intent recorded before sending: {cid}")
        # The stream drops the first execution, delivers a cumulative report early,
        # repeats a fill, and replays an old "new" after the order is done.
        ledger.ingest(order(OrderStatus.ACCEPTED, "0", None, 1, "new"))
        ledger.ingest(order(OrderStatus.PARTIALLY_FILLED, "8", "189.90625", 3, "partially_filled"))
        view = _order(ledger, account, cid)
        print(f"2. cumulative 8 ahead of executions: inferred {view.inferred_qty} @ {view.avg_fill_price}")
        ledger.ingest([fill("EX-2", "3", "189.80", 4), fill("EX-2", "3", "189.80", 4)])
        ledger.ingest(fill("EX-3", "2", "190.00", 5))
        ledger.ingest(order(OrderStatus.FILLED, "10", "189.915", 6, "filled"))
        ledger.ingest(order(OrderStatus.ACCEPTED, "0", None, 1, "new"))  # late replay: changes nothing
        ledger.ingest(fill("EX-1", "5", "189.95", 2))  # the dropped execution finally arrives
        view = _order(ledger, account, cid)
        print(
            f"3. order {view.status}: filled {view.filled_qty} @ {view.avg_fill_price}, "
            f"inferred left {view.inferred_qty}, executions {[f.exec_id for f in view.fills]}"
        )
        for position in ledger.positions(account):
            print(f"4. position {position.symbol}: {position.qty} @ {position.avg_cost}")
        # A fill that would overfill the order is refused and reported, never booked.
        ledger.ingest(fill("EX-9", "1", "190.00", 7))
        for d in ledger.discrepancies(account):
            print(f"5. DISCREPANCY {d.severity} {d.kind} {d.key}: {d.detail}")
            print(f"   evidence: the raw message at log position {d.evidence_position}")
        events = sum(1 for _ in ledger.events())
        print(f"6. the log holds {events} events; replay them with Ledger.events()")
    return 0


def _order(ledger: Ledger, account: str, cid: str) -> OrderView:
    view = ledger.order(account, cid)
    if view is None:
        msg = f"order {cid} is not in the ledger"
        raise LookupError(msg)
    return view


if __name__ == "__main__":
    raise SystemExit(main())
