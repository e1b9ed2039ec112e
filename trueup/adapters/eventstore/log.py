"""The log as `LoggedEvent`s: what is stored now (`read_log`), and what is appended next (followers).

- `read_log(store, after, until)` streams the stored log in order, one page of
  `PAGE_SIZE` notifications at a time, and ends at the end of the log (or at `until`).
- `follow_store(store, after)` returns a `Follower`: the events after a position, in log
  order, blocking for new ones until stopped. On PostgreSQL it is woken by LISTEN/NOTIFY
  (eventsourcing's recorder subscription); on SQLite, which has no subscriptions in
  eventsourcing 9.5, it polls with a short adaptive sleep.

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
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import msgspec
from eventsourcing.persistence import ApplicationRecorder, Notification, PersistenceError
from eventsourcing.persistence import Subscription as RecorderSubscription

from trueup.adapters.eventstore.store import PAGE_SIZE, Store

# The followers were written in, and are documented under, `trueup.subscriptions`: they
# keep logging there, so logging configured for that name still applies to them.
log = logging.getLogger("trueup.subscriptions")


class LoggedEvent(msgspec.Struct, frozen=True):
    """One stored event with its position in the log."""

    position: int
    """Notification id: the event's place in the log, gapless per writer."""
    topic: str
    """Stable explicit topic, e.g. "trueup:Order.FillBooked"."""
    event: Any
    """The decoded domain event."""

    @property
    def timestamp(self) -> datetime:
        """When the event was recorded."""
        return self.event.timestamp  # type: ignore[no-any-return]


def _logged_event(store: Store, notification: Notification) -> LoggedEvent:
    return LoggedEvent(
        position=notification.id,
        topic=notification.topic,
        event=store.app.mapper.to_domain_event(notification),
    )


def read_log(
    store: Store,
    after: int = 0,
    until: datetime | int | None = None,
    *,
    page_size: int = PAGE_SIZE,
) -> Generator[LoggedEvent, None, None]:
    """Stream the stored log in order, page by page (never the whole log in memory).

    Each page is one query; its events are decoded one at a time as they are taken, so
    a reader that stops early decodes no more than it took.

    Args:
        store: the open store whose log to read.
        after: start after this log position (0 = from the beginning).
        until: stop at this log position (int, inclusive) or at the first event
            recorded after this time (datetime).
        page_size: notifications per query.

    Yields:
        Each stored event with its position and topic.
    """
    stop = until if isinstance(until, int) else None
    position = after
    recorder = store.app.recorder
    while True:
        try:
            page = recorder.select_notifications(
                start=position, limit=page_size, stop=stop, inclusive_of_start=False
            )
        except PersistenceError as e:
            raise store.error(what="read of the log", error=e) from e
        if not page:
            return
        for notification in page:
            logged = _logged_event(store, notification)
            if isinstance(until, datetime) and logged.event.timestamp > until:
                return
            yield logged
        position = page[-1].id


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
    """Follows the log by polling it with `read_log` (SQLite, memory://, or any store).

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
        sleep = self.min_sleep
        while not self._stop.is_set():
            # `read_log` reads page after page until a page comes back empty, so events
            # appended while we yielded are read at once; after that empty page, sleep.
            with closing(read_log(self.store, self.position)) as events:
                for logged in events:
                    if self._stop.is_set():
                        return
                    self.position = logged.position
                    sleep = self.min_sleep
                    yield logged
                    if self._stop.is_set():
                        return  # stopped while the caller had the event: read nothing more
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
