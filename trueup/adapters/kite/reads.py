"""`KiteReads`: what `KiteClient` reads from Kite: the order book, lookups, histories, fills, snapshots.

Needs the `kite` extra (through `transport.py`). Every read goes through a
`KiteTransport` (raw JSON text, errors as `BrokerQueryError` / `KiteTokenExpired`) and is
translated by the pure `translate.py` / `groups.py`. Kite is day-scoped: `orders()` and
`trades()` list today's orders only, from `history_start` (midnight Asia/Kolkata).

* The order book (`book`) is today's `orders()` as logical orders: the slices of one tag
  are one order (`groups.to_order_book`), with the client's autoslice placements in
  flight (`groups.Placing`) so children still being placed do not pass for the whole order.
* `lookup` is the logical order of our id in that book; None means "not in today's book".
* `history` and `fills` are `order_history()` / `order_trades()` of each Kite order of our id.
* `cancel_targets` are the working Kite orders of our id; without the book, the children
  of this process's placement or the broker id given, and whether slices may remain.
* `snapshot` is a consistent cut: trades, orders, positions, holdings, then trades again,
  the whole read repeated while the two trade reads differ (a fill landed during it).
  A part that cannot be fetched or translated is None (STALE_DATA, the reason in
  `failures`), never `[]`; an expired token fails the whole snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from trueup.adapters.kite.groups import KiteOrderRef, OrderBook, Placing, to_order_book, with_client_order_ids
from trueup.adapters.kite.ids import TagPredicate
from trueup.adapters.kite.translate import (
    fill_dedupe_key,
    to_account_positions,
    to_fill_reports,
    to_order_reports_from_history,
)
from trueup.adapters.kite.transport import KiteTokenExpired, KiteTransport
from trueup.adapters.kite.wire import trading_day_start
from trueup.domain.errors import BrokerQueryError, TrueupError
from trueup.domain.reports import (
    BrokerSnapshot,
    FillReport,
    LookupAnswer,
    OrderReport,
    PositionReport,
    RawAnswer,
)

__all__ = ["KiteReads", "ReadOptions"]

log = logging.getLogger(__name__)

_PARTS_OF: Final[dict[str, tuple[str, ...]]] = {
    "trades": ("fills",),
    "orders": ("orders", "fills"),
    "positions": ("positions",),
    "holdings": ("positions",),
    "trades (again)": ("positions",),
}
"""The snapshot parts a failed read leaves unknown (fills need the order book to be attributed)."""
_PART_OF: Final[dict[str, str]] = {"trades": "fills"}
"""The snapshot part an answer translates into, where its name differs from the query's."""


class ReadOptions(Protocol):
    """The client's options the reads use, read at each call (`KiteClient` is one)."""

    is_ours: TagPredicate | None
    snapshot_attempts: int
    clock: Callable[[], datetime]
    variety: str
    autoslice: bool
    lookback: float | None


