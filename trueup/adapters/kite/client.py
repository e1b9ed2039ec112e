"""`KiteClient`: the `BrokerClient` for Zerodha Kite Connect, through kiteconnect's `KiteConnect`.

Needs the `kite` extra (`pip install 'trueup[kite]'`); the package `__init__` does not
import this module, so `import trueup` works without it. kiteconnect is blocking
(requests): every call runs in a worker thread (`asyncio.to_thread`) with the client's
`timeout`. Answers are kept as the raw JSON text Kite sent (read from the requests
session's response hook, before kiteconnect turns numbers into floats and times into
naive datetimes) and translated by the pure `translate.py` / `groups.py`, so prices and
quantities are exact Decimals and every payload can be stored verbatim.

Outcomes (BROKERS.md 3):

* submit: our `client_order_id` travels as the order's `tag`. `InputException`,
  `OrderException`, `PermissionException` are `SubmitRejected`; a `TokenException` is
  `SubmitRejected` too, saying the access token expired (nothing was placed). Anything
  else (timeout, dropped connection, a 5xx, `NetworkException`, `DataException`) is
  uncertain: Kite has no lookup by tag, so the order is first looked for in today's
  `orders()` (a few tries with a short backoff); found, it is acknowledged, else
  `SubmitUncertain` (never re-sent). With `autoslice=True`, orders are placed with
  `place_autoslice_order`; slices Kite refused are named in the acknowledgement.
* lookup: today's `orders()`, matched on `tag` or membership in `tags`; slices of one tag
  come back as one logical order (`groups.to_order_book`). None means "not in today's
  book": an order from an earlier day is not there either.
* snapshot: trades, orders, positions, holdings, then trades again (every trade's order is
  in the order book fetched after it, so each fill gets our id from its order's tag; a
  fill landing during the read repeats it, see `snapshot`). Positions are `positions()`
  plus `holdings()` (`translate.to_account_positions`). A part that cannot be fetched or
  translated is None (STALE_DATA, the reason in `failures`), never `[]`; fills are None
  too when the order book is (they could not be attributed). `complete_history` is always
  False: `orders()` and `trades()` cover today only, from `history_start` (midnight
  Asia/Kolkata), given as `history_since`.
* token expiry: Kite access tokens expire daily. After a `TokenException`, `snapshot`,
  `lookup` and `cancel` raise `KiteTokenExpired` (a `BrokerQueryError` whose message
  says so), reconciliation stores STALE_DATA and the gate stays BLOCKED, until
  `set_access_token` is called with a new token.
* stream: postbacks handed in by the receiver (`postback.py`) and WebSocket order
  updates (`on_order_update`, for a `KiteTicker` the host runs) are yielded raw as
  `RawMessage`s, before verification. Their translation reports nothing
  (`translate.update_as_trigger`): a postback whose checksum fails is refused
  (INVALID_REPORT, kept); an authentic one is only a trigger, since its checksum does not
  cover its body and a slice's update would speak for the logical order. After each burst
  of authentic updates the stream yields a `RefreshNeeded`, on which the service re-reads
  the order book (a full reconciliation). At most `inbox_limit` updates wait: beyond that
  postbacks are refused (503, Kite retries) and WebSocket updates dropped with a refresh
  forced.
* autoslice: the placement is marked before it is sent, and the children named by its
  answer recorded, so a book read while Kite is still placing children does not take the
  children seen for the whole order (`groups.Placing`).

Secrets: the access token lives in kiteconnect's `KiteConnect` only; the api secret is
kept masked and used only to verify postbacks. Neither is in a `repr`, a log line, an
error or a stored payload. kiteconnect's `debug` (which logs headers) is never enabled.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgspec

from trueup.adapters.base import (
    CLIENT_ORDER_ID,
    BrokerClient,
    OrderRequest,
    OrderType,
    RawMessage,
    RefreshNeeded,
    StreamItem,
    SubmitAck,
    SubmitRejected,
    SubmitUncertain,
)
from trueup.adapters.kite.groups import (
    KiteOrderRef,
    OrderBook,
    Placing,
    to_autoslice_placement,
    to_order_book,
    with_client_order_ids,
)
from trueup.adapters.kite.ids import TagPredicate, split_symbol
from trueup.adapters.kite.postback import PostbackReceiver, PostbackServer, serve
from trueup.adapters.kite.translate import (
    fill_dedupe_key,
    to_account_positions,
    to_fill_reports,
    to_order_reports_from_history,
    update_as_trigger,
    verify_postback,
)
from trueup.adapters.kite.wire import KITE_TIME_FORMAT, trading_day_start
from trueup.domain.errors import BrokerQueryError, ConfigError, TrueupError
from trueup.domain.reports import (
    REPORT_ENCODER,
    BrokerSnapshot,
    FillReport,
    OrderReport,
    PositionReport,
    Report,
)
from trueup.domain.status import OrderStatus, Side

try:
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kite_errors
    from requests import RequestException, Response
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Kite adapter needs kiteconnect: pip install 'trueup[kite]'"
    raise ImportError(msg) from e

__all__ = [
    "ENV_API_KEY",
    "ENV_API_SECRET",
    "ENV_ROOT",
    "ENV_TOKEN",
    "InboxFull",
    "KiteClient",
    "KiteTokenExpired",
]

log = logging.getLogger(__name__)

SOURCE: Final = "kite"
ENV_API_KEY: Final = "KITE_API_KEY"
ENV_TOKEN: Final = "KITE_ACCESS_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_API_SECRET: Final = "KITE_API_SECRET"  # noqa: S105 - the variable's name, not a secret
ENV_ROOT: Final = "KITE_ROOT"
EXPIRY_MESSAGE: Final = (
    "Kite access token expired or invalid (TokenException): Kite tokens expire every day; "
    "log in again and set the new token (KiteClient.set_access_token)"
)

_REFUSED: Final = (
    kite_errors.InputException,
    kite_errors.OrderException,
    kite_errors.PermissionException,
)
"""Kite exceptions that prove an order was not placed (besides TokenException)."""
_FAILED: Final = (kite_errors.KiteException, RequestException, OSError, ValueError, KeyError, TypeError)
"""What a kiteconnect call raises when it fails: Kite's errors, requests', a malformed answer."""


_UTC_NOW: Final[Callable[[], datetime]] = functools.partial(datetime.now, UTC)
"""The default clock: now, tz-aware UTC."""

_PARTS_OF: Final[dict[str, tuple[str, ...]]] = {
    "trades": ("fills",),
    "orders": ("orders", "fills"),
    "positions": ("positions",),
    "holdings": ("positions",),
    "trades (again)": ("positions",),
}
"""The snapshot parts a failed read leaves unknown (fills need the order book to be attributed)."""


class KiteTokenExpired(BrokerQueryError):  # noqa: N818 - names the condition, like BrokerQueryError
    """Raised when Kite refused the access token (TokenException): set a new one to continue."""


class InboxFull(TrueupError):  # noqa: N818 - names the condition
    """Raised by `accept_postback` when `inbox_limit` updates wait: the receiver answers 503."""


class _Secret:
    """A secret that never shows in a repr or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


