"""`PaperBroker`: a simulated broker and market whose whole state lives in one SQLite file.

It implements `trueup.adapters.base.BrokerClient`, so the engine trades against it
exactly as against a real broker, and it is the truth a test or the demo compares the
books with. Three properties shape everything here:

* **It survives the engine being killed.** Orders, fills, positions, the step counter,
  both random generators, the callbacks not yet delivered and the fault log are rows
  of its own SQLite file (WAL, `store.py`), and every operation is one transaction: an
  order the broker accepted is committed before `submit` returns, and a callback is
  marked delivered in the transaction that hands it out. Reopening the path continues
  from the stored state, whichever process opens it.
* **It is deterministic.** Prices are integer-tick random walks and fill sizes come
  from a seeded SplitMix64 generator (`rng.py`) whose state is stored by every
  operation; times come from the market's own clock (`EPOCH` + step seconds + event
  microseconds), never the wall clock. The same seed and the same calls give the same
  orders, fills and callbacks, byte for byte, whether or not the file was closed and
  reopened in between. Faults draw from a second generator, so the market is the same
  with faults on or off. (Only `BrokerSnapshot.as_of` is wall-clock time: the ledger
  judges a snapshot's freshness by it.)
* **It misbehaves on purpose** (`faults.py`): callbacks dropped, duplicated, delayed
  and reordered per a `FaultPlan`; query outages; stream disconnects; orders placed by
  hand; positions shifted behind the engine's back. Every fault is logged with the
  order and execution it affected (`faults()`).

Everything the broker says leaves it as paper wire JSON (`wire.py`) and becomes reports
through the pure `translate.py`, answers included: the stream, the snapshot and the
inspection helpers all go through the same translator.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Self

from trueup.adapters.base import (
    OrderRequest,
    OrderType,
    RawMessage,
    Reconnected,
    StreamItem,
    SubmitAck,
    SubmitRejected,
    SubmitUncertain,
)
from trueup.adapters.paper.faults import Fault, FaultKind, FaultPlan
from trueup.adapters.paper.market import book_execution, crosses, fill_size, tick_price, walk
from trueup.adapters.paper.placing import (
    OUTAGE_PLACED_PPM,
    check_outage,
    check_request,
    check_symbol,
    place,
    submit_in_outage,
)
from trueup.adapters.paper.store import EPOCH, WORKING, PaperFile, Transaction
from trueup.adapters.paper.translate import (
    MessageTranslator,
    to_fill_reports,
    to_order_report,
    to_order_reports,
    to_position_reports,
)
from trueup.adapters.paper.wire import WIRE_ENCODER, PaperOrder, PaperPosition
from trueup.domain.errors import BrokerQueryError
from trueup.domain.reports import (
    BrokerSnapshot,
    FillReport,
    LookupAnswer,
    OrderReport,
    PositionReport,
    RawAnswer,
)
from trueup.domain.status import Side

__all__ = ["EPOCH", "OUTAGE_PLACED_PPM", "Fault", "FaultKind", "FaultPlan", "PaperBroker"]



def utc_now() -> datetime:
    """The wall-clock time, tz-aware UTC (used only for `BrokerSnapshot.as_of`)."""
    return datetime.now(UTC)


class PaperBroker:
    """A deterministic, persistent, fault-injecting paper broker (a `BrokerClient`).

    Args:
        path: its SQLite file; created if missing, continued if it exists.
        account: the one account it serves; a file of another account is refused.
        seed: seed of the market and the fault dice, used when the file is created (a
            reopened file continues from its stored generators).
        symbols: tradable symbols, used when the file is created; others are rejected.
        faults: callback fault probabilities; None keeps the file's plan (none for a new
            file), a plan replaces it from now on.
        clock: wall clock for `BrokerSnapshot.as_of` only; the market has its own.
        accept_duplicates: place a second order with a client id already used instead of
            refusing it, as IB accepts a reused orderRef (so a test can see a re-send);
            fixed when the file is created, None keeps the file's choice (False for a new file).

    Raises:
        ConfigError: the file belongs to another account or another schema version, was
            created with the other `accept_duplicates`, or is a ledger's (its tables named).
        StoreError: the file cannot be opened.
    """

    name = "paper"
    """Adapter name: the `source` of every stream item."""

    def __init__(  # noqa: PLR0913 - the terms of a paper session
        self,
        path: str | Path,
        *,
        account: str = "PAPER",
        seed: int = 0,
        symbols: Sequence[str] = ("AAPL", "MSFT", "TSLA"),
        faults: FaultPlan | None = None,
        clock: Callable[[], datetime] = utc_now,
        accept_duplicates: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.account = account
        self.clock = clock
        self._file = PaperFile(
            self.path,
            account=account,
            seed=seed,
            symbols=tuple(symbols),
            faults=faults,
            accept_duplicates=accept_duplicates,
        )

    # -- BrokerClient ------------------------------------------------------------------------
    # The coroutines do their SQLite work inline: a local transaction takes well under a
    # millisecond, and staying on the caller's thread keeps the order of calls, and so
    # the session, deterministic.

    async def submit(self, request: OrderRequest) -> SubmitAck:
        """Place an order carrying `request.client_order_id`; it is committed before this returns.

        A symbol the broker does not trade is stored as a rejected order (with its
        callback) and acknowledged with a REJECTED report: it exists at the broker.

        Raises:
            SubmitRejected: the request is invalid (account, client id, quantity, order
                type) or the client id is already at the broker (unless the file accepts
                duplicates: then a second order is placed); nothing is created.
            SubmitUncertain: an outage is active; the order may or may not have been
                placed (decided by the market generator, logged as an `outage` fault).
        """
        check_request(request, account=self.account)
        cid = request.client_order_id
        outcome: PaperOrder | SubmitUncertain
        with self._file.write(error=SubmitUncertain) as tx:
            if tx.in_outage:
                outcome = submit_in_outage(tx, request)
            else:
                if not tx.state.accept_duplicates and tx.order_row(client_order_id=cid) is not None:
                    msg = f"duplicate client_order_id {cid!r}: already at the paper broker; nothing placed"
                    raise SubmitRejected(msg)
                outcome = place(tx, request, client_order_id=cid)
        if isinstance(outcome, SubmitUncertain):
            # Raised after the commit: what happened at the broker is stored either way.
            raise outcome
        raw = WIRE_ENCODER.encode(outcome).decode()
        return SubmitAck(
            broker_order_id=outcome.id, raw=raw, report=to_order_report(raw, account=self.account)
        )

    async def cancel(self, account: str, client_order_id: str, broker_order_id: str | None) -> None:
        """Cancel a working order at once (its callback follows); a finished order is left as is.

        The order is found by `broker_order_id` when given (an order placed by hand has
        no client id), else by `client_order_id`.

        Raises:
            BrokerQueryError: an outage is active, the account is not this broker's, no
                order matches, or the broker id names an order with another client id.
        """
        self._check_account(account)
        with self._file.write(error=BrokerQueryError) as tx:
            check_outage(tx, f"cancel {client_order_id}")
            row = tx.order_row(client_order_id=client_order_id, broker_order_id=broker_order_id)
            if row is None:
                msg = f"{account}: no order {client_order_id!r} / {broker_order_id!r} at the paper broker"
                raise BrokerQueryError(msg)
            if row["client_order_id"] is not None and row["client_order_id"] != client_order_id:
                # Never cancel one of our orders on the strength of a stale broker id.
                msg = (
                    f"{account}: broker order {broker_order_id} carries client_order_id "
                    f"{row['client_order_id']!r}, not {client_order_id!r}; nothing canceled"
                )
                raise BrokerQueryError(msg)
            if row["status"] in WORKING:
                ts = tx.event_time()
                tx.conn.execute(
                    "UPDATE orders SET status = 'canceled', ts = ? WHERE no = ?", (ts.isoformat(), row["no"])
                )
                tx.emit(tx.order_wire(row["id"]))

    async def snapshot(self, account: str) -> BrokerSnapshot:
        """Every order ever placed (complete history), every fill, every open position.

        During an outage every part is None (unknown), never an empty list.

        Raises:
            BrokerQueryError: the account is not this broker's, or the file cannot be read.
        """
        self._check_account(account)
        as_of = self.clock()
        with self._file.read(error=BrokerQueryError) as tx:
            if tx.in_outage:
                return BrokerSnapshot(account=account, as_of=as_of, orders=None, fills=None, positions=None)
            orders_raw, fills_raw, positions_raw = tx.answers()
        # The answers are translated exactly as a client translates a broker's REST bodies,
        # and travel with the snapshot verbatim, as a client's do.
        raw = tuple(
            RawAnswer(source=self.name, kind=kind, payload=body.decode())
            for kind, body in (("orders", orders_raw), ("fills", fills_raw), ("positions", positions_raw))
        )
        return BrokerSnapshot(
            account=account,
            as_of=as_of,
            orders=to_order_reports(orders_raw, account=account),
            fills=to_fill_reports(fills_raw, account=account),
            positions=to_position_reports(positions_raw, account=account),
            complete_history=True,
            raw=raw,
        )

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The order carrying `client_order_id`, or None when the broker has none.

        Raises:
            BrokerQueryError: an outage is active or the account is not this broker's.
        """
        return (await self.lookup_answer(account, client_order_id)).report

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """`lookup` with the broker's answer: the order's JSON body, or `null` when it has none.

        Raises:
            BrokerQueryError: an outage is active or the account is not this broker's.
        """
        self._check_account(account)
        with self._file.read(error=BrokerQueryError) as tx:
            check_outage(tx, f"lookup {client_order_id}")
            row = tx.order_row(client_order_id=client_order_id)
            if row is None:
                return LookupAnswer(
                    report=None, raw=RawAnswer(source=self.name, kind="lookup", payload="null")
                )
            raw = WIRE_ENCODER.encode(tx.order_wire(row["id"]))
        report = to_order_report(raw, account=account)
        return LookupAnswer(
            report=report, raw=RawAnswer(source=self.name, kind="lookup", payload=raw.decode())
        )

    async def stream(self, *, follow: bool = True, poll_interval: float = 0.01) -> AsyncIterator[StreamItem]:
        """Callbacks as they become due, oldest first; `Reconnected` after a disconnect.

        Each item is marked delivered in the transaction that takes it out of the
        outbox, so a consumer that dies before handling it has lost it, as with a socket.
        Waiting happens only between items, so cancelling the iterator loses nothing.

        Args:
            follow: keep waiting for new callbacks (a live stream); False ends the
                iteration when nothing is deliverable now (for drains and tests).
            poll_interval: seconds between looks at the outbox while nothing is due.
        """
        while True:
            item = self._take()
            if item is None:
                if not follow:
                    return
                await asyncio.sleep(poll_interval)
                continue
            yield item

    def _take(self) -> StreamItem | None:
        """The next stream item, taken out of the file in one transaction, or None."""
        with self._file.write() as tx:
            if tx.state.disconnected:
                tx.state.disconnected = False
                return Reconnected(account=self.account, source=self.name)
            row = tx.take()
            if row is None:
                return None
            return RawMessage(
                account=self.account,
                source=self.name,
                kind=row["kind"],
                payload=row["payload"],
                translate=MessageTranslator(self.account),
            )

    # -- the market ------------------------------------------------------------------------

    def step(self) -> int:
        """Advance the market one tick: move every price, execute what the prices allow.

        Working market orders execute at the new price; limit orders when the price
        crosses their limit (at the new price, which is at or better than the limit).
        Each execution takes all that remains or, per the generator, a whole part of it,
        and emits a fill callback, then the order's update. Orders execute oldest first.

        Returns:
            The new step number.
        """
        with self._file.write() as tx:
            state = tx.state
            state.step += 1
            for symbol in state.symbols:
                state.prices[symbol] = walk(state.prices[symbol], tx.market)
            for row in tx.working_orders():
                price = tick_price(state.prices[row["symbol"]])
                limit = None if row["limit_price"] is None else Decimal(row["limit_price"])
                if not crosses(row["side"], limit, price):
                    continue
                remaining = Decimal(row["qty"]) - Decimal(row["filled_qty"])
                self._execute(tx, row, fill_size(remaining, tx.market), price)
            return state.step

    @staticmethod
    def _execute(tx: Transaction, row: sqlite3.Row, qty: Decimal, price: Decimal) -> None:
        """Book one execution of `row` and emit its fill, then the order's update."""
        tx.state.execs += 1
        exec_id = f"X{tx.state.execs:08d}"
        ts = tx.event_time().isoformat()
        tx.conn.execute(
            "INSERT INTO fills (exec_id, order_no, qty, price, seq, step, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (exec_id, row["no"], str(qty), str(price), tx.state.seq, tx.state.step, ts),
        )
        filled, cost = book_execution(Decimal(row["filled_qty"]), Decimal(row["fill_cost"]), qty, price)
        status = "filled" if filled >= Decimal(row["qty"]) else "partially_filled"
        tx.conn.execute(
            "UPDATE orders SET status = ?, filled_qty = ?, fill_cost = ?, ts = ? WHERE no = ?",
            (status, str(filled), str(cost), ts, row["no"]),
        )
        tx.emit(tx.fill_wire(exec_id))
        tx.emit(tx.order_wire(row["id"]))

    # -- injected faults -------------------------------------------------------------------

    def outage(self, steps: int) -> None:
        """Make snapshot parts None, lookup and cancel raise, submit uncertain, for `steps` steps.

        The stream keeps flowing: an outage of the query API, not of the callbacks.
        """
        if steps < 1:
            msg = f"outage needs steps >= 1, got {steps}"
            raise ValueError(msg)
        with self._file.write() as tx:
            state = tx.state
            state.outage_until = max(state.outage_until, state.step + steps)
            tx.log_fault(
                FaultKind.OUTAGE,
                f"queries fail from step {state.step} until step {state.outage_until} "
                "(snapshot parts None, lookup and cancel raise, submit uncertain)",
            )

    def disconnect(self) -> None:
        """Drop the stream: the next stream item is `Reconnected`.

        Callbacks not yet delivered, and those emitted until the stream reconnects, are
        lost (each one logged); the state they carried is in the snapshot.
        """
        with self._file.write() as tx:
            lost = tx.lose_pending()
            tx.state.disconnected = True
            tx.log_fault(
                FaultKind.DISCONNECT, f"stream disconnected; {len(lost)} undelivered callback(s) lost"
            )
            for row in lost:
                label = "fill " + row["exec_id"] if row["exec_id"] else "order " + row["order_id"] + " update"
                tx.log_fault(
                    FaultKind.DISCONNECT,
                    f"callback #{row['seq']} ({label}) lost in the disconnect",
                    row["order_id"],
                    row["exec_id"],
                    row["seq"],
                )

    def manual_order(
        self, symbol: str, side: Side | str, qty: Decimal, *, limit_price: Decimal | None = None
    ) -> OrderReport:
        """Place an order by hand at the broker, with no client order id (the engine never sent it).

        Returns:
            The order as placed (working; it executes on later steps like any other).

        Raises:
            ValueError: the symbol is not traded here, or the quantity or limit is not positive.
        """
        request = OrderRequest(
            account=self.account,
            client_order_id="MANUAL",  # only to pass the request checks: never stored
            symbol=symbol,
            side=Side(side),
            quantity=qty,
            order_type=OrderType.MARKET if limit_price is None else OrderType.LIMIT,
            limit_price=limit_price,
        )
        try:
            check_request(request, account=self.account)
        except SubmitRejected as e:
            raise ValueError(str(e)) from None
        with self._file.write() as tx:
            check_symbol(tx, symbol)
            wire = place(tx, request, client_order_id=None)
            tx.log_fault(
                FaultKind.MANUAL_ORDER,
                f"order {wire.id} ({wire.side} {wire.qty} {symbol}) placed by hand, no client_order_id",
                wire.id,
            )
        return to_order_report(WIRE_ENCODER.encode(wire), account=self.account)

    def shift_position(self, symbol: str, qty_delta: Decimal, price: Decimal) -> PositionReport:
        """Change a position behind the engine's back: no order, no fill, no callback.

        The shift nets into the position like a trade of `qty_delta` at `price`.

        Returns:
            The symbol's position after the shift (quantity 0 if it is now flat).

        Raises:
            ValueError: the symbol is not traded here, the delta is zero or the price not positive.
        """
        if not qty_delta.is_finite() or qty_delta == 0 or not price.is_finite() or price <= 0:
            msg = f"shift_position needs a non-zero delta and a positive price, got {qty_delta} @ {price}"
            raise ValueError(msg)
        with self._file.write() as tx:
            check_symbol(tx, symbol)
            ts = tx.event_time()
            tx.conn.execute(
                "INSERT INTO shifts (symbol, qty_delta, price, seq, step, ts) VALUES (?, ?, ?, ?, ?, ?)",
                (symbol, str(qty_delta), str(price), tx.state.seq, tx.state.step, ts.isoformat()),
            )
            tx.log_fault(
                FaultKind.SHIFT_POSITION, f"{symbol} position shifted by {qty_delta} @ {price}, no fill"
            )
            held = [p for p in tx.position_wires() if p.symbol == symbol]
        position = (
            held[0] if held else PaperPosition(symbol=symbol, qty=Decimal(0), avg_cost=Decimal(0), ts=ts)
        )
        return to_position_reports(WIRE_ENCODER.encode([position]), account=self.account)[0]

    # -- inspection: the broker's truth ----------------------------------------------------

    @property
    def current_step(self) -> int:
        """The market's step counter."""
        with self._file.read() as tx:
            return tx.state.step

    def price(self, symbol: str) -> Decimal:
        """The current price of `symbol`.

        Raises:
            ValueError: the symbol is not traded here.
        """
        with self._file.read() as tx:
            check_symbol(tx, symbol)
            return tick_price(tx.state.prices[symbol])

    @property
    def accepts_duplicates(self) -> bool:
        """Whether a second order with a client id already used is placed (not refused)."""
        with self._file.read() as tx:
            return tx.state.accept_duplicates

    def orders(self) -> list[OrderReport]:
        """Every order at the broker, in the order placed, whatever the faults hid."""
        with self._file.read() as tx:
            raw = tx.answers()[0]
        return to_order_reports(raw, account=self.account)

    def fills(self) -> list[FillReport]:
        """Every execution, in the order they happened."""
        with self._file.read() as tx:
            raw = tx.answers()[1]
        return to_fill_reports(raw, account=self.account)

    def positions(self) -> list[PositionReport]:
        """Open positions (fills plus out-of-band shifts), by symbol; flat ones are not listed."""
        with self._file.read() as tx:
            raw = tx.answers()[2]
        return to_position_reports(raw, account=self.account)

    def faults(self) -> list[Fault]:
        """Every fault injected so far, in the order injected."""
        with self._file.read() as tx:
            return tx.faults()

    def close(self) -> None:
        """Close the file (idempotent); the state stays in it for the next `PaperBroker`."""
        self._file.close()

    def __enter__(self) -> Self:
        """Use as a context manager (closes on exit)."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on exit."""
        self.close()

    def __repr__(self) -> str:
        """Name the file and the account."""
        return f"PaperBroker({str(self.path)!r}, account={self.account!r})"

    # -- internals ---------------------------------------------------------------------------

    def _check_account(self, account: str) -> None:
        if account != self.account:
            msg = f"the paper broker at {self.path} serves account {self.account!r}, not {account!r}"
            raise BrokerQueryError(msg)
