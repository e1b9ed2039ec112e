"""A small, real websocket server speaking Alpaca's trading stream (`trade_updates`) for alpaca-py.

Protocol: client sends `authenticate` -> server answers `authorization`
`authorized`; client sends `listen` `trade_updates` -> server acks `listening`; then the
server pushes `{"stream":"trade_updates","data":{...}}`. Frames are JSON in binary frames
(as Alpaca paper sends them), text frames when `binary=False`, or msgpack when the client
asked for it with `Content-Type: application/msgpack` (alpaca-py's TradingStream does not).

Controls: `push` a message to every listening connection (missed if none), `drop` every
connection abruptly, `silent` (keep connections open, deliver nothing: pushes are missed).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve


class FakeAlpacaStream:
    """Websocket server on 127.0.0.1 (port 0) in its own thread and event loop."""

    def __init__(self, *, binary: bool = True) -> None:
        self.binary = binary
        self.silent = False
        self.down = False
        """Refuse new connections (closed before authentication), as an outage would."""
        self.lock = threading.Lock()
        self.listening: list[ServerConnection] = []
        self.connections = 0
        """Connections that completed authenticate + listen, ever."""
        self.missed: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/stream"

    def start(self) -> FakeAlpacaStream:
        self._thread.start()
        self._server = self._call(self._start())
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> Server:
        return await serve(self._session, "127.0.0.1", 0)

    # -- controls ---------------------------------------------------------------------------

    def push(self, data: dict[str, Any]) -> bool:
        """Send one trade_updates message (the `data` part) to every listener; False if missed."""
        message = {"stream": "trade_updates", "data": data}
        with self.lock:
            targets = [] if self.silent else list(self.listening)
            (self.delivered if targets else self.missed).append(message)

        async def send() -> None:
            for ws in targets:
                await ws.send(self._encode(ws, message))

        self._call(send())
        return bool(targets)

    def drop(self) -> None:
        """Cut every connection without a close handshake."""
        with self.lock:
            targets, self.listening = self.listening, []

        async def cut() -> None:
            for ws in targets:
                ws.transport.abort()

        self._call(cut())

    def wait_connections(self, n: int, timeout: float = 15.0) -> None:
        """Block until `n` connections have ever reached `listening` (guarded by a deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.connections >= n and self.listening:
                    return
            time.sleep(0.02)
        msg = f"{n} listening connections not reached in {timeout}s (got {self.connections})"
        raise AssertionError(msg)

    # -- protocol ---------------------------------------------------------------------------

    @staticmethod
    def _msgpack(ws: ServerConnection) -> bool:
        return ws.request is not None and ws.request.headers.get("Content-Type") == "application/msgpack"

    def _encode(self, ws: ServerConnection, message: dict[str, Any]) -> bytes | str:
        if self._msgpack(ws):
            return msgpack.packb(message)  # type: ignore[no-any-return]
        text = json.dumps(message)
        return text.encode() if self.binary else text

    async def _session(self, ws: ServerConnection) -> None:
        if self.down:
            await ws.close(1013, "try again later")
            return
        try:
            async for frame in ws:
                request = msgpack.unpackb(frame) if self._msgpack(ws) else json.loads(frame)
                action = request.get("action")
                if action in {"authenticate", "auth"}:
                    data = request.get("data") or {}
                    ok = bool(data.get("key_id")) and bool(data.get("secret_key"))
                    status = "authorized" if ok else "unauthorized"
                    answer = {"stream": "authorization", "data": {"status": status, "action": "authenticate"}}
                    await ws.send(self._encode(ws, answer))
                    if not ok:
                        await ws.close()
                elif action == "listen":
                    streams = (request.get("data") or {}).get("streams", [])
                    await ws.send(self._encode(ws, {"stream": "listening", "data": {"streams": streams}}))
                    if "trade_updates" in streams:
                        with self.lock:
                            self.connections += 1
                            self.listening.append(ws)
        except Exception:  # noqa: BLE001, S110 - a dropped client just ends its session
            pass
        finally:
            with self.lock:
                if ws in self.listening:
                    self.listening.remove(ws)


def trade_update(
    event: str,
    order: dict[str, Any],
    *,
    execution_id: str | None = None,
    qty: str | None = None,
    price: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The `data` of a trade_updates message about `order` (a fake_alpaca order dict)."""
    data: dict[str, Any] = {
        "event": event,
        "execution_id": execution_id if execution_id is not None else str(uuid.uuid4()),
        "order": dict(order),
        "timestamp": timestamp or order["updated_at"],
    }
    if qty is not None:
        data.update(qty=qty, price=price, position_qty=order["filled_qty"])
    return data


@contextmanager
def running(*, binary: bool = True) -> Iterator[FakeAlpacaStream]:
    fake = FakeAlpacaStream(binary=binary).start()
    try:
        yield fake
    finally:
        fake.stop()
