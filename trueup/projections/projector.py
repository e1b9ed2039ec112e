"""`Projector`: keeps the read-model tables up to date from the log, exactly once, resumably.

The projector reads notifications after its tracking position in pages of 1000,
applies each page in one transaction and moves the tracking position in that same
transaction, so a crash loses or repeats nothing. The tracking row is updated first
and conditionally (write-first: SQLite takes the write lock at once, and a second
process that raced us updates no row and retries). Rebuild empties the tables and
replays from position 0.

Where the time goes, and why it is spent this way (see docs/benchmarks.md):
- Rows are read straight from the events table (not through `read_log`, which decodes
  every event into a `LoggedEvent`) and dispatched on their topic string:
  raw broker messages need only their position (no decode), links and gate events
  nothing; the rest is decoded by the msgspec mapper without building StoredEvents or
  UUIDs (ids stay in their column form, which is what the tables store).
- The states a page needs are loaded in one query per table, and the states a page
  leaves behind are kept for the next page while the tracking position proves nobody
  else wrote in between (the tables are a function of the log up to that position).
- Row writes are queued in log order and flushed with one executemany per run of the
  same statement, at the end of the page, inside its transaction.

The page machinery is in `pages`, the DDL and every statement in `tables`, the fills-table
writers in `fills`, the tracking row in `tracking`, the service's counters table in
`service_status`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid5

import msgspec
from eventsourcing.persistence import InterfaceError, InternalError, OperationalError, StoredEvent
from eventsourcing.utils import resolve_topic

from trueup.adapters.eventstore.codec import MsgspecMapper
from trueup.adapters.eventstore.store import (
    IN_IDS,
    PAGE_SIZE,
    Cursor,
    Store,
    as_dict,
    first,
    redact,
    select_in,
)
from trueup.domain.discrepancy import Discrepancy, problem_topic
from trueup.domain.errors import StoreError
from trueup.domain.messages import BrokerMessage
from trueup.domain.order import Order, OrderState, exec_key
from trueup.domain.position import Position, PositionState
from trueup.projections import service_status, tables
from trueup.projections.fills import (
    INFERRED_KEY,
    RECONCILE_ORDER_ID,
    write_fill,
    write_fill_row,
    write_inferred,
    write_synthetic_fills,
)
from trueup.projections.pages import Page, Row, StateCache
from trueup.projections.tracking import TrackingRow

__all__ = ["INFERRED_KEY", "REBUILD_PAGE_SIZE", "RECONCILE_ORDER_ID", "TRACKING_NAME", "Projector"]

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", OrderState, PositionState)
REBUILD_PAGE_SIZE = 5000
"""A rebuild reads bigger pages: fewer commits (one fsync each) and fewer state loads."""
TRACKING_NAME = "projections"
"""The projector's row in the tracking table."""

_ENCODER = msgspec.json.Encoder(decimal_format="string")
_ORDER_DECODER = msgspec.json.Decoder(OrderState)
_POSITION_DECODER = msgspec.json.Decoder(PositionState)

# What the projector does with an event, decided once per topic (`_Kind`).
(
    _SKIP,
    _MESSAGE,
    _ORDER,
    _ORDER_CREATED,
    _POSITION,
    _POSITION_CREATED,
    _RAISED,
    _SEEN,
    _RESOLVED,
    _CLEARED,
) = range(10)
_CREATES = frozenset({_ORDER_CREATED, _POSITION_CREATED})


def _hyphenated(hex_id: str) -> str:
    """A UUID's 32 hex digits (SQLite's column) in canonical form, as str(UUID) gives it."""
    if len(hex_id) != 32:  # already canonical (or not a UUID at all)
        return hex_id
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"


def _iso(value: datetime) -> str:
    return value.isoformat()


def _kind_of(cls: type[Any]) -> int:
    """What the projector does with events of class `cls`."""
    kinds = (
        (BrokerMessage.Received, _MESSAGE),
        (Order.Intended | Order.Discovered, _ORDER_CREATED),
        (Order.Event, _ORDER),
        (Position.Opened, _POSITION_CREATED),
        (Position.Event, _POSITION),
        (Discrepancy.Raised, _RAISED),
        (Discrepancy.Seen, _SEEN),
        (Discrepancy.Resolved, _RESOLVED),
        (Discrepancy.Cleared, _CLEARED),
    )
    return next((kind for types, kind in kinds if issubclass(cls, types)), _SKIP)


