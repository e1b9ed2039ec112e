"""The paper broker's file: its SQLite schema, its transactions, its outbox and fault log.

`PaperFile` owns the connection and hands out one `Transaction` per broker operation
(`write()` or `read()`). A transaction loads the session state (step, clock, counters,
both generators, fault plan, outage, disconnect), and a write transaction stores it
back in the same commit, so whatever process opens the file next continues exactly
where the last commit left off. `broker.py` decides what happens; this module stores
it and reads it back as paper wire structs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec

from trueup.adapters.paper.faults import CallbackFate, Fault, FaultKind, FaultPlan, callback_fate
from trueup.adapters.paper.market import START_TICKS, average_cost, net_positions
from trueup.adapters.paper.rng import SplitMix64, derive_seed
from trueup.adapters.paper.wire import WIRE_ENCODER, PaperFill, PaperOrder, PaperPosition
from trueup.adapters.sqlite_files import holds_ledger, sqlite_tables, summary
from trueup.domain.errors import ConfigError, StoreError

__all__ = ["EPOCH", "SCHEMA_VERSION", "WORKING", "PaperFile", "SessionState", "Transaction", "market_time"]

log = logging.getLogger(__name__)

EPOCH: Final = datetime(2025, 1, 6, 14, 30, tzinfo=UTC)
"""Market time of step 0 (a Monday's open); step n is n seconds later."""

SCHEMA_VERSION: Final = 2
"""2: client_order_id is unique by an index, absent in a file that accepts duplicates."""

# A second order with one of our ids cannot exist in a file with this index, whatever the
# code above it does. NULLs (manual orders) do not collide.
_UNIQUE_CLIENT_ID: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS orders_client_order_id ON orders (client_order_id)"
)
"""Version of the file layout; a file of another version is refused, never guessed at."""

WORKING: Final = ("new", "partially_filled")
"""Paper statuses of an order that may still execute."""

# One statement per entry: `executescript` would COMMIT the transaction it runs in.
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # client_order_id is UNIQUE by an index (`_UNIQUE_CLIENT_ID`) unless the file accepts
    # duplicates (`SessionState.accept_duplicates`), as IB accepts a reused orderRef.
    """CREATE TABLE IF NOT EXISTS orders (
        no INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        client_order_id TEXT,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        qty TEXT NOT NULL,
        limit_price TEXT,
        status TEXT NOT NULL,
        filled_qty TEXT NOT NULL,
        fill_cost TEXT NOT NULL,
        ts TEXT NOT NULL,
        created_step INTEGER NOT NULL,
        manual INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fills (
        no INTEGER PRIMARY KEY,
        exec_id TEXT NOT NULL UNIQUE,
        order_no INTEGER NOT NULL REFERENCES orders (no),
        qty TEXT NOT NULL,
        price TEXT NOT NULL,
        seq INTEGER NOT NULL,
        step INTEGER NOT NULL,
        ts TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shifts (
        no INTEGER PRIMARY KEY,
        symbol TEXT NOT NULL,
        qty_delta TEXT NOT NULL,
        price TEXT NOT NULL,
        seq INTEGER NOT NULL,
        step INTEGER NOT NULL,
        ts TEXT NOT NULL)""",
    # Each callback (and each copy of a duplicated one) is one row; `state` moves
    # pending -> delivered in the very transaction that hands it to the stream.
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        order_id TEXT NOT NULL,
        exec_id TEXT,
        emitted_step INTEGER NOT NULL,
        due_step INTEGER NOT NULL,
        sort_key INTEGER NOT NULL,
        release_seq INTEGER,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dropped', 'lost')),
        delivered_step INTEGER)""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, sort_key)",
    """CREATE TABLE IF NOT EXISTS faults (
        id INTEGER PRIMARY KEY,
        step INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        order_id TEXT,
        exec_id TEXT,
        callback INTEGER)""",
)

_FILLS_SELECT: Final = (
    "SELECT f.exec_id AS exec_id, o.id AS order_id, o.client_order_id AS client_order_id, "
    "o.symbol AS symbol, o.side AS side, f.qty AS qty, f.price AS price, f.ts AS ts "
    "FROM fills f JOIN orders o ON o.no = f.order_no"
)


