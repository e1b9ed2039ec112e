"""`trueup.Ledger`: the embeddable facade over the log, the rules and the read models.

Every call that only touches the store is a use case of `trueup.application` (see
`Books`); this module adds opening and closing the store, and the calls that reach a
broker or a thread: `submit`, `submit_async` and `subscribe`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from trueup.adapters.base import BrokerClient, OrderRequest
from trueup.adapters.eventstore.log import LoggedEvent
from trueup.adapters.eventstore.store import open_store, redact, resolve_store_url
from trueup.application.books import Books
from trueup.application.evidence import MATCH_EVERY_SECONDS, check_match_every
from trueup.application.unit_of_work import Clock, utc_now
from trueup.domain.errors import StoreError
from trueup.domain.reconcile import PositionPolicy
from trueup.domain.views import OrderView
from trueup.loop_thread import LoopThread
from trueup.settings import LedgerSettings, validate
from trueup.submission import Submitter
from trueup.subscriptions import Subscription, subscribe

__all__ = ["Clock", "Ledger", "LoggedEvent", "utc_now"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SYNC_LOOP_LOCK = threading.Lock()


class Ledger(Books):
    """The books: orders, fills and positions as the broker reports them, with every discrepancy.

    Open with `Ledger.open(store)`; close with `close()` or use it as a context manager.
    Methods are thread-safe in the sense of the event store: concurrent writers to the
    same order are serialized by optimistic concurrency with reload-and-retry.
    """

    _sync_loop: LoopThread | None = None
    """The event loop of the synchronous broker calls (`run`), started on first use."""

    @classmethod
    def open(  # noqa: PLR0913 - the store, then keyword-only settings
        cls,
        store: str | None = None,
        *,
        clock: Clock = utc_now,
        policies: Mapping[str, PositionPolicy] | None = None,
        lost_after: int = 3,
        max_snapshot_age: float = 60.0,
        match_every: float = MATCH_EVERY_SECONDS,
        closed_order_retention: float | None = None,
    ) -> Self:
        """Open a ledger on a store URL.

        Args:
            store: ``sqlite:///path.db``, ``postgresql://...`` or ``memory://``; defaults
                to ``TRUEUP_STORE`` or ``sqlite:///trueup.db``.
            clock: source of "now" (tz-aware UTC); tests pass a fixed clock.
            policies: position policy per account (default `repair`).
            lost_after: complete snapshots an open order may be missing from before LOST.
            max_snapshot_age: seconds after which a snapshot is STALE_DATA.
            match_every: seconds of snapshot time between two `BooksMatched` records while
                the books keep matching (default 300; 0 records every clean reconcile).
            closed_order_retention: seconds after which an order closed here and at the
                broker is no longer compared by reconciliations after the account's first
                one in this process (None: every listed order is always compared). Nothing
                is deleted from the log or the read models.

        Returns:
            The ledger, with its read models caught up.

        Raises:
            ConfigError: the URL is malformed, or `lost_after`, `max_snapshot_age` or
                `match_every` is out of range (``lost_after: must be >= 1, got -5``), before
                the store is opened.
            StoreError: the store cannot be opened.
        """
        settings = validate(
            {
                "lost_after": lost_after,
                "max_snapshot_age": max_snapshot_age,
                "match_every": match_every,
                "closed_order_retention": closed_order_retention,
            },
            LedgerSettings,
        )
        check_match_every(match_every)  # finite too (msgspec's bounds let inf and NaN through)
        opened = open_store(resolve_store_url(store))
        try:
            ledger = cls(
                opened,
                clock=clock,
                policies=policies,
                lost_after=settings.lost_after,
                max_snapshot_age=settings.max_snapshot_age,
                match_every=settings.match_every,
                closed_order_retention=settings.closed_order_retention,
            )
            try:
                ledger.projector.catch_up()
            except StoreError as e:
                corrupt = _corruption(e)
                if corrupt is not None:
                    msg = f"store {redact(opened.config.url)} is not a readable SQLite database: {corrupt}"
                    raise StoreError(msg) from e
                # A read-only store or a full disk: open anyway. What needs nothing written
                # (an order, the log) reads; a read of models that could not catch up raises.
                log.warning("%r opened, but its read models cannot catch up: %s", ledger, e)
            except sqlite3.DatabaseError as e:
                # A truncated or corrupt file passes the header check and fails on first read.
                msg = f"store {redact(opened.config.url)} is not a readable SQLite database: {e}"
                raise StoreError(msg) from e
        except BaseException:
            opened.close()  # a failed open holds no connection (or SQLite file) open
            raise
        return ledger

    def close(self) -> None:
        """Stop the loop of the synchronous calls (if one ran), then close the store's connections."""
        with _SYNC_LOOP_LOCK:
            loop, self._sync_loop = self._sync_loop, None
        if loop is not None:
            loop.close()
        self.store.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this ledger's own event loop, from synchronous code, and wait.

        The loop `submit` uses: a broker client first used there stays bound to it, so
        synchronous code closes it with ``ledger.run(client.close())`` (or awaits anything
        else of it) on the same loop. One loop thread per ledger, started on first use,
        stopped by `close`.

        Raises:
            RuntimeError: called from that loop itself (await instead).
        """
        with _SYNC_LOOP_LOCK:
            if self._sync_loop is None:
                self._sync_loop = LoopThread(f"trueup-ledger-{id(self):x}")
            loop = self._sync_loop
        return loop.run(coroutine)

    def __enter__(self) -> Self:
        """Use as a context manager."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on exit."""
        self.close()

    def __repr__(self) -> str:
        """Name the store, never its password."""
        return f"Ledger({redact(self.store.config.url)!r})"

    # -- the calls that reach a broker or a thread ---------------------------------------------

    def submit(self, request: OrderRequest, broker: BrokerClient) -> OrderView:
        """Send a new order crash-safely from synchronous code (see `trueup.submission`).

        Write-ahead intent and SUBMITTED, one broker call carrying the client id, then
        the acknowledgement and broker id. An existing client id returns the existing
        order and sends nothing. From async code use `submit_async`.

        Runs on the ledger's own event loop (a thread started on first use, see `run`),
        never a new loop per call: a broker client such as `IbClient`, bound to the loop
        it first connects on, is then on the same loop for every submit.

        Raises:
            InvalidReport: the client id does not fit every broker's field.
            NotReadyError: the gate refuses new orders (state, lock or quarantine).
        """
        return self.run(self.submit_async(request, broker))

    async def submit_async(self, request: OrderRequest, broker: BrokerClient) -> OrderView:
        """The async equivalent of `submit`, for event loops (the service, async brokers)."""
        return await Submitter(self, broker).submit(request)

    def subscribe(self, handler: Callable[[LoggedEvent], object], from_position: int = 0) -> Subscription:
        """Call `handler` with every event after `from_position`, in log order, in a thread.

        PostgreSQL delivers by LISTEN/NOTIFY, SQLite by a polling follower. A handler that
        raises sees the same event again after a backoff; nothing is skipped. For a saved
        position that survives a crash use `trueup.subscriptions.SavedPositionConsumer`.

        Returns:
            The running subscription (a context manager; `stop()` ends it).
        """
        return subscribe(self, handler, from_position)


def _corruption(error: BaseException) -> sqlite3.DatabaseError | None:
    """The SQLite error saying the file is corrupt, in an error's causes (not "read-only", "busy")."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlite3.DatabaseError) and not isinstance(seen, sqlite3.OperationalError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
