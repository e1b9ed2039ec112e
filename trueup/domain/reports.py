"""Normalized broker reports: what every adapter translates its payloads into.

Reports are frozen msgspec Structs with `Decimal` quantities and prices and tz-aware
times. A report that breaks an invariant cannot be built: the constructor (and
msgspec decoding) raises `InvalidReport` naming the field, so adapters turn a bad
payload into a clear error instead of a half-valid object.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import msgspec

from trueup.domain.errors import InvalidReport
from trueup.domain.money import MAX_FIGURE
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource, Side


def _check_decimal(
    name: str, value: object, *, positive: bool = False, optional: bool = False, signed: bool = False
) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Decimal):
        msg = f"{name} must be a Decimal, got {type(value).__name__} {value!r}"
        raise InvalidReport(msg, field=name)
    if not value.is_finite():
        msg = f"{name} must be finite, got {value}"
        raise InvalidReport(msg, field=name)
    _check_magnitude(name, value)
    if positive and value <= 0:
        msg = f"{name} must be > 0, got {value}"
        raise InvalidReport(msg, field=name)
    if value < 0 and not signed:
        msg = f"{name} must be >= 0, got {value}"
        raise InvalidReport(msg, field=name)


def _check_magnitude(name: str, value: Decimal) -> None:
    if abs(value) >= MAX_FIGURE:
        msg = f"{name} must be below {MAX_FIGURE} in magnitude, got {value}"
        raise InvalidReport(msg, field=name)


def _check_time(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}"
        raise InvalidReport(msg, field=name)


def _coerce_enum(obj: msgspec.Struct, name: str, enum: type[StrEnum]) -> None:
    # Callers may pass plain strings ("BUY"); store the enum member so `.sign`/`.rank` work.
    value = getattr(obj, name)
    if isinstance(value, enum):
        return
    try:
        msgspec.structs.force_setattr(obj, name, enum(value))
    except ValueError:
        msg = f"{name} must be one of {[m.value for m in enum]}, got {value!r}"
        raise InvalidReport(msg, field=name) from None


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        msg = f"{name} must be a non-empty string, got {value!r}"
        raise InvalidReport(msg, field=name)
    check_storable(name, value)


def check_storable(name: str, value: object) -> None:
    """Refuse text no store can hold as text: NUL (PostgreSQL) and lone surrogates (UTF-8).

    Such a value reaches the read-model tables (symbol, ids) and the discrepancy keys;
    refused here, the payload it came in is kept raw and flagged INVALID_REPORT instead.
    """
    if not isinstance(value, str):
        return
    bad = next((c for c in value if c == "\0" or "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        kind = "a NUL character" if bad == "\0" else f"a lone surrogate U+{ord(bad):04X}"
        msg = f"{name} must be storable text, got {value!r} (contains {kind})"
        raise InvalidReport(msg, field=name)


class OrderReport(msgspec.Struct, frozen=True, tag="order"):
    """The broker's view of one order at `ts_event`, cumulative fill figures included."""

    account: str
    """Broker account the order belongs to."""
    client_order_id: str | None
    """Our id as carried in the broker's field (IB orderRef, Alpaca client_order_id, Kite tag)."""
    broker_order_id: str | None
    """The broker's stable id (IB permId, Alpaca id, Kite order_id)."""
    symbol: str
    """Normalized instrument symbol."""
    side: Side
    """BUY or SELL."""
    quantity: Decimal
    """Total order quantity as the broker has it now (after amendments)."""
    status: OrderStatus
    """Normalized status; UNKNOWN when the raw string is not in the adapter's table."""
    filled_qty: Decimal
    """Cumulative filled quantity reported by the broker."""
    avg_price: Decimal | None
    """Average price of the cumulative fills, if the broker gave one."""
    ts_event: datetime
    """When the broker says this state held (tz-aware)."""
    raw_status: str
    """The broker's status string, verbatim."""
    limit_price: Decimal | None = None
    """Limit price, if any."""
    source: ReportSource = ReportSource.BROKER
    """Who produced the report; CLIENT statuses are intents, not facts."""
    flags: frozenset[OrderFlag] = frozenset()
    """Flags holding at the broker (cancel pending, held, ...)."""
    replaces: str | None = None
    """Broker id of the order this one replaced (Alpaca `replaces`): the ledger chains the two."""
    quantity_basis: str | None = None
    """Set by an adapter whose `quantity` is derived by rule from the broker's own orders
    (Kite: the sum of the slices it holds, an autoslice child refused at placement not
    counted), saying so; such a quantity is taken though no amend was requested."""

    def __post_init__(self) -> None:
        """Refuse a report that breaks an invariant, naming the field."""
        _check_text("account", self.account)
        _check_text("symbol", self.symbol)
        _coerce_enum(self, "side", Side)
        _coerce_enum(self, "status", OrderStatus)
        _coerce_enum(self, "source", ReportSource)
        if not all(isinstance(f, OrderFlag) for f in self.flags):
            try:
                msgspec.structs.force_setattr(self, "flags", frozenset(OrderFlag(f) for f in self.flags))
            except ValueError:
                msg = f"flags must be OrderFlag values, got {sorted(self.flags)!r}"
                raise InvalidReport(msg, field="flags") from None
        if not (self.client_order_id or self.broker_order_id):
            msg = "an order report needs client_order_id or broker_order_id"
            raise InvalidReport(msg, field="client_order_id")
        for name in ("client_order_id", "broker_order_id", "raw_status", "replaces", "quantity_basis"):
            check_storable(name, getattr(self, name))
        _check_decimal("quantity", self.quantity, positive=True)
        _check_decimal("filled_qty", self.filled_qty)
        # Prices may be negative (WTI futures settled at -37.63; calendar spreads): the
        # broker, which knows the instrument, is the judge of that, not the report.
        _check_decimal("avg_price", self.avg_price, optional=True, signed=True)
        _check_decimal("limit_price", self.limit_price, optional=True, signed=True)
        _check_time("ts_event", self.ts_event)


