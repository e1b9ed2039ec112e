"""Keeps the read-model tables up to date from the log, exactly once, resumably.

The projector reads notifications after its tracking position in pages of 1000,
applies each page in one transaction and moves the tracking position in that same
transaction, so a crash loses or repeats nothing. The tracking row is updated first
and conditionally (write-first: SQLite takes the write lock at once, and a second
process that raced us updates no row and retries). Rebuild empties the tables and
replays from position 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification

from trueup.adapters.store import Cursor, Store
from trueup.domain.discrepancy import Discrepancy
from trueup.domain.messages import BrokerMessage
from trueup.domain.order import Order, OrderState
from trueup.domain.position import Position, PositionState
from trueup.projections import tables

log = logging.getLogger(__name__)

T = TypeVar("T")
PAGE_SIZE = 1000
TRACKING_NAME = "projections"

_ENCODER = msgspec.json.Encoder(decimal_format="string")
_ORDER_DECODER = msgspec.json.Decoder(OrderState)
_POSITION_DECODER = msgspec.json.Decoder(PositionState)
RECONCILE_ORDER_ID = "~reconcile"
"""client_order_id of the fills-ledger rows of reconciliation fills."""
INFERRED_KEY = "~inferred"
"""exec_key of the fills-ledger row holding an order's inferred quantity."""


def _iso(value: datetime) -> str:
    return value.isoformat()


class _Page:
    """Aggregate states touched while applying one page, written once at its end."""

    def __init__(self, projector: Projector, cursor: Cursor) -> None:
        self.projector = projector
        self.cursor = cursor
        self.orders: dict[UUID, tuple[OrderState, int]] = {}
        self.positions: dict[UUID, tuple[PositionState, int]] = {}
        self.inferred_touched: set[UUID] = set()
        self.message_positions: dict[UUID, int] = {}

    def order(self, order_id: UUID) -> Order:
        if order_id not in self.orders:
            state = self.projector.load_state(self.cursor, tables.ORDERS, "order_id", order_id)
            if state is None:
                msg = f"order {order_id} has events but no created event in the log"
                raise LookupError(msg)
            self.orders[order_id] = (_ORDER_DECODER.decode(state), 0)
        shell = Order.__new__(Order)
        shell.state = self.orders[order_id][0]
        return shell

    def position(self, position_id: UUID) -> Position:
        if position_id not in self.positions:
            state = self.projector.load_state(self.cursor, tables.POSITIONS, "position_id", position_id)
            if state is None:
                msg = f"position {position_id} has events but no created event in the log"
                raise LookupError(msg)
            self.positions[position_id] = (_POSITION_DECODER.decode(state), 0)
        shell = Position.__new__(Position)
        shell.state = self.positions[position_id][0]
        return shell


