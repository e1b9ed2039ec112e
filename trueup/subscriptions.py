"""Follow the log as it grows: followers, handler subscriptions and saved-position consumers.

Three layers, each built on the one before:

- `follow(ledger, after)` returns a `Follower`: an iterator of `LoggedEvent`s after a
  position, in log order, that blocks for new events until stopped. On PostgreSQL it is
  woken by LISTEN/NOTIFY (eventsourcing's recorder subscription); on SQLite, which has
  no subscriptions in eventsourcing 9.5 (EVENTSOURCING.md gotcha 1), it polls with a
  short adaptive sleep.
- `subscribe(ledger, handler, from_position)` runs a handler on every event in a
  background thread. Nothing is saved: a new subscription starts where it is told to.
  A handler that raises sees the same event again after a backoff; nothing is skipped.
- `SavedPositionConsumer(ledger, name, handler)` keeps its position in the store's own
  database (table ``trueup_consumers``) and resumes after it. At-least-once mode saves
  the position after the handler returns; exactly-once mode runs the handler inside the
  transaction that saves the position, so what the handler writes through the cursor it
  is given commits (or not) together with the position.

Both backends give the same guarantee readers rely on: an event becomes visible only
after every event before it is visible (SQLite has one writer at a time; PostgreSQL
inserts take an EXCLUSIVE table lock, gotcha 5), so "position > last seen" never skips
an event that commits late. PostgreSQL positions may have permanent holes (a rolled-back
insert burns sequence numbers); nothing here assumes positions are consecutive.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from enum import Enum, auto
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, TypeVar, cast, overload

from eventsourcing.persistence import ApplicationRecorder, Notification
from eventsourcing.persistence import Subscription as RecorderSubscription

from trueup.adapters.eventstore.log import LoggedEvent
from trueup.adapters.store import Cursor, Store

if TYPE_CHECKING:
    from trueup.application.books import Books as Ledger

log = logging.getLogger(__name__)

T = TypeVar("T")

CONSUMERS_TABLE = "trueup_consumers"
"""Table holding each `SavedPositionConsumer`'s position, in the store's database."""

PAGE_SIZE = 1000
"""Notifications read per query (the library's default section of 10 is 3x slower, gotcha 9)."""

Handler = Callable[["LoggedEvent"], object]
"""Called with each event; its return value is ignored."""

TransactionalHandler = Callable[["LoggedEvent", Cursor], object]
"""Called with each event and the cursor of the transaction that saves the position."""


@dataclass(frozen=True)
class Backoff:
    """How long to wait before retrying a failed handler or a failed read.

    The delay starts at `first` seconds and doubles after each consecutive failure, up
    to `most`: a bug in a handler must not spin a core or flood the log, but a passing
    fault (a dropped connection) should cost little.
    """

    first: float = 0.05
    """Delay after the first failure, in seconds."""
    most: float = 2.0
    """Longest delay, in seconds."""

    def delays(self) -> Iterator[float]:
        """The successive delays: first, 2*first, ... capped at most."""
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.most)


class _Stopped(Enum):
    STOPPED = auto()


STOPPED = _Stopped.STOPPED
"""What `_Retrier.call` returns when stopped before the call succeeded."""


