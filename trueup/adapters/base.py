"""The broker adapter port: what every broker client (paper, Alpaca, IB, Kite) provides.

Clients do I/O only; translation is pure and lives in each adapter's translate.py.
Every raw payload reaches the ledger before it is translated (`RawMessage`), so a
payload that fails translation is still stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, TypeVar, runtime_checkable

import msgspec

from trueup.domain.errors import BrokerQueryError, InvalidReport, TrueupError
from trueup.domain.reports import (
    BrokerSnapshot,
    FillReport,
    LookupAnswer,
    OrderReport,
    PositionReport,
    Report,
)
from trueup.domain.status import Side

log = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9]{1,20}$")
"""Our id travels in the broker's own field; Kite's `tag` allows at most 20 [A-Za-z0-9]."""


def check_client_order_id(client_order_id: str) -> None:
    """Refuse an id that would not fit every broker's field (20 chars [A-Za-z0-9])."""
    if not CLIENT_ORDER_ID.match(client_order_id):
        msg = f"client_order_id must be 1-20 characters [A-Za-z0-9] (Kite tag), got {client_order_id!r}"
        raise InvalidReport(msg, field="client_order_id")


SYMBOL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 .:/&_^=+#-]{0,38}[A-Za-z0-9.#])?")
"""What a symbol may be: 1-40 characters as IB, Alpaca and Kite spell them (BRK B, BTC/USD,
NSE:M&M, BAJAJ-AUTO, ES=F), starting with a letter or digit, no surrounding space."""


def check_symbol(symbol: object) -> None:
    """Refuse a symbol no broker lists (empty, control characters, 200 characters, ``'; DROP``)."""
    if not isinstance(symbol, str) or not SYMBOL.fullmatch(symbol):
        msg = (
            "symbol must be 1-40 characters: letters, digits, space and . : / & _ ^ = + # -, "
            f"starting with a letter or digit, got {symbol!r}"
        )
        raise InvalidReport(msg, field="symbol")


def check_side(side: object) -> Side:
    """The side as `Side`; only BUY and SELL, as the report types take them (never "buy").

    Raises:
        InvalidReport: anything else.
    """
    if isinstance(side, Side):
        return side
    try:
        return Side(str(side)) if isinstance(side, str) else Side(None)  # type: ignore[arg-type]
    except ValueError:
        msg = f"side must be one of ['BUY', 'SELL'], got {side!r}"
        raise InvalidReport(msg, field="side") from None


class OrderType(StrEnum):
    """Order types every adapter supports."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A new order as the trading system asks for it."""

    account: str
    client_order_id: str
    """Carried in the broker's field: IB orderRef, Alpaca client_order_id, Kite tag."""
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    strategy: str | None = None
    reduce_only: bool = False


class ReplaceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """New terms for a working order, sent as a new broker order that replaces it (Alpaca)."""

    account: str
    client_order_id: str
    """The new leg's own id (`ReplacingBroker.replace_client_order_id`), recorded before sending."""
    replaces: str
    """Our client id of the working order being replaced."""
    broker_order_id: str
    """The broker's id of the working order being replaced."""
    symbol: str
    side: Side
    quantity: Decimal
    limit_price: Decimal | None = None


class SubmitAck(msgspec.Struct, frozen=True, kw_only=True):
    """The broker took the order."""

    broker_order_id: str
    raw: str
    """The broker's answer, verbatim."""
    report: OrderReport | None = None
    """The order as the answer describes it, when it describes it."""


class SubmitRejected(TrueupError):  # noqa: N818 - names the outcome, like InvalidReport
    """Raised when the broker definitively refused the order (it does not exist there)."""

    def __init__(self, msg: str, *, raw: str = "") -> None:
        """Keep the broker's answer verbatim."""
        super().__init__(msg)
        self.raw = raw


class SubmitUncertain(TrueupError):  # noqa: N818 - names the outcome
    """Raised when the outcome of a submit is unknown (timeout, dropped connection).

    The order may or may not exist at the broker: look it up by client id; never re-send.
    """


class RawMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A payload from the broker's stream, with the pure function that translates it."""

    account: str
    source: str
    """Adapter name."""
    kind: str
    """Channel or endpoint."""
    payload: str
    translate: Callable[[str], Sequence[Report]]


