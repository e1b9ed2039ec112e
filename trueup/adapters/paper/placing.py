"""How the paper broker places an order: the request checked, the order stored, its callback emitted.

`check_request` refuses what the broker would not even record; `place` stores a new order
(rejected if the symbol is not traded) in the caller's transaction and emits its
callback; `submit_in_outage` decides, from the fault generator, whether a submit sent
during an outage reached the broker. Used by `PaperBroker` (`broker.py`).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Final

from trueup.adapters.base import CLIENT_ORDER_ID, OrderRequest, OrderType, SubmitRejected, SubmitUncertain
from trueup.adapters.paper.faults import FaultKind
from trueup.adapters.paper.store import Transaction
from trueup.adapters.paper.wire import PaperOrder
from trueup.domain.errors import BrokerQueryError
from trueup.domain.status import Side

OUTAGE_PLACED_PPM: Final = 500_000
"""Chance (per million) that a submit sent during an outage reached the broker anyway."""

_SIDE_WIRE: Final[dict[Side, str]] = {Side.BUY: "buy", Side.SELL: "sell"}


def check_request(request: OrderRequest, *, account: str) -> None:
    """Refuse a request the broker would not even record; nothing is stored for these.

    A non-positive quantity is refused here rather than stored as a rejected order:
    no order report can carry a quantity <= 0, so such a row would make every later
    orders answer untranslatable.
    """
    cid = request.client_order_id
    limit = request.limit_price
    problem = None
    if request.account != account:
        problem = f"account {request.account!r} is not served here ({account!r})"
    elif not CLIENT_ORDER_ID.match(cid):
        problem = f"client_order_id must match {CLIENT_ORDER_ID.pattern}, got {cid!r}"
    elif not isinstance(request.quantity, Decimal) or not request.quantity.is_finite():
        problem = f"quantity must be a finite Decimal, got {request.quantity!r}"
    elif request.quantity <= 0:
        problem = f"quantity must be > 0, got {request.quantity}"
    elif request.order_type is OrderType.LIMIT and (limit is None or not limit.is_finite() or limit <= 0):
        problem = f"a LIMIT order needs a positive limit_price, got {limit!r}"
    elif request.order_type is OrderType.MARKET and limit is not None:
        problem = f"a MARKET order takes no limit_price, got {limit}"
    if problem is not None:
        msg = f"paper broker refused {cid!r}: {problem}; nothing placed"
        raise SubmitRejected(msg)


def submit_in_outage(tx: Transaction, request: OrderRequest) -> SubmitUncertain:
    """Decide whether a submit sent during an outage reached the broker; log it either way."""
    cid = request.client_order_id
    # A timeout hides both cases from the caller; the generator picks one, so recovery
    # by lookup meets both (found and booked, or proven absent and closed).
    reached = tx.market.chance(OUTAGE_PLACED_PPM)
    order_id: str | None = None
    if not reached:
        detail = f"submit {cid} during the outage: request lost, nothing placed"
    elif not tx.state.accept_duplicates and tx.order_row(client_order_id=cid) is not None:
        detail = f"submit {cid} during the outage: refused as a duplicate, nothing placed"
    else:
        order_id = place(tx, request, client_order_id=cid).id
        detail = f"submit {cid} during the outage: placed as {order_id}, acknowledgement lost"
    tx.log_fault(FaultKind.OUTAGE, detail, order_id)
    return SubmitUncertain(f"paper broker outage: outcome of submit {cid} unknown; look it up")


def place(tx: Transaction, request: OrderRequest, *, client_order_id: str | None) -> PaperOrder:
    """Store a new order (rejected if the symbol is not traded) and emit its callback."""
    state = tx.state
    state.orders += 1
    order_id = f"P{state.orders:08d}"
    status = "new" if request.symbol in state.symbols else "rejected"
    ts = tx.event_time()
    try:
        tx.conn.execute(
            "INSERT INTO orders (id, client_order_id, symbol, side, qty, limit_price, status, "
            "filled_qty, fill_cost, ts, created_step, manual) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, '0', '0', ?, ?, ?)",
            (
                order_id,
                client_order_id,
                request.symbol,
                _SIDE_WIRE[Side(request.side)],
                str(request.quantity),
                None if request.limit_price is None else str(request.limit_price),
                status,
                ts.isoformat(),
                state.step,
                int(client_order_id is None),
            ),
        )
    except sqlite3.IntegrityError as e:
        # The UNIQUE index has the last word on duplicates, whatever the checks above.
        msg = (
            f"duplicate client_order_id {client_order_id!r}: already at the paper broker; nothing placed"
        )
        raise SubmitRejected(msg) from e
    wire = tx.order_wire(order_id)
    tx.emit(wire)
    return wire


def check_outage(tx: Transaction, what: str) -> None:
    """Refuse a query during an outage (`PaperBroker.outage`): it fails, it does not answer."""
    if tx.in_outage:
        msg = f"paper broker outage until step {tx.state.outage_until} (now {tx.state.step}): {what} failed"
        raise BrokerQueryError(msg)


def check_symbol(tx: Transaction, symbol: str) -> None:
    """Refuse a symbol this broker does not trade."""
    if symbol not in tx.state.symbols:
        msg = f"{symbol!r} is not traded at this paper broker ({', '.join(tx.state.symbols)})"
        raise ValueError(msg)