class FillReport(msgspec.Struct, frozen=True, tag="fill"):
    """One execution: `qty` at `price`, identified by the broker's execution id."""

    account: str
    """Broker account."""
    client_order_id: str | None
    """Our id, if the broker echoes it on executions (IB does, Kite trades do not)."""
    broker_order_id: str | None
    """The broker's order id the execution belongs to."""
    exec_id: str
    """Broker execution id: the dedupe key (IB corrections .01 -> .02 replace)."""
    symbol: str
    """Normalized instrument symbol."""
    side: Side
    """BUY or SELL."""
    qty: Decimal
    """Quantity of this execution (not cumulative)."""
    price: Decimal
    """Price of this execution; negative where the instrument trades below zero."""
    ts_event: datetime
    """Execution time at the broker (tz-aware)."""
    commission: Decimal | None = None
    """Commission, when known; None means unknown, never zero."""

    def __post_init__(self) -> None:
        """Refuse a fill that breaks an invariant, naming the field."""
        _check_text("account", self.account)
        _check_text("symbol", self.symbol)
        _check_text("exec_id", self.exec_id)
        _coerce_enum(self, "side", Side)
        if not (self.client_order_id or self.broker_order_id):
            msg = "a fill report needs client_order_id or broker_order_id"
            raise InvalidReport(msg, field="client_order_id")
        check_storable("client_order_id", self.client_order_id)
        check_storable("broker_order_id", self.broker_order_id)
        _check_decimal("qty", self.qty, positive=True)
        _check_decimal("price", self.price, signed=True)
        if self.commission is not None and not isinstance(self.commission, Decimal):
            msg = f"commission must be a Decimal or None, got {self.commission!r}"
            raise InvalidReport(msg, field="commission")
        _check_time("ts_event", self.ts_event)


class PositionReport(msgspec.Struct, frozen=True, tag="position"):
    """The broker's net position in one instrument of one account."""

    account: str
    """Broker account."""
    symbol: str
    """Normalized instrument symbol."""
    qty: Decimal
    """Signed quantity: > 0 long, < 0 short, 0 flat."""
    avg_cost: Decimal
    """Average cost per unit of the open quantity (0 when flat, or when the broker gives none)."""
    ts_event: datetime
    """When the broker says this held (tz-aware)."""
    avg_cost_comparable: bool = True
    """False when the broker's average cost is on another basis than trueup's (fill prices
    only): IB's `avgCost` includes commissions, and the multiplier for derivatives. Then
    reconciliation compares quantities only, instead of warning on every position."""

    def __post_init__(self) -> None:
        """Refuse a position that breaks an invariant, naming the field."""
        _check_text("account", self.account)
        _check_text("symbol", self.symbol)
        if not isinstance(self.qty, Decimal) or not self.qty.is_finite():
            msg = f"qty must be a finite Decimal, got {self.qty!r}"
            raise InvalidReport(msg, field="qty")
        _check_magnitude("qty", self.qty)
        _check_decimal("avg_cost", self.avg_cost, signed=True)
        _check_time("ts_event", self.ts_event)