class Reconnected(msgspec.Struct, frozen=True, kw_only=True):
    """The stream reconnected: messages may have been missed, reconcile now."""

    account: str
    source: str


class RefreshNeeded(msgspec.Struct, frozen=True, kw_only=True):
    """The broker signalled changes whose whole truth must be read from it: reconcile now.

    Kite's postbacks and websocket order updates arrive out of order, twice and without
    fills: the adapter stores them and then asks for the order book to be read again.
    """

    account: str
    source: str
    reason: str
    """What triggered it, for logs and counters."""


StreamItem = RawMessage | Reconnected | RefreshNeeded


BROKER_CALL_TIMEOUT = 30.0
"""Default deadline, in seconds, of one broker query (snapshot, lookup) made by trueup.

A query that has not answered by then is a failed query (STALE_DATA, the gate BLOCKED),
never an answer still to come: a hung broker must not freeze the books."""


class UnexpectedBrokerError(BrokerQueryError):
    """A broker call raised what its adapter did not turn into `BrokerQueryError` (a bug, say)."""


async def broker_query(call: Awaitable[T], *, what: str, timeout: float = BROKER_CALL_TIMEOUT) -> T:  # noqa: ASYNC109 - a deadline per broker call is the point
    """Await one broker query with a deadline; any way it fails becomes `BrokerQueryError`.

    A missed deadline, an exception of any type (an SDK's own, an adapter bug) and an
    `asyncio.CancelledError` the call raised by itself (some SDKs do on a dropped
    connection) are all a failed query whose answer is unknown. A cancellation of the
    calling task itself is passed on: that is the caller stopping, not the broker failing.

    Raises:
        BrokerQueryError: the query failed, hung past `timeout`, or was cancelled by the SDK.
        asyncio.CancelledError: the calling task was cancelled.
    """
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError as e:
        msg = f"{what}: no answer within {timeout:g}s"
        raise BrokerQueryError(msg) from e
    except asyncio.CancelledError as e:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: stop, do not turn it into a failed query
        msg = f"{what}: the broker client cancelled the call (connection dropped?)"
        raise BrokerQueryError(msg) from e
    except BrokerQueryError:
        raise
    except Exception as e:
        msg = f"{what} raised {type(e).__name__}: {e}"
        raise UnexpectedBrokerError(msg) from e


async def checked_lookup(
    broker: BrokerClient,
    account: str,
    client_order_id: str,
    *,
    timeout: float = BROKER_CALL_TIMEOUT,  # noqa: ASYNC109 - passed to broker_query
) -> OrderReport | None:
    """`broker.lookup` with a deadline; an answer that is neither None nor our order is a failure.

    Raises:
        BrokerQueryError: the lookup failed, hung, or answered something unusable.
    """
    what = f"lookup of {client_order_id} in {account} at {broker.name}"
    found = await broker_query(broker.lookup(account, client_order_id), what=what, timeout=timeout)
    return _our_order(found, account, what)


async def checked_lookup_answer(
    broker: BrokerClient,
    account: str,
    client_order_id: str,
    *,
    timeout: float = BROKER_CALL_TIMEOUT,  # noqa: ASYNC109 - passed to broker_query
) -> LookupAnswer:
    """`broker.lookup_answer` with a deadline, checked like `checked_lookup`.

    Raises:
        BrokerQueryError: the lookup failed, hung, or answered something unusable.
    """
    if not isinstance(broker, AnsweringLookup):
        msg = f"broker {broker.name!r} does not hand back its lookup answers"
        raise TypeError(msg)
    what = f"lookup of {client_order_id} in {account} at {broker.name}"
    answer = await broker_query(broker.lookup_answer(account, client_order_id), what=what, timeout=timeout)
    if not isinstance(answer, LookupAnswer):
        msg = f"{what} answered a {type(answer).__name__}, not a lookup answer"
        raise BrokerQueryError(msg)
    _our_order(answer.report, account, what)
    return answer


def _our_order(found: object, account: str, what: str) -> OrderReport | None:
    """`found` if it is None or an order report of `account`; else the lookup failed."""
    if found is None:
        return None
    if not isinstance(found, OrderReport):
        msg = f"{what} answered a {type(found).__name__}, not an order report"
        raise BrokerQueryError(msg)
    if found.account != account:
        msg = f"{what} answered an order of account {found.account!r}"
        raise BrokerQueryError(msg)
    return found


