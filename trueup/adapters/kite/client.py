"""`KiteClient`: the `BrokerClient` for Zerodha Kite Connect, through kiteconnect's `KiteConnect`.

Needs the `kite` extra (`pip install 'trueup[kite]'`); the package `__init__` does not
import this module, so `import trueup` works without it. The client composes:
`transport.py` (kiteconnect's calls in worker threads with the client's `timeout`,
answered as the raw JSON text Kite sent, Kite's errors translated, token expiry),
`reads.py` (order book, lookup, history, fills, cancel targets, the snapshot's
consistent cut), `params.py` (an order request as kiteconnect's arguments), `inbox.py`
(the bounded update inbox) and `updates.py` (updates as stream items). Answers are
translated by the pure `translate.py` / `groups.py`, so prices and quantities are exact
Decimals and every payload can be stored verbatim.

Outcomes:

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
* snapshot (`reads.py`): trades, orders, positions (`positions()` plus `holdings()`),
  then trades again, repeated while a fill lands during the read. A part that cannot be
  fetched or translated is None (STALE_DATA, the reason in `failures`), never `[]`.
  `complete_history` is always False: `orders()` and `trades()` cover today only, from
  `history_start` (midnight Asia/Kolkata), given as `history_since`.
* token expiry (`transport.py`): Kite access tokens expire daily. After a
  `TokenException`, `snapshot`, `lookup` and `cancel` raise `KiteTokenExpired` (a
  `BrokerQueryError` whose message says so), reconciliation stores STALE_DATA and the
  gate stays BLOCKED, until `set_access_token` is called with a new token.
* stream (`updates.py`, `inbox.py`): postbacks handed in by the receiver (`postback.py`)
  and WebSocket order updates (`on_order_update`, for a `KiteTicker` the host runs) are
  yielded raw as `RawMessage`s, before verification; they only trigger a `RefreshNeeded`
  (the order book is re-read), and one whose checksum fails is refused (INVALID_REPORT,
  kept). At most `inbox_limit` updates wait: beyond that postbacks are refused (503, Kite
  retries) and WebSocket updates dropped with a refresh forced.
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
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgspec

from trueup.adapters.base import (
    BrokerClient,
    OrderRequest,
    StreamItem,
    SubmitAck,
    SubmitRejected,
    SubmitUncertain,
)
from trueup.adapters.kite import updates
from trueup.adapters.kite.groups import Placing, to_autoslice_placement
from trueup.adapters.kite.ids import TagPredicate
from trueup.adapters.kite.inbox import Inbox
from trueup.adapters.kite.params import place_params, placed_order_id, whole
from trueup.adapters.kite.postback import PostbackReceiver, PostbackServer, serve
from trueup.adapters.kite.reads import KiteReads
from trueup.adapters.kite.transport import FAILED, KiteTokenExpired, KiteTransport, encode
from trueup.adapters.kite.updates import Secret, Trigger
from trueup.domain.errors import BrokerQueryError, ConfigError, TrueupError
from trueup.domain.reports import (
    REPORT_ENCODER,
    BrokerSnapshot,
    FillReport,
    LookupAnswer,
    OrderReport,
    Report,
)
from trueup.domain.status import OrderStatus

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

_UTC_NOW: Final[Callable[[], datetime]] = functools.partial(datetime.now, UTC)
"""The default clock: now, tz-aware UTC."""


class InboxFull(TrueupError):  # noqa: N818 - names the condition
    """Raised by `accept_postback` when `inbox_limit` updates wait: the receiver answers 503."""


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
        lookback: float | None = None,
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
            lookback: seconds of history a snapshot vouches for; Kite lists only today, so
                `history_since` is the later of the trading day's start and ``now - lookback``
                (None: the trading day's start).
        """
        if lookback is not None and not lookback > 0:
            msg = f"lookback must be > 0 seconds, got {lookback!r}"
            raise ConfigError(msg)
        self.lookback = lookback
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
        self._secret = Secret(api_secret)
        self._transport = KiteTransport(api_key, access_token, account=account, root=root, timeout=timeout)
        self._lock = threading.Lock()
        """Guards `_placing` (the inbox has its own lock)."""
        self.clock = clock
        self.snapshot_attempts = snapshot_attempts
        self._inbox = Inbox(inbox_limit)
        self._placing: dict[str, Placing] = {}
        """Our id -> the autoslice placement this process made with it (`groups.Placing`)."""
        self._reads = KiteReads(self._transport, self, lambda: self._placing)
        self._translators: dict[str, Callable[[str], Sequence[Report]]] = {
            "postback": Trigger(account, self._secret),
            "ws_order_update": Trigger(account, None),
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

    @property
    def inbox_limit(self) -> int:
        """Updates waiting for `stream()` at most (the constructor's `inbox_limit`)."""
        return self._inbox.limit

    @inbox_limit.setter
    def inbox_limit(self, limit: int) -> None:
        self._inbox.limit = limit

    @property
    def refused_postbacks(self) -> int:
        """Postbacks refused because the inbox was full (answered 503: Kite retries them)."""
        return self._inbox.refused_postbacks

    @property
    def dropped_updates(self) -> int:
        """WebSocket updates dropped because the inbox was full (a refresh is forced instead)."""
        return self._inbox.dropped_updates

    # -- the access token -----------------------------------------------------------------

    @property
    def token_expired(self) -> bool:
        """Whether Kite refused the access token since it was last set."""
        return self._transport.token_expired

    def set_access_token(self, access_token: str) -> None:
        """Use a new access token (after the daily login); ends the expiry window."""
        if not access_token:
            msg = "Kite access_token must be non-empty"
            raise ConfigError(msg)
        self._transport.set_access_token(access_token)
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
        params = place_params(request, variety=self.variety)
        kite = self._transport.kite
        place = kite.place_autoslice_order if self.autoslice else kite.place_order
        if self.autoslice:
            # Before sending: a book read (or a lookup) while Kite is still placing the
            # children must not take the children seen for the whole order.
            self._set_placing(cid, Placing(quantity=request.quantity))
        try:
            raw = await self._transport.place(cid, place, params)
        except SubmitRejected:  # nothing was placed: no placement to wait for
            self._forget_placing(cid)
            raise
        except FAILED as e:
            return await self._find_after_uncertain(request, self._transport.describe(e))
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
        targets, unsure = await self._reads.cancel_targets(account, cid, broker_order_id)
        cancelled = []
        for ref in targets:
            try:
                cancel = self._transport.kite.cancel_order
                await self._transport.query(
                    f"cancel {cid} ({ref.order_id})", cancel, ref.variety, ref.order_id
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
        book = await self._reads.book(account, f"modify {cid}")
        members = book.members.get(cid, [])
        if len(members) != 1 or members[0].is_slice or not members[0].working:
            msg = f"{account}: {cid!r} is not one working Kite order today ({len(members)}); not modified"
            raise BrokerQueryError(msg)
        changes: dict[str, object] = {}
        if quantity is not None:
            changes["quantity"] = whole(quantity, f"modify {cid}")
        if limit_price is not None:
            changes["price"] = str(limit_price)
        ref = members[0]
        await self._transport.query(
            f"modify {cid}", self._transport.kite.modify_order, ref.variety, ref.order_id, **changes
        )

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The logical order carrying our id in today's `orders()`, or None if it has none.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book could not be read; absence is unknown.
        """
        self._check_account(account)
        return await self._reads.lookup(account, client_order_id)

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """`lookup` with the `orders()` body verbatim; one that does not translate comes with its error.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book could not be read; absence is unknown.
        """
        self._check_account(account)
        return await self._reads.lookup_answer(account, client_order_id)

    async def history(self, account: str, client_order_id: str) -> list[OrderReport]:
        """Every state each Kite order of our id went through (`order_history()`), oldest first per order.

        For audit: a logical order's slices are listed one after another, each report
        being one slice's state (not the logical order's).

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book or a history could not be read or translated.
        """
        self._check_account(account)
        return await self._reads.history(account, client_order_id)

    async def fills(self, account: str, client_order_id: str) -> list[FillReport]:
        """The executions of every Kite order of our id (`order_trades()`), with our id set.

        Raises:
            KiteTokenExpired: the access token expired.
            BrokerQueryError: the order book or a trade list could not be read or translated.
        """
        self._check_account(account)
        return await self._reads.fills(account, client_order_id)

    def history_start(self, now: datetime) -> datetime:
        """The start of today's Kite trading day (midnight Asia/Kolkata, in UTC): `DayScopedBroker`.

        `orders()` and `trades()` list orders sent since then only: not finding an order
        sent earlier proves nothing (it may have filled yesterday).
        """
        return self._reads.history_start(now)

    async def snapshot(self, account: str) -> BrokerSnapshot:
        """Today's trades, orders (logical) and the account's positions; a failed part is None.

        A consistent cut (`KiteReads.snapshot`): trades, orders, positions, holdings, then
        trades again, the whole read repeated (`snapshot_attempts` in all) while a fill
        lands during it; positions are `positions()` plus `holdings()`. `history_since`
        is the start of today's trading day; `complete_history` stays False.

        Raises:
            KiteTokenExpired: the access token expired (the whole snapshot is unknown).
            BrokerQueryError: the account is not this client's.
        """
        self._check_account(account)
        return await self._reads.snapshot(account)

    def stream(self) -> AsyncIterator[StreamItem]:
        """Postbacks and WebSocket order updates as `RawMessage`s, then a `RefreshNeeded`.

        Payloads are yielded verbatim, before verification (the translator verifies). After
        each burst containing an authentic update (a verified postback, or a WebSocket
        update) comes one `RefreshNeeded`: updates arrive out of order, twice, and without
        fills, so the order book is the truth to re-read. One iteration at a time; a new
        one takes over from the previous. Payloads received with nobody iterating wait.
        """
        return updates.stream(
            self._inbox,
            account=self.account,
            source=SOURCE,
            translators=self._translators,
            secret=self._secret,
        )

    # -- feeding the stream -----------------------------------------------------------------

    def accept_postback(self, body: bytes) -> None:
        """Queue one postback body, verbatim, for `stream()`; thread-safe (the receiver's sink).

        Raises:
            InboxFull: `inbox_limit` updates are waiting; the receiver answers 503 and Kite
                retries the postback later (counted in `refused_postbacks`).
        """
        if not self._inbox.put("postback", body.decode("utf-8", errors="backslashreplace")):
            msg = f"kite {self.account}: {self.inbox_limit} updates waiting; postback refused, Kite retries"
            raise InboxFull(msg)

    def on_order_update(self, ws: object, data: Mapping[str, Any]) -> None:  # noqa: ARG002 - KiteTicker's signature
        """`KiteTicker.on_order_update` callback: queue the update as `{"type": "order", "data": ...}`.

        KiteTicker has decoded the frame already (numbers are floats by then); it is
        encoded back as JSON, whose shortest float text is the text Kite sent for prices
        written with up to 15 significant digits.
        """
        if not self._inbox.put("ws_order_update", encode({"type": "order", "data": data})):
            # Cannot be refused: dropped (counted), and a refresh forced so the book is read anyway.
            log.warning("kite %s: inbox full; WebSocket order update dropped, refresh forced", self.account)

    def postback_app(self) -> PostbackReceiver:
        """The WSGI app that feeds this client's stream: mount it at Kite's `postback_url`."""
        return PostbackReceiver(self.accept_postback)

    def serve_postbacks(self, host: str = "127.0.0.1", port: int = 0) -> PostbackServer:
        """Serve `postback_app()` on `host:port` in a daemon thread (stdlib asyncio; see `postback`)."""
        return serve(self.accept_postback, host, port)

    # -- internals ----------------------------------------------------------------------------

    def _set_placing(self, cid: str, placing: Placing) -> None:
        with self._lock:
            self._placing = {**self._placing, cid: placing}

    def _forget_placing(self, cid: str) -> None:
        with self._lock:
            self._placing = {k: v for k, v in self._placing.items() if k != cid}

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
                order_id = placed_order_id(raw)
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

    def _check_account(self, account: str) -> None:
        if account != self.account:
            msg = f"account {account!r} is not this Kite client's ({self.account!r})"
            raise BrokerQueryError(msg)


if TYPE_CHECKING:  # mypy proves KiteClient meets the port

    def _meets_the_port(client: KiteClient) -> BrokerClient:
        return client