Report = OrderReport | FillReport | PositionReport
"""Any single broker report `Ledger.ingest` accepts."""


class RawAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """One broker answer a snapshot or a lookup was read from, verbatim, as the client got it."""

    source: str
    """Adapter name ("alpaca", "kite", "ib", "paper")."""
    kind: str
    """The query it answers: "orders", "fills", "positions", "holdings", "lookup", ..."""
    payload: str
    """The answer's text (JSON for REST brokers; IB's objects encoded by the adapter)."""
    error: str | None = None
    """Why it did not translate; None when it did. Such an answer is always stored."""


class LookupAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A broker's answer to a lookup by client id, with the answer it was read from.

    * `report` set: the broker has the order (`raw` is what it said about it);
    * `report` None, `raw.error` None: the broker proved it has none;
    * `report` None, `raw.error` set: the answer did not translate: absence is unknown,
      never "not found" (the answer is kept and reported).
    """

    report: OrderReport | None
    raw: RawAnswer | None = None
    """The answer verbatim (kind "lookup"); None from a port that gives none."""


class BrokerSnapshot(msgspec.Struct, frozen=True):
    """What the broker said at `as_of`; a part that could not be fetched is None, never empty.

    `positions=None` means unknown (STALE_DATA); `positions=[]` means the broker says flat.
    `complete_history` says whether the absence of an order proves it is gone.
    """

    account: str
    """Broker account the snapshot covers."""
    as_of: datetime
    """When the snapshot was taken (tz-aware)."""
    orders: list[OrderReport] | None
    """Orders the broker listed, or None if the query failed."""
    fills: list[FillReport] | None
    """Executions the broker listed, or None if the query failed."""
    positions: list[PositionReport] | None
    """Positions the broker listed, or None if the query failed."""
    complete_history: bool = False
    """True only if `orders` covers every order that could be open here."""
    history_since: datetime | None = None
    """Day-scoped brokers (Kite, IB): `orders` lists every order submitted since this time,
    and none older. An open order of ours it does not list is missing either way: absent
    although in the window, or older than the window, whose outcome the broker can no
    longer tell (flagged as such)."""
    failures: dict[str, str] = msgspec.field(default_factory=dict)
    """Why a part is None, by part name ("orders", "fills", "positions"), in the adapter's words.

    It reaches the STALE_DATA discrepancy and the gate's reasons, so an operator reads
    "access token expired", not just "query failed"."""
    raw: tuple[RawAnswer, ...] = ()
    """The broker's answers the parts were translated from (the same strings the client
    translated, not copies). Reconciliation stores each one verbatim (content-addressed)
    before the snapshot and replaces them by `raw_ids` in the stored snapshot."""
    raw_ids: tuple[str, ...] = ()
    """In a stored snapshot: the ids of the raw-log messages holding its answers."""

    @classmethod
    def unknown(cls, account: str, as_of: datetime, reason: str = "") -> BrokerSnapshot:
        """The snapshot of a broker that could not be asked: every part None (STALE_DATA).

        None, never []: an empty list would say the broker has no orders and is flat.
        `reason` says why (the broker's error), for the discrepancy and the gate.
        """
        failures = dict.fromkeys(("orders", "fills", "positions"), reason) if reason else {}
        return cls(account=account, as_of=as_of, orders=None, fills=None, positions=None, failures=failures)

    def __post_init__(self) -> None:
        """Refuse a snapshot without an account or with a naive time."""
        _check_text("account", self.account)
        _check_time("as_of", self.as_of)
        if self.history_since is not None:
            _check_time("history_since", self.history_since)


REPORT_DECODER = msgspec.json.Decoder(Report)
"""Decodes a stored report (tagged JSON) back into its Struct."""
REPORT_ENCODER = msgspec.json.Encoder(decimal_format="string")
"""Encodes a report as tagged JSON for the raw log."""
