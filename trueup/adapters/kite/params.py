"""The arguments of kiteconnect's order calls, and the order id of a placement's answer. Pure.

`place_params` turns an `OrderRequest` into `place_order`'s (and
`place_autoslice_order`'s) arguments; a request Kite cannot take is `SubmitRejected`
here, before anything is sent. Our `client_order_id` travels as the `tag`; prices travel
as text, never as floats. `whole` checks that a quantity is a whole positive number, as
Kite's are (lots for derivatives). No SDK needed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from trueup.adapters.base import CLIENT_ORDER_ID, OrderRequest, OrderType, SubmitRejected
from trueup.adapters.kite.ids import split_symbol
from trueup.domain.errors import BrokerQueryError
from trueup.domain.status import Side

__all__ = ["place_params", "placed_order_id", "whole"]


class _PlaceAnswer(msgspec.Struct):
    class Data(msgspec.Struct):
        order_id: str

    data: Data


_PLACE_ANSWER: Final = msgspec.json.Decoder(_PlaceAnswer)


def placed_order_id(raw: str) -> str:
    """The `order_id` of `place_order`'s answer.

    Raises:
        msgspec.ValidationError, msgspec.DecodeError: the answer does not name one.
    """
    return _PLACE_ANSWER.decode(raw).data.order_id


def place_params(request: OrderRequest, *, variety: str) -> dict[str, object]:
    """The arguments of kiteconnect's `place_order`; a request Kite cannot take is refused here.

    Raises:
        SubmitRejected: the request cannot be expressed as a Kite order.
    """
    cid = request.client_order_id
    if not CLIENT_ORDER_ID.fullmatch(cid):
        msg = f"client_order_id {cid!r} cannot be a Kite tag (1-20 [A-Za-z0-9])"
        raise SubmitRejected(msg)
    try:
        exchange, tradingsymbol, product = split_symbol(request.symbol)
    except ValueError as e:
        msg = f"order {cid}: {e}"
        raise SubmitRejected(msg) from e
    params: dict[str, object] = {
        "variety": variety,
        "exchange": exchange,
        "tradingsymbol": tradingsymbol,
        "transaction_type": Side(request.side).value,
        "quantity": whole(request.quantity, f"order {cid}", rejected=True),
        "product": product,
        "order_type": OrderType(request.order_type).value,
        "validity": "DAY",
        "tag": cid,
    }
    if params["order_type"] == OrderType.LIMIT:
        if request.limit_price is None:
            msg = f"limit order {cid} without a limit price"
            raise SubmitRejected(msg)
        params["price"] = str(request.limit_price)  # text, never a float
    return params


def whole(quantity: Decimal, what: str, *, rejected: bool = False) -> int:
    """Kite quantities are whole units (lots for derivatives).

    Raises:
        SubmitRejected: (`rejected`) the quantity is not a whole positive number.
        BrokerQueryError: (not `rejected`) the same.
    """
    if not quantity.is_finite() or quantity <= 0 or quantity != quantity.to_integral_value():
        msg = f"{what}: Kite quantities are whole positive numbers, got {quantity}"
        raise SubmitRejected(msg) if rejected else BrokerQueryError(msg)
    return int(quantity)
