"""The `trueup` command: run the demo, reconcile, read the books, and act on them as an operator.

Exit codes (true for every command): 0 fine, 1 an error (one line on stderr; a traceback
only with ``--debug``), 2 a CRITICAL discrepancy is open (every command that reads a
store), 3 the broker could not be asked or the gate is BLOCKED after ``reconcile``.
``--json`` prints JSON on stdout; human notes go to stderr. Read commands never create a
store. The store is ``--store`` or TRUEUP_STORE (default sqlite:///trueup.db).

The operator commands are in `cli_operator.py`, `config` and `run` in `cli_config.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import sys
import threading
import time
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Final

try:
    import typer
    from rich.progress import Progress
except ImportError as e:  # pragma: no cover - the cli extra is not installed
    msg = "the trueup command needs its extra: pip install 'trueup[cli]'"
    raise ImportError(msg) from e

from trueup.adapters.base import snapshot_or_unknown
from trueup.cli_config import (
    config_app,
    config_check,
    config_init,
    config_reference,
    register_config_commands,
    run,
)
from trueup.cli_events import EventFilter, print_event
from trueup.cli_operator import register_operator_commands
from trueup.cli_support import (
    DEBUG,
    EXIT_CRITICAL,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNREACHABLE,
    AccountOption,
    JsonOption,
    StoreOption,
    WideOption,
    console,
    cost,
    describe,
    emit_json,
    exit_for,
    fail,
    notes,
    plain,
    price,
    qty,
    reading,
)
from trueup.cli_tables import (
    discrepancy_table,
    last_change,
    make_table,
    out_console,
    print_orders,
    print_positions,
    print_status,
)
from trueup.domain.errors import TrueupError
from trueup.domain.gate import GateState
from trueup.domain.reports import BrokerSnapshot
from trueup.ledger import Ledger, LoggedEvent
from trueup.subscriptions import SavedPositionConsumer

__all__ = [
    "EXIT_CRITICAL",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "app",
    "config_app",
    "config_check",
    "config_init",
    "config_reference",
    "main",
    "run",
]

app = typer.Typer(
    help="trueup: books that match the broker, and proof when they do not.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    try:
        return version("trueup")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(wanted: bool) -> None:
    if wanted:
        sys.stdout.write(f"trueup {_version()}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """trueup: books that match the broker, and proof when they do not.

    Exit codes: 0 fine, 1 error, 2 a CRITICAL discrepancy open, 3 broker unreachable or
    gate BLOCKED after reconcile.
    """
    DEBUG["on"] = debug
    del show_version  # handled eagerly by its callback


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since must be an ISO time with offset (2026-11-23T14:30:00+00:00), got {value!r}")
    if moment.tzinfo is None:
        fail(f"--since must carry a UTC offset (e.g. 2026-11-23T14:30:00+00:00), got {value!r}")
    return moment


def _loading(what: str) -> Any:  # noqa: ANN401 - a rich status context
    """A spinner on stderr while a long read runs (shown only on a terminal)."""
    return notes.status(what, spinner="dots")


@app.command()
def orders(
    store: StoreOption = None,
    account: AccountOption = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Include closed orders.")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many (the most recent).", min=1)] = None,
    since: Annotated[
        str | None, typer.Option(help="Only orders created or updated at/after this ISO time.")
    ] = None,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """Open orders (or all with --all): status, filled, average; --wide adds flags and inferred."""
    moment = _since(since)
    with reading(store) as ledger:
        with _loading("reading orders"):
            views = ledger.all_orders(account) if all_orders else ledger.open_orders(account)
        if moment is not None:
            views = [v for v in views if last_change(v) is not None and last_change(v) >= moment]  # type: ignore[operator]
        if limit is not None:
            views = views[-limit:]
        if as_json:
            emit_json(views)
        else:
            print_orders(views, wide=wide)
        exit_for(ledger, account)


@app.command()
def positions(
    store: StoreOption = None,
    account: AccountOption = None,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """Net positions by account and symbol."""
    with reading(store) as ledger:
        views = ledger.positions(account)
        if as_json:
            emit_json(views)
        else:
            print_positions(views, wide=wide)
        exit_for(ledger, account)


@app.command()
def discrepancies(
    store: StoreOption = None,
    account: AccountOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved ones.")] = False,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """Open discrepancies (or all with --all) with their ids; --wide adds figures and evidence."""
    with reading(store) as ledger:
        views = ledger.discrepancies(account, include_resolved=all_)
        if as_json:
            emit_json(views)
        else:
            out_console(wide).print(discrepancy_table("discrepancies", views, wide=wide))
            if views and not wide:
                notes.print("ids: the first 8 digits (trueup resolve takes them); --wide or --json: whole")
        exit_for(ledger, account)


@app.command()
def status(
    store: StoreOption = None,
    account: AccountOption = None,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """Gate per account, locks, open orders, discrepancies by kind, and log positions."""
    from trueup.operations.status import status_report  # noqa: PLC0415 - shared with `trueup run`

    with reading(store) as ledger:
        report = status_report(ledger, account)
        if as_json:
            emit_json(report)
        else:
            print_status(report, wide=wide)
        exit_for(ledger, account)


@app.command()
def events(
    store: StoreOption = None,
    account: AccountOption = None,
    order: Annotated[str | None, typer.Option("--order", help="Only events of this client order id.")] = None,
    topic: Annotated[
        str | None,
        typer.Option("--topic", help="Only topics containing this (Discrepancy, Fill, Gate, ...)."),
    ] = None,
    after: Annotated[int, typer.Option(help="Start after this log position.", min=0)] = 0,
    until: Annotated[str | None, typer.Option(help="Stop at a log position or an ISO time.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing new events.")] = False,
    consumer: Annotated[
        str | None,
        typer.Option(
            help="Resume after this consumer's saved position, and save it (--after: where it starts)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the stored log, one line per event naming its order or symbol; --follow waits for more."""
    stop = _parse_until(until) if until else None
    with reading(store) as ledger:
        chosen = EventFilter(ledger, account=account, order=order, topic=topic, until=stop)
        if consumer:
            if follow and stop is not None:
                fail("--follow and --until contradict each other; give one")
            _consume(ledger, consumer, chosen, after=after, follow=follow, as_json=as_json)
        else:
            position = after
            while True:
                for logged in ledger.events(after=position, until=stop):
                    if chosen.wants(logged):
                        print_event(logged, chosen.subject(logged), as_json=as_json)
                    position = logged.position
                if not follow:
                    break
                time.sleep(0.2)
        exit_for(ledger, account)