class KiteReads:
    """The reads of one Kite account; callers check the account is the client's first."""

    def __init__(
        self,
        transport: KiteTransport,
        options: ReadOptions,
        placing: Callable[[], Mapping[str, Placing]],
    ) -> None:
        """Read through `transport`; `placing()` is the client's current autoslice placements."""
        self._transport = transport
        self._options = options
        self._placing = placing

    async def book(self, account: str, what: str) -> OrderBook:
        """Today's order book, as logical orders; `what` names the read in errors.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book could not be read or translated.
        """
        raw = await self._transport.query(f"{what}: orders", self._transport.kite.orders)
        try:
            return self._order_book_of(account)(raw)
        except TrueupError as e:
            msg = f"{account}: {what}: untranslatable order book: {e}"
            raise BrokerQueryError(msg) from e

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The logical order carrying our id in today's `orders()`, or None (see `KiteClient.lookup`)."""
        book = await self.book(account, f"lookup {client_order_id}")
        return book.find(client_order_id)

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """`lookup` with the `orders()` body it was read from (see `KiteClient.lookup_answer`)."""
        what = f"lookup {client_order_id}"
        raw = await self._transport.query(f"{what}: orders", self._transport.kite.orders)
        try:
            book = self._order_book_of(account)(raw)
        except TrueupError as e:
            why = f"{account}: {what}: untranslatable order book: {e}"
            return LookupAnswer(
                report=None, raw=RawAnswer(source="kite", kind="lookup", payload=raw, error=why)
            )
        return LookupAnswer(
            report=book.find(client_order_id), raw=RawAnswer(source="kite", kind="lookup", payload=raw)
        )

    async def history(self, account: str, client_order_id: str) -> list[OrderReport]:
        """Every state of each Kite order of our id, oldest first per order (see `KiteClient.history`)."""
        cid = client_order_id
        book = await self.book(account, f"history {cid}")
        reports: list[OrderReport] = []
        for ref in book.members.get(cid, []):
            raw = await self._transport.query(
                f"history {cid} ({ref.order_id})", self._transport.kite.order_history, ref.order_id
            )
            try:
                reports += to_order_reports_from_history(raw, account=account, is_ours=self._options.is_ours)
            except TrueupError as e:
                msg = f"{account}: history of {ref.order_id}: untranslatable: {e}"
                raise BrokerQueryError(msg) from e
        return reports

    async def fills(self, account: str, client_order_id: str) -> list[FillReport]:
        """The executions of every Kite order of our id, with our id set (see `KiteClient.fills`)."""
        cid = client_order_id
        book = await self.book(account, f"fills {cid}")
        fills: list[FillReport] = []
        for ref in book.members.get(cid, []):
            raw = await self._transport.query(
                f"fills {cid} ({ref.order_id})", self._transport.kite.order_trades, ref.order_id
            )
            try:
                fills += to_fill_reports(raw, account=account)
            except TrueupError as e:
                msg = f"{account}: trades of {ref.order_id}: untranslatable: {e}"
                raise BrokerQueryError(msg) from e
        return with_client_order_ids(fills, book.order_tags)

    async def cancel_targets(
        self, account: str, cid: str, broker_order_id: str | None
    ) -> tuple[list[KiteOrderRef], str | None]:
        """The working Kite orders of our id, to cancel; without the book, those known and what is not.

        Returns:
            The orders, and None, or (the book unreadable) why other slices may remain.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: no such order today, or no book and no order known.
        """
        try:
            book = await self.book(account, f"cancel {cid}")
        except KiteTokenExpired:
            raise
        except BrokerQueryError as e:
            return self._cancel_blind(cid, broker_order_id, e)
        members = book.members.get(cid)
        if not members:
            msg = f"{account}: no order {cid!r} in today's Kite orders; nothing cancelled"
            raise BrokerQueryError(msg)
        targets = [m for m in members if m.working]
        if not targets:
            log.info("cancel %s: every Kite order of it is done already", cid)
        return targets, None

    def history_start(self, now: datetime) -> datetime:
        """The start of today's Kite trading day (midnight Asia/Kolkata, in UTC), or later.

        With a `lookback`, the later of that and ``now - lookback``: what the snapshot vouches for.
        """
        start = trading_day_start(now)
        lookback = self._options.lookback
        return start if lookback is None else max(start, now - timedelta(seconds=lookback))

    async def snapshot(self, account: str) -> BrokerSnapshot:
        """Today's trades, orders (logical) and the account's positions; a failed part is None.

        Reads trades, orders, positions, holdings, then trades again. Every trade's order
        is in the book read after it, so each fill gets our id from its order's tag. A
        fill between the first trades read and the positions read would be in the
        positions only (reconciliation would book a synthetic fill, then the real trade:
        twice): so if the second trades read differs from the first, the whole read is
        repeated (`snapshot_attempts` in all), and if trades never hold still, positions
        are None for this cycle (STALE_DATA, with the reason). Positions are
        `positions()` plus `holdings()` (`translate.to_account_positions`): either
        missing makes them None, never a partial list. `history_since` is the start of
        today's trading day; `complete_history` stays False.

        Raises:
            KiteTokenExpired: the access token expired (the whole snapshot is unknown).
        """
        kite = self._transport.kite
        for attempt in range(1, self._options.snapshot_attempts + 1):
            failures: dict[str, str] = {}
            as_of = self._options.clock()
            trades_raw = await self._part(account, "trades", kite.trades, failures)
            orders_raw = await self._part(account, "orders", kite.orders, failures)
            positions_raw = await self._part(account, "positions", kite.positions, failures)
            holdings_raw = await self._part(account, "holdings", kite.holdings, failures)
            trades_after = await self._part(account, "trades (again)", kite.trades, failures)
            first = _trade_keys(account, trades_raw)
            moved = first is not None and first != _trade_keys(account, trades_after)
            if not moved:
                break
            log.info("%s: kite trades changed during snapshot read %d; reading again", account, attempt)
        if moved:
            reason = (
                f"trades changed during each of {self._options.snapshot_attempts} reads: positions may hold "
                "fills the trades read does not; not compared this cycle"
            )
            log.warning("%s: %s", account, reason)
            failures["positions"] = reason
            positions_raw = None
        return self._snapshot_of(
            account,
            as_of,
            trades_raw=trades_raw,
            orders_raw=orders_raw,
            positions_raw=positions_raw,
            holdings_raw=holdings_raw,
            failures=failures,
        )

    # -- internals ----------------------------------------------------------------------------

    async def _part(
        self, account: str, what: str, method: Callable[[], object], failures: dict[str, str]
    ) -> str | None:
        """One part of a snapshot, or None if it failed (why, in `failures`); an expired token fails all."""
        try:
            raw = await self._transport.query(what, method)
        except KiteTokenExpired:
            raise
        except BrokerQueryError as e:
            log.warning("%s: kite %s unavailable: %s", account, what, e)
            for part in _PARTS_OF[what]:
                failures[part] = f"kite {what} unavailable: {e}"
            return None
        return raw

    def _cancel_blind(
        self, cid: str, broker_order_id: str | None, error: BrokerQueryError
    ) -> tuple[list[KiteOrderRef], str | None]:
        """What to cancel when the order book cannot be read, and what remains unknown."""
        placing = self._placing().get(cid)
        known = sorted(placing.children) if placing is not None and placing.children else []
        if not known and broker_order_id is not None:
            known = [broker_order_id]
        if not known:
            raise error
        sliced = self._options.autoslice or self._options.variety == "iceberg" or placing is not None
        refs = [
            KiteOrderRef(order_id=i, variety=self._options.variety, working=True, is_slice=sliced)
            for i in known
        ]
        unsure = None
        if sliced and (placing is None or placing.children is None):
            unsure = (
                f"cancel {cid}: order book unavailable ({error}); the order may have other slices "
                f"than {', '.join(known)}, not cancelled: cancel again once the book can be read"
            )
        elif placing is not None and placing.children:
            log.warning("cancel %s: order book unavailable (%s); cancelling its slices %s", cid, error, known)
        else:
            log.warning("cancel %s: order book unavailable (%s); cancelling %s only", cid, error, known[0])
        return refs, unsure

    def _order_book_of(self, account: str) -> Callable[[str], OrderBook]:
        placing = self._placing()  # replaced whole on each change: one consistent view

        def translate(raw: str) -> OrderBook:
            return to_order_book(raw, account=account, is_ours=self._options.is_ours, placing=placing)

        return translate

    def _snapshot_of(  # noqa: PLR0913 - the parts of one read
        self,
        account: str,
        as_of: datetime,
        *,
        trades_raw: str | None,
        orders_raw: str | None,
        positions_raw: str | None,
        holdings_raw: str | None,
        failures: dict[str, str],
    ) -> BrokerSnapshot:
        """Translate one consistent read into a snapshot; a part missing or untranslatable is None.

        Every answer read is kept verbatim in `raw` (an untranslatable one marked so).
        """
        answers: list[RawAnswer] = []
        book: OrderBook | None = _translate(
            account, "orders", orders_raw, self._order_book_of(account), failures, answers
        )
        fills: list[FillReport] | None = _translate(
            account,
            "trades",
            trades_raw,
            lambda raw: to_fill_reports(raw, account=account),
            failures,
            answers,
        )
        if fills is not None and book is None:
            # Trades carry no tag: without the order book a fill of a slice never reported
            # alone could not reach its order and would look like an orphan. Unknown too.
            log.warning("%s: kite trades not attributable without the order book; fills unknown", account)
            failures.setdefault("fills", "trades not attributable without the order book")
            fills = None
        elif fills is not None and book is not None:
            fills = with_client_order_ids(fills, book.order_tags)
        positions: list[PositionReport] | None = None
        if positions_raw is not None and holdings_raw is None:
            failures.setdefault("positions", failures.get("holdings", "holdings unknown"))
        elif positions_raw is not None and holdings_raw is not None:
            held = holdings_raw
            positions = _translate(
                account,
                "positions",
                positions_raw,
                lambda raw: to_account_positions(raw, held, account=account, as_of=as_of),
                failures,
                answers,
            )
            error = answers[-1].error
            answers.append(RawAnswer(source="kite", kind="holdings", payload=held, error=error))
        return BrokerSnapshot(
            account=account,
            as_of=as_of,
            orders=book.orders if book is not None else None,
            fills=fills,
            positions=positions,
            complete_history=False,  # today only: absence proves nothing about earlier days
            history_since=self.history_start(as_of),
            failures={
                part: why
                for part, why, value in (
                    ("orders", failures.get("orders"), book),
                    ("fills", failures.get("fills"), fills),
                    ("positions", failures.get("positions"), positions),
                )
                if value is None and why is not None
            },
            raw=tuple(answers),
        )


