"""The ``[sinks.*]`` tables of the `trueup run` config: which sinks the daemon hosts.

Each table is optional; a sink runs only when its table is present. Secrets are the
*names* of environment variables, never their values: the webhook's signing key
(`secret_env`), the apprise URLs (`urls_env`, they carry tokens) and, optionally, NATS
server URLs with credentials (`servers_env`). The values are read only when the daemon
builds the sinks (`trueup.operations.sinks`); `Config.describe` shows them as ``***``.

Bounds are msgspec constraints, as in the rest of the config; the sinks' own settings
(`trueup.sinks.NatsConfig`, `WebhookConfig`, `AlertsConfig`) are built from these.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from trueup.adapters.eventstore.store import redact
from trueup.settings import Count, NonEmpty, PositiveSeconds

__all__ = [
    "SINK_CHOICES",
    "SINK_KINDS",
    "AlertsSinkSettings",
    "NatsSinkSettings",
    "SinksTable",
    "WebhookSinkSettings",
]

SINK_KINDS: Final = ("ORDER_UPDATED", "POSITION_SYNCED", "DISCREPANCY", "GATE_CHANGED")
SINK_CHOICES: Final = {
    "kinds": SINK_KINDS,
    "min_severity": ("INFO", "WARNING", "ERROR", "CRITICAL"),
    "start": ("beginning", "end"),
}

SinkEnvName = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The NAME of an environment variable holding the value (never the value).",
    ),
]
Kind = Literal["ORDER_UPDATED", "POSITION_SYNCED", "DISCREPANCY", "GATE_CHANGED"]
Kinds = Annotated[
    tuple[Kind, ...],
    Meta(
        min_length=1, description="Kinds to send: ORDER_UPDATED, POSITION_SYNCED, DISCREPANCY, GATE_CHANGED."
    ),
]
Consumer = Annotated[
    NonEmpty, Meta(description="Consumer name: the sink's saved position in the store (unique per sink).")
]
MaxAttempts = Annotated[
    Count, Meta(description="Counted failures of one event before it is dead-lettered (DEAD_LETTER).")
]
Timeout = Annotated[PositiveSeconds, Meta(description="Seconds to connect and to get an answer.")]
NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")


class NatsSinkSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Publish to NATS JetStream: subjects ``<subject_prefix>.<account>.<kind>``, event id as message id."""

    servers: Annotated[
        tuple[NonEmpty, ...],
        Meta(
            min_length=1,
            description="NATS server URLs without credentials (nats://host:port); see `servers_env`.",
        ),
    ] = ("nats://127.0.0.1:4222",)
    servers_env: Annotated[
        SinkEnvName | None,
        Meta(description="Name of a variable with comma-separated server URLs (wins over `servers`)."),
    ] = None
    stream: Annotated[
        Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$")],
        Meta(description="JetStream stream of the events (created if missing)."),
    ] = "TRUEUP"
    subject_prefix: Annotated[
        Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")],
        Meta(description="Subjects are PREFIX.<account>.<kind>."),
    ] = "trueup"
    kinds: Kinds = SINK_KINDS
    duplicate_window: Annotated[
        PositiveSeconds, Meta(description="Seconds JetStream remembers message ids (a stream it creates).")
    ] = 120.0
    max_age: Annotated[
        PositiveSeconds, Meta(description="Seconds a message is kept (a stream it creates).")
    ] = 7 * 86_400.0
    connect_timeout: Annotated[PositiveSeconds, Meta(description="Seconds to connect to a server.")] = 2.0
    publish_timeout: Annotated[
        PositiveSeconds, Meta(description="Seconds to wait for JetStream's acknowledgement of a publish.")
    ] = 5.0
    consumer: Consumer = "sink-nats"
    max_attempts: MaxAttempts = 5

    def __post_init__(self) -> None:
        """Server URLs that NATS takes, and no credentials in them (they would be shown)."""
        for index, url in enumerate(self.servers):
            parts = urlsplit(url)
            if parts.username or parts.password:
                msg = (
                    f"servers[{index}] has credentials, refused here (they would be shown); "
                    "name a variable holding the URLs with servers_env"
                )
                raise ValueError(msg)
            if parts.scheme not in NATS_SCHEMES or not parts.hostname:
                msg = f"servers[{index}] must be nats://HOST:PORT (or tls, ws, wss), got {url!r}"
                raise ValueError(msg)


class WebhookSinkSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """POST each event as JSON, signed with HMAC-SHA256 (X-Trueup-Signature, X-Trueup-Timestamp)."""

    url: Annotated[NonEmpty, Meta(description="Where to POST: http(s)://HOST/PATH.")]
    secret_env: Annotated[
        SinkEnvName, Meta(description="Name of the variable holding the HMAC signing key (never the key).")
    ] = "TRUEUP_WEBHOOK_SECRET"  # noqa: S105 - a variable's name
    kinds: Kinds = SINK_KINDS
    timeout: Timeout = 5.0
    consumer: Consumer = "sink-webhook"
    max_attempts: MaxAttempts = 5

    def __post_init__(self) -> None:
        """An http(s) URL with a host (shown with any password masked)."""
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            msg = f"url must be http(s)://HOST/PATH, got {redact(self.url)!r}"
            raise ValueError(msg)


class AlertsSinkSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Alert people through apprise: one alert per discrepancy lifecycle stage, gate BLOCKED and back."""

    urls_env: Annotated[
        SinkEnvName,
        Meta(description="Name of the variable holding the apprise URLs, comma or space separated."),
    ] = "TRUEUP_ALERT_URLS"
    min_severity: Annotated[
        Literal["INFO", "WARNING", "ERROR", "CRITICAL"],
        Meta(description="Least severity alerted (LOST and DEAD_LETTER always are)."),
    ] = "ERROR"
    gate: Annotated[bool, Meta(description="Alert gate changes to BLOCKED and back.")] = True
    start: Annotated[
        Literal["beginning", "end"],
        Meta(description="Where a new alert sink starts: the whole log, or what comes next."),
    ] = "end"
    consumer: Consumer = "sink-alerts"
    max_attempts: MaxAttempts = 8


class SinksTable(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The sinks the daemon hosts, each in a thread of its own (a table absent: that sink is off)."""

    nats: Annotated[NatsSinkSettings | None, Meta(description="NATS JetStream publisher (absent: off).")] = (
        None
    )
    webhook: Annotated[
        WebhookSinkSettings | None, Meta(description="Signed webhook POSTs (absent: off).")
    ] = None
    alerts: Annotated[
        AlertsSinkSettings | None, Meta(description="Alerts to people through apprise (absent: off).")
    ] = None

    def configured(self) -> dict[str, NatsSinkSettings | WebhookSinkSettings | AlertsSinkSettings]:
        """The present tables, by sink name (``nats``, ``webhook``, ``alerts``)."""
        tables = {"nats": self.nats, "webhook": self.webhook, "alerts": self.alerts}
        return {name: table for name, table in tables.items() if table is not None}

    def consumers(self) -> list[str]:
        """The consumer names of the present sinks (the `sink` label of their metrics)."""
        return [table.consumer for table in self.configured().values()]

    def env_names(self) -> dict[str, str]:
        """Every environment variable the sink tables name, by dotted key."""
        names: dict[str, str] = {}
        for name, table in self.configured().items():
            for field in ("servers_env", "secret_env", "urls_env"):
                value = getattr(table, field, None)
                if value is not None:
                    names[f"sinks.{name}.{field}"] = value
        return names

    def __post_init__(self) -> None:
        """Two sinks on one consumer name would share (and fight over) one saved position."""
        consumers = self.consumers()
        if len(set(consumers)) != len(consumers):
            msg = f"consumer names must differ between sinks, got {consumers}"
            raise ValueError(msg)