class _RawBodies:
    """The body of the last HTTP response of each thread, from the requests session's hook."""

    def __init__(self) -> None:
        self._local = threading.local()

    def hook(self, response: Response, *_args: object, **_kwargs: object) -> None:
        self._local.body = response.content

    def take(self) -> bytes | None:
        body: bytes | None = getattr(self._local, "body", None)
        self._local.body = None
        return body


class _PlaceAnswer(msgspec.Struct):
    class Data(msgspec.Struct):
        order_id: str

    data: Data


_PLACE_ANSWER: Final = msgspec.json.Decoder(_PlaceAnswer)


class _Trigger:
    """Checks an update (a postback's checksum first) and reports nothing: updates only trigger a refresh."""

    def __init__(self, account: str, secret: _Secret | None) -> None:
        self.account = account
        self._secret = secret

    def __call__(self, payload: str) -> Sequence[Report]:
        secret = self._secret.reveal() if self._secret is not None else None
        return update_as_trigger(payload, account=self.account, api_secret=secret)

    def __repr__(self) -> str:
        kind = "postback" if self._secret is not None else "ws_order_update"
        return f"update_as_trigger({kind}, account={self.account!r})"


class KiteClient:
    """Zerodha Kite Connect for one account: submit, cancel, modify, lookup, snapshot, stream."""

    name = SOURCE
    """Adapter name: the `source` of what this client reports."""

    def __init__(  # noqa: PLR0913 - the credentials, then keyword-only options
        self,
        api_key: str,
        access_token: str,
        api_secret: str,
        *,
        account: str,
        root: str | None = None,
        timeout: float = 7.0,
        variety: str = "regular",
        autoslice: bool = False,
        is_ours: TagPredicate | None = None,
        lookup_attempts: int = 3,
        lookup_backoff: float = 1.0,
        snapshot_attempts: int = 3,
        inbox_limit: int = 10_000,
        clock: Callable[[], datetime] = _UTC_NOW,
    ) -> None:
        """Open a `KiteConnect` for `account`, trueup's name for the Kite user.

        Args:
            api_key: the app's api key.
            access_token: today's access token (from the login flow).
            api_secret: the app's api secret, used only to verify postbacks.
            account: trueup's name for this Kite account.
            root: the API root (`KITE_ROOT`); Kite's own when None. Any path is dropped.
            timeout: seconds each HTTP call may take.
            variety: the variety new orders are placed with (`regular`, `amo`, ...).
            autoslice: place new orders with `place_autoslice_order` (freeze-limit slicing).
            is_ours: narrows which tags are our ids (`ids.is_our_tag`).
            lookup_attempts: looks in `orders()` after a submit whose outcome is unknown.
            lookup_backoff: seconds between those looks (growing linearly).
            snapshot_attempts: reads of a snapshot before its positions are called unknown
                because trades kept changing during the read (`snapshot`).
            inbox_limit: updates waiting for `stream()` at most; past it postbacks are
                refused (HTTP 503, Kite retries) and WebSocket updates dropped (counted).
            clock: "now", tz-aware UTC (a snapshot's `as_of`, hence its trading day).
        """
        for name, value in (("api_key", api_key), ("access_token", access_token), ("api_secret", api_secret)):
            if not value:
                msg = f"Kite {name} must be non-empty"
                raise ConfigError(msg)
        if timeout <= 0 or lookup_backoff < 0 or min(lookup_attempts, snapshot_attempts, inbox_limit) < 1:
            msg = (
                f"timeout must be > 0, lookup_attempts, snapshot_attempts, inbox_limit >= 1, "
                f"lookup_backoff >= 0; got {timeout!r}, {lookup_attempts!r}, {snapshot_attempts!r}, "
                f"{inbox_limit!r}, {lookup_backoff!r}"
            )
            raise ConfigError(msg)
        self.account = account
        self.root = root
        self.timeout = timeout
        self.variety = variety
        self.autoslice = autoslice
        self.is_ours = is_ours
        self.lookup_attempts = lookup_attempts
        self.lookup_backoff = lookup_backoff
        self._secret = _Secret(api_secret)
        self._kite = KiteConnect(api_key, access_token=access_token, root=root, timeout=timeout)
        self._bodies = _RawBodies()
        self._kite.reqsession.hooks["response"].append(self._bodies.hook)
        self._token_expired = False
        self._lock = threading.Lock()
        self.clock = clock
        self.inbox_limit = inbox_limit
        self.snapshot_attempts = snapshot_attempts
        self._inbox: deque[tuple[str, str]] = deque()
        self._wake: Callable[[], None] | None = None
        self._listener = 0
        self._overflowed = False
        self.refused_postbacks = 0
        """Postbacks refused because the inbox was full (answered 503: Kite retries them)."""
        self.dropped_updates = 0
        """WebSocket updates dropped because the inbox was full (a refresh is forced instead)."""
        self._placing: dict[str, Placing] = {}
        """Our id -> the autoslice placement this process made with it (`groups.Placing`)."""
        self._translators: dict[str, Callable[[str], Sequence[Report]]] = {
            "postback": _Trigger(account, self._secret),
            "ws_order_update": _Trigger(account, None),
        }

    @classmethod
    def from_env(
        cls,
        account: str,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,  # noqa: ANN401 - KiteClient's keyword options, passed on
    ) -> KiteClient:
        """A client from `KITE_API_KEY`, `KITE_ACCESS_TOKEN`, `KITE_API_SECRET` and optional `KITE_ROOT`.

        `options` are `KiteClient`'s keyword options (`timeout`, `autoslice`, ...).

        Raises:
            ConfigError: a required variable is missing or empty (named, its value never shown).
        """
        env = os.environ if environ is None else environ
        missing = [name for name in (ENV_API_KEY, ENV_TOKEN, ENV_API_SECRET) if not env.get(name)]
        if missing:
            msg = f"the Kite adapter needs the environment variable(s) {', '.join(missing)}"
            raise ConfigError(msg)
        return cls(
            env[ENV_API_KEY],
            env[ENV_TOKEN],
            env[ENV_API_SECRET],
            account=account,
            root=env.get(ENV_ROOT) or None,
            **options,
        )

    def __repr__(self) -> str:
        return (
            f"KiteClient(account={self.account!r}, root={self.root!r}, timeout={self.timeout!r}, "
            f"variety={self.variety!r}, autoslice={self.autoslice!r})"
        )

    # -- the access token -----------------------------------------------------------------

    @property
    def token_expired(self) -> bool:
        """Whether Kite refused the access token since it was last set."""
        return self._token_expired

    def set_access_token(self, access_token: str) -> None:
        """Use a new access token (after the daily login); ends the expiry window."""
        if not access_token:
            msg = "Kite access_token must be non-empty"
            raise ConfigError(msg)
        self._kite.set_access_token(access_token)
        self._token_expired = False
        log.info("kite %s: new access token set", self.account)

    # -- BrokerClient ---------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> SubmitAck:
        """Place a new order with `tag` = our `client_order_id`.

        Raises:
            SubmitRejected: Kite refused it, the token expired, or it cannot be expressed;
                nothing was placed.
            SubmitUncertain: no answer and not found in today's `orders()`.
        """
        cid = request.client_order_id
        if request.account != self.account:
            msg = f"account {request.account!r} is not this Kite client's ({self.account!r})"
            raise SubmitRejected(msg)
        params = self._place_params(request)
        place = self._kite.place_autoslice_order if self.autoslice else self._kite.place_order
        if self.autoslice:
            # Before sending: a book read (or a lookup) while Kite is still placing the
            # children must not take the children seen for the whole order.
            self._set_placing(cid, Placing(quantity=request.quantity))
        try:
            raw = await asyncio.to_thread(self._fetch, place, **params)
        except kite_errors.TokenException as e:
            self._forget_placing(cid)
            expired = self._expired(f"submit {cid}", e)
            msg = f"{expired}; order {cid} not placed"
            raise SubmitRejected(msg, raw=str(e)) from e
        except _REFUSED as e:
            self._forget_placing(cid)
            msg = f"Kite refused order {cid}: {_describe(e)}"
            raise SubmitRejected(msg, raw=str(e)) from e
        except _FAILED as e:
            return await self._find_after_uncertain(request, _describe(e))
        self._token_expired = False
        return await self._ack(request, raw)

    async def cancel(self, account: str, client_order_id: str, broker_order_id: str | None) -> None:
        """Cancel every working Kite order carrying our id (all slices); outcomes arrive as reports.

        The order book names the orders and their varieties. If it cannot be read, the
        orders this process knows are cancelled as `variety` orders: the children of its
        own autoslice placement, else the `broker_order_id` given. When the order has (or
        may have) other slices than those, the cancel raises after sending, naming what
        was and was not cancelled: a success would let the caller believe all of it was.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: no such order today, Kite did not take a cancel, or some
                slices could not be named without the order book.
        """
        self._check_account(account)
        cid = client_order_id
        failures = []
        targets, unsure = await self._cancel_targets(account, cid, broker_order_id)
        cancelled = []
        for ref in targets:
            try:
                await self._query(
                    f"cancel {cid} ({ref.order_id})", self._kite.cancel_order, ref.variety, ref.order_id
                )
            except KiteTokenExpired:
                raise
            except BrokerQueryError as e:
                failures.append(str(e))
            else:
                cancelled.append(ref.order_id)
        if unsure is not None:
            failures.append(f"{unsure}; cancel sent for {', '.join(cancelled) or 'none'}")
        if failures:
            raise BrokerQueryError("; ".join(failures))

    async def _cancel_targets(
        self, account: str, cid: str, broker_order_id: str | None
    ) -> tuple[list[KiteOrderRef], str | None]:
        """The working Kite orders of our id; without the book, those known and what is not known."""
        try:
            book = await self._book(account, f"cancel {cid}")
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

    def _cancel_blind(
        self, cid: str, broker_order_id: str | None, error: BrokerQueryError
    ) -> tuple[list[KiteOrderRef], str | None]:
        """What to cancel when the order book cannot be read, and what remains unknown."""
        placing = self._placing.get(cid)
        known = sorted(placing.children) if placing is not None and placing.children else []
        if not known and broker_order_id is not None:
            known = [broker_order_id]
        if not known:
            raise error
        sliced = self.autoslice or self.variety == "iceberg" or placing is not None
        refs = [KiteOrderRef(order_id=i, variety=self.variety, working=True, is_slice=sliced) for i in known]
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

    async def modify(
        self,
        account: str,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
    ) -> None:
        """Change the quantity or limit price of a working order (Kite keeps its `order_id`).

        The outcome arrives as reports (an `UPDATE` postback, then the order book). An
        order Kite sliced cannot be modified as one.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: no single working order with our id today, or Kite refused.
        """
        self._check_account(account)
        cid = client_order_id
        book = await self._book(account, f"modify {cid}")
        members = book.members.get(cid, [])
        if len(members) != 1 or members[0].is_slice or not members[0].working:
            msg = f"{account}: {cid!r} is not one working Kite order today ({len(members)}); not modified"
            raise BrokerQueryError(msg)
        changes: dict[str, object] = {}
        if quantity is not None:
            changes["quantity"] = _whole(quantity, f"modify {cid}")
        if limit_price is not None:
            changes["price"] = str(limit_price)
        ref = members[0]
        await self._query(f"modify {cid}", self._kite.modify_order, ref.variety, ref.order_id, **changes)

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The logical order carrying our id in today's `orders()`, or None if it has none.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book could not be read; absence is unknown.
        """
        self._check_account(account)
        book = await self._book(account, f"lookup {client_order_id}")
        return book.find(client_order_id)

    async def history(self, account: str, client_order_id: str) -> list[OrderReport]:
        """Every state each Kite order of our id went through (`order_history()`), oldest first per order.

        For audit: a logical order's slices are listed one after another, each report
        being one slice's state (not the logical order's).

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book or a history could not be read or translated.
        """
        self._check_account(account)
        cid = client_order_id
        book = await self._book(account, f"history {cid}")
        reports: list[OrderReport] = []
        for ref in book.members.get(cid, []):
            raw = await self._query(f"history {cid} ({ref.order_id})", self._kite.order_history, ref.order_id)
            try:
                reports += to_order_reports_from_history(raw, account=account, is_ours=self.is_ours)
            except TrueupError as e:
                msg = f"{account}: history of {ref.order_id}: untranslatable: {e}"
                raise BrokerQueryError(msg) from e
        return reports

    async def fills(self, account: str, client_order_id: str) -> list[FillReport]:
        """The executions of every Kite order of our id (`order_trades()`), with our id set.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book or a trade list could not be read or translated.
        """
        self._check_account(account)
        cid = client_order_id
        book = await self._book(account, f"fills {cid}")
        fills: list[FillReport] = []
        for ref in book.members.get(cid, []):
            raw = await self._query(f"fills {cid} ({ref.order_id})", self._kite.order_trades, ref.order_id)
            try:
                fills += to_fill_reports(raw, account=account)
            except TrueupError as e:
                msg = f"{account}: trades of {ref.order_id}: untranslatable: {e}"
                raise BrokerQueryError(msg) from e
        return with_client_order_ids(fills, book.order_tags)

    def history_start(self, now: datetime) -> datetime:
        """The start of today's Kite trading day (midnight Asia/Kolkata, in UTC): `DayScopedBroker`.

        `orders()` and `trades()` list orders sent since then only: not finding an order
        sent earlier proves nothing (it may have filled yesterday).
        """
        return trading_day_start(now)

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
            BrokerQueryError: the account is not this client's.
        """
        self._check_account(account)
        for attempt in range(1, self.snapshot_attempts + 1):
            failures: dict[str, str] = {}
            as_of = self.clock()
            trades_raw = await self._part(account, "trades", self._kite.trades, failures)
            orders_raw = await self._part(account, "orders", self._kite.orders, failures)
            positions_raw = await self._part(account, "positions", self._kite.positions, failures)
            holdings_raw = await self._part(account, "holdings", self._kite.holdings, failures)
            trades_after = await self._part(account, "trades (again)", self._kite.trades, failures)
            first = self._trade_keys(account, trades_raw)
            moved = first is not None and first != self._trade_keys(account, trades_after)
            if not moved:
                break
            log.info("%s: kite trades changed during snapshot read %d; reading again", account, attempt)
        if moved:
            reason = (
                f"trades changed during each of {self.snapshot_attempts} reads: positions may hold "
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
        """Translate one consistent read into a snapshot; a part missing or untranslatable is None."""
        book: OrderBook | None = self._translate(
            account, "orders", orders_raw, self._order_book_of(account), failures
        )
        fills: list[FillReport] | None = self._translate(
            account, "trades", trades_raw, lambda raw: to_fill_reports(raw, account=account), failures
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
            positions = self._translate(
                account,
                "positions",
                positions_raw,
                lambda raw: to_account_positions(raw, held, account=account, as_of=as_of),
                failures,
            )
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
        )

    def _trade_keys(self, account: str, raw: str | None) -> frozenset[tuple[str, str]] | None:
        """The `(exchange, trade_id)` of each trade of a trades answer; None if unknown."""
        if raw is None:
            return None
        try:
            return frozenset(fill_dedupe_key(f) for f in to_fill_reports(raw, account=account))
        except (TrueupError, ValueError):
            return None

    async def stream(self) -> AsyncIterator[StreamItem]:
        """Postbacks and WebSocket order updates as `RawMessage`s, then a `RefreshNeeded`.

        Payloads are yielded verbatim, before verification (the translator verifies). After
        each burst containing an authentic update (a verified postback, or a WebSocket
        update) comes one `RefreshNeeded`: updates arrive out of order, twice, and without
        fills, so the order book is the truth to re-read. One iteration at a time; a new
        one takes over from the previous. Payloads received with nobody iterating wait.
        """
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # the consumer's loop closed: payloads stay in the inbox
                log.debug("kite stream: consumer loop closed")

        with self._lock:
            self._listener += 1
            listener = self._listener
            self._wake = wake
            if self._inbox:
                ready.set()
        refresh = False
        try:
            while True:
                await ready.wait()
                ready.clear()
                while (item := self._next()) is not None:
                    kind, payload = item
                    yield RawMessage(
                        account=self.account,
                        source=SOURCE,
                        kind=kind,
                        payload=payload,
                        translate=self._translators[kind],
                    )
                    refresh = refresh or self._authentic(kind, payload)
                if self._take_overflow():
                    refresh = True
                if refresh:
                    refresh = False
                    yield RefreshNeeded(account=self.account, source=SOURCE, reason="order updates")
        finally:
            with self._lock:
                if self._listener == listener:
                    self._wake = None

    # -- feeding the stream -----------------------------------------------------------------

    def accept_postback(self, body: bytes) -> None:
        """Queue one postback body, verbatim, for `stream()`; thread-safe (the receiver's sink).

        Raises:
            InboxFull: `inbox_limit` updates are waiting; the receiver answers 503 and Kite
                retries the postback later (counted in `refused_postbacks`).
        """
        if not self._enqueue("postback", body.decode("utf-8", errors="backslashreplace")):
            msg = f"kite {self.account}: {self.inbox_limit} updates waiting; postback refused, Kite retries"
            raise InboxFull(msg)

    def on_order_update(self, ws: object, data: Mapping[str, Any]) -> None:  # noqa: ARG002 - KiteTicker's signature
        """`KiteTicker.on_order_update` callback: queue the update as `{"type": "order", "data": ...}`.

        KiteTicker has decoded the frame already (numbers are floats by then); it is
        encoded back as JSON, whose shortest float text is the text Kite sent for prices
        written with up to 15 significant digits.
        """
        if not self._enqueue("ws_order_update", _encode({"type": "order", "data": data})):
            # Cannot be refused: dropped (counted), and a refresh forced so the book is read anyway.
            log.warning("kite %s: inbox full; WebSocket order update dropped, refresh forced", self.account)

    def postback_app(self) -> PostbackReceiver:
        """The WSGI app that feeds this client's stream: mount it at Kite's `postback_url`."""
        return PostbackReceiver(self.accept_postback)

    def serve_postbacks(self, host: str = "127.0.0.1", port: int = 0) -> PostbackServer:
        """Serve `postback_app()` on `host:port` in a daemon thread (stdlib `wsgiref`)."""
        return serve(self.accept_postback, host, port)

    # -- internals ----------------------------------------------------------------------------

    def _enqueue(self, kind: str, payload: str) -> bool:
        """Queue an update; False (nothing queued, a refresh owed) when the inbox is full."""
        with self._lock:
            taken = len(self._inbox) < self.inbox_limit
            if taken:
                self._inbox.append((kind, payload))
            else:
                self._overflowed = True
                if kind == "postback":
                    self.refused_postbacks += 1
                else:
                    self.dropped_updates += 1
            wake = self._wake
        if wake is not None:
            wake()
        return taken

    def _next(self) -> tuple[str, str] | None:
        with self._lock:
            return self._inbox.popleft() if self._inbox else None

    def _take_overflow(self) -> bool:
        """Whether updates were turned away since the last call (the book must be re-read)."""
        with self._lock:
            overflowed, self._overflowed = self._overflowed, False
        return overflowed

    def _authentic(self, kind: str, payload: str) -> bool:
        """Whether an update may trigger a refresh: a verified postback, or any WebSocket update."""
        if kind != "postback":
            return True
        try:
            return verify_postback(payload, self._secret.reveal())
        except TrueupError:
            return False

    def _fetch(self, method: Callable[..., object], *args: object, **kwargs: object) -> str:
        """Call a kiteconnect method in this worker thread; its answer as the raw JSON text."""
        self._bodies.take()
        result = method(*args, **kwargs)
        body = self._bodies.take()
        if body is None:  # the hook did not run (a changed SDK): encode what it decoded
            return _encode(result)
        return body.decode("utf-8", errors="backslashreplace")

    async def _query(self, what: str, method: Callable[..., object], *args: object, **kwargs: object) -> str:
        """`_fetch` in a worker thread; Kite's and requests' errors as `BrokerQueryError`."""
        try:
            raw = await asyncio.to_thread(self._fetch, method, *args, **kwargs)
        except kite_errors.TokenException as e:
            raise self._expired(what, e) from e
        except _FAILED as e:
            msg = f"{self.account}: Kite {what} failed: {_describe(e)}"
            raise BrokerQueryError(msg) from e
        self._token_expired = False
        return raw

    async def _part(
        self, account: str, what: str, method: Callable[[], object], failures: dict[str, str]
    ) -> str | None:
        """One part of a snapshot, or None if it failed (why, in `failures`); an expired token fails all."""
        try:
            raw = await self._query(what, method)
        except KiteTokenExpired:
            raise
        except BrokerQueryError as e:
            log.warning("%s: kite %s unavailable: %s", account, what, e)
            for part in _PARTS_OF[what]:
                failures[part] = f"kite {what} unavailable: {e}"
            return None
        return raw

    def _translate(
        self,
        account: str,
        what: str,
        raw: str | None,
        translate: Callable[[str], Any],
        failures: dict[str, str],
    ) -> Any:  # noqa: ANN401 - the translator's result
        """`translate(raw)`, or None (logged, in `failures`) if the part is missing or untranslatable."""
        if raw is None:
            return None
        try:
            return translate(raw)
        except TrueupError as e:
            log.warning("%s: kite %s untranslatable: %s", account, what, e)
            failures[what] = f"kite {what} untranslatable: {e}"
            return None

    def _order_book_of(self, account: str) -> Callable[[str], OrderBook]:
        placing = self._placing  # replaced whole on each change: one consistent view

        def translate(raw: str) -> OrderBook:
            return to_order_book(raw, account=account, is_ours=self.is_ours, placing=placing)

        return translate

    async def _book(self, account: str, what: str) -> OrderBook:
        raw = await self._query(f"{what}: orders", self._kite.orders)
        try:
            return self._order_book_of(account)(raw)
        except TrueupError as e:
            msg = f"{account}: {what}: untranslatable order book: {e}"
            raise BrokerQueryError(msg) from e

    def _set_placing(self, cid: str, placing: Placing) -> None:
        with self._lock:
            self._placing = {**self._placing, cid: placing}

    def _forget_placing(self, cid: str) -> None:
        with self._lock:
            self._placing = {k: v for k, v in self._placing.items() if k != cid}

    def _expired(self, what: str, error: BaseException) -> KiteTokenExpired:
        self._token_expired = True
        log.error("kite %s: %s failed: %s", self.account, what, EXPIRY_MESSAGE)
        return KiteTokenExpired(f"{self.account}: Kite {what} failed: {EXPIRY_MESSAGE} ({_describe(error)})")

    async def _find_after_uncertain(self, request: OrderRequest, why: str) -> SubmitAck:
        """After a submit without an answer: look for the tag in today's orders before anything else."""
        cid = request.client_order_id
        log.warning("submit %s: outcome unknown (%s); looking for it in today's orders", cid, why)
        for attempt in range(self.lookup_attempts):
            await asyncio.sleep(self.lookup_backoff * attempt)
            try:
                found = await self.lookup(request.account, cid)
            except BrokerQueryError as e:
                log.warning("submit %s: look %d failed: %s", cid, attempt + 1, e)
                continue
            if found is not None and found.broker_order_id is not None:
                log.info("submit %s: found at Kite as %s", cid, found.broker_order_id)
                raw = REPORT_ENCODER.encode(found).decode()  # the port's answer: a report
                return SubmitAck(broker_order_id=found.broker_order_id, raw=raw, report=found)
        msg = (
            f"submit {cid}: outcome unknown ({why}); not in today's Kite orders after "
            f"{self.lookup_attempts} looks; never re-sent"
        )
        raise SubmitUncertain(msg)

    async def _ack(self, request: OrderRequest, raw: str) -> SubmitAck:
        """The acknowledgement of an answered placement (one order, or autoslice children)."""
        cid = request.client_order_id
        if not self.autoslice:
            try:
                order_id = _PLACE_ANSWER.decode(raw).data.order_id
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                return await self._find_after_uncertain(request, f"unreadable answer: {e}")
            return SubmitAck(broker_order_id=order_id, raw=raw)
        try:
            placement = to_autoslice_placement(raw, account=request.account)
        except TrueupError as e:
            return await self._find_after_uncertain(request, f"unreadable autoslice answer: {e}")
        if not placement.placed:
            self._forget_placing(cid)
            msg = f"Kite placed no slice of order {cid}: {'; '.join(placement.refused)}"
            raise SubmitRejected(msg, raw=raw)
        self._set_placing(cid, Placing(quantity=request.quantity, children=frozenset(placement.placed)))
        described = f"autoslice: {len(placement.placed)} slices placed"
        if placement.refused:
            described += f", {len(placement.refused)} refused ({'; '.join(placement.refused)})"
            log.warning("submit %s: %s", cid, described)
        report = OrderReport(
            account=request.account,
            client_order_id=cid,
            broker_order_id=placement.placed[0],
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            status=OrderStatus.PENDING_NEW,
            filled_qty=Decimal(0),
            avg_price=None,
            ts_event=self.clock(),
            raw_status=described,
            limit_price=request.limit_price,
        )
        return SubmitAck(broker_order_id=placement.placed[0], raw=raw, report=report)

    def _place_params(self, request: OrderRequest) -> dict[str, object]:
        """The arguments of kiteconnect's `place_order`; a request Kite cannot take is refused here."""
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
            "variety": self.variety,
            "exchange": exchange,
            "tradingsymbol": tradingsymbol,
            "transaction_type": Side(request.side).value,
            "quantity": _whole(request.quantity, f"order {cid}", rejected=True),
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

    def _check_account(self, account: str) -> None:
        if account != self.account:
            msg = f"account {account!r} is not this Kite client's ({self.account!r})"
            raise BrokerQueryError(msg)


def _whole(quantity: Decimal, what: str, *, rejected: bool = False) -> int:
    """Kite quantities are whole units (lots for derivatives)."""
    if not quantity.is_finite() or quantity <= 0 or quantity != quantity.to_integral_value():
        msg = f"{what}: Kite quantities are whole positive numbers, got {quantity}"
        raise SubmitRejected(msg) if rejected else BrokerQueryError(msg)
    return int(quantity)


def _describe(error: BaseException) -> str:
    """An error as text: Kite's HTTP code and message, or the exception's type and text."""
    code = getattr(error, "code", None)
    where = f" (HTTP {code})" if isinstance(error, kite_errors.KiteException) else ""
    return f"{type(error).__name__}{where}: {str(error)[:500]}"


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.strftime(KITE_TIME_FORMAT)  # kiteconnect parsed Kite's own format, naive IST
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _encode(payload: object) -> str:
    """JSON text of what kiteconnect decoded, in Kite's formats."""
    return json.dumps(payload, default=_json_default, separators=(",", ":"), ensure_ascii=False)


if TYPE_CHECKING:  # mypy proves KiteClient meets the port

    def _meets_the_port(client: KiteClient) -> BrokerClient:
        return client
