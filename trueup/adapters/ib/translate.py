"""Pure translation of ib_async objects into trueup reports.

ib_async objects in (`Trade`, `Fill`, `Position`, read duck-typed: only the attributes
named below are used, so any object with them works), context as arguments, reports
out: no clock, no I/O, no ib_async import at run time (its types are named under
`TYPE_CHECKING` only). A malformed object raises `InvalidReport` whose `field` is the
attribute path of the bad value (`trade.orderStatus.filled`, `fill.execution.side`,
`trade.log[-1].errorCode`). The attribute-path readers (`Reader`, `UNSET_DOUBLE`,
`UNSET_INTEGER`) are in `reading.py`; the constants are re-exported here.

Objects:

* `Trade(contract, order, orderStatus, fills, log, advancedError)` -> `to_order_report`;
* `Fill(contract, execution, commissionReport, time)` -> `to_fill_report`;
* `Position(account, contract, position, avgCost)` -> `to_position_report`.

Decisions:

* Numbers: IB sends floats (`filled=40.0`, `price=187.43`). Each becomes a `Decimal` from
  `str()` of the float, i.e. Python's shortest repr that round-trips (`187.43` ->
  `Decimal("187.43")`, not the binary expansion `Decimal(187.43)` gives). Ints and
  Decimals are taken as they are. `UNSET_DOUBLE` (`sys.float_info.max`, IB's "no value")
  means unknown: it becomes None, or a refusal where a number is required, never a
  number. NaN, infinities and bools are refused.
* Our id: `orderRef` (order and execution) is our `client_order_id` only if it has the
  shape we send, 1-20 characters `[A-Za-z0-9]`; anything else (a manual
  order's `""`, another tool's `"ENG-ref-1"`) is None, so a foreign ref can never be
  taken for one of ours. `broker_order_id` is `str(permId)`, None while `permId` is 0.
* Symbols: `contract.localSymbol` when set, else `contract.symbol`, in every translator.
  `localSymbol` is the exchange's own name of the instrument (`ESM4`, not the root
  `ES`) and so tells futures expiries apart; the two are equal for US stocks. Kept
  verbatim (no trimming, no case folding).
* Accounts: a non-empty account on the object (`order.account`, `execution.acctNumber`,
  `position.account`) must equal `account`; `reqPositions` lists every account, so the
  caller filters before translating.
* Times: converted to UTC; a naive time is refused. Order reports take `ts_event` from
  the caller (an ib_async `Trade` holds its current state, not the time it began to hold);
  fills use `execution.time` (IB's execution time, not `Fill.time`, the local receipt
  time); positions use the caller's `as_of`.
* Statuses: `IB_STATUS` plus the refinements in `to_order_status`. Statuses ib_async
  makes up locally (`PendingSubmit`, `PendingCancel`, `ValidationError`, and a
  `Cancelled` it set on an error) come out with source CLIENT whatever the caller passed,
  so the ledger records only their flags (UNCONFIRMED_TERMINAL for a terminal) until TWS
  or `reqCompletedOrders` confirms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from trueup.adapters.ib.reading import UNSET_DOUBLE, UNSET_INTEGER, Reader, our_id, utc
from trueup.adapters.payloads import PayloadReader
from trueup.domain.money import MONEY, derived_price
from trueup.domain.order import exec_key
from trueup.domain.reports import FillReport, OrderReport, PositionReport
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource, Side

if TYPE_CHECKING:
    from ib_async import Fill, Position, Trade

__all__ = [
    "IB_CLIENT_STATUSES",
    "IB_EXEC_SIDE",
    "IB_ORDER_SIDE",
    "IB_STATUS",
    "IB_STATUS_FLAGS",
    "UNSET_DOUBLE",
    "UNSET_INTEGER",
    "IbStatus",
    "average_price",
    "to_fill_report",
    "to_order_report",
    "to_order_status",
    "to_position_report",
    "to_position_reports",
]

# --- tables -------------------------------------------------------------------------------

IB_STATUS: Final[dict[str, OrderStatus]] = {
    "ApiPending": OrderStatus.PENDING_NEW,  # not yet sent to the IB server (rare)
    "PendingSubmit": OrderStatus.PENDING_NEW,  # set by ib_async in placeOrder, before sending
    "PreSubmitted": OrderStatus.ACCEPTED,  # held/simulated at IB (+HELD)
    "Submitted": OrderStatus.ACCEPTED,  # working; PARTIALLY_FILLED / FILLED by fill progress
    "ApiUpdate": OrderStatus.ACCEPTED,  # ib_async constant, origin undocumented: as Submitted
    "ValidationError": OrderStatus.ACCEPTED,  # ib_async: a warning on a live order, no rank change
    "PendingCancel": OrderStatus.ACCEPTED,  # cancel requested, fills still possible (+CANCEL_PENDING)
    "ApiCancelled": OrderStatus.CANCELED,
    "Cancelled": OrderStatus.CANCELED,  # REJECTED when ib_async set it on an error other than 202
    "Filled": OrderStatus.FILLED,
    "Inactive": OrderStatus.REJECTED,  # provisional; ACCEPTED (+HELD) when whyHeld == "locate"
}
"""ib_async `OrderStatus.status` -> normalized status; anything else is UNKNOWN.

