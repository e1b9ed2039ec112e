"""`trueup demo`: a paper session with faults and a forced crash, then restart, reconcile, report.

Phase 1 runs the engine in a child process: it trades against the paper broker (whose
state lives in its own file), with callbacks dropped, duplicated, delayed and reordered,
an outage, an order placed by hand at the broker, a position changed behind the
engine's back and a disconnect, until it is killed with SIGKILL right after a broker
call whose acknowledgement it never stored. Phase 2 restarts in this process: recovery
looks the unacknowledged order up (never re-sends), reconciliation brings the books in
line, and the report names every injected fault and how it was resolved. The books are
then compared with the broker's truth: orders, executions and positions.

The paper broker accepts a reused client id here (`accept_duplicates`, as IB accepts a
reused orderRef), so "none sent twice" is checked against the broker's own order list,
where a re-sent order would show as a second order with the same id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trueup.adapters.base import OrderRequest, OrderType, RawMessage, Reconnected, snapshot_or_unknown
from trueup.adapters.paper.broker import FaultPlan, PaperBroker
from trueup.domain.errors import ConfigError, NotReadyError
from trueup.domain.status import Side
from trueup.faults import crash_point
from trueup.ledger import Ledger
from trueup.submission import start_session

log = logging.getLogger(__name__)
ACCOUNT = "PAPER"
SYMBOLS = ("AAPL", "MSFT", "TSLA")


def client_order_id(seed: int, index: int) -> str:
    """Our id for the demo's n-th order: 20 chars [A-Z0-9], deterministic per seed."""
    return f"DEMO{seed:04d}{index:012d}"


async def drain(ledger: Ledger, broker: PaperBroker) -> int:
    """Hand every stream item deliverable now to the ledger; reconcile after a reconnect."""
    handled = 0
    async for item in broker.stream(follow=False):
        handled += 1
        if isinstance(item, RawMessage):
            crash_point("stream.before_ingest")
            ledger.ingest_raw(
                item.payload, item.translate, account=item.account, source=item.source, kind=item.kind
            )
        elif isinstance(item, Reconnected):
            await reconcile(ledger, broker)
    return handled


async def reconcile(ledger: Ledger, broker: PaperBroker) -> None:
    """Reconcile now; a failed query is STALE_DATA (a snapshot of unknowns), never "flat"."""
    ledger.reconcile(await snapshot_or_unknown(broker, ACCOUNT, ledger.clock()))


async def trade(ledger: Ledger, broker: PaperBroker, *, seed: int, orders: int) -> None:
    """Phase 1: trade `orders` orders with faults scheduled at fixed points of the session."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible demo, not cryptography
    await start_session(ledger, broker, ACCOUNT)
    for index in range(orders):
        if index == orders // 5:
            broker.manual_order("TSLA", Side.BUY, Decimal(5))
        if index == orders // 4:
            broker.shift_position("MSFT", Decimal(3), Decimal(310))
        if index == orders // 3:
            broker.outage(2)
        if index == orders // 2:
            broker.disconnect()
        limit = rng.random() < 0.3
        request = OrderRequest(
            account=ACCOUNT,
            client_order_id=client_order_id(seed, index),
            symbol=rng.choice(SYMBOLS),
            side=rng.choice((Side.BUY, Side.SELL)),
            quantity=Decimal(rng.randint(1, 20)),
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            limit_price=Decimal(100 + rng.randint(-2, 2)) if limit else None,
        )
        try:
            await ledger.submit_async(request, broker)
        except NotReadyError as e:
            log.warning("demo order %s refused by the gate: %s", request.client_order_id, e)
        broker.step()
        await drain(ledger, broker)
        if index % 10 == 9:
            await reconcile(ledger, broker)


def engine(store: str, paper_path: Path, seed: int, orders: int) -> None:
    """Phase 1 in the child process (killed by its crash point)."""
    faults = FaultPlan(drop=0.15, duplicate=0.15, delay=0.1, reorder=0.1)
    broker = PaperBroker(paper_path, account=ACCOUNT, seed=seed, faults=faults, accept_duplicates=True)
    with Ledger.open(store) as ledger:
        asyncio.run(trade(ledger, broker, seed=seed, orders=orders))


async def restart(ledger: Ledger, broker: PaperBroker) -> tuple[Any, Any]:
    """Phase 2: recover, let the market finish the working orders, reconcile."""
    recovery, startup = await start_session(ledger, broker, ACCOUNT)
    for _ in range(30):
        broker.step()
        await drain(ledger, broker)
    final = ledger.reconcile(await broker.snapshot(ACCOUNT))
    return recovery, (startup, final)


def compare(ledger: Ledger, broker: PaperBroker) -> list[str]:
    """Differences between the books and the broker's truth (empty when they agree)."""
    problems: list[str] = []
    truth_orders = broker.orders()
    ids = Counter(o.client_order_id for o in truth_orders if o.client_order_id)
    problems += [f"order {cid} placed {n} times at the broker" for cid, n in ids.items() if n > 1]
    truth_fills = {f.exec_id: f for f in broker.fills()}
    booked: dict[str, Any] = {}
    for order in ledger.as_of(ledger.last_position()).orders:
        for fill in order.fills:
            booked[fill.exec_id] = fill
    problems += [f"execution {e} missing from the books" for e in truth_fills.keys() - booked.keys()]
    problems += [f"execution {e} booked but not at the broker" for e in booked.keys() - truth_fills.keys()]
    problems += [
        f"execution {e}: booked {booked[e].qty} @ {booked[e].price}, broker {f.qty} @ {f.price}"
        for e, f in truth_fills.items()
        if e in booked and (booked[e].qty, booked[e].price) != (f.qty, f.price)
    ]
    working_there = {
        o.client_order_id or f"~{o.broker_order_id}" for o in truth_orders if not o.status.is_terminal
    }
    working_here = {o.client_order_id for o in ledger.open_orders(ACCOUNT)}
    if working_there != working_here:
        problems.append(f"open orders differ: books {sorted(working_here)}, broker {sorted(working_there)}")
    ours = {p.symbol: p.qty for p in ledger.positions(ACCOUNT)}
    theirs = {p.symbol: p.qty for p in broker.positions() if p.qty}
    if ours != theirs:
        problems.append(f"positions differ: books {ours}, broker {theirs}")
    return problems


