"""The `trueup` command: run the demo, reconcile, and read the books.

Every read command takes `--json`. The commands that show the books now (status, orders,
positions, discrepancies, reconcile) exit with status 2 when a CRITICAL discrepancy is
open, so a cron job or a deploy gate notices without parsing output; events, replay and
rebuild exit 0: they show the log or the past, and a pipe into alerting must not take an
open alarm for its own failure.
The store is `--store` or TRUEUP_STORE (default sqlite:///trueup.db).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec

try:
    import typer
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
except ImportError as e:  # pragma: no cover - the cli extra is not installed
    msg = "the trueup command needs its extra: pip install 'trueup[cli]'"
    raise ImportError(msg) from e

from trueup.adapters.base import snapshot_or_unknown
from trueup.domain.errors import TrueupError
from trueup.domain.reports import BrokerSnapshot
from trueup.domain.views import DiscrepancyView
from trueup.ledger import Ledger, LoggedEvent
from trueup.subscriptions import SavedPositionConsumer

app = typer.Typer(
    help="trueup: books that match the broker, and proof when they do not.", no_args_is_help=True
)
console = Console()
EXIT_CRITICAL = 2
"""Exit status when a CRITICAL discrepancy is open."""

StoreOption = Annotated[
    str | None,
    typer.Option("--store", envvar="TRUEUP_STORE", help="Store URL (sqlite:///f.db, postgresql://..)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AccountOption = Annotated[str | None, typer.Option("--account", help="Only this account.")]


@contextmanager
def _ledger(store: str | None) -> Iterator[Ledger]:
    with Ledger.open(store) as ledger:
        yield ledger


def _to_builtins(value: object) -> Any:  # noqa: ANN401 - JSON-ready data
    return msgspec.to_builtins(value)  # Decimals become exact strings


def _cost(avg_cost: object) -> str:
    """An average cost for a table: "unknown" rather than None (JSON keeps null)."""
    return "unknown" if avg_cost is None else str(avg_cost)


def _emit_json(value: object) -> None:
    sys.stdout.write(json.dumps(_to_builtins(value), indent=2, default=str) + "\n")


def _exit_for(ledger: Ledger, account: str | None) -> None:
    critical = [d for d in ledger.discrepancies(account) if d.severity == "CRITICAL"]
    if critical:
        console.print(f"[bold red]{len(critical)} CRITICAL discrepancy(ies) open[/]", highlight=False)
        raise typer.Exit(EXIT_CRITICAL)


@app.command()
def orders(
    store: StoreOption = None,
    account: AccountOption = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Include closed orders.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Open orders (or all with --all): status, filled, average, inferred part."""
    with _ledger(store) as ledger:
        views = ledger.all_orders(account) if all_orders else ledger.open_orders(account)
        if as_json:
            _emit_json(views)
        else:
            table = Table(title="orders")
            for column in (
                "account",
                "client id",
                "symbol",
                "side",
                "qty",
                "status",
                "flags",
                "filled",
                "avg",
                "inferred",
            ):
                table.add_column(column)
            for v in views:
                table.add_row(
                    v.account,
                    v.client_order_id,
                    v.symbol,
                    v.side,
                    str(v.quantity),
                    v.status,
                    ",".join(sorted(v.flags)),
                    str(v.filled_qty),
                    str(v.avg_fill_price or ""),
                    str(v.inferred_qty or ""),
                )
            console.print(table)
        _exit_for(ledger, account)


@app.command()
def positions(store: StoreOption = None, account: AccountOption = None, as_json: JsonOption = False) -> None:
    """Net positions by account and symbol."""
    with _ledger(store) as ledger:
        views = ledger.positions(account)
        if as_json:
            _emit_json(views)
        else:
            table = Table(title="positions")
            for column in ("account", "symbol", "qty", "avg cost", "realized P&L"):
                table.add_column(column)
            for p in views:
                table.add_row(p.account, p.symbol, str(p.qty), _cost(p.avg_cost), str(p.realized_pnl))
            console.print(table)
        _exit_for(ledger, account)