def market_time(step: int, seq: int) -> datetime:
    """The market clock: `EPOCH` + `step` seconds + `seq` microseconds (strictly increasing)."""
    return EPOCH + timedelta(seconds=step, microseconds=seq)


class SessionState(msgspec.Struct, kw_only=True):
    """The broker's scalar state, one JSON row of `meta`, stored by every write transaction."""

    account: str
    """The one account the file serves."""
    seed: int
    """The seed the file was created with."""
    symbols: tuple[str, ...]
    """Tradable symbols."""
    prices: dict[str, int]
    """Current price of each symbol, in ticks."""
    market_rng: int
    """SplitMix64 state of the market (prices, fill sizes, outage submits)."""
    fault_rng: int
    """SplitMix64 state of the fault dice."""
    plan: FaultPlan
    """Callback fault probabilities."""
    step: int = 0
    """Market steps so far."""
    seq: int = 0
    """Market events so far (orders, executions, cancels, shifts): the clock's microseconds."""
    orders: int = 0
    """Broker order numbers issued (`P00000001`, ...)."""
    execs: int = 0
    """Execution numbers issued (`X00000001`, ...)."""
    callbacks: int = 0
    """Outbox rows written (each copy of a duplicated callback counts)."""
    outage_until: int = 0
    """Queries fail while `step < outage_until`."""
    disconnected: bool = False
    """The stream dropped; the next stream item is `Reconnected`."""
    accept_duplicates: bool = False
    """A second order with a client id already used is placed, not refused (IB accepts a
    reused orderRef). Fixed when the file is created: it decides the unique index."""


_STATE_DECODER: Final = msgspec.json.Decoder(SessionState)
_STATE_ENCODER: Final = msgspec.json.Encoder()


