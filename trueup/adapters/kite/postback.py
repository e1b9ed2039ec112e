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
body above `max_body` bytes; `503` if the sink fails (nothing was taken: Kite may retry).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["MAX_BODY", "PostbackReceiver", "PostbackServer", "serve"]

log = logging.getLogger(__name__)

MAX_BODY: Final = 1 << 20
"""Largest postback body accepted (1 MiB; a postback is about 1 KiB)."""

PostbackSink = Callable[[bytes], None]
"""Takes one postback body, verbatim; must be thread-safe and quick."""

_JSON: Final = [("Content-Type", "application/json")]


class PostbackReceiver:
    """The WSGI app: POST bodies go to `sink`, verbatim."""

    def __init__(self, sink: PostbackSink, *, max_body: int = MAX_BODY) -> None:
        """Hand every POSTed body to `sink` (e.g. `KiteClient.accept_postback`)."""
        self.sink = sink
        self.max_body = max_body

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
        except Exception:
            log.exception("kite postback: the sink refused a body of %d bytes", len(body))
            start_response("503 Service Unavailable", _JSON)
            return [b'{"status":"error","message":"not taken, retry"}']
        start_response("200 OK", _JSON)
        return [b'{"status":"success"}']


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to logging (debug), not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401 - the stdlib's signature
        log.debug("kite postback %s: %s", self.client_address[0], format % args)


class PostbackServer:
    """A running `serve` server; `close()` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

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
    sink: PostbackSink, host: str = "127.0.0.1", port: int = 0, *, max_body: int = MAX_BODY
) -> PostbackServer:
    """Serve a `PostbackReceiver` on `host:port` in a daemon thread (port 0: any free port).

    Plain HTTP: in production put it behind a TLS-terminating proxy (Kite posts to https).
    """
    server = make_server(
        host,
        port,
        PostbackReceiver(sink, max_body=max_body),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name=f"kite-postbacks-{port}", daemon=True)
    thread.start()
    log.info("kite postbacks served on %s:%d", host, server.server_address[1])
    return PostbackServer(server, thread)
