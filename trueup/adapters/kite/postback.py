"""Kite postback receiver: a WSGI app a user mounts, or a small stdlib HTTP server (`serve`).

Kite POSTs a JSON body to the app's `postback_url` for each update of an order placed
with that app's api_key. The receiver does no verification and no
translation: it hands every body, verbatim, to a sink (`KiteClient.accept_postback`),
which queues it for `KiteClient.stream()`; there the payload is stored raw before its
checksum is verified, so a postback that fails verification is kept and reported, never
dropped and never applied. No dependency beyond the standard library: `PostbackReceiver`
is a plain WSGI callable (mount it in Flask, Django, any WSGI server), and `serve` runs it
on an asyncio HTTP/1.1 front in a daemon thread.

A body the receiver cannot read whole is refused, never taken as empty (a 200 would tell
Kite not to retry): `411` without a Content-Length or with any Transfer-Encoding
(chunked), `400` for a Content-Length that is not one plain number (two headers, even
equal ones, are refused: request smuggling lives in that ambiguity), `413` for a body
above `max_body` bytes (64 KiB; a postback is about 1 KiB), answered before any of it is
read. Otherwise: `200` once the body is handed over; `405` for anything but POST; `503`
if the sink refuses it (the client's inbox is full: nothing was taken, Kite retries) or
fails; each refusal is counted (`PostbackReceiver.refused`).

`serve` reads each request on its event loop, so a slow client holds a few KiB and no
thread: at most `max_connections` are open (each holding at most a 16 KiB head and one
body, so bodies held at once are bounded by `max_connections * max_body`), the one past
that is answered `503`; a request must arrive whole within `timeout` seconds of its
connection, however it drips (slowloris), or it is answered `408` and closed. Only a
complete request takes one of `max_threads` worker threads (the sink and the WSGI app run
there); when all are taken it is answered `503` at once. Every refusal drains what the
client sent (bounded in bytes and time) before closing, so the answer is not lost to a
reset. Nothing in it grows without bound.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MAX_BODY", "MAX_CONNECTIONS", "PostbackReceiver", "PostbackServer", "serve"]

log = logging.getLogger(__name__)

MAX_BODY: Final = 64 << 10
"""Largest postback body accepted (64 KiB; a postback is about 1 KiB)."""
MAX_THREADS: Final = 16
"""Complete requests `serve` hands to the app at once; more are answered 503."""
MAX_CONNECTIONS: Final = 256
"""Connections `serve` reads at once; the next is answered 503."""
REQUEST_TIMEOUT: Final = 10.0
"""Seconds `serve` gives a connection to deliver its whole request (head and body)."""
MAX_HEAD: Final = 16 << 10
"""Largest request line plus headers `serve` reads (431 beyond)."""

PostbackSink = Callable[[bytes], None]
"""Takes one postback body, verbatim; must be thread-safe and quick."""

_JSON: Final = [("Content-Type", "application/json")]


def _error(message: str) -> list[bytes]:
    return [b'{"status":"error","message":"' + message.encode() + b'"}']


class PostbackReceiver:
    """The WSGI app: POST bodies go to `sink`, verbatim."""

    def __init__(self, sink: PostbackSink, *, max_body: int = MAX_BODY) -> None:
        """Hand every POSTed body to `sink` (e.g. `KiteClient.accept_postback`)."""
        self.sink = sink
        self.max_body = max_body
        self.refused = 0
        """Bodies answered 503 (not taken); Kite retries them."""
        self._count = threading.Lock()

    def _refusal(self, environ: WSGIEnvironment) -> tuple[str, str] | None:
        """Why a request is refused unread (status, message), or None to read its body."""
        if environ.get("REQUEST_METHOD") != "POST":
            return "405 Method Not Allowed", "POST a postback body"
        # A server that decodes chunked bodies itself may still say so; either way the
        # length is not one we can check before reading, so the body is not read at all.
        if environ.get("HTTP_TRANSFER_ENCODING"):
            return "411 Length Required", "send the body with a Content-Length, not a Transfer-Encoding"
        declared = str(environ.get("CONTENT_LENGTH") or "").strip()
        if not declared:
            return "411 Length Required", "Content-Length required"
        if not (declared.isascii() and declared.isdigit()):
            # "5, 5": a server that joins repeated headers; "-1", "0x10", "+5": not a length
            return "400 Bad Request", "Content-Length is not one plain number"
        if int(declared) > self.max_body:
            return "413 Content Too Large", "body too large"
        return None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (WSGI)."""
        refusal = self._refusal(environ)
        if refusal is not None:
            status, message = refusal
            start_response(status, [*_JSON, ("Allow", "POST")] if status.startswith("405") else _JSON)
            return _error(message)
        length = int(environ["CONTENT_LENGTH"])
        body: bytes = environ["wsgi.input"].read(length)
        if len(body) != length:
            start_response("400 Bad Request", _JSON)
            return _error("body shorter than its Content-Length")
        try:
            self.sink(body)
        except Exception as e:  # noqa: BLE001 - whatever the sink raised, nothing was taken: say retry
            with self._count:
                self.refused += 1
            log.error(  # noqa: TRY400 - the reason is the message; no traceback wanted
                "kite postback: the sink refused a body of %d bytes (%s: %s); answered 503, Kite retries",
                len(body),
                type(e).__name__,
                e,
            )
            start_response("503 Service Unavailable", _JSON)
            return _error("not taken, retry")
        start_response("200 OK", _JSON)
        return [b'{"status":"success"}']


