"""`IbReads`: the reads behind `IbClient`'s snapshot and lookup, over its `IbConnection`.

* `cut`: the four queries (open orders, completed orders, executions, positions) one at a
  time under the connection's query lock, then the executions again: one consistent cut,
  taken again (`SNAPSHOT_ATTEMPTS` in all) while executions land; if they never hold still
  the positions are None for the cycle, with the reason in `failures`.
* `orders`, `fills`, `positions`: each part kept verbatim (ib_async's objects in their
  stored wire form) and translated; a part whose query failed or that does not translate
  is None (STALE_DATA), never `[]`.
* `lookup_answer`: open plus completed (today's) orders searched by `orderRef`; a
  completed order lacking an average price takes it from its executions (`with_average`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Final, NamedTuple

import msgspec

from trueup.adapters.ib.connection import SOURCE, IbConnection, utc_now
from trueup.adapters.ib.translate import (
    average_price,
    to_fill_report,
    to_order_report,
    to_position_reports,
)
from trueup.adapters.ib.wire import FillWire, TradeWire, fill_wire, position_wire, trade_wire
from trueup.domain.errors import BrokerQueryError, TrueupError
from trueup.domain.reports import FillReport, LookupAnswer, OrderReport, PositionReport, RawAnswer
from trueup.domain.status import ReportSource

try:
    from ib_async import ExecutionFilter, Trade
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Interactive Brokers adapter needs ib_async: pip install 'trueup[ib]'"
    raise ImportError(msg) from e

__all__ = ["SNAPSHOT_ATTEMPTS", "Cut", "IbReads"]

# The client's logger: these records keep the name they had before the reads moved here.
log = logging.getLogger("trueup.adapters.ib.client")

_ENCODER: Final = msgspec.json.Encoder()
SNAPSHOT_ATTEMPTS: Final = 3
"""Snapshots taken before giving up on a consistent cut of executions and positions."""


def _exec_ids(fills: list[Any]) -> set[str]:
    """The execution ids (revision included: a correction moves the cut) an answer lists."""
    return {str(fill.execution.execId) for fill in fills}


def _unknown(  # noqa: PLR0913, PLR0917 - the part, and where its evidence and failure go
    part: str, account: str, error: TrueupError, answers: list[RawAnswer], read: int, failures: dict[str, str]
) -> None:
    """A part whose answer does not translate: unknown, why in `failures`, its `read` answers marked so."""
    why = f"ib {part} answer untranslatable: {error}"
    log.warning("%s: %s; part unknown", account, why)
    failures[part] = why
    for i in range(len(answers) - read, len(answers)):
        answers[i] = msgspec.structs.replace(answers[i], error=why)


class Cut(NamedTuple):
    """One snapshot's four answers (None: that query failed) and when they were read."""

    as_of: datetime
    open_trades: list[Trade] | None
    completed: list[Trade] | None
    fills: list[Any] | None
    positions: list[Any] | None


