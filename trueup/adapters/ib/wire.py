"""The stored form of what ib_async hands us: its objects as JSON, before any translation.

ib_async delivers Python objects (`Trade`, `Fill`, `Position`), not payloads. To store
the raw evidence before translating it (every raw broker payload is stored before it is
translated, so a report that cannot be read is kept, not lost), the client copies each
object it receives into the wire structs below, keeping ib_async's own attribute names,
and encodes them as JSON. The
translator decodes the same JSON back into these structs and reads them exactly as it
reads the live objects (`translate.py` is duck-typed), so a stored payload translates
to the same reports as the object did, and replaying the log needs no ib_async.

Copying reads attributes only (no ib_async import). Numbers keep their ib_async types:
floats stay floats through JSON (msgspec writes the shortest repr that round-trips, so
`187.43` comes back as `187.43`); `UNSET_DOUBLE` (1.7976931348623157e308) and
`UNSET_INTEGER` (2147483647) travel as they are and mean "unknown" to the translator;
a NaN or an infinity becomes `null` (unknown). A missing attribute is copied as its
ib_async default, so an object of another ib_async version still encodes.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

import msgspec

__all__ = [
    "CommissionReportWire",
    "ContractWire",
    "ErrorWire",
    "ExecutionWire",
    "FillWire",
    "IbEnvelope",
    "LogEntryWire",
    "OrderStatusWire",
    "OrderWire",
    "PositionWire",
    "TradeWire",
    "envelope_decoder",
    "fill_wire",
    "position_wire",
    "trade_wire",
]

IB_UNSET_DOUBLE: Final = 1.7976931348623157e308
"""ib_async's `UNSET_DOUBLE` (`sys.float_info.max`): the default of fields it leaves unset."""


class ContractWire(msgspec.Struct, kw_only=True):
    """`ib_async.Contract`: the fields that name the instrument."""

    conId: int = 0  # noqa: N815 - ib_async's attribute names, kept so the translator reads both
    symbol: str = ""
    secType: str = ""  # noqa: N815
    exchange: str = ""
    primaryExchange: str = ""  # noqa: N815
    currency: str = ""
    localSymbol: str = ""  # noqa: N815
    lastTradeDateOrContractMonth: str = ""  # noqa: N815
    multiplier: str = ""


class OrderWire(msgspec.Struct, kw_only=True):
    """`ib_async.Order`: ids, terms and (for completed orders) the filled quantity."""

    orderId: int = 0  # noqa: N815
    clientId: int = 0  # noqa: N815
    permId: int = 0  # noqa: N815
    parentPermId: int | None = None  # noqa: N815
    action: str = ""
    totalQuantity: float | None = 0.0  # noqa: N815
    orderType: str = ""  # noqa: N815
    lmtPrice: float | None = None  # noqa: N815
    auxPrice: float | None = None  # noqa: N815
    tif: str = ""
    account: str = ""
    orderRef: str = ""  # noqa: N815
    filledQuantity: float | None = IB_UNSET_DOUBLE  # noqa: N815


class OrderStatusWire(msgspec.Struct, kw_only=True):
    """`ib_async.OrderStatus`: the last status and cumulative fill progress."""

    orderId: int = 0  # noqa: N815
    status: str = ""
    filled: float | None = 0.0
    remaining: float | None = 0.0
    avgFillPrice: float | None = 0.0  # noqa: N815
    permId: int = 0  # noqa: N815
    parentId: int = 0  # noqa: N815
    lastFillPrice: float | None = 0.0  # noqa: N815
    clientId: int = 0  # noqa: N815
    whyHeld: str = ""  # noqa: N815


class LogEntryWire(msgspec.Struct, kw_only=True):
    """`ib_async.TradeLogEntry` without its local time: the status it recorded and why."""

    status: str = ""
    message: str = ""
    errorCode: int = 0  # noqa: N815


class TradeWire(msgspec.Struct, kw_only=True):
    """`ib_async.Trade` (fills left out: they travel as `FillWire`)."""

    contract: ContractWire
    order: OrderWire
    orderStatus: OrderStatusWire  # noqa: N815
    log: list[LogEntryWire] = msgspec.field(default_factory=list)
    advancedError: str = ""  # noqa: N815


class ExecutionWire(msgspec.Struct, kw_only=True):
    """`ib_async.Execution`: one execution (or one revision of it)."""

    execId: str = ""  # noqa: N815
    time: datetime | None = None
    acctNumber: str = ""  # noqa: N815
    exchange: str = ""
    side: str = ""
    shares: float | None = 0.0
    price: float | None = 0.0
    permId: int = 0  # noqa: N815
    clientId: int = 0  # noqa: N815
    orderId: int = 0  # noqa: N815
    cumQty: float | None = 0.0  # noqa: N815
    avgPrice: float | None = 0.0  # noqa: N815
    orderRef: str = ""  # noqa: N815


