"""Parts of the reconciliation service: its counters, and the asyncio helpers it runs on.

The helpers exist because a cancellation can be lost in code we do not own (Python
3.11's `asyncio.wait_for` drops one that lands as its awaitable completes), and because
a broker call may raise `asyncio.CancelledError` by itself: the service tells the two
apart (`cancelling`) and never relies on a single cancellation to stop (`stop_task`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trueup.domain.errors import InvalidReport
from trueup.domain.reports import Report

Translate = Callable[[str], Sequence[Report]]
"""An adapter's pure translator: raw payload in, normalized reports out."""

STOP_RECHECK_SECONDS = 1.0
"""How long `run` waits for the cancelled stream task before cancelling it again."""


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
    inflight_lookup_failures: int = 0
    """Lookups of in-flight orders that failed or hung (STALE_DATA; never counted toward LOST)."""
    snapshot_retakes: int = 0
    """Snapshots taken again because a position moved in the log after the first one's cut."""
    stream_restarts: int = 0
    """Times the broker's stream failed, ended or its task died, and was started again."""
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
            "inflight_lookup_failures": self.inflight_lookup_failures,
            "snapshot_retakes": self.snapshot_retakes,
            "stream_restarts": self.stream_restarts,
            "stream_messages": self.stream_messages,
            "errors": self.errors,
            "last_error": self.last_error,
        }


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended, cancelling again while it runs on.

    A cancellation can be lost inside code we do not own (on Python 3.11,
    `asyncio.wait_for` drops one that lands as its awaitable completes): cancelled once,
    the stream task once ran on and waited for stream items for ever. The task finishes
    its current ledger write before it stops (`in_worker_thread`).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_RECHECK_SECONDS)
    if not task.cancelled():
        task.exception()  # retrieved: a task that died is logged where it died


def cancelling() -> bool:
    """Whether the running task was asked to stop (as opposed to a call raising CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def wait_any(stop: asyncio.Event, task: asyncio.Task[None], seconds: float) -> None:
    """Sleep up to `seconds`, less if `stop` is set or `task` ends."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, task}, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


async def acquire(lock: asyncio.Lock, seconds: float) -> bool:
    """Take `lock` within `seconds`; False if it stayed held that long."""
    try:
        async with asyncio.timeout(seconds):
            await lock.acquire()
    except TimeoutError:
        return False
    return True


async def wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as `stop` is set."""
    try:
        async with asyncio.timeout(seconds):  # not wait_for: it can drop a cancellation on 3.11
            await stop.wait()
    except TimeoutError:
        return False
    return True


def keep_on_failure(translate: Translate) -> Translate:
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