class Projector:
    """Applies the log to the read-model tables of one store."""

    def __init__(self, store: Store) -> None:
        """Create the tables if needed (not on a read-only store: it holds them or reads fail)."""
        self.store = store
        self._t = tables.names(store)
        self._tracking = TrackingRow(store, tables.TRACKING, TRACKING_NAME)
        if not store.read_only:
            try:
                tables.create_tables(store)
                with store.transaction() as cursor:
                    self._tracking.insert(cursor, 0)
            except StoreError as e:
                if _event_error(e):
                    raise
                # A full disk: the tables exist unless this is a new store, and reads that
                # need nothing written still work; a read that needs them says why.
                log.warning("cannot prepare the read-model tables: %s", e)
        self._kinds: dict[str, tuple[int, type[Any]]] = {}
        self._cache = StateCache()
        self._sql = tables.statements(store)

    def position(self) -> int:
        """Log position the tables reflect."""
        with self.store.reading() as cursor:
            return self._tracking.read(cursor) or 0

    def catch_up(
        self,
        stop: int | None = None,
        progress: Callable[[int], object] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> int:
        """Apply every event after the tracking position (up to `stop`); return how many.

        An event the tables cannot take (text PostgreSQL refuses, a state that does not
        decode) must not stop every later read: its page is applied again one event at a
        time, and the one event that still fails alone is skipped and recorded as a
        CRITICAL INVALID_REPORT row (`_skip`). A store that fails (locked, full, gone)
        skips nothing: that raises `StoreError`.

        Raises:
            StoreError: the store failed.
        """
        applied = 0
        one_by_one_until = 0  # after a page failed: apply up to here one event at a time
        while True:
            start = self.position()
            if stop is not None and start >= stop:
                return applied
            rows = self._read(start, 1 if start < one_by_one_until else page_size, stop)
            if not rows:
                return applied
            if self.store.read_only:
                msg = (
                    f"store {redact(self.store.config.url)} is open read-only and its read models "
                    f"are behind the log (at {start}, events after it): they cannot catch up, and "
                    "a read of them would be stale; open it where it can be written"
                )
                raise StoreError(msg)
            try:
                done = self._apply_page(start, rows)
            except Exception as e:
                if not _event_error(e):
                    raise
                self._cache.clear()
                if len(rows) > 1:
                    log.warning("projection page after %d failed (%s); applying it event by event", start, e)
                    one_by_one_until = rows[-1].position
                    continue
                done = self._skip(start, rows[0], e)
            if done:
                applied += len(rows)
                if progress is not None:
                    progress(rows[-1].position)

    def _skip(self, start: int, row: Row, error: Exception) -> bool:
        """Move past one event the tables cannot take, recording it; False if raced."""
        what = f"{type(error).__name__}: {error}"
        log.error("read models cannot apply the event at position %d (%s): %s", row.position, row.topic, what)
        account = ""
        with contextlib.suppress(Exception):  # the account is a courtesy; the row is written anyway
            account = str(getattr(self._decode(self._kind(row.topic)[1], row), "account", "") or "")
        detail = (
            f"event {row.topic} at log position {row.position} is stored in the log, but the read "
            f"models could not apply it ({what}); positions, orders and fills are shown without it. "
            "It is still in the log: fix the cause, then `trueup rebuild`"
        )
        now = _iso(datetime.now(UTC))
        with self.store.transaction() as cursor:
            if not self._tracking.move(cursor, row.position, expected=start):
                return False
            cursor.execute(
                self._sql["discrepancy"],
                tuple(
                    _storable(v)
                    for v in (
                        str(uuid5(_SKIPPED, str(row.position))),
                        "INVALID_REPORT",
                        "CRITICAL",
                        account,
                        f"log position {row.position}",
                        "an event the read models can apply",
                        what,
                        detail,
                        None,
                        None,
                        row.position,
                        now,
                        None,
                        f"log position {row.position}",
                        now,
                    )
                ),
            )
        return True

    def _read(self, start: int, limit: int, stop: int | None) -> list[Row]:
        """The next page of stored events after `start`, undecoded."""
        with self.store.reading() as cursor:
            if stop is None:
                cursor.execute(self._sql["read"], (start, limit))
            else:
                cursor.execute(self._sql["read_until"], (start, stop, limit))
            rows = cursor.fetchall()
        if self.store.dialect == "sqlite":
            return [Row(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        # psycopg gives dict rows, UUIDs and (for bytea) bytes or memoryviews.
        return [
            Row(
                r["notification_id"],
                str(r["originator_id"]),
                r["originator_version"],
                r["topic"],
                bytes(r["state"]),
            )
            for r in rows
        ]

    def rebuild(self, progress: Callable[[int], object] | None = None) -> int:
        """Empty the tables and replay the whole log from position 0; return events applied.

        `progress` is called with the log position after each page.
        """
        with self.store.transaction() as cursor:
            for name in tables.ALL_TABLES:
                cursor.execute(f"DELETE FROM {self._t[name]}")  # noqa: S608
            self._tracking.reset(cursor, 0)
            self._cache.clear()
        return self.catch_up(progress=progress, page_size=REBUILD_PAGE_SIZE)

    def service_status(self) -> dict[str, Any]:
        """The reconciliation service's last saved counters, by service name."""
        return service_status.read(self.store)

    def save_service_status(self, name: str, counters: dict[str, Any]) -> None:
        """Save the service's counters so `trueup status` can show them from another process."""
        service_status.save(self.store, name, counters)

    def _apply_page(self, start: int, rows: Sequence[Row]) -> bool:
        """Apply one page atomically; False if another process applied it first."""
        end = rows[-1].position
        with self.store.transaction() as cursor:
            if not self._tracking.move(cursor, end, expected=start):
                self._cache.clear()
                return False  # raced: someone else moved the position; re-read and go on
            page = Page(cursor, *self._cache.take(start))
            kinds = [self._kind(row.topic) for row in rows]
            self._load_states(page, rows, kinds)
            for row, (kind, cls) in zip(rows, kinds, strict=True):
                if kind == _MESSAGE:
                    # Only its position is needed (evidence of later discrepancies): no decode.
                    page.message_positions[row.originator_id] = row.position
                elif kind != _SKIP:
                    self._apply(page, row, kind, self._decode(cls, row))
            self._write(page)
            page.flush()
        self._cache.keep(end, page)
        return True

    def _kind(self, topic: str) -> tuple[int, type[Any]]:
        entry = self._kinds.get(topic)
        if entry is None:
            cls = resolve_topic(topic)
            entry = self._kinds[topic] = (_kind_of(cls), cls)
        return entry

    def _decode(self, cls: type[Any], row: Row) -> Any:  # noqa: ANN401 - any event
        mapper = self.store.app.mapper
        if isinstance(mapper, MsgspecMapper):
            return mapper.decode_event(cls, row.originator_id, row.originator_version, row.state, row.topic)
        stored = StoredEvent(row.originator_id, row.originator_version, row.topic, row.state)
        return mapper.to_domain_event(stored)

    def _load_states(self, page: Page, rows: Sequence[Row], kinds: Sequence[tuple[int, type[Any]]]) -> None:
        """Load, in one query per table and chunk, the states the page needs and lacks.

        Also puts the ids of the rows to apply in canonical form (SQLite stores 32 hex digits).
        """
        created: set[str] = set()
        wanted: dict[int, set[str]] = {_ORDER: set(), _POSITION: set()}
        sqlite = self.store.dialect == "sqlite"
        for row, (kind, _) in zip(rows, kinds, strict=True):
            if kind in (_SKIP, _MESSAGE):
                continue
            if sqlite:  # the tables hold ids in canonical form: convert once, here
                row.originator_id = _hyphenated(row.originator_id)
            if kind in _CREATES:
                created.add(row.originator_id)
            elif kind in wanted and row.originator_id not in created:
                wanted[kind].add(row.originator_id)
        self._load(page.cursor, tables.ORDERS, "order_id", _ORDER_DECODER, wanted[_ORDER], page.orders)
        self._load(
            page.cursor, tables.POSITIONS, "position_id", _POSITION_DECODER, wanted[_POSITION], page.positions
        )

    def _load(  # noqa: PLR0913, PLR0917 - one table's query, its decoder and where the states go
        self,
        cursor: Cursor,
        table: str,
        key: str,
        decoder: msgspec.json.Decoder[S],
        wanted: set[str],
        known: OrderedDict[str, S],
    ) -> None:
        missing = sorted(wanted - known.keys())
        statement = f"SELECT {key}, state FROM {self._t[table]} WHERE {key} IN {IN_IDS}"  # noqa: S608
        for loaded in select_in(functools.partial(self.store.fetchall, cursor), statement, missing):
            ident, state = tuple(loaded.values()) if isinstance(loaded, dict) else loaded
            known[str(ident)] = decoder.decode(state)

    def _apply(self, page: Page, row: Row, kind: int, event: Any) -> None:  # noqa: ANN401 - any event
        oid, position = row.originator_id, row.position
        if kind in (_ORDER, _ORDER_CREATED):
            self._apply_order(page, row, kind, event)
        elif kind in (_POSITION, _POSITION_CREATED):
            if kind == _POSITION_CREATED:
                pos: Position = _created(event.mutate(None))
                page.positions[oid] = pos.state
            else:
                pos = page.position(oid)
                event.apply(pos)
            page.changed_positions[oid] = position
            if isinstance(event, Position.Synced):
                write_synthetic_fills(page, self._sql, pos.state, event, position)
        elif kind == _RAISED:
            self._write_discrepancy(page, event, position)
        elif kind == _SEEN:
            evidence, evidence_position = self._evidence(page, event.evidence_id)
            page.write(
                self._sql["seen"],
                (
                    event.severity,
                    event.actual,
                    event.detail,
                    evidence,
                    evidence_position,
                    _iso(event.ts_seen),
                    event.count,
                    oid,
                ),
            )
        elif kind == _RESOLVED:
            page.write(self._sql["resolved"], (event.resolution, event.by, int(event.acknowledged), oid))
        elif kind == _CLEARED:
            page.write(self._sql["cleared"], (oid,))

    def _apply_order(self, page: Page, row: Row, kind: int, event: Order.Event) -> None:
        oid = row.originator_id
        if kind == _ORDER_CREATED:
            order: Order = _created(event.mutate(None))
            page.orders[oid] = order.state
            page.orders.move_to_end(oid)
            inferred_before = None
        else:
            order = page.order(oid)
            inferred_before = (order.state.inferred_qty, order.state.inferred_price)
            event.apply(order)
        page.changed_orders[oid] = row.position
        if isinstance(event, Order.FillBooked | Order.FillCorrected):
            write_fill(page, self._sql, order.state, event, row.position)
        elif isinstance(event, Order.Attached):
            for fill in event.fills:  # an orphan's fills, moved to our order
                write_fill_row(page, self._sql, order.state, exec_key(fill.exec_id)[0], fill, row.position)
        elif isinstance(event, Order.AttachedTo):
            page.write(self._sql["order_fills_gone"], (order.state.account, order.state.client_order_id))
        if inferred_before is not None and inferred_before != (
            order.state.inferred_qty,
            order.state.inferred_price,
        ):
            # Written when the event changes it, never at the end of a page: the row must
            # not depend on where the log was cut into pages.
            write_inferred(page, self._sql, order.state, row.position)
        if isinstance(event, Order.CommissionRecorded):
            page.write(
                self._sql["commission"],
                (str(event.commission), order.state.account, order.state.client_order_id, event.key),
            )

    def _write(self, page: Page) -> None:
        """Queue the rows of the orders and positions the page changed."""
        order_sql, position_sql = self._sql["order"], self._sql["position"]
        for oid, position in page.changed_orders.items():
            state = page.orders[oid]
            page.write(
                order_sql,
                (
                    oid,
                    state.account,
                    state.client_order_id,
                    state.symbol,
                    state.strategy,
                    state.status.value,
                    0 if state.status.is_terminal else 1,
                    position,
                    _ENCODER.encode(state).decode(),
                ),
            )
        for pid, position in page.changed_positions.items():
            pstate = page.positions[pid]
            page.write(
                position_sql,
                (
                    pid,
                    pstate.account,
                    pstate.symbol,
                    str(pstate.qty),
                    position,
                    _ENCODER.encode(pstate).decode(),
                ),
            )

    def _evidence(self, page: Page, evidence_id: UUID | None) -> tuple[str | None, int | None]:
        """The evidence's id as the table stores it, and its log position if it is logged."""
        if evidence_id is None:
            return None, None
        evidence = str(evidence_id)
        # Messages are keyed as their events table stores ids (SQLite: 32 hex digits).
        stored_id = evidence_id.hex if self.store.dialect == "sqlite" else evidence
        evidence_position = page.message_positions.get(stored_id)
        if evidence_position is None:
            evidence_position = self._message_position(page.cursor, evidence_id)
        return evidence, evidence_position

    def _write_discrepancy(self, page: Page, event: Any, position: int) -> None:  # noqa: ANN401
        evidence, evidence_position = self._evidence(page, event.evidence_id)
        page.write(
            self._sql["discrepancy"],
            (
                str(event.originator_id),
                event.kind,
                event.severity,
                event.account,
                event.key,
                event.expected,
                event.actual,
                event.detail,
                evidence,
                evidence_position,
                position,
                _iso(event.ts_detected),
                event.scope,
                problem_topic(event.kind, event.expected, event.topic),
                _iso(event.ts_detected),
            ),
        )

    def _message_position(self, cursor: Cursor, message_id: UUID) -> int | None:
        """Log position of a raw message stored in an earlier page."""
        ident: object = message_id.hex if self.store.dialect == "sqlite" else message_id
        cursor.execute(self._sql["message_position"], (ident,))
        rows = cursor.fetchall()
        return int(first(rows[0])) if rows else None

    def rows(self, statement: str, params: Sequence[object] = ()) -> Iterator[dict[str, Any]]:
        """Run a read query on the tables and yield rows as dicts."""
        with self.store.reading() as cursor:
            cursor.execute(self.store.sql(statement.format(**self._t)), tuple(params))
            yield from (as_dict(row) for row in cursor.fetchall())

    def tuples(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a read query on the tables; rows as tuples in column order (hot read paths)."""
        with self.store.reading() as cursor:
            if self.store.dialect == "sqlite":
                # Plain tuples straight from sqlite3: building sqlite3.Row objects costs more
                # than the query on a 10,000-row read.
                cursor.row_factory = None  # type: ignore[attr-defined]
            cursor.execute(self.store.sql(statement.format(**self._t)), tuple(params))
            rows = cursor.fetchall()
        if rows and isinstance(rows[0], dict):
            return [tuple(row.values()) for row in rows]
        return list(rows)


_SKIPPED = UUID("6c9b1f3e-3a55-4f4e-9d0c-2f7d1f0e7a11")
"""Namespace of the ids of rows recording an event the read models skipped (one per position)."""

# The store itself failing (locked, full, read-only, gone): nothing about the event, so
# nothing may be skipped for it. A value it refuses (DataError: NUL in PostgreSQL text) is.
_STORE_FAILURES = (OperationalError, InterfaceError, InternalError)


def _event_error(error: Exception) -> bool:
    """Whether `error` is about the data of an event (skip it) rather than the store (raise)."""
    if isinstance(error, StoreError):
        cause = error.__cause__
        return cause is not None and not isinstance(cause, (*_STORE_FAILURES, StoreError))
    return not isinstance(error, _STORE_FAILURES)


def _storable(value: object) -> object:
    """Text with NUL and lone surrogates escaped, so any store's TEXT column takes it."""
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


def _created(aggregate: T | None) -> T:
    """The aggregate a created event built (mutate(None) never returns None for those)."""
    if aggregate is None:
        msg = "a created event did not construct its aggregate"
        raise TypeError(msg)
    return aggregate