class _Past(Exception):  # noqa: N818 - a signal, not an error
    """The consumer reached --until: stop before saving this event."""


def _consume(
    ledger: Ledger, name: str, chosen: EventFilter, *, after: int, follow: bool, as_json: bool
) -> None:
    # A named consumer resumes after its saved position and saves as it goes, so a pipe
    # into alerting that crashed picks up where it stopped. Filtered-out events are
    # passed over (and saved): the filter is part of what the consumer consumes.
    def show(logged: LoggedEvent) -> None:
        if chosen.past(logged):
            raise _Past
        if chosen.wants(logged):
            print_event(logged, chosen.subject(logged), as_json=as_json)

    saved = SavedPositionConsumer(ledger, name, show, from_position=after)
    if follow:
        saved.run_forever(threading.Event())  # LISTEN/NOTIFY on PostgreSQL; until Ctrl-C
        return
    with contextlib.suppress(_Past):
        saved.run_once()


def _parse_until(value: str) -> int | datetime:
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--until must be a log position or an ISO time with offset, got {value!r}")
    if moment.tzinfo is None:
        fail(f"--until time must carry a UTC offset (e.g. 2026-11-23T14:30:00+00:00), got {value!r}")
    return moment


@app.command()
def replay(
    until: Annotated[str, typer.Option(help="A log position or an ISO time with offset.")],
    store: StoreOption = None,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """The books as they stood at a log position or time (an audit replay of the log)."""
    moment = _parse_until(until)
    with reading(store) as ledger:
        state = ledger.as_of(moment)
        if as_json:
            emit_json(state)
        else:
            out = out_console(wide)
            out.print(f"as of log position {state.position} ({plain(state.timestamp)})")
            table = make_table(
                "orders",
                ["account", "client id", "symbol", "side", "qty", "status", "filled", "avg"],
                wide=wide,
            )
            for v in state.orders:
                table.add_row(
                    v.account,
                    v.client_order_id,
                    v.symbol,
                    plain(v.side),
                    qty(v.quantity),
                    plain(v.status),
                    qty(v.filled_qty),
                    price(v.avg_fill_price),
                )
            out.print(table)
            ptable = make_table("positions", ["account", "symbol", "qty", "avg cost"], wide=wide)
            for p in state.positions:
                ptable.add_row(p.account, p.symbol, qty(p.qty), cost(p.avg_cost))
            out.print(ptable)
            out.print(f"open discrepancies then: {len(state.open_discrepancies)}")
            for m in state.matched:
                out.print(
                    f"{m['account']}: books last matched the broker as of {m['as_of'].isoformat()} "
                    f"(log #{m['position']}, evidence {m['evidence_id']})"
                )
        exit_for(ledger, None)


@app.command()
def rebuild(store: StoreOption = None) -> None:
    """Rebuild every read model from log position 0."""
    with reading(store) as ledger:
        with Progress(console=notes) as progress:
            total = ledger.last_position()
            task = progress.add_task("rebuilding read models", total=total or 1)
            applied = ledger.projector.rebuild(
                progress=lambda position: progress.update(task, completed=position)
            )
            progress.update(task, completed=total or 1)
        notes.print(f"applied {applied} events")
        exit_for(ledger, None)


@app.command()
def reconcile(
    broker: Annotated[
        str, typer.Option(help="paper | alpaca | kite | ib (credentials from the environment)")
    ] = "paper",
    account: Annotated[str, typer.Option(help="Broker account.")] = "PAPER",
    paper_state: Annotated[Path, typer.Option(help="Paper broker state file (must exist).")] = Path(
        "paper.db"
    ),
    policy: Annotated[str | None, typer.Option(help="repair | alert | lock")] = None,
    store: StoreOption = None,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """Take a broker snapshot now, reconcile, and print what it found and did (exit 3: stale or BLOCKED)."""
    if broker == "paper" and not paper_state.is_file():
        # A missing file would be a new, empty paper broker: every position "flat".
        fail(
            f"no paper broker state at {paper_state}; pass --paper-state PATH (trueup demo --keep leaves one)"
        )
    with Ledger.open(store) as ledger:
        with _loading(f"asking {broker}"):
            snapshot = asyncio.run(_take_snapshot(broker, account, paper_state, ledger.clock()))
        result = ledger.reconcile(snapshot, policy=policy)
        reasons = list(ledger.gate_details(account)[1])
        if as_json:
            emit_json(
                {
                    "gate": result.gate,
                    "gate_reasons": reasons,
                    "stale": result.stale,
                    "order_updates": len(result.order_updates),
                    "position_syncs": len(result.position_syncs),
                    "discrepancies": [
                        {"kind": d.kind, "severity": d.severity, "key": d.key, "detail": d.detail}
                        for d in result.discrepancies
                    ],
                    "events_stored": len(result.events),
                }
            )
        else:
            out = out_console(wide)
            out.print(
                f"gate {result.gate}; {len(result.order_updates)} order(s) updated, "
                f"{len(result.position_syncs)} position(s) synced, "
                f"{len(result.discrepancies)} discrepancy(ies), "
                f"{len(result.events)} event(s) stored"
            )
            for reason in reasons:
                out.print(f"  gate: {reason}")
            found = (
                ledger.discrepancies(account, include_resolved=True)[-len(result.discrepancies) :]
                if result.discrepancies
                else []
            )
            out.print(discrepancy_table("found now", found, wide=wide))
        if result.stale or result.gate is GateState.BLOCKED:
            notes.print(f"[bold red]gate {result.gate}[/]: " + ("; ".join(reasons) or "broker data stale"))
            raise typer.Exit(EXIT_UNREACHABLE)
        exit_for(ledger, account)


BROKERS: Final = ("paper", "alpaca", "kite", "ib")
"""Brokers `trueup reconcile` can ask; each real broker takes its credentials from the environment."""


async def _take_snapshot(name: str, account: str, paper_state: Path, now: datetime) -> BrokerSnapshot:
    """One snapshot from a client made inside this event loop (ib_async binds to its loop), then closed.

    A broker that cannot be asked is STALE_DATA (and a closed gate), never "flat".
    """
    client = _broker(name, account, paper_state)
    try:
        return await snapshot_or_unknown(client, account, now)
    finally:
        closed = getattr(client, "close", lambda: None)()
        if inspect.isawaitable(closed):
            await closed


def _broker(name: str, account: str, paper_state: Path) -> Any:  # noqa: ANN401, RET503 - a BrokerClient; fail() exits
    # Adapters are imported only when asked for: their SDKs are optional extras.
    try:
        if name == "paper":
            from trueup.adapters.paper.broker import PaperBroker  # noqa: PLC0415

            return PaperBroker(paper_state, account=account)
        if name == "alpaca":
            from trueup.adapters.alpaca.client import AlpacaClient  # noqa: PLC0415

            return AlpacaClient.from_env(account)
        if name == "kite":
            from trueup.adapters.kite.client import KiteClient  # noqa: PLC0415

            return KiteClient.from_env(account)
        if name == "ib":
            from trueup.adapters.ib.client import IbClient  # noqa: PLC0415

            return IbClient.from_env(account)
    except ImportError as e:
        fail(f"broker {name!r} needs its extra: {e}")
    except TrueupError as e:  # missing credentials: the message names variables, never values
        fail(str(e))
    fail(f"unknown broker {name!r}; one of: {', '.join(BROKERS)}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the paper market and its faults.")] = 7,
    orders_count: Annotated[int, typer.Option("--orders", help="Orders to trade.", min=1)] = 40,
    workdir: Annotated[
        Path | None, typer.Option(help="A new directory for the demo's store and paper broker (kept).")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's temporary directory.")] = False,
) -> None:
    """Trade a paper session with injected faults, crash it, restart, reconcile, and report.

    Never touches your store: TRUEUP_STORE is ignored; the demo's store lives in its own
    directory, removed afterwards unless --keep (or --workdir) is given.
    """
    from trueup.demo import run_demo  # noqa: PLC0415 - the demo pulls in the paper broker

    code = run_demo(seed=seed, orders=orders_count, workdir=workdir, keep=keep, console=console)
    raise typer.Exit(code)


register_config_commands(app)
register_operator_commands(app)


def _add_sink_commands() -> None:
    from trueup.sinks.cli import sink_app  # noqa: PLC0415 - the sinks' options, kept in their package

    app.add_typer(sink_app, name="sink")


_add_sink_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `trueup` console script: exit codes 0/1/2/3, errors as one line."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
    DEBUG["on"] = "--debug" in args
    try:
        code = app(args=args, prog_name="trueup", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("trueup: interrupted\n")
        code = EXIT_ERROR
    except Exception as e:
        if _is_usage_error(e):
            # Usage errors exit 1, not click's 2: 2 means a CRITICAL discrepancy is open.
            context = getattr(e, "ctx", None)
            hint = f" (see: {context.command_path} --help)" if context is not None else ""
            sys.stderr.write(f"trueup: error: {e.format_message()}{hint}\n")  # type: ignore[attr-defined]
        elif DEBUG["on"]:
            raise
        else:
            known = isinstance(
                e, (TrueupError, sqlite3.Error, LookupError, ValueError, PermissionError, OSError)
            )
            tail = "" if known else " (an internal error: run again with --debug for the traceback)"
            sys.stderr.write(f"trueup: error: {describe(e)}{tail}\n")
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _is_usage_error(error: Exception) -> bool:
    """A command-line parsing error (typer's vendored click raises ClickException subclasses)."""
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return isinstance(error, click_exception)


if __name__ == "__main__":
    main()
