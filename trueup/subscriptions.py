"""Follow the log as it grows: followers, handler subscriptions and saved-position consumers.

Three layers, each built on the one before:

- `follow(ledger, after)` returns a `Follower`: an iterator of `LoggedEvent`s after a
  position, in log order, that blocks for new events until stopped. On PostgreSQL it is
  woken by LISTEN/NOTIFY (eventsourcing's recorder subscription); on SQLite, which has
  no subscriptions in eventsourcing 9.5, it polls with a
  short adaptive sleep. The followers live in `trueup.adapters.eventstore.log` and are
  re-exported here.
- `subscribe(ledger, handler, from_position)` runs a handler on every event in a
  background thread. Nothing is saved: a new subscription starts where it is told to.
  A handler that raises sees the same event again after a backoff; nothing is skipped
  unless a `PoisonPolicy` is given (then, after its bound, the event is dead-lettered
  and the subscription moves on).
- `SavedPositionConsumer(ledger, name, handler)` keeps its position in the store's own
  database (table ``trueup_consumers``) and resumes after it. At-least-once mode saves
  the position after the handler returns; exactly-once mode runs the handler inside the
  transaction that saves the position, so what the handler writes through the cursor it
  is given commits (or not) together with the position. The position is a
  `TrackingRow`, as the projector's is. It takes a `PoisonPolicy` too.

Everything here needs only a ledger's store (`StoreOwner`), so this module does not
import `trueup.ledger`. Handler failures are retried with `trueup.retry`'s `Backoff`
(re-exported here) and `Retrier`. Why "position > last seen" never skips an event that
commits late, on either backend, is explained in `trueup.adapters.eventstore.log`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import closing
from types import TracebackType
from typing import Literal, Self, cast, overload

from trueup.adapters.eventstore.log import (
    Follower,
    ListenNotifyFollower,
    LoggedEvent,
    PollingFollower,
    follow_store,
    read_log,
)
from trueup.adapters.eventstore.store import PAGE_SIZE, Cursor, StoreOwner
from trueup.projections.tracking import TrackingRow
from trueup.retry import DEAD_LETTERED, STOPPED, Backoff, PoisonPolicy, Retrier, Stopped

__all__ = [
    "CONSUMERS_TABLE",
    "DEAD_LETTERED",
    "PAGE_SIZE",
    "STOPPED",
    "Backoff",
    "Follower",
    "Handler",
    "ListenNotifyFollower",
    "LoggedEvent",
    "PoisonPolicy",
    "PollingFollower",
    "SavedPositionConsumer",
    "Subscription",
    "TransactionalHandler",
    "follow",
    "follow_store",
    "subscribe",
]

log = logging.getLogger(__name__)

CONSUMERS_TABLE = "trueup_consumers"
"""Table holding each `SavedPositionConsumer`'s position, in the store's database."""

Handler = Callable[[LoggedEvent], object]
"""Called with each event; its return value is ignored."""

TransactionalHandler = Callable[[LoggedEvent, Cursor], object]
"""Called with each event and the cursor of the transaction that saves the position."""


def follow(ledger: StoreOwner, after: int = 0, *, stop_event: threading.Event | None = None) -> Follower:
    """Follow `ledger`'s log after position `after`, waiting for new events until stopped.

    Example::

        with follow(ledger, after=ledger_position) as events:
            for logged in events:
                print(logged.position, logged.topic)

    Args:
        ledger: the open ledger (anything with a `store`) whose log to follow.
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
    after a backoff. Without a `poison` policy an event is never skipped, so a handler
    that always fails on one stalls there (watch `errors`); with one, the event is
    dead-lettered after the policy's bound and counts as accepted (`dead_letters`
    counts them). Nothing is saved: use `SavedPositionConsumer` to resume across runs.
    """

    def __init__(  # noqa: PLR0913 - the handler, where it starts, and its retry policies
        self,
        ledger: StoreOwner,
        handler: Handler,
        from_position: int = 0,
        *,
        backoff: Backoff | None = None,
        name: str | None = None,
        poison: PoisonPolicy | None = None,
    ) -> None:
        """Start calling `handler` on the events after `from_position`; see `subscribe`."""
        self.ledger = ledger
        self.handler = handler
        self.poison = poison
        self.dead_letters = 0
        """Events given up on under the poison policy (each handed to its `dead_letter`)."""
        self.name: str = name or str(getattr(handler, "__qualname__", handler))
        self._stop = threading.Event()
        self._retrier = Retrier(backoff or Backoff(), log)
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
                            outcome = self._retrier.call(
                                self.handler, event, self.name, self._stop, self.poison
                            )
                            if outcome is STOPPED:
                                return  # stopped while the event waited for a retry: left unaccepted
                            if outcome is DEAD_LETTERED:
                                self.dead_letters += 1
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


def subscribe(  # noqa: PLR0913 - the handler, where it starts, and its retry policies
    ledger: StoreOwner,
    handler: Handler,
    from_position: int = 0,
    *,
    backoff: Backoff | None = None,
    name: str | None = None,
    poison: PoisonPolicy | None = None,
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
        ledger: the open ledger (anything with a `store`) whose log to follow.
        handler: called with each `LoggedEvent`; runs in the subscription's thread.
        from_position: deliver events with a position greater than this.
        backoff: retry delays after failures (default 0.05 s doubling to 2 s).
        name: names the thread and log messages (default: the handler's name).
        poison: dead-letter an event after this many failed tries and move on (default:
            retry it for ever).

    Returns:
        The running subscription; stop it with `stop()` or by leaving a ``with`` block.
    """
    return Subscription(ledger, handler, from_position, backoff=backoff, name=name, poison=poison)


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

    Poison events (``poison=PoisonPolicy(...)``, opt-in): by default a failed event is
    retried for ever, so a handler that always fails on one stalls the consumer there.
    With a policy, after `max_attempts` counted failures the event goes to the policy's
    `dead_letter` callback and, once that returned, the position moves past it. In
    at-least-once mode only the handler's failures count (a failed save of the position
    is retried without limit); in exactly-once mode the whole transaction's do.

    Positions live in ``trueup_consumers(name TEXT PRIMARY KEY, position BIGINT NOT NULL)``,
    created if missing.
    """

    @overload
    def __init__(
        self,
        ledger: StoreOwner,
        name: str,
        handler: Handler,
        *,
        exactly_once: Literal[False] = False,
        from_position: int = 0,
        backoff: Backoff | None = None,
        poison: PoisonPolicy | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        ledger: StoreOwner,
        name: str,
        handler: TransactionalHandler,
        *,
        exactly_once: Literal[True],
        from_position: int = 0,
        backoff: Backoff | None = None,
        poison: PoisonPolicy | None = None,
    ) -> None: ...

    def __init__(  # noqa: PLR0913 - the consumer, its handler, its mode and where a new one starts
        self,
        ledger: StoreOwner,
        name: str,
        handler: Handler | TransactionalHandler,
        *,
        exactly_once: bool = False,
        from_position: int = 0,
        backoff: Backoff | None = None,
        poison: PoisonPolicy | None = None,
    ) -> None:
        """Create the consumer (and its position row, at `from_position`, if it has none).

        Args:
            ledger: the open ledger (anything with a `store`) whose log to consume.
            name: the consumer's name: its saved position is shared by every process
                running a consumer of this name on this store.
            handler: ``handler(event)``, or ``handler(event, cursor)`` when `exactly_once`.
            exactly_once: run the handler inside the transaction that saves the position.
            from_position: where a consumer with no saved position starts (events after
                it); ignored once a position is saved.
            backoff: retry delays after failures in `run_forever` (and, with `poison`,
                between the tries of one event in `run_once`).
            poison: dead-letter an event after this many failed tries and move on
                (default: retry it for ever).
        """
        self.ledger = ledger
        self.store = ledger.store
        self.name = name
        self.exactly_once = exactly_once
        self.poison = poison
        self.dead_letters = 0
        """Events given up on under the poison policy in this process."""
        self._retrier = Retrier(backoff or Backoff(), log)
        self._handler = handler
        self._row = TrackingRow(self.store, CONSUMERS_TABLE, name)
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
        for attempt in range(2):
            try:
                with self.store.creating_tables(), self.store.transaction() as cursor:
                    self._row.create_table(cursor)
                    self._row.insert(cursor, from_position)
            except Exception:
                # Two processes creating the table at once on PostgreSQL: one gets a
                # unique violation on the catalog. The second try finds the table.
                if attempt:
                    raise
                log.debug("creating %s raced another process; retrying", self._row.table, exc_info=True)
            else:
                return

    def position(self) -> int:
        """The saved position: events up to it are done."""
        with self.store.reading() as cursor:
            position = self._row.read(cursor)
        if position is None:
            msg = f"consumer {self.name!r} has no row in {self._row.table} (was the table emptied?)"
            raise LookupError(msg)
        return position

    def run_once(self, max_events: int | None = None) -> int:
        """Process the events in the log now (after the saved position), then return.

        Events appended while it runs are left for the next call. Without a poison
        policy a handler exception propagates; the failed event's position is not saved,
        so the next run starts with it. With one, a failing event is tried up to the
        policy's bound (with backoff) and then dead-lettered; a transient failure (or a
        failed dead-letter record) propagates as above.

        Args:
            max_events: process at most this many (None: all of them).

        Returns:
            How many events this call processed (and saved the position of).
        """
        newest = self.store.app.recorder.max_notification_id() or 0
        self._saved = self.position()
        processed = 0
        while max_events is None or processed < max_events:
            page_size = PAGE_SIZE if max_events is None else min(PAGE_SIZE, max_events - processed)
            raced = False
            with closing(read_log(self.store, self._saved, newest, page_size=page_size)) as events:
                for event in events:
                    if self._process(event, None) == "raced":
                        self._saved = self.position()  # another process moved on: continue after it
                        raced = True
                        break
                    processed += 1
                    if processed == max_events:
                        break
            if not raced:
                break
        return processed

    def run_forever(self, stop_event: threading.Event) -> int:
        """Process events as they are appended until `stop_event` is set.

        Handler exceptions and read or save failures are logged, counted in `errors` and
        retried after a backoff; the failed event is retried, never skipped (unless a
        poison policy dead-letters it).

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
                        outcome = self._process(event, stop_event)
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

    def _process(self, event: LoggedEvent, stop: threading.Event | None) -> _Outcome | Stopped:
        """Handle one event under the retry and poison policies; `stop` None: a one-shot run."""
        once = stop is None
        if self.poison is None:
            if stop is None:
                return self._handle(event)
            return self._retrier.call(self._handle, event, self.name, stop)
        stop = stop or threading.Event()
        # At-least-once: only the handler's failures count towards the bound; the save
        # of the position is retried apart (a database hiccup poisons no event).
        deliver = self._handle if self.exactly_once else cast("Handler", self._handler)
        outcome = self._retrier.call(deliver, event, self.name, stop, self.poison, raise_transient=once)
        if outcome is STOPPED or outcome == "raced":
            return outcome
        if outcome is DEAD_LETTERED:
            self.dead_letters += 1
        elif self.exactly_once:
            return "done"  # the handler's transaction moved the position
        if once:
            return self._save(event)
        return self._retrier.call(self._save, event, self.name, stop)

    def _save(self, event: LoggedEvent) -> _Outcome:
        """Move the position past `event` without handling it (handled already, or dead-lettered)."""
        with self.store.transaction() as cursor:
            if self.exactly_once:
                if not self._row.move(cursor, event.position, expected=self._saved):
                    return "raced"
            else:
                self._row.move_forward(cursor, event.position)
        self._saved = event.position
        return "done"

    def _handle(self, event: LoggedEvent) -> _Outcome:
        if self.exactly_once:
            return self._handle_exactly_once(cast("TransactionalHandler", self._handler), event)
        cast("Handler", self._handler)(event)
        with self.store.transaction() as cursor:
            # Never backwards: another process of this consumer may be further on.
            self._row.move_forward(cursor, event.position)
        self._saved = event.position
        return "done"

    def _handle_exactly_once(self, handler: TransactionalHandler, event: LoggedEvent) -> _Outcome:
        with self.store.transaction() as cursor:
            # Write first, and only from the position we started from: if another process
            # moved it, no row matches, nothing is applied and we re-read the position.
            if not self._row.move(cursor, event.position, expected=self._saved):
                return "raced"
            # A handler exception leaves the block and rolls back its writes and the position.
            handler(event, cursor)
        self._saved = event.position
        return "done"
