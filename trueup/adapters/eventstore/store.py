"""Event store wiring: store URLs -> an eventsourcing Application and SQL access to its database.

Also the helpers every reader of that database shares: `PAGE_SIZE`, `select_in` (a
chunked ``IN (...)`` query), `first` and `as_dict` (one row from either driver) and
`StoreOwner` (what followers and subscriptions need of a ledger: its store).

Supported URLs:
- ``sqlite:///path/to/file.db`` (or a bare path): one SQLite file holds the events and
  the projection tables. WAL with ``synchronous=FULL`` (the library's default): an
  audit log must survive power loss.
- ``postgresql://user:pass@host:port/dbname[?schema=name]``: PostgreSQL, for several
  processes or machines. Tables live in ``schema`` (created if missing).
- ``memory://[name]``: a shared in-memory SQLite database, for tests and examples.

Parsing and redacting them is in `urls.py` (`StoreConfig`, `parse_store_url`, `redact`, ...,
all importable from here too).
"""

from __future__ import annotations

import functools
import gc
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper, PersistenceError, StoredEvent

from trueup.adapters.eventstore.codec import MsgspecMapper
from trueup.adapters.eventstore.urls import (
    DEFAULT_STORE,
    POSTGRES_CONNECT_TIMEOUT_SECONDS,
    POSTGRES_LOCK_TIMEOUT_SECONDS,
    StoreConfig,
    parse_store_url,
    redact,
    resolve_store_url,
)
from trueup.adapters.sqlite_files import holds_paper_broker, sqlite_tables, summary
from trueup.domain.errors import StoreError