class Projector:
    """Applies the log to the read-model tables of one store."""

    def __init__(self, store: Store) -> None:
        """Create the tables if needed."""
        self.store = store
        tables.create_tables(store)
        self._t = {name: store.table(name) for name in (tables.TRACKING, tables.SERVICE, *tables.ALL_TABLES)}
        with store.transaction() as cursor:
            cursor.execute(
                store.sql(
                    f"INSERT INTO {self._t[tables.TRACKING]} (name, position) VALUES (?, 0) "  # noqa: S608
                    "ON CONFLICT (name) DO NOTHING"
                ),
                (TRACKING_NAME,),
            )

    def position(self) -> int:
        """Log position the tables reflect."""
        with self.store.reading() as cursor:
            return self._tracking(cursor)

    def _tracking(self, cursor: Cursor) -> int:
        cursor.execute(
            self.store.sql(f"SELECT position FROM {self._t[tables.TRACKING]} WHERE name = ?"),  # noqa: S608
            (TRACKING_NAME,),
        )
        rows = cursor.fetchall()
        return int(_first(rows[0])) if rows else 0

    def catch_up(self, stop: int | None = None, progress: Callable[[int], object] | None = None) -> int:
        """Apply every event after the tracking position (up to `stop`); return how many."""
        applied = 0
        while True:
            start = self.position()
            if stop is not None and start >= stop:
                return applied
            notifications = self.store.app.recorder.select_notifications(
                start=start, limit=PAGE_SIZE, stop=stop, inclusive_of_start=False
            )
            if not notifications:
                return applied
            if self._apply_page(start, notifications):
                applied += len(notifications)
                if progress is not None:
                    progress(notifications[-1].id)

    def rebuild(self, progress: Callable[[int], object] | None = None) -> int:
        """Empty the tables and replay the whole log from position 0; return events applied.

        `progress` is called with the log position after each page.
        """
        with self.store.transaction() as cursor:
            for name in tables.ALL_TABLES:
                cursor.execute(f"DELETE FROM {self._t[name]}")  # noqa: S608
            cursor.execute(
                self.store.sql(f"UPDATE {self._t[tables.TRACKING]} SET position = 0 WHERE name = ?"),  # noqa: S608
                (TRACKING_NAME,),
            )
        return self.catch_up(progress=progress)

    def service_status(self) -> dict[str, Any]:
        """The reconciliation service's last saved counters, by service name."""
        with self.store.reading() as cursor:
            cursor.execute(f"SELECT name, counters FROM {self._t[tables.SERVICE]}")  # noqa: S608
            return {str(_as_dict(r)["name"]): json.loads(_as_dict(r)["counters"]) for r in cursor.fetchall()}

    def save_service_status(self, name: str, counters: dict[str, Any]) -> None:
        """Save the service's counters so `trueup status` can show them from another process."""
        with self.store.transaction() as cursor:
            cursor.execute(
                self.store.sql(
                    f"INSERT INTO {self._t[tables.SERVICE]} (name, counters) VALUES (?, ?) "  # noqa: S608
                    "ON CONFLICT (name) DO UPDATE SET counters = excluded.counters"
                ),
                (name, json.dumps(counters, default=str)),
            )

    def _apply_page(self, start: int, notifications: Sequence[Notification]) -> bool:
        """Apply one page atomically; False if another process applied it first."""
        end = notifications[-1].id
        with self.store.transaction() as cursor:
            cursor.execute(
                self.store.sql(
                    f"UPDATE {self._t[tables.TRACKING]} SET position = ? "  # noqa: S608
                    "WHERE name = ? AND position = ?"
                ),
                (end, TRACKING_NAME, start),
            )
            if cursor.rowcount != 1:
                return False  # raced: someone else moved the position; re-read and go on
            page = _Page(self, cursor)
            for notification in notifications:
                event = self.store.app.mapper.to_domain_event(notification)
                self._apply(page, notification.id, event)
            self._write(page)
        return True

    def load_state(self, cursor: Cursor, table: str, key: str, ident: UUID) -> str | None:
        """The stored state JSON of one order or position row, if any."""
        cursor.execute(
            self.store.sql(f"SELECT state FROM {self._t[table]} WHERE {key} = ?"),  # noqa: S608
            (str(ident),),
        )
        rows = cursor.fetchall()
        return str(_first(rows[0])) if rows else None

    def _apply(self, page: _Page, position: int, event: Any) -> None:  # noqa: ANN401 - any event
        oid = event.originator_id
        if isinstance(event, Order.Event):
            self._apply_order(page, position, event)
        elif isinstance(event, Position.Event):
            if isinstance(event, Position.Opened):
                pos: Position = _created(event.mutate(None))
            else:
                pos = page.position(oid)
                event.apply(pos)
            page.positions[oid] = (pos.state, position)
            if isinstance(event, Position.Synced):
                self._write_synthetic_fills(page.cursor, pos.state, event, position)
        elif isinstance(event, Discrepancy.Raised):
            self._write_discrepancy(page, event, position)
        elif isinstance(event, Discrepancy.Resolved):
            page.cursor.execute(
                self.store.sql(
                    f"UPDATE {self._t[tables.DISCREPANCIES]} SET resolution = ?, resolved_by = ? "  # noqa: S608
                    "WHERE id = ?"
                ),
                (event.resolution, event.by, str(oid)),
            )
        elif isinstance(event, BrokerMessage.Received):
            page.message_positions[oid] = position

    def _apply_order(self, page: _Page, position: int, event: Order.Event) -> None:
        oid = event.originator_id
        if isinstance(event, Order.Intended | Order.Discovered):
            order: Order = _created(event.mutate(None))
        else:
            order = page.order(oid)
            event.apply(order)
        page.orders[oid] = (order.state, position)
        if isinstance(event, Order.FillBooked | Order.FillCorrected):
            self._write_fill(page.cursor, order.state, event, position)
        if isinstance(event, Order.FillBooked | Order.FillCorrected | Order.FillInferred):
            page.inferred_touched.add(oid)
        if isinstance(event, Order.CommissionRecorded):
            self._write_commission(page.cursor, order.state, event)

    def _write(self, page: _Page) -> None:
        sql = self.store.sql
        for oid, (state, position) in page.orders.items():
            page.cursor.execute(
                sql(
                    f"INSERT INTO {self._t[tables.ORDERS]} "  # noqa: S608
                    "(order_id, account, client_order_id, symbol, strategy, status, is_open, "
                    "position, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, "
                    "is_open = excluded.is_open, position = excluded.position, "
                    "state = excluded.state"
                ),
                (
                    str(oid),
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
            if oid in page.inferred_touched:
                self._write_inferred(page.cursor, state, position)
        for pid, (pstate, position) in page.positions.items():
            page.cursor.execute(
                sql(
                    f"INSERT INTO {self._t[tables.POSITIONS]} "  # noqa: S608
                    "(position_id, account, symbol, qty, position, state) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (position_id) DO UPDATE SET qty = excluded.qty, "
                    "position = excluded.position, state = excluded.state"
                ),
                (
                    str(pid),
                    pstate.account,
                    pstate.symbol,
                    str(pstate.qty),
                    position,
                    _ENCODER.encode(pstate).decode(),
                ),
            )

    def _write_fill(
        self,
        cursor: Cursor,
        state: OrderState,
        event: Order.FillBooked | Order.FillCorrected,
        position: int,
    ) -> None:
        cursor.execute(
            self.store.sql(
                f"INSERT INTO {self._t[tables.FILLS]} "  # noqa: S608
                "(account, client_order_id, exec_key, exec_id, symbol, side, qty, price, ts_event, "
                "commission, inferred, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) "
                "ON CONFLICT (account, client_order_id, exec_key) DO UPDATE SET "
                "exec_id = excluded.exec_id, qty = excluded.qty, price = excluded.price, "
                "ts_event = excluded.ts_event, commission = excluded.commission, "
                "position = excluded.position"
            ),
            (
                state.account,
                state.client_order_id,
                event.key,
                event.exec_id,
                state.symbol,
                state.side.value,
                str(event.qty),
                str(event.price),
                _iso(event.ts_event),
                None if event.commission is None else str(event.commission),
                position,
            ),
        )

    def _write_synthetic_fills(
        self, cursor: Cursor, state: PositionState, event: Position.Synced, position: int
    ) -> None:
        """Reconciliation fills belong to no order: listed under RECONCILE_ORDER_ID."""
        for fill in event.fills:
            cursor.execute(
                self.store.sql(
                    f"INSERT INTO {self._t[tables.FILLS]} "  # noqa: S608
                    "(account, client_order_id, exec_key, exec_id, symbol, side, qty, price, ts_event, "
                    "commission, inferred, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?) "
                    "ON CONFLICT (account, client_order_id, exec_key) DO NOTHING"
                ),
                (
                    state.account,
                    RECONCILE_ORDER_ID,
                    fill.exec_id,
                    fill.exec_id,
                    state.symbol,
                    "BUY" if fill.qty > 0 else "SELL",
                    str(abs(fill.qty)),
                    str(fill.price),
                    _iso(event.ts_event),
                    position,
                ),
            )

    def _write_inferred(self, cursor: Cursor, state: OrderState, position: int) -> None:
        if state.inferred_qty > 0 and state.inferred_price is not None:
            cursor.execute(
                self.store.sql(
                    f"INSERT INTO {self._t[tables.FILLS]} "  # noqa: S608
                    "(account, client_order_id, exec_key, exec_id, symbol, side, qty, price, "
                    "ts_event, commission, inferred, position) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, ?) "
                    "ON CONFLICT (account, client_order_id, exec_key) DO UPDATE SET "
                    "qty = excluded.qty, price = excluded.price, position = excluded.position"
                ),
                (
                    state.account,
                    state.client_order_id,
                    INFERRED_KEY,
                    INFERRED_KEY,
                    state.symbol,
                    state.side.value,
                    str(state.inferred_qty),
                    str(state.inferred_price),
                    _iso(state.status_ts) if state.status_ts else "",
                    position,
                ),
            )
        else:
            cursor.execute(
                self.store.sql(
                    f"DELETE FROM {self._t[tables.FILLS]} "  # noqa: S608
                    "WHERE account = ? AND client_order_id = ? AND exec_key = ?"
                ),
                (state.account, state.client_order_id, INFERRED_KEY),
            )

    def _write_commission(self, cursor: Cursor, state: OrderState, event: Any) -> None:  # noqa: ANN401
        cursor.execute(
            self.store.sql(
                f"UPDATE {self._t[tables.FILLS]} SET commission = ? "  # noqa: S608
                "WHERE account = ? AND client_order_id = ? AND exec_key = ?"
            ),
            (str(event.commission), state.account, state.client_order_id, event.key),
        )

    def _write_discrepancy(self, page: _Page, event: Any, position: int) -> None:  # noqa: ANN401
        evidence_position = None
        if event.evidence_id is not None:
            evidence_position = page.message_positions.get(event.evidence_id)
            if evidence_position is None:
                evidence_position = self._message_position(page.cursor, event.evidence_id)
        page.cursor.execute(
            self.store.sql(
                f"INSERT INTO {self._t[tables.DISCREPANCIES]} "  # noqa: S608
                "(id, kind, severity, account, subject, expected, actual, detail, evidence_id, "
                "evidence_position, position, ts_detected, scope) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
            ),
            (
                str(event.originator_id),
                event.kind,
                event.severity,
                event.account,
                event.key,
                event.expected,
                event.actual,
                event.detail,
                None if event.evidence_id is None else str(event.evidence_id),
                evidence_position,
                position,
                _iso(event.ts_detected),
                event.scope,
            ),
        )

    def _message_position(self, cursor: Cursor, message_id: UUID) -> int | None:
        """Log position of a raw message stored in an earlier page."""
        column = "rowid" if self.store.dialect == "sqlite" else "notification_id"
        ident: object = str(message_id) if self.store.dialect == "sqlite" else message_id
        cursor.execute(
            self.store.sql(
                f"SELECT {column} FROM {self.store.table(self.store.events_table)} "  # noqa: S608
                "WHERE originator_id = ? AND originator_version = 1"
            ),
            (ident,),
        )
        rows = cursor.fetchall()
        return int(_first(rows[0])) if rows else None

    def rows(self, statement: str, params: Sequence[object] = ()) -> Iterator[dict[str, Any]]:
        """Run a read query on the tables and yield rows as dicts."""
        with self.store.reading() as cursor:
            cursor.execute(self.store.sql(statement.format(**self._t)), tuple(params))
            yield from (_as_dict(row) for row in cursor.fetchall())


def _created(aggregate: T | None) -> T:
    """The aggregate a created event built (mutate(None) never returns None for those)."""
    if aggregate is None:
        msg = "a created event did not construct its aggregate"
        raise TypeError(msg)
    return aggregate


def _first(row: Any) -> Any:  # noqa: ANN401 - a sqlite3.Row or a psycopg dict row
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


def _as_dict(row: Any) -> dict[str, Any]:  # noqa: ANN401 - a sqlite3.Row or a psycopg dict row
    if isinstance(row, dict):
        return row
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row has no items()
