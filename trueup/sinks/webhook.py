"""Webhook sink: each published event as a signed JSON POST, and the receiver's check.

The body is the event's JSON (`trueup.sinks.events.SinkEvent`). Headers:

- ``X-Trueup-Timestamp``: Unix seconds when the request was signed;
- ``X-Trueup-Signature``: ``sha256=<hex>``, the HMAC-SHA256 with the shared secret of
  ``<timestamp>.<body>`` (so a captured request cannot be replayed with a new time);
- ``X-Trueup-Event-Id``: the event's id, the same on a re-send (receivers dedupe on it).

Receivers call `verify_signature` (constant-time compare, and a replay window: a
timestamp more than `tolerance` seconds from now is refused).

Outcomes: a 2xx answer delivers the event. Connection failures, timeouts and the
answers 408, 429, 502, 503 and 504 mean the receiver is unavailable: retried with
backoff for ever. Any other answer (a 4xx refusal, a 500 from the receiver's own
handler) counts against the event, which is dead-lettered after `max_attempts`.
Uses only the standard library's HTTP client.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import msgspec

from trueup.domain.errors import ConfigError
from trueup.sinks.base import Sink, SinkUnavailable, redacted
from trueup.sinks.events import KINDS, SinkEvent, encode

SIGNATURE_HEADER = "X-Trueup-Signature"
TIMESTAMP_HEADER = "X-Trueup-Timestamp"
EVENT_ID_HEADER = "X-Trueup-Event-Id"
UNAVAILABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
"""Answers that say "not now" rather than "not this": retried without limit."""
DEFAULT_TOLERANCE = 300.0
"""Seconds a signature stays acceptable (the replay window)."""


class SignatureError(ValueError):
    """A webhook request whose signature or timestamp does not check out."""


class WebhookConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the webhook sink (``[sinks.webhook]`` in a daemon's config)."""

    url: str
    secret: str
    """Shared HMAC key; never logged (the repr masks it)."""
    kinds: frozenset[str] = KINDS
    timeout: float = 5.0
    """Seconds for connecting and for the answer."""
    consumer: str = "sink-webhook"
    max_attempts: int = 5

    def __post_init__(self) -> None:
        """Refuse settings that cannot work."""
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            msg = f"webhook sink: URL must be http(s)://host/..., not {self.url!r}"
            raise ConfigError(msg)
        if not self.secret:
            msg = "webhook sink: a signing secret is required"
            raise ConfigError(msg)
        unknown = set(self.kinds) - KINDS
        if unknown:
            msg = f"webhook sink: unknown kinds {sorted(unknown)}; known: {sorted(KINDS)}"
            raise ConfigError(msg)

    def __repr__(self) -> str:
        """Mask the secret."""
        return redacted(self, "secret")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``<timestamp>.<body>`` under `secret`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(  # noqa: PLR0913 - what was received, and the window
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature_header: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a received webhook: signed with `secret`, and signed recently.

    Args:
        secret: the shared secret.
        body: the raw request body, exactly as received.
        timestamp: the ``X-Trueup-Timestamp`` header.
        signature_header: the ``X-Trueup-Signature`` header.
        tolerance: seconds the timestamp may differ from `now` (the replay window).
        now: Unix time to check against (default: the clock).

    Raises:
        SignatureError: a header is missing, the timestamp is outside the window, or the
            signature does not match.
    """
    if not timestamp or not signature_header:
        msg = f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
        raise SignatureError(msg)
    try:
        signed_at = int(timestamp)
    except ValueError:
        msg = f"{TIMESTAMP_HEADER} is not Unix seconds: {timestamp!r}"
        raise SignatureError(msg) from None
    current = time.time() if now is None else now
    if abs(current - signed_at) > tolerance:
        msg = f"{TIMESTAMP_HEADER} {signed_at} is outside the {tolerance:g}s replay window"
        raise SignatureError(msg)
    if not hmac.compare_digest(signature(secret, timestamp, body), signature_header):
        msg = "signature does not match the body"
        raise SignatureError(msg)


class WebhookRefusedError(RuntimeError):
    """The receiver answered with a status that refuses this event."""


class WebhookSink(Sink):
    """POSTs each event, signed, to one URL."""

    name = "sink-webhook"

    def __init__(self, config: WebhookConfig) -> None:
        """POST to `config.url`."""
        self.config = config
        self.name = config.consumer
        self.posted = 0

    def wants(self, event: SinkEvent) -> bool:
        """Only the configured kinds."""
        return event.kind in self.config.kinds

    def deliver(self, event: SinkEvent) -> None:
        """POST one event; 2xx delivers it."""
        body = encode(event)
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
            self.config.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "trueup-webhook",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(self.config.secret, timestamp, body),
                EVENT_ID_HEADER: event.id,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as e:
            detail = f"webhook {self.config.url} answered {e.code} {e.reason} to event {event.id}"
            if e.code in UNAVAILABLE_STATUSES:
                raise SinkUnavailable(detail) from e
            raise WebhookRefusedError(detail) from e
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            msg = f"webhook {self.config.url} unreachable: {e}"
            raise SinkUnavailable(msg) from e
        self.posted += 1