def _discrepancy_table(title: str, views: list[DiscrepancyView]) -> Table:
    table = Table(title=title)
    for column in (
        "severity",
        "kind",
        "account",
        "subject",
        "ours / expected",
        "broker / actual",
        "detail",
        "evidence@",
    ):
        table.add_column(column)
    for d in views:
        style = "bold red" if d.severity == "CRITICAL" else ("red" if d.severity == "ERROR" else "")
        table.add_row(
            d.severity,
            d.kind,
            d.account,
            d.key,
            d.expected,
            d.actual,
            d.detail,
            str(d.evidence_position or ""),
            style=style,
        )
    return table


@app.command()
def discrepancies(
    store: StoreOption = None,
    account: AccountOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved ones.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Open discrepancies (or all with --all), with the log position of their evidence."""
    with _ledger(store) as ledger:
        views = ledger.discrepancies(account, include_resolved=all_)
        if as_json:
            _emit_json(views)
        else:
            console.print(_discrepancy_table("discrepancies", views))
        _exit_for(ledger, account)


@app.command()
def status(store: StoreOption = None, account: AccountOption = None, as_json: JsonOption = False) -> None:
    """Gate per account, locks, open orders, discrepancies by kind, and log positions."""
    from trueup.operations.status import status_report  # noqa: PLC0415 - shared with `trueup run`

    with _ledger(store) as ledger:
        report = status_report(ledger, account)
        if as_json:
            _emit_json(report)
        else:
            table = Table(title=f"trueup status — {report['store']}")
            for column in ("account", "gate", "reasons", "locks", "quarantined", "open orders", "positions"):
                table.add_column(column)
            for name, row in report["accounts"].items():
                gate_style = {"READY": "green", "BLOCKED": "bold red"}.get(row["gate"], "yellow")
                table.add_row(
                    name,
                    f"[{gate_style}]{row['gate']}[/]",
                    "; ".join(row["reasons"]),
                    ", ".join(row["locked_symbols"]),
                    ", ".join(row["quarantined"]),
                    str(row["open_orders"]),
                    str(row["positions"]),
                )
            console.print(table)
            console.print(
                f"log position {report['log_position']}, read models at {report['projection_position']}; "
                f"open discrepancies {report['open_discrepancies_by_kind'] or 'none'}"
            )
            if report["service"]:
                console.print(f"service: {report['service']}")
        _exit_for(ledger, account)


@app.command()
def events(
    store: StoreOption = None,
    after: Annotated[int, typer.Option(help="Start after this log position.")] = 0,
    until: Annotated[str | None, typer.Option(help="Stop at a log position or an ISO time.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing new events.")] = False,
    consumer: Annotated[
        str | None, typer.Option(help="Resume after this consumer's saved position, and save it.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the stored log (one line per event); --follow waits for new ones."""
    with _ledger(store) as ledger:
        if consumer:
            # A named consumer resumes after its saved position and saves as it goes, so a
            # pipe into alerting that crashed picks up where it stopped.
            def show(logged: LoggedEvent) -> None:
                _print_event(logged, as_json=as_json)

            saved = SavedPositionConsumer(ledger, consumer, show)
            if follow:
                saved.run_forever(threading.Event())  # LISTEN/NOTIFY on PostgreSQL; until Ctrl-C
            else:
                saved.run_once()
            return
        position = after
        stop = _parse_until(until) if until else None
        while True:
            for logged in ledger.events(after=position, until=stop):
                _print_event(logged, as_json=as_json)
                position = logged.position
            if not follow:
                return
            time.sleep(0.2)


def _print_event(logged: Any, *, as_json: bool) -> None:  # noqa: ANN401 - a LoggedEvent
    fields = {k: v for k, v in vars(logged.event).items() if k not in {"originator_id", "originator_version"}}
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "position": logged.position,
                    "topic": logged.topic,
                    "id": str(logged.event.originator_id),
                    **_to_builtins(fields),
                },
                default=str,
            )
            + "\n"
        )
    else:
        summary = ", ".join(
            f"{k}={v}" for k, v in _to_builtins(fields).items() if k not in {"timestamp", "payload"}
        )
        sys.stdout.write(f"{logged.position:>8} {logged.topic:<34} {summary}\n")
    sys.stdout.flush()