_PART_TYPES: dict[str, type] = {"orders": OrderReport, "fills": FillReport, "positions": PositionReport}


def usable_snapshot(snapshot: object, account: str, now: datetime) -> BrokerSnapshot:
    """The snapshot with every part that is not a list of reports of `account` made unknown.

    The one check of what a broker's `snapshot()` handed back: not a `BrokerSnapshot`, or
    one of another account or with a wrong-typed field, is all unknown; a part holding
    anything but its own reports of this account is that part unknown, naming why. An
    unknown part is STALE_DATA and blocks the gate like a failed query, never "empty".
    """
    if not isinstance(snapshot, BrokerSnapshot):
        return BrokerSnapshot.unknown(
            account, now, reason=f"the broker answered a {type(snapshot).__name__}, not a snapshot"
        )
    if snapshot.account != account:
        # Reconciling it would compare one account's books with another's positions.
        return BrokerSnapshot.unknown(
            account, now, reason=f"the broker answered for account {snapshot.account!r}"
        )
    if not isinstance(snapshot.as_of, datetime) or not isinstance(snapshot.complete_history, bool):
        return BrokerSnapshot.unknown(account, now, reason="the broker's snapshot has wrong-typed fields")
    if snapshot.history_since is not None and not isinstance(snapshot.history_since, datetime):
        return BrokerSnapshot.unknown(account, now, reason="the broker's history_since is not a time")
    bad = {part: why for part in _PART_TYPES if (why := _unusable_part(snapshot, part, account))}
    if not isinstance(snapshot.failures, dict):
        bad["failures"] = "the broker's failures are not a mapping"
    if not bad:
        return snapshot
    failures = snapshot.failures if isinstance(snapshot.failures, dict) else {}
    return msgspec.structs.replace(
        snapshot,
        failures={**{str(k): str(v) for k, v in failures.items()}, **bad},
        **{part: None for part in bad if part in _PART_TYPES},
    )


def _unusable_part(snapshot: BrokerSnapshot, part: str, account: str) -> str | None:
    """Why the snapshot's `part` cannot be used (None if it is unknown already, or fine)."""
    items: object = getattr(snapshot, part)
    if items is None:
        return None
    if not isinstance(items, list):
        return f"the broker's {part} are a {type(items).__name__}, not a list"
    kind = _PART_TYPES[part]
    for item in items:
        if not isinstance(item, kind):
            return f"the broker's {part} hold a {type(item).__name__}"
        if getattr(item, "account", None) != account:
            return f"the broker's {part} hold one of account {getattr(item, 'account', None)!r}"
    return None


async def snapshot_or_unknown(
    broker: BrokerClient,
    account: str,
    now: datetime,
    *,
    on_error: Callable[[Exception], object] | None = None,
    timeout: float = BROKER_CALL_TIMEOUT,  # noqa: ASYNC109 - passed to broker_query
) -> BrokerSnapshot:
    """The broker's snapshot, or an all-unknown one (STALE_DATA) if it cannot be had.

    A failed query is never read as "flat" or "no orders": whatever the broker call
    raised (`BrokerQueryError`, or anything else: an adapter bug, an SDK's own
    `CancelledError`), a call with no answer within `timeout` seconds, and an answer that
    is not a usable snapshot of this account (`usable_snapshot`) become parts that are
    None, naming why.

    Args:
        broker: the broker to ask.
        account: the account whose snapshot is wanted.
        now: the time the unknown snapshot is dated.
        on_error: told each failure (to count it), besides the log.
        timeout: seconds the broker has to answer.
    """
    try:
        answer: object = await broker_query(
            broker.snapshot(account), what=f"snapshot of {account} from {broker.name}", timeout=timeout
        )
    except BrokerQueryError as e:
        cause = e.__cause__
        if isinstance(e, UnexpectedBrokerError) and isinstance(cause, Exception):
            # Not a broker failure the adapter expected: an adapter bug, say. Its stack trace.
            log.error("%s; reconciled as STALE_DATA", e, exc_info=cause)  # noqa: TRY400 - the cause's trace
        else:
            # Expected while the broker is down: a warning, not a stack trace per period.
            log.warning("%s; reconciled as STALE_DATA", e)
            cause = e
        if on_error is not None:
            on_error(cause)
        return BrokerSnapshot.unknown(account, now, reason=str(e))
    snapshot = usable_snapshot(answer, account, now)
    if snapshot is not answer:
        log.error(
            "unusable snapshot of %s from %s (%s); reconciled as STALE_DATA",
            account,
            broker.name,
            "; ".join(sorted(set(snapshot.failures.values()))),
        )
        if on_error is not None:
            on_error(ValueError(f"unusable snapshot of {account!r} from {broker.name}"))
    return snapshot


