"""`IbClient`: the `BrokerClient` port for Interactive Brokers, on ib_async's `IB` in the caller's loop.

Needs the `ib` extra (`pip install 'trueup[ib]'`); the package `__init__` does not import
this module, so `import trueup` works without it. Everything runs in the asyncio loop
that calls it (ib_async is asyncio-native); one `IbClient` serves one account on one
API connection (one `clientId`).

Identifiers: our `client_order_id` travels in `Order.orderRef`; the
broker id is `permId` (stable across sessions; completed orders carry no orderId). The
ledger stores the `orderRef -> permId` link as a `BrokerOrderLink` event the first time
a report carries both. Each new order takes a fresh orderId from ib_async's id sequence
(which TWS's `nextValidId` and every orderId seen push forward), and this client also
refuses to hand out an id it has used before: an orderId is never reused, so a retry can
never modify or duplicate an order. A retry is never sent anyway: before placing, the
client looks for an order already carrying our `orderRef`.

Outcomes:

* submit: acknowledged once TWS answers with the order (`openOrder`, with its permId);
  a dropped connection, no answer within `ack_timeout`, or an error ib_async turns into
  a local `Cancelled` are `SubmitUncertain` (ib_async's status is an intent, not TWS's
  word): the caller looks the order up by client id, never re-sends. Not connected at
  all is `SubmitUncertain` too (nothing was sent; the lookup proves it).
* lookup: open orders plus completed orders (today), searched by `orderRef`; None only
  when both answered. Any failure is `BrokerQueryError`.
* snapshot: the four queries `reqAllOpenOrdersAsync`, `reqCompletedOrdersAsync`,
  `reqExecutionsAsync`, `reqPositionsAsync`, one at a time (ib_async keys the first
  two and the last by name, so concurrent calls would overwrite each other's futures),
  then the executions again: one consistent cut. If an execution landed meanwhile
  the snapshot is taken again (`SNAPSHOT_ATTEMPTS` in all), and if they never hold
  still the positions are None for the cycle (STALE_DATA, with the reason).
  Open orders of every client, not only this clientId's (`reqOpenOrders`): a snapshot
  taken with another clientId (a one-off `trueup reconcile`) must not read the engine's
  working orders as missing, and orders entered in TWS show up as orphans.
  A part whose query failed, timed out, was cut by a disconnect, or does not translate
  is None (STALE_DATA), never `[]`. `complete_history` is always False: completed orders
  and executions reach back only to midnight (IB Gateway). `history_since` is that
  midnight (`history_start`): an open order of ours neither listed as open nor completed
  today is missing, and recovery never closes an order sent before midnight that it
  cannot find (its outcome is unknown, not "never placed").
  `RaiseRequestErrors` is on, so a request that fails with a TWS error raises instead of
  returning the (empty) partial list: a failure is never read as "no orders" or "flat".
  The cut, the parts' translation and the lookup's queries are `IbReads` (`reads.py`).
* stream: `IbConnection.items()` (`connection.py`): every ib_async event stored as a
  JSON envelope before translation, and `Reconnected` after every reconnect (with the
  same clientId, backing off).

Known limit: contracts are built from the symbol alone (`sec_type`, `exchange`,
`currency` per client).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

import msgspec

from trueup.adapters.base import (
    OrderRequest,
    OrderType,
    StreamItem,
    SubmitAck,
    SubmitRejected,
    SubmitUncertain,
)
from trueup.adapters.ib.connection import SOURCE, IbConnection, utc_now
from trueup.adapters.ib.envelope import to_reports
from trueup.adapters.ib.reads import SNAPSHOT_ATTEMPTS, IbReads
from trueup.adapters.ib.wire import IbEnvelope, trade_wire
from trueup.domain.errors import BrokerQueryError, ConfigError, TrueupError
from trueup.domain.reports import (
    BrokerSnapshot,
    LookupAnswer,
    OrderReport,
    RawAnswer,
)
from trueup.domain.status import Side

try:
    from ib_async import Contract, LimitOrder, MarketOrder, Order, Trade
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Interactive Brokers adapter needs ib_async: pip install 'trueup[ib]'"
    raise ImportError(msg) from e

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "SNAPSHOT_ATTEMPTS", "SOURCE", "IbClient"]

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7497
"""TWS paper trading's API port (IB Gateway paper: 4002)."""
DEFAULT_CLIENT_ID: Final = 1

_ACTION: Final = {Side.BUY: "BUY", Side.SELL: "SELL"}
_UNACKED: Final = frozenset({"PendingSubmit", "ApiPending", ""})
"""Statuses that are not yet TWS's answer to a placeOrder."""
_ENCODER: Final = msgspec.json.Encoder()


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        msg = f"{name} must be an integer, got {raw!r}"
        raise ConfigError(msg) from None


