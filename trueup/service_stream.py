"""The service's broker stream: every item to the ledger, a failed or ended stream resubscribed.

Every `RawMessage` goes to `Ledger.ingest_raw` (the raw payload is stored before it is
translated), never while its account is being reconciled (it waits at most `wait_seconds`,
then is applied anyway); every `Reconnected` or `RefreshNeeded` reconciles that account
at once, because messages may have been missed. A stream that fails or ends is
resubscribed after a pause (doubling from `STREAM_RESTART_SECONDS`, capped at `period`),
and once it is back every account is reconciled. `no_stream_seconds` tells the
reconciliation how long no stream has been live, once that exceeds `grace` (STALE_DATA).

`ReconciliationService` composes one `StreamConsumer`; its messages go to the service's
logger (``trueup.service``), where they have always been.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from trueup.adapters.base import BrokerClient, RawMessage, Reconnected, RefreshNeeded, StreamItem
from trueup.blocking import in_worker_thread
from trueup.domain.discrepancy import Discrepancy
from trueup.ledger import Ledger
from trueup.observing import ServiceObserver
from trueup.service_parts import ServiceCounters, acquire, cancelling, keep_on_failure, wait

log = logging.getLogger("trueup.service")

STREAM_RESTART_SECONDS = 1.0
"""First pause before a failed or ended stream is resubscribed (doubling, capped at `period`)."""


class StreamConsumer:
    """The broker stream of one service, and how long it has been without one."""

    def __init__(  # noqa: PLR0913 - the service's parts the stream uses, all keyword-only
        self,
        ledger: Ledger,
        broker: BrokerClient,
        *,
        name: str,
        accounts: Sequence[str],
        period: float,
        wait_seconds: float,
        grace: float,
        account_locks: Mapping[str, asyncio.Lock],
        counters: ServiceCounters,
        reconcile: Callable[[str, Sequence[str]], Awaitable[None]],
        notify: Callable[[Callable[[ServiceObserver], None]], None],
        count_error: Callable[[BaseException], None],
        count_discrepancies: Callable[[Iterable[Any]], None],
    ) -> None:
        """Consume with the service's parts; `reconcile(why, accounts)` is its pass, no in-flight checks."""
        self.ledger = ledger
        self.broker = broker
        self.name = name
        self.accounts = accounts
        self.period = period
        self.wait_seconds = wait_seconds
        self.grace = grace
        self.account_locks = account_locks
        self.counters = counters
        self._reconcile = reconcile
        self._notify = notify
        self._count_error = count_error
        self._count_discrepancies = count_discrepancies
        self._down_since: float | None = None
        """Since when (monotonic) no stream has been consumed; None while one is (or before `started`)."""
        self._subscribed_at: float | None = None
        """When the current subscription started (it counts as live once it has lasted)."""

    def started(self) -> None:
        """The service runs from now: no stream yet (live once subscribed, `no_stream_seconds`)."""
        self._down_since = time.monotonic()

    def spawn(self, stop: asyncio.Event, *, restarted: bool = False) -> asyncio.Task[None]:
        """Start consuming the stream in a task of its own (`consume`)."""
        return asyncio.create_task(self.consume(stop, restarted=restarted), name=f"{self.name}-stream")

    def died(self, stream: asyncio.Task[None]) -> None:
        """The stream task ended while the service runs: say why; `run` starts another."""
        error = stream.exception() if not stream.cancelled() else asyncio.CancelledError()
        log.error("broker stream task died (%r); restarting it", error)
        if error is not None:
            self._count_error(error)
        self.counters.stream_restarts += 1
        self._subscribed_at = None
        if self._down_since is None:
            self._down_since = time.monotonic()

    def no_stream_seconds(self) -> float | None:
        """How long no stream has been consumed, once that exceeds `grace`; else None."""
        since, now = self._down_since, time.monotonic()
        if since is None:
            return None
        subscribed = self._subscribed_at
        if subscribed is not None and now - subscribed >= min(STREAM_RESTART_SECONDS, self.grace / 2):
            # Subscribed and not failed for a while: live, quiet or not. A subscription
            # that fails at once never gets here, so it does not count as live.
            self._down_since = None
            return None
        down = now - since
        return down if down >= self.grace else None

    async def consume(self, stop: asyncio.Event, *, restarted: bool = False) -> None:
        """Hand every stream item to the ledger; resubscribe if the stream fails or ends.

        Once the stream is back after a failure, every account is reconciled at once:
        messages may have been missed while nothing consumed it.
        """
        pause = min(self.period, STREAM_RESTART_SECONDS)
        while not stop.is_set():
            if restarted:
                await self._reconcile("stream restart", self.accounts)
            self._subscribed_at = time.monotonic()
            try:
                async for item in self.broker.stream():
                    self._down_since = None  # it delivers: live
                    pause = min(self.period, STREAM_RESTART_SECONDS)
                    await self.on_item(item)
                    if stop.is_set():
                        return  # do not rely on the cancellation alone (see `stop_task`)
            except asyncio.CancelledError as e:
                if cancelling():
                    raise  # the service is stopping
                log.exception("broker stream raised CancelledError; resubscribing in %gs", pause)
                self._count_error(e)
            except Exception as e:
                log.exception("broker stream failed; resubscribing in %gs", pause)
                self._count_error(e)
            else:
                log.warning("broker stream ended; resubscribing in %gs", pause)
            self._subscribed_at = None
            if self._down_since is None:
                self._down_since = time.monotonic()
            self.counters.stream_restarts += 1
            restarted = True
            # Not at once: a stream that fails straight away would spin the loop.
            await wait(stop, pause)
            pause = min(self.period, pause * 2)

    async def on_item(self, item: StreamItem) -> None:
        """Apply one stream item; never raise (logged and counted instead)."""
        try:
            if isinstance(item, RawMessage):
                self.counters.stream_messages += 1
                # Not while the account is being reconciled: a fill booked between the
                # snapshot and its comparison would be in our position and not in the
                # broker's, and a repair would book it away. It waits and lands after;
                # never for ever (a stuck reconciliation must not stop the stream).
                lock = self.account_locks.get(item.account)
                held = lock is not None and await acquire(lock, self.wait_seconds)
                if lock is not None and not held:
                    log.warning(
                        "%s still reconciling after %gs; applying its stream message now",
                        item.account,
                        self.wait_seconds,
                    )
                try:
                    events = await in_worker_thread(
                        self.ledger.ingest_raw,
                        item.payload,
                        keep_on_failure(item.translate),
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
                if item.account not in self.account_locks:
                    log.warning(
                        "%s %s for %s, which this service does not reconcile",
                        item.source,
                        detail,
                        item.account,
                    )
                    return
                log.info("%s %s for %s: reconciling now", item.source, detail, item.account)
                await self._reconcile(why, [item.account])
            else:
                msg = f"unexpected stream item {type(item).__name__}"
                raise TypeError(msg)  # noqa: TRY301 - counted and logged like any other failure below
        except Exception as e:
            log.exception("stream item %s could not be applied", type(item).__name__)
            self._count_error(e)