class IbReads:
    """The snapshot and lookup queries of one `IbClient`, and the translation of their answers."""

    def __init__(self, connection: IbConnection, *, account: str) -> None:
        self.connection = connection
        self.account = account
        self._ib = connection.ib

    async def cut(self, account: str, failures: dict[str, str]) -> Cut:
        """The four answers as one consistent cut (module docstring), under the query lock."""
        async with self.connection.query_lock:
            for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
                as_of = utc_now()
                open_trades = await self.connection.query("open orders", self._ib.reqAllOpenOrdersAsync)
                completed = await self.connection.query("completed orders", self.completed_orders)
                fills = await self.connection.query("executions", self.executions)
                positions = await self.connection.query("positions", self._ib.reqPositionsAsync)
                if fills is None or positions is None:
                    break  # nothing to hold the positions against
                # One cut: an execution landing after the executions read would be in the
                # positions only, and a repair would book it, then the execution again.
                again = await self.connection.query("executions (again)", self.executions)
                if again is None:
                    positions = None
                    failures["positions"] = "could not confirm them against the executions (query failed)"
                    break
                if _exec_ids(again) == _exec_ids(fills):
                    break
                log.info("%s: executions arrived in snapshot %d of %d", account, attempt, SNAPSHOT_ATTEMPTS)
            else:
                positions = None
                failures["positions"] = "executions kept arriving during the snapshot; compared next cycle"
        return Cut(as_of, open_trades, completed, fills, positions)

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """`IbClient.lookup` with IB's answer: the open and completed orders as wire JSON.

        Raises:
            BrokerQueryError: not connected or a query failed; absence is unknown.
        """
        async with self.connection.query_lock:
            open_trades = await self.connection.query("open orders", self._ib.reqAllOpenOrdersAsync)
            completed = await self.connection.query("completed orders", self.completed_orders)
        if open_trades is None or completed is None:
            msg = f"{account}: lookup {client_order_id}: IB order queries failed; absence unknown"
            raise BrokerQueryError(msg)
        wires = {
            "open orders": [trade_wire(t) for t in open_trades],
            "completed orders": [trade_wire(t) for t in completed],
        }
        raw = RawAnswer(source=SOURCE, kind="lookup", payload=_ENCODER.encode(wires).decode())
        # A completed order is final; an open one may still be listed from a stale cache.
        for wire in [*wires["completed orders"], *wires["open orders"]]:
            if wire.order.orderRef == client_order_id:
                try:
                    report = to_order_report(
                        wire,  # type: ignore[arg-type]  # the stored form, read like a Trade
                        account=account,
                        ts_event=utc_now(),
                        source=ReportSource.RECONCILE,
                    )
                    return LookupAnswer(report=self.with_average(report), raw=raw)
                except TrueupError as e:
                    why = f"{account}: lookup {client_order_id}: untranslatable answer: {e}"
                    return LookupAnswer(report=None, raw=msgspec.structs.replace(raw, error=why))
        return LookupAnswer(report=None, raw=raw)

    def with_average(self, report: OrderReport) -> OrderReport:
        """A completed order carries no average price: take it from its executions when they cover it.

        ib_async keeps every execution of the session (the startup `reqExecutions` and the
        live ones) in `ib.fills()`; without the price, the ledger could not book the
        cumulative quantity until the executions themselves arrive.
        """
        if report.avg_price is not None or report.filled_qty == 0 or report.broker_order_id is None:
            return report
        fills = [
            to_fill_report(fill_wire(f), account=report.account)  # type: ignore[arg-type]  # duck-typed Fill
            for f in self._ib.fills()
            if str(f.execution.permId) == report.broker_order_id
        ]
        average = average_price(fills, report.filled_qty)
        return report if average is None else msgspec.structs.replace(report, avg_price=average)

    # -- snapshot parts --------------------------------------------------------------------

    def completed_orders(self) -> Awaitable[list[Trade]]:
        """Today's completed orders, of every client (not only the API's)."""
        return self._ib.reqCompletedOrdersAsync(apiOnly=False)

    def executions(self) -> Awaitable[list[Any]]:
        """Today's executions of this account."""
        return self._ib.reqExecutionsAsync(ExecutionFilter(acctCode=self.account))

    def orders(  # noqa: PLR0913, PLR0917 - the two answers, and where their evidence and failures go
        self,
        account: str,
        open_trades: list[Trade] | None,
        completed: list[Trade] | None,
        as_of: datetime,
        answers: list[RawAnswer],
        failures: dict[str, str],
    ) -> list[OrderReport] | None:
        """Open and completed orders (completed last: its final status wins), kept and translated."""
        if open_trades is None or completed is None:
            return None
        by_key: dict[object, TradeWire] = {}
        for kind, trades in (("open orders", open_trades), ("completed orders", completed)):
            wires = [trade_wire(trade) for trade in trades]
            answers.append(RawAnswer(source=SOURCE, kind=kind, payload=_ENCODER.encode(wires).decode()))
            for wire in wires:  # completed last: its final status wins
                if wire.order.account not in {"", account}:
                    continue
                key = wire.order.permId or (wire.order.clientId, wire.order.orderId)
                by_key[key] = wire
        try:
            return [
                to_order_report(
                    wire,  # type: ignore[arg-type]  # the stored form, read like a Trade
                    account=account,
                    ts_event=as_of,
                    source=ReportSource.RECONCILE,
                )
                for wire in by_key.values()
            ]
        except TrueupError as e:
            _unknown("orders", account, e, answers, 2, failures)
            return None

    def fills(
        self, account: str, fills: list[Any] | None, answers: list[RawAnswer], failures: dict[str, str]
    ) -> list[FillReport] | None:
        """The executions of this account, with their commissions, kept and translated."""
        if fills is None:
            return None
        wires = [self.fill_with_commission(fill) for fill in fills]
        answers.append(RawAnswer(source=SOURCE, kind="executions", payload=_ENCODER.encode(wires).decode()))
        try:
            return [
                to_fill_report(wire, account=account)  # type: ignore[arg-type]
                for wire in wires
                if wire.execution.acctNumber in {"", account}
            ]
        except TrueupError as e:
            _unknown("fills", account, e, answers, 1, failures)
            return None

    def fill_with_commission(self, fill: Any) -> FillWire:  # noqa: ANN401 - an ib_async Fill
        """The fill's stored form, with the commission ib_async merged into its cached twin.

        An execution already seen live stays in ib_async's cache (`wrapper.fills`); a
        `reqExecutions` answer builds a new Fill for it, and TWS's commission report is
        merged into the cached one only. Joined by execId; none is still None (unknown).
        """
        wire = fill_wire(fill)
        cached = self._ib.wrapper.fills.get(fill.execution.execId)
        if cached is not None and cached is not fill:
            cached_wire = fill_wire(cached)
            report = cached_wire.commissionReport
            if report is not None and report.execId == fill.execution.execId:
                wire.commissionReport = report
        return wire

    def positions(
        self,
        account: str,
        positions: list[Any] | None,
        as_of: datetime,
        answers: list[RawAnswer],
        failures: dict[str, str],
    ) -> list[PositionReport] | None:
        """The positions as of `as_of`, kept and translated."""
        if positions is None:
            return None
        wires = [position_wire(p) for p in positions]
        answers.append(RawAnswer(source=SOURCE, kind="positions", payload=_ENCODER.encode(wires).decode()))
        try:
            return to_position_reports(wires, account=account, as_of=as_of)  # type: ignore[arg-type]
        except TrueupError as e:
            _unknown("positions", account, e, answers, 1, failures)
            return None
