"""What a SQLite file already holds, so that one kind of trueup file is never opened as another.

A ledger (`stored_events` and its `trueup_*` read models) and a paper broker (`meta`,
`orders`, `fills`, `outbox`, ...) both create their tables with ``IF NOT EXISTS``: pointed
at each other's file, each would add its tables beside the other's and carry on, two
unrelated states mixed in one file. Each checks the file's tables before creating any.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

__all__ = ["holds_ledger", "holds_paper_broker", "sqlite_tables", "summary"]


def sqlite_tables(path: Path) -> frozenset[str]:
    """The names of the tables in the SQLite file at `path` (empty if none, or not readable).

    Opened read-only and closed before returning; a file SQLite cannot read is left to the
    caller's own open, which reports it.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return frozenset()
    try:
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return frozenset()
    return frozenset(str(name) for (name,) in rows)


def holds_ledger(tables: frozenset[str]) -> bool:
    """True when `tables` are (or include) a trueup ledger's."""
    return "stored_events" in tables or any(name.startswith("trueup_") for name in tables)


def holds_paper_broker(tables: frozenset[str]) -> bool:
    """True when `tables` are (or include) a paper broker's."""
    return {"meta", "outbox"} <= tables


def summary(tables: frozenset[str]) -> str:
    """`tables a, b, c, ...` for an error message (the first few, sorted)."""
    names = sorted(tables)
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    return f"tables {shown}"
