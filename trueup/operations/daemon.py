"""`trueup run`: every configured account's reconciliation in one process, with its endpoint.

Per account one `ReconciliationService` on its own broker client (startup recovery and
reconciliation, periodic and in-flight checks, the broker's stream), all on one ledger
and one event loop, with the HTTP endpoint (`trueup.operations.http`) and the metrics.
The configured sinks (``[sinks.*]``) run on the same ledger, each in a supervised thread
of its own (`trueup.operations.sinks`): a sink that fails is logged, counted and started
again with backoff, never taking the daemon down.

SIGTERM / SIGINT set the stop event: each service finishes its current pass, saves its
counters and returns; the sinks finish the event they are delivering and their threads
are joined; the broker clients, the endpoint and the ledger are closed; the exit status
is 0. A service that raises (it should not: it catches broker and ledger
errors itself) is logged and started again after its period; the daemon never exits on
a broker error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Final

from trueup.blocking import in_worker_thread
from trueup.domain.reconcile import PositionPolicy
from trueup.ledger import Ledger
from trueup.operations.brokers import close_broker, make_broker
from trueup.operations.config import AccountSettings, Config, PaperAccount
from trueup.operations.http import Endpoint
from trueup.operations.metrics import Metrics
from trueup.operations.sinks import SinkHost, plan_sinks
from trueup.service import ReconciliationService

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS: Final = 1.0
"""How often the loop proves it is responsive (/healthz)."""


class Daemon:
    """The running daemon; `run` until `stop` is set."""

    def __init__(self, config: Config) -> None:
        """Nothing connects or opens until `run`."""
        self.config = config
        self.stop = asyncio.Event()
        self.port: int | None = None
        self.ready = asyncio.Event()
        """Set once the endpoint listens (tests and `run` wait for it)."""
        self._started: set[str] = set()
        self._beat = time.monotonic()

    async def run(self) -> int:
        """Run every account until `stop` is set; 0 on a clean stop."""
        config = self.config
        plans = plan_sinks(config, dict(os.environ))  # a sink's secret missing: before anything opens
        policies = {a.account.account_id: PositionPolicy(a.account.position_policy) for a in config.accounts}
        ledger = await in_worker_thread(
            Ledger.open,
            config.store,
            policies=policies,
            lost_after=config.lost_after,
            max_snapshot_age=config.max_snapshot_age,
            closed_order_retention=config.closed_order_retention,
        )
        ids = {a.name: a.account.account_id for a in config.accounts}
        metrics = Metrics(
            list(ids.values()),
            {a.account.account_id: a.timings.period for a in config.accounts},
            market_hours={a.account.account_id: a.account.market_hours.is_open for a in config.accounts},
            sinks=[plan.consumer for plan in plans],
        )
        sinks = SinkHost(ledger, plans, metrics)
        metrics.sink_positions = sinks.positions
        events = ledger.store.app.events
        # The event store's write is the transaction; time it without touching the use cases.
        events.put = metrics.time_commits(events.put)  # type: ignore[method-assign]
        endpoint = Endpoint(
            ledger, metrics, accounts=ids, started=self._started.__contains__, heartbeat=lambda: self._beat
        )
        brokers: list[object] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            for settings in config.accounts:
                for claim in settings.account.claims:
                    await in_worker_thread(
                        ledger.claim, settings.account.account_id, claim.symbol, claim.strategy
                    )
            self.port = await endpoint.start(config.file.http.host, config.file.http.port)
            log.info("listening on http://%s:%d", config.file.http.host, self.port)
            self.ready.set()
            tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
            sinks.start()
            if plans:
                log.info("sinks running: %s", ", ".join(p.consumer for p in plans))
            for settings in config.accounts:
                broker = make_broker(settings)
                brokers.append(broker)
                service = ReconciliationService(
                    ledger,
                    broker,
                    accounts=[settings.account.account_id],
                    period=settings.timings.period,
                    inflight_after=settings.timings.inflight_after,
                    inflight_retries=settings.timings.inflight_retries,
                    inflight_period=settings.timings.inflight_interval,
                    name=f"reconciliation:{settings.name}",
                    observer=metrics,
                )
                tasks.append(asyncio.create_task(self._account(settings, service, metrics, ledger)))
                if isinstance(settings.account, PaperAccount) and settings.account.step_every:
                    tasks.append(asyncio.create_task(self._paper_market(broker, settings.account.step_every)))
            await self.stop.wait()
            log.info("stopping: finishing the current cycle of every account")
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await in_worker_thread(sinks.stop)
            for broker in brokers:
                try:
                    await close_broker(broker)
                except Exception:
                    log.exception("closing %r failed", broker)
            await endpoint.stop()
            await in_worker_thread(ledger.close)
        log.info("stopped")
        return 0

    async def _account(
        self, settings: AccountSettings, service: ReconciliationService, metrics: Metrics, ledger: Ledger
    ) -> None:
        """Startup delay, startup reconciliation, then the service's loops; restarted if it raises."""
        account = settings.account.account_id
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), settings.timings.startup_delay)
        if self.stop.is_set():
            return
        while True:
            try:
                if account not in self._started:
                    results = await service.start()
                    self._started.add(account)
                    metrics.started.labels(account).set(1)
                    result = results.get(account)
                    log.info(
                        "%s (%s) started: gate %s",
                        settings.name,
                        account,
                        result.gate if result else "unknown",
                    )
                    await in_worker_thread(metrics.refresh, ledger)
                await service.run(self.stop)
            except Exception:
                log.exception("%s: the reconciliation service raised; starting it again", settings.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), settings.timings.period)
                if self.stop.is_set():
                    return
                continue
            return

    async def _paper_market(self, broker: object, every: float) -> None:
        """Advance the paper market one step every `every` seconds (it has no clock of its own)."""
        step = getattr(broker, "step")  # noqa: B009 - a PaperBroker
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)
            if not self.stop.is_set():
                try:
                    await in_worker_thread(step)
                except Exception:
                    log.exception("paper market step failed")

    async def _heartbeat(self) -> None:
        while not self.stop.is_set():
            self._beat = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), HEARTBEAT_SECONDS)


def run_daemon(config: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit status."""

    async def main() -> int:
        daemon = Daemon(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stopper(daemon, sig))
        return await daemon.run()

    return asyncio.run(main())


def _stopper(daemon: Daemon, sig: signal.Signals) -> Callable[[], None]:
    def stop() -> None:
        log.info("%s received", sig.name)
        daemon.stop.set()

    return stop