class CommissionReportWire(msgspec.Struct, kw_only=True):
    """`ib_async.CommissionReport`; `execId` is "" on the blank report ib_async starts a fill with."""

    execId: str = ""  # noqa: N815
    commission: float | None = 0.0
    currency: str = ""
    realizedPNL: float | None = 0.0  # noqa: N815


class FillWire(msgspec.Struct, kw_only=True):
    """`ib_async.Fill` (its local receipt `time` left out: `execution.time` is the event time)."""

    contract: ContractWire
    execution: ExecutionWire
    commissionReport: CommissionReportWire | None = None  # noqa: N815


class PositionWire(msgspec.Struct, kw_only=True):
    """`ib_async.Position`: one account's holding of one contract."""

    account: str = ""
    contract: ContractWire
    position: float | None = 0.0
    avgCost: float | None = 0.0  # noqa: N815


class ErrorWire(msgspec.Struct, kw_only=True):
    """`IB.errorEvent(reqId, errorCode, errorString, contract)`."""

    reqId: int = 0  # noqa: N815
    errorCode: int = 0  # noqa: N815
    errorString: str = ""  # noqa: N815


class IbEnvelope(msgspec.Struct, kw_only=True):
    """One ib_async event as stored: which event, when it arrived, and the objects it carried."""

    event: str
    """The `IB` event: orderStatus, openOrder, execDetails, commissionReport, position,
    error, connected or disconnected."""
    received_at: datetime
    """When the client received it (tz-aware UTC): the time of an order report."""
    local: bool = False
    """True when ib_async emitted it inside our own `placeOrder`/`cancelOrder` call, i.e.
    the status was set by ib_async itself, not reported by TWS."""
    trade: TradeWire | None = None
    fill: FillWire | None = None
    position: PositionWire | None = None
    error: ErrorWire | None = None
    unreadable: str | None = None
    """Set instead of the objects when copying them failed: the error, so the stored
    payload still says what arrived (and its translation fails loudly)."""


_ENVELOPE_DECODER: Final = msgspec.json.Decoder(IbEnvelope)


def envelope_decoder() -> msgspec.json.Decoder[IbEnvelope]:
    """The shared decoder of stored envelopes."""
    return _ENVELOPE_DECODER


# --- copying ib_async objects (duck-typed) --------------------------------------------------


def _value(obj: object, name: str, default: Any) -> Any:  # noqa: ANN401 - an ib_async attribute
    """`obj.name` as JSON can carry it: NaN/inf become None (unknown); missing is the default."""
    value = getattr(obj, name, default)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _copy(struct: type[msgspec.Struct], obj: object, **override: Any) -> Any:  # noqa: ANN401
    """A wire struct from the same-named attributes of `obj` (defaults where absent)."""
    fields: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct):
        if field.name in override:
            continue
        default = field.default if field.default is not msgspec.NODEFAULT else None
        if field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        fields[field.name] = _value(obj, field.name, default)
    fields.update(override)
    return msgspec.convert(fields, struct, from_attributes=True, strict=False)


def _time(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def trade_wire(trade: object) -> TradeWire:
    """Copy an `ib_async.Trade`."""
    log = [_copy(LogEntryWire, entry) for entry in getattr(trade, "log", None) or []]
    return TradeWire(
        contract=_copy(ContractWire, getattr(trade, "contract", None)),
        order=_copy(OrderWire, getattr(trade, "order", None)),
        orderStatus=_copy(OrderStatusWire, getattr(trade, "orderStatus", None)),
        log=log,
        advancedError=str(getattr(trade, "advancedError", "") or ""),
    )


def fill_wire(fill: object) -> FillWire:
    """Copy an `ib_async.Fill` (with its commission report, blank or merged)."""
    execution = getattr(fill, "execution", None)
    report = getattr(fill, "commissionReport", None)
    return FillWire(
        contract=_copy(ContractWire, getattr(fill, "contract", None)),
        execution=_copy(ExecutionWire, execution, time=_time(getattr(execution, "time", None))),
        commissionReport=None if report is None else _copy(CommissionReportWire, report),
    )


def position_wire(position: object) -> PositionWire:
    """Copy an `ib_async.Position`."""
    return PositionWire(
        account=str(getattr(position, "account", "")),
        contract=_copy(ContractWire, getattr(position, "contract", None)),
        position=_value(position, "position", None),
        avgCost=_value(position, "avgCost", None),
    )
