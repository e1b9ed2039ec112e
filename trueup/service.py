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
3. **Stream**: every `RawMessage` goes to `Ledger.ingest_raw` (the raw payload is stored
   before it is translated); every `Reconnected` reconciles that account at once, because
   messages may have been missed while the connection was down.
4. **In-flight checks**: an open order still SUBMITTED or PENDING_NEW `inflight_after`
   seconds after it was sent (``submitted_at``, else ``created_at``) is looked
   up at the broker by our client order id. A report found is ingested like any other
   broker payload. "Not found" and a failed lookup each count one retry for that order.

**Decision: an in-flight order the broker never confirms.** When an order has used up
`inflight_retries` lookups without being found, the service

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

The service never dies on an exception: each reconciliation, stream item and in-flight
check is wrapped; the exception is logged and counted in `ServiceCounters`, which the
service also saves to the store after every cycle for ``trueup status``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trueup.adapters.base import (
    BrokerClient,
    OrderRequest,
    RawMessage,
    Reconnected,
    RefreshNeeded,
    StreamItem,
    snapshot_or_unknown,
)
from trueup.application.reconciler import ReconcileResult
from trueup.application.unit_of_work import Clock
from trueup.blocking import in_worker_thread
from trueup.domain.discrepancy import Discrepancy
from trueup.domain.errors import BrokerQueryError, InvalidReport
from trueup.domain.reports import BrokerSnapshot, OrderReport, Report
from trueup.domain.status import IN_FLIGHT_STATUSES
from trueup.domain.views import OrderView
from trueup.ledger import Ledger
from trueup.observing import ServiceObserver
from trueup.settings import ServiceSettings, validate
from trueup.submission import Submitter, record_lookup, start_accounts

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "IN_FLIGHT_STATUSES",
    "STREAM_WAIT_SECONDS",
    "ReconciliationService",
    "ServiceCounters",
    "ServiceObserver",
    "Translate",
]

log = logging.getLogger(__name__)

Translate = Callable[[str], Sequence[Report]]
"""An adapter's pure translator: raw payload in, normalized reports out."""

DEFAULT_SERVICE_NAME = "reconciliation"
STREAM_WAIT_SECONDS = 60.0
"""How long a stream message waits for its account's reconciliation before it is applied anyway."""
"""Name under which the counters are saved (``Ledger.service_status()``)."""


@dataclass
class ServiceCounters:
    """What the service has done since it was created; read it at any time.

    Counters are only changed from the service's event loop, so a reader on that loop
    always sees a consistent set; `as_dict` gives a JSON-ready copy for the CLI and metrics.
    """

    cycles: int = 0
    """Reconciliation passes run: startup, periodic, and after each stream reconnect."""
    failed_cycles: int = 0
    """Passes in which some account could not be reconciled against fresh broker data
    (snapshot failed or partial, or an exception)."""
    last_duration_seconds: float | None = None
    """Wall time of the last pass, reconciliations and in-flight checks included."""
    last_success: datetime | None = None
    """When the last pass that reconciled every account against fresh data ended."""
    discrepancies_by_kind: dict[str, int] = field(default_factory=dict)
    """Discrepancies raised through the service (reconciliations, stream, in-flight), by kind."""
    reconnects: int = 0
    """`Reconnected` items received from the stream."""
    refreshes: int = 0
    """`RefreshNeeded` items received from the stream (each reconciles its account)."""
    inflight_checks: int = 0
    """Broker lookups of in-flight orders."""
    inflight_lost: int = 0
    """In-flight orders declared LOST (and their symbol locked)."""
    stream_messages: int = 0
    """`RawMessage` items received from the stream."""
    errors: int = 0
    """Exceptions caught (broker failures included); each was logged."""
    last_error: str | None = None
    """The last exception caught, as "Type: message"."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (times as ISO 8601 strings)."""
        return {
            "cycles": self.cycles,
            "failed_cycles": self.failed_cycles,
            "last_duration_seconds": self.last_duration_seconds,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "discrepancies_by_kind": dict(self.discrepancies_by_kind),
            "reconnects": self.reconnects,
            "refreshes": self.refreshes,
            "inflight_checks": self.inflight_checks,
            "inflight_lost": self.inflight_lost,
            "stream_messages": self.stream_messages,
            "errors": self.errors,
            "last_error": self.last_error,
        }


