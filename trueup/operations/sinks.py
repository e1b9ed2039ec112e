"""The sinks `trueup run` hosts: built from ``[sinks.*]``, each in a thread of its own.

`plan_sinks` turns the config's sink tables into the sinks' own settings, reading the
environment variables they name (a variable that is not set, or an apprise URL apprise
refuses, is a `ConfigError` before anything connects). `SinkHost` runs each planned
sink as a `SinkRunner` (a saved-position consumer of the daemon's store, with retries,
backoff and dead letters) in its own thread, under a supervisor:

- a sink whose runner raises (it should not: the runner retries delivery and read
  failures itself) or cannot be built (its store table, a client) is logged, counted in
  ``trueup_sink_restarts_total{sink}`` and built again after a backoff (1 s doubling to
  60 s, reset after a minute of running); the daemon never stops for a sink;
- `stop` sets the sinks' stop event: an event being delivered finishes, the runner
  closes its sink, and the thread is joined (bounded) before the daemon closes the store.

Deliveries and dead letters are counted by the daemon's `Metrics` (the runner's
observer); `positions` feeds the lag gauge.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from trueup.adapters.eventstore.store import Store, StoreOwner
from trueup.domain.discrepancy import Severity
from trueup.domain.errors import ConfigError
from trueup.operations.config import Config
from trueup.operations.sink_config import AlertsSinkSettings, NatsSinkSettings, WebhookSinkSettings
from trueup.retry import Backoff
from trueup.sinks.alerts import AlertsConfig, AlertSink
from trueup.sinks.base import Sink, SinkObserver, SinkRunner, Start
from trueup.sinks.nats import NatsConfig, NatsSink
from trueup.sinks.webhook import WebhookConfig, WebhookSink

__all__ = ["RESTART_BACKOFF", "HostObserver", "SinkHost", "SinkPlan", "plan_sinks", "sink_problems"]

log = logging.getLogger(__name__)

RESTART_BACKOFF: Final = Backoff(first=1.0, most=60.0)
"""Delays before a failed sink is built again."""
HEALTHY_SECONDS: Final = 60.0
"""A sink that ran this long before failing starts its restart backoff afresh."""
JOIN_SECONDS: Final = 30.0
"""How long `stop` waits for each sink thread (a delivery in flight finishes first)."""

_SPLIT: Final = re.compile(r"[\s,]+")


class HostObserver(SinkObserver, Protocol):
    """A `SinkObserver` told also when a sink runs, stops and is restarted."""

    def sink_running(self, sink: str, up: bool) -> None:
        """`sink`'s runner is up (True) or down (False)."""

    def sink_restarted(self, sink: str) -> None:
        """`sink` failed and is built again after its backoff."""


@dataclass(frozen=True)
class SinkPlan:
    """One sink to host: its name, consumer, delivery policy and how to build it."""

    table: str
    """``nats``, ``webhook`` or ``alerts`` (the config table)."""
    consumer: str
    """The saved position's name, and the `sink` label of its metrics."""
    max_attempts: int
    start: Start
    build: Callable[[Store], Sink]
    """Makes the sink (the alert sink keeps its sent alerts in the store)."""


def _env(name: str, key: str, environ: dict[str, str]) -> str:
    value = environ.get(name, "").strip()
    if not value:
        msg = f"{key}: environment variable {name} is not set"
        raise ConfigError(msg)
    return value


def plan_sinks(config: Config, environ: dict[str, str]) -> list[SinkPlan]:
    """The sinks `config` asks for, their secrets read from `environ`.

    Raises:
        ConfigError: a named variable is not set, or a value it holds is refused.
    """
    plans: list[SinkPlan] = []
    for table, settings in config.file.sinks.configured().items():
        key = f"sinks.{table}"
        if isinstance(settings, NatsSinkSettings):
            plans.append(_nats_plan(settings, key, environ))
        elif isinstance(settings, WebhookSinkSettings):
            plans.append(_webhook_plan(settings, key, environ))
        elif isinstance(settings, AlertsSinkSettings):
            plans.append(_alerts_plan(settings, key, environ))
    return plans


def _nats_plan(settings: NatsSinkSettings, key: str, environ: dict[str, str]) -> SinkPlan:
    servers = settings.servers
    if settings.servers_env is not None:
        servers = tuple(_SPLIT.split(_env(settings.servers_env, f"{key}.servers_env", environ)))
    try:
        nats = NatsConfig(
            servers=tuple(s for s in servers if s),
            stream=settings.stream,
            subject_prefix=settings.subject_prefix,
            kinds=frozenset(settings.kinds),
            duplicate_window=settings.duplicate_window,
            max_age=settings.max_age,
            connect_timeout=settings.connect_timeout,
            publish_timeout=settings.publish_timeout,
            consumer=settings.consumer,
            max_attempts=settings.max_attempts,
        )
        NatsSink(nats)  # the extra is installed (nothing connects yet)
    except ConfigError as e:
        msg = f"{key}: {e}"
        raise ConfigError(msg) from None
    return SinkPlan("nats", nats.consumer, nats.max_attempts, "beginning", lambda _store: NatsSink(nats))


