"""`AlpacaStream`: Alpaca's `trade_updates` websocket as `RawMessage` / `Reconnected` items.

Needs the `alpaca` extra. alpaca-py's `TradingStream` (with `raw_data=True`) runs in a
background thread (its `run()` blocks); its handler only enqueues, never raises
(a raising handler silently stops the SDK's consumer), so every message
reaches the consumer as a `RawMessage` before any translation. The payload is the SDK's
decoded message (`{"stream": "trade_updates", "data": {...}}`) encoded back to JSON text;
JSON numbers pass through Python floats on the way, as in the SDK itself.

Connections: the first connection yields nothing; every later one (the SDK's own
reconnect after a dropped socket, or a watchdog restart) yields `Reconnected`, after
which the consumer must reconcile over REST: events sent while disconnected are lost.
The watchdog restarts the `TradingStream` (stop it, start a new one) when neither a
message nor a connection was seen for `silence_after` seconds. Alpaca sends nothing on a
quiet account, so a quiet account is also restarted (and reconciled) every
`silence_after` seconds: the cost of noticing a socket that is open but dead.

Secrets are handed to `TradingStream` and kept in no attribute, `repr` or log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from trueup.adapters.alpaca.translate import to_reports_from_trade_update
from trueup.adapters.base import RawMessage, Reconnected
from trueup.domain.reports import Report

try:
    from alpaca.trading.stream import TradingStream
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Alpaca adapter needs alpaca-py: pip install 'trueup[alpaca]'"
    raise ImportError(msg) from e

__all__ = ["AlpacaStream"]

log = logging.getLogger(__name__)

SOURCE: Final = "alpaca"
KIND: Final = "trade_updates"
STOP_TIMEOUT: Final = 15.0
"""Seconds to wait for a stopped `TradingStream`'s thread to end."""

_END: Final = object()


