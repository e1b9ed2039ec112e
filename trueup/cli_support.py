"""What every `trueup` command shares: exit codes, errors, output, numbers, opening a store.

- Exit codes: 0 fine, 1 an error (one line on stderr naming what failed, the value and
  what to do; a traceback only with ``--debug``), 2 a CRITICAL discrepancy is open (every
  command that reads a store), 3 the broker could not be asked or the gate is BLOCKED
  after ``reconcile``.
- ``--json`` output goes to stdout and is one JSON document (``events``: one per line);
  every human note goes to stderr, so a pipe into ``jq`` never sees one.
- Read commands open a store that must exist: a typo'd path is an error, never a new
  empty store that says all is well.
- Tables fit 80 columns (narrow columns; ``--wide`` shows every column unwrapped);
  quantities and money are printed quantized, JSON keeps the exact figures.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Final, NoReturn
from uuid import UUID

import msgspec
import typer
from rich.console import Console

from trueup.adapters.eventstore.store import (
    DEFAULT_STORE,
    check_postgres_store,
    parse_store_url,
    redact,
    resolve_store_url,
)
from trueup.domain.errors import StoreError, TrueupError
from trueup.ledger import Ledger

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
"""A command failed: bad input, a missing store, a refused operator command."""
EXIT_CRITICAL: Final = 2
"""A CRITICAL discrepancy is open."""
EXIT_UNREACHABLE: Final = 3
"""`reconcile` could not ask the broker, or left the gate BLOCKED."""

console = Console(highlight=False)
"""Human output (stdout)."""
notes = Console(stderr=True, highlight=False)
"""Human notes and errors (stderr)."""

STORE_HELP = f"Store URL: sqlite:///path.db or postgresql://user@host:port/db (default {DEFAULT_STORE})"
StoreOption = Annotated[str | None, typer.Option("--store", envvar="TRUEUP_STORE", help=STORE_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
AccountOption = Annotated[str | None, typer.Option("--account", help="Only this account.")]
WideOption = Annotated[bool, typer.Option("--wide", help="Every column, unwrapped (wider than 80).")]
OperatorOption = Annotated[
    str, typer.Option("--operator", help="Who runs the command (default: the OS user).")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why: what was checked at the broker.")]


def os_user() -> str:
    """The OS user running the command (the default operator)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the environment is all there is
        return os.environ.get("USER", "")


def wide_console() -> Console:
    """A console that never wraps (``--wide``)."""
    return Console(highlight=False, width=10_000, soft_wrap=True)


def emit_json(value: object) -> None:
    """Print `value` as one JSON document on stdout (Decimals as exact strings)."""
    sys.stdout.write(json.dumps(msgspec.to_builtins(value), indent=2, default=str) + "\n")


def plain(value: object) -> str:  # noqa: PLR0911 - one branch per type an event field has
    """A field value as an operator reads it: no Python reprs, no 60-digit Decimals."""
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Decimal):
        return qty(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return ", ".join(f"{plain(k)} {plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ", ".join(plain(v) for v in items)
    if isinstance(value, msgspec.Struct):
        return plain(msgspec.structs.asdict(value))
    return str(value)


def _trimmed(value: Decimal, places: int) -> str:
    try:
        quantized = value.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation:  # more digits than the context holds: print it as it is
        return f"{value:f}"
    text = f"{quantized:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def qty(value: Decimal | None) -> str:
    """A quantity: at most 8 decimals, no trailing zeros (``10``, ``0.5``)."""
    return "" if value is None else _trimmed(value, 8)


def price(value: Decimal | None) -> str:
    """A price or average: at most 4 decimals, no trailing zeros."""
    return "" if value is None else _trimmed(value, 4)


def cost(value: Decimal | None) -> str:
    """An average cost: quantized like a price, "unknown" when the broker's basis is unknown."""
    return "unknown" if value is None else price(value)


def money(value: Decimal | None) -> str:
    """Money (P&L): 2 decimals."""
    if value is None:
        return ""
    try:
        return f"{value.quantize(Decimal('0.01')):f}"
    except InvalidOperation:
        return f"{value:f}"


def require_store(store: str | None) -> str:
    """The store URL a read command names, refused if the store does not exist (no file, schema or tables).

    Raises:
        StoreError: no such file (a read never creates a store).
        ConfigError: the URL is malformed.
    """
    url = resolve_store_url(store)
    config = parse_store_url(url)
    if config.dialect == "postgres":
        check_postgres_store(config)  # a schema or tables that do not exist are not created
    if config.path is not None and not config.path.is_file():
        where = "--store" if store else ("TRUEUP_STORE" if os.environ.get("TRUEUP_STORE") else "the default")
        msg = (
            f"no store at {config.path} ({where}: {redact(url)}); check the path, or pass "
            "--store sqlite:///path/to/trueup.db"
        )
        raise StoreError(msg)
    return url


@contextmanager
def reading(store: str | None) -> Iterator[Ledger]:
    """The ledger of an existing store, for a command that reads it (see `require_store`)."""
    with Ledger.open(require_store(store)) as ledger:
        yield ledger


def exit_for(ledger: Ledger, account: str | None) -> None:
    """Exit 2 (with a note on stderr) when a CRITICAL discrepancy is open."""
    critical = [d for d in ledger.discrepancies(account) if d.severity == "CRITICAL"]
    if critical:
        notes.print(
            f"[bold red]{len(critical)} CRITICAL discrepancy(ies) open[/] (trueup discrepancies)",
            highlight=False,
        )
        raise typer.Exit(EXIT_CRITICAL)


DEBUG: dict[str, bool] = {"on": False}
"""Set by the global ``--debug`` option: errors then show their traceback."""


def fail(message: str) -> NoReturn:
    """Print one error line on stderr and exit 1."""
    sys.stderr.write(f"trueup: error: {message}\n")
    raise typer.Exit(EXIT_ERROR)


def describe(error: BaseException) -> str:
    """One line for an error: what failed and the value (the message), never a traceback."""
    if isinstance(error, sqlite3.DatabaseError):
        return f"the store is not a readable SQLite database ({error})"
    if isinstance(error, PermissionError) and error.errno is None:  # a refusal, not a file mode
        return f"refused: {error}"
    text = str(error).strip() or type(error).__name__
    first = text.splitlines()[0]
    known = isinstance(error, (TrueupError, LookupError, ValueError, PermissionError))
    return first if known else f"{type(error).__name__}: {first}"