class Transaction:
    """One open transaction: the connection, the session state and its two generators."""

    def __init__(self, conn: sqlite3.Connection, state: SessionState) -> None:
        """Wrap an open transaction on `conn` with the state loaded in it."""
        self.conn = conn
        self.state = state
        self.market = SplitMix64(state.market_rng)
        """The market's generator (prices, fill sizes, outage submits)."""
        self.dice = SplitMix64(state.fault_rng)
        """The fault dice."""

    # -- the session ------------------------------------------------------------------------

    @property
    def in_outage(self) -> bool:
        """Whether an outage is active at the current step."""
        return self.state.step < self.state.outage_until

    def event_time(self) -> datetime:
        """Count one market event and return its time."""
        self.state.seq += 1
        return market_time(self.state.step, self.state.seq)

    def save(self) -> None:
        """Store the state, generators included: the next transaction continues from here."""
        self.state.market_rng = self.market.state
        self.state.fault_rng = self.dice.state
        self.conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'state'", (_STATE_ENCODER.encode(self.state).decode(),)
        )

    # -- rows and their wire form ---------------------------------------------------------------

    def order_row(
        self, *, client_order_id: str | None = None, broker_order_id: str | None = None
    ) -> sqlite3.Row | None:
        """The order with this broker id if one is given, else with this client id, or None.

        The broker id wins because an order placed by hand has no client id: the engine
        knows it only by the broker's id.
        """
        if broker_order_id:
            query, key = "SELECT * FROM orders WHERE id = ?", broker_order_id
        elif client_order_id:
            # The first placed, when a file that accepts duplicates holds several.
            query, key = "SELECT * FROM orders WHERE client_order_id = ? ORDER BY no", client_order_id
        else:
            return None
        row: sqlite3.Row | None = self.conn.execute(query, (key,)).fetchone()
        return row

    def working_orders(self) -> list[sqlite3.Row]:
        """Orders that may still execute, oldest first."""
        return self.conn.execute(
            "SELECT * FROM orders WHERE status IN (?, ?) ORDER BY no", WORKING
        ).fetchall()

    def order_wire(self, broker_order_id: str) -> PaperOrder:
        """The order as the broker sends it now."""
        row = self.order_row(broker_order_id=broker_order_id)
        if row is None:  # pragma: no cover - callers read back an order they just wrote
            msg = f"paper broker: order {broker_order_id} vanished inside its transaction"
            raise StoreError(msg)
        return _order_wire(row)

    def fill_wire(self, exec_id: str) -> PaperFill:
        """The execution as the broker sends it."""
        return _fill_wire(self.conn.execute(_FILLS_SELECT + " WHERE f.exec_id = ?", (exec_id,)).fetchone())

    def position_wires(self) -> list[PaperPosition]:
        """Open positions: fills and shifts netted in the order they happened."""
        rows = self.conn.execute(
            "SELECT o.symbol AS symbol, CASE o.side WHEN 'buy' THEN f.qty ELSE '-' || f.qty END AS qty, "
            "f.price AS price, f.seq AS seq, f.ts AS ts FROM fills f JOIN orders o ON o.no = f.order_no "
            "UNION ALL SELECT symbol, qty_delta, price, seq, ts FROM shifts ORDER BY seq"
        ).fetchall()
        book = net_positions((r["symbol"], Decimal(r["qty"]), Decimal(r["price"])) for r in rows)
        changed = {r["symbol"]: r["ts"] for r in rows}  # rows are in time order: the last change wins
        return [
            PaperPosition(
                symbol=symbol,
                qty=qty,
                avg_cost=average_cost(qty, cost),
                ts=datetime.fromisoformat(changed[symbol]),
            )
            for symbol, (qty, cost) in sorted(book.items())
            if qty
        ]

    def answers(self) -> tuple[bytes, bytes, bytes]:
        """The orders, fills and positions answers, as the wire JSON a client would receive."""
        orders = [_order_wire(r) for r in self.conn.execute("SELECT * FROM orders ORDER BY no")]
        fills = [_fill_wire(r) for r in self.conn.execute(_FILLS_SELECT + " ORDER BY f.no")]
        return (
            WIRE_ENCODER.encode(orders),
            WIRE_ENCODER.encode(fills),
            WIRE_ENCODER.encode(self.position_wires()),
        )

    # -- callbacks ----------------------------------------------------------------------------

    def emit(self, wire: PaperOrder | PaperFill) -> None:
        """Put one callback in the outbox, as the fault dice decide (dropped, copied, held)."""
        if isinstance(wire, PaperOrder):
            kind, order_id, exec_id = "order", wire.id, None
            label = f"order {wire.id} {wire.status!r}"
        else:
            kind, order_id, exec_id = "fill", wire.order_id, wire.exec_id
            label = callback_label(wire.order_id, wire.exec_id)
        payload = WIRE_ENCODER.encode(wire).decode()
        # Rolled for every callback, delivered or not, so the dice stay in step (faults.py).
        fate = callback_fate(self.state.plan, self.dice)
        seq = self._next_callback()

        def log_fault(fault: FaultKind, detail: str) -> None:
            self.log_fault(fault, f"callback #{seq} ({label}) {detail}", order_id, exec_id, seq)

        if self.state.disconnected:
            self._outbox(seq, kind, payload, order_id, exec_id, CallbackFate(), state="lost")
            log_fault(FaultKind.DISCONNECT, "lost: emitted while the stream was disconnected")
            return
        if fate.drop:
            self._outbox(seq, kind, payload, order_id, exec_id, fate, state="dropped")
            log_fault(FaultKind.DROP, "dropped, never delivered")
            return
        self._outbox(seq, kind, payload, order_id, exec_id, fate)
        if fate.delay:
            log_fault(
                FaultKind.DELAY, f"held {fate.delay} step(s), until step {self.state.step + fate.delay}"
            )
        if fate.reorder:
            log_fault(FaultKind.REORDER, f"delivered after the next {fate.reorder} callback(s)")
        if fate.duplicate:
            copy = self._next_callback()
            # The copy keeps the original's delay but not its place: it may overtake it.
            self._outbox(copy, kind, payload, order_id, exec_id, CallbackFate(delay=fate.delay))
            log_fault(FaultKind.DUPLICATE, f"delivered twice (copy #{copy})")

    def take(self) -> sqlite3.Row | None:
        """The next deliverable callback, marked delivered, or None if none is due now.

        Due means: its delay is over, and a reordered callback's later callbacks exist
        (or a step has passed since it was emitted, so it is never stuck).
        """
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT seq, kind, payload FROM outbox WHERE state = 'pending' AND due_step <= :step "
            "AND (release_seq IS NULL OR release_seq <= :last OR emitted_step < :step) "
            "ORDER BY sort_key, seq LIMIT 1",
            {"step": self.state.step, "last": self.state.callbacks},
        ).fetchone()
        if row is not None:
            self.conn.execute(
                "UPDATE outbox SET state = 'delivered', delivered_step = ? WHERE seq = ?",
                (self.state.step, row["seq"]),
            )
        return row

    def lose_pending(self) -> list[sqlite3.Row]:
        """Mark every undelivered callback lost (a disconnect) and return them."""
        lost = self.conn.execute(
            "SELECT seq, order_id, exec_id FROM outbox WHERE state = 'pending' ORDER BY seq"
        ).fetchall()
        self.conn.execute("UPDATE outbox SET state = 'lost' WHERE state = 'pending'")
        return lost

    def _next_callback(self) -> int:
        self.state.callbacks += 1
        return self.state.callbacks

    def _outbox(  # noqa: PLR0913, PLR0917 - one outbox row
        self,
        seq: int,
        kind: str,
        payload: str,
        order_id: str,
        exec_id: str | None,
        fate: CallbackFate,
        state: str = "pending",
    ) -> None:
        # A reordered callback sorts just after the callback it waits for and is held
        # (release_seq) until that one exists, or until the next step at the latest.
        release = seq + fate.reorder if fate.reorder else None
        sort_key = 2 * release + 1 if release is not None else 2 * seq
        step = self.state.step
        self.conn.execute(
            "INSERT INTO outbox (seq, kind, payload, order_id, exec_id, emitted_step, due_step, sort_key, "
            "release_seq, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, kind, payload, order_id, exec_id, step, step + fate.delay, sort_key, release, state),
        )

    # -- the fault log --------------------------------------------------------------------------

    def log_fault(
        self,
        kind: FaultKind,
        detail: str,
        order_id: str | None = None,
        exec_id: str | None = None,
        callback: int | None = None,
    ) -> None:
        """Log one injected fault with what it affected."""
        log.info("paper fault at step %d: %s: %s", self.state.step, kind, detail)
        self.conn.execute(
            "INSERT INTO faults (step, kind, detail, order_id, exec_id, callback) VALUES (?, ?, ?, ?, ?, ?)",
            (self.state.step, kind.value, detail, order_id, exec_id, callback),
        )

    def faults(self) -> list[Fault]:
        """Every fault logged, in the order injected."""
        return [
            Fault(
                id=row["id"],
                step=row["step"],
                kind=FaultKind(row["kind"]),
                detail=row["detail"],
                order_id=row["order_id"],
                exec_id=row["exec_id"],
                callback=row["callback"],
            )
            for row in self.conn.execute("SELECT * FROM faults ORDER BY id")
        ]


