"""Fakes of our own ports: small real in-memory implementations, no mocking library.

`FakeBroker` implements `trueup.adapters.base.BrokerClient` over dicts: it holds the
broker's orders, executions and positions, answers snapshots and lookups from them, can
be told to fail (a failed query raises, it never answers "empty"), and streams
`RawMessage` / `Reconnected` / `RefreshNeeded` items pushed into an asyncio.Queue. Stream payloads are
reports encoded as JSON with the production encoder, translated back by `translate`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec

from trueup import Ledger
from trueup.adapters.base import (
    OrderRequest,
    RawMessage,
    Reconnected,
    RefreshNeeded,
    StreamItem,
    SubmitAck,
    SubmitUncertain,
)
from trueup.application.reconciler import ReconcileResult
from trueup.domain.errors import BrokerQueryError
from trueup.domain.reconcile import PositionPolicy
from trueup.domain.reports import (
    REPORT_DECODER,
    REPORT_ENCODER,
    BrokerSnapshot,
    FillReport,
    OrderReport,
    PositionReport,
    Report,
)
from trueup.domain.status import OrderStatus, Side


def translate(payload: str) -> Sequence[Report]:
    """The fake adapter's pure translator: one JSON-encoded report per payload."""
    return [REPORT_DECODER.decode(payload)]


class SubmitOutcome(StrEnum):
    """What happens to the next submit."""

    ACK = "ack"
    """Placed and acknowledged."""
    ACK_LOST = "ack_lost"
    """Placed at the broker, but the answer is lost (timeout): SubmitUncertain."""
    REQUEST_LOST = "request_lost"
    """Never reached the broker (connection dropped): SubmitUncertain."""


