"""The logical order book: Kite orders that share our tag aggregated into one order. Pure.

One tag may name several Kite orders: the children of an autoslice
placement (each a separate `order_id`, tagged `autoslice` and `autoslice:<parent id>`)
and the legs of an iceberg order (`meta.iceberg`). The ledger keeps one order per
client id, so the snapshot must describe each logical order once; reporting every slice
under one client id would make the ledger take one slice's quantity, or one slice's
REJECTED, as the whole order's. `to_order_book` therefore reports:

* an order with a tag of its own (the usual case) as `to_order_reports` does;
* the slices of one tag as one `OrderReport` (`aggregate_slices`);
* external orders (no tag of ours) one by one, keyed by their `order_id`.

Aggregation of the slices of one tag (in Kite's order):

1. quantity: the sum of the slices' quantities; for an iceberg order at least its
   `total_quantity` (legs not placed yet still belong to it). An autoslice child Kite
   refused at placement never becomes an order, so its quantity is not counted: the
   logical order is what Kite holds. The report says so (`quantity_basis`), so the
   ledger takes that quantity though nobody requested an amend to it.
2. filled: the sum; average price: weighted by each slice's fills.
3. status: UNKNOWN if any slice's status is unknown (nothing changes, raw kept); a
   working status while any slice works, or while an iceberg has legs still to place
   (the highest-ranked working slice's, PARTIALLY_FILLED once anything filled, flags of
   the working slices); once every slice is done: FILLED if the fills reach the
   quantity, REJECTED if every slice was rejected, else CANCELED (done, part unfilled).
4. `broker_order_id` is the first slice's; `ts_event` the latest; `raw_status` counts
   the slices' raw statuses (`"3 slices: 2 COMPLETE, 1 OPEN"`).

Slices that disagree on instrument or side are not one order (a tag reused by hand):
they are reported one by one, and the ledger's rules flag the mismatch.

Autoslice placements are not atomic: Kite creates the children one after another, and a
child may fill (and its postback arrive) before the placement answers. A book read in
between lists only some children; aggregated as if complete, it would shrink the logical
order to the children seen and close it FILLED when they filled, and the later children
would then be refused as an overfill. So an order this process is placing with autoslice
is passed in `placing` (`Placing`: the quantity requested and, once Kite answered, the
ids of the children placed). Its group is reported terminal, or with a quantity below
the one requested, only once its set of children is known complete: every child the
answer named is in the book, or (the answer lost) the children seen add up to the
quantity requested. Until then it is reported working (PARTIALLY_FILLED once anything
filled) with the quantity requested. A group with `autoslice:<parent>` tags that this
process is not placing was placed earlier (before a restart): its children are all in
the book, so it is aggregated as above.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Final

import msgspec

from trueup.adapters.kite.ids import TagPredicate, is_slice
from trueup.adapters.kite.readers import ORDERS, decode, invalid, read_body
from trueup.adapters.kite.translate import order_report
from trueup.adapters.kite.wire import KiteAutoslice, KiteIceberg, KiteOrder
from trueup.domain.money import derived_price, money_context
from trueup.domain.reports import FillReport, OrderReport
from trueup.domain.status import OrderFlag, OrderStatus

__all__ = [
    "AutoslicePlacement",
    "KiteOrderRef",
    "OrderBook",
    "Placing",
    "aggregate_slices",
    "to_autoslice_placement",
    "to_order_book",
    "with_client_order_ids",
]

_AUTOSLICE: Final = msgspec.json.Decoder(KiteAutoslice)


class KiteOrderRef(msgspec.Struct, frozen=True, kw_only=True):
    """What cancelling or modifying one Kite order needs: its id, variety and whether it works."""

    order_id: str
    """Kite's order id."""
    variety: str
    """`regular`, `amo`, `iceberg`, ...: part of the cancel and modify routes (`regular` if absent)."""
    working: bool
    """Whether the order may still trade (not COMPLETE, CANCELLED or REJECTED)."""
    is_slice: bool
    """Whether it is one slice of a larger order (`ids.is_slice`)."""


class OrderBook(msgspec.Struct, frozen=True, kw_only=True):
    """Today's order book as logical orders, with the Kite orders behind each of our ids."""

    orders: list[OrderReport]
    """One report per logical order (slices aggregated) and per external order, in Kite's order."""
    members: dict[str, list[KiteOrderRef]]
    """Our id -> the Kite orders carrying it, in Kite's order."""

    @property
    def order_tags(self) -> dict[str, str]:
        """Kite `order_id` -> our id, for every order that carries one (trades have no tag)."""
        return {ref.order_id: cid for cid, refs in self.members.items() for ref in refs}

    def find(self, client_order_id: str) -> OrderReport | None:
        """The logical order carrying our id, or None if today's book has none."""
        return next((r for r in self.orders if r.client_order_id == client_order_id), None)