def explain(ledger: Ledger, fault: Any) -> str:  # noqa: ANN401, PLR0911 - a paper Fault; one answer per kind
    """How the books absorbed one injected fault, with the log positions that show it."""
    found = ledger.discrepancies(ACCOUNT, include_resolved=True)

    def at(kind: str) -> str:
        hits = [d for d in found if d.kind == kind]
        if not hits:
            return ""
        state = "resolved: " + (hits[0].resolution or "") if hits[0].resolution else "open"
        return f"{kind} at log #{hits[0].position} ({state})"

    kind = fault.kind
    if kind == "drop":
        updates = sum(1 for e in ledger.events() if e.topic == "trueup:Order.Updated")
        return f"callback lost; recovered from broker snapshots ({updates} ORDER_UPDATED events in all)"
    if kind == "duplicate":
        return "stored twice in the raw log, applied once (execution-id dedupe, rank rule)"
    if kind in {"delay", "reorder"}:
        return "applied late through the rank rule: older states changed nothing"
    if kind == "outage":
        return at("STALE_DATA") or "queries failed; nothing concluded from them (never read as flat)"
    if kind == "disconnect":
        return "stream reconnected; a reconciliation recovered what was missed"
    if kind == "manual_order":
        return at("ORPHAN_ORDER") or "order placed by hand: tracked as an orphan"
    if kind == "shift_position":
        hits = [at(k) for k in ("POSITION_MISMATCH", "MISSING_LOCAL_POSITION", "NAKED_POSITION")]
        return next((h for h in hits if h), "position changed at the broker: synced by reconciliation")
    return "recorded"


def run_demo(*, seed: int, orders: int, workdir: Path | None, keep: bool, console: Console) -> int:
    """Run both phases and print the report; return 0 when the books equal the broker.

    The demo never writes into an existing store: its store and paper broker live in
    `workdir` (which must be new or empty), or in a temporary directory removed
    afterwards unless `keep`. TRUEUP_STORE is ignored, in this process and the child.
    """
    if workdir is not None:
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            msg = f"--workdir {workdir} is not a new, empty directory; the demo writes only into its own"
            raise ConfigError(msg)
        workdir.mkdir(parents=True, exist_ok=True)
        return _run_demo(seed=seed, orders=orders, workdir=workdir, console=console)
    workdir = Path(tempfile.mkdtemp(prefix="trueup-demo-"))
    try:
        return _run_demo(seed=seed, orders=orders, workdir=workdir, console=console)
    finally:
        if keep:
            console.print(f"demo state kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_demo(*, seed: int, orders: int, workdir: Path, console: Console) -> int:
    store = f"sqlite:///{workdir / 'trueup.db'}"
    paper_path = workdir / "paper.db"
    crash_at = max(2, orders * 2 // 3)
    console.print(f"[bold]trueup demo[/] seed {seed}, {orders} orders, state in {workdir}")
    console.print(f"phase 1: trading with faults; the engine will be killed after broker call #{crash_at}")
    env = {k: v for k, v in os.environ.items() if k != "TRUEUP_STORE"}
    env["TRUEUP_CRASH_AT"] = f"submit.after_broker_call:{crash_at}"
    child = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trueup.demo", store, str(paper_path), str(seed), str(orders)],
        env=env,
        check=False,
    )
    killed = child.returncode == -signal.SIGKILL
    console.print(
        f"engine exited with {child.returncode} ({'SIGKILL: crashed mid-submit' if killed else 'no crash'})"
    )
    console.print("phase 2: restart, recover, reconcile")
    broker = PaperBroker(paper_path, account=ACCOUNT, seed=seed, accept_duplicates=True)
    with Ledger.open(store) as ledger:
        recovery, (startup, final) = asyncio.run(restart(ledger, broker))
        table = Table(title="injected faults and how they were resolved")
        for column in ("step", "fault", "detail", "resolution"):
            table.add_column(column)
        if killed:
            table.add_row(
                "-",
                "crash (SIGKILL)",
                f"after broker call #{crash_at}, acknowledgement not stored",
                f"recovery looked it up by client id: found {recovery.found or 'none'}, "
                f"closed {recovery.abandoned or 'none'}; nothing re-sent",
            )
        for fault in broker.faults():
            table.add_row(str(fault.step), fault.kind, fault.detail, explain(ledger, fault))
        console.print(table)
        problems = compare(ledger, broker)
        gate = ledger.gate(ACCOUNT)
        console.print(
            f"startup reconciliation: {len(startup.order_updates)} orders updated, "
            f"{len(startup.position_syncs)} positions synced, {len(startup.discrepancies)} discrepancies; "
            f"final: {len(final.events)} events; gate {gate}"
        )
        if problems:
            for problem in problems:
                console.print(f"[bold red]MISMATCH[/] {problem}")
            return 1
        n_orders = len([o for o in broker.orders() if o.client_order_id])
        console.print(
            f"[bold green]books equal the broker[/]: {n_orders} orders (none sent twice), "
            f"{len(broker.fills())} executions, {len(ledger.positions(ACCOUNT))} positions"
        )
    broker.close()
    return 0


if __name__ == "__main__":
    engine(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
