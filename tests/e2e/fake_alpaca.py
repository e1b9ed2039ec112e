"""A small, real HTTP server speaking the Alpaca Trading API routes alpaca-py's TradingClient calls.

Orders, fills and positions live in memory. Faults on demand: answer the next submit with
504 (or drop the connection) after placing the order anyway, fail a route with a status,
fill an order partially, place an order by hand (an external order), replace an order (PATCH),
stall every answer (`hang_for`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from trueup import Ledger
from trueup.adapters.alpaca.translate import fill_exec_id, to_order_status

WORKING = {"new", "accepted", "partially_filled", "pending_new"}


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeAlpaca:
    """In-memory Alpaca account behind a ThreadingHTTPServer on 127.0.0.1 (port 0)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entered by `on_positions` hooks that fill
        self.orders: list[dict[str, Any]] = []
        self.activities: list[dict[str, Any]] = []
        self.positions: dict[str, tuple[Decimal, Decimal]] = {}
        self.requests: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        """Every POST/PATCH body, verbatim JSON (to check what the client sent)."""
        self.on_positions: list[Any] = []
        """Callables run (once each, in order) when positions are next read, before answering."""
        self.garbled_positions: list[Any] = []
        """Bodies served (once each, in order) instead of the positions: answers that do not translate."""
        self.hang_for = 0.0
        """Seconds each request waits before being answered (a server that stalls)."""
        self.submit_faults: list[str] = []
        """Per next submit: "504" (place, answer 504) or "drop" (place, close the connection)."""
        self.route_faults: dict[str, list[int]] = {}
        self.echo_headers = False
        """Error answers echo the request's headers (as some gateways do): secrets included."""
        self._last = datetime.now(UTC)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeAlpaca:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- fault and market controls ---------------------------------------------------------

    def fail(self, method: str, path: str, status: int = 500, times: int = 1) -> None:
        with self.lock:
            self.route_faults.setdefault(f"{method} {path}", []).extend([status] * times)

    def fail_next_submit(self, how: str) -> None:
        with self.lock:
            self.submit_faults.append(how)

    def place_external(self, symbol: str = "MSFT", qty: str = "3", side: str = "buy") -> dict[str, Any]:
        """An order placed at the broker by hand (another app, the web UI)."""
        with self.lock:
            return self._place({"symbol": symbol, "qty": qty, "side": side, "type": "market"})

    def fill(self, client_order_id: str, qty: str, price: str) -> None:
        """Execute `qty` of the order at `price` (partially or completely)."""
        with self.lock:
            order = self._by_cid(client_order_id)
            assert order is not None, client_order_id
            q, p = Decimal(qty), Decimal(price)
            done = Decimal(order["filled_qty"])
            avg = Decimal(order["filled_avg_price"] or 0)
            cum = done + q
            assert cum <= Decimal(order["qty"])
            now = self._clock()
            order["filled_avg_price"] = str((avg * done + p * q) / cum)
            order["filled_qty"] = str(cum)
            order["status"] = "filled" if cum == Decimal(order["qty"]) else "partially_filled"
            order["updated_at"] = _ts(now)
            if order["status"] == "filled":
                order["filled_at"] = _ts(now)
            self.activities.append(
                {
                    "id": f"{now.strftime('%Y%m%d%H%M%S%f')[:-3]}::{uuid.uuid4()}",
                    "activity_type": "FILL",
                    "transaction_time": _ts(now),
                    "type": "fill" if order["status"] == "filled" else "partial_fill",
                    "price": str(p),
                    "qty": str(q),
                    "side": order["side"],
                    "symbol": order["symbol"],
                    "leaves_qty": str(Decimal(order["qty"]) - cum),
                    "order_id": order["id"],
                    "cum_qty": str(cum),
                    "order_status": order["status"],
                }
            )
            signed = q if order["side"] == "buy" else -q
            held, cost = self.positions.get(order["symbol"], (Decimal(0), Decimal(0)))
            new = held + signed
            if new == 0:
                self.positions.pop(order["symbol"], None)
            elif held == 0 or (held > 0) != (new > 0):
                self.positions[order["symbol"]] = (new, p)
            elif abs(new) > abs(held):
                self.positions[order["symbol"]] = (new, (held * cost + signed * p) / new)
            else:
                self.positions[order["symbol"]] = (new, cost)

    def replace(self, order: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Alpaca's PATCH: a new order (new id) with the new terms; the old one is `replaced`."""
        new = self._place(
            {
                "symbol": order["symbol"],
                "side": order["side"],
                "type": order["type"],
                "time_in_force": body.get("time_in_force", order["time_in_force"]),
                "qty": body.get("qty", order["qty"]),
                "limit_price": body.get("limit_price", order["limit_price"]),
                "client_order_id": body.get("client_order_id"),
            }
        )
        new["replaces"] = order["id"]
        now = new["created_at"]
        order.update(status="replaced", replaced_by=new["id"], replaced_at=now, updated_at=now)
        return new

    def order_by_cid(self, client_order_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self._by_cid(client_order_id)

    # -- state (called with the lock held) ---------------------------------------------------

    def _clock(self) -> datetime:
        self._last = max(datetime.now(UTC), self._last + timedelta(milliseconds=1))
        return self._last

    def _by_cid(self, cid: str) -> dict[str, Any] | None:
        return next((o for o in self.orders if o["client_order_id"] == cid), None)

    def _place(self, body: dict[str, Any]) -> dict[str, Any]:
        now = _ts(self._clock())
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "canceled_at": None,
            "asset_class": "us_equity",
            "symbol": body["symbol"],
            "qty": str(body["qty"]),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": body.get("type", "market"),
            "type": body.get("type", "market"),
            "side": body["side"],
            "time_in_force": body.get("time_in_force", "day"),
            "limit_price": None if body.get("limit_price") is None else str(body["limit_price"]),
            "status": "new",
            "legs": None,
            "replaces": None,
            "replaced_by": None,
            "replaced_at": None,
        }
        self.orders.append(order)
        return order

    def _positions_json(self) -> list[dict[str, Any]]:
        return [
            {
                "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)),
                "symbol": symbol,
                "exchange": "NASDAQ",
                "asset_class": "us_equity",
                "qty": str(abs(qty)),
                "side": "long" if qty > 0 else "short",
                "avg_entry_price": str(cost),
            }
            for symbol, (qty, cost) in sorted(self.positions.items())
        ]

    def _list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        orders = list(self.orders)
        if query.get("status", "open") == "open":
            orders = [o for o in orders if o["status"] in WORKING]
        after = query.get("after")
        if after:
            cut = datetime.fromisoformat(after)
            orders = [o for o in orders if datetime.fromisoformat(o["submitted_at"]) > cut]
        orders.sort(key=lambda o: o["submitted_at"], reverse=query.get("direction", "desc") == "desc")
        return orders[: int(query.get("limit", "50"))]

    def _list_activities(self, query: dict[str, str]) -> list[dict[str, Any]]:
        items = list(self.activities)
        after = query.get("after")
        if after:
            cut = datetime.fromisoformat(after)
            items = [a for a in items if datetime.fromisoformat(a["transaction_time"]) > cut]
        if query.get("direction") == "desc":
            items.reverse()
        token = query.get("page_token")
        if token:
            ids = [a["id"] for a in items]
            items = items[ids.index(token) + 1 :]
        return items[: int(query.get("page_size", "100"))]


def _handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, body: object = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): nothing left to answer

        def _route(self, method: str) -> None:
            parsed = urlparse(self.path)
            path = parsed.path
            query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
            body: dict[str, Any] = {}
            if method in {"POST", "PATCH"}:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if fake.hang_for:
                time.sleep(fake.hang_for)
            with fake.lock:
                fake.requests.append(f"{method} {path}")
                if method in {"POST", "PATCH"}:
                    fake.bodies.append(body)
                if self.headers.get("APCA-API-KEY-ID") is None:
                    self._send(401, {"code": 40110000, "message": "request is not authorized"})
                    return
                faults = fake.route_faults.get(f"{method} {path}")
                if faults:
                    message = "internal server error"
                    if fake.echo_headers:
                        message += f"; request headers: {dict(self.headers.items())}"
                    self._send(faults.pop(0), {"code": 50010000, "message": message})
                    return
                self._dispatch(method, path, query, body)

        def _dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> None:
            if method == "POST" and path == "/v2/orders":
                cid = body.get("client_order_id")
                if cid and fake._by_cid(cid) is not None:
                    self._send(422, {"code": 40010001, "message": "client_order_id must be unique"})
                    return
                order = fake._place(body)
                how = fake.submit_faults.pop(0) if fake.submit_faults else None
                if how == "504":
                    self._send(504, {"code": 50400000, "message": "gateway timeout"})
                elif how == "drop":
                    self.close_connection = True  # placed, but no answer at all
                else:
                    self._send(200, order)
            elif method == "PATCH" and path.startswith("/v2/orders/"):
                oid = path.rsplit("/", 1)[1]
                order = next((o for o in fake.orders if o["id"] == oid), None)
                cid = body.get("client_order_id")
                if order is None:
                    self._send(404, {"code": 40410000, "message": "order not found"})
                elif cid and fake._by_cid(cid) is not None:
                    self._send(422, {"code": 40010001, "message": "client_order_id must be unique"})
                elif order["status"] not in WORKING:
                    self._send(422, {"code": 42210000, "message": "order is not replaceable"})
                else:
                    self._send(200, fake.replace(order, body))
            elif method == "GET" and path == "/v2/orders":
                self._send(200, fake._list_orders(query))
            elif method == "GET" and path == "/v2/orders:by_client_order_id":
                order = fake._by_cid(query.get("client_order_id", ""))
                if order is None:
                    self._send(404, {"code": 40410000, "message": "order not found"})
                else:
                    self._send(200, order)
            elif method == "DELETE" and path.startswith("/v2/orders/"):
                oid = path.rsplit("/", 1)[1]
                order = next((o for o in fake.orders if o["id"] == oid), None)
                if order is None:
                    self._send(404, {"code": 40410000, "message": "order not found"})
                elif order["status"] not in WORKING:
                    self._send(422, {"code": 42210000, "message": "order is not cancelable"})
                else:
                    now = _ts(fake._clock())
                    order.update(status="canceled", canceled_at=now, updated_at=now)
                    self._send(204)
            elif method == "GET" and path == "/v2/positions":
                if fake.on_positions:
                    fake.on_positions.pop(0)()  # e.g. a fill lands between two reads
                garbled = fake.garbled_positions.pop(0) if fake.garbled_positions else None
                self._send(200, garbled if garbled is not None else fake._positions_json())
            elif method == "GET" and path == "/v2/account/activities/FILL":
                self._send(200, fake._list_activities(query))
            else:
                self._send(404, {"code": 40400000, "message": f"no route {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PATCH(self) -> None:
            self._route("PATCH")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


def assert_books_equal(ledger: Ledger, fake: FakeAlpaca, account: str) -> None:
    """Every order (status, quantities, fills) and every position as the fake broker has them."""
    with fake.lock:
        orders = [dict(o) for o in fake.orders]
        activities = list(fake.activities)
        positions = dict(fake.positions)
    booked = {o.client_order_id: o for o in ledger.all_orders(account)}
    assert len(booked) == len(orders)
    for wire in orders:
        order = booked[wire["client_order_id"]]
        status, _ = to_order_status(
            wire["status"], qty=Decimal(wire["qty"]), filled_qty=Decimal(wire["filled_qty"])
        )
        assert (order.status, order.quantity, order.filled_qty) == (
            status,
            Decimal(wire["qty"]),
            Decimal(wire["filled_qty"]),
        ), wire["client_order_id"]
        assert order.broker_order_ids == (wire["id"],)
        executions = sorted(
            (fill_exec_id(a["order_id"], Decimal(a["cum_qty"])), Decimal(a["qty"]), Decimal(a["price"]))
            for a in activities
            if a["order_id"] == wire["id"]
        )
        assert sorted((f.exec_id, f.qty, f.price) for f in order.fills) == executions
    assert {(p.symbol, p.qty) for p in ledger.positions(account)} == {
        (symbol, qty) for symbol, (qty, _) in positions.items()
    }


@contextmanager
def running() -> Iterator[FakeAlpaca]:
    fake = FakeAlpaca().start()
    try:
        yield fake
    finally:
        fake.stop()
