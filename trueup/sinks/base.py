"""Hosting a sink: a saved-position consumer with retries, backoff and dead letters.

`SinkRunner` feeds a `Sink` the published events (`trueup.sinks.events`) of one store's
log, through a `SavedPositionConsumer` (at-least-once; the position lives in the
store's ``trueup_consumers`` table under the sink's consumer name, so a restarted sink
resumes after the last event it delivered and re-sends at most that one).

Failures:

- `SinkUnavailable` (the destination is down or timed out) is retried with backoff
  for ever and never counted against the event: an outage poisons nothing.
- Any other failure counts. After `max_attempts` counted failures of one event it is
  **dead-lettered**: a DEAD_LETTER discrepancy is stored in the log (key
  ``<consumer>@<log position>``, naming the event, the tries and the last error; it is
  the dead-letter record, listed by `trueup discrepancies`), the runner's observer counts
  it (`SinkObserver`; `trueup run` passes its metrics, so
  ``trueup_sink_dead_letters_total{sink=...}`` is on its ``/metrics``; standalone, the
  process-wide prometheus_client counters when it is installed) and the sink moves on.
  A DEAD_LETTER discrepancy that itself cannot be delivered is logged and counted but
  not recorded again (no chain of dead letters).

A daemon hosts a runner with ``run(stop_event)`` in a thread of its own
(`trueup.operations.sinks` for `trueup run`); ``run_once()`` delivers what is in the log
now and returns.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, Literal, Protocol

import msgspec

from trueup.adapters.eventstore.log import LoggedEvent
from trueup.adapters.eventstore.store import StoreOwner
from trueup.application.findings import record_findings
from trueup.application.unit_of_work import Clock, UnitOfWork, Writer, utc_now
from trueup.domain.discrepancy import Discrepancy, DiscrepancyKind, Finding
from trueup.faults import crash_point
from trueup.retry import Backoff, PoisonPolicy
from trueup.sinks.events import SinkEvent, sink_event
from trueup.subscriptions import SavedPositionConsumer

log = logging.getLogger(__name__)

Start = Literal["beginning", "end"]
"""Where a sink with no saved position starts: the whole log, or only what comes next."""

NO_ACCOUNT = "*"
"""Account of a dead letter whose event names none (or could not be read)."""


class SinkUnavailable(Exception):  # noqa: N818 - reads as the condition it reports
    """The destination cannot be reached now: retried without limit, never dead-letters."""


class Sink(ABC):
    """Where events go: NATS, a webhook, people. Called from the runner's thread only."""

    name: str
    """Default consumer name (its saved position in the store)."""

    def wants(self, event: SinkEvent) -> bool:
        """Whether to deliver `event` (default: every published event)."""
        return bool(event.kind)

    @abstractmethod
    def deliver(self, event: SinkEvent) -> None:
        """Send one event; raise `SinkUnavailable` when the destination is down."""

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing to close
        """Release connections (the runner calls it when it stops)."""


class SinkObserver(Protocol):
    """Told of each delivery and dead letter (metrics); called from the runner's thread."""

    def sink_delivered(self, sink: str) -> None:
        """One event delivered by the sink whose consumer name is `sink`."""

    def sink_dead_lettered(self, sink: str) -> None:
        """One event given up on (dead-lettered) by `sink`."""


class _Metrics:
    """prometheus_client counters on its default registry when installed (standalone sinks)."""

    def __init__(self) -> None:
        self.counters: dict[str, Any] = {}
        try:
            import prometheus_client  # noqa: PLC0415 - optional extra
        except ImportError:
            return
        self.counters = {
            "delivered": prometheus_client.Counter(
                "trueup_sink_delivered", "Events a trueup sink delivered.", ["sink"]
            ),
            "dead_letters": prometheus_client.Counter(
                "trueup_sink_dead_letters", "Events a trueup sink gave up on (dead letters).", ["sink"]
            ),
        }

    def inc(self, name: str, sink: str) -> None:
        counter = self.counters.get(name)
        if counter is not None:
            counter.labels(sink=sink).inc()

    def sink_delivered(self, sink: str) -> None:
        self.inc("delivered", sink)

    def sink_dead_lettered(self, sink: str) -> None:
        self.inc("dead_letters", sink)


METRICS = _Metrics()
"""Process-wide: prometheus_client refuses a metric name registered twice."""