ACCEPTED entries are refined by fill progress in `to_order_status`.
"""

IB_STATUS_FLAGS: Final[dict[str, frozenset[OrderFlag]]] = {
    "PreSubmitted": frozenset({OrderFlag.HELD}),
    "PendingCancel": frozenset({OrderFlag.CANCEL_PENDING}),
}
"""Flags a raw status sets; statuses not listed set none (see `to_order_status` for the rest)."""

IB_CLIENT_STATUSES: Final[frozenset[str]] = frozenset({"PendingSubmit", "PendingCancel", "ValidationError"})
"""Statuses ib_async sets itself (TWS never sends PendingSubmit or ValidationError; a PendingCancel
from TWS looks the same on the Trade): always reported with source CLIENT."""

IB_ORDER_SIDE: Final[dict[str, Side]] = {"BUY": Side.BUY, "SELL": Side.SELL, "SSHORT": Side.SELL}
"""`Order.action` -> side; SSHORT (institutional short sale) sells. Anything else is refused."""

IB_EXEC_SIDE: Final[dict[str, Side]] = {"BOT": Side.BUY, "SLD": Side.SELL}
"""`Execution.side` -> side. Anything else is refused."""

_CANCEL_CONFIRMED_CODE: Final = 202
"""TWS error 202 "Order Canceled - reason:": a cancel, not a rejection."""

_LOCATE_WARNING_CODE: Final = 404
"""TWS warning 404: order held while securities are located (the order stays live)."""

_ORDER_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "order.orderRef",
    "quantity": "order.totalQuantity",
    "avg_price": "orderStatus.avgFillPrice",
    "limit_price": "order.lmtPrice",
}
"""OrderReport field -> Trade attribute path (filled_qty is added per trade: live or completed)."""

_FILL_FIELDS: Final[dict[str, str]] = {
    "client_order_id": "execution.orderRef",
    "exec_id": "execution.execId",
    "qty": "execution.shares",
    "price": "execution.price",
    "ts_event": "execution.time",
    "commission": "commissionReport.commission",
}
_POSITION_FIELDS: Final[dict[str, str]] = {"qty": "position", "avg_cost": "avgCost"}


# --- errors (attribute paths are read by `reading.Reader`) --------------------------------


_PAYLOADS: Final = PayloadReader("ib")
"""Turns whatever a bad ib_async object makes a translator raise into InvalidReport."""


# --- statuses -----------------------------------------------------------------------------


class IbStatus(NamedTuple):
    """A normalized status, its flags, and whether ib_async made it up locally (source CLIENT)."""

    status: OrderStatus
    """Normalized status (UNKNOWN for an unmapped string)."""
    flags: frozenset[OrderFlag]
    """Flags the raw status sets."""
    client_side: bool
    """True when ib_async set the status without TWS saying so: report it with source CLIENT."""


def to_order_status(
    raw_status: str,
    *,
    filled: Decimal,
    remaining: Decimal | None,
    why_held: str = "",
    error_code: int = 0,
) -> IbStatus:
    """Normalized status of an ib_async order status, refined by fill progress and the error log.

    `filled`/`remaining` are cumulative (`remaining` None when unknown); `error_code` is the
    `errorCode` of the trade's last log entry if that entry recorded this status, else 0.

    1. Unknown string -> UNKNOWN (the report changes nothing; raw kept).
    2. `PendingSubmit` -> PENDING_NEW, client-side (ib_async sets it before sending).
    3. `Submitted` / `ApiUpdate`: FILLED once `remaining == 0` with `filled > 0` (TWS does
       not always send `Filled` for market orders), else ACCEPTED / PARTIALLY_FILLED.
    4. `PreSubmitted`: ACCEPTED / PARTIALLY_FILLED, +HELD.
    5. `ValidationError` (a warning on a live order) and `PendingCancel` (a cancel request):
       the working status by fill progress, client-side; the ledger records only their
       flags (CANCEL_PENDING; HELD for warning 404, the locate hold).
    6. `Cancelled` with an error code: ib_async set it on a TWS error, client-side.
       202 is a cancel (CANCELED); any other code (201, 103, 110, 200, 460, ...) a
       rejection (REJECTED). Without an error code it is TWS's own confirmation: CANCELED.
    7. `Inactive`: ACCEPTED / PARTIALLY_FILLED +HELD when `why_held == "locate"` (the short
       sale waits for a locate and stays live); else REJECTED.
    8. Otherwise the table entry (`ApiPending`, `ApiCancelled`, `Filled`).
    """
    # 1.
    base = IB_STATUS.get(raw_status)
    if base is None:
        return IbStatus(OrderStatus.UNKNOWN, frozenset(), client_side=False)
    flags = IB_STATUS_FLAGS.get(raw_status, frozenset())
    client_side = raw_status in IB_CLIENT_STATUSES
    working = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
    # 2. and 8. fall through to the table entry.
    # 3.
    if raw_status in {"Submitted", "ApiUpdate"}:
        done = filled > 0 and remaining is not None and remaining == 0
        return IbStatus(OrderStatus.FILLED if done else working, flags, client_side)
    # 4. and 5.
    if raw_status in {"PreSubmitted", "PendingCancel", "ValidationError"}:
        if raw_status == "ValidationError" and error_code == _LOCATE_WARNING_CODE:
            flags = frozenset({OrderFlag.HELD})
        return IbStatus(working, flags, client_side)
    # 6.
    if raw_status == "Cancelled" and error_code:
        status = OrderStatus.CANCELED if error_code == _CANCEL_CONFIRMED_CODE else OrderStatus.REJECTED
        return IbStatus(status, flags, client_side=True)
    # 7.
    if raw_status == "Inactive" and why_held == "locate":
        return IbStatus(working, frozenset({OrderFlag.HELD}), client_side)
    return IbStatus(base, flags, client_side)


_FILL_LOG_PREFIX: Final = "Fill "
"""ib_async logs each execution as `TradeLogEntry(time, <current status>, "Fill 4.0@100.0")`."""


def _last_error_code(r: Reader, raw_status: str) -> int:
    """`errorCode` of the log entry that set the current status if it recorded `raw_status`, else 0.

    ib_async logs `TradeLogEntry(time, status, message, errorCode)` for each status it sets;
    only its `error()` handler fills `errorCode`. A later TWS status appends a new entry
    without a code, so a code on the last status entry means ib_async's own status still
    stands. Entries that record executions ("Fill 4.0@100.0", logged under whatever the
    status was) set no status and are skipped: a fill on an order ib_async cancelled
    locally must not make its `Cancelled` look confirmed.
    """
    log = r.get("log")
    if not isinstance(log, Sequence) or isinstance(log, str):
        error = r.fail("log", f"must be a list of TradeLogEntry, got {log!r}")
        raise error
    for back in range(1, len(log) + 1):
        entry = Reader(log[-back], f"{r.name}.log[-{back}]", what=r.what, account=r.account)
        if entry.text("message").startswith(_FILL_LOG_PREFIX):
            continue
        if entry.text("status") != raw_status:
            return 0
        return entry.integer("errorCode")
    return 0


# --- orders -------------------------------------------------------------------------------


@_PAYLOADS.translator
def to_order_report(
    trade: Trade,
    *,
    account: str,
    ts_event: datetime,
    source: ReportSource,
    local: bool = False,
) -> OrderReport:
    """The order report of an ib_async `Trade` (live, from `reqOpenOrders`, or completed).

    `source` says where the caller got the trade (BROKER for an event, RECONCILE for a
    query answer); statuses ib_async made up locally are reported with source CLIENT
    instead (see `to_order_status`), and so is every status when `local` is True: the
    event was emitted inside our own `placeOrder`/`cancelOrder` call (ib_async marks a
    cancelled unsent order `Cancelled` at once, without an error code to tell).
    A completed order (`reqCompletedOrders`) has
    `orderStatus.filled == 0`: its cumulative fill is `order.filledQuantity` and its
    average price is unknown (ib_async keeps neither `avgFillPrice` nor the `OrderState`
    with `completedStatus` on the Trade). `avg_price` is None without fills or when
    `avgFillPrice` is UNSET_DOUBLE; `limit_price` is None for MKT orders and when
    `lmtPrice` is unset, None or 0 (IB's value for "no limit").

    Raises:
        InvalidReport: an attribute is missing or malformed; `field` is its path
            (`trade.order.totalQuantity`), or the argument's name.
    """
    r = Reader(trade, "trade", what="order", account=account)
    raw_status = r.text("orderStatus.status")
    r.check_account("order.account")
    symbol = r.symbol("contract")
    side = r.side("order.action", IB_ORDER_SIDE)
    quantity = r.required_number("order.totalQuantity")
    fields = dict(_ORDER_FIELDS)
    filled = r.required_number("orderStatus.filled")
    fields["filled_qty"] = "orderStatus.filled"
    completed = False
    if filled == 0:
        completed_filled = r.number("order.filledQuantity")  # UNSET_DOUBLE on live orders
        if completed_filled is not None:
            filled, completed = completed_filled, True
            fields["filled_qty"] = "order.filledQuantity"
    status = to_order_status(
        raw_status,
        filled=filled,
        remaining=None if completed else r.number("orderStatus.remaining"),
        why_held=r.text("orderStatus.whyHeld"),
        error_code=_last_error_code(r, raw_status),
    )
    avg_price = None if completed or filled == 0 else r.number("orderStatus.avgFillPrice")
    limit_price = None if r.text("order.orderType") == "MKT" else r.number("order.lmtPrice")
    perm_id = r.perm_id("order.permId", "orderStatus.permId")
    with r.located(fields):
        return OrderReport(
            account=account,
            client_order_id=our_id(r.text("order.orderRef")),
            broker_order_id=perm_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            status=status.status,
            filled_qty=filled,
            avg_price=avg_price,
            ts_event=utc(ts_event),
            raw_status=raw_status,
            limit_price=limit_price or None,
            source=ReportSource.CLIENT if status.client_side or local else source,
            flags=status.flags,
        )


# --- fills --------------------------------------------------------------------------------


def _commission(r: Reader, exec_id: str) -> Decimal | None:
    """The commission of this execution, or None when not known yet.

    ib_async builds every Fill with a blank `CommissionReport()` (`execId=""`,
    `commission=0.0`) and merges the real report into it when TWS sends one, joined by
    `execId`. So the commission is known only when the report's `execId` is this
    execution's and the value is not UNSET_DOUBLE; a 0.0 under a matching `execId` is a
    real zero commission (TWS sent it), a 0.0 under `execId=""` is ib_async's blank.
    """
    if r.get("commissionReport") is None:
        return None
    if r.text("commissionReport.execId") != exec_id:
        return None
    return r.number("commissionReport.commission")


@_PAYLOADS.translator
def to_fill_report(fill: Fill, *, account: str) -> FillReport:
    """The fill report of an ib_async `Fill` (live `execDetails` or `reqExecutions` answer).

    `exec_id` is `execution.execId` verbatim: a correction (`...01.01` -> `...01.02`)
    arrives as a new fill and the ledger replaces the earlier revision (`exec_key`).
    `qty`/`price` are this execution's (`shares`, `price`), not the cumulative ones;
    `ts_event` is `execution.time`.

    Raises:
        InvalidReport: an attribute is missing or malformed; `field` is its path
            (`fill.execution.side`).
    """
    r = Reader(fill, "fill", what="fill", account=account)
    exec_id = r.text("execution.execId", required=True)
    r.check_account("execution.acctNumber")
    perm_id = r.perm_id("execution.permId")
    with r.located(_FILL_FIELDS):
        return FillReport(
            account=account,
            client_order_id=our_id(r.text("execution.orderRef")),
            broker_order_id=perm_id,
            exec_id=exec_id,
            symbol=r.symbol("contract"),
            side=r.side("execution.side", IB_EXEC_SIDE),
            qty=r.required_number("execution.shares"),
            price=r.required_number("execution.price"),
            ts_event=r.time("execution.time"),
            commission=_commission(r, exec_id),
        )


# --- positions ----------------------------------------------------------------------------


@_PAYLOADS.translator
def to_position_report(position: Position, *, account: str, as_of: datetime) -> PositionReport:
    """The position report of an ib_async `Position` row (`reqPositions`, `positionEvent`).

    `qty` is `position` with its sign (short < 0). Size-0 rows (which `reqPositions`
    lists) are kept as qty 0: they say the broker is flat. `avg_cost` is `avgCost` per
    unit of price: IB gives it per contract, the multiplier included (ES: 250,012.5 for
    a 5,000.25 price at 50), so it is divided by `contract.multiplier` when one is set.
    It still includes commissions, so it is marked not comparable with trueup's
    price-only average (never booked as a price or cost basis); an unset `avgCost` is
    accepted only on a flat row (as 0). `ts_event` is `as_of`.

    Raises:
        InvalidReport: an attribute is missing or malformed, or the row is another
            account's; `field` is its path (`position.account`).
    """
    r = Reader(position, "position", what="position", account=account)
    r.check_account("account", required=True)
    qty = r.required_number("position")
    avg_cost = r.number("avgCost")
    if avg_cost is None:
        if qty != 0:
            error = r.fail("avgCost", f"is unset on a non-flat position of {qty}")
            raise error
        avg_cost = Decimal(0)
    multiplier = _multiplier(r)
    if multiplier != 1:
        avg_cost = derived_price(avg_cost, multiplier)
    with r.located(_POSITION_FIELDS):
        return PositionReport(
            account=account,
            symbol=r.symbol("contract"),
            qty=qty,
            avg_cost=avg_cost,
            ts_event=utc(as_of),
            avg_cost_comparable=False,
        )


def _multiplier(r: Reader) -> Decimal:
    """`contract.multiplier` ("50" for ES, "" for stocks) as a Decimal; 1 when unset."""
    raw = getattr(getattr(r.root, "contract", None), "multiplier", "")  # absent on older objects
    text = "" if raw is None else str(raw).strip()
    if not text or text in {"0", "0.0"}:  # ib_async's "no multiplier"
        return Decimal(1)
    path = "contract.multiplier"
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise r.fail(path, f"must be a number, got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise r.fail(path, f"must be > 0, got {text!r}")
    return value


@_PAYLOADS.translator
def to_position_reports(
    positions: Iterable[Position], *, account: str, as_of: datetime
) -> list[PositionReport]:
    """One report per symbol of `account` from `reqPositions` rows (all accounts, one row per contract).

    IB keeps positions per account, not per venue: rows of other accounts are skipped,
    and rows of one account naming the same symbol (which `to_position_report` reads
    from `localSymbol`) are netted into one signed quantity with the quantity-weighted
    average cost. Size-0 rows stay as qty 0 (the broker says flat).

    Raises:
        InvalidReport: a row of `account` is malformed.
    """
    netted: dict[str, PositionReport] = {}
    for row in positions:
        if getattr(row, "account", None) != account:
            continue
        report = to_position_report(row, account=account, as_of=as_of)
        seen = netted.get(report.symbol)
        if seen is None:
            netted[report.symbol] = report
            continue
        with localcontext(MONEY):
            qty = seen.qty + report.qty
            cost = seen.qty * seen.avg_cost + report.qty * report.avg_cost
        avg = derived_price(cost, qty) if qty else Decimal(0)
        netted[report.symbol] = msgspec.structs.replace(seen, qty=qty, avg_cost=avg)
    return list(netted.values())


def average_price(fills: Iterable[FillReport], filled_qty: Decimal) -> Decimal | None:
    """The average price of `fills` (latest revision of each execution) if they add up to `filled_qty`.

    None when they do not (executions missing, or from before midnight): an average of
    part of the fills would misprice the rest.
    """
    latest: dict[str, tuple[int, FillReport]] = {}
    for fill in fills:
        key, revision = exec_key(fill.exec_id)
        if key not in latest or revision > latest[key][0]:
            latest[key] = (revision, fill)
    with localcontext(MONEY):
        qty = sum((f.qty for _, f in latest.values()), Decimal(0))
        cost = sum((f.qty * f.price for _, f in latest.values()), Decimal(0))
    if qty == 0 or qty != filled_qty:
        return None
    return derived_price(cost, qty)