@runtime_checkable
class BrokerClient(Protocol):
    """What trueup needs from a broker. All methods are coroutines; none may hide a failure.

    A query that fails raises `BrokerQueryError`; it is never answered with an empty list.
    """

    name: str

    async def submit(self, request: OrderRequest) -> SubmitAck:
        """Send a new order carrying `request.client_order_id`.

        Raises:
            SubmitRejected: the broker refused it.
            SubmitUncertain: the outcome is unknown.
        """
        ...

    async def cancel(self, account: str, client_order_id: str, broker_order_id: str | None) -> None:
        """Ask the broker to cancel; the outcome arrives as reports.

        Raises:
            BrokerQueryError: the request could not be delivered.
        """
        ...

    async def snapshot(self, account: str) -> BrokerSnapshot:
        """Orders, fills and positions now; a part that failed is None, never empty."""
        ...

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The order carrying our id, or None when the broker proves it has none.

        Raises:
            BrokerQueryError: the broker could not be asked; absence is unknown.
        """
        ...

    def stream(self) -> AsyncIterator[StreamItem]:
        """Raw messages as they arrive, and a `Reconnected` after every reconnect."""
        ...


@runtime_checkable
class DayScopedBroker(Protocol):
    """A broker whose order lists reach back only to a day boundary (Kite, IB Gateway).

    Its `lookup` answering None proves nothing about an order submitted before
    `history_start`: the order may have filled and dropped off the lists since.
    """

    def history_start(self, now: datetime) -> datetime:
        """The earliest submission time the broker's lists still cover, as of `now`."""
        ...


def absence_provable(broker: object, submitted_at: datetime | None, now: datetime) -> bool:
    """Whether the broker not finding an order sent at `submitted_at` proves it was never placed.

    True for brokers whose lookup spans all history; for a day-scoped broker only if the
    order was submitted inside today's window (an unknown submission time proves nothing).
    """
    if not isinstance(broker, DayScopedBroker):
        return True
    return submitted_at is not None and submitted_at >= broker.history_start(now)


@runtime_checkable
class ModifyingBroker(Protocol):
    """A broker that changes a working order's terms in place, keeping its id (Kite).

    The change arrives as reports; callers store the requested terms first
    (`Submitter.modify`), so that the ledger can tell a requested change from one nobody made.
    """

    async def modify(
        self,
        account: str,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
    ) -> None:
        """Ask the broker to change the order's quantity or limit price.

        Raises:
            BrokerQueryError: the broker refused, or did not answer (the change may stand).
        """
        ...


@runtime_checkable
class ReplacingBroker(Protocol):
    """A broker that amends an order by replacing it with a new broker order (Alpaca).

    Each leg carries its own client id, derived from the first leg's and a counter, so a
    leg whose answer was lost can be looked up like any submitted order.
    """

    def replace_client_order_id(self, root: str, n: int) -> str:
        """The client id of the `n`-th replace leg (n >= 1) of the order first sent as `root`."""
        ...

    async def replace(self, request: ReplaceRequest) -> SubmitAck:
        """Send the replacement; the answer describes the new leg.

        Raises:
            SubmitRejected: the broker refused it; the old order stands unchanged.
            SubmitUncertain: the outcome is unknown; look the new leg up, never re-send.
        """
        ...


@runtime_checkable
class AnsweringLookup(Protocol):
    """A broker whose lookup also hands back the answer it read, verbatim (every adapter here).

    Optional beside `BrokerClient.lookup` (which a port may implement alone): the booking
    of a lookup (`trueup.submission.look_up`) uses it when present, so the raw log keeps
    the broker's answer, not only trueup's translation of it.
    """

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """The broker's answer about the order carrying our id (see `LookupAnswer`).

        Raises:
            BrokerQueryError: the broker could not be asked; absence is unknown.
        """
        ...
