"""A wire-level fake TWS: an asyncio socket server on 127.0.0.1 speaking the TWS API protocol.

Enough of the protocol for the real ib_async client (BROKERS.md 1.6), at server version
176: the handshake, the startup answers (nextValidId, managedAccounts and the end markers
of ib_async's startup requests), placeOrder (msg 3), cancelOrder (4), reqOpenOrders (5),
reqExecutions (7), reqPositions (61), reqCompletedOrders (99); and pushes openOrder (5),
orderStatus (3), execDetails (11), commissionReport (59), completedOrder (101), position
(61) and error (4). Message layouts follow ib_async's decoder field by field for server
version 176 (`openOrder`/`completedOrder` are built from the section lists below, each
named as in `ib_async/decoder.py`).

The fake keeps its own books (orders, executions by execution key, positions) so tests
can assert that the ledger ends equal to them. Tests drive it from their own thread:
every public method is thread-safe and returns once the messages are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

SERVER_VERSION = 176
ACCOUNT = "DU123"
CANCELLED_CODE = 202
CANNOT_CANCEL_CODE = 10148
DUPLICATE_ID_CODE = 103
CLIENT_ID_IN_USE_CODE = 326
REQUEST_FAILED_CODE = 322
REJECTED_CODE = 201

DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


@dataclass
class FakeOrder:
    perm_id: int
    order_id: int
    client_id: int
    account: str
    symbol: str
    con_id: int
    action: str
    quantity: Decimal
    order_type: str
    lmt_price: Decimal | None
    order_ref: str
    status: str = "PreSubmitted"
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    why_held: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def avg_price(self) -> Decimal:
        return self.cost / self.filled if self.filled else Decimal(0)

    @property
    def is_open(self) -> bool:
        return self.status not in DONE or (self.status == "Inactive" and self.why_held == "locate")


@dataclass
class FakeExecution:
    exec_id: str
    order: FakeOrder
    shares: Decimal
    price: Decimal
    cum_qty: Decimal
    avg_price: Decimal
    time: datetime
    commission: Decimal

    @property
    def key(self) -> str:
        return self.exec_id.rsplit(".", 1)[0]


@dataclass
class Session:
    writer: asyncio.StreamWriter
    client_id: int = -1
    messages: list[list[str]] = field(default_factory=list)


def _num(value: Decimal | int | None) -> str:
    return "" if value is None else str(value)


# --- message layouts (server version 176) ------------------------------------------------------


def contract_fields(order: FakeOrder, *, exchange: str = "SMART") -> list[str]:
    # conId, symbol, secType, lastTradeDateOrContractMonth, strike, right, multiplier,
    # exchange, currency, localSymbol, tradingClass
    return [
        str(order.con_id),
        order.symbol,
        "STK",
        "",
        "0",
        "",
        "",
        exchange,
        "USD",
        order.symbol,
        order.symbol,
    ]


def open_order_fields(order: FakeOrder, version: int = SERVER_VERSION) -> list[str]:
    """`openOrder` (msg 5), section by section as `Decoder.openOrder` reads them."""
    f = [
        "5",
        str(order.order_id),
        *contract_fields(order),
        # action, totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account,
        # openClose, origin, orderRef, clientId, permId, outsideRth, hidden,
        # discretionaryAmt, goodAfterTime, (sharesAllocation), faGroup, faMethod, faPercentage
        order.action,
        str(order.quantity),
        order.order_type,
        _num(order.lmt_price),
        "",
        "DAY",
        "",
        order.account,
        "O",
        "0",
        order.order_ref,
        str(order.client_id),
        str(order.perm_id),
        "0",
        "0",
        "0",
        "",
        "",
        "",
        "",
        "",
    ]
    if version < 177:
        f += [""]  # faProfile
    # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm, shortSaleSlot,
    # designatedLocation, exemptCode, auctionStrategy, startingPrice, stockRefPrice, delta,
    # stockRangeLower, stockRangeUpper, displaySize, blockOrder, sweepToFill, allOrNone,
    # minQty, ocaType, eTradeOnly, firmQuoteOnly, nbboPriceCap, parentId, triggerMethod,
    # volatility, volatilityType, deltaNeutralOrderType (empty: no delta-neutral block),
    # deltaNeutralAuxPrice
    f += ["", "", "", "", "", "0", "", "-1", "0", "", "", "", "", "", "", "0", "0", "0", "", "3",
          "0", "0", "", "0", "0", "", "0", "", ""]  # fmt: skip
    # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, basisPoints,
    # basisPointsType, comboLegsDescrip
    f += ["0", "0", "", "", "", "", ""]
    f += ["0", "0", "0"]  # comboLegs, orderComboLegs, smartComboRoutingParams: none
    f += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement (unset: no scale block)
    f += [""]  # hedgeType (empty: no hedgeParam)
    f += ["0", "", "", "0", "0"]  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dncPresent
    f += [""]  # algoStrategy (empty: no params)
    # solicited, whatIf, orderState.status, 9 margin fields, commission, minCommission,
    # maxCommission, commissionCurrency, warningText, randomizeSize, randomizePrice
    f += ["0", "0", order.status, "", "", "", "", "", "", "", "", "", "", "", "", "", "", "0", "0"]
    f += ["0"]  # conditions: none
    # adjustedOrderType, triggerPrice, trailStopPrice, lmtPriceOffset, adjustedStopPrice,
    # adjustedStopLimitPrice, adjustedTrailingAmount, adjustableTrailingUnit,
    # softDollarTier name, value, displayName, cashQty, dontUseAutoPriceForHedge,
    # isOmsContainer, discretionaryUpToLimitPrice, usePriceMgmtAlgo
    f += ["None", "", "", "", "", "", "", "0", "", "", "", "", "0", "0", "0", "0"]
    if version >= 159:
        f += [""]  # duration
    if version >= 160:
        f += ["0"]  # postToAts
    if version >= 162:
        f += ["0"]  # autoCancelParent
    if version >= 170:
        f += [
            "",
            "",
            "",
            "",
            "",
        ]  # minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsetAtWhole/Half
    return f


def completed_order_fields(order: FakeOrder, version: int = SERVER_VERSION) -> list[str]:
    """`completedOrder` (msg 101): no orderId, no clientId (BROKERS.md 1.3)."""
    f = [
        "101",
        *contract_fields(order),
        # action, totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account,
        # openClose, origin, orderRef, permId, outsideRth, hidden, discretionaryAmt,
        # goodAfterTime, faGroup, faMethod, faPercentage
        order.action,
        str(order.quantity),
        order.order_type,
        _num(order.lmt_price),
        "",
        "DAY",
        "",
        order.account,
        "O",
        "0",
        order.order_ref,
        str(order.perm_id),
        "0",
        "0",
        "0",
        "",
        "",
        "",
        "",
    ]
    if version < 177:
        f += [""]  # faProfile
    # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm, shortSaleSlot,
    # designatedLocation, exemptCode, startingPrice, stockRefPrice, delta, stockRangeLower,
    # stockRangeUpper, displaySize, sweepToFill, allOrNone, minQty, ocaType, triggerMethod,
    # volatility, volatilityType, deltaNeutralOrderType (empty), deltaNeutralAuxPrice
    f += ["", "", "", "", "", "0", "", "-1", "", "", "", "", "", "", "0", "0", "", "3", "0", "", "0", "", ""]
    f += [
        "0",
        "0",
        "",
        "",
        "",
    ]  # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, comboLegsDescrip
    f += ["0", "0", "0"]  # comboLegs, orderComboLegs, smartComboRoutingParams
    f += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
    f += [""]  # hedgeType
    f += ["", "", "0", "0"]  # clearingAccount, clearingIntent, notHeld, dncPresent
    f += [""]  # algoStrategy
    f += ["0", order.status, "0", "0"]  # solicited, orderState.status, randomizeSize, randomizePrice
    f += ["0"]  # conditions
    # trailStopPrice, lmtPriceOffset, cashQty, dontUseAutoPriceForHedge, isOmsContainer,
    # autoCancelDate, filledQuantity, refFuturesConId, autoCancelParent, shareholder,
    # imbalanceOnly, routeMarketableToBbo, parentPermId, completedTime, completedStatus
    f += ["", "", "", "0", "0", "", str(order.filled), "0", "0", "", "0", "0", "",
          "20240501 20:00:00 UTC", order.status]  # fmt: skip
    if version >= 170:
        f += ["", "", "", "", ""]
    return f


def order_status_fields(order: FakeOrder) -> list[str]:
    # orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice,
    # clientId, whyHeld, mktCapPrice
    return [
        "3", str(order.order_id), order.status, str(order.filled), str(order.remaining),
        str(order.avg_price), str(order.perm_id), "0", str(order.last_fill_price),
        str(order.client_id), order.why_held, "0",
    ]  # fmt: skip


def exec_details_fields(execution: FakeExecution, req_id: int = -1) -> list[str]:
    order = execution.order
    # reqId, orderId, contract (conId .. tradingClass), execId, time, acctNumber, exchange,
    # side, shares, price, permId, clientId, liquidation, cumQty, avgPrice, orderRef,
    # evRule, evMultiplier, modelCode, lastLiquidity (no pendingPriceRevision below 178)
    return [
        "11", str(req_id), str(order.order_id), *contract_fields(order, exchange="NASDAQ"),
        execution.exec_id, execution.time.strftime("%Y%m%d %H:%M:%S UTC"), order.account, "NASDAQ",
        "BOT" if order.action == "BUY" else "SLD", str(execution.shares), str(execution.price),
        str(order.perm_id), str(order.client_id), "0", str(execution.cum_qty), str(execution.avg_price),
        order.order_ref, "", "", "", "1",
    ]  # fmt: skip


def commission_fields(execution: FakeExecution) -> list[str]:
    # version, execId, commission, currency, realizedPNL (unset), yield (unset), yieldRedemptionDate
    unset = "1.7976931348623157E308"
    return ["59", "1", execution.exec_id, str(execution.commission), "USD", unset, unset, ""]


def error_fields(req_id: int, code: int, message: str) -> list[str]:
    return ["4", "2", str(req_id), str(code), message, ""]


# --- the server ------------------------------------------------------------------------------


class FakeTws:
    """The fake TWS: its own thread and event loop, its own books."""

    def __init__(self, account: str = ACCOUNT, *, next_order_id: int = 1) -> None:
        self.account = account
        self.orders: dict[int, FakeOrder] = {}
        """By permId."""
        self.executions: dict[str, FakeExecution] = {}
        """By execution key (execId without its revision): the latest revision only."""
        self.positions: dict[tuple[str, str], tuple[Decimal, Decimal, int]] = {}
        """(account, symbol) -> (qty, avg cost, conId)."""
        self.placed: list[tuple[int, int, str]] = []
        """Every placeOrder received: (clientId, orderId, orderRef)."""
        self.used_order_ids: dict[int, set[int]] = {}
        self.duplicate_order_ids: list[tuple[int, int]] = []
        self.client_ids_seen: list[int] = []
        self.on_place = "ack"
        """"ack" (openOrder + Submitted), "drop" (take the order, then cut the connection),
        "reject" (error 201 only; the order is completed as Inactive)."""
        self.hold_cancels = False
        self.pending_cancels: list[FakeOrder] = []
        self.unanswered: set[str] = set()
        """Message ids (as received, e.g. "61") the fake ignores, so their requests time out."""
        self.down = False
        self.fills_during_positions: list[tuple[str, str, str]] = []
        """(orderRef, qty, price) executed, one per reqPositions, just before it is answered:
        an execution landing between a snapshot's executions read and its positions read."""
        self._next_valid_id = next_order_id
        self._next_perm_id = 1_734_000_001
        self._exec_seq = 0
        self._con_ids: dict[str, int] = {}
        self._sessions: list[Session] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-tws", daemon=True)
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeTws:
        self._thread.start()
        # A port below the kernel's ephemeral range (32768+): while the fake is `down`, its
        # port is free, and an ephemeral one could be taken meanwhile by another server or
        # by the client's own reconnect attempt (a TCP self-connect), and `up()` would fail.
        for _ in range(200):
            port = random.randint(20_000, 32_000)
            try:
                self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", port))
            except OSError:
                continue  # in use: try another
            self.port = port
            return self
        msg = "no free port in 20000-32000 for the fake TWS"
        raise RuntimeError(msg)

    def stop(self) -> None:
        async def shutdown() -> None:
            for session in list(self._sessions):
                session.writer.transport.abort()
            if self._server is not None:
                self._server.close()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _run(self, fn: Callable[[], Any]) -> Any:
        async def go() -> Any:
            return fn()

        return self._call(go())

    # -- reading state (thread-safe copies) -----------------------------------------------

    def order(self, order_ref: str) -> FakeOrder:
        def find() -> FakeOrder:
            matches = [o for o in self.orders.values() if o.order_ref == order_ref]
            assert len(matches) == 1, f"{len(matches)} orders carry orderRef {order_ref!r}"
            return matches[0]

        return self._run(find)  # type: ignore[no-any-return]

    def connected_client_ids(self) -> list[int]:
        return self._run(lambda: [s.client_id for s in self._sessions if s.client_id >= 0])  # type: ignore[no-any-return]

    def execution_ids(self, order_ref: str) -> list[str]:
        return self._run(  # type: ignore[no-any-return]
            lambda: sorted(e.exec_id for e in self.executions.values() if e.order.order_ref == order_ref)
        )

    def position(self, symbol: str) -> tuple[Decimal, Decimal]:
        qty, avg, _ = self._run(
            lambda: self.positions.get((self.account, symbol), (Decimal(0), Decimal(0), 0))
        )
        return qty, avg

    # -- driving the broker ----------------------------------------------------------------

    def fill(
        self,
        order_ref: str,
        qty: str,
        price: str,
        *,
        commission: str = "1.25",
        send_status: bool = True,
        perm_id: int | None = None,
    ) -> str:
        """Execute `qty` at `price`: execDetails, orderStatus (unless not `send_status`), commissionReport.

        The order is found by `order_ref`, or by `perm_id` when given (orders without a ref).
        """

        def go() -> str:
            return self._execute(
                order_ref, qty, price, commission=commission, send_status=send_status, perm_id=perm_id
            )

        return self._run(go)  # type: ignore[no-any-return]

    def _execute(
        self, order_ref: str, qty: str, price: str, *, commission: str, send_status: bool, perm_id: int | None
    ) -> str:
        order = self.orders[perm_id] if perm_id is not None else self._find(order_ref)
        self._exec_seq += 1
        exec_id = f"0000e0d5.{self._exec_seq:08x}.01.01"
        shares, px = Decimal(qty), Decimal(price)
        assert order.filled + shares <= order.quantity, "the fake never overfills"
        order.filled += shares
        order.cost += shares * px
        order.last_fill_price = px
        order.status = "Filled" if order.remaining == 0 else "Submitted"
        order.why_held = ""
        execution = FakeExecution(
            exec_id,
            order,
            shares,
            px,
            order.filled,
            order.avg_price,
            datetime.now(UTC),
            Decimal(commission),
        )
        self.executions[execution.key] = execution
        self._recompute_positions()
        self._to_owner(order, exec_details_fields(execution))
        if send_status:
            self._to_owner(order, order_status_fields(order))
        self._to_owner(order, commission_fields(execution))
        return exec_id

    def place_external(self, symbol: str, qty: str, price: str, *, order_ref: str = "") -> int:
        """An order entered by hand in TWS (clientId 0, orderId 0), filled at once; returns its permId."""

        def go() -> int:
            con_id = self._con_ids.setdefault(symbol, 265_598 + len(self._con_ids))
            order = FakeOrder(
                perm_id=self._next_perm_id,
                order_id=0,
                client_id=0,
                account=self.account,
                symbol=symbol,
                con_id=con_id,
                action="BUY",
                quantity=Decimal(qty),
                order_type="MKT",
                lmt_price=None,
                order_ref=order_ref,
                status="Submitted",
            )
            self._next_perm_id += 1
            self.orders[order.perm_id] = order
            return order.perm_id

        perm_id: int = self._run(go)
        self.fill(order_ref, qty, price, perm_id=perm_id)
        return perm_id

    def correct(self, exec_id: str, price: str, *, commission: str = "1.30") -> str:
        """Correct an execution's price: a new execId whose revision is one higher (.01 -> .02)."""

        def go() -> str:
            base, revision = exec_id.rsplit(".", 1)
            old = self.executions[base]
            assert old.exec_id == exec_id
            order = old.order
            new_id = f"{base}.{int(revision) + 1:02d}"
            px = Decimal(price)
            order.cost += old.shares * (px - old.price)
            execution = FakeExecution(
                new_id, order, old.shares, px, old.cum_qty, order.avg_price, old.time, Decimal(commission)
            )
            self.executions[base] = execution
            self._recompute_positions()
            self._to_owner(order, exec_details_fields(execution))
            self._to_owner(order, commission_fields(execution))
            return new_id

        return self._run(go)  # type: ignore[no-any-return]

    def resend_status(self, order_ref: str, **override: str) -> None:
        """Send the order's status again (a duplicate), optionally with stale fields."""

        def go() -> None:
            order = self._find(order_ref)
            fields = order_status_fields(order)
            names = ["status", "filled", "remaining", "avgFillPrice"]
            for name, value in override.items():
                fields[2 + names.index(name)] = value
            self._to_owner(order, fields)

        self._run(go)

    def set_status(self, order_ref: str, status: str, *, why_held: str = "") -> None:
        """Move the order to `status` (e.g. Inactive with whyHeld "locate", then Submitted)."""

        def go() -> None:
            order = self._find(order_ref)
            order.status, order.why_held = status, why_held
            self._to_owner(order, order_status_fields(order))

        self._run(go)

    def error(self, order_ref: str, code: int, message: str) -> None:
        """Send an error tied to the order (reqId = its orderId); the order itself does not change."""

        def go() -> None:
            order = self._find(order_ref)
            self._to_owner(order, error_fields(order.order_id, code, message))

        self._run(go)

    def roll_over_day(self) -> None:
        """Midnight on IB Gateway: completed orders and executions are no longer listed.

        Open orders and positions carry over (a GTC order stays open; shares stay held).
        """

        def go() -> None:
            self.orders = {perm: order for perm, order in self.orders.items() if order.is_open}
            self.executions.clear()

        self._run(go)

    def process_cancels(self) -> None:
        """Answer the cancel requests held back while `hold_cancels` was set."""

        def go() -> None:
            pending, self.pending_cancels = self.pending_cancels, []
            for order in pending:
                self._cancel(order)

        self._run(go)

    def drop(self, *, down: bool = False) -> None:
        """Cut every connection (TWS restart, network loss); `down` also stops listening until `up()`."""

        async def go() -> None:
            self.down = down
            if down and self._server is not None:
                self._server.close()  # connections are refused, as when TWS is not running
            for session in list(self._sessions):
                session.writer.transport.abort()
            self._sessions.clear()
            if down and self._server is not None:
                await self._server.wait_closed()

        self._call(go())

    def up(self) -> None:
        """Listen again on the same port."""

        async def go() -> None:
            self.down = False
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(go())

    # -- protocol ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        session = Session(writer)
        try:
            assert await reader.readexactly(4) == b"API\0"
            await self._read(reader)  # "v157..178": we answer with our version
            writer.write(_frame([str(SERVER_VERSION), datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")]))
            self._sessions.append(session)
            while True:
                fields = await self._read(reader)
                self._dispatch(session, fields)
                session.messages.append(fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if session in self._sessions:
                self._sessions.remove(session)
            writer.transport.abort()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> list[str]:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        fields = (await reader.readexactly(size)).decode().split("\0")
        fields.pop()
        return fields

    def _send(self, session: Session, fields: list[str]) -> None:
        if session in self._sessions and not session.writer.transport.is_closing():
            session.writer.write(_frame(fields))

    def _to_owner(self, order: FakeOrder, fields: list[str]) -> None:
        """TWS sends an order's events to the clientId that placed it (and to clientId 0)."""
        for session in self._sessions:
            if session.client_id in {order.client_id, 0}:
                self._send(session, fields)

    def _dispatch(self, session: Session, fields: list[str]) -> None:
        msg = fields[0]
        if msg in self.unanswered:
            return
        if msg == "71":  # startApi: [71, version, clientId, optCapab]
            client_id = int(fields[2])
            if client_id in {s.client_id for s in self._sessions}:
                self._send(session, error_fields(-1, CLIENT_ID_IN_USE_CODE, "client id is already in use"))
                session.writer.transport.abort()
                return
            session.client_id = client_id
            self.client_ids_seen.append(client_id)
            used = self.used_order_ids.get(client_id, set())
            next_id = max([self._next_valid_id, *(i + 1 for i in used)])
            self._send(session, ["9", "1", str(next_id)])
            self._send(session, ["15", "1", self.account])
        elif msg == "3":
            self._place(session, fields)
        elif msg == "4":  # cancelOrder: [4, version, orderId, manualCancelOrderTime]
            order = self._by_order_id(session.client_id, int(fields[2]))
            if order is None:
                self._send(session, error_fields(int(fields[2]), 135, "Can't find order"))
            elif self.hold_cancels:
                self.pending_cancels.append(order)
            else:
                self._cancel(order)
        elif msg in {"5", "16"}:  # reqOpenOrders (this client's; all for clientId 0), reqAllOpenOrders
            for order in self.orders.values():
                if order.is_open and (msg == "16" or session.client_id in {order.client_id, 0}):
                    self._send(session, open_order_fields(order))
                    self._send(session, order_status_fields(order))
            self._send(session, ["53", "1"])
        elif msg == "99":  # reqCompletedOrders
            for order in self.orders.values():
                if not order.is_open:
                    self._send(session, completed_order_fields(order))
            self._send(session, ["102"])
        elif msg == "7":  # reqExecutions: [7, version, reqId, clientId, acctCode, time, ...]
            req_id, account = int(fields[2]), fields[4]
            for execution in self.executions.values():
                if account in {"", execution.order.account}:
                    self._send(session, exec_details_fields(execution, req_id))
                    self._send(session, commission_fields(execution))
            self._send(session, ["55", "1", str(req_id)])
        elif msg == "61":  # reqPositions: every account's rows, size-0 rows included
            if self.fills_during_positions:
                ref, qty, price = self.fills_during_positions.pop(0)
                self._execute(ref, qty, price, commission="1.25", send_status=True, perm_id=None)
            for (account, symbol), (qty, avg, con_id) in self.positions.items():
                self._send(
                    session,
                    ["61", "3", account, str(con_id), symbol, "STK", "", "0", "", "", "SMART", "USD", symbol,
                     symbol, str(qty), str(avg)],
                )  # fmt: skip
            self._send(session, ["62", "1"])
        elif msg == "6":  # reqAccountUpdates: [6, version, subscribe, acctCode]
            self._send(session, ["54", "1", fields[3]])
        elif msg == "76":  # reqAccountUpdatesMulti: [76, version, reqId, account, modelCode, ledgerAndNLV]
            self._send(session, ["74", "1", fields[2]])

    def _place(self, session: Session, fields: list[str]) -> None:
        # [3, orderId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        #  primaryExchange, currency, localSymbol, tradingClass, secIdType, secId, action,
        #  totalQuantity, orderType, lmtPrice, auxPrice, tif, ocaGroup, account, openClose,
        #  origin, orderRef, transmit, ...]
        order_id, client_id = int(fields[1]), session.client_id
        self.placed.append((client_id, order_id, fields[26]))
        used = self.used_order_ids.setdefault(client_id, set())
        if order_id in used:
            self.duplicate_order_ids.append((client_id, order_id))
            self._send(session, error_fields(order_id, DUPLICATE_ID_CODE, "Duplicate order id"))
            return
        used.add(order_id)
        symbol = fields[3]
        con_id = self._con_ids.setdefault(symbol, 265_598 + len(self._con_ids))
        order = FakeOrder(
            perm_id=self._next_perm_id,
            order_id=order_id,
            client_id=client_id,
            account=fields[23] or self.account,
            symbol=symbol,
            con_id=con_id,
            action=fields[16],
            quantity=Decimal(fields[17]).normalize(),
            order_type=fields[18],
            lmt_price=Decimal(fields[19]) if fields[19] else None,
            order_ref=fields[26],
        )
        self._next_perm_id += 1
        self.orders[order.perm_id] = order
        if self.on_place == "drop":
            session.writer.transport.abort()
            self._sessions.remove(session)
            return
        if self.on_place == "reject":
            # Only the error reaches the client; the order is listed among completed orders.
            order.status = "Inactive"
            self._send(
                session,
                error_fields(order_id, REJECTED_CODE, "Order rejected - reason: no trading permissions"),
            )
            return
        order.status = "Submitted"
        self._send(session, open_order_fields(order))
        self._send(session, order_status_fields(order))

    def _cancel(self, order: FakeOrder) -> None:
        if not order.is_open:
            message = f"OrderId {order.order_id} that needs to be cancelled cannot be cancelled, state: {order.status}."
            self._to_owner(order, error_fields(order.order_id, CANNOT_CANCEL_CODE, message))
            return
        order.status, order.why_held = "Cancelled", ""
        self._to_owner(order, order_status_fields(order))
        self._to_owner(order, error_fields(order.order_id, CANCELLED_CODE, "Order Canceled - reason:"))

    def _find(self, order_ref: str) -> FakeOrder:
        matches = [o for o in self.orders.values() if o.order_ref == order_ref]
        assert len(matches) == 1, f"{len(matches)} orders carry orderRef {order_ref!r}"
        return matches[0]

    def _by_order_id(self, client_id: int, order_id: int) -> FakeOrder | None:
        return next(
            (o for o in self.orders.values() if o.client_id == client_id and o.order_id == order_id), None
        )

    def _recompute_positions(self) -> None:
        """Positions from the executions (latest revisions, in time order): signed quantity,
        average cost of the open side (a reducing trade keeps it, a flat position is 0)."""
        books: dict[tuple[str, str], tuple[Decimal, Decimal, int]] = {
            key: (Decimal(0), Decimal(0), con_id) for key, (_, _, con_id) in self.positions.items()
        }
        for execution in sorted(self.executions.values(), key=lambda e: (e.time, e.exec_id)):
            order = execution.order
            key = (order.account, order.symbol)
            qty, avg, _ = books.get(key, (Decimal(0), Decimal(0), order.con_id))
            delta = execution.shares if order.action == "BUY" else -execution.shares
            new_qty = qty + delta
            if new_qty == 0:
                new_avg = Decimal(0)
            elif qty == 0 or (qty > 0) != (new_qty > 0):
                new_avg = execution.price
            elif abs(new_qty) > abs(qty):
                new_avg = (qty * avg + delta * execution.price) / new_qty
            else:
                new_avg = avg
            books[key] = (new_qty, new_avg, order.con_id)
        self.positions = books


def _frame(fields: list[str]) -> bytes:
    body = ("\0".join(fields) + "\0").encode()
    return struct.pack(">I", len(body)) + body


@contextlib.contextmanager
def running(account: str = ACCOUNT) -> Iterator[FakeTws]:
    """A started fake TWS, stopped afterwards."""
    fake = FakeTws(account).start()
    try:
        yield fake
    finally:
        fake.stop()