class SinkRunner:
    """Runs one sink as a saved-position consumer of one store's log."""

    def __init__(  # noqa: PLR0913 - the sink, its store, and its delivery policy
        self,
        ledger: StoreOwner,
        sink: Sink,
        *,
        consumer: str | None = None,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        start: Start = "beginning",
        clock: Clock = utc_now,
        observer: SinkObserver | None = None,
    ) -> None:
        """Create (or resume) the sink's consumer.

        Args:
            ledger: anything with a `store` (a `Ledger`).
            sink: where the events go.
            consumer: the consumer name holding the position (default: the sink's name).
            max_attempts: counted failures of one event before it is dead-lettered.
            backoff: delays between tries (default 0.05 s doubling to 2 s).
            start: where a consumer with no saved position starts.
            clock: dates the dead-letter discrepancies.
            observer: counts deliveries and dead letters (default: the process-wide
                prometheus_client counters).
        """
        self.sink = sink
        self.store = ledger.store
        self.name = consumer or sink.name
        self.observer: SinkObserver = observer or METRICS
        self.delivered = 0
        """Events delivered by this process (skipped kinds not counted)."""
        self.writer = Writer(self.store, clock)
        head = self.store.app.recorder.max_notification_id() or 0
        self.consumer = SavedPositionConsumer(
            ledger,
            self.name,
            self._handle,
            from_position=head if start == "end" else 0,
            backoff=backoff,
            poison=PoisonPolicy(max_attempts, self._dead_letter, (SinkUnavailable,)),
        )

    @property
    def dead_letters(self) -> int:
        """Events this process gave up on."""
        return self.consumer.dead_letters

    @property
    def errors(self) -> int:
        """Failures so far (each retry counts)."""
        return self.consumer.errors

    def position(self) -> int:
        """The saved position: events up to it are delivered (or dead-lettered)."""
        return self.consumer.position()

    def run(self, stop_event: threading.Event) -> int:
        """Deliver events as they are appended until `stop_event` is set; return how many were handled."""
        try:
            return self.consumer.run_forever(stop_event)
        finally:
            self.sink.close()

    def run_once(self, max_events: int | None = None) -> int:
        """Deliver what is in the log now and return how many events were handled.

        Raises:
            SinkUnavailable: the destination is down (the position stays before the event).
        """
        return self.consumer.run_once(max_events)

    def close(self) -> None:
        """Close the sink's connections."""
        self.sink.close()

    def _handle(self, logged: LoggedEvent) -> None:
        event = sink_event(self.store, logged)
        if event is None or not self.sink.wants(event):
            return
        self.sink.deliver(event)
        self.delivered += 1
        self.observer.sink_delivered(self.name)
        crash_point("sink.after_deliver")  # the worst moment: sent, position not yet saved

    def _dead_letter(self, logged: LoggedEvent, error: Exception, attempts: int) -> None:
        event = logged.event
        if isinstance(event, Discrepancy.Event) and _is_dead_letter(self, event):
            log.error(
                "%s: gave up on dead letter %s at %d (%s); not recorded again",
                self.name,
                event.originator_id,
                logged.position,
                error,
            )
            self.observer.sink_dead_lettered(self.name)
            return
        account = str(getattr(event, "account", "") or "") or _account_of(self, logged) or NO_ACCOUNT
        error_text = f"{type(error).__name__}: {error}"
        finding = Finding(
            DiscrepancyKind.DEAD_LETTER,
            f"{self.name}@{logged.position}",
            f"sink {self.name!r} delivers {logged.topic} at log position {logged.position}",
            f"failed {attempts} times; last: {error_text[:500]}",
            f"sink {self.name!r} gave up on log event {logged.position} ({logged.topic}) and moved "
            f"on; fix the destination, re-send it by hand if it matters (trueup events --after "
            f"{logged.position - 1} --until {logged.position} --json), then resolve this",
        )

        def apply(unit: UnitOfWork) -> None:
            record_findings(unit, account, [finding], None)

        self.writer.commit(apply, what=f"dead letter of {self.name}@{logged.position}")
        # Counted once recorded: a failed record is retried, and must not count twice.
        self.observer.sink_dead_lettered(self.name)


def _is_dead_letter(runner: SinkRunner, event: Discrepancy.Event) -> bool:
    aggregate = runner.store.aggregate(event.originator_id, event.originator_version)
    return bool(aggregate.kind == DiscrepancyKind.DEAD_LETTER)


def _account_of(runner: SinkRunner, logged: LoggedEvent) -> str | None:
    """The event's account if it can be read at all (the event may be what failed)."""
    try:
        public = sink_event(runner.store, logged)
    except Exception:  # the event that poisoned the sink may not translate either
        log.debug("%s: no account for dead letter at %d", runner.name, logged.position, exc_info=True)
        return None
    return public.account if public is not None else None


def redacted(config: msgspec.Struct, *secret_fields: str) -> str:
    """A config's repr with its secrets masked."""
    fields = {f: getattr(config, f) for f in config.__struct_fields__}
    for name in secret_fields:
        if fields.get(name):
            fields[name] = "***"
    inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{type(config).__name__}({inner})"
