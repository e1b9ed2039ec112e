"""The unit of work: what one use case loads and changes, saved in one transaction.

Every write of trueup goes through `Writer.commit`: a fresh `UnitOfWork` is handed to the
use case, which loads aggregates through it, changes them and collects their events in
causal order (evidence first); the events are then stored in one transaction. If another
writer saved events for one of those aggregates first, the store refuses the whole
transaction (optimistic concurrency) and the use case is run again on freshly loaded
aggregates, after a jittered pause. This module is the one owner of that loop.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, PersistenceError

from trueup.adapters.eventstore.store import Store, project_events
from trueup.domain import ids
from trueup.domain.errors import ConflictError, StoreError
from trueup.domain.messages import BrokerMessage
from trueup.domain.position import Position
from trueup.domain.views import DiscrepancyView
from trueup.faults import crash_point

log = logging.getLogger(__name__)

# The same few ids are derived again and again (every report of an order names it, its
# link and its position): uuid5 hashes each time, so remember the recent ones.
order_id = functools.lru_cache(maxsize=65_536)(ids.order_id)
position_id = functools.lru_cache(maxsize=65_536)(ids.position_id)
broker_link_id = functools.lru_cache(maxsize=65_536)(ids.broker_link_id)

MAX_ATTEMPTS = 12
"""Reload-and-retry rounds when another writer touched the same aggregates first."""

Clock = Callable[[], datetime]
"""Source of "now", tz-aware UTC."""

Events = list[DomainEventProtocol[UUID]]

DiscrepancyViews = Callable[[str], Iterable[DiscrepancyView]]
"""An account's discrepancies still in force (open, or acknowledged by an operator)."""


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


def store_error(error: PersistenceError) -> StoreError:
    """The library's persistence error as trueup's `StoreError` (raise it `from error`)."""
    return StoreError(f"event store failed: {type(error).__name__}: {error}")


def load(store: Store, ident: UUID) -> Any:  # noqa: ANN401 - any aggregate or None
    """The aggregate stored under `ident` as it is now, or None if nothing is.

    Raises:
        StoreError: the store failed.
    """
    try:
        return store.aggregate(ident)
    except AggregateNotFoundError:
        return None
    except PersistenceError as e:
        raise store_error(e) from e


class UnitOfWork:
    """Aggregates loaded and changed while one use case runs, and its events in order."""

    def __init__(self, store: Store, clock: Clock, discrepancies: DiscrepancyViews | None = None) -> None:
        """A unit of work on `store`; `clock` dates what the use case records.

        `discrepancies` reads an account's discrepancies in force, so that a finding of a
        problem already recorded updates it (`trueup.application.findings`); read once per
        account and unit, and only when something is found.
        """
        self.store = store
        self.clock = clock
        self.discrepancies = discrepancies
        self.aggregates: dict[UUID, Aggregate | None] = {}
        self.events: Events = []
        self.raised: set[UUID] = set()
        """Discrepancy ids recorded in this unit of work (one discrepancy, one record)."""
        self.in_force: dict[str, Any] = {}
        """`trueup.application.findings.OpenDiscrepancies` of each account, once read."""

    def get(self, ident: UUID) -> Any:  # noqa: ANN401 - Order, Position, link or None
        """The aggregate `ident` as loaded (or created) in this unit of work, or None."""
        if ident not in self.aggregates:
            self.aggregates[ident] = load(self.store, ident)
        return self.aggregates[ident]

    def prefetch(self, idents: Iterable[UUID]) -> None:
        """Load many aggregates with short histories (orders, broker-id links) in one read.

        Each would otherwise cost one repository read: a pooled transaction, a query and a
        deep copy of the cached aggregate, most of an ingest batch's time. They are rebuilt
        from their events, as the repository does on a cache miss; an aggregate absent from
        the log is None, as `get` records it. A writer that gets in before our save is
        caught by optimistic concurrency, as with the repository.
        """
        wanted = sorted({i for i in idents if i not in self.aggregates}, key=str)
        if not wanted:
            return
        try:
            stored = self.store.stored_events(wanted)
        except PersistenceError as e:
            raise store_error(e) from e
        mapper = self.store.app.mapper
        for ident in wanted:
            events = stored.get(ident)
            self.aggregates[ident] = (
                project_events(None, (mapper.to_domain_event(e) for e in events)) if events else None
            )

    def add(self, aggregate: Aggregate) -> None:
        """Track an aggregate created in this unit of work."""
        self.aggregates[aggregate.id] = aggregate

    def positions(self, account: str) -> list[Position]:
        """Positions of `account` loaded or created in this unit of work."""
        return [a for a in self.aggregates.values() if isinstance(a, Position) and a.state.account == account]

    def collect(self, *aggregates: Aggregate | None) -> None:
        """Move pending events into the unit of work, in the order given (evidence first)."""
        for aggregate in aggregates:
            if aggregate is not None:
                self.events.extend(aggregate.collect_events())


class Writer:
    """Runs use cases on one store, each in its own unit of work and transaction."""

    def __init__(self, store: Store, clock: Clock, discrepancies: DiscrepancyViews | None = None) -> None:
        """Write to `store`; `clock` dates what is recorded; `discrepancies` as `UnitOfWork` takes it."""
        self.store = store
        self.clock = clock
        self.discrepancies = discrepancies

    def commit(self, apply: Callable[[UnitOfWork], object], *, what: str | None = None) -> Events:
        """Run `apply` on a fresh unit of work and store its events in one transaction.

        `apply` is run again on freshly loaded aggregates when another writer got in first,
        so it must decide from what it loads, not from what an earlier round saw.

        Args:
            apply: the use case; it loads through the unit of work and collects events.
            what: names the use case in the conflict error (default: "ingest of N events").

        Returns:
            The events stored, the raw broker messages left out.

        Raises:
            ConflictError: still conflicting after `MAX_ATTEMPTS` rounds.
            StoreError: the store failed.
        """
        count = 0
        for attempt in range(MAX_ATTEMPTS):
            unit = UnitOfWork(self.store, self.clock, self.discrepancies)
            apply(unit)
            if not unit.events:
                return []
            count = len(unit.events)
            crash_point("ingest.mid_batch")
            try:
                # The events are already collected in causal order (evidence first):
                # put them straight into the event store, one transaction.
                self.store.app.events.put(unit.events)
            except IntegrityError:
                # Another writer saved events for one of these aggregates first: reload and
                # redo, after a jittered pause so two writers do not keep colliding.
                log.debug("%s raced another writer (attempt %d); retrying", what or "ingest", attempt)
                backoff(attempt)
                continue
            except PersistenceError as e:
                raise store_error(e) from e
            # Read models catch up when read (every reader calls catch_up first), so a
            # write costs one transaction, not two.
            return [e for e in unit.events if not isinstance(e, BrokerMessage.Event)]
        subject = what or f"ingest of {count} events"
        msg = f"{subject} still conflicted after {MAX_ATTEMPTS} reload-and-retry rounds"
        raise ConflictError(msg)


def backoff(attempt: int) -> None:
    """Sleep before retry round `attempt + 1`."""
    # Full jitter, growing fast to a 1 s cap: a writer whose read-modify-write is slower than
    # a competitor's commit interval (a loaded machine) must get a window, not starve.
    time.sleep(random.uniform(0, min(1.0, 0.001 * 4**attempt)))  # noqa: S311 - jitter, not secrecy
