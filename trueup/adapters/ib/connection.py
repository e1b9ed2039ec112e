"""`IbConnection`: one ib_async API connection for one account, and its events as raw messages.

Needs the `ib` extra. The connection (`connect`, reconnect, `close`) and the event
stream live here; `client.py` builds the `BrokerClient` port on top of it.

* Connecting runs ib_async's `connectAsync` with its startup sync (positions, open and
  completed orders, account updates, then executions); a sync that fails fails the
  connection, and so does a login that does not manage our account (its positions would
  read as no rows, i.e. "flat").
* After a disconnect the connection reconnects with the same `clientId` (TWS sends an
  order's statuses and executions only to the clientId that placed it), backing off
  exponentially, and queues `Reconnected` once synced: events sent meanwhile are lost
  (ib_async fires no event for the executions it fetches at startup), so the consumer
  must reconcile.
* Every ib_async event we listen to (`orderStatusEvent`, `openOrderEvent`,
  `execDetailsEvent`, `commissionReportEvent`, `positionEvent`, `errorEvent`,
  `connectedEvent`, `disconnectedEvent`) is copied into a JSON envelope (`wire.py`)
  inside the handler and queued as a `RawMessage`; translation (`envelope.py`) is pure
  and runs on the stored text. Handlers never raise: an event that cannot be copied is
  queued as text naming the error. Events emitted inside `local()` (our own
  `placeOrder`/`cancelOrder` calls) are marked `local`: ib_async set those statuses.
  Commission reports and position rows that ib_async re-emits unchanged (every
  `reqExecutions` / `reqPositions` answer repeats them) are queued once.

Known limit: events are queued from the moment the connection exists, whether or not
`items()` is being iterated; a connection nobody streams from should be closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from trueup.adapters.base import RawMessage, Reconnected, StreamItem
from trueup.adapters.ib.envelope import IbEventTranslator
from trueup.adapters.ib.wire import ErrorWire, IbEnvelope, fill_wire, position_wire, trade_wire
from trueup.domain.errors import BrokerQueryError

try:
    from ib_async import IB, Trade
    from ib_async.wrapper import RequestError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Interactive Brokers adapter needs ib_async: pip install 'trueup[ib]'"
    raise ImportError(msg) from e

__all__ = ["KIND", "SOURCE", "IbConnection"]

log = logging.getLogger(__name__)

SOURCE: Final = "ib"
"""Adapter name: the `source` of what the IB adapter reports."""
KIND: Final = "ib_events"
"""`RawMessage.kind` of every streamed envelope."""

_ENCODER: Final = msgspec.json.Encoder()
_END: Final = object()
"""Queued by `close()`: ends `items()`."""
_T = TypeVar("_T")


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


class IbConnection:
    """One API connection (one clientId) to TWS or IB Gateway, for one account."""

    def __init__(  # noqa: PLR0913 - where, who, then keyword-only timings
        self,
        host: str,
        port: int,
        client_id: int,
        *,
        account: str,
        connect_timeout: float,
        request_timeout: float,
        reconnect_delay: float,
        reconnect_max_delay: float,
    ) -> None:
        """Prepare (not open) the connection and subscribe to ib_async's events."""
        self.host, self.port, self.client_id, self.account = host, port, client_id, account
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = max(reconnect_max_delay, reconnect_delay)
        self.translate = IbEventTranslator(account)
        self.ib = IB()
        # A TWS error on a request must fail it, not end it with a partial (empty) list.
        self.ib.RaiseRequestErrors = True
        self.query_lock = asyncio.Lock()
        """Held around ib_async requests: it keys open orders, completed orders and
        positions by name, so two such requests at once would overwrite each other."""
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._ready = False
        self._connecting = False
        self._closed = False
        self._local_calls = 0
        self._connections = 0
        self._commissions_posted: dict[str, tuple[object, object]] = {}
        self._positions_posted: dict[tuple[object, object], tuple[object, object]] = {}
        self._reconnect_task: asyncio.Task[None] | None = None
        self._subscribe()

    def __repr__(self) -> str:
        return (
            f"IbConnection(host={self.host!r}, port={self.port!r}, client_id={self.client_id!r}, "
            f"account={self.account!r})"
        )

    @property
    def connected(self) -> bool:
        """True while the API connection is up and synced (after `connectedEvent`)."""
        return self._ready and self.ib.isConnected()

    @property
    def connections(self) -> int:
        """Connections established so far (the first one, then every reconnect)."""
        return self._connections

    @contextmanager
    def local(self) -> Iterator[None]:
        """Mark the events ib_async emits inside this block (our own calls) as `local`."""
        self._local_calls += 1
        try:
            yield
        finally:
            self._local_calls -= 1

    async def wait_for_event(self, within: float) -> None:
        """Return after the next ib_async event, or after `within` seconds without one."""
        self._wake.clear()
        try:
            async with asyncio.timeout(within):  # not wait_for: see `query`
                await self._wake.wait()
        except TimeoutError:
            return

    async def connect(self) -> None:
        """Connect (if not connected) with this client's clientId and wait for ib_async's sync.

        Raises:
            BrokerQueryError: TWS could not be reached or the API handshake failed.
        """
        if self.connected:
            return
        if self._closed:
            msg = f"{self!r} is closed"
            raise BrokerQueryError(msg)
        if self._reconnect_task is not None and not self._reconnect_task.done():
            msg = f"{self.account}: not connected to IB (reconnecting)"
            raise BrokerQueryError(msg)
        try:
            await self._connect_once()
        except BrokerQueryError:
            raise
        except Exception as e:  # ib_async raises OSError, TimeoutError, ConnectionError, RequestError
            where = f"{self.host}:{self.port} (clientId {self.client_id})"
            msg = f"{self.account}: cannot connect to IB at {where}: {e!r}"
            raise BrokerQueryError(msg) from e

    async def close(self) -> None:
        """Disconnect for good: no reconnect; `items()` ends once the queued items are read."""
        self._closed = True
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.ib.disconnect()
        self._ready = False
        self._queue.put_nowait(_END)

    async def _connect_once(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            self._connecting = True
            try:
                await self.ib.connectAsync(
                    self.host,
                    self.port,
                    clientId=self.client_id,
                    timeout=self.connect_timeout,
                    account=self.account,
                    raiseSyncErrors=True,
                )
                managed = self.ib.client.getAccounts() if self.ib.isConnected() else []
                if self.account not in managed:
                    # Its positions would come back as no rows: "flat", a lie. Refuse the session.
                    self.ib.disconnect()
                    self._ready = False
                    msg = f"account {self.account!r} is not managed by this IB login (it manages {managed})"
                    raise BrokerQueryError(msg)
            finally:
                self._connecting = False

    def _start_reconnecting(self) -> None:
        if self._closed or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(
            self._reconnect(), name=f"ib-reconnect-{self.client_id}"
        )

    async def _reconnect(self) -> None:
        """Reconnect with the same clientId, backing off; then say `Reconnected`."""
        delay = self.reconnect_delay
        attempt = 0
        while not self._closed:
            attempt += 1
            try:
                await self._connect_once()
            except Exception as e:  # noqa: BLE001 - whatever failed, try again later; never stop
                log.warning(
                    "ib %s: reconnect %d to %s:%s failed (%r); next try in %.1fs",
                    self.account,
                    attempt,
                    self.host,
                    self.port,
                    e,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            log.info(
                "ib %s: reconnected (clientId %d) after %d attempt(s)", self.account, self.client_id, attempt
            )
            self._queue.put_nowait(Reconnected(account=self.account, source=SOURCE))
            return

    # -- events -> raw messages --------------------------------------------------------------

    def _subscribe(self) -> None:
        ib = self.ib
        ib.orderStatusEvent += self._on_order_status
        ib.openOrderEvent += self._on_open_order
        ib.execDetailsEvent += self._on_exec_details
        ib.commissionReportEvent += self._on_commission_report
        ib.positionEvent += self._on_position
        ib.errorEvent += self._on_error
        ib.connectedEvent += self._on_connected
        ib.disconnectedEvent += self._on_disconnected

    def _post(self, event: str, build: Callable[[], dict[str, Any]]) -> None:
        """Queue one event as a raw message; never raises (an unreadable one is kept as text)."""
        self._wake.set()
        received_at = utc_now()
        try:
            envelope = IbEnvelope(
                event=event, received_at=received_at, local=self._local_calls > 0, **build()
            )
            payload = _ENCODER.encode(envelope).decode()
        except Exception as e:
            log.exception("ib %s: could not copy a %s event; stored as unreadable", self.account, event)
            payload = _ENCODER.encode(
                {"event": event, "received_at": received_at, "unreadable": f"{type(e).__name__}: {e}"}
            ).decode()
        self._queue.put_nowait(
            RawMessage(
                account=self.account, source=SOURCE, kind=KIND, payload=payload, translate=self.translate
            )
        )

    def _on_order_status(self, trade: Trade) -> None:
        self._post("orderStatus", lambda: {"trade": trade_wire(trade)})

    def _on_open_order(self, trade: Trade) -> None:
        self._post("openOrder", lambda: {"trade": trade_wire(trade)})

    def _on_exec_details(self, _trade: Trade, fill: object) -> None:
        self._post("execDetails", lambda: {"fill": fill_wire(fill)})

    def _on_commission_report(self, _trade: Trade, fill: object, report: object) -> None:
        # TWS answers every reqExecutions with the commission reports again, and ib_async
        # re-emits them for executions it already knows: store each figure once.
        seen = (getattr(report, "commission", None), getattr(report, "currency", None))
        exec_id = getattr(report, "execId", None)
        if exec_id is not None and self._commissions_posted.get(exec_id) == seen:
            return
        if exec_id is not None:
            self._commissions_posted[exec_id] = seen
        self._post("commissionReport", lambda: {"fill": fill_wire(fill)})

    def _on_position(self, position: object) -> None:
        # Every reqPositions answer re-emits each row: store a row only when it changed.
        try:
            contract = getattr(position, "contract", None)
            key = (getattr(position, "account", None), getattr(contract, "conId", None))
            value = (getattr(position, "position", None), getattr(position, "avgCost", None))
        except Exception:  # noqa: BLE001 - an unreadable row is stored below, as evidence
            self._post("position", lambda: {"position": position_wire(position)})
            return
        if self._positions_posted.get(key) == value:
            return
        self._positions_posted[key] = value
        self._post("position", lambda: {"position": position_wire(position)})

    def _on_error(self, req_id: int, error_code: int, error_string: str, _contract: object) -> None:
        self._post(
            "error",
            lambda: {"error": ErrorWire(reqId=req_id, errorCode=error_code, errorString=error_string)},
        )

    def _on_connected(self) -> None:
        self._ready = True
        self._connections += 1
        self._post("connected", dict)

    def _on_disconnected(self) -> None:
        was_ready, self._ready = self._ready, False
        self._post("disconnected", dict)
        # A failed connect attempt disconnects too: its caller retries, not this handler.
        if was_ready and not self._connecting and not self._closed:
            log.warning("ib %s: disconnected; reconnecting with clientId %d", self.account, self.client_id)
            self._start_reconnecting()

    async def items(self) -> AsyncIterator[StreamItem]:
        """Raw messages as ib_async delivers them, and `Reconnected` after every reconnect.

        Connects first if needed; if TWS cannot be reached, keeps trying in the background
        and yields `Reconnected` once it is up. Ends after `close()`.
        """
        if not self.connected and not self._closed:
            try:
                await self.connect()
            except BrokerQueryError as e:
                log.warning("ib %s: %s; retrying in the background", self.account, e)
                self._start_reconnecting()
        while True:
            if self._closed and self._queue.empty():
                return
            item = await self._queue.get()
            if not isinstance(item, RawMessage | Reconnected):
                return  # _END: closed
            yield item

    async def query(self, what: str, request: Callable[[], Awaitable[_T]]) -> _T | None:
        """One ib_async request; None if it fails, times out or the connection drops meanwhile."""
        if not self.connected:
            log.warning("%s: IB %s not asked: not connected", self.account, what)
            return None
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the result and drops a
            # cancellation of the caller that lands as the request completes. The
            # service's stream task, stopped in a reconnect's reconciliation, then ran on
            # and waited for stream items for ever (the IB reconnect hang).
            async with asyncio.timeout(self.request_timeout):
                result = await request()
        except (ConnectionError, OSError, RequestError, TimeoutError) as e:
            log.warning("%s: IB %s failed: %r", self.account, what, e)
            return None
        except Exception:  # any other failure: the part is unknown, never empty
            log.exception("%s: IB %s raised; unknown", self.account, what)
            return None
        if not self.connected:
            # The answer may have been cut short by the disconnect: not a complete list.
            log.warning("%s: IB %s: disconnected while answering; unknown", self.account, what)
            return None
        return result
