"""Identities on Kite payloads: our id (the `tag`) and the instrument symbol. Pure: no clock, no I/O.

Kite has no client order id. Ours travels as the order's `tag` (1-20 [A-Za-z0-9]); Kite
neither enforces its uniqueness nor lets us look an order up by it, and it adds tags of
its own (`mktp`, `autoslice`, `autoslice:<parent order id>`) to `tags`. One tag may name
several Kite orders (autoslice children, iceberg legs): see `group_by_tag`.

Symbols: `instrument_symbol` is `f"{exchange}:{tradingsymbol}:{product}"` (`"NSE:SBIN:CNC"`),
Kite's position key, used by every report so fills net into the position Kite reports;
`split_symbol` inverts it.

Re-exported by `translate.py`, whose order reports carry `our_tag` as `client_order_id`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from trueup.adapters.base import CLIENT_ORDER_ID
from trueup.adapters.kite.wire import KiteOrder
from trueup.domain.reports import OrderReport

__all__ = [
    "KITE_SYSTEM_TAGS",
    "TagPredicate",
    "group_by_tag",
    "instrument_symbol",
    "is_our_tag",
    "is_slice",
    "our_tag",
    "split_symbol",
    "symbol_part_problem",
]

TagPredicate = Callable[[str], bool]
"""Says whether a tag (already known to have our id format) is one of ours."""

KITE_SYSTEM_TAGS: Final = frozenset({"autoslice", "mktp"})
"""Tags Kite adds itself that happen to fit our id format (compared case-insensitively).

Seen in `orders.json`: `["mktp", "mktp:2.00"]` (market protection) and
`["autoslice", "autoslice:<parent order id>"]` (autoslice children); the `:` forms never
fit our format. Without this list every market-protected order would look like one
logical order of ours named "mktp".
"""


def is_our_tag(tag: str, *, is_ours: TagPredicate | None = None) -> bool:
    """Whether `tag` is one of our ids: 1-20 [A-Za-z0-9] and `is_ours(tag)`.

    The default `is_ours` accepts any tag of that format except `KITE_SYSTEM_TAGS`. Pass
    a stricter one (e.g. the engine's prefix) to tell our orders from
    tags a person typed in Kite's web or mobile app.
    """
    if not CLIENT_ORDER_ID.fullmatch(tag):  # fullmatch: "$" alone would let "AB1\n" through
        return False
    if is_ours is None:
        return tag.lower() not in KITE_SYSTEM_TAGS
    return is_ours(tag)


def our_tag(order: KiteOrder, *, is_ours: TagPredicate | None = None) -> str | None:
    """Our id on a Kite order: `tag` if it is ours (`is_our_tag`), else the first of `tags` that is.

    None means the order is external (placed without an id of ours, e.g. from Kite's own
    apps): `orders.json` has `tag: null` with `tags: ["mktp", "mktp:2.00"]`, and
    `tag: "connect test order1"` (spaces: not our format).
    """
    candidates = [order.tag] if order.tag is not None else []
    candidates.extend(order.tags or ())
    return next((t for t in candidates if is_our_tag(t, is_ours=is_ours)), None)


def is_slice(order: KiteOrder) -> bool:
    """Whether a Kite order is one slice of a larger order: an autoslice child or an iceberg leg.

    Autoslice children carry Kite's `autoslice` and `autoslice:<parent id>` tags
    (`orders.json`); iceberg legs carry `meta.iceberg`. A slice's quantity, fills and
    status describe that slice only, never the logical order its tag names.
    """
    if order.meta is not None and order.meta.iceberg is not None:
        return True
    return any(t.lower() == "autoslice" or t.lower().startswith("autoslice:") for t in order.tags or ())


def group_by_tag(reports: Iterable[OrderReport]) -> dict[str, list[OrderReport]]:
    """Order reports grouped by our id (`client_order_id`); external orders (None) are left out.

    One tag may map to several Kite `order_id`s: the children of an autoslice order (each
    a separate order, `place_autoslice_order` returns their ids) and the legs of an iceberg
    order (`meta.iceberg.leg/legs`). The ledger aggregates such a group as one logical
    order; this only groups. Groups and the reports in each keep the input order (first
    appearance of a tag first).
    """
    groups: dict[str, list[OrderReport]] = {}
    for report in reports:
        if report.client_order_id is not None:
            groups.setdefault(report.client_order_id, []).append(report)
    return groups


def symbol_part_problem(value: str) -> str | None:
    """Why `value` cannot be a part of an `instrument_symbol`, or None if it can."""
    if not value.strip():
        return f"must be a non-empty string, got {value!r}"
    if ":" in value:
        return f"must not contain ':' (the symbol separator), got {value!r}"
    return None


def instrument_symbol(exchange: str, tradingsymbol: str, product: str) -> str:
    """The trueup symbol of a Kite instrument and product: `"NSE:SBIN:CNC"`.

    Kite's position key is (exchange, tradingsymbol, product); orders, trades and
    positions all use this one string, so fills net into the position Kite reports.

    Raises:
        ValueError: a part is empty or contains `:`.
    """
    for name, value in (("exchange", exchange), ("tradingsymbol", tradingsymbol), ("product", product)):
        problem = symbol_part_problem(value)
        if problem is not None:
            msg = f"{name} {problem}"
            raise ValueError(msg)
    return f"{exchange}:{tradingsymbol}:{product}"


def split_symbol(symbol: str) -> tuple[str, str, str]:
    """`(exchange, tradingsymbol, product)` of a symbol made by `instrument_symbol`.

    Raises:
        ValueError: `symbol` is not three non-empty parts separated by `:`.
    """
    parts = symbol.split(":")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        msg = f"a Kite symbol is 'EXCHANGE:TRADINGSYMBOL:PRODUCT', got {symbol!r}"
        raise ValueError(msg)
    exchange, tradingsymbol, product = parts
    return exchange, tradingsymbol, product
