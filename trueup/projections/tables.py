"""The read-model tables, stored beside the events in the same database, and the projector's SQL.

Decimals are stored as TEXT (exact) and times as ISO-8601 UTC TEXT (sortable).
Order and position rows also keep the aggregate state as msgspec JSON, so the
projection evolves them with the domain's own event `apply()` methods instead of
re-implementing the rules in SQL.
"""

from __future__ import annotations

from trueup.adapters.eventstore.store import Store
from trueup.projections.tracking import TrackingRow

TRACKING = "trueup_tracking"
ORDERS = "trueup_orders"
POSITIONS = "trueup_positions"
DISCREPANCIES = "trueup_discrepancies"
FILLS = "trueup_fills"
SERVICE = "trueup_service_status"

_DDL = [
    TrackingRow.DDL.format(table="{trueup_tracking}"),
    """CREATE TABLE IF NOT EXISTS {trueup_orders} (
        order_id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        client_order_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        strategy TEXT,
        status TEXT NOT NULL,
        is_open INTEGER NOT NULL,
        position BIGINT NOT NULL,
        state TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS trueup_orders_open ON {trueup_orders} (account, is_open)",
    "CREATE INDEX IF NOT EXISTS trueup_orders_client_id ON {trueup_orders} (account, client_order_id)",
    """CREATE TABLE IF NOT EXISTS {trueup_positions} (
        position_id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        symbol TEXT NOT NULL,
        qty TEXT NOT NULL,
        position BIGINT NOT NULL,
        state TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {trueup_discrepancies} (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        account TEXT NOT NULL,
        subject TEXT NOT NULL,
        expected TEXT NOT NULL,
        actual TEXT NOT NULL,
        detail TEXT NOT NULL,
        evidence_id TEXT,
        evidence_position BIGINT,
        position BIGINT NOT NULL,
        ts_detected TEXT NOT NULL,
        resolution TEXT,
        resolved_by TEXT,
        scope TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS {trueup_service_status} (
        name TEXT PRIMARY KEY,
        counters TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS trueup_discrepancies_open ON {trueup_discrepancies} (account, resolution)",
    """CREATE TABLE IF NOT EXISTS {trueup_fills} (
        account TEXT NOT NULL,
        client_order_id TEXT NOT NULL,
        exec_key TEXT NOT NULL,
        exec_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        qty TEXT NOT NULL,
        price TEXT NOT NULL,
        ts_event TEXT NOT NULL,
        commission TEXT,
        inferred INTEGER NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (account, client_order_id, exec_key)
    )""",
]

ALL_TABLES = (ORDERS, POSITIONS, DISCREPANCIES, FILLS)
"""Tables a rebuild empties (tracking is reset, not dropped)."""


def names(store: Store) -> dict[str, str]:
    """Each of our tables' qualified name, by its plain name."""
    return {name: store.table(name) for name in (TRACKING, SERVICE, *ALL_TABLES)}


def create_tables(store: Store) -> None:
    """Create the read-model tables if they are missing."""
    qualified = names(store)
    with store.creating_tables(), store.transaction() as cursor:
        for statement in _DDL:
            cursor.execute(statement.format(**qualified))


def statements(store: Store) -> dict[str, str]:
    """Every statement a projector page runs, in the store's dialect.

    Build them once per projector: a page flushes its queued writes by runs of one
    statement, and tells the runs apart by the statement's identity.
    """
    t, sql = names(store), store.sql
    position_column = "rowid" if store.dialect == "sqlite" else "notification_id"
    events = store.table(store.events_table)
    return {
        "read": sql(
            f"SELECT {position_column}, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {events} WHERE {position_column} > ? ORDER BY {position_column} LIMIT ?"
        ),
        "read_until": sql(
            f"SELECT {position_column}, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {events} WHERE {position_column} > ? AND {position_column} <= ? "
            f"ORDER BY {position_column} LIMIT ?"
        ),
        "message_position": sql(
            f"SELECT {position_column} FROM {events} "  # noqa: S608
            "WHERE originator_id = ? AND originator_version = 1"
        ),
        "order": sql(
            f"INSERT INTO {t[ORDERS]} "  # noqa: S608
            "(order_id, account, client_order_id, symbol, strategy, status, is_open, "
            "position, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, "
            "is_open = excluded.is_open, position = excluded.position, "
            "state = excluded.state"
        ),
        "position": sql(
            f"INSERT INTO {t[POSITIONS]} "  # noqa: S608
            "(position_id, account, symbol, qty, position, state) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (position_id) DO UPDATE SET qty = excluded.qty, "
            "position = excluded.position, state = excluded.state"
        ),
        "fill": sql(
            f"INSERT INTO {t[FILLS]} "  # noqa: S608
            "(account, client_order_id, exec_key, exec_id, symbol, side, qty, price, ts_event, "
            "commission, inferred, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) "
            "ON CONFLICT (account, client_order_id, exec_key) DO UPDATE SET "
            "exec_id = excluded.exec_id, qty = excluded.qty, price = excluded.price, "
            "ts_event = excluded.ts_event, commission = excluded.commission, "
            "position = excluded.position"
        ),
        "synthetic_fill": sql(
            f"INSERT INTO {t[FILLS]} "  # noqa: S608
            "(account, client_order_id, exec_key, exec_id, symbol, side, qty, price, ts_event, "
            "commission, inferred, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?) "
            "ON CONFLICT (account, client_order_id, exec_key) DO NOTHING"
        ),
        "inferred": sql(
            f"INSERT INTO {t[FILLS]} "  # noqa: S608
            "(account, client_order_id, exec_key, exec_id, symbol, side, qty, price, "
            "ts_event, commission, inferred, position) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, ?) "
            "ON CONFLICT (account, client_order_id, exec_key) DO UPDATE SET "
            "qty = excluded.qty, price = excluded.price, ts_event = excluded.ts_event, "
            "position = excluded.position"
        ),
        "no_inferred": sql(
            f"DELETE FROM {t[FILLS]} "  # noqa: S608
            "WHERE account = ? AND client_order_id = ? AND exec_key = ?"
        ),
        "commission": sql(
            f"UPDATE {t[FILLS]} SET commission = ? "  # noqa: S608
            "WHERE account = ? AND client_order_id = ? AND exec_key = ?"
        ),
        "discrepancy": sql(
            f"INSERT INTO {t[DISCREPANCIES]} "  # noqa: S608
            "(id, kind, severity, account, subject, expected, actual, detail, evidence_id, "
            "evidence_position, position, ts_detected, scope) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        ),
        "resolved": sql(
            f"UPDATE {t[DISCREPANCIES]} SET resolution = ?, resolved_by = ? "  # noqa: S608
            "WHERE id = ?"
        ),
    }