def _webhook_plan(settings: WebhookSinkSettings, key: str, environ: dict[str, str]) -> SinkPlan:
    secret = _env(settings.secret_env, f"{key}.secret_env", environ)
    try:
        webhook = WebhookConfig(
            url=settings.url,
            secret=secret,
            kinds=frozenset(settings.kinds),
            timeout=settings.timeout,
            consumer=settings.consumer,
            max_attempts=settings.max_attempts,
        )
    except ConfigError as e:
        msg = f"{key}: {e}"
        raise ConfigError(msg) from None
    return SinkPlan(
        "webhook", webhook.consumer, webhook.max_attempts, "beginning", lambda _store: WebhookSink(webhook)
    )


def _alerts_plan(settings: AlertsSinkSettings, key: str, environ: dict[str, str]) -> SinkPlan:
    urls = tuple(u for u in _SPLIT.split(_env(settings.urls_env, f"{key}.urls_env", environ)) if u)
    alerts = AlertsConfig(
        urls=urls,
        min_severity=Severity(settings.min_severity),
        gate=settings.gate,
        consumer=settings.consumer,
        max_attempts=settings.max_attempts,
        start=settings.start,
    )
    try:
        import apprise  # noqa: PLC0415 - optional extra
    except ImportError:
        msg = f"{key}: the alert sink needs its extra: pip install 'trueup[sinks]'"
        raise ConfigError(msg) from None
    for index, url in enumerate(urls):
        if not apprise.Apprise().add(url):
            scheme = url.split(":", 1)[0]
            msg = f"{key}.urls_env: apprise does not accept URL #{index + 1} of {settings.urls_env} ({scheme}://...)"
            raise ConfigError(msg)
    return SinkPlan(
        "alerts", alerts.consumer, alerts.max_attempts, alerts.start, lambda store: AlertSink(alerts, store)
    )


def sink_problems(config: Config, environ: dict[str, str]) -> list[str]:
    """What `plan_sinks` refuses, as config error lines (none: the sinks can be built)."""
    try:
        plan_sinks(config, environ)
    except ConfigError as e:
        return [str(e)]
    return []


class SinkHost:
    """Runs the planned sinks, each in a supervised thread, until `stop`."""

    def __init__(
        self,
        ledger: StoreOwner,
        plans: list[SinkPlan],
        observer: HostObserver | None = None,
        *,
        restart_backoff: Backoff = RESTART_BACKOFF,
    ) -> None:
        """Nothing starts until `start`.

        Args:
            ledger: the daemon's open ledger (the sinks read its log, save positions in it).
            plans: from `plan_sinks`.
            observer: counts deliveries, dead letters, restarts (the daemon's `Metrics`).
            restart_backoff: delays before a failed sink is built again.
        """
        self.restart_backoff = restart_backoff
        self.ledger = ledger
        self.plans = plans
        self.observer = observer
        self.stopping = threading.Event()
        self.restarts: dict[str, int] = {p.consumer: 0 for p in plans}
        self.runners: dict[str, SinkRunner] = {}
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """One thread per sink."""
        for plan in self.plans:
            thread = threading.Thread(
                target=self._supervise, args=(plan,), name=f"trueup-{plan.consumer}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = JOIN_SECONDS) -> None:
        """Stop every sink and join its thread (blocking: run it in a worker thread)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout)
            if thread.is_alive():
                log.error("%s did not stop within %.0fs; leaving it", thread.name, timeout)

    def positions(self) -> dict[str, int]:
        """Each running sink's saved position (blocking: it reads the store)."""
        out: dict[str, int] = {}
        for consumer, runner in list(self.runners.items()):
            try:
                out[consumer] = runner.position()
            except Exception:  # the store is busy or gone: the lag is unknown, not zero
                log.debug("reading %s's position failed", consumer, exc_info=True)
        return out

    def _supervise(self, plan: SinkPlan) -> None:
        delays = self.restart_backoff.delays()
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                runner = SinkRunner(
                    self.ledger,
                    plan.build(self.ledger.store),
                    consumer=plan.consumer,
                    max_attempts=plan.max_attempts,
                    start=plan.start,
                    observer=self.observer,
                )
                self.runners[plan.consumer] = runner
                self._running(plan.consumer, up=True)
                log.info("sink %s running from log position %d", plan.consumer, runner.position())
                runner.run(self.stopping)
                if self.stopping.is_set():
                    log.info("sink %s stopped at log position %d", plan.consumer, runner.position())
                    return
                msg = "the runner returned without being stopped"
                raise RuntimeError(msg)  # noqa: TRY301 - handled as any failure of the sink
            except Exception:
                if time.monotonic() - began >= HEALTHY_SECONDS:
                    delays = self.restart_backoff.delays()
                delay = next(delays)
                self.restarts[plan.consumer] += 1
                if self.observer is not None:
                    self.observer.sink_restarted(plan.consumer)
                log.exception("sink %s failed; starting it again in %.0fs", plan.consumer, delay)
            finally:
                self._running(plan.consumer, up=False)
            self.stopping.wait(delay)

    def _running(self, consumer: str, *, up: bool) -> None:
        if self.observer is not None:
            self.observer.sink_running(consumer, up)
