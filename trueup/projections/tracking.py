"""`TrackingRow`: one named log position kept in a table of the store's own database.

The projector keeps its position in ``trueup_tracking`` (row ``projections``), each
saved-position consumer in ``trueup_consumers`` (a row per consumer name). The two
tables have the same shape and the same rules, so one class serves both:

- The position moves in the transaction that applies what it covers, so the two commit
  together or not at all.
- Write first, conditionally: ``UPDATE ... WHERE position = <where we started>`` is the
  first statement of that transaction, so SQLite takes its write lock at once, and a
  second process that applied the same events first leaves no row to match: the loser
  sees `move` return False, applies nothing and re-reads the position.
"""

from __future__ import annotations

from trueup.adapters.eventstore.store import Cursor, Store, first


class TrackingRow:
    """The row `name` of a ``(name TEXT PRIMARY KEY, position BIGINT NOT NULL)`` table.

    Every method runs on a cursor of the caller's transaction; none commits.
    """

    DDL = "CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
    """The table's definition, with its (qualified) name as ``{table}``."""

    def __init__(self, store: Store, table: str, name: str) -> None:
        """The row `name` of `table` (unqualified: the store adds its schema)."""
        self.store = store
        self.table = store.table(table)
        """The table's qualified name."""
        self.name = name
        t, sql = self.table, store.sql
        self._create = self.DDL.format(table=t)
        self._insert = sql(
            f"INSERT INTO {t} (name, position) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"  # noqa: S608
        )
        self._select = sql(f"SELECT position FROM {t} WHERE name = ?")  # noqa: S608
        self._move = sql(f"UPDATE {t} SET position = ? WHERE name = ? AND position = ?")  # noqa: S608
        self._forward = sql(f"UPDATE {t} SET position = ? WHERE name = ? AND position < ?")  # noqa: S608
        self._reset = sql(f"UPDATE {t} SET position = ? WHERE name = ?")  # noqa: S608

    def create_table(self, cursor: Cursor) -> None:
        """Create the table if it is missing."""
        cursor.execute(self._create)

    def insert(self, cursor: Cursor, position: int) -> None:
        """Add the row at `position` unless it exists (an existing row keeps its position)."""
        cursor.execute(self._insert, (self.name, position))

    def read(self, cursor: Cursor) -> int | None:
        """The saved position, or None if the row is missing."""
        cursor.execute(self._select, (self.name,))
        rows = cursor.fetchall()
        return int(first(rows[0])) if rows else None

    def move(self, cursor: Cursor, position: int, *, expected: int) -> bool:
        """Move the position from `expected` to `position`; False if it was not at `expected`."""
        cursor.execute(self._move, (position, self.name, expected))
        return cursor.rowcount == 1

    def move_forward(self, cursor: Cursor, position: int) -> None:
        """Move the position to `position` if it is behind it (never backwards)."""
        cursor.execute(self._forward, (position, self.name, position))

    def reset(self, cursor: Cursor, position: int = 0) -> None:
        """Set the position, whatever it was (a rebuild starts again from 0)."""
        cursor.execute(self._reset, (position, self.name))
