"""Prometheus metrics of `trueup run`, with `prometheus_client` on a registry of its own.

Labels are only ever bounded values: the configured account ids, discrepancy kinds and
severities (closed enums), gate states, reconciliation triggers and outcomes, the
configured sinks' consumer names. Never an order id, a symbol or an error text.

Counters move as the service reports (`ServiceObserver`); gauges of current state (open
discrepancies, gate, in-flight orders) are read from the ledger by `refresh`, after each
reconciliation and before each scrape, so an alert on them clears once the books agree.
The hosted sinks report deliveries, dead letters and restarts (`SinkObserver`); their lag
(log events not yet handled) is read at each scrape from `sink_positions`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

try:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        disable_created_metrics,
        generate_latest,
    )
except ImportError as e:  # pragma: no cover - the ops extra is not installed
    msg = "trueup's metrics need the ops extra: pip install 'trueup[ops]'"
    raise ImportError(msg) from e

from trueup.application.reconciler import ReconcileResult
from trueup.domain.discrepancy import DiscrepancyKind, Severity
from trueup.domain.gate import GateState
from trueup.domain.status import IN_FLIGHT_STATUSES
from trueup.ledger import Ledger

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

_DURATIONS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COMMITS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    """Every metric of the daemon, for a fixed set of accounts."""

    def __init__(
        self,
        accounts: Sequence[str],
        periods: dict[str, float] | None = None,
        *,
        market_hours: Mapping[str, Callable[[datetime], bool]] | None = None,
        sinks: Sequence[str] = (),
    ) -> None:
        """Create the metrics; every per-account series exists from the start (0 or now).

        `market_hours`: per account, whether its market is open at a time (the config's
        `market_hours`); an account without one is reported open all the time. `sinks`:
        the consumer names of the hosted sinks.
        """
        self.accounts = tuple(accounts)
        self.sinks = tuple(sinks)
        self.sink_positions: Callable[[], Mapping[str, int]] | None = None
        """Each hosted sink's saved position (set by the daemon; read at `refresh`)."""
        self.market_hours = dict(market_hours or {})
        # `_created` series double the scrape and no query here reads them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.mismatches = Counter(
            "trueup_reconciliation_mismatches",
            "Discrepancies raised (reconciliation, stream, in-flight checks).",
            ["account", "kind", "severity"],
            registry=r,
        )
        self.cycles = Counter(
            "trueup_reconciliation_cycles",
            "Reconciliations run, by trigger (startup, periodic, reconnect, ...) and outcome.",
            ["account", "trigger", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "trueup_reconciliation_duration_seconds",
            "Wall time of one account's reconciliation, broker snapshot included.",
            buckets=_DURATIONS,
            registry=r,
        )
        self.open_discrepancies = Gauge(
            "trueup_open_discrepancies",
            "Discrepancies open now.",
            ["account", "kind", "severity"],
            registry=r,
        )
        self.oldest_open = Gauge(
            "trueup_open_discrepancy_oldest_timestamp_seconds",
            "When the oldest open discrepancy of this kind was detected (absent: none open).",
            ["account", "kind"],
            registry=r,
        )
        self.gate = Gauge(
            "trueup_gate_state", "1 for the gate's current state.", ["account", "state"], registry=r
        )
        self.last_success = Gauge(
            "trueup_last_successful_reconciliation_timestamp_seconds",
            "End of the last reconciliation against fresh broker data (daemon start until one).",
            ["account"],
            registry=r,
        )
        self.period = Gauge(
            "trueup_reconciliation_period_seconds",
            "Configured seconds between periodic reconciliations.",
            ["account"],
            registry=r,
        )
        self.inflight = Gauge(
            "trueup_inflight_orders", "Orders SUBMITTED or PENDING_NEW now.", ["account"], registry=r
        )
        self.stream_messages = Counter(
            "trueup_stream_messages",
            "Stream messages handled: applied, invalid (stored, INVALID_REPORT) or error.",
            ["account", "outcome"],
            registry=r,
        )
        self.stream_last = Gauge(
            "trueup_stream_last_message_timestamp_seconds",
            "When the last stream message arrived (daemon start until one).",
            ["account"],
            registry=r,
        )
        self.commit_duration = Histogram(
            "trueup_store_commit_duration_seconds",
            "Wall time of one event-store transaction.",
            buckets=_COMMITS,
            registry=r,
        )
        self.started = Gauge(
            "trueup_startup_complete",
            "1 once the account's startup reconciliation ended.",
            ["account"],
            registry=r,
        )
        self.market_open = Gauge(
            "trueup_market_open",
            "1 while the account's market is open (configured market_hours), else 0.",
            ["account"],
            registry=r,
        )
        self.sink_delivered_total = Counter(
            "trueup_sink_delivered", "Events a hosted sink delivered.", ["sink"], registry=r
        )
        self.sink_dead_letters = Counter(
            "trueup_sink_dead_letters",
            "Events a hosted sink gave up on (each a DEAD_LETTER discrepancy).",
            ["sink"],
            registry=r,
        )
        self.sink_restarts = Counter(
            "trueup_sink_restarts", "Times a hosted sink failed and was started again.", ["sink"], registry=r
        )
        self.sink_up = Gauge("trueup_sink_running", "1 while the sink's runner is up.", ["sink"], registry=r)
        self.sink_lag = Gauge(
            "trueup_sink_lag_events",
            "Log events after the sink's saved position (not yet delivered or skipped).",
            ["sink"],
            registry=r,
        )
        for sink in self.sinks:
            self.sink_delivered_total.labels(sink)
            self.sink_dead_letters.labels(sink)
            self.sink_restarts.labels(sink)
            self.sink_up.labels(sink).set(0)
        now = time.time()
        self.refresh_market(datetime.fromtimestamp(now, UTC))
        for account in self.accounts:
            self.last_success.labels(account).set(now)
            self.stream_last.labels(account).set(now)
            self.started.labels(account).set(0)
            self.inflight.labels(account).set(0)
            if periods and account in periods:
                self.period.labels(account).set(periods[account])
            for state in GateState:
                self.gate.labels(account, state.value).set(1 if state is GateState.RECONCILING else 0)
            for outcome in ("applied", "invalid", "error"):
                self.stream_messages.labels(account, outcome)
        self._open_labels: set[tuple[str, str, str]] = set()
        for account in self.accounts:
            for kind in DiscrepancyKind:
                for severity in Severity:
                    # Every series exists at 0 from the start, so a rate and an alert see the first one.
                    self.mismatches.labels(account, kind.value, severity.value)
                    self.open_discrepancies.labels(account, kind.value, severity.value).set(0)
                    self._open_labels.add((account, kind.value, severity.value))

    # -- ServiceObserver --------------------------------------------------------------------

    def reconciled(self, account: str, trigger: str, result: ReconcileResult | None, seconds: float) -> None:
        """Count one reconciliation and time it; a fresh one moves the last-success time."""
        if result is None:
            outcome = "error"
        elif result.stale:
            outcome = "stale"
        else:
            outcome = "ok"
            self.last_success.labels(account).set(time.time())
        self.cycles.labels(account, _trigger(trigger), outcome).inc()
        self.duration.observe(seconds)
        if result is not None:
            self.set_gate(account, str(result.gate))

    def raised(self, account: str, kind: str, severity: str) -> None:
        """Count one discrepancy raised."""
        if kind in DiscrepancyKind.__members__ and severity in Severity.__members__:
            self.mismatches.labels(account, kind, severity).inc()

    def stream_message(self, account: str, outcome: str) -> None:
        """Count one stream message."""
        self.stream_messages.labels(account, outcome).inc()
        self.stream_last.labels(account).set(time.time())

    # -- SinkObserver (from the sinks' threads) ------------------------------------------------

    def sink_delivered(self, sink: str) -> None:
        """Count one event delivered."""
        self.sink_delivered_total.labels(sink).inc()

    def sink_dead_lettered(self, sink: str) -> None:
        """Count one dead letter."""
        self.sink_dead_letters.labels(sink).inc()

    def sink_restarted(self, sink: str) -> None:
        """Count one restart of a failed sink."""
        self.sink_restarts.labels(sink).inc()

    def sink_running(self, sink: str, up: bool) -> None:
        """The sink's runner is up or down."""
        self.sink_up.labels(sink).set(1 if up else 0)

    # -- state gauges -----------------------------------------------------------------------

    def set_gate(self, account: str, state: str) -> None:
        """1 for `state`, 0 for the other states."""
        for each in GateState:
            self.gate.labels(account, each.value).set(1 if each.value == state else 0)

    def refresh_market(self, now: datetime) -> None:
        """`trueup_market_open` of every account as of `now`."""
        for account in self.accounts:
            is_open = self.market_hours.get(account)
            self.market_open.labels(account).set(1 if is_open is None or is_open(now) else 0)

    def refresh(self, ledger: Ledger) -> None:
        """Read the gauges of current state from the ledger (blocking: run it in a thread)."""
        self.refresh_market(datetime.now(UTC))
        open_now: dict[tuple[str, str, str], int] = {}
        oldest: dict[tuple[str, str], float] = {}
        for view in ledger.discrepancies():
            if view.account not in self.accounts:
                continue
            labels = (view.account, view.kind, view.severity)
            open_now[labels] = open_now.get(labels, 0) + 1
            detected = view.ts_detected.timestamp()
            key = (view.account, view.kind)
            oldest[key] = min(oldest.get(key, detected), detected)
        for labels in self._open_labels - open_now.keys():
            self.open_discrepancies.labels(*labels).set(0)  # resolved: the series drops to 0
        for labels, count in open_now.items():
            self.open_discrepancies.labels(*labels).set(count)
        self._open_labels |= open_now.keys()
        self.oldest_open.clear()
        for (account, kind), ts in oldest.items():
            self.oldest_open.labels(account, kind).set(ts)
        for account in self.accounts:
            self.set_gate(account, str(ledger.gate(account)))
            flying = sum(1 for o in ledger.open_orders(account) if o.status in IN_FLIGHT_STATUSES)
            self.inflight.labels(account).set(flying)
        if self.sink_positions is not None and self.sinks:
            head = ledger.store.app.recorder.max_notification_id() or 0
            for sink, position in self.sink_positions().items():
                self.sink_lag.labels(sink).set(max(0, head - position))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def time_commits(self, put: Callable[..., Any]) -> Callable[..., Any]:
        """`put` (the event store's write of one transaction), timed into the commit histogram."""

        def timed(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - the wrapped call's own
            started = time.perf_counter()
            try:
                return put(*args, **kwargs)
            finally:
                self.commit_duration.observe(time.perf_counter() - started)

        return timed


def _trigger(why: str) -> str:
    """A bounded trigger label from the service's reason for a reconciliation."""
    known = ("startup", "periodic", "reconnect", "refresh")
    return why if why in known else ("inflight" if "in-flight" in why else "other")


def metric_names(exposition: bytes | str) -> set[str]:
    """Names of the samples in an exposition (``x_bucket``, ``x_total``, ... as exposed)."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    names: Iterable[str] = (
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    )
    return set(names)
