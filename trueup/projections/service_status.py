"""The service's counters side table (``trueup_service_status``): one JSON row per service name.

Not a projection of the log: the reconciliation service saves its counters here so
`trueup status` in another process can show them; a rebuild leaves the table alone.
"""

from __future__ import annotations

import json
from typing import Any

from trueup.adapters.eventstore.store import Store, as_dict
from trueup.projections.tables import SERVICE


def read(store: Store) -> dict[str, Any]:
    """The last saved counters, by service name."""
    with store.reading() as cursor:
        cursor.execute(f"SELECT name, counters FROM {store.table(SERVICE)}")  # noqa: S608
        return {str(as_dict(r)["name"]): json.loads(as_dict(r)["counters"]) for r in cursor.fetchall()}


def save(store: Store, name: str, counters: dict[str, Any]) -> None:
    """Save one service's counters, replacing what it saved before."""
    with store.transaction() as cursor:
        cursor.execute(
            store.sql(
                f"INSERT INTO {store.table(SERVICE)} (name, counters) VALUES (?, ?) "  # noqa: S608
                "ON CONFLICT (name) DO UPDATE SET counters = excluded.counters"
            ),
            (name, json.dumps(counters, default=str)),
        )
