"""How long `trueup orders --all` takes on a store of N orders (default 12,000).

    python benchmarks/orders_all.py [--orders 12000] [--store PATH]

Builds the store once (each order intended, acknowledged and filled, as a day of trading
leaves them), then times the installed command three ways: the table, `--wide`, `--json`,
each on a store whose read model is caught up (what an operator meets). Prints seconds.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from trueup import Ledger
from trueup.domain.reports import FillReport, OrderReport
from trueup.domain.status import OrderStatus, Side

ACCOUNT = "BENCH1"
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
BATCH = 500


def build(path: Path, n: int) -> None:
    """A store of `n` filled orders, written in batches of one transaction each."""
    with Ledger.open(f"sqlite:///{path}") as ledger:
        for start in range(0, n, BATCH):
            reports: list[OrderReport | FillReport] = []
            for i in range(start, min(n, start + BATCH)):
                cid = f"B{i:06d}"
                ledger.intend(ACCOUNT, cid, f"SYM{i % 300}", "BUY", Decimal(10), limit_price=Decimal(100))
                ts = T0 + timedelta(seconds=i)
                reports.append(
                    FillReport(
                        account=ACCOUNT, client_order_id=cid, broker_order_id=f"X{i}", exec_id=f"E{i}",
                        symbol=f"SYM{i % 300}", side=Side.BUY, qty=Decimal(10), price=Decimal("100.25"),
                        ts_event=ts, commission=None,
                    )
                )
                reports.append(
                    OrderReport(
                        account=ACCOUNT, client_order_id=cid, broker_order_id=f"X{i}", symbol=f"SYM{i % 300}",
                        side=Side.BUY, quantity=Decimal(10), status=OrderStatus.FILLED, filled_qty=Decimal(10),
                        avg_price=Decimal("100.25"), ts_event=ts, raw_status="filled",
                    )
                )
            ledger.ingest(reports)
        ledger.all_orders()  # the read model caught up, as the daemon leaves it


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603 - our own command
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=12_000)
    parser.add_argument("--store", type=Path, default=Path("/tmp/trueup-bench-orders.db"))
    options = parser.parse_args()
    if not options.store.exists():
        started = time.perf_counter()
        build(options.store, options.orders)
        print(f"built {options.orders} orders in {time.perf_counter() - started:.1f} s: {options.store}")
    command = shutil.which("trueup") or str(Path(sys.executable).with_name("trueup"))
    store = f"sqlite:///{options.store}"
    for label, extra in (("table", []), ("--wide", ["--wide"]), ("--json", ["--json"])):
        seconds = timed([command, "orders", "--all", "--store", store, *extra])
        print(f"trueup orders --all {label:7} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
