"""The read-model tables, stored beside the events in the same database, and the projector's SQL.

Decimals are stored as TEXT (exact) and times as ISO-8601 UTC TEXT (sortable).
Order and position rows also keep the aggregate state as msgspec JSON, so the
projection evolves them with the domain's own event `apply()` methods instead of
re-implementing the rules in SQL.
"""

from __future__ import annotations

from trueup.adapters.eventstore.store import Cursor, Store
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
        scope TEXT,
        topic TEXT,
        last_seen TEXT,
        sightings INTEGER NOT NULL DEFAULT 1,
        acknowledged INTEGER NOT NULL DEFAULT 0
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

_ADDED_COLUMNS = {
    DISCREPANCIES: (
        ("topic", "TEXT"),
        ("last_seen", "TEXT"),
        ("sightings", "INTEGER NOT NULL DEFAULT 1"),
        ("acknowledged", "INTEGER NOT NULL DEFAULT 0"),
    ),
}
"""Columns added since a table was first released: added to an existing store when it opens.

The defaults are what the rows of older events mean (raised once, never acknowledged; a
missing topic is derived from kind and expected, as `problem_topic` does for old events).
"""

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
        for table, columns in _ADDED_COLUMNS.items():
            # Looked up first: a no-op ALTER TABLE still takes PostgreSQL's exclusive lock.
            present = _columns(store, cursor, table)
            for column, declaration in columns:
                if column not in present:
                    if_missing = "" if store.dialect == "sqlite" else "IF NOT EXISTS "  # a racing opener
                    cursor.execute(
                        f"ALTER TABLE {qualified[table]} ADD COLUMN {if_missing}{column} {declaration}"
                    )


def _columns(store: Store, cursor: Cursor, table: str) -> set[str]:
    """Names of the columns `table` has in this store."""
    if store.dialect == "sqlite":
        rows = store.fetchall(cursor, f"PRAGMA table_info({store.table(table)})")
        return {str(row[1]) for row in rows}  # (cid, name, type, ...) from either row factory
    rows = store.fetchall(
        cursor,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = COALESCE(?, current_schema()) AND table_name = ?",
        (store.config.schema, table),
    )
    return {str(row["column_name"] if isinstance(row, dict) else row[0]) for row in rows}


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
        "order_fills_gone": sql(
            f"DELETE FROM {t[FILLS]} WHERE account = ? AND client_order_id = ?"  # noqa: S608
        ),
        "commission": sql(
            f"UPDATE {t[FILLS]} SET commission = ? "  # noqa: S608
            "WHERE account = ? AND client_order_id = ? AND exec_key = ?"
        ),
        "discrepancy": sql(
            f"INSERT INTO {t[DISCREPANCIES]} "  # noqa: S608
            "(id, kind, severity, account, subject, expected, actual, detail, evidence_id, "
            "evidence_position, position, ts_detected, scope, topic, last_seen, sightings) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (id) DO NOTHING"
        ),
        "seen": sql(
            f"UPDATE {t[DISCREPANCIES]} SET severity = ?, actual = ?, detail = ?, "  # noqa: S608
            "evidence_id = ?, evidence_position = ?, last_seen = ?, sightings = ? WHERE id = ?"
        ),
        "resolved": sql(
            f"UPDATE {t[DISCREPANCIES]} SET resolution = ?, resolved_by = ?, "  # noqa: S608
            "acknowledged = ? WHERE id = ?"
        ),
        "cleared": sql(
            f"UPDATE {t[DISCREPANCIES]} SET acknowledged = 0 WHERE id = ?"  # noqa: S608
        ),
    }