class FakeBroker:
    """An in-memory broker for one or more accounts, implementing `BrokerClient`."""

    name = "fake"

    def __init__(self, *, complete_history: bool = False) -> None:
        self.orders: dict[tuple[str, str], OrderReport] = {}
        """The broker's orders by (account, client order id)."""
        self.fills: list[FillReport] = []
        self.positions: dict[tuple[str, str], PositionReport] = {}
        self.complete_history = complete_history
        self.unlisted: set[str] = set()
        """Client ids the order list does not show yet (list endpoints lag lookups by id)."""
        self.submit_outcome = SubmitOutcome.ACK
        self.submit_calls: list[OrderRequest] = []
        """Every request handed to submit(), whatever became of it."""
        self.lookups: list[str] = []
        self.snapshots = 0
        self.fail_snapshot: BaseException | None = None
        """Raised by snapshot() while set."""
        self.fail_lookup: BaseException | None = None
        """Raised by lookup() while set."""
        self.hang_snapshot = False
        """While set, snapshot() never answers (a hung broker)."""
        self.garbage_snapshot = False
        self.snapshot_answer: object = None
        """While `garbage_snapshot`, what snapshot() answers instead of a snapshot."""
        self.stream_failures: list[BaseException] = []
        """Raised by the stream, one per subscription, before it delivers anything."""
        self.subscriptions = 0
        self.after_next_snapshot: Callable[[], object] | None = None
        """Run once, after the next snapshot is taken and before it is returned (while the
        snapshot travels back, as real I/O would let other tasks run)."""
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._execs = itertools.count(1)

    # -- BrokerClient --------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> SubmitAck:
        self.submit_calls.append(request)
        if self.submit_outcome is SubmitOutcome.REQUEST_LOST:
            raise SubmitUncertain(f"connection dropped sending {request.client_order_id}")
        report = self.place(
            request.account, request.client_order_id, request.symbol, request.side, request.quantity
        )
        if self.submit_outcome is SubmitOutcome.ACK_LOST:
            raise SubmitUncertain(f"timeout waiting for the answer to {request.client_order_id}")
        return SubmitAck(broker_order_id=report.broker_order_id or "", raw=_encode(report), report=report)

    async def cancel(self, account: str, client_order_id: str, broker_order_id: str | None) -> None:
        report = self.orders.get((account, client_order_id))
        if report is None:
            raise BrokerQueryError(f"{account}: no order {client_order_id}")
        self._set(report, status=OrderStatus.CANCELED)

    async def snapshot(self, account: str) -> BrokerSnapshot:
        self.snapshots += 1
        if self.fail_snapshot is not None:
            raise self.fail_snapshot
        if self.hang_snapshot:
            await asyncio.Event().wait()  # never set: no answer, ever
        if self.garbage_snapshot:
            return self.snapshot_answer  # type: ignore[return-value]
        snapshot = BrokerSnapshot(
            account=account,
            as_of=_now(),
            orders=[r for (a, cid), r in self.orders.items() if a == account and cid not in self.unlisted],
            fills=[f for f in self.fills if f.account == account and f.client_order_id not in self.unlisted],
            positions=[p for (a, _), p in self.positions.items() if a == account],
            complete_history=self.complete_history,
        )
        if self.after_next_snapshot is not None:
            hook, self.after_next_snapshot = self.after_next_snapshot, None
            hook()
            await asyncio.sleep(0.2)  # the answer is on its way: other tasks run meanwhile
        return snapshot

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        self.lookups.append(client_order_id)
        if self.fail_lookup is not None:
            raise self.fail_lookup
        return self.orders.get((account, client_order_id))

    async def stream(self) -> AsyncIterator[StreamItem]:
        self.subscriptions += 1
        if self.stream_failures:
            raise self.stream_failures.pop(0)
        while True:
            yield await self._queue.get()

    # -- the broker's side: things happening at the broker -------------------------------

    def place(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side | str,
        quantity: Decimal,
        *,
        listed: bool = True,
        stream: bool = False,
    ) -> OrderReport:
        """An order is working at the broker (ACCEPTED)."""
        report = OrderReport(
            account=account,
            client_order_id=client_order_id,
            broker_order_id=f"B{next(self._ids)}",
            symbol=symbol,
            side=Side(side),
            quantity=quantity,
            status=OrderStatus.ACCEPTED,
            filled_qty=Decimal(0),
            avg_price=None,
            ts_event=_now(),
            raw_status="accepted",
        )
        self.orders[account, client_order_id] = report
        if not listed:
            self.unlisted.add(client_order_id)
        if stream:
            self.push(report)
        return report

    def fill(
        self, account: str, client_order_id: str, qty: Decimal, price: Decimal, *, stream: bool = True
    ) -> FillReport:
        """An execution of a working order; `stream=False` is a message the stream dropped."""
        order = self.orders[account, client_order_id]
        fill = FillReport(
            account=account,
            client_order_id=client_order_id,
            broker_order_id=order.broker_order_id,
            exec_id=f"E{next(self._execs)}",
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=price,
            ts_event=_now(),
        )
        self.fills.append(fill)
        filled = order.filled_qty + qty
        cost = (order.avg_price or Decimal(0)) * order.filled_qty + qty * price
        updated = self._set(
            order,
            status=OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIALLY_FILLED,
            filled_qty=filled,
            avg_price=cost / filled,
        )
        self._move_position(account, order.symbol, order.side.sign * qty, price)
        if stream:
            self.push(fill)
            self.push(updated)
        return fill

    def set_position(self, account: str, symbol: str, qty: Decimal, avg_cost: Decimal) -> None:
        """A position changed behind our back (manual trade, corporate action)."""
        self.positions[account, symbol] = PositionReport(account, symbol, qty, avg_cost, _now())

    # -- the stream ----------------------------------------------------------------------

    def push(self, report: Report) -> None:
        """Stream one report, JSON-encoded, as the broker would send it."""
        self.push_raw(report.account, _encode(report), kind=str(type(report).__struct_config__.tag))

    def push_raw(
        self,
        account: str,
        payload: str,
        *,
        kind: str = "trade_updates",
        translator: Callable[[str], Sequence[Report]] = translate,
    ) -> None:
        """Stream a payload verbatim (garbled ones included), with the translator to use."""
        self._queue.put_nowait(
            RawMessage(account=account, source=self.name, kind=kind, payload=payload, translate=translator)
        )

    def reconnect(self, account: str) -> None:
        """The stream dropped and came back: messages may have been missed."""
        self._queue.put_nowait(Reconnected(account=account, source=self.name))

    def refresh(self, account: str) -> None:
        """The broker said something changed without saying what (a Kite postback)."""
        self._queue.put_nowait(RefreshNeeded(account=account, source=self.name, reason="order update"))

    # -- internals -----------------------------------------------------------------------

    def _set(self, order: OrderReport, **changes: object) -> OrderReport:
        updated = msgspec.structs.replace(order, ts_event=_now(), **changes)
        self.orders[order.account, order.client_order_id or ""] = updated
        return updated

    def _move_position(self, account: str, symbol: str, delta: Decimal, price: Decimal) -> None:
        held = self.positions.get((account, symbol))
        qty = held.qty if held else Decimal(0)
        avg = held.avg_cost if held else Decimal(0)
        new_qty = qty + delta
        # Long-only in these tests: adding averages the cost, reducing keeps it.
        new_avg = (
            (qty * avg + delta * price) / new_qty
            if new_qty and delta > 0
            else (avg if new_qty else Decimal(0))
        )
        self.positions[account, symbol] = PositionReport(account, symbol, new_qty, new_avg, _now())


class FlakyLedger(Ledger):
    """A real Ledger whose `reconcile` raises for its first `failures` calls (a store outage)."""

    failures = 0

    def reconcile(
        self, snapshot: BrokerSnapshot, *, policy: PositionPolicy | str | None = None, **knobs: Any
    ) -> ReconcileResult:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("database is locked")
        return super().reconcile(snapshot, policy=policy, **knobs)


def _encode(report: Report) -> str:
    return REPORT_ENCODER.encode(report).decode()


def _now() -> datetime:
    return datetime.now(UTC)
