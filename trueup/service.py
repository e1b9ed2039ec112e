"""The reconciliation service: keeps the books in line with the broker while the host trades.

One asyncio task per service, wrapping the synchronous `Ledger` (every ledger call is a
blocking database call, so it runs in a worker thread through `asyncio.to_thread`):

1. **Startup** (`start`): each account's gate goes to RECONCILING, then one reconciliation
   against a broker snapshot moves it to READY or BLOCKED. A snapshot that cannot be
   fetched (``BrokerQueryError`` or any other exception) is reconciled as a snapshot whose
   parts are all unknown (``None``): the ledger stores STALE_DATA and keeps the gate
   BLOCKED. A failed query is never read as "flat" or "no orders".
2. **Periodic** (`run`): every `period` seconds, each account is reconciled, then its
   in-flight orders are checked.
3. **Stream** (`trueup.service_stream.StreamConsumer`): every `RawMessage` goes to
   `Ledger.ingest_raw` (the raw payload is stored before it is translated); every
   `Reconnected` reconciles that account at once, because messages may have been missed
   while the connection was down.
4. **In-flight checks** (`trueup.inflight.InflightChecks`): an open order still SUBMITTED
   or PENDING_NEW `inflight_after` seconds after it was sent (``submitted_at``, else
   ``created_at``) is looked up at the broker by our client order id. A report found is
   ingested like any other broker payload. "Not found" counts one retry for that order; a
   lookup that fails, hangs past `broker_timeout` or answers garbage is not "not found":
   it is counted apart and raises STALE_DATA about the order (gate BLOCKED until a lookup
   answers).
5. **Deadlines**: every broker query has one (`broker_timeout`); the broker is asked
   before the account's lock is taken, so a hung broker never holds up the stream, and
   the log position read before asking (the snapshot's cut) makes the ledger skip, and
   the service retake, a snapshot older than a fill booked meanwhile.

**Decision: an in-flight order the broker never confirms.** When `inflight_retries`
lookups of an order answered "not found", the service

- raises a LOST discrepancy for it (CRITICAL: the reconciliation that follows at once,
  and every later one, keeps the account's gate BLOCKED until an operator resolves it);
- locks the order's symbol on the account's gate, in the same transaction, so that even
  an operator override of the gate does not reopen new risk on that symbol (known limit:
  the reconciler lifts every lock on a symbol whose position agrees with the broker's,
  whatever placed it, so this lock does not outlive the next reconciliation when the
  account already holds the symbol; docs/service.md);
- never re-sends, cancels or closes anything. The order may exist at the broker (a slow
  or failing lookup is not proof of absence), so sending it again could double the
  position, and closing it here could hide a live order. Only a human, or a later broker
  report about the order, can settle it; lookups of the order continue, and a report
  found later is ingested as usual (the LOST discrepancy and the lock stay until resolved
  by hand: `Ledger.resolve_discrepancy`, `Ledger.unlock_symbol`).

The LOST discrepancy and the lock are one transaction (`Ledger.declare_lost`, a use case
of `trueup.application.orders`). Retry counts live in memory: a restarted service counts
again from zero (and so waits longer, never less).

An optional `ServiceObserver` (metrics) is told of each reconciliation, discrepancy and
stream message; `inflight_period` runs the in-flight checks on their own interval.

The service never dies on an exception, nor on a `CancelledError` a broker call raises by
itself (only `stop` or cancelling `run` ends it); a stream task that dies is restarted.
Each reconciliation, stream item and in-flight check is wrapped; the exception is logged
and counted in `ServiceCounters`, which the service also saves to the store after every
cycle for ``trueup status``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from trueup.adapters.base import (
    BROKER_CALL_TIMEOUT,
    BrokerClient,
    OrderRequest,
    snapshot_or_unknown,
)
from trueup.application.reconciler import ReconcileResult
from trueup.application.unit_of_work import Clock
from trueup.blocking import in_worker_thread
from trueup.domain.discrepancy import Discrepancy
from trueup.domain.reports import BrokerSnapshot
from trueup.domain.status import IN_FLIGHT_STATUSES
from trueup.domain.views import OrderView
from trueup.inflight import InflightChecks
from trueup.ledger import Ledger
from trueup.observing import ServiceObserver
from trueup.service_parts import (
    ServiceCounters,
    Translate,
    cancelling,
    stop_task,
    wait,
    wait_any,
)
from trueup.service_stream import STREAM_RESTART_SECONDS, StreamConsumer
from trueup.settings import ServiceSettings, validate
from trueup.submission import Submitter, start_accounts

__all__ = [
    "BROKER_CALL_TIMEOUT",
    "DEFAULT_SERVICE_NAME",
    "IN_FLIGHT_STATUSES",
    "MAX_RETAKES",
    "STREAM_GRACE_SECONDS",
    "STREAM_RESTART_SECONDS",
    "STREAM_WAIT_SECONDS",
    "ReconciliationService",
    "ServiceCounters",
    "ServiceObserver",
    "Translate",
]

log = logging.getLogger(__name__)


DEFAULT_SERVICE_NAME = "reconciliation"
"""Name under which the counters are saved (``Ledger.service_status()``)."""
STREAM_WAIT_SECONDS = 60.0
"""How long a stream message waits for its account's reconciliation before it is applied anyway.

