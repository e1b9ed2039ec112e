"""Kite postback receiver: a WSGI app a user mounts, or a small stdlib HTTP server (`serve`).

Kite POSTs a JSON body to the app's `postback_url` for each update of an order placed
with that app's api_key (BROKERS.md 3.2). The receiver does no verification and no
translation: it hands every body, verbatim, to a sink (`KiteClient.accept_postback`),
which queues it for `KiteClient.stream()`; there the payload is stored raw before its
checksum is verified, so a postback that fails verification is kept and reported, never
dropped and never applied. No dependency beyond the standard library: `PostbackReceiver`
is a plain WSGI callable (mount it in Flask, Django, any WSGI server), and `serve` runs it
on `wsgiref` in a daemon thread.

Answers: `200` once the body is handed over; `405` for anything but POST; `413` for a
body above `max_body` bytes (64 KiB; a postback is about 1 KiB) or of unknown length;
`503` if the sink refuses it (the client's inbox is full: nothing was taken, Kite
retries) or fails; each refusal is counted (`PostbackReceiver.refused`). `serve` bounds
its threads: at most `max_threads` requests are handled at once, a connection beyond that
is answered `503` at once, and a client that stalls is dropped after `timeout` seconds.
Nothing in it grows without bound.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["MAX_BODY", "PostbackReceiver", "PostbackServer", "serve"]

log = logging.getLogger(__name__)

MAX_BODY: Final = 64 << 10
"""Largest postback body accepted (64 KiB; a postback is about 1 KiB)."""
MAX_THREADS: Final = 16
"""Requests `serve` handles at once; more are answered 503 without a thread."""
REQUEST_TIMEOUT: Final = 10.0
"""Seconds a connection of `serve` may stall before it is dropped."""

PostbackSink = Callable[[bytes], None]
"""Takes one postback body, verbatim; must be thread-safe and quick."""

_JSON: Final = [("Content-Type", "application/json")]


class PostbackReceiver:
    """The WSGI app: POST bodies go to `sink`, verbatim."""

    def __init__(self, sink: PostbackSink, *, max_body: int = MAX_BODY) -> None:
        """Hand every POSTed body to `sink` (e.g. `KiteClient.accept_postback`)."""
        self.sink = sink
        self.max_body = max_body
        self.refused = 0
        """Bodies answered 503 (not taken); Kite retries them."""
        self._count = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (WSGI)."""
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [*_JSON, ("Allow", "POST")])
            return [b'{"status":"error","message":"POST a postback body"}']
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.max_body:
            start_response("413 Content Too Large", _JSON)
            return [b'{"status":"error","message":"body too large or length unknown"}']
        body: bytes = environ["wsgi.input"].read(length)
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
            return [b'{"status":"error","message":"not taken, retry"}']
        start_response("200 OK", _JSON)
        return [b'{"status":"success"}']


_BUSY: Final = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n"
    b'{"status":"error","message":"busy, retry"}\n'
)


_DRAIN_LIMIT: Final = MAX_BODY + 16 << 10
_DRAIN_TIMEOUT: Final = 0.5


def _drain(sock: socket.socket) -> None:
    """Read one request's head and body (bounded in bytes and time) before answering busy."""
    sock.settimeout(_DRAIN_TIMEOUT)
    data = b""
    while len(data) < _DRAIN_LIMIT:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(v)
                    for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                    if k.strip().lower() == b"content-length" and v.strip().isdigit()
                ),
                0,
            )
            if len(body) >= min(length, _DRAIN_LIMIT):
                return
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per request, at most `max_threads` at once; beyond that, 503 without a thread."""

    daemon_threads = True
    block_on_close = False
    max_threads = MAX_THREADS
    busy = 0
    """Connections answered 503 because every thread was taken."""

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_threads)

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: ANN401 - socketserver's
        if not self._slots.acquire(blocking=False):
            self.busy += 1
            try:
                _drain(request)  # read the request first: closing on unread data would reset it
                request.sendall(_BUSY)
            except OSError:
                log.debug("kite postback: busy answer not delivered")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to logging (debug), not to stderr; a stalled connection times out."""

    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401 - the stdlib's signature
        log.debug("kite postback %s: %s", self.client_address[0], format % args)


class PostbackServer:
    """A running `serve` server; `close()` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def receiver(self) -> PostbackReceiver:
        """The WSGI app it serves (its `refused` count)."""
        app = self._server.get_app()
        assert isinstance(app, PostbackReceiver)  # noqa: S101 - serve() sets it
        return app

    @property
    def busy(self) -> int:
        """Connections answered 503 because `max_threads` requests were being handled."""
        return int(getattr(self._server, "busy", 0))

    @property
    def port(self) -> int:
        """The port it listens on (useful after `port=0`)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """`http://host:port/`: the `postback_url` to register with Kite (behind TLS in production)."""
        host = self._server.server_address[0]
        return f"http://{host!s}:{self.port}/"

    def close(self) -> None:
        """Stop serving and close the socket; waits for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    sink: PostbackSink,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = MAX_BODY,
    max_threads: int = MAX_THREADS,
) -> PostbackServer:
    """Serve a `PostbackReceiver` on `host:port` in a daemon thread (port 0: any free port).

    At most `max_threads` requests are handled at once (module docstring). Plain HTTP: in
    production put it behind a TLS-terminating proxy (Kite posts to https).
    """
    server_class = type("_Bounded", (_ThreadingWSGIServer,), {"max_threads": max_threads})
    server: WSGIServer = make_server(
        host,
        port,
        PostbackReceiver(sink, max_body=max_body),
        server_class=server_class,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name=f"kite-postbacks-{port}", daemon=True)
    thread.start()
    log.info("kite postbacks served on %s:%d", host, server.server_address[1])
    return PostbackServer(server, thread)