class PaperFile:
    """The SQLite file of one paper session: created if missing, continued if present.

    Raises:
        ConfigError: the file belongs to another account or another schema version, or is
            a ledger's.
        StoreError: the file cannot be opened.
    """

    def __init__(  # noqa: PLR0913 - the terms of a paper file
        self,
        path: Path,
        *,
        account: str,
        seed: int,
        symbols: tuple[str, ...],
        faults: FaultPlan | None,
        accept_duplicates: bool | None = None,
    ) -> None:
        """Open (or create) the file at `path`; see `PaperBroker` for the arguments."""
        self.path = path
        # Every transaction runs under this lock: the connection may be shared by the event
        # loop and a thread calling step(), and two transactions must not interleave.
        self._lock = threading.RLock()
        tables = sqlite_tables(path)
        if holds_ledger(tables):
            msg = f"paper broker: {path} is a trueup ledger ({summary(tables)}), not a paper broker file"
            raise ConfigError(msg)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per operation.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a committed transaction survives the process being killed at
            # any moment; only an OS crash or power loss may lose the last few commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            msg = f"paper broker: cannot open {path}: {e}"
            raise StoreError(msg) from e
        self._conn: sqlite3.Connection | None = conn
        try:
            self._init(
                account=account,
                seed=seed,
                symbols=symbols,
                faults=faults,
                accept_duplicates=accept_duplicates,
            )
        except BaseException:
            self.close()
            raise

    def _init(
        self,
        *,
        account: str,
        seed: int,
        symbols: tuple[str, ...],
        faults: FaultPlan | None,
        accept_duplicates: bool | None,
    ) -> None:
        """Create the schema and state of a new file, or check and continue an existing one."""
        with self._transaction(write=True, error=StoreError) as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            rows = {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM meta")}
            if "state" not in rows:
                state = SessionState(
                    account=account,
                    seed=seed,
                    symbols=symbols,
                    prices=dict.fromkeys(symbols, START_TICKS),
                    market_rng=derive_seed(seed, "market"),
                    fault_rng=derive_seed(seed, "faults"),
                    plan=faults or FaultPlan(),
                    accept_duplicates=bool(accept_duplicates),
                )
                if not state.accept_duplicates:
                    conn.execute(_UNIQUE_CLIENT_ID)
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                conn.execute("INSERT INTO meta VALUES ('state', ?)", (_STATE_ENCODER.encode(state).decode(),))
                return
            if rows.get("schema") != str(SCHEMA_VERSION):
                msg = f"paper broker file {self.path} has schema {rows.get('schema')!r}, not {SCHEMA_VERSION}"
                raise ConfigError(msg)
            state = _STATE_DECODER.decode(rows["state"])
            if state.account != account:
                msg = f"paper broker file {self.path} serves account {state.account!r}, not {account!r}"
                raise ConfigError(msg)
            if accept_duplicates is not None and accept_duplicates != state.accept_duplicates:
                msg = (
                    f"paper broker file {self.path} was created with accept_duplicates="
                    f"{state.accept_duplicates}, not {accept_duplicates}"
                )
                raise ConfigError(msg)
            if (state.seed, state.symbols) != (seed, symbols):
                # The stored session wins: its generators have moved on from the seed anyway.
                log.info(
                    "paper broker %s continues seed %d %s (asked for seed %d %s)",
                    self.path,
                    state.seed,
                    state.symbols,
                    seed,
                    symbols,
                )
            if faults is not None and faults != state.plan:
                state.plan = faults
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'state'", (_STATE_ENCODER.encode(state).decode(),)
                )

    @contextmanager
    def _transaction(self, *, write: bool, error: type[Exception]) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction; an SQLite failure is raised as `error` (the caller's contract)."""
        with self._lock:
            if self._conn is None:
                msg = f"paper broker {self.path} is closed"
                raise StoreError(msg)
            conn = self._conn
            try:
                # IMMEDIATE takes the write lock up front, so two processes on one file
                # queue instead of failing half-way when a reader upgrades to a writer.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.rollback()
                msg = f"paper broker {self.path}: {type(e).__name__}: {e}"
                raise error(msg) from e
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    @contextmanager
    def write(self, *, error: type[Exception] = StoreError) -> Iterator[Transaction]:
        """A write transaction; the state is saved and committed only if the body succeeds."""
        with self._transaction(write=True, error=error) as conn:
            tx = Transaction(conn, _load(conn))
            yield tx
            tx.save()

    @contextmanager
    def read(self, *, error: type[Exception] = StoreError) -> Iterator[Transaction]:
        """A read transaction: one consistent view of the file, nothing written."""
        with self._transaction(write=False, error=error) as conn:
            yield Transaction(conn, _load(conn))

    def close(self) -> None:
        """Close the connection (idempotent); the state stays in the file."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _load(conn: sqlite3.Connection) -> SessionState:
    row = conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
    return _STATE_DECODER.decode(row["value"])


def _decimal_or_none(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _order_wire(row: sqlite3.Row) -> PaperOrder:
    filled = Decimal(row["filled_qty"])
    return PaperOrder(
        id=row["id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=row["side"],
        qty=Decimal(row["qty"]),
        status=row["status"],
        filled_qty=filled,
        avg_price=average_cost(filled, Decimal(row["fill_cost"])) if filled else None,
        limit_price=_decimal_or_none(row["limit_price"]),
        ts=datetime.fromisoformat(row["ts"]),
    )


def _fill_wire(row: sqlite3.Row) -> PaperFill:
    return PaperFill(
        exec_id=row["exec_id"],
        order_id=row["order_id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=row["side"],
        qty=Decimal(row["qty"]),
        price=Decimal(row["price"]),
        ts=datetime.fromisoformat(row["ts"]),
    )


def callback_label(order_id: str, exec_id: str | None) -> str:
    """How a callback is named in the fault log."""
    return f"fill {exec_id} of order {order_id}" if exec_id else f"order {order_id} update"
