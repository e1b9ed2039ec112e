"""The Kite postback receiver over real sockets: framing it cannot read is refused, slow clients
starve nobody, and nothing an unauthenticated client sends grows without bound.

Every case talks hand-written HTTP to `serve` on 127.0.0.1 through `socket.create_connection`,
so what is tested is what Kite (or an attacker) would see.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from trueup.adapters.kite.postback import PostbackServer, serve


@pytest.fixture
def received() -> list[bytes]:
    return []


@pytest.fixture
def server(received: list[bytes]) -> Iterator[PostbackServer]:
    lock = threading.Lock()

    def sink(body: bytes) -> None:
        with lock:
            received.append(body)

    with serve(sink, max_body=1024, max_threads=2, timeout=1.0, max_connections=64) as running:
        yield running


def exchange(server: PostbackServer, raw: bytes, *, half_close: bool = True) -> bytes:
    """Send `raw`, then read the whole answer (the server closes after one request)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


BODY = b'{"order_id": "1", "status": "UPDATE"}'


def test_a_well_formed_post_is_taken_verbatim(server: PostbackServer, received: list[bytes]) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = exchange(server, head + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    assert status(answer) == 200
    assert received == [BODY]


def test_no_content_length_is_411_and_nothing_is_taken(server: PostbackServer, received: list[bytes]) -> None:
    answer = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n" + BODY)
    assert status(answer) == 411  # Kite retries; a 200 here would drop the update for good
    assert received == []


def test_chunked_is_refused_not_read_as_empty(server: PostbackServer, received: list[bytes]) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    answer = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status(answer) == 411
    assert received == []


def test_chunked_with_a_content_length_too_is_refused(server: PostbackServer, received: list[bytes]) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(server, head + b"5\r\nhello\r\n0\r\n\r\n")
    assert status(answer) in {400, 411}
    assert received == []


@pytest.mark.parametrize("lengths", [(5, 5), (5, 9), (9, 5)])
def test_two_content_lengths_are_400(
    server: PostbackServer, received: list[bytes], lengths: tuple[int, int]
) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n" % lengths
    answer = exchange(server, head + b"helloworld")
    assert status(answer) == 400
    assert received == []


@pytest.mark.parametrize("value", [b"-1", b"5 5", b"0x10", b"+5", b"", b"1" * 40])
def test_a_content_length_that_is_not_a_plain_number_is_400(server: PostbackServer, value: bytes) -> None:
    answer = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nhello")
    assert status(answer) in {400, 413}


def test_a_body_above_the_limit_is_413_before_it_is_sent(
    server: PostbackServer, received: list[bytes]
) -> None:
    """The answer comes without the body: the receiver never waits for (or holds) 100 MB."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        answer = read_all(sock)  # no body sent, no half-close: the server answers and closes
    assert status(answer) == 413
    assert received == []


def test_a_refusal_reaches_a_client_that_already_sent_its_body(server: PostbackServer) -> None:
    """Closing on unread bytes would reset the connection and lose the answer: it is drained."""
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"
    for _ in range(5):
        assert status(exchange(server, head + b"x" * 4000, half_close=False)) == 413


def test_a_header_block_without_end_is_refused(server: PostbackServer) -> None:
    answer = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000)
    assert status(answer) == 431


def test_a_drip_fed_request_is_dropped_at_its_deadline_not_at_its_last_byte(server: PostbackServer) -> None:
    """Slowloris: one byte every 0.2 s never trips a per-read timeout; the request deadline (1 s) ends it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\n")
        closed = False
        for _ in range(150):  # 30 s of dripping if the server never ends it
            time.sleep(0.2)
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            sock.setblocking(False)
            try:
                if sock.recv(65536, socket.MSG_PEEK):
                    closed = True
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        assert closed, "a drip-fed request held its connection for 30 s"


def test_slow_connections_do_not_starve_a_legitimate_post(
    server: PostbackServer, received: list[bytes]
) -> None:
    """Ten times `max_threads` drip-feeding clients: a real postback still gets its 200."""
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(0.2)  # let the server take every slow connection first
        answer = exchange(
            server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
        )
        assert status(answer) == 200
        assert received == [BODY]
    finally:
        for sock in slow:
            sock.close()


def test_connections_beyond_the_bound_are_answered_busy_at_once() -> None:
    """Open connections (and so bodies held) are bounded: the one past the bound gets 503."""
    with serve(lambda body: None, max_connections=4, timeout=5.0) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.2)
            answer = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            assert status(answer) == 503
            assert server.busy >= 1
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "411"),  # no CONTENT_LENGTH: under another WSGI server, the body was read as empty
        ({"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"}, "411"),
        ({"CONTENT_LENGTH": "37", "HTTP_TRANSFER_ENCODING": "chunked"}, "411"),
        ({"CONTENT_LENGTH": "37, 37"}, "400"),  # a server that joins repeated headers
        ({"CONTENT_LENGTH": "99999999"}, "413"),
        ({"CONTENT_LENGTH": "37"}, "200"),
    ],
)
def test_the_wsgi_app_mounted_elsewhere_refuses_the_same(headers: dict[str, str], expected: str) -> None:
    import io

    from trueup.adapters.kite.postback import PostbackReceiver

    taken: list[bytes] = []
    answers: list[str] = []
    app = PostbackReceiver(taken.append)
    environ = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(BODY), **headers}
    app(environ, lambda status, _headers, _exc=None: answers.append(status))  # type: ignore[arg-type,misc]
    assert answers[0].startswith(expected)
    assert taken == ([BODY] if expected == "200" else [])