class AutoslicePlacement(msgspec.Struct, frozen=True, kw_only=True):
    """What `place_autoslice_order()` answered: the slices placed and the ones refused."""

    parent_order_id: str
    """Named in the children's `autoslice:<parent id>` tag."""
    placed: list[str]
    """Order ids of the children placed, in order."""
    refused: list[str]
    """Why each other child was not placed (`"MarginException: Insufficient funds ..."`)."""


class Placing(msgspec.Struct, frozen=True, kw_only=True):
    """An autoslice placement of ours: what was asked, and the children Kite said it placed."""

    quantity: Decimal
    """The quantity requested (the logical order's, before any child was refused)."""
    children: frozenset[str] | None = None
    """Order ids of the children placed, from the placement answer; None until it arrived
    (or when it was lost: the order was then found in the book by its tag)."""


def to_order_book(
    raw: bytes | str,
    *,
    account: str,
    is_ours: TagPredicate | None = None,
    placing: Mapping[str, Placing] | None = None,
) -> OrderBook:
    """The logical order book from `GET /orders` (`orders()`); see the module docstring.

    `placing`: our id -> the autoslice placement this process made with it (module docstring).

    Raises:
        InvalidReport: the payload is malformed or an error envelope; `field` is the JSON path.
    """
    what = "orders answer"
    body, prefix = read_body(raw, what=what, account=account)
    orders = decode(ORDERS, body, what=what, account=account, prefix=prefix)
    entries = [
        (order, order_report(order, account=account, path=f"{prefix}[{i}]", is_ours=is_ours))
        for i, order in enumerate(orders)
    ]
    groups: dict[str, list[tuple[KiteOrder, OrderReport]]] = {}
    for order, report in entries:
        if report.client_order_id is not None:
            groups.setdefault(report.client_order_id, []).append((order, report))
    reports: list[OrderReport] = []
    for order, report in entries:
        cid = report.client_order_id
        if cid is None:
            reports.append(report)
        elif groups[cid][0][0] is order:  # the group's first order stands for the group
            reports.extend(aggregate_slices(groups[cid], placing=(placing or {}).get(cid)))
    members = {
        cid: [
            KiteOrderRef(
                order_id=order.order_id,
                variety=order.variety or "regular",
                working=not report.status.is_terminal,
                is_slice=is_slice(order),
            )
            for order, report in group
        ]
        for cid, group in groups.items()
    }
    return OrderBook(orders=reports, members=members)


@money_context
def aggregate_slices(
    slices: Sequence[tuple[KiteOrder, OrderReport]], *, placing: Placing | None = None
) -> list[OrderReport]:
    """One report for the Kite orders of one tag (module docstring); the report itself if alone.

    A lone order is aggregated only when it is a slice (an iceberg leg, an autoslice child)
    or an autoslice placement of ours (`placing`): its quantity is one slice's. Slices that
    disagree on symbol or side come back as they are, one report each.
    """
    reports = [report for _, report in slices]
    icebergs = [o.meta.iceberg for o, _ in slices if o.meta is not None and o.meta.iceberg is not None]
    sliced = placing is not None or any(is_slice(o) for o, _ in slices)
    if len(reports) == 1 and not sliced:
        return reports
    first = reports[0]
    if any((r.symbol, r.side) != (first.symbol, first.side) for r in reports):
        return reports
    quantity = sum((r.quantity for r in reports), Decimal(0))
    totals = [i.total_quantity for i in icebergs if i.total_quantity is not None]
    quantity = max([quantity, *totals])
    incomplete = placing is not None and not _placement_complete(slices, placing, quantity)
    if incomplete and placing is not None:
        quantity = max(quantity, placing.quantity)  # never below what was asked while children may follow
    filled = sum((r.filled_qty for r in reports), Decimal(0))
    cost = sum((r.filled_qty * (r.avg_price or 0) for r in reports if r.filled_qty > 0), Decimal(0))
    priced = all(r.avg_price is not None for r in reports if r.filled_qty > 0)
    legs_left = _legs_left(icebergs)
    status, flags = _logical_status(
        reports, quantity=quantity, filled=filled, legs_left=legs_left, incomplete=incomplete
    )
    summary = _summary(reports) + ("; autoslice placement not known complete" if incomplete else "")
    return [
        OrderReport(
            account=first.account,
            client_order_id=first.client_order_id,
            broker_order_id=first.broker_order_id,
            symbol=first.symbol,
            side=first.side,
            quantity=quantity,
            status=status,
            filled_qty=filled,
            avg_price=derived_price(cost, filled) if filled > 0 and priced else None,
            ts_event=max(r.ts_event for r in reports),
            raw_status=summary,
            limit_price=first.limit_price,
            flags=flags,
            quantity_basis=f"sum of the {len(reports)} Kite orders with this tag",
        )
    ]


