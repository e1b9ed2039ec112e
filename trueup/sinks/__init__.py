"""Sinks: the log's events to machines (NATS JetStream, webhooks) and alerts to people (apprise).

Each sink is a saved-position consumer of one store's log (`SinkRunner`): at-least-once,
resumable after a crash, with retry, backoff and dead letters (`trueup.sinks.base`).
What they send is `trueup.sinks.events.SinkEvent` (docs/events.md).

- `NatsSink` / `NatsConfig` (`trueup.sinks.nats`): JetStream, exactly once per event
  within the stream's duplicate window.
- `WebhookSink` / `WebhookConfig` (`trueup.sinks.webhook`): signed JSON POSTs;
  `verify_signature` for receivers.
- `AlertSink` / `AlertsConfig` (`trueup.sinks.alerts`): apprise URLs, one alert per
  discrepancy lifecycle stage and per gate change to BLOCKED and back.

Importing this package needs no extra; the NATS and alert sinks need ``trueup[sinks]``
when they are built. Standalone: ``trueup sink nats|webhook|alerts --store URL ...``.
"""

from trueup.sinks.alerts import AlertsConfig, AlertSink
from trueup.sinks.base import Sink, SinkRunner, SinkUnavailable
from trueup.sinks.events import SinkEvent, sink_event
from trueup.sinks.nats import NatsConfig, NatsSink
from trueup.sinks.webhook import SignatureError, WebhookConfig, WebhookSink, verify_signature

__all__ = [
    "AlertSink",
    "AlertsConfig",
    "NatsConfig",
    "NatsSink",
    "SignatureError",
    "Sink",
    "SinkEvent",
    "SinkRunner",
    "SinkUnavailable",
    "WebhookConfig",
    "WebhookSink",
    "sink_event",
    "verify_signature",
]
