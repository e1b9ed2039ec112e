"""``trueup sink nats|webhook|alerts``: run one sink standalone, until stopped or once.

Each command opens the store, builds the sink from its options (the same settings as
the sink's config Struct) and runs it as a saved-position consumer until SIGINT or
SIGTERM, or with ``--once`` delivers what is in the log now and exits (status 3 when
the destination is unavailable). Needs the ``cli`` and ``sinks`` extras.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Annotated

import typer

from trueup.adapters.eventstore.store import StoreOwner
from trueup.domain.discrepancy import Severity
from trueup.domain.errors import TrueupError
from trueup.ledger import Ledger
from trueup.sinks.alerts import AlertsConfig, AlertSink
from trueup.sinks.base import Sink, SinkRunner, SinkUnavailable, Start
from trueup.sinks.nats import NatsConfig, NatsSink
from trueup.sinks.webhook import WebhookConfig, WebhookSink

EXIT_UNAVAILABLE = 3
"""``--once`` could not reach the destination."""

sink_app = typer.Typer(
    help="Send the log's events to NATS, a webhook, or people (apprise).", no_args_is_help=True
)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", envvar="TRUEUP_STORE", help="Store URL (default sqlite:///trueup.db)"),
]
OnceOption = Annotated[bool, typer.Option("--once", help="Deliver what is in the log now, then exit.")]
AttemptsOption = Annotated[
    int | None, typer.Option("--max-attempts", help="Failed tries of one event before it is dead-lettered.")
]
ConsumerOption = Annotated[
    str | None, typer.Option("--consumer", help="Consumer name holding the sink's position.")
]


def _serve(store: str | None, build: Callable[[StoreOwner], tuple[Sink, int, Start]], *, once: bool) -> None:
    try:
        with Ledger.open(store) as ledger:
            sink, attempts, start = build(ledger)
            runner = SinkRunner(ledger, sink, max_attempts=attempts, start=start)
            if once:
                try:
                    count = runner.run_once()
                except SinkUnavailable as e:
                    sys.stderr.write(f"trueup sink: {e}\n")
                    raise typer.Exit(EXIT_UNAVAILABLE) from None
                finally:
                    runner.close()
                sys.stderr.write(f"{runner.name}: {count} event(s) handled, position {runner.position()}\n")
                return
            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            sys.stderr.write(f"{runner.name}: running from position {runner.position()}; Ctrl-C stops\n")
            runner.run(stop)
    except TrueupError as e:
        sys.stderr.write(f"trueup sink: {e}\n")
        raise typer.Exit(1) from None


@sink_app.command("nats")
def nats_command(
    store: StoreOption = None,
    server: Annotated[
        list[str] | None, typer.Option("--server", help="NATS server URL (repeatable).")
    ] = None,
    stream: Annotated[str, typer.Option(help="JetStream stream (created if missing).")] = "TRUEUP",
    subject_prefix: Annotated[str, typer.Option(help="Subjects are PREFIX.<account>.<kind>.")] = "trueup",
    consumer: ConsumerOption = None,
    max_attempts: AttemptsOption = None,
    once: OnceOption = False,
) -> None:
    """Publish ORDER_UPDATED, POSITION_SYNCED, DISCREPANCY and GATE_CHANGED to JetStream."""
    config = NatsConfig(
        servers=tuple(server or ("nats://127.0.0.1:4222",)),
        stream=stream,
        subject_prefix=subject_prefix,
        consumer=consumer or "sink-nats",
        max_attempts=max_attempts or 5,
    )
    _serve(store, lambda _ledger: (NatsSink(config), config.max_attempts, "beginning"), once=once)


@sink_app.command("webhook")
def webhook_command(
    url: Annotated[str, typer.Option("--url", help="Where to POST each event.")],
    secret: Annotated[
        str,
        typer.Option("--secret", envvar="TRUEUP_WEBHOOK_SECRET", help="HMAC-SHA256 key.", show_default=False),
    ],
    store: StoreOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to connect and to answer.")] = 5.0,
    consumer: ConsumerOption = None,
    max_attempts: AttemptsOption = None,
    once: OnceOption = False,
) -> None:
    """POST each event as signed JSON (X-Trueup-Signature, X-Trueup-Timestamp)."""
    try:
        config = WebhookConfig(
            url=url,
            secret=secret,
            timeout=timeout,
            consumer=consumer or "sink-webhook",
            max_attempts=max_attempts or 5,
        )
    except TrueupError as e:
        raise typer.BadParameter(str(e)) from None
    _serve(store, lambda _ledger: (WebhookSink(config), config.max_attempts, "beginning"), once=once)


@sink_app.command("alerts")
def alerts_command(
    url: Annotated[
        list[str], typer.Option("--url", envvar="TRUEUP_ALERT_URLS", help="apprise URL (repeatable).")
    ],
    store: StoreOption = None,
    min_severity: Annotated[
        Severity, typer.Option(help="Alert discrepancies of this severity and above.")
    ] = Severity.ERROR,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="A new alert sink alerts on the whole log.")
    ] = False,
    consumer: ConsumerOption = None,
    max_attempts: AttemptsOption = None,
    once: OnceOption = False,
) -> None:
    """Alert people: discrepancies (raised, escalated, resolved), gate BLOCKED and back, dead letters."""
    try:
        config = AlertsConfig(
            urls=tuple(url),
            min_severity=min_severity,
            consumer=consumer or "sink-alerts",
            max_attempts=max_attempts or 8,
            start="beginning" if from_beginning else "end",
        )
    except TrueupError as e:
        raise typer.BadParameter(str(e)) from None
    _serve(
        store,
        lambda ledger: (AlertSink(config, ledger.store), config.max_attempts, config.start),
        once=once,
    )
