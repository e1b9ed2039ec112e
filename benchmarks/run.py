"""trueup benchmarks: every figure beside a baseline measured in the same run.

    python benchmarks/run.py [--quick] [--no-postgres] [--only ingest,reconcile,replay,latency]

Timings on shared machines are noisy, so each trueup figure is printed with a baseline
taken moments before on the same machine (raw sqlite3 / psycopg, the naive eventsourcing
way, a raw read of the same table) and the ratio between them. Results are also written
as JSON to benchmarks/results/. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from trueup import BrokerSnapshot, FillReport, Ledger, OrderReport, PositionReport
from trueup.domain.order import Order
from trueup.domain.status import Side

POSTGRES = os.environ.get("TRUEUP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
ACCOUNT = "BENCH"
RESULTS: dict[str, Any] = {}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def row(name: str, value: float, unit: str, baseline: float | None = None, base_name: str = "") -> None:
    ratio = f"  {value / baseline:6.2f}x {base_name}" if baseline else ""
    shown = f"{value:>12,.1f}" if unit in {"ms", "MB"} else f"{value:>12,.0f}"
    print(f"  {name:<58} {shown} {unit}{ratio}")
    RESULTS[name] = {"value": value, "unit": unit, "baseline": baseline, "baseline_name": base_name}


# -- a realistic report mix ----------------------------------------------------------------------


def report_mix(orders: int, prefix: str = "O") -> list[OrderReport | FillReport]:
    """Per order: accepted, two partial fills (one delivered twice), a cumulative, filled.

    5 reports per order, 1 in 5 a duplicate: roughly what a stream with retries delivers.
    """
    return report_mix_range(0, orders, prefix)


def report_mix_range(first: int, end: int, prefix: str) -> list[OrderReport | FillReport]:
    """`report_mix` for orders first..end-1."""
    out: list[OrderReport | FillReport] = []
    for i in range(first, end):
        cid, bid, t = f"{prefix}{i}", f"B{prefix}{i}", T0 + timedelta(seconds=i)
        symbol = ("AAPL", "MSFT", "TSLA", "NVDA")[i % 4]

        def order(status: str, filled: int, avg: str | None, dt: int) -> OrderReport:
            return OrderReport(
                ACCOUNT,
                cid,
                bid,
                symbol,
                "BUY",
                Decimal(10),
                status,
                Decimal(filled),
                None if avg is None else Decimal(avg),
                t + timedelta(milliseconds=dt),
                status.lower(),
            )

        fill = FillReport(
            ACCOUNT,
            cid,
            bid,
            f"E{prefix}{i}a",
            symbol,
            "BUY",
            Decimal(4),
            Decimal(100),
            t + timedelta(milliseconds=2),
        )
        out += [
            order("ACCEPTED", 0, None, 1),
            fill,
            fill,
            FillReport(
                ACCOUNT,
                cid,
                bid,
                f"E{prefix}{i}b",
                symbol,
                "BUY",
                Decimal(6),
                Decimal("100.5"),
                t + timedelta(milliseconds=3),
            ),
            order("FILLED", 10, "100.3", 4),
        ]
    return out


def intend_all(
    ledger: Ledger, orders: int, prefix: str = "O", symbol: Callable[[int], str] | None = None
) -> None:
    for i in range(orders):
        name = symbol(i) if symbol else ("AAPL", "MSFT", "TSLA", "NVDA")[i % 4]
        ledger.intend(ACCOUNT, f"{prefix}{i}", name, "BUY", Decimal(10))


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]


# -- ingest --------------------------------------------------------------------------------------


def raw_sqlite_rate(rows: int, size: int) -> float:
    path = Path(tempfile.mkdtemp()) / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, "
        "state BLOB, PRIMARY KEY (originator_id, originator_version))"
    )
    payload = b"x" * size
    data = [(str(uuid.uuid4()), 1, "trueup:Order.FillBooked", payload) for _ in range(rows)]

    def insert() -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", data)
        conn.execute("COMMIT")

    return rows / timed(insert)


class NaiveOrder(Aggregate):
    """What a user would write with eventsourcing alone: one aggregate, load-apply-save per report."""

    @event("Created")
    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.filled = Decimal(0)
        self.status = "NEW"
        self.fills: set[str] = set()

    @event("Reported")
    def report(self, status: str, filled: str) -> None:
        self.status = status
        self.filled = max(self.filled, Decimal(filled))

    @event("Filled")
    def fill(self, exec_id: str, qty: str) -> None:
        self.fills.add(exec_id)


def naive_rate(reports: list[OrderReport | FillReport]) -> float:
    path = Path(tempfile.mkdtemp()) / "naive.db"
    app: Application[uuid.UUID] = Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    ids: dict[str, uuid.UUID] = {}

    def run() -> None:
        for r in reports:
            cid = r.client_order_id or ""
            if cid not in ids:
                order = NaiveOrder(cid)
                ids[cid] = order.id
                app.save(order)
            order = app.repository.get(ids[cid])
            if isinstance(r, FillReport):
                if r.exec_id in order.fills:
                    continue
                order.fill(r.exec_id, str(r.qty))
            else:
                order.report(r.status.value, str(r.filled_qty))
            app.save(order)

    rate = len(reports) / timed(run)
    app.close()
    return rate


def trueup_rate(
    store: str, reports: list[OrderReport | FillReport], batch: int, orders: int, prefix: str
) -> float:
    with Ledger.open(store) as ledger:
        intend_all(ledger, orders, prefix)
        return len(reports) / timed(lambda: [ledger.ingest(c) for c in chunks(reports, batch)])


def bench_ingest(quick: bool, postgres: bool) -> None:
    orders = 400 if quick else 4000
    reports = report_mix(orders)
    print(f"ingest: {len(reports):,} reports ({orders:,} orders; status changes, partial fills, duplicates)")
    raw = raw_sqlite_rate(len(reports) * 2, 160)
    row("raw sqlite3 executemany, one transaction (limit)", raw, "rows/s")
    naive = naive_rate(report_mix(orders // 4, "N"))
    row("naive eventsourcing: load, apply, save per report", naive, "reports/s")
    tmp = Path(tempfile.mkdtemp())
    batched = trueup_rate(f"sqlite:///{tmp / 'b.db'}", reports, 1000, orders, "O")
    row("trueup SQLite, batches of 1000", batched, "reports/s", raw, "of raw")
    row("trueup SQLite, batches of 1000 vs naive", batched, "reports/s", naive, "of naive")
    single_reports = report_mix(orders // 8, "S")
    single = trueup_rate(f"sqlite:///{tmp / 's.db'}", single_reports, 1, orders // 8, "S")
    row("trueup SQLite, one report per transaction", single, "reports/s", batched, "of batched")
    if postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        pg = trueup_rate(f"{POSTGRES}?schema={schema}", reports, 1000, orders, "P")
        row("trueup PostgreSQL, batches of 1000", pg, "reports/s", batched, "of SQLite")
        _drop_schema(schema)


# -- reconciliation ------------------------------------------------------------------------------


def reconcile_case(ledger: Ledger, open_n: int, closed_n: int, positions_n: int) -> BrokerSnapshot:
    """Fill `ledger` with the books of the reconciliation case; return the broker's snapshot.

    `open_n` accepted orders, `closed_n` filled ones, over `positions_n` symbols; the
    snapshot has 1% of the open orders filled at the broker, 1% missing, 1% orphans,
    1% of positions off by 10 and one position we never had.
    """
    setup = time.perf_counter()
    intend_all(ledger, open_n, "W", lambda i: f"S{i % positions_n}")
    accepted = [
        OrderReport(
            ACCOUNT,
            f"W{i}",
            f"BW{i}",
            f"S{i % positions_n}",
            "BUY",
            Decimal(10),
            "ACCEPTED",
            Decimal(0),
            None,
            T0,
            "new",
        )
        for i in range(open_n)
    ]
    for c in chunks(accepted, 2000):
        ledger.ingest(c)
    closed = []
    for i in range(closed_n):
        closed += [
            OrderReport(
                ACCOUNT,
                f"X{i}",
                f"BX{i}",
                f"S{i % positions_n}",
                "BUY",
                Decimal(1),
                "FILLED",
                Decimal(1),
                Decimal(100),
                T0,
                "filled",
            ),
        ]
    for c in chunks(closed, 2000):
        ledger.ingest(c)
    print(f"  (setup took {time.perf_counter() - setup:.0f}s)")
    positions = {p.symbol: p for p in ledger.positions(ACCOUNT)}
    snapshot_orders = list(accepted)
    bad = max(1, open_n // 100)
    for i in range(bad):  # broker ahead: filled at the broker
        r = snapshot_orders[i]
        snapshot_orders[i] = OrderReport(
            ACCOUNT,
            r.client_order_id,
            r.broker_order_id,
            r.symbol,
            "BUY",
            Decimal(10),
            "FILLED",
            Decimal(10),
            Decimal(101),
            T0 + timedelta(seconds=5),
            "filled",
        )
    for i in range(bad):  # orphans
        snapshot_orders.append(
            OrderReport(
                ACCOUNT,
                None,
                f"ORPH{i}",
                "S0",
                "SELL",
                Decimal(3),
                "ACCEPTED",
                Decimal(0),
                None,
                T0,
                "new",
            )
        )
    missing = {f"W{i}" for i in range(bad, 2 * bad)}
    snapshot_orders = [o for o in snapshot_orders if o.client_order_id not in missing]
    broker_positions = []
    for k, (symbol, p) in enumerate(sorted(positions.items())):
        qty = p.qty + (10 if k < positions_n // 100 else 0)  # mismatches
        broker_positions.append(PositionReport(ACCOUNT, symbol, qty, p.avg_cost, T0))
    broker_positions.append(PositionReport(ACCOUNT, "EXTERNAL", Decimal(5), Decimal(50), T0))
    return BrokerSnapshot(
        ACCOUNT, T0 + timedelta(seconds=10), snapshot_orders, [], broker_positions, complete_history=False
    )


def bench_reconcile(quick: bool) -> None:
    open_n, closed_n, positions_n = (1000, 10_000, 100) if quick else (10_000, 100_000, 1000)
    print(
        f"reconcile: {open_n:,} open orders, {closed_n:,} closed, {positions_n:,} positions, 1% discrepancies"
    )
    tmp = Path(tempfile.mkdtemp())
    with Ledger.open(f"sqlite:///{tmp / 'r.db'}", max_snapshot_age=1e9) as ledger:
        snapshot = reconcile_case(ledger, open_n, closed_n, positions_n)
        startup = timed(lambda: ledger.reconcile(snapshot))
        row("startup reconciliation (1% discrepancies of every kind)", startup * 1000, "ms")
        later = [
            msgspec.structs.replace(snapshot, as_of=snapshot.as_of + timedelta(seconds=k))
            for k in range(1, 7)
        ]
        first = timed(lambda: ledger.reconcile(later[0]))
        row(
            "periodic, first after startup (read models catch up)",
            first * 1000,
            "ms",
            startup * 1000,
            "of startup",
        )
        steady = statistics.median(timed(lambda s=s: ledger.reconcile(s)) for s in later[1:])  # type: ignore[misc]
        row(
            "periodic reconciliation, nothing changed (median of 5)",
            steady * 1000,
            "ms",
            startup * 1000,
            "of startup",
        )


# -- replay --------------------------------------------------------------------------------------


CACHE = Path(__file__).parent / ".cache"
"""Built stores reused between runs (the 1M-event log takes minutes to write)."""


def _source_fingerprint() -> str:
    """Hash of the code that decides what gets stored: a changed domain rebuilds the cache."""
    root = Path(__file__).resolve().parents[1] / "trueup"
    digest = hashlib.sha256()
    for path in sorted([*root.glob("domain/*.py"), root / "ledger.py", root / "adapters" / "eventstore" / "codec.py"]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def replay_store(target_events: int) -> Path:
    """A SQLite store of about `target_events` events, written once through the real write path.

    Intents are saved as `Order.intend` aggregates, 2,000 per `save()` (what `Ledger.intend`
    stores, batched); the broker reports go through `Ledger.ingest` in batches of 5,000.
    15 events per order: intent, 5 raw reports, 3 status changes, 2 fills, 2 position
    changes, broker-id link (order event and link aggregate).
    """
    orders = max(1, target_events // 15)
    path = CACHE / f"replay-{orders}-{_source_fingerprint()}.db"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    for stale in CACHE.glob(f"replay-{orders}-*"):
        stale.unlink()
    building = path.with_suffix(".building")
    for leftover in CACHE.glob(building.name + "*"):
        leftover.unlink()
    started = time.perf_counter()
    with Ledger.open(f"sqlite:///{building}") as ledger:
        for first in range(0, orders, 2000):
            ledger.store.app.save(
                *(
                    Order.intend(
                        account=ACCOUNT,
                        client_order_id=f"R{i}",
                        symbol=("AAPL", "MSFT", "TSLA", "NVDA")[i % 4],
                        side=Side.BUY,
                        quantity=Decimal(10),
                        limit_price=None,
                        strategy=None,
                        ts=T0,
                    )
                    for i in range(first, min(first + 2000, orders))
                )
            )
        for first in range(0, orders, 1000):
            ledger.ingest(report_mix_range(first, min(first + 1000, orders), "R"))
    for suffix in ("-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.rename(path)
    print(f"  (built {path.name} in {time.perf_counter() - started:.0f}s; reused by later runs)")
    return path


def peak_rss_mb() -> float:
    """This process's own peak resident memory.

    VmHWM belongs to the process's memory map, which exec replaces. ru_maxrss does not:
    Linux carries the parent's high-water mark across fork and exec, so a child started
    by a bench that already used 200 MB would report 200 MB.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def replay_child(path: str) -> None:
    """Measure replay in a fresh process, so peak RSS is the replay's own; print JSON."""
    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp()) / "replay.db"
    shutil.copyfile(path, work)
    out: dict[str, float] = {}
    conn = sqlite3.connect(work)
    total = conn.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
    out["events"] = total
    out["raw"] = total / timed(
        lambda: sum(1 for _ in conn.execute("SELECT rowid, originator_id, topic, state FROM stored_events"))
    )
    conn.close()
    with Ledger.open(f"sqlite:///{work}") as ledger:
        out["decoded"] = total / timed(lambda: sum(1 for _ in ledger.events()))
        out["rss_before_rebuild_mb"] = peak_rss_mb()
        out["rebuild"] = total / timed(ledger.projector.rebuild)
        out["peak_rss_mb"] = peak_rss_mb()
        out["orders"] = len(ledger.all_orders(ACCOUNT))
    shutil.rmtree(work.parent)
    print(json.dumps(out))