Only the ledger's own work holds that lock (the broker is asked before it is taken), so
a hung broker never makes a stream message wait."""
STREAM_GRACE_SECONDS = 30.0
"""How long an account may have no live broker stream before its gate is BLOCKED (STALE_DATA)."""
MAX_RETAKES = 2
"""Snapshots retaken in one reconciliation when positions moved after the snapshot's cut."""


class ReconciliationService:
    """Startup, periodic, on-reconnect reconciliation and in-flight checks for some accounts.

    Example::

        service = ReconciliationService(ledger, broker, accounts=["DU123"])
        stop = asyncio.Event()
        await service.run(stop)  # starts up, then runs until stop is set

    Run one service per broker connection, on one event loop.
    """

    def __init__(  # noqa: PLR0913 - the service's knobs, all keyword-only
        self,
        ledger: Ledger,
        broker: BrokerClient,
        *,
        accounts: Iterable[str],
        period: float = 5.0,
        inflight_after: float = 10.0,
        inflight_retries: int = 3,
        clock: Clock | None = None,
        name: str = DEFAULT_SERVICE_NAME,
        inflight_period: float | None = None,
        observer: ServiceObserver | None = None,
        broker_timeout: float = BROKER_CALL_TIMEOUT,
        stream_wait: float = STREAM_WAIT_SECONDS,
        stream_grace: float = STREAM_GRACE_SECONDS,
    ) -> None:
        """Configure the service; nothing runs until `start` or `run`.

        Args:
            ledger: the books to keep in line.
            broker: the broker client (snapshots, lookups, stream).
            accounts: the broker accounts this service reconciles.
            period: seconds between periodic reconciliations (5 suits live money; a paper
                account can wait about 60 and spare the broker's API).
            inflight_after: seconds an order may stay SUBMITTED or PENDING_NEW before
                it is looked up at the broker.
            inflight_retries: lookups that do not find an in-flight order before it is
                declared LOST.
            clock: source of "now" (tz-aware UTC); defaults to the ledger's clock, so
                snapshot ages and order ages are measured on the ledger's time.
            name: name under which the counters are saved in the store.
            inflight_period: seconds between in-flight checks, run on their own; None
                (the default) checks in-flight orders after each periodic reconciliation.
            observer: told of each reconciliation, discrepancy and stream message (metrics).
            broker_timeout: deadline in seconds of each snapshot and lookup; a missed one
                is a failed query (STALE_DATA, gate BLOCKED until a snapshot succeeds).
            stream_wait: seconds a stream message waits for its account's reconciliation
                (the ledger's part of it) before it is applied anyway.
            stream_grace: seconds an account may have no live broker stream (it failed,
                ended or died and is being restarted) before reconciliations record
                STALE_DATA and keep its gate BLOCKED.

        Raises:
            ConfigError: a setting is out of range (named with its value).
        """
        settings = validate(
            {
                "accounts": tuple(dict.fromkeys(accounts)),
                "period": period,
                "inflight_after": inflight_after,
                "inflight_retries": inflight_retries,
                "inflight_period": inflight_period,
                "broker_timeout": broker_timeout,
                "stream_wait": stream_wait,
                "stream_grace": stream_grace,
            },
            ServiceSettings,
        )
        self.accounts: tuple[str, ...] = settings.accounts
        self.ledger = ledger
        self.broker = broker
        self.period = settings.period
        self.inflight_after = settings.inflight_after
        self.inflight_retries = settings.inflight_retries
        self.clock: Clock = clock or ledger.clock
        self.name = name
        self.inflight_period = settings.inflight_period
        self.observer = observer
        self.broker_timeout = broker_timeout
        self.stream_wait = stream_wait
        self.stream_grace = stream_grace
        self.counters = ServiceCounters()
        # Two reconciliations of one account at once (periodic and after a reconnect)
        # could both raise the same finding: new discrepancies never conflict in the
        # store, so nothing would stop the duplicate. One at a time per account.
        self._account_locks = {account: asyncio.Lock() for account in self.accounts}
        self.inflight_checks = InflightChecks(
            ledger,
            broker,
            after=self.inflight_after,
            retries=self.inflight_retries,
            timeout=broker_timeout,
            clock=self.clock,
            counters=self.counters,
            count_error=self._count_error,
            count_discrepancies=self._count_discrepancies,
        )
        """The in-flight checks (`trueup.inflight`), on this service's counters."""
        self.stream = StreamConsumer(
            ledger,
            broker,
            name=name,
            accounts=self.accounts,
            period=self.period,
            wait_seconds=stream_wait,
            grace=stream_grace,
            account_locks=self._account_locks,
            counters=self.counters,
            reconcile=functools.partial(self._pass, inflight=False),
            notify=self._notify,
            count_error=self._count_error,
            count_discrepancies=self._count_discrepancies,
        )
        """The broker stream (`trueup.service_stream`), reconciled through this service's passes."""
        self._started = False

    # -- public API ----------------------------------------------------------------------

    async def start(self) -> dict[str, ReconcileResult | None]:
        """Startup: put each account's gate in RECONCILING, then reconcile it once.

        Never raises for a broker or ledger failure: a failed snapshot is stored as
        STALE_DATA (gate BLOCKED); an exception is logged and counted.

        Returns:
            Each account's startup ReconcileResult (with the gate after it), or None
            if its reconciliation raised.
        """
        self._started = True

        def failed(account: str, step: str, error: Exception) -> None:
            log.error("startup of %s: %s", account, step, exc_info=error)
            self._count_error(error)

        async def reconcile(accounts: Sequence[str]) -> dict[str, ReconcileResult | None]:
            results: dict[str, ReconcileResult | None] = {}
            await self._pass("startup", accounts, inflight=False, results=results)
            return results

        outcomes = await start_accounts(
            self.ledger,
            self.broker,
            self.accounts,
            reconcile=reconcile,
            on_error=failed,
            timeout=self.broker_timeout,
        )
        return {account: outcome.result for account, outcome in outcomes.items()}

    async def submit(self, request: OrderRequest) -> OrderView:
        """Send a new order through this service's broker, crash-safely (see trueup.submission).

        Raises:
            NotReadyError: the gate refuses it (startup, lock, quarantine).
        """
        return await Submitter(self.ledger, self.broker, timeout=self.broker_timeout).submit(request)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set: startup (unless `start` ran), then the loops.

        Periodic reconciliation with in-flight checks every `period` seconds, and the
        broker's stream consumed concurrently; a stream task that dies (whatever it
        raised) is started again and counted (`stream_restarts`). A `CancelledError`
        raised by a broker call is that call failing, not a request to stop: only `stop`,
        or cancelling this task, ends it. Returns once `stop` is set and the current
        ledger write, if any, has finished.
        """
        if not self._started:
            await self.start()
        loop = asyncio.get_running_loop()
        self.stream.started()
        stream = self.stream.spawn(stop)
        separate = self.inflight_period is not None
        inflight = (
            asyncio.create_task(self._inflight_loop(stop), name=f"{self.name}-inflight") if separate else None
        )
        due = loop.time() + self.period
        try:
            while not stop.is_set():
                if loop.time() >= due:
                    await self._pass("periodic", self.accounts, inflight=not separate)
                    due = loop.time() + self.period
                    continue
                await wait_any(stop, stream, due - loop.time())
                if stream.done() and not stop.is_set():
                    self.stream.died(stream)
                    stream = self.stream.spawn(stop, restarted=True)
        finally:
            if inflight is not None:
                # Its current check finishes first, like the periodic pass.
                await asyncio.gather(inflight, return_exceptions=True)
            await stop_task(stream)
            await self._save_status()

    async def _inflight_loop(self, stop: asyncio.Event) -> None:
        """In-flight checks every `inflight_period` seconds, apart from the periodic pass."""
        assert self.inflight_period is not None  # noqa: S101 - run() starts this loop only then
        while not await wait(stop, self.inflight_period):
            for account in self.accounts:
                try:
                    if await self.inflight_checks.check(account):
                        await self._reconcile(account, "in-flight order lost")
                except Exception as e:
                    log.exception("in-flight checks of %s failed", account)
                    self._count_error(e)

    # -- one pass ------------------------------------------------------------------------

    async def _pass(
        self,
        why: str,
        accounts: Sequence[str],
        *,
        inflight: bool,
        results: dict[str, ReconcileResult | None] | None = None,
    ) -> None:
        """Reconcile `accounts` (then check their in-flight orders); count it; never raise."""
        started = time.monotonic()
        ok = True
        for account in accounts:
            try:
                result = await self._reconcile(account, why)
                if results is not None:
                    results[account] = result
                ok = ok and result is not None and not result.stale
                if inflight and await self.inflight_checks.check(account):
                    # A LOST order is CRITICAL, a failing lookup STALE_DATA: judge the gate
                    # now, not a period later.
                    await self._reconcile(account, "in-flight lookups")
            except asyncio.CancelledError as e:
                if cancelling():
                    raise  # we are being stopped
                log.exception("%s pass of %s: a call raised CancelledError", why, account)
                self._count_error(e)
                ok = False
            except Exception as e:
                log.exception("%s pass of %s failed", why, account)
                self._count_error(e)
                ok = False
        counters = self.counters
        counters.cycles += 1
        counters.last_duration_seconds = time.monotonic() - started
        if ok:
            counters.last_success = self.clock()
        else:
            counters.failed_cycles += 1
        await self._save_status()

    async def _reconcile(self, account: str, why: str) -> ReconcileResult | None:
        """Fetch a snapshot and reconcile it; None if the ledger raised (logged, counted).

        The broker is asked before the account's lock is taken, so a slow or hung broker
        never holds up the stream; the log position read before asking (the cut) tells
        the ledger whether a fill was booked since, and then the snapshot is retaken.
        """
        started = time.monotonic()
        result: ReconcileResult | None = None
        for attempt in range(MAX_RETAKES + 1):
            # The last retake holds the lock while asking (for at most `broker_timeout`),
            # so this process's own stream cannot move the books under it once more.
            result = await self._reconcile_once(account, why, lock_first=attempt == MAX_RETAKES)
            if result is None:
                self._notify(lambda o: o.reconciled(account, why, None, time.monotonic() - started))
                return None
            if not result.retake:
                break
            if attempt < MAX_RETAKES:
                self.counters.snapshot_retakes += 1
                log.info(
                    "%s: the books of %s moved after its snapshot was asked for; retaking it", why, account
                )
        if result is None:  # pragma: no cover - the loop runs at least once
            return None
        self._count_discrepancies(result.discrepancies)
        self._notify(lambda o: o.reconciled(account, why, result, time.monotonic() - started))
        level = logging.INFO if result.discrepancies or result.stale else logging.DEBUG
        log.log(
            level,
            "%s reconciliation of %s: gate %s, %d discrepancies, %d order updates, %d position syncs%s",
            why,
            account,
            result.gate,
            len(result.discrepancies),
            len(result.order_updates),
            len(result.position_syncs),
            " (broker data stale)" if result.stale else "",
        )
        return result

    async def _reconcile_once(self, account: str, why: str, *, lock_first: bool) -> ReconcileResult | None:
        """One snapshot (asked for after reading the cut) reconciled under the account's lock."""
        lock = self._account_locks[account]
        held = False
        if lock_first:
            await lock.acquire()
            held = True
        try:
            cut = await in_worker_thread(self.ledger.last_position)
            snapshot = await self._snapshot(account)
            if not held:
                await lock.acquire()
                held = True
            try:
                no_stream = self.stream.no_stream_seconds()
                return await in_worker_thread(
                    functools.partial(self.ledger.reconcile, snapshot, cut=cut, no_stream_seconds=no_stream)
                )
            except Exception as e:
                log.exception("%s reconciliation of %s failed", why, account)
                self._count_error(e)
                return None
        finally:
            if held:
                lock.release()

    async def _snapshot(self, account: str) -> BrokerSnapshot:
        """The broker's snapshot, or one with every part unknown if it could not be had."""
        return await snapshot_or_unknown(
            self.broker, account, self.clock(), on_error=self._count_error, timeout=self.broker_timeout
        )

    # -- helpers -------------------------------------------------------------------------

    async def _save_status(self) -> None:
        """Save the counters where ``trueup status`` reads them; a failure is only counted."""
        try:
            await in_worker_thread(
                self.ledger.projector.save_service_status, self.name, self.counters.as_dict()
            )
        except Exception as e:
            log.exception("could not save the service counters")
            self._count_error(e)

    def _count_discrepancies(self, events: Iterable[Any]) -> None:
        by_kind = self.counters.discrepancies_by_kind
        for event in events:
            if isinstance(event, Discrepancy.Raised):
                by_kind[event.kind] = by_kind.get(event.kind, 0) + 1
                account, kind, severity = event.account, event.kind, event.severity
                self._notify(lambda o: o.raised(account, kind, severity))  # noqa: B023 - called at once

    def _notify(self, call: Callable[[ServiceObserver], None]) -> None:
        """Tell the observer; its failure is logged and counted, never raised."""
        if self.observer is not None:
            try:
                call(self.observer)
            except Exception as e:
                log.exception("service observer failed")
                self._count_error(e)

    def _count_error(self, error: BaseException) -> None:
        self.counters.errors += 1
        self.counters.last_error = f"{type(error).__name__}: {error}"