_DRAIN_LIMIT: Final = MAX_BODY + MAX_HEAD
_DRAIN_TIMEOUT: Final = 0.5
_REASONS: Final = {
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class _Refused(Exception):  # noqa: N818 - a control-flow signal, not an error the caller sees
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    __slots__ = ("body", "headers", "method", "target")

    def __init__(self, method: str, target: str, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.method, self.target, self.headers, self.body = method, target, headers, body


class _Front:
    """The asyncio HTTP/1.1 front of `serve`: reads requests, hands whole ones to the app."""

    def __init__(  # noqa: PLR0913 - the bounds `serve` takes
        self,
        app: PostbackReceiver,
        host: str,
        port: int,
        *,
        max_threads: int,
        max_connections: int,
        timeout: float,
    ) -> None:
        self.app = app
        self.max_connections = max_connections
        self.timeout = timeout
        self.busy = 0
        self._open = 0
        self._idle_workers = max_threads
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix="kite-postback")
        self.loop = asyncio.new_event_loop()
        # Listening before `serve` returns: a post sent at once waits in the backlog.
        self._listener = socket.create_server((host, port))
        self.address = self._listener.getsockname()
        self._started = threading.Event()
        self.server: asyncio.Server | None = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self._open >= self.max_connections:
                self.busy += 1
                await self._answer(reader, writer, 503, _error("busy, retry"))
                return
            self._open += 1
            try:
                await self._one_request(reader, writer)
            finally:
                self._open -= 1
        except (OSError, asyncio.IncompleteReadError) as e:
            log.debug("kite postback: connection lost (%s)", type(e).__name__)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                request = await self._read(reader)
        except TimeoutError:
            log.debug("kite postback: request not whole within %.1fs; answered 408", self.timeout)
            await self._answer(reader, writer, 408, _error("request not received in time"))
            return
        except _Refused as r:
            await self._answer(reader, writer, r.status, _error(r.message))
            return
        if self._idle_workers == 0:
            self.busy += 1
            await self._answer(reader, writer, 503, _error("busy, retry"))
            return
        self._idle_workers -= 1
        try:
            status, body = await self.loop.run_in_executor(self._pool, self._call_app, request)
        finally:
            self._idle_workers += 1
        await self._answer(reader, writer, status, body)

    async def _read(self, reader: asyncio.StreamReader) -> _Request:
        """One request, refused (`_Refused`) as soon as its head says it cannot be read."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as e:
            raise _Refused(431, "request head too large") from e
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _Refused(400, "bad request line")
        method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        try:
            headers = http.client.parse_headers(io.BytesIO(rest))
        except http.client.HTTPException as e:
            raise _Refused(431, "too many headers") from e
        if headers.defects or any(not name or name != name.strip() for name in headers):
            raise _Refused(400, "malformed header")
        if method != "POST":
            raise _Refused(405, "POST a postback body")
        if headers.get_all("Transfer-Encoding"):
            raise _Refused(411, "send the body with a Content-Length, not a Transfer-Encoding")
        lengths = headers.get_all("Content-Length") or []
        if not lengths:
            raise _Refused(411, "Content-Length required")
        declared = lengths[0].strip()
        if len(lengths) > 1 or not (declared.isascii() and declared.isdigit()):
            raise _Refused(400, "Content-Length is not one plain number")
        if int(declared) > self.app.max_body:
            raise _Refused(413, "body too large")
        body = await reader.readexactly(int(declared))
        return _Request(method, target, headers, body)

    def _call_app(self, request: _Request) -> tuple[int, bytes]:
        """Run the WSGI app on one whole request (a worker thread)."""
        environ: dict[str, object] = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.target.partition("?")[0],
            "QUERY_STRING": request.target.partition("?")[2],
            "SERVER_NAME": str(self.address[0]),
            "SERVER_PORT": str(self.address[1]),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": str(len(request.body)),
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        answer: list[int] = []

        def start_response(
            status: str, _headers: object, _exc_info: object = None
        ) -> Callable[[bytes], object]:
            answer.append(int(status.split(" ", 1)[0]))
            return lambda _: None

        app: WSGIApplication = self.app
        body = b"".join(app(environ, start_response))
        return answer[0], body

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        chunks: Iterable[bytes] | bytes,
    ) -> None:
        """Write the answer, then drain what the client still sends (closing on unread data resets)."""
        body = chunks if isinstance(chunks, bytes) else b"".join(chunks)
        reason = _REASONS.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        drained = 0
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                while drained < _DRAIN_LIMIT and (chunk := await reader.read(65536)):
                    drained += len(chunk)
        except (TimeoutError, OSError):
            pass

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._connection, sock=self._listener, limit=MAX_HEAD)
            )
        finally:
            self._started.set()
        self.loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self._started.wait(10)
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._listener.close()


class PostbackServer:
    """A running `serve` server; `close()` stops it."""

    def __init__(self, front: _Front, thread: threading.Thread) -> None:
        self._front = front
        self._thread = thread

    @property
    def receiver(self) -> PostbackReceiver:
        """The WSGI app it serves (its `refused` count)."""
        return self._front.app

    @property
    def busy(self) -> int:
        """Requests answered 503 because `max_threads` or `max_connections` were taken."""
        return self._front.busy

    @property
    def port(self) -> int:
        """The port it listens on (useful after `port=0`)."""
        return int(self._front.address[1])

    @property
    def url(self) -> str:
        """`http://host:port/`: the `postback_url` to register with Kite (behind TLS in production)."""
        return f"http://{self._front.address[0]!s}:{self.port}/"

    def close(self) -> None:
        """Stop serving and close the socket; waits for the serving thread."""
        self._front.close()
        self._thread.join()
        self._front.loop.close()
        self._front._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(  # noqa: PLR0913 - each bound is a keyword a user may tune
    sink: PostbackSink,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = MAX_BODY,
    max_threads: int = MAX_THREADS,
    max_connections: int = MAX_CONNECTIONS,
    timeout: float = REQUEST_TIMEOUT,
) -> PostbackServer:
    """Serve a `PostbackReceiver` on `host:port` in a daemon thread (port 0: any free port).

    Its bounds are in the module docstring. Plain HTTP: in production put it behind a
    TLS-terminating proxy (Kite posts to https).
    """
    front = _Front(
        PostbackReceiver(sink, max_body=max_body),
        host,
        port,
        max_threads=max_threads,
        max_connections=max_connections,
        timeout=timeout,
    )
    thread = threading.Thread(target=front.run, name=f"kite-postbacks-{port}", daemon=True)
    thread.start()
    log.info("kite postbacks served on %s:%d", host, front.address[1])
    return PostbackServer(front, thread)