class IbClient:
    """Interactive Brokers (TWS or IB Gateway) through ib_async, for one account and one clientId."""

    name = SOURCE
    """Adapter name: the `source` of what this client reports."""

    def __init__(  # noqa: PLR0913 - connection, then keyword-only knobs
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        client_id: int = DEFAULT_CLIENT_ID,
        *,
        account: str,
        connect_timeout: float = 4.0,
        request_timeout: float = 10.0,
        ack_timeout: float = 5.0,
        reconnect_delay: float = 0.2,
        reconnect_max_delay: float = 30.0,
        sec_type: str = "STK",
        exchange: str = "SMART",
        currency: str = "USD",
        history_tz: tzinfo | None = None,
        lookback: float | None = None,
    ) -> None:
        """Prepare (not connect) a client; the first call that needs TWS connects.

        `history_tz` is the time zone of the TWS / Gateway whose lists reset at midnight
        (default: this machine's). `lookback`: seconds of history a snapshot vouches for;
        TWS lists only today, so `history_since` is the later of midnight and
        ``now - lookback`` (None: midnight).

        Raises:
            ConfigError: a setting is out of range.
        """
        if not account.strip():
            msg = "account must be the IB account id (e.g. 'DU1234567'), got an empty string"
            raise ConfigError(msg)
        if not 0 < port < 65536:
            msg = f"port must be 1-65535, got {port}"
            raise ConfigError(msg)
        if client_id < 0:
            msg = f"client_id must be >= 0 (TWS API clientId), got {client_id}"
            raise ConfigError(msg)
        for knob, value in (
            ("lookback", 1.0 if lookback is None else lookback),
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
            ("ack_timeout", ack_timeout),
            ("reconnect_delay", reconnect_delay),
            ("reconnect_max_delay", reconnect_max_delay),
        ):
            if not value > 0:
                msg = f"{knob} must be > 0 seconds, got {value!r}"
                raise ConfigError(msg)
        self.host, self.port, self.client_id, self.account = host, port, client_id, account
        self.ack_timeout = ack_timeout
        self.sec_type, self.exchange, self.currency = sec_type, exchange, currency
        self.history_tz = history_tz
        self.lookback = lookback
        self.connection = IbConnection(
            host,
            port,
            client_id,
            account=account,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self.translate = self.connection.translate
        self._ib = self.connection.ib
        self._reads = IbReads(self.connection, account=account)
        self._last_order_id = 0

    @classmethod
    def from_env(
        cls, account: str, environ: Mapping[str, str] | None = None, *, lookback: float | None = None
    ) -> IbClient:
        """A client for `account` configured from IB_HOST, IB_PORT and IB_CLIENT_ID.

        Defaults: 127.0.0.1, 7497 (TWS paper), clientId 1. Use the same IB_CLIENT_ID
        after a crash: only that clientId receives its orders' statuses and executions.

        Raises:
            ConfigError: IB_PORT or IB_CLIENT_ID is not an integer, or out of range.
        """
        env = os.environ if environ is None else environ
        return cls(
            env.get("IB_HOST", "").strip() or DEFAULT_HOST,
            _setting(env, "IB_PORT", DEFAULT_PORT),
            _setting(env, "IB_CLIENT_ID", DEFAULT_CLIENT_ID),
            account=account,
            lookback=lookback,
        )

    def __repr__(self) -> str:
        return (
            f"IbClient(host={self.host!r}, port={self.port!r}, client_id={self.client_id!r}, "
            f"account={self.account!r})"
        )

    @property
    def connected(self) -> bool:
        """True while the API connection is up and synced (after `connectedEvent`)."""
        return self.connection.connected

    @property
    def connections(self) -> int:
        """Connections established so far (the first one, then every reconnect)."""
        return self.connection.connections

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (if not connected) with this client's clientId and wait for ib_async's sync.

        Raises:
            BrokerQueryError: TWS could not be reached, the handshake or sync failed, or
                the login does not manage this account.
        """
        await self.connection.connect()

    async def close(self) -> None:
        """Disconnect for good: no reconnect, `stream()` ends."""
        await self.connection.close()

    # -- BrokerClient -----------------------------------------------------------------------

    def stream(self) -> AsyncIterator[StreamItem]:
        """Raw messages as ib_async delivers them, and `Reconnected` after every reconnect.

        Connects first if needed; if TWS cannot be reached, keeps trying in the background
        and yields `Reconnected` once it is up. Ends after `close()`.
        """
        return self.connection.items()

    async def submit(self, request: OrderRequest) -> SubmitAck:
        """Place a new order with orderRef = our client id and a fresh orderId.

        Raises:
            SubmitRejected: the request cannot be sent (wrong account, limit order
                without a price); nothing was sent.
            SubmitUncertain: not connected, disconnected before TWS answered, no answer
                in time, or an error ib_async marked as a local `Cancelled`.
        """
        cid = request.client_order_id
        if request.account != self.account:
            msg = f"account {request.account!r} is not this IB client's ({self.account!r})"
            raise SubmitRejected(msg)
        order = self._order(request)
        if not self.connected:
            try:
                await self.connect()
            except BrokerQueryError as e:
                msg = f"submit {cid}: not connected to IB, nothing sent ({e})"
                raise SubmitUncertain(msg) from e
        existing = self._cached_trade(cid)
        if existing is not None:
            # Sent before (a retry after an uncertain answer): never send it again.
            log.info("submit %s: already at IB as permId %s; nothing sent", cid, existing.order.permId)
            return await self._await_ack(cid, existing)
        order.orderId = self._fresh_order_id()
        try:
            with self.connection.local():
                trade = self._ib.placeOrder(self._contract(request.symbol), order)
        except (ConnectionError, OSError) as e:
            msg = f"submit {cid}: connection failed while sending (orderId {order.orderId}): {e!r}"
            raise SubmitUncertain(msg) from e
        return await self._await_ack(cid, trade)

    async def cancel(self, account: str, client_order_id: str, broker_order_id: str | None) -> None:
        """Ask TWS to cancel the open order carrying our id (or permId); the outcome arrives as reports.

        Raises:
            BrokerQueryError: not connected, no such open order of this clientId, or the
                request could not be sent.
        """
        self._check_account(account)
        await self._ensure_connected()
        trade = self._open_trade(client_order_id, broker_order_id)
        if trade is None:
            async with self.connection.query_lock:
                await self.connection.query("open orders", self._ib.reqOpenOrdersAsync)
            trade = self._open_trade(client_order_id, broker_order_id)
        if trade is None:
            msg = f"{account}: no open IB order {client_order_id!r} (permId {broker_order_id}); not canceled"
            raise BrokerQueryError(msg)
        if trade.order.clientId != self.client_id or trade.order.orderId <= 0:
            msg = (
                f"{account}: IB order {client_order_id!r} belongs to clientId {trade.order.clientId}, "
                f"not {self.client_id}; only its owner (or the master client) can cancel it"
            )
            raise BrokerQueryError(msg)
        try:
            with self.connection.local():
                self._ib.cancelOrder(trade.order)
        except (ConnectionError, OSError) as e:
            msg = f"{account}: cancel {client_order_id} not sent: {e!r}"
            raise BrokerQueryError(msg) from e

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The order whose orderRef is our id among open and completed (today's) orders.

        Raises:
            BrokerQueryError: not connected, a query failed, or the answer does not
                translate; absence is then unknown.
        """
        answer = await self.lookup_answer(account, client_order_id)
        if answer.raw is not None and answer.raw.error is not None:
            raise BrokerQueryError(answer.raw.error)
        return answer.report

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """`lookup` with IB's answer: the open and completed orders as stored envelopes' wire JSON.

        Raises:
            BrokerQueryError: not connected or a query failed; absence is unknown.
        """
        self._check_account(account)
        await self._ensure_connected()
        return await self._reads.lookup_answer(account, client_order_id)

    async def snapshot(self, account: str) -> BrokerSnapshot:
        """Open + completed orders, executions and positions now; failed parts are None.

        Raises:
            BrokerQueryError: the account is not this client's.
        """
        self._check_account(account)
        as_of = utc_now()
        if not self.connected:
            try:
                await self._ensure_connected()
            except BrokerQueryError as e:
                log.warning("%s: IB snapshot impossible: %s; every part unknown", account, e)
                return BrokerSnapshot.unknown(account, as_of, reason=str(e))
        failures: dict[str, str] = {}
        as_of, open_trades, completed, fills, positions = await self._reads.cut(account, failures)
        # The answers as read, kept verbatim: ib_async's objects in their stored (wire) form.
        answers: list[RawAnswer] = []
        orders = self._reads.orders(account, open_trades, completed, as_of, answers, failures)
        fill_reports = self._reads.fills(account, fills, answers, failures)
        position_reports = self._reads.positions(account, positions, as_of, answers, failures)
        return BrokerSnapshot(
            account=account,
            as_of=as_of,
            orders=orders,
            fills=fill_reports,
            positions=position_reports,
            complete_history=False,
            history_since=self.history_start(as_of),
            failures=failures,
            raw=tuple(answers),
        )

    def history_start(self, now: datetime) -> datetime:
        """Where this snapshot's history starts: midnight before `now` where TWS runs, or later.

        Completed orders and executions start at midnight; ``now - lookback`` when later.
        """
        local = now.astimezone(self.history_tz)  # None: this machine's time zone
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        if self.lookback is None:
            return midnight
        return max(midnight, now.astimezone(UTC) - timedelta(seconds=self.lookback))

    # -- helpers ------------------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if not self.connected:
            await self.connect()

    async def _await_ack(self, cid: str, trade: Trade) -> SubmitAck:
        """Wait for TWS's answer to a placeOrder: the order with its permId, and a TWS status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout
        while True:
            perm_id = trade.order.permId or trade.orderStatus.permId
            status = trade.orderStatus.status
            last = trade.log[-1] if trade.log else None
            if status == "Cancelled" and last is not None and last.errorCode:
                # ib_async's own Cancelled on a TWS error: an intent, not TWS's word.
                msg = (
                    f"submit {cid}: IB error {last.errorCode} ({last.message}); ib_async marked it "
                    "Cancelled locally, TWS has not confirmed; look it up, never re-send"
                )
                raise SubmitUncertain(msg)
            if perm_id and status not in _UNACKED:
                return self._ack(cid, trade)
            if not self.connected:
                msg = f"submit {cid}: disconnected before IB answered (orderId {trade.order.orderId})"
                raise SubmitUncertain(msg)
            remaining = deadline - loop.time()
            if remaining <= 0:
                if perm_id:
                    return self._ack(cid, trade)  # TWS has it (openOrder), no status yet
                msg = f"submit {cid}: no answer from IB within {self.ack_timeout}s"
                raise SubmitUncertain(msg)
            await self.connection.wait_for_event(remaining)

    def _ack(self, cid: str, trade: Trade) -> SubmitAck:
        envelope = IbEnvelope(event="placeOrder", received_at=utc_now(), trade=trade_wire(trade))
        raw = _ENCODER.encode(envelope).decode()
        try:
            reports = to_reports(raw, account=self.account)
        except TrueupError as e:
            msg = f"submit {cid}: IB's answer does not translate ({e})"
            raise SubmitUncertain(msg) from e
        report = next((r for r in reports if isinstance(r, OrderReport)), None)
        if report is None or report.broker_order_id is None or report.client_order_id != cid:
            msg = f"submit {cid}: IB's answer does not carry our orderRef and a permId"
            raise SubmitUncertain(msg)
        return SubmitAck(broker_order_id=report.broker_order_id, raw=raw, report=report)

    def _fresh_order_id(self) -> int:
        """A new orderId from ib_async's sequence, never one this client has used before."""
        order_id = self._ib.client.getReqId()
        while order_id <= self._last_order_id:
            order_id = self._ib.client.getReqId()
        self._last_order_id = order_id
        return int(order_id)

    def _cached_trade(self, cid: str) -> Trade | None:
        return next((t for t in self._ib.trades() if t.order.orderRef == cid), None)

    def _open_trade(self, cid: str, perm_id: str | None) -> Trade | None:
        """The API order (orderId > 0) carrying our id or permId, whatever ib_async thinks of its status.

        Not `ib.openTrades()`: ib_async counts `Inactive` (a locate hold, still live) and
        its own error-driven `Cancelled` (maybe still live) as done. TWS decides: a
        cancel of an order that is really finished is answered with an error.
        """
        for trade in self._ib.trades():
            ours = trade.order.orderRef == cid or (perm_id is not None and str(trade.order.permId) == perm_id)
            if ours and trade.order.orderId > 0:
                return trade
        return None

    def _contract(self, symbol: str) -> Contract:
        return Contract(symbol=symbol, secType=self.sec_type, exchange=self.exchange, currency=self.currency)

    def _order(self, request: OrderRequest) -> Order:
        """The ib_async order; one that cannot be expressed is refused before anything is sent."""
        # Decimal -> float at the SDK boundary: ib_async sends str(float), so go through str.
        quantity = float(str(request.quantity))
        action = _ACTION[request.side]
        if request.order_type is OrderType.LIMIT:
            if request.limit_price is None:
                msg = f"limit order {request.client_order_id} without a limit price"
                raise SubmitRejected(msg)
            order: Order = LimitOrder(action, quantity, float(str(request.limit_price)))
        else:
            order = MarketOrder(action, quantity)
        order.orderRef = request.client_order_id
        order.account = request.account
        order.tif = "DAY"
        return order

    def _check_account(self, account: str) -> None:
        if account != self.account:
            msg = f"account {account!r} is not this IB client's ({self.account!r})"
            raise BrokerQueryError(msg)