class _Retrier:
    """Retries a handler with backoff, logging each failure with its traceback, and counts failures."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.errors = 0
        self.last_error: Exception | None = None

    def failed(self, error: Exception, delay: float, stop: threading.Event) -> bool:
        """Count `error` (already logged by the caller), wait `delay`; False if stopped meanwhile."""
        self.errors += 1
        self.last_error = error
        return not stop.wait(delay)

    def call(
        self, fn: Callable[[LoggedEvent], T], event: LoggedEvent, owner: str, stop: threading.Event
    ) -> T | _Stopped:
        """``fn(event)``, repeated until it returns without raising; STOPPED if stopped first."""
        for delay in self.backoff.delays():
            if stop.is_set():
                break
            try:
                return fn(event)
            except Exception as e:  # any handler failure is logged, counted and retried
                log.exception(
                    "%s: handler failed on event %d (%s); retrying in %.3fs",
                    owner,
                    event.position,
                    event.topic,
                    delay,
                )
                if not self.failed(e, delay, stop):
                    break
        return STOPPED


def _logged_event(store: Store, notification: Notification) -> LoggedEvent:
    return LoggedEvent(
        position=notification.id,
        topic=notification.topic,
        event=store.app.mapper.to_domain_event(notification),
    )


# -- followers ---------------------------------------------------------------------------


class Follower(ABC):
    """The events after a position, in log order, waiting for new ones until stopped.

    Iterate it once, from one thread; `stop()` may be called from any thread and ends
    the iteration promptly (within about 0.1 s on PostgreSQL). It holds at most one page
    of events in memory, never the whole log. A read failure (say the database went
    away) is raised from the iteration; iterate again to resume after `position`.
    """

    def __init__(self, store: Store, after: int = 0, *, stop_event: threading.Event | None = None) -> None:
        """Follow `store`'s log after position `after`.

        Args:
            store: the open store whose log to follow.
            after: yield events with a position greater than this.
            stop_event: ends the iteration when set; `stop()` sets it. Pass your own to
                stop several followers (or a follower and its caller) together.
        """
        self.store = store
        self.position = after
        """Position of the last event yielded (initially `after`)."""
        self._stop = stop_event if stop_event is not None else threading.Event()

    @property
    def stopped(self) -> bool:
        """Whether `stop()` was called (or the stop event set)."""
        return self._stop.is_set()

    def stop(self) -> None:
        """End the iteration: a blocked ``next()`` returns promptly, then the iteration ends."""
        self._stop.set()

    def __iter__(self) -> Iterator[LoggedEvent]:
        """Yield the events after `position`, updating `position` as each is yielded."""
        return self.events()

    def events(self) -> Generator[LoggedEvent, None, None]:
        """The same as iterating; a generator, so it can be closed early (``close()``)."""
        return self._follow()

    @abstractmethod
    def _follow(self) -> Generator[LoggedEvent, None, None]: ...

    def _yielding(self, notification: Notification) -> LoggedEvent:
        """Decode one notification and advance `position` past it."""
        event = _logged_event(self.store, notification)
        self.position = notification.id
        return event

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PollingFollower(Follower):
    """Follows the log by polling `select_notifications` (SQLite, memory://, or any store).

    The sleep between empty polls starts at `min_sleep` and doubles up to `max_sleep`
    while the log is idle, and drops back to `min_sleep` after an event: a busy log is
    followed within milliseconds, an idle one costs about 20 cheap queries a second.
    """

    def __init__(
        self,
        store: Store,
        after: int = 0,
        *,
        stop_event: threading.Event | None = None,
        min_sleep: float = 0.002,
        max_sleep: float = 0.05,
    ) -> None:
        """See `Follower`; `min_sleep` and `max_sleep` bound the idle poll interval in seconds."""
        super().__init__(store, after, stop_event=stop_event)
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep

    def _follow(self) -> Generator[LoggedEvent, None, None]:
        recorder = self.store.app.recorder
        sleep = self.min_sleep
        while not self._stop.is_set():
            page = recorder.select_notifications(
                start=self.position, limit=PAGE_SIZE, inclusive_of_start=False
            )
            for notification in page:
                if self._stop.is_set():
                    return
                yield self._yielding(notification)
            if page:
                # More may be waiting (a full page, or events appended while we yielded):
                # read again at once rather than sleeping.
                sleep = self.min_sleep
                continue
            self._stop.wait(sleep)
            sleep = min(sleep * 2, self.max_sleep)


class ListenNotifyFollower(Follower):
    """Follows a PostgreSQL log with eventsourcing's LISTEN/NOTIFY recorder subscription.

    Every insert into the events table issues ``NOTIFY`` in its transaction, delivered at
    commit; the library's subscription LISTENs on one pooled connection and, when woken,
    reads the notifications after the last one it saw into a bounded queue (10 pages of
    500). We wrap it for two reasons:

    - Its ``next()`` blocks with no timeout, so `stop()` stops the library subscription,
      which shuts its queue down and unblocks the reader.
    - It starts reading the log *before* its LISTEN is in place, so an event committed in
      between is not announced and would wait for the next insert. A watchdog therefore
      checks every `stall_check` seconds whether we have waited a whole interval while the
      log holds events past `position`, and if so restarts the subscription from
      `position` (nothing is yielded twice). Set `stall_check` to None to trust NOTIFY.
    """

    _TICK = 0.1
    """Watchdog wake-up: bounds how late it notices a stop event set by someone else."""

    def __init__(
        self,
        store: Store,
        after: int = 0,
        *,
        stop_event: threading.Event | None = None,
        stall_check: float | None = 1.0,
    ) -> None:
        """See `Follower`; `stall_check` is the watchdog interval in seconds (None: off)."""
        super().__init__(store, after, stop_event=stop_event)
        self.stall_check = stall_check
        self.restarts = 0
        """Subscriptions the watchdog restarted because a NOTIFY went missing."""
        self._lock = threading.Lock()
        self._subscription: RecorderSubscription[ApplicationRecorder] | None = None
        self._waiting_since: float | None = None
        """When the reader started waiting in ``next()`` (None: it is busy with an event)."""

    def stop(self) -> None:
        """End the iteration; the blocked reader is woken at once."""
        self._stop.set()
        self._stop_subscription()

    def _stop_subscription(self) -> None:
        with self._lock:
            subscription = self._subscription
        if subscription is not None:
            subscription.stop()

    def _follow(self) -> Generator[LoggedEvent, None, None]:
        recorder = self.store.app.recorder
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(done,), name="trueup-follower-watchdog", daemon=True
        )
        watchdog.start()
        try:
            while not self._stop.is_set():
                subscription = recorder.subscribe(gt=self.position)
                with self._lock:
                    self._subscription = subscription
                # Set after publishing the subscription: either stop() saw it, or we see this.
                if self._stop.is_set():
                    subscription.stop()
                # Leaving the block (end, error, or the generator closed at a yield) stops
                # the library's threads and joins them, returning the LISTEN connection.
                with subscription:
                    while True:
                        self._waiting_since = time.monotonic()
                        try:
                            notification = next(subscription)
                        except StopIteration:
                            break  # stopped by us or by the watchdog: resubscribe unless stopping
                        finally:
                            self._waiting_since = None
                        yield self._yielding(notification)
                with self._lock:
                    self._subscription = None
        finally:
            done.set()

    def _watch(self, done: threading.Event) -> None:
        """Wake the reader on an external stop, and restart a subscription that missed a NOTIFY."""
        last_check = time.monotonic()
        while not done.is_set():
            if self._stop.wait(self._TICK):
                self._stop_subscription()  # set by the caller's stop event, not our stop()
                return
            now = time.monotonic()
            if self.stall_check is None or now - last_check < self.stall_check:
                continue
            last_check = now
            # A stall: the reader has waited a whole interval while the log has events past
            # its position. (A reader busy in a slow handler is not waiting: no false alarm.)
            since = self._waiting_since
            if since is None or now - since < self.stall_check:
                continue
            position = self.position
            try:
                newest = self.store.app.recorder.max_notification_id() or 0
            except Exception:  # a failing check must not end the watchdog
                log.warning("follower watchdog could not read the newest position", exc_info=True)
                continue
            if newest > position and self._waiting_since == since:
                log.info("follower missed a notification after position %d; resubscribing", position)
                self.restarts += 1
                self._stop_subscription()


def follow_store(store: Store, after: int = 0, *, stop_event: threading.Event | None = None) -> Follower:
    """The follower that suits `store`: LISTEN/NOTIFY on PostgreSQL, polling elsewhere."""
    if store.dialect == "postgres":
        return ListenNotifyFollower(store, after, stop_event=stop_event)
    return PollingFollower(store, after, stop_event=stop_event)


def follow(ledger: Ledger, after: int = 0, *, stop_event: threading.Event | None = None) -> Follower:
    """Follow `ledger`'s log after position `after`, waiting for new events until stopped.

    Example::

        with follow(ledger, after=ledger_position) as events:
            for logged in events:
                print(logged.position, logged.topic)

    Args:
        ledger: the open ledger whose log to follow.
        after: yield events with a position greater than this (0: from the start).
        stop_event: ends the iteration when set (`Follower.stop()` sets it).

    Returns:
        An iterable of `LoggedEvent` in log order; stop it from any thread.
    """
    return follow_store(ledger.store, after, stop_event=stop_event)


# -- subscriptions -----------------------------------------------------------------------


class Subscription:
    """A handler called on every event after a position, in order, in a background thread.

    Created (and started) by `subscribe`. Each event is handed to the handler once per
    run, in log order, and again only if the handler raised on it: the error is logged
    with its traceback and counted in `errors`, and the same event is handed over again
    after a backoff. An event is never skipped, so a handler that always fails on one
    stalls there (watch `errors`). Nothing is saved: use `SavedPositionConsumer` to
    resume across runs.
    """

    def __init__(
        self,
        ledger: Ledger,
        handler: Handler,
        from_position: int = 0,
        *,
        backoff: Backoff | None = None,
        name: str | None = None,
    ) -> None:
        """Start calling `handler` on the events after `from_position`; see `subscribe`."""
        self.ledger = ledger
        self.handler = handler
        self.name: str = name or str(getattr(handler, "__qualname__", handler))
        self._stop = threading.Event()
        self._retrier = _Retrier(backoff or Backoff())
        self._position = from_position
        self._advanced = threading.Condition()
        self._follower: Follower | None = None
        self._follower_lock = threading.Lock()
        # A daemon thread: a subscription somebody forgot to stop must not keep the
        # process alive at exit. Stop it (or use `with`) to end it cleanly.
        self._thread = threading.Thread(
            target=self._run, name=f"trueup-subscription-{self.name}", daemon=True
        )
        self._thread.start()

    @property
    def position(self) -> int:
        """Position of the last event the handler accepted (returned from without raising)."""
        return self._position

    @property
    def errors(self) -> int:
        """Failures so far: handler exceptions plus failed reads of the log."""
        return self._retrier.errors

    @property
    def last_error(self) -> Exception | None:
        """The most recent failure, if any."""
        return self._retrier.last_error

    @property
    def running(self) -> bool:
        """Whether the background thread is still running."""
        return self._thread.is_alive()

    def wait(self, position: int, timeout: float | None = None) -> bool:
        """Block until the handler has accepted the event at `position` (or a later one).

        Args:
            position: the log position to wait for.
            timeout: give up after this many seconds (None: wait for ever).

        Returns:
            True if reached, False on timeout or if the subscription stopped first.
        """
        with self._advanced:
            self._advanced.wait_for(
                lambda: self._position >= position or not self._thread.is_alive(), timeout
            )
            return self._position >= position

    def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the thread to end (at most `timeout` seconds).

        An event whose handler call is in progress is allowed to finish; an event whose
        handler failed and is waiting to be retried stays unaccepted. Safe to call from
        the handler itself and more than once.
        """
        self._stop.set()
        with self._follower_lock:
            current = self._follower
        if current is not None:
            current.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        delays = self._retrier.backoff.delays()
        try:
            while not self._stop.is_set():
                # A fresh follower per attempt, from the last accepted event: after a read
                # failure nothing is lost or repeated.
                current = follow_store(self.ledger.store, self._position, stop_event=self._stop)
                with self._follower_lock:
                    self._follower = current
                try:
                    with closing(current.events()) as events:
                        for event in events:
                            if self._retrier.call(self.handler, event, self.name, self._stop) is STOPPED:
                                return  # stopped while the event waited for a retry: left unaccepted
                            self._accept(event.position)
                            delays = self._retrier.backoff.delays()
                except Exception as e:  # a read failure is logged, counted and retried
                    if self._stop.is_set():
                        return  # e.g. the store was closed under us while stopping
                    delay = next(delays)
                    log.exception(
                        "%s: reading the log after %d failed; retrying in %.3fs",
                        self.name,
                        self._position,
                        delay,
                    )
                    if not self._retrier.failed(e, delay, self._stop):
                        return
        finally:
            with self._advanced:
                self._advanced.notify_all()  # wake wait() callers: we are gone

    def _accept(self, position: int) -> None:
        with self._advanced:
            self._position = position
            self._advanced.notify_all()


def subscribe(
    ledger: Ledger,
    handler: Handler,
    from_position: int = 0,
    *,
    backoff: Backoff | None = None,
    name: str | None = None,
) -> Subscription:
    """Call `handler(logged_event)` on every event after `from_position`, in a background thread.

    Events already in the log come first, then new ones as they are appended, in log
    order, each once (per run). A handler exception is logged and counted and the same
    event is retried after a backoff; see `Subscription`.

    Example::

        with subscribe(ledger, lambda e: print(e.position, e.topic)) as subscription:
            ...
            subscription.wait(ledger_position)

    Args:
        ledger: the open ledger whose log to follow.
        handler: called with each `LoggedEvent`; runs in the subscription's thread.
        from_position: deliver events with a position greater than this.
        backoff: retry delays after failures (default 0.05 s doubling to 2 s).
        name: names the thread and log messages (default: the handler's name).

    Returns:
        The running subscription; stop it with `stop()` or by leaving a ``with`` block.
    """
    return Subscription(ledger, handler, from_position, backoff=backoff, name=name)


# -- saved-position consumers ------------------------------------------------------------


_Outcome = Literal["done", "raced"]


class SavedPositionConsumer:
    """A named consumer that keeps its position in the store and resumes after it.

    At-least-once (the default): ``handler(event)`` runs, then the position is saved in
    its own transaction. A crash (or a failed save) between the two repeats that one
    event, so the handler must tolerate seeing the event after the saved position twice.

    Exactly-once (``exactly_once=True``): ``handler(event, cursor)`` runs inside the
    transaction that moves the position, and whatever it writes through `cursor` to
    tables in the same database commits with the position or not at all. The position
    row is updated first and conditionally (write-first: SQLite takes its write lock at
    once), so two processes running the same consumer never both apply an event: the
    one that loses the race re-reads the position and carries on from there. Because the
    transaction is open while the handler runs, the handler must be quick and do no
    outside I/O (PostgreSQL kills sessions idle in a transaction for 5 s, gotcha 7) and
    must not write through the ledger (on SQLite the store's writer lock is held).

    Positions live in ``trueup_consumers(name TEXT PRIMARY KEY, position BIGINT NOT NULL)``,
    created if missing.
    """

    @overload
    def __init__(
        self,
        ledger: Ledger,
        name: str,
        handler: Handler,
        *,
        exactly_once: Literal[False] = False,
        from_position: int = 0,
        backoff: Backoff | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        ledger: Ledger,
        name: str,
        handler: TransactionalHandler,
        *,
        exactly_once: Literal[True],
        from_position: int = 0,
        backoff: Backoff | None = None,
    ) -> None: ...

    def __init__(  # noqa: PLR0913 - the consumer, its handler, its mode and where a new one starts
        self,
        ledger: Ledger,
        name: str,
        handler: Handler | TransactionalHandler,
        *,
        exactly_once: bool = False,
        from_position: int = 0,
        backoff: Backoff | None = None,
    ) -> None:
        """Create the consumer (and its position row, at `from_position`, if it has none).

        Args:
            ledger: the open ledger whose log to consume.
            name: the consumer's name: its saved position is shared by every process
                running a consumer of this name on this store.
            handler: ``handler(event)``, or ``handler(event, cursor)`` when `exactly_once`.
            exactly_once: run the handler inside the transaction that saves the position.
            from_position: where a consumer with no saved position starts (events after
                it); ignored once a position is saved.
            backoff: retry delays after failures in `run_forever`.
        """
        self.ledger = ledger
        self.store = ledger.store
        self.name = name
        self.exactly_once = exactly_once
        self._retrier = _Retrier(backoff or Backoff())
        self._handler = handler
        self._table = self.store.table(CONSUMERS_TABLE)
        self._saved = from_position
        """The position we last read or wrote; exactly-once updates only from this value."""
        self._create(from_position)

    @property
    def errors(self) -> int:
        """Failures in `run_forever` so far: handler exceptions and failed reads or saves."""
        return self._retrier.errors

    @property
    def last_error(self) -> Exception | None:
        """The most recent failure in `run_forever`, if any."""
        return self._retrier.last_error

    def _create(self, from_position: int) -> None:
        statements = (
            f"CREATE TABLE IF NOT EXISTS {self._table} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            self.store.sql(
                f"INSERT INTO {self._table} (name, position) VALUES (?, ?) "  # noqa: S608
                "ON CONFLICT (name) DO NOTHING"
            ),
        )
        for attempt in range(2):
            try:
                with self.store.transaction() as cursor:
                    cursor.execute(statements[0])
                    cursor.execute(statements[1], (self.name, from_position))
            except Exception:
                # Two processes creating the table at once on PostgreSQL: one gets a
                # unique violation on the catalog. The second try finds the table.
                if attempt:
                    raise
                log.debug("creating %s raced another process; retrying", self._table, exc_info=True)
            else:
                return

    def position(self) -> int:
        """The saved position: events up to it are done."""
        with self.store.reading() as cursor:
            cursor.execute(
                self.store.sql(f"SELECT position FROM {self._table} WHERE name = ?"),  # noqa: S608
                (self.name,),
            )
            rows = cursor.fetchall()
        if not rows:
            msg = f"consumer {self.name!r} has no row in {self._table} (was the table emptied?)"
            raise LookupError(msg)
        row = rows[0]
        return int(next(iter(row.values())) if isinstance(row, dict) else row[0])

    def run_once(self, max_events: int | None = None) -> int:
        """Process the events in the log now (after the saved position), then return.

        Events appended while it runs are left for the next call. A handler exception
        propagates; the failed event's position is not saved, so the next run starts
        with it.

        Args:
            max_events: process at most this many (None: all of them).

        Returns:
            How many events this call processed (and saved the position of).
        """
        recorder = self.store.app.recorder
        newest = recorder.max_notification_id() or 0
        self._saved = self.position()
        processed = 0
        while max_events is None or processed < max_events:
            limit = PAGE_SIZE if max_events is None else min(PAGE_SIZE, max_events - processed)
            page = recorder.select_notifications(
                start=self._saved, limit=limit, stop=newest, inclusive_of_start=False
            )
            if not page:
                break
            for notification in page:
                if self._handle(_logged_event(self.store, notification)) == "raced":
                    self._saved = self.position()  # another process moved on: continue after it
                    break
                processed += 1
        return processed

    def run_forever(self, stop_event: threading.Event) -> int:
        """Process events as they are appended until `stop_event` is set.

        Handler exceptions and read or save failures are logged, counted in `errors` and
        retried after a backoff; the failed event is retried, never skipped.

        Args:
            stop_event: set it (from any thread) to return; an event being handled finishes.

        Returns:
            How many events were processed.
        """
        processed = 0
        delays = self._retrier.backoff.delays()
        while not stop_event.is_set():
            try:
                self._saved = self.position()
                current = follow_store(self.store, self._saved, stop_event=stop_event)
                with closing(current.events()) as events:
                    for event in events:
                        outcome = self._retrier.call(self._handle, event, self.name, stop_event)
                        if outcome is STOPPED:
                            return processed  # the event is left for the next run
                        if outcome == "raced":
                            break  # another process moved the position: follow on from it
                        processed += 1
                        delays = self._retrier.backoff.delays()
            except Exception as e:  # a read failure is logged, counted and retried
                delay = next(delays)
                log.exception(
                    "%s: reading the log after %d failed; retrying in %.3fs", self.name, self._saved, delay
                )
                if not self._retrier.failed(e, delay, stop_event):
                    return processed
        return processed

    def _handle(self, event: LoggedEvent) -> _Outcome:
        if self.exactly_once:
            return self._handle_exactly_once(cast("TransactionalHandler", self._handler), event)
        cast("Handler", self._handler)(event)
        with self.store.transaction() as cursor:
            # Never backwards: another process of this consumer may be further on.
            cursor.execute(
                self.store.sql(
                    f"UPDATE {self._table} SET position = ? WHERE name = ? AND position < ?"  # noqa: S608
                ),
                (event.position, self.name, event.position),
            )
        self._saved = event.position
        return "done"

    def _handle_exactly_once(self, handler: TransactionalHandler, event: LoggedEvent) -> _Outcome:
        with self.store.transaction() as cursor:
            # Write first, and only from the position we started from: if another process
            # moved it, no row matches, nothing is applied and we re-read the position.
            cursor.execute(
                self.store.sql(
                    f"UPDATE {self._table} SET position = ? WHERE name = ? AND position = ?"  # noqa: S608
                ),
                (event.position, self.name, self._saved),
            )
            if cursor.rowcount != 1:
                return "raced"
            # A handler exception leaves the block and rolls back its writes and the position.
            handler(event, cursor)
        self._saved = event.position
        return "done"