def bench_replay(quick: bool) -> None:
    path = replay_store(75_000 if quick else 1_000_000)
    child = subprocess.run(  # noqa: S603 - this script, with a path it built
        [sys.executable, __file__, "--replay-child", str(path)], check=True, capture_output=True, text=True
    )
    out = json.loads(child.stdout.strip().splitlines()[-1])
    total = int(out["events"])
    print(f"replay: {total:,} stored events, {int(out['orders']):,} orders (a fresh process)")
    row("raw read of stored_events (limit)", out["raw"], "events/s")
    row("Ledger.events() decoded stream", out["decoded"], "events/s", out["raw"], "of raw")
    row("rebuild of every projection from position 0", out["rebuild"], "events/s", out["raw"], "of raw")
    row("peak resident memory of the replaying process (MB)", out["peak_rss_mb"], "MB")
    RESULTS["replay_events"] = total


# -- subscription latency ------------------------------------------------------------------------


def bench_latency(quick: bool, postgres: bool) -> None:
    try:
        from trueup.subscriptions import subscribe
    except ImportError:
        print("latency: trueup.subscriptions not available in this build")
        return
    samples = 200 if quick else 1000
    stores = [("SQLite", f"sqlite:///{Path(tempfile.mkdtemp()) / 'l.db'}")]
    if postgres:
        stores.append(("PostgreSQL", f"{POSTGRES}?schema=bench_{uuid.uuid4().hex[:8]}"))
    for name, url in stores:
        with Ledger.open(url) as ledger:
            received: dict[int, float] = {}
            done = threading.Event()

            def handler(logged: Any) -> None:
                if logged.topic == "trueup:BrokerMessage.Received":
                    received[len(received)] = time.perf_counter()
                    if len(received) >= samples:
                        done.set()

            sent: list[float] = []
            returned: list[float] = []
            with subscribe(ledger, handler, ledger.last_position()):
                for i in range(samples):
                    sent.append(time.perf_counter())
                    ledger.ingest(PositionReport(ACCOUNT, f"L{i}", Decimal(1), Decimal(1), T0))
                    returned.append(time.perf_counter())
                    time.sleep(0.002)
                done.wait(30)
            count = min(len(received), len(sent))
            if not count:
                print(f"latency {name}: nothing received")
                continue
            # The commit happens between the call and the return of ingest(): latency from the
            # call is an upper bound (it includes the write), from the return a lower bound
            # (the handler may run before ingest() returns: counted as 0).
            upper = sorted((received[i] - sent[i]) * 1000 for i in range(count))
            lower = sorted(max(0.0, received[i] - returned[i]) * 1000 for i in range(count))
            p99 = int(count * 0.99) - 1
            median = statistics.median(upper)
            row(f"subscription latency {name} p50 (ms, ingest call to handler)", median, "ms")
            row(f"subscription latency {name} p99 (ms, ingest call to handler)", upper[p99], "ms")
            row(f"subscription latency {name} p99 (ms, ingest return to handler)", lower[p99], "ms")
        if name == "PostgreSQL":
            _drop_schema(url.rsplit("schema=", 1)[1])


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, well under a minute")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only", default="ingest,reconcile,replay,latency")
    parser.add_argument("--replay-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_child:
        replay_child(args.replay_child)
        return
    logging.disable(logging.WARNING)  # discrepancies by the thousand are the point here
    postgres = not args.no_postgres
    parts = args.only.split(",")
    started = time.perf_counter()
    if "ingest" in parts:
        bench_ingest(args.quick, postgres)
    if "reconcile" in parts:
        bench_reconcile(args.quick)
    if "replay" in parts:
        bench_replay(args.quick)
    if "latency" in parts:
        bench_latency(args.quick, postgres)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"{'quick' if args.quick else 'full'}-{stamp}.json").write_text(json.dumps(RESULTS, indent=2))
    print(f"done in {time.perf_counter() - started:.0f}s; results in {out}")


if __name__ == "__main__":
    main()