def _translate(  # noqa: PLR0913, PLR0917 - one part and where its answer and failure go
    account: str,
    what: str,
    raw: str | None,
    translate: Callable[[str], Any],
    failures: dict[str, str],
    answers: list[RawAnswer],
) -> Any:  # noqa: ANN401 - the translator's result
    """`translate(raw)`, or None (logged, in `failures`) if the part is missing or untranslatable.

    The answer is appended to `answers` verbatim, with the error when it did not translate.
    """
    if raw is None:
        return None
    try:
        translated = translate(raw)
    except TrueupError as e:
        log.warning("%s: kite %s untranslatable: %s", account, what, e)
        why = f"kite {what} untranslatable: {e}"
        failures[_PART_OF.get(what, what)] = why  # the snapshot part, which the STALE_DATA names
        answers.append(RawAnswer(source="kite", kind=what, payload=raw, error=why))
        return None
    answers.append(RawAnswer(source="kite", kind=what, payload=raw))
    return translated


def _trade_keys(account: str, raw: str | None) -> frozenset[tuple[str, str]] | None:
    """The `(exchange, trade_id)` of each trade of a trades answer; None if unknown."""
    if raw is None:
        return None
    try:
        return frozenset(fill_dedupe_key(f) for f in to_fill_reports(raw, account=account))
    except (TrueupError, ValueError):
        return None