class _HookedTradingStream(TradingStream):
    """`TradingStream` that reports each successful connect (auth done, listen sent)."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        paper: bool,
        url_override: str | None,
        on_connected: Callable[[], None],
    ) -> None:
        super().__init__(api_key, secret_key, paper=paper, raw_data=True, url_override=url_override)  # type: ignore[arg-type]  # None is its default
        self._trueup_on_connected = on_connected

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]  # alpaca-py is untyped
        try:
            self._trueup_on_connected()
        except Exception:
            log.exception("alpaca stream: connect hook failed")


class _Translator:
    """The pure translator of one `trade_updates` payload for one account."""

    def __init__(self, account: str) -> None:
        self.account = account

    def __call__(self, payload: str) -> Sequence[Report]:
        return to_reports_from_trade_update(payload, account=self.account)

    def __repr__(self) -> str:
        return f"to_reports_from_trade_update(account={self.account!r})"


class AlpacaStream:
    """The `trade_updates` stream of one Alpaca account, as an async iterator of items."""

    name = SOURCE

    def __init__(  # noqa: PLR0913 - the credentials, then keyword-only options
        self,
        api_key: str,
        secret_key: str,
        *,
        account: str,
        paper: bool = True,
        url_override: str | None = None,
        silence_after: float = 30.0,
    ) -> None:
        """Prepare (not start) the stream; `items()` starts it."""
        if silence_after <= 0:
            msg = f"silence_after must be positive, got {silence_after}"
            raise ValueError(msg)
        self.account = account
        self.paper = paper
        self.url_override = url_override
        self.silence_after = silence_after
        self.translate = _Translator(account)

        def new_stream(on_connected: Callable[[], None]) -> TradingStream:
            return _HookedTradingStream(
                api_key,
                secret_key,
                paper=paper,
                url_override=url_override,
                on_connected=on_connected,
            )

        self._new_stream = new_stream
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._sdk: TradingStream | None = None
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._generation = 0
        self._connections = 0
        self._last_seen = time.monotonic()
        self._stopped = False
        self._started = False

    def __repr__(self) -> str:
        return (
            f"AlpacaStream(account={self.account!r}, paper={self.paper!r}, "
            f"url_override={self.url_override!r}, silence_after={self.silence_after!r})"
        )

    @property
    def connections(self) -> int:
        """Successful connections so far (the first one, then every reconnect)."""
        return self._connections

    async def items(self) -> AsyncIterator[RawMessage | Reconnected]:
        """Every `trade_updates` message as a `RawMessage`; a `Reconnected` after each reconnect.

        Ends after `stop()`. Only one iteration may run at a time.
        """
        if self._started:
            msg = "AlpacaStream.items() can be iterated once"
            raise RuntimeError(msg)
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._last_seen = time.monotonic()
        if not self._stopped:
            self._start_sdk()
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                out = self._item(item)
                if out is not None:
                    yield out
        finally:
            watchdog.cancel()
            self.stop()

    def stop(self) -> None:
        """End the stream: stop the SDK thread and end `items()`. Safe from any thread; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            sdk, thread = self._sdk, self._thread
            self._sdk = self._thread = None
        if sdk is not None and thread is not None:
            threading.Thread(target=_halt, args=(sdk, thread), name="alpaca-stream-stop", daemon=True).start()
        self._post(_END)

    def join(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Wait (blocking) for every SDK thread this stream started to end; True if all did."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # -- internals ------------------------------------------------------------------------

    def _post(self, item: object) -> None:
        """Hand an item to the consumer's loop from any thread; never raises."""
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            log.debug("alpaca stream: consumer loop closed, item dropped")

    def _start_sdk(self) -> None:
        """Start a new `TradingStream` in its own thread (the lock is not held)."""
        with self._lock:
            if self._stopped:
                return
            self._generation += 1
            generation = self._generation

            def on_connected() -> None:
                self._post(("connected", generation))

            sdk = self._new_stream(on_connected)
            sdk.subscribe_trade_updates(self._handler_for(generation))
            name = f"alpaca-stream-{generation}"
            thread = threading.Thread(target=_run, args=(sdk,), name=name, daemon=True)
            self._sdk, self._thread = sdk, thread
            self._threads.append(thread)
        thread.start()

    def _handler_for(self, generation: int) -> Callable[[Any], Any]:
        async def handler(data: Any) -> None:  # noqa: ANN401 - the SDK's raw message
            # Never raises: a raising handler stops the SDK's consumer.
            try:
                payload = _payload(data)
            except Exception:
                log.exception("alpaca stream: could not encode a trade_updates message")
                payload = _text(data)
            self._post(("message", generation, payload))

        return handler

    def _item(self, item: object) -> RawMessage | Reconnected | None:
        """What the consumer sees of one queued event (runs on the consumer's loop)."""
        if not isinstance(item, tuple):
            return None
        self._last_seen = time.monotonic()
        if item[0] == "connected":
            self._connections += 1
            if self._connections == 1:
                return None
            log.info("alpaca stream %s: reconnected (connection %d)", self.account, self._connections)
            return Reconnected(account=self.account, source=SOURCE)
        payload: str = item[2]
        return RawMessage(
            account=self.account, source=SOURCE, kind=KIND, payload=payload, translate=self.translate
        )

    async def _watchdog(self) -> None:
        """Restart the SDK stream when nothing was seen for `silence_after` seconds."""
        tick = min(1.0, self.silence_after / 4)
        while not self._stopped:
            await asyncio.sleep(tick)
            if self._stopped:
                return
            if time.monotonic() - self._last_seen < self.silence_after:
                continue
            log.warning(
                "alpaca stream %s: nothing received for %.1fs, restarting the connection",
                self.account,
                self.silence_after,
            )
            self._last_seen = time.monotonic()
            with self._lock:
                sdk, thread = self._sdk, self._thread
                self._sdk = self._thread = None
            if sdk is not None and thread is not None:
                await asyncio.to_thread(_halt, sdk, thread)
            self._start_sdk()
            self._last_seen = time.monotonic()


def _payload(data: Any) -> str:  # noqa: ANN401 - the SDK's raw message
    """The SDK's decoded message as JSON text; its `str` when it cannot be encoded."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        log.warning("alpaca stream: message not JSON-encodable (%s); kept as text", e)
        return str(data)


def _text(data: object) -> str:
    try:
        return str(data)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the message
        return object.__repr__(data)


def _run(sdk: TradingStream) -> None:
    try:
        sdk.run()
    except Exception:
        log.exception("alpaca stream: TradingStream.run ended with an error")


async def _shutdown(sdk: TradingStream) -> None:
    await sdk.stop_ws()
    await sdk.close()


def _halt(sdk: TradingStream, thread: threading.Thread, timeout: float = STOP_TIMEOUT) -> None:
    """Stop one `TradingStream` and wait (bounded) for its thread; never raises."""
    deadline = time.monotonic() + timeout
    try:
        while sdk._loop is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        loop = sdk._loop
        if loop is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(_shutdown(sdk), loop)
            future.result(max(0.0, deadline - time.monotonic()))
    except Exception as e:  # noqa: BLE001 - best effort: the thread is a daemon
        log.warning("alpaca stream: stopping the TradingStream failed: %s: %s", type(e).__name__, e)
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        log.warning("alpaca stream: TradingStream thread %s did not end in %.0fs", thread.name, timeout)