def _parse_until(value: str) -> int | datetime:
    if value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        msg = f"--until time must carry a UTC offset (e.g. 2026-11-23T14:30:00+00:00), got {value!r}"
        raise typer.BadParameter(msg)
    return moment


@app.command()
def replay(
    until: Annotated[str, typer.Option(help="A log position or an ISO time with offset.")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """The books as they stood at a log position or time (an audit replay of the log)."""
    with _ledger(store) as ledger:
        state = ledger.as_of(_parse_until(until))
        if as_json:
            _emit_json(state)
            return
        console.print(f"as of log position {state.position} ({state.timestamp})")
        table = Table(title="orders")
        for column in ("account", "client id", "symbol", "side", "qty", "status", "filled", "avg"):
            table.add_column(column)
        for v in state.orders:
            table.add_row(
                v.account,
                v.client_order_id,
                v.symbol,
                v.side,
                str(v.quantity),
                v.status,
                str(v.filled_qty),
                str(v.avg_fill_price or ""),
            )
        console.print(table)
        ptable = Table(title="positions")
        for column in ("account", "symbol", "qty", "avg cost"):
            ptable.add_column(column)
        for p in state.positions:
            ptable.add_row(p.account, p.symbol, str(p.qty), _cost(p.avg_cost))
        console.print(ptable)
        console.print(f"open discrepancies then: {len(state.open_discrepancies)}")
        for m in state.matched:
            console.print(
                f"{m['account']}: books last matched the broker as of {m['as_of'].isoformat()} "
                f"(log #{m['position']}, evidence {m['evidence_id']})"
            )


@app.command()
def rebuild(store: StoreOption = None) -> None:
    """Rebuild every read model from log position 0."""
    with _ledger(store) as ledger, Progress(console=console) as progress:
        total = ledger.last_position()
        task = progress.add_task("rebuilding read models", total=total or 1)
        applied = ledger.projector.rebuild(
            progress=lambda position: progress.update(task, completed=position)
        )
        progress.update(task, completed=total or 1)
    console.print(f"applied {applied} events")


@app.command()
def reconcile(
    broker: Annotated[
        str, typer.Option(help="paper | alpaca | kite | ib (credentials from the environment)")
    ] = "paper",
    account: Annotated[str, typer.Option(help="Broker account.")] = "PAPER",
    paper_state: Annotated[Path, typer.Option(help="Paper broker state file.")] = Path("paper.db"),
    policy: Annotated[str | None, typer.Option(help="repair | alert | lock")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a broker snapshot now, reconcile, and print what it found and did."""
    with _ledger(store) as ledger:
        snapshot = asyncio.run(_take_snapshot(broker, account, paper_state, ledger.clock()))
        result = ledger.reconcile(snapshot, policy=policy)
        if as_json:
            _emit_json(
                {
                    "gate": result.gate,
                    "gate_reasons": list(ledger.gate_details(account)[1]),
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
            console.print(
                f"gate {result.gate}; {len(result.order_updates)} order(s) updated, "
                f"{len(result.position_syncs)} position(s) synced, "
                f"{len(result.discrepancies)} discrepancy(ies), "
                f"{len(result.events)} event(s) stored"
            )
            for reason in ledger.gate_details(account)[1]:
                console.print(f"  gate: {reason}")
            console.print(
                _discrepancy_table(
                    "found now",
                    ledger.discrepancies(account, include_resolved=True)[-len(result.discrepancies) or None :]
                    if result.discrepancies
                    else [],
                )
            )
        _exit_for(ledger, account)


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


def _broker(name: str, account: str, paper_state: Path) -> Any:  # noqa: ANN401 - a BrokerClient
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
        msg = f"broker {name!r} needs its extra: {e}"
        raise typer.BadParameter(msg) from None
    except TrueupError as e:  # missing credentials: the message names variables, never values
        raise typer.BadParameter(str(e)) from None
    msg = f"unknown broker {name!r}; one of: {', '.join(BROKERS)}"
    raise typer.BadParameter(msg)


@app.command()
def demo(
    store: StoreOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the paper market and its faults.")] = 7,
    orders_count: Annotated[int, typer.Option("--orders", help="Orders to trade.")] = 40,
    workdir: Annotated[Path | None, typer.Option(help="Where the paper broker keeps its state.")] = None,
) -> None:
    """Trade a paper session with injected faults, crash it, restart, reconcile, and report."""
    from trueup.demo import run_demo  # noqa: PLC0415 - the demo pulls in the paper broker

    code = run_demo(store=store, seed=seed, orders=orders_count, workdir=workdir, console=console)
    raise typer.Exit(code)


config_app = typer.Typer(help="Check, write and document the `trueup run` config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _config_or_exit(path: Path) -> Any:  # noqa: ANN401 - a trueup.operations.config.Config
    from trueup.operations.config import load_config  # noqa: PLC0415

    try:
        return load_config(path)
    except TrueupError as e:
        sys.stderr.write(f"trueup: config error: {e}\n")
        raise typer.Exit(EXIT_CRITICAL) from None


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="The config file (TOML).")]) -> None:
    """Validate a config file and print it resolved (preset applied, secrets as ***); exit 2 if wrong."""
    config = _config_or_exit(path)
    _emit_json(config.describe())


@config_app.command("init")
def config_init(
    preset: Annotated[str, typer.Option(help="conservative | aggressive | paper")] = "conservative",
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of stdout (never overwrites).")
    ] = None,
) -> None:
    """Write a commented starting config file for a preset."""
    from trueup.operations.config import PRESETS  # noqa: PLC0415
    from trueup.operations.reference import starting_file  # noqa: PLC0415

    if preset not in PRESETS:
        sys.stderr.write(
            f"trueup: config error: preset: must be one of {', '.join(PRESETS)}, got {preset!r}\n"
        )
        raise typer.Exit(EXIT_CRITICAL)
    text = starting_file(preset)
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists():
        sys.stderr.write(f"trueup: {output} exists; not overwritten\n")
        raise typer.Exit(EXIT_CRITICAL)
    output.write_text(text, encoding="utf-8")


@config_app.command("reference")
def config_reference() -> None:
    """Print the config reference (Markdown), generated from the config Structs."""
    from trueup.operations.reference import config_reference as reference  # noqa: PLC0415

    sys.stdout.write(reference())


@app.command()
def run(
    config_path: Annotated[Path, typer.Option("--config", help="The config file (TOML).")] = Path(
        "trueup.toml"
    ),
    log_format: Annotated[
        str | None, typer.Option(help="text | json (default: the file's log_format).")
    ] = None,
) -> None:
    """Run the reconciliation daemon for every configured account until SIGTERM / SIGINT."""
    config = _config_or_exit(config_path)
    from trueup.operations.config import missing_env  # noqa: PLC0415

    missing = missing_env(config)
    if log_format not in {None, "text", "json"}:
        missing.insert(0, f"--log-format: must be one of text, json, got {log_format!r}")
    if missing:
        for line in missing:
            sys.stderr.write(f"trueup: config error: {line}\n")
        raise typer.Exit(EXIT_CRITICAL)
    try:
        from trueup.operations.brokers import secret_values  # noqa: PLC0415
        from trueup.operations.daemon import run_daemon  # noqa: PLC0415
        from trueup.operations.logs import setup_logging  # noqa: PLC0415
    except ImportError as e:
        sys.stderr.write(f"trueup: {e}\n")
        raise typer.Exit(EXIT_CRITICAL) from None
    chosen = log_format or config.file.log_format
    setup_logging(config.file.log_level, as_json=chosen == "json", secrets=secret_values(config.env_names()))
    raise typer.Exit(run_daemon(config))


def _add_sink_commands() -> None:
    from trueup.sinks.cli import sink_app  # noqa: PLC0415 - the sinks' options, kept in their package

    app.add_typer(sink_app, name="sink")


_add_sink_commands()


def main() -> None:
    """Entry point of the `trueup` console script."""
    app()


if __name__ == "__main__":
    main()
