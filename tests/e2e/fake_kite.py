"""A small, real HTTP server speaking the Kite Connect v3 routes kiteconnect's KiteConnect calls.

Orders, order histories, trades and positions live in memory, in Kite's shapes
(orders.json, trades.json, positions.json) and envelope: form-encoded
writes, `{"status": "success", "data": ...}`, errors `{"status": "error", "error_type": ...}`
with Kite's HTTP codes. Times are IST strings from a clock that moves one second per
change, so every change has a later time than the one before.

Driven by the test: `fill` executes part of an order, `expire_token` / `issue_token` make
every route answer `TokenException` (403) until a new token is issued, `freeze_quantity`
and `refuse_slices` shape autoslice placements, `place_delay` answers a placement late
(the order is placed all the same), `slice_gap` makes an autoslice placement non-atomic
as Kite's is (children appear one by one, readable and fillable before the answer).
Days: the fake starts `days_ago` days back; `roll_day` ends the trading day as Kite
does: working DAY orders are cancelled, the order book and trades start empty, CNC
shares bought move to `holdings()` (`t1_quantity`, then `realised_quantity` the day
after), other products' positions are carried (`overnight_quantity`). Every change queues
the postback Kite would send (checksum `sha256(order_id + order_timestamp + secret)`);
`deliver` POSTs chosen ones to the receiver, in any order, any number of times, with a
good or a bad checksum.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
WORKING = frozenset(
    {"OPEN", "TRIGGER PENDING", "OPEN PENDING", "VALIDATION PENDING", "PUT ORDER REQ RECEIVED"}
)
REQUIRED = ("exchange", "tradingsymbol", "transaction_type", "quantity", "product", "order_type")


class KiteError(Exception):
    """An error answer: Kite's error_type, message and HTTP status."""

    def __init__(self, error_type: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def dumps(value: object) -> bytes:
    """JSON as Kite writes it: numbers as numbers (2 decimals at most in these tests)."""
    return json.dumps(value, default=_json_default).encode()


class FakeKite:
    """In-memory Kite account behind a ThreadingHTTPServer on 127.0.0.1 (port 0)."""

    def __init__(
        self, api_key: str, access_token: str, api_secret: str, *, user_id: str = "AB1234", days_ago: int = 0
    ) -> None:
        self.lock = threading.RLock()
        self.api_key = api_key
        self.token: str | None = access_token
        self.echo_headers = False
        """Error answers echo the request's headers (as some gateways do): the access token included."""
        self.api_secret = api_secret
        self.user_id = user_id
        self.orders: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.trades: list[dict[str, Any]] = []
        """Today's trades (what `trades()` lists)."""
        self.past_trades: list[dict[str, Any]] = []
        """Trades of earlier days: positions carried and holdings derive from them."""
        self.t1: dict[tuple[str, str], int] = {}
        """Holdings bought on the last trading day, not delivered yet (`t1_quantity`)."""
        self.slice_gap = 0.0
        """Autoslice: seconds between placing one child and the next (the lock is released)."""
        self.day_offset = timedelta(days=days_ago)
        """How far the fake's calendar is behind the real one."""
        self.postbacks: list[dict[str, Any]] = []
        """Every postback Kite would send, signed, in the order the changes happened."""
        self.postback_url: str | None = None
        self.requests: list[str] = []
        self.freeze_quantity = 1_000_000
        """Autoslice: the largest slice."""
        self.refuse_slices: set[int] = set()
        """Autoslice: indexes of children refused with MarginException (no order made)."""
        self.reject_slices: set[int] = set()
        """Autoslice: indexes of children placed, then REJECTED by the RMS (an order in the book)."""
        self.place_delay = 0.0
        """Answer the next placement only after this many seconds (the order is placed at once)."""
        self.refuse_next_place: str | None = None
        """Refuse the next placement with this OrderException message (an RMS block)."""
        self.route_faults: dict[str, int] = {}
        """`"GET /trades"` -> how many more requests answer NetworkException (503)."""
        self.cancel_spelling = "CANCELLED"
        """Status a cancellation's postback carries ("CANCEL" is the postback docs' spelling)."""
        self._ids = itertools.count(251123000000001)
        self._trade_ids = itertools.count(50000001)
        self._now = (datetime.now(IST) - self.day_offset).replace(microsecond=0, tzinfo=None)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKite:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- controls ---------------------------------------------------------------------------

    def expire_token(self) -> None:
        """The daily expiry: every request answers TokenException until `issue_token`."""
        with self.lock:
            self.token = None

    def fail(self, route: str, times: int = 1) -> None:
        """The next `times` requests of `route` ("GET /orders") answer NetworkException (503)."""
        with self.lock:
            self.route_faults[route] = self.route_faults.get(route, 0) + times

    def issue_token(self, token: str) -> None:
        with self.lock:
            self.token = token

    def fill(self, order_id: str, qty: int, price: str) -> dict[str, Any]:
        """Execute `qty` of a working order at `price`: a trade, the order moved, a postback queued."""
        with self.lock:
            order = self.orders[order_id]
            assert order["status"] in WORKING, order["status"]
            q, p = Decimal(qty), Decimal(price)
            filled = Decimal(order["filled_quantity"])
            assert filled + q <= order["quantity"], (filled, q, order["quantity"])
            now = self._tick()
            avg = Decimal(order["average_price"])
            order["average_price"] = (avg * filled + p * q) / (filled + q)
            order["filled_quantity"] = int(filled + q)
            order["pending_quantity"] = order["quantity"] - order["filled_quantity"]
            order["exchange_update_timestamp"] = now
            done = order["filled_quantity"] == order["quantity"]
            order["status"] = "COMPLETE" if done else "OPEN"
            trade = {
                "trade_id": str(next(self._trade_ids)),
                "order_id": order_id,
                "exchange": order["exchange"],
                "tradingsymbol": order["tradingsymbol"],
                "instrument_token": order["instrument_token"],
                "product": order["product"],
                "average_price": p,
                "quantity": qty,
                "exchange_order_id": order["exchange_order_id"],
                "transaction_type": order["transaction_type"],
                "fill_timestamp": now,
                "order_timestamp": now[11:],  # time of day only, as Kite writes it
                "exchange_timestamp": now,
            }
            self.trades.append(trade)
            self._record(order, postback_status="COMPLETE" if done else "UPDATE")
            return trade

    def tagged(self, tag: str) -> list[dict[str, Any]]:
        """Copies of the orders carrying `tag` (all slices of an autoslice order)."""
        with self.lock:
            return [copy.deepcopy(o) for o in self.orders.values() if o["tag"] == tag]

    def trades_of(self, order_ids: set[str]) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(t) for t in self.trades if t["order_id"] in order_ids]

    def net_positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        """`EXCHANGE:SYMBOL:PRODUCT` -> (quantity, average price) the account holds, over every day.

        Folded from every trade ever (not from `positions()` and `holdings()`), so it checks
        how the adapter combines those two.
        """
        with self.lock:
            return {
                f"{exchange}:{symbol}:{product}": (row["held"], row["cost"])
                for (exchange, symbol, product), row in _fold(self.past_trades + self.trades).items()
            }

    def roll_day(self) -> None:
        """The close and the next morning: EOD cancels, empty books, CNC to holdings, the rest carried."""
        with self.lock:
            for order in self.orders.values():
                if order["status"] in WORKING:  # DAY validity: cancelled at the close
                    self._tick()
                    order["status"] = "CANCELLED"
                    order["cancelled_quantity"] = order["quantity"] - order["filled_quantity"]
                    order["pending_quantity"] = 0
                    order["status_message"] = "Order cancelled by the exchange at the end of the day"
                    self._record(order, postback_status="CANCELLED")
            bought = _fold([t for t in self.trades if t["product"] == "CNC"])
            self.t1 = {(e, s): int(row["held"]) for (e, s, _), row in bought.items() if row["held"] > 0}
            self.past_trades += self.trades
            self.trades = []
            self.orders.clear()
            self.history.clear()
            self.day_offset -= timedelta(days=1)
            self._now = max(
                self._now, (datetime.now(IST) - self.day_offset).replace(microsecond=0, tzinfo=None)
            )

    def holdings(self) -> list[dict[str, Any]]:
        """`GET /portfolio/holdings`: CNC shares of earlier days, in holdings.json's shape."""
        held = _fold([t for t in self.past_trades if t["product"] == "CNC"])
        sold_today = _fold(
            [t for t in self.trades if t["product"] == "CNC" and t["transaction_type"] == "SELL"]
        )
        rows = []
        for (exchange, tradingsymbol, product), row in held.items():
            quantity = int(row["held"])
            if quantity <= 0:
                continue
            t1 = min(self.t1.get((exchange, tradingsymbol), 0), quantity)
            used = sold_today.get((exchange, tradingsymbol, product), {"sell": 0})["sell"]
            rows.append(
                {
                    "tradingsymbol": tradingsymbol,
                    "exchange": exchange,
                    "instrument_token": 779521,
                    "isin": "INE062A01020",
                    "product": product,
                    "price": 0,
                    "quantity": quantity - t1,
                    "used_quantity": min(used, quantity),
                    "t1_quantity": t1,
                    "realised_quantity": quantity - t1,
                    "authorised_quantity": 0,
                    "authorised_date": "2025-01-17 00:00:00",
                    "authorisation": {},
                    "opening_quantity": quantity,
                    "short_quantity": 0,
                    "collateral_quantity": 0,
                    "collateral_type": "",
                    "discrepancy": False,
                    "average_price": row["cost"],
                    "last_price": row["cost"],
                    "close_price": row["cost"],
                    "pnl": 0,
                    "day_change": 0,
                    "day_change_percentage": 0,
                    "mtf": {
                        "quantity": 0,
                        "used_quantity": 0,
                        "average_price": 0,
                        "value": 0,
                        "initial_margin": 0,
                    },
                }
            )
        return rows

    def deliver(
        self, *indexes: int, checksum: str = "good", tamper: dict[str, Any] | None = None
    ) -> list[int]:
        """POST the postbacks at `indexes` (of `postbacks`) to the receiver; their HTTP statuses.

        `checksum="bad"` signs them with another secret (what a forger would do).
        `tamper` changes fields the checksum does not cover, keeping the authentic checksum
        (what a forger with a captured postback would do).
        """
        assert self.postback_url is not None
        statuses = []
        for index in indexes:
            with self.lock:
                body = dict(self.postbacks[index])
            if checksum == "bad":
                body["checksum"] = _checksum(body, "not-the-secret")
            body.update(tamper or {})
            request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
                self.postback_url, data=dumps(body), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                statuses.append(response.status)
        return statuses

    # -- routes (called with the lock held) ------------------------------------------------------

    def place(self, variety: str, form: dict[str, str]) -> dict[str, Any]:
        if self.refuse_next_place is not None:
            message, self.refuse_next_place = self.refuse_next_place, None
            raise KiteError("OrderException", message, 400)
        missing = [name for name in REQUIRED if not form.get(name)]
        if missing:
            raise KiteError("InputException", f"Missing {', '.join(missing)}", 400)
        try:
            quantity = int(form["quantity"])
        except ValueError:
            raise KiteError("InputException", f"Invalid quantity {form['quantity']!r}", 400) from None
        if quantity <= 0:
            raise KiteError("InputException", "Quantity should be greater than zero", 400)
        if form["order_type"] == "LIMIT" and not form.get("price"):
            raise KiteError("InputException", "Price is required for LIMIT orders", 400)
        if form.get("autoslice") != "true":
            return {"order_id": self._new_order(variety, form, quantity)["order_id"]}
        parent = str(next(self._ids))
        children: list[dict[str, Any]] = []
        sizes = [self.freeze_quantity] * (quantity // self.freeze_quantity)
        if quantity % self.freeze_quantity:
            sizes.append(quantity % self.freeze_quantity)
        for index, size in enumerate(sizes):
            if index and self.slice_gap:  # Kite places children one by one: others may read meanwhile
                self.lock.release()
                try:
                    time.sleep(self.slice_gap)
                finally:
                    self.lock.acquire()
            if index in self.refuse_slices:
                message = (
                    "Insufficient funds. Required margin is 228365.92 but available margin is 228358.50."
                )
                children.append(
                    {
                        "error": {
                            "code": 400,
                            "error_type": "MarginException",
                            "message": message,
                            "data": None,
                        }
                    }
                )
                continue
            tags = ["autoslice", f"autoslice:{parent}"]
            child = self._new_order(variety, form, size, extra_tags=tags)
            children.append({"order_id": child["order_id"]})
            if index in self.reject_slices:  # the RMS refused it: it never reached the exchange
                self.history[child["order_id"]].pop()  # no OPEN row
                child["exchange_order_id"] = child["exchange_timestamp"] = None
                child["status"] = "REJECTED"
                child["status_message"] = "RMS:Margin Exceeds, Required:228365.92, Available:228358.50"
                child["pending_quantity"] = 0
                child["exchange_update_timestamp"] = None
                self._record(child, postback_status="REJECTED")
        return {"order_id": parent, "children": children}

    def modify(self, order_id: str, form: dict[str, str]) -> dict[str, Any]:
        order = self._working(order_id, "modified")
        if form.get("quantity"):
            quantity = int(form["quantity"])
            if quantity < order["filled_quantity"]:
                raise KiteError("InputException", "Quantity is below the filled quantity", 400)
            order["quantity"] = quantity
            order["pending_quantity"] = quantity - order["filled_quantity"]
        if form.get("price"):
            order["price"] = Decimal(form["price"])
        now = self._tick()
        order["order_timestamp"] = now  # a modification is registered anew
        order["exchange_update_timestamp"] = now
        order["modified"] = True
        for status in ("MODIFY VALIDATION PENDING", "MODIFY PENDING", "MODIFIED"):
            self.history[order_id].append({**copy.deepcopy(order), "status": status})
        order["status"] = "OPEN"
        self._record(order, postback_status="UPDATE")
        return {"order_id": order_id}

    def cancel(self, order_id: str) -> dict[str, Any]:
        order = self._working(order_id, "cancelled")
        now = self._tick()
        self.history[order_id].append({**copy.deepcopy(order), "status": "CANCEL PENDING"})
        order["status"] = "CANCELLED"
        order["cancelled_quantity"] = order["quantity"] - order["filled_quantity"]
        order["pending_quantity"] = 0
        order["exchange_update_timestamp"] = now
        order["status_message"] = "Cancelled by user"
        self._record(order, postback_status=self.cancel_spelling)
        return {"order_id": order_id}

    def order_trades(self, order_id: str) -> list[dict[str, Any]]:
        if order_id not in self.orders:
            raise KiteError("InputException", "Couldn't find that order", 400)
        return [t for t in self.trades if t["order_id"] == order_id]

    def order_history(self, order_id: str) -> list[dict[str, Any]]:
        if order_id not in self.history:
            raise KiteError("InputException", "Couldn't find that order", 400)
        return self.history[order_id]

    def positions(self) -> dict[str, Any]:
        """`net`: CNC from today's trades only (earlier days' are holdings), others carried + today."""
        carried = [t for t in self.past_trades if t["product"] != "CNC"]
        return {
            "net": _rows(_fold(carried + self.trades), _fold(carried)),
            "day": _rows(_fold(self.trades), {}),
        }

    # -- state (called with the lock held) -------------------------------------------------------

    def _tick(self) -> str:
        now = (datetime.now(IST) - self.day_offset).replace(microsecond=0, tzinfo=None)
        self._now = max(now, self._now + timedelta(seconds=1))
        return self._now.strftime("%Y-%m-%d %H:%M:%S")

    def _new_order(
        self, variety: str, form: dict[str, str], quantity: int, extra_tags: list[str] | None = None
    ) -> dict[str, Any]:
        order_id = str(next(self._ids))
        now = self._tick()
        tag = form.get("tag")
        order: dict[str, Any] = {
            "account_id": self.user_id,
            "placed_by": self.user_id,
            "order_id": order_id,
            "exchange_order_id": None,
            "parent_order_id": None,
            "status": "PUT ORDER REQ RECEIVED",
            "status_message": None,
            "status_message_raw": None,
            "order_timestamp": now,
            "exchange_update_timestamp": None,
            "exchange_timestamp": None,
            "variety": variety,
            "modified": False,
            "exchange": form["exchange"],
            "tradingsymbol": form["tradingsymbol"],
            "instrument_token": 779521,
            "order_type": form["order_type"],
            "transaction_type": form["transaction_type"],
            "validity": form.get("validity", "DAY"),
            "validity_ttl": 0,
            "product": form["product"],
            "quantity": quantity,
            "disclosed_quantity": 0,
            "price": Decimal(form.get("price") or 0),
            "trigger_price": 0,
            "average_price": Decimal(0),
            "filled_quantity": 0,
            "pending_quantity": quantity,
            "cancelled_quantity": 0,
            "market_protection": 0,
            "meta": {},
            "tag": tag,
            "tags": ([tag] if tag else []) + (extra_tags or []),
            "guid": f"guid{order_id}",
        }
        self.history[order_id] = []
        for status in ("PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING"):
            self.history[order_id].append({**copy.deepcopy(order), "status": status})
        order["status"] = "OPEN"
        order["exchange_order_id"] = f"13{order_id[-14:]}"
        order["exchange_timestamp"] = now
        order["exchange_update_timestamp"] = now
        self.orders[order_id] = order
        self.history[order_id].append(copy.deepcopy(order))  # no postback on placement
        return order

    def _working(self, order_id: str, verb: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None:
            raise KiteError("InputException", "Couldn't find that order", 400)
        if order["status"] not in WORKING:
            raise KiteError("OrderException", f"Order cannot be {verb} as it is {order['status']}", 400)
        return order

    def _record(self, order: dict[str, Any], *, postback_status: str) -> None:
        """A change: history row, and the postback Kite would send for it."""
        self.history[order["order_id"]].append(copy.deepcopy(order))
        # A postback has the order's fields but no `tags` (postback.json), and a few more.
        fields = {
            k: v for k, v in order.items() if k not in {"tags", "modified", "validity_ttl", "account_id"}
        }
        body = {
            **copy.deepcopy(fields),
            "status": postback_status,
            "user_id": self.user_id,
            "app_id": 1234,
            "unfilled_quantity": order["pending_quantity"],
        }
        body["checksum"] = _checksum(body, self.api_secret)
        self.postbacks.append(body)


def _fold(trades: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(exchange, tradingsymbol, product) -> held quantity, average cost, bought and sold, over `trades`."""
    book: dict[tuple[str, str, str], dict[str, Any]] = {}
    for trade in trades:
        key = (trade["exchange"], trade["tradingsymbol"], trade["product"])
        row = book.setdefault(key, {"held": Decimal(0), "cost": Decimal(0), "buy": 0, "sell": 0})
        q = Decimal(trade["quantity"]) * (1 if trade["transaction_type"] == "BUY" else -1)
        price = Decimal(trade["average_price"])
        held, cost = row["held"], row["cost"]
        new = held + q
        if new == 0:
            cost = Decimal(0)
        elif held == 0 or (held > 0) != (new > 0):
            cost = price
        elif abs(new) > abs(held):
            cost = (held * cost + q * price) / new
        row["held"], row["cost"] = new, cost
        row["buy" if q > 0 else "sell"] += abs(int(q))
    return book


def _rows(
    book: dict[tuple[str, str, str], dict[str, Any]], overnight: dict[tuple[str, str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows of `positions()` in positions.json's shape."""
    return [
        {
            "tradingsymbol": tradingsymbol,
            "exchange": exchange,
            "instrument_token": 779521,
            "product": product,
            "quantity": int(row["held"]),
            "overnight_quantity": int(overnight.get((exchange, tradingsymbol, product), {"held": 0})["held"]),
            "multiplier": 1,
            "average_price": row["cost"],
            "buy_quantity": row["buy"],
            "sell_quantity": row["sell"],
            "pnl": 0,
        }
        for (exchange, tradingsymbol, product), row in book.items()
    ]


def _checksum(body: dict[str, Any], secret: str) -> str:
    return hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode()).hexdigest()


def _handler(fake: FakeKite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = dumps(body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (a delayed placement)

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else urlparse(self.path).query
            return {k: v[-1] for k, v in parse_qs(raw).items()}

        def _route(self, method: str) -> None:
            path = urlparse(self.path).path.rstrip("/")
            parts = path.strip("/").split("/")
            form = self._form() if method in {"POST", "PUT"} else {}
            delay = 0.0
            with fake.lock:
                fake.requests.append(f"{method} {path}")
                try:
                    self._check_headers()
                    self._check_faults(f"{method} {path}")
                    data = self._dispatch(method, parts, form)
                    if method == "POST" and fake.place_delay:
                        delay, fake.place_delay = fake.place_delay, 0.0
                    answer = (200, {"status": "success", "data": data})
                except KiteError as e:
                    message = e.message
                    if fake.echo_headers:
                        message += (
                            " (request: " + ", ".join(f"{k}: {v}" for k, v in self.headers.items()) + ")"
                        )
                    answer = (
                        e.status,
                        {"status": "error", "message": message, "data": None, "error_type": e.error_type},
                    )
            if delay:
                time.sleep(delay)  # placed already; the client has timed out by now
            self._answer(*answer)

        def _check_headers(self) -> None:
            if (
                fake.token is None
                or self.headers.get("Authorization") != f"token {fake.api_key}:{fake.token}"
            ):
                raise KiteError("TokenException", "Incorrect `api_key` or `access_token`.", 403)
            if self.headers.get("X-Kite-Version") != "3":
                raise KiteError("InputException", "X-Kite-Version 3 expected", 400)

        def _check_faults(self, route: str) -> None:
            if fake.route_faults.get(route, 0) > 0:
                fake.route_faults[route] -= 1
                raise KiteError("NetworkException", "Gateway timed out (OMS unreachable)", 503)

        def _dispatch(self, method: str, parts: list[str], form: dict[str, str]) -> Any:  # noqa: PLR0911
            match method, parts:
                case "GET", ["orders"]:
                    return list(fake.orders.values())
                case "GET", ["orders", order_id]:
                    return fake.order_history(order_id)
                case "GET", ["orders", order_id, "trades"]:
                    return fake.order_trades(order_id)
                case "GET", ["trades"]:
                    return fake.trades
                case "GET", ["portfolio", "positions"]:
                    return fake.positions()
                case "GET", ["portfolio", "holdings"]:
                    return fake.holdings()
                case "POST", ["orders", variety]:
                    return fake.place(variety, form)
                case "PUT", ["orders", _variety, order_id]:
                    return fake.modify(order_id, form)
                case "DELETE", ["orders", _variety, order_id]:
                    return fake.cancel(order_id)
            raise KiteError("GeneralException", f"Route not found: {method} /{'/'.join(parts)}", 404)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


@contextmanager
def running(api_key: str, access_token: str, api_secret: str, *, days_ago: int = 0) -> Iterator[FakeKite]:
    fake = FakeKite(api_key, access_token, api_secret, days_ago=days_ago).start()
    try:
        yield fake
    finally:
        fake.stop()