__all__ = [
    "DEFAULT_STORE",
    "IN_CHUNK",
    "IN_IDS",
    "PAGE_SIZE",
    "POSTGRES_CONNECT_TIMEOUT_SECONDS",
    "POSTGRES_LOCK_TIMEOUT_SECONDS",
    "SQLITE_HEADER",
    "Cursor",
    "LedgerApplication",
    "Store",
    "StoreConfig",
    "StoreOwner",
    "as_dict",
    "check_sqlite_file",
    "first",
    "open_store",
    "parse_store_url",
    "probe_postgres",
    "project_events",
    "redact",
    "resolve_store_url",
    "select_in",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

PAGE_SIZE = 1000
"""Notifications read per query (the library's default section of 10 is 3x slower, gotcha 9)."""

IN_CHUNK = 500
"""Ids per IN (...) query (SQLite allows 999 parameters by default)."""

IN_IDS = "(?...)"
"""Where `select_in` puts a chunk's placeholders: ``... WHERE key IN (?...)``."""

class LedgerApplication(Application[UUID]):
    """The eventsourcing application holding trueup's log."""

    name = "trueup"
    # Replay and catch-up read the log in pages of 1000 (the default of 10 made
    # PostgreSQL replay 3x slower).
    log_section_size = PAGE_SIZE

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """The library's application; one that fails to start closes its connections."""
        try:
            super().__init__(env)
        except BaseException:
            # The factory (and its connection pool) exists before the recorder creates its
            # table: a failed create (a full disk) would otherwise keep the files open.
            factory = getattr(self, "factory", None)
            if factory is not None:
                factory.close()
            raise

    def construct_mapper(self) -> Mapper[UUID]:
        """Use msgspec: smaller rows and faster decoding than the library's JSON."""
        return MsgspecMapper()


class Cursor(Protocol):
    """The part of a DB-API cursor the projections use."""

    def execute(self, statement: str, params: Sequence[object] = ..., /) -> object:
        """Run one statement."""

    def fetchall(self) -> Sequence[Any]:
        """All rows of the last query."""

    @property
    def rowcount(self) -> int:
        """Rows touched by the last statement."""


def first(row: Any) -> Any:  # noqa: ANN401 - a sqlite3.Row or a psycopg dict row
    """The first column of a row, from either driver."""
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


def as_dict(row: Any) -> dict[str, Any]:  # noqa: ANN401 - a sqlite3.Row or a psycopg dict row
    """A row as a dict of its columns, from either driver."""
    if isinstance(row, dict):
        return row
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row has no items()


def select_in(
    run: Callable[[str, Sequence[object]], Iterable[T]],
    statement: str,
    ids: Sequence[object],
    params: Sequence[object] = (),
    *,
    chunk: int = IN_CHUNK,
) -> Iterator[T]:
    """Run `statement` once per chunk of `ids` and yield every row, chunk after chunk.

    `statement` is written with ``?`` placeholders and holds `IN_IDS` where the list goes,
    e.g. ``"SELECT state FROM t WHERE account = ? AND client_order_id IN (?...)"``; each
    chunk runs as ``run(statement_with_that_many_marks, [*params, *chunk])``. `run` adapts
    the placeholders to the dialect (`Store.fetchall` on a cursor does), so the marks are
    added before that. Row order is per chunk: an ORDER BY orders each chunk, not all.
    """
    if IN_IDS not in statement:
        msg = f"select_in needs {IN_IDS} in its statement, got {statement!r}"
        raise ValueError(msg)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        yield from run(statement.replace(IN_IDS, f"({', '.join('?' * len(part))})"), [*params, *part])


def project_events(aggregate: Any, events: Iterable[Any]) -> Any:  # noqa: ANN401 - any aggregate
    """Apply stored events to an aggregate (None before its created event), in order.

    eventsourcing's default `project_aggregate` does the same after asserting, per event,
    `isinstance(event, CanMutateProtocol)` against a runtime-checkable Protocol, which
    costs about 80 us on Python 3.11: most of a startup reconciliation's time went there.
    Every event we store is an `Aggregate.Event` with `mutate`, which still checks the
    originator id and version of each event.
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class Store:
    """An open store: the eventsourcing application plus SQL access to the same database."""

    def __init__(self, config: StoreConfig) -> None:
        """Open (and create if needed) the store described by `config`."""
        self.config = config
        self.dialect = config.dialect
        if config.dialect == "postgres":
            probe_postgres(config)
        if config.path is not None:
            check_sqlite_file(config.path, config.url)
        self.read_only = False
        """True when the file could only be opened for reading: every write raises StoreError."""
        if config.path is not None:
            try:
                config.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                msg = f"cannot open store {redact(config.url)}: {e}"
                raise StoreError(msg) from e
            tables = sqlite_tables(config.path)
            if holds_paper_broker(tables):
                msg = (
                    f"cannot open store {redact(config.url)}: {config.path} is a paper broker's file "
                    f"({summary(tables)}), not a ledger; give the ledger a file of its own"
                )
                raise StoreError(msg)
        with self.creating_tables():
            if config.dialect == "postgres" and config.schema:
                _ensure_postgres_schema(config)
            try:
                self.app = LedgerApplication(env=dict(config.env))
            except (PersistenceError, sqlite3.Error) as e:
                if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
                    msg = f"cannot open store {redact(config.url)} (not a readable SQLite database): {e}"
                    raise StoreError(msg) from e
                # A file we may not write (read-only file or medium) can still be read.
                if config.path is None or not config.path.is_file():
                    msg = f"cannot open store {redact(config.url)}: {type(e).__name__}: {e}"
                    raise StoreError(msg) from e
                # Its traceback's frames hold the library's failed connection: dropped, so
                # the file is closed now, not when the error is collected.
                self.app = _open_read_only(config, e.with_traceback(None))
                self.read_only = True
        self.events_table = "stored_events" if self.dialect == "sqlite" else "trueup_events"
        self._get_lock = threading.Lock()

    @contextmanager
    def creating_tables(self) -> Iterator[None]:
        """Hold, on PostgreSQL, the lock that serializes creating this store's schema and tables.

        PostgreSQL's ``CREATE ... IF NOT EXISTS`` is not safe against itself: two processes
        opening a fresh schema at once fail with "tuple concurrently updated" or a duplicate
        key in ``pg_type``/``pg_namespace``. A session advisory lock, keyed by the schema,
        makes the second opener wait and then find everything there. SQLite needs none
        (its write lock serializes DDL).

        Raises:
            StoreError: the server cannot be reached.
        """
        if self.dialect != "postgres":
            yield
            return
        import psycopg  # noqa: PLC0415 - psycopg is the optional `postgres` extra

        try:
            conn = _postgres_connect(self.config)
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"trueup:ddl:{self.config.schema or ''}",))
        except psycopg.Error as e:
            msg = f"cannot open store {redact(self.config.url)}: {type(e).__name__}: {e}"
            raise StoreError(msg) from e
        try:
            yield
        finally:
            conn.close()  # ends the session, and its advisory lock with it

    def aggregate(self, ident: UUID, version: int | None = None) -> Any:  # noqa: ANN401 - any aggregate
        """A private copy of the aggregate `ident` as stored now (or as it was at `version`).

        eventsourcing 9.5's repository fast-forwards a cached aggregate in place under a
        per-aggregate lock, then deep-copies it after releasing that lock: a get racing
        another get of the same aggregate could copy it mid-update ("dictionary changed
        size during iteration"). One lock around the get makes the two atomic.

        Raises:
            AggregateNotFoundError: nothing is stored under `ident`.
        """
        with self._get_lock:
            return self.app.repository.get(ident, version=version, projector_func=project_events)

    def last_position(self) -> int:
        """Position of the last stored event (0 for an empty log).

        Raises:
            StoreError: the store failed.
        """
        try:
            return self.app.recorder.max_notification_id() or 0
        except PersistenceError as e:
            raise self.error(what="read of the log position", error=e) from e

    def table(self, name: str) -> str:
        """Qualified name of one of our own tables."""
        if self.dialect == "postgres" and self.config.schema:
            return f"{self.config.schema}.{name}"
        return name

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A write transaction on the store's database (commits on success).

        Raises:
            StoreError: the database failed (the library's error is its `__cause__`).
        """
        datastore = self.app.recorder.datastore  # type: ignore[attr-defined]
        try:
            with datastore.transaction(commit=True) as cursor:
                yield _unwrap(cursor)
        except PersistenceError as e:
            raise self.error(what="write", error=e) from e

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """A read-only transaction on the store's database.

        Raises:
            StoreError: the database failed (the library's error is its `__cause__`).
        """
        datastore = self.app.recorder.datastore  # type: ignore[attr-defined]
        try:
            with datastore.transaction(commit=False) as cursor:
                yield _unwrap(cursor)
        except PersistenceError as e:
            raise self.error(what="read", error=e) from e

    def error(self, what: str, error: BaseException) -> StoreError:
        """`error` of the database as trueup's `StoreError`, naming the store (never its password)."""
        url = redact(self.config.url)
        return StoreError(f"{what} on store {url} failed: {type(error).__name__}: {error}")

    def stored_events(self, idents: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """Every stored event of the given aggregates, in version order, in one read.

        For aggregates with short histories (orders, broker-id links), read many at once
        instead of one repository read (a pooled transaction and a query) each.
        """
        found: dict[UUID, list[StoredEvent]] = {}
        sqlite = self.dialect == "sqlite"
        by_column = {ident.hex: ident for ident in idents} if sqlite else {}
        statement = (
            "SELECT originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {self.table(self.events_table)} "
            f"WHERE originator_id IN {IN_IDS} ORDER BY originator_id, originator_version"
        )
        columns = [ident.hex for ident in idents] if sqlite else list(idents)
        with self.reading() as cursor:
            for row in select_in(functools.partial(self.fetchall, cursor), statement, columns):
                column, version, topic, state = tuple(row.values()) if isinstance(row, dict) else row
                ident = by_column[column] if sqlite else column
                found.setdefault(ident, []).append(StoredEvent(ident, version, topic, bytes(state)))
        return found

    def fetchall(self, cursor: Cursor, statement: str, params: Sequence[object] = ()) -> Sequence[Any]:
        """Run a statement written with ? placeholders on `cursor` and return all its rows."""
        cursor.execute(self.sql(statement), params)
        return cursor.fetchall()

    def sql(self, statement: str) -> str:
        """Adapt a statement written with ? placeholders to the store's dialect."""
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def close(self) -> None:
        """Close the application and its connections (a shared memory store on last close)."""
        with _MEMORY_LOCK:
            users = _MEMORY_USERS.get(self.config.url)
            if users is not None:
                if users > 1:
                    _MEMORY_USERS[self.config.url] = users - 1
                    return
                del _MEMORY_USERS[self.config.url]
                del _MEMORY_STORES[self.config.url]
        self.app.close()


# SQLite's shared-cache memory databases lock per table and ignore the busy timeout, so
# two pools on one memory database fail with "database table is locked". Every opener
# of the same memory:// URL shares one Store (the Application is thread-safe) instead.
_MEMORY_LOCK = threading.Lock()
_MEMORY_STORES: dict[str, Store] = {}
_MEMORY_USERS: dict[str, int] = {}


def open_store(url: str) -> Store:
    """Open the store a URL names; memory:// URLs with a name are shared while open."""
    config = parse_store_url(url)
    if not url.startswith("memory://") or url == "memory://":
        return Store(config)  # a file or server, or an anonymous memory store of its own
    with _MEMORY_LOCK:
        store = _MEMORY_STORES.get(url)
        if store is None:
            store = _MEMORY_STORES[url] = Store(config)
            _MEMORY_USERS[url] = 0
        _MEMORY_USERS[url] += 1
        return store


def _unwrap(cursor: Any) -> Cursor:  # noqa: ANN401 - the library's cursor wrapper or psycopg's
    # eventsourcing wraps sqlite3 cursors without rowcount; the raw cursor has it.
    return getattr(cursor, "sqlite_cursor", cursor)  # type: ignore[no-any-return]


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


def check_sqlite_file(path: Path, url: str) -> None:
    """Refuse a file that is not a SQLite database, before SQLite half-reads it.

    Raises:
        StoreError: naming the file and what it starts with.
    """
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return  # a new store
    except OSError as e:
        msg = f"cannot open store {redact(url)}: {e.strerror or e}"
        raise StoreError(msg) from e
    if header and header != SQLITE_HEADER:
        msg = f"store {redact(url)}: {path} is not a SQLite database (it starts with {header[:8]!r})"
        raise StoreError(msg)


def probe_postgres(config: StoreConfig) -> None:
    """Connect once, with a short timeout, to say what is wrong before the pool waits 30 s.

    Raises:
        StoreError: the server is unreachable, the database does not exist, or the login
            is refused, each said so, with the host and port.
    """
    import psycopg  # noqa: PLC0415 - psycopg is the optional `postgres` extra

    info = config.postgres_conninfo
    where = f"{info['host']}:{info['port']}"
    try:
        psycopg.connect(
            dbname=info["dbname"],
            host=info["host"],
            port=info["port"],
            user=info["user"],
            password=info["password"],
            connect_timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS,
        ).close()
    except psycopg.Error as e:
        text = str(e)
        if f'database "{info["dbname"]}" does not exist' in text:
            msg = (
                f"store {redact(config.url)}: the PostgreSQL server at {where} is up but database "
                f"{info['dbname']!r} does not exist (create it: createdb -h {info['host']} "
                f"-p {info['port']} -U {info['user']} {info['dbname']})"
            )
        elif "authentication failed" in text or ("role" in text and "does not exist" in text):
            msg = f"store {redact(config.url)}: the PostgreSQL server at {where} refused the login: {text}"
        else:
            first = " ".join(text.split())
            msg = f"store {redact(config.url)}: PostgreSQL server at {where} is unreachable: {first}"
        raise StoreError(msg) from e


def check_postgres_store(config: StoreConfig) -> None:
    """Refuse a PostgreSQL store that does not exist yet, creating nothing (for readers).

    Opening a `Store` creates the schema and the tables; a command that only reads must
    not, so it asks first: the server answers (`probe_postgres`), the schema exists, and
    it holds trueup's events table.

    Raises:
        StoreError: the server, the database, the schema or the tables are missing, each
            said so in one line with what to do.
    """
    import psycopg  # noqa: PLC0415 - psycopg is the optional `postgres` extra

    probe_postgres(config)
    schema = config.schema
    table = f"{schema}.trueup_events" if schema else "trueup_events"
    try:
        with _postgres_connect(config) as conn:
            if schema is not None:
                found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
                if found is None:
                    msg = (
                        f"no store at {redact(config.url)}: schema {schema!r} does not exist in database "
                        f"{config.postgres_conninfo['dbname']!r}; check ?schema=, or create the store "
                        "with a writer (trueup run, trueup reconcile, Ledger.open)"
                    )
                    raise StoreError(msg)
            row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    except psycopg.Error as e:
        msg = f"cannot read store {redact(config.url)}: {' '.join(str(e).split())}"
        raise StoreError(msg) from e
    if row is None or row[0] is None:
        msg = (
            f"no store at {redact(config.url)}: no trueup tables ({table}) in database "
            f"{config.postgres_conninfo['dbname']!r}; check the URL, or create the store with a "
            "writer (trueup run, trueup reconcile, Ledger.open)"
        )
        raise StoreError(msg)


def _open_read_only(config: StoreConfig, error: BaseException) -> LedgerApplication:
    """The application on a SQLite file opened read-only, after opening it to write failed.

    `mode=ro` reads a file we may not write. A WAL database also needs its ``-shm`` file,
    which SQLite cannot create in a read-only directory: then, if no ``-wal`` file is
    left (no writer has it open), the file is opened `immutable` (read as it is now).
    """
    assert config.path is not None  # noqa: S101 - only file stores get here
    uri = f"file:{quote(str(config.path.resolve()))}?mode=ro"
    candidates = [uri]
    wal = Path(f"{config.path}-wal")
    # No WAL, or an empty one (left by the failed open itself, on a full disk): no commit
    # lives outside the main file, so reading it as it is loses nothing.
    if not wal.exists() or wal.stat().st_size == 0:
        candidates.append(f"{uri}&immutable=1")
    read_error: BaseException | None = None
    for dbname in candidates:
        env = {**config.env, "SQLITE_DBNAME": dbname, "CREATE_TABLE": "n"}
        try:
            app = LedgerApplication(env=env)
        except (PersistenceError, sqlite3.Error) as e:
            read_error = e.with_traceback(None)  # its frames hold the failed connection
            continue
        try:
            app.recorder.max_notification_id()  # the first read proves the file is readable
        except (PersistenceError, sqlite3.Error) as e:
            app.close()  # a failed open keeps no file open
            read_error = e.with_traceback(None)
            continue
        log.warning("store %s opened read-only: %s", redact(config.url), error)
        _release_failed_connections()
        return app
    # Why it could not be written (a full disk, a read-only medium) is the news; why the
    # read-only open failed too (an empty new file has no tables) follows.
    msg = f"cannot open store {redact(config.url)}: {type(error).__name__}: {error}"
    if read_error is not None:
        msg += f" (nor read-only: {type(read_error).__name__}: {read_error})"
    del error, read_error
    _release_failed_connections()
    raise StoreError(msg) from None  # the library's errors would keep its connections (and the file) open


def _release_failed_connections() -> None:
    """Close now the SQLite connections of the library's failed opens.

    A failed open's connections are referenced only from reference cycles (its errors'
    tracebacks and frames): they would close, and release the file, whenever the cycle
    collector ran. A failed open is rare; collecting at once makes "a failed open holds no
    file open" true when the caller sees the error.
    """
    gc.collect()


def _postgres_connect(config: StoreConfig) -> Any:  # noqa: ANN401 - a psycopg.Connection
    """An autocommit connection of our own to the store's server (for DDL and its lock)."""
    import psycopg  # noqa: PLC0415 - psycopg is the optional `postgres` extra

    info = config.postgres_conninfo
    return psycopg.connect(
        dbname=info["dbname"],
        host=info["host"],
        port=info["port"],
        user=info["user"],
        password=info["password"],
        autocommit=True,
        connect_timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS,
    )


def _ensure_postgres_schema(config: StoreConfig) -> None:
    import psycopg  # noqa: PLC0415 - psycopg is the optional `postgres` extra
    from psycopg import sql  # noqa: PLC0415

    try:
        with _postgres_connect(config) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(config.schema or ""))
            )
    except psycopg.Error as e:
        msg = f"cannot prepare schema {config.schema!r} in {redact(config.url)}: {e}"
        raise StoreError(msg) from e


class StoreOwner(Protocol):
    """Anything holding an open store: a `Ledger`, or whatever else wraps one.

    Followers, subscriptions and consumers need nothing else of a ledger, so they are
    typed on this and the store layer never imports the ledger.
    """

    @property
    def store(self) -> Store:
        """The open store."""
