"""The read-model tables, stored beside the events in the same database.

Decimals are stored as TEXT (exact) and times as ISO-8601 UTC TEXT (sortable).
Order and position rows also keep the aggregate state as msgspec JSON, so the
projection evolves them with the domain's own event `apply()` methods instead of
re-implementing the rules in SQL.
"""

from __future__ import annotations

from trueup.adapters.store import Store

TRACKING = "trueup_tracking"
ORDERS = "trueup_orders"
POSITIONS = "trueup_positions"
DISCREPANCIES = "trueup_discrepancies"
FILLS = "trueup_fills"
SERVICE = "trueup_service_status"

_DDL = [
    """CREATE TABLE IF NOT EXISTS {trueup_tracking} (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL
    )""",
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


def create_tables(store: Store) -> None:
    """Create the read-model tables if they are missing."""
    names = {name: store.table(name) for name in (TRACKING, SERVICE, *ALL_TABLES)}
    with store.transaction() as cursor:
        for statement in _DDL:
            cursor.execute(statement.format(**names))