@dataclass
class _Misses:
    """Lookups of one in-flight order that did not find it."""

    not_found: int = 0
    """The broker answered that it has no order with our id."""
    failed: int = 0
    """The lookup itself failed: absence unknown."""

    @property
    def total(self) -> int:
        return self.not_found + self.failed


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
    ) -> None:
        """Configure the service; nothing runs until `start` or `run`.

        Args:
            ledger: the books to keep in line.
            broker: the broker client (snapshots, lookups, stream).
            accounts: the broker accounts this service reconciles.
            period: seconds between periodic reconciliations (DESIGN: 5 live, 60 paper).
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
        self.counters = ServiceCounters()
        # Two reconciliations of one account at once (periodic and after a reconnect)
        # could both raise the same finding: new discrepancies never conflict in the
        # store, so nothing would stop the duplicate. One at a time per account.
        self._account_locks = {account: asyncio.Lock() for account in self.accounts}
        self._misses: dict[tuple[str, str], _Misses] = {}
        self._lost: set[tuple[str, str]] = set()
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
            self.ledger, self.broker, self.accounts, reconcile=reconcile, on_error=failed
        )
        return {account: outcome.result for account, outcome in outcomes.items()}

    async def submit(self, request: OrderRequest) -> OrderView:
        """Send a new order through this service's broker, crash-safely (see trueup.submission).

        Raises:
            NotReadyError: the gate refuses it (startup, lock, quarantine).
        """
        return await Submitter(self.ledger, self.broker).submit(request)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set: startup (unless `start` ran), then the loops.

        Periodic reconciliation with in-flight checks every `period` seconds, and the
        broker's stream consumed concurrently. Returns once `stop` is set and the
        current ledger write, if any, has finished.
        """
        if not self._started:
            await self.start()
        stream = asyncio.create_task(self._consume_stream(stop), name=f"{self.name}-stream")
        separate = self.inflight_period is not None
        inflight = (
            asyncio.create_task(self._inflight_loop(stop), name=f"{self.name}-inflight") if separate else None
        )
        try:
            while not await _wait(stop, self.period):
                await self._pass("periodic", self.accounts, inflight=not separate)
        finally:
            if inflight is not None:
                # Its current check finishes first, like the periodic pass.
                await asyncio.gather(inflight, return_exceptions=True)
            stream.cancel()
            # The stream task finishes its current ledger write before it stops.
            await asyncio.gather(stream, return_exceptions=True)
            await self._save_status()

    async def _inflight_loop(self, stop: asyncio.Event) -> None:
        """In-flight checks every `inflight_period` seconds, apart from the periodic pass."""
        assert self.inflight_period is not None  # noqa: S101 - run() starts this loop only then
        while not await _wait(stop, self.inflight_period):
            for account in self.accounts:
                try:
                    if await self._check_inflight(account):
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
                if inflight and await self._check_inflight(account):
                    # A LOST order is CRITICAL: judge the gate now, not a period later.
                    await self._reconcile(account, "in-flight order lost")
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
        """Fetch a snapshot and reconcile it; None if the ledger raised (logged, counted)."""
        started = time.monotonic()
        async with self._account_locks[account]:
            snapshot = await self._snapshot(account)
            try:
                result = await in_worker_thread(self.ledger.reconcile, snapshot)
            except Exception as e:
                log.exception("%s reconciliation of %s failed", why, account)
                self._count_error(e)
                self._notify(lambda o: o.reconciled(account, why, None, time.monotonic() - started))
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

    async def _snapshot(self, account: str) -> BrokerSnapshot:
        """The broker's snapshot, or one with every part unknown if it could not be had."""
        return await snapshot_or_unknown(self.broker, account, self.clock(), on_error=self._count_error)

    # -- stream --------------------------------------------------------------------------

    async def _consume_stream(self, stop: asyncio.Event) -> None:
        """Hand every stream item to the ledger; resubscribe if the stream fails or ends."""
        while not stop.is_set():
            try:
                async for item in self.broker.stream():
                    await self._on_stream_item(item)
            except Exception as e:
                log.exception("broker stream failed; resubscribing in %gs", self.period)
                self._count_error(e)
            else:
                log.warning("broker stream ended; resubscribing in %gs", self.period)
            # Not at once: a stream that fails straight away would spin the loop.
            await _wait(stop, self.period)

    async def _on_stream_item(self, item: StreamItem) -> None:
        """Apply one stream item; never raise (logged and counted instead)."""
        try:
            if isinstance(item, RawMessage):
                self.counters.stream_messages += 1
                # Not while the account is being reconciled: a fill booked between the
                # snapshot and its comparison would be in our position and not in the
                # broker's, and a repair would book it away. It waits and lands after;
                # never for ever (a stuck reconciliation must not stop the stream).
                lock = self._account_locks.get(item.account)
                held = lock is not None and await _acquire(lock, STREAM_WAIT_SECONDS)
                if lock is not None and not held:
                    log.warning(
                        "%s still reconciling after %gs; applying its stream message now",
                        item.account,
                        STREAM_WAIT_SECONDS,
                    )
                try:
                    events = await in_worker_thread(
                        self.ledger.ingest_raw,
                        item.payload,
                        _keep_on_failure(item.translate),
                        account=item.account,
                        source=item.source,
                        kind=item.kind,
                    )
                except Exception:
                    self._notify(lambda o: o.stream_message(item.account, "error"))
                    raise
                finally:
                    if held and lock is not None:
                        lock.release()
                self._count_discrepancies(events)
                invalid = any(
                    isinstance(e, Discrepancy.Raised) and e.kind == "INVALID_REPORT" for e in events
                )
                self._notify(lambda o: o.stream_message(item.account, "invalid" if invalid else "applied"))
            elif isinstance(item, Reconnected | RefreshNeeded):
                if isinstance(item, Reconnected):
                    self.counters.reconnects += 1
                    why = "reconnect"
                    detail = "reconnected (messages may be missing)"
                else:
                    self.counters.refreshes += 1
                    why = "refresh"
                    detail = f"asked for a refresh ({item.reason})"
                if item.account not in self._account_locks:
                    log.warning(
                        "%s %s for %s, which this service does not reconcile",
                        item.source,
                        detail,
                        item.account,
                    )
                    return
                log.info("%s %s for %s: reconciling now", item.source, detail, item.account)
                await self._pass(why, [item.account], inflight=False)
            else:
                msg = f"unexpected stream item {type(item).__name__}"
                raise TypeError(msg)  # noqa: TRY301 - counted and logged like any other failure below
        except Exception as e:
            log.exception("stream item %s could not be applied", type(item).__name__)
            self._count_error(e)

    # -- in-flight orders ----------------------------------------------------------------

    async def _check_inflight(self, account: str) -> int:
        """Look up the account's overdue in-flight orders; return how many were declared LOST."""
        orders = await in_worker_thread(self.ledger.open_orders, account)
        in_flight = {o.client_order_id: o for o in orders if o.status in IN_FLIGHT_STATUSES}
        # Forget orders that left flight (acknowledged, filled, closed): their count is moot.
        for key in [k for k in self._misses if k[0] == account and k[1] not in in_flight]:
            del self._misses[key]
        self._lost = {k for k in self._lost if k[0] != account or k[1] in in_flight}
        now = self.clock()
        lost = 0
        for order in in_flight.values():
            # Our own clock only: when SUBMITTED was stored, else when the intent was.
            since = order.submitted_at or order.created_at
            if since is not None and (now - since).total_seconds() < self.inflight_after:
                continue
            try:
                lost += await self._check_order(account, order)
            except Exception as e:
                log.exception("in-flight check of %s %s failed", account, order.client_order_id)
                self._count_error(e)
        return lost

    async def _check_order(self, account: str, order: OrderView) -> int:
        """Look one in-flight order up; ingest it if found, else count a miss. 1 if now LOST."""
        cid = order.client_order_id
        key = (account, cid)
        self.counters.inflight_checks += 1
        misses = self._misses.setdefault(key, _Misses())
        try:
            found = await self.broker.lookup(account, cid)
        except BrokerQueryError as e:
            log.warning("lookup of in-flight %s %s failed: %s", account, cid, e)
            self._count_error(e)
            misses.failed += 1
        except Exception as e:
            log.exception("lookup of in-flight %s %s raised", account, cid)
            self._count_error(e)
            misses.failed += 1
        else:
            if found is not None:
                del self._misses[key]
                await self._ingest_lookup(account, found)
                return 0
            misses.not_found += 1
        log.info(
            "in-flight %s %s (%s) not confirmed by the broker: %d of %d lookups",
            account,
            cid,
            order.status,
            misses.total,
            self.inflight_retries,
        )
        if misses.total < self.inflight_retries or key in self._lost:
            return 0
        events = await in_worker_thread(
            self.ledger.declare_lost, account, cid, not_found=misses.not_found, failed=misses.failed
        )
        self._count_discrepancies(events)
        self._lost.add(key)
        if not events:
            return 0  # it left flight meanwhile (a report arrived): nothing lost
        self.counters.inflight_lost += 1
        log.error("in-flight %s %s declared LOST; %s locked; nothing re-sent", account, cid, order.symbol)
        return 1

    async def _ingest_lookup(self, account: str, found: OrderReport) -> None:
        events = await in_worker_thread(
            record_lookup, self.ledger, found, account=account, source=self.broker.name
        )
        self._count_discrepancies(events)

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


async def _acquire(lock: asyncio.Lock, seconds: float) -> bool:
    """Take `lock` within `seconds`; False if it stayed held that long."""
    try:
        async with asyncio.timeout(seconds):
            await lock.acquire()
    except TimeoutError:
        return False
    return True


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def _keep_on_failure(translate: Translate) -> Translate:
    """Wrap a translator so that any failure keeps the payload and raises INVALID_REPORT.

    `Ledger.ingest_raw` keeps a payload whose translation raises InvalidReport,
    ValueError, TypeError, KeyError or a msgspec DecodeError; any other exception (an
    adapter bug: AttributeError, IndexError, ...) would roll back the whole transaction,
    the raw payload with it. DESIGN: a payload that fails translation is never dropped.
    """

    def translate_or_invalid(payload: str) -> Sequence[Report]:
        try:
            # list(): a generator would fail later, outside this guard.
            return list(translate(payload))
        except InvalidReport:
            raise
        except Exception as e:
            msg = f"translator raised {type(e).__name__}: {e}"
            raise InvalidReport(msg) from e

    return translate_or_invalid