def _placement_complete(
    slices: Sequence[tuple[KiteOrder, OrderReport]], placing: Placing, quantity: Decimal
) -> bool:
    """Whether every child of an autoslice placement of ours is in the book (module docstring)."""
    if placing.children is not None:
        return placing.children <= {order.order_id for order, _ in slices}
    return quantity >= placing.quantity


def _legs_left(icebergs: Sequence[KiteIceberg]) -> bool:
    """Whether an iceberg order has legs Kite has not placed yet."""
    legs = [(i.leg, i.legs) for i in icebergs if i.leg is not None and i.legs is not None]
    return bool(legs) and max(leg for leg, _ in legs) < max(n for _, n in legs)


def _logical_status(
    reports: Sequence[OrderReport],
    *,
    quantity: Decimal,
    filled: Decimal,
    legs_left: bool,
    incomplete: bool = False,
) -> tuple[OrderStatus, frozenset[OrderFlag]]:
    """Status and flags of a logical order from its slices' (step 3 of the module docstring).

    `incomplete`: children of the placement may still come, so the order works whatever
    the slices seen say.
    """
    if any(r.status is OrderStatus.UNKNOWN for r in reports):
        return OrderStatus.UNKNOWN, frozenset()
    working = [r for r in reports if not r.status.is_terminal]
    # An iceberg's next leg follows a filled leg; a rejected or cancelled leg ends it.
    continues = legs_left and all(r.status is OrderStatus.FILLED for r in reports)
    if working or continues or incomplete:
        status = max((r.status for r in working), key=lambda s: s.rank, default=OrderStatus.ACCEPTED)
        if filled > 0 and status.rank < OrderStatus.PARTIALLY_FILLED.rank:
            status = OrderStatus.PARTIALLY_FILLED
        flags = frozenset().union(*(r.flags for r in working))
        return status, flags
    if filled >= quantity:
        return OrderStatus.FILLED, frozenset()
    if all(r.status is OrderStatus.REJECTED for r in reports):
        return OrderStatus.REJECTED, frozenset()
    return OrderStatus.CANCELED, frozenset()


def _summary(reports: Sequence[OrderReport]) -> str:
    """`"3 slices: 2 COMPLETE, 1 OPEN"`: the raw statuses of the slices, counted."""
    counts = Counter(r.raw_status for r in reports)
    return f"{len(reports)} slices: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def with_client_order_ids(fills: Iterable[FillReport], order_tags: dict[str, str]) -> list[FillReport]:
    """Fills with our id set from their order's tag (Kite trades carry none).

    The ledger links a fill by `broker_order_id` to an order it has seen; a fill of a
    slice whose Kite order was never reported alone has no such link, so it needs our
    id to reach its logical order. Fills of orders without a tag of ours are unchanged.
    """
    return [
        msgspec.structs.replace(fill, client_order_id=order_tags[fill.broker_order_id])
        if fill.client_order_id is None and fill.broker_order_id in order_tags
        else fill
        for fill in fills
    ]


def to_autoslice_placement(raw: bytes | str, *, account: str) -> AutoslicePlacement:
    """The slices placed and refused, from the answer of `place_autoslice_order()`.

    Raises:
        InvalidReport: the payload is malformed, an error envelope, or a child has neither
            `order_id` nor `error`; `field` is the JSON path (`$.data.children[2]`).
    """
    what = "autoslice answer"
    body, prefix = read_body(raw, what=what, account=account)
    answer = decode(_AUTOSLICE, body, what=what, account=account, prefix=prefix)
    placed: list[str] = []
    refused: list[str] = []
    for i, child in enumerate(answer.children):
        if child.order_id:
            placed.append(child.order_id)
        elif child.error is not None:
            refused.append(f"{child.error.error_type or 'error'}: {child.error.message or 'no message'}")
        else:
            path = f"{prefix}.children[{i}]"
            raise invalid(what=what, account=account, path=path, detail="neither order_id nor error")
    return AutoslicePlacement(parent_order_id=answer.order_id, placed=placed, refused=refused)
