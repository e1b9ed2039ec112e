"""In-flight checks: look overdue orders up at the broker, count what the lookups found.

An open order still SUBMITTED or PENDING_NEW `after` seconds after it was sent
(``submitted_at``, else ``created_at``) is looked up at the broker by our client order
id. A report found is ingested like any other broker payload. "Not found" counts one
miss for that order; a lookup that fails, hangs past the deadline or answers garbage is
not "not found": it is counted apart and raises STALE_DATA about the order (gate BLOCKED
until a lookup answers). After `retries` answered "not found", the order is declared
LOST (`Ledger.declare_lost`: the discrepancy and the symbol lock in one transaction);
nothing is re-sent, cancelled or closed (see `trueup.service`).

Miss counts live in memory: a restarted service counts again from zero (and so waits
longer, never less). `ReconciliationService` composes one `InflightChecks`; its messages
go to the service's logger (``trueup.service``), where they have always been.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trueup.adapters.base import BrokerClient
from trueup.application.unit_of_work import Clock
from trueup.blocking import in_worker_thread
from trueup.domain.errors import BrokerQueryError
from trueup.domain.status import IN_FLIGHT_STATUSES
from trueup.domain.views import OrderView
from trueup.ledger import Ledger
from trueup.lookups import UntranslatableLookupError, look_up
from trueup.service_parts import ServiceCounters

log = logging.getLogger("trueup.service")


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


class InflightChecks:
    """The in-flight checks of one service: its ledger, broker, knobs and counters."""

    def __init__(  # noqa: PLR0913 - the service's parts the checks use, all keyword-only
        self,
        ledger: Ledger,
        broker: BrokerClient,
        *,
        after: float,
        retries: int,
        timeout: float,
        clock: Clock,
        counters: ServiceCounters,
        count_error: Callable[[BaseException], None],
        count_discrepancies: Callable[[Iterable[Any]], None],
    ) -> None:
        """Check with the service's parts; `count_error` and `count_discrepancies` are its own."""
        self.ledger = ledger
        self.broker = broker
        self.after = after
        self.retries = retries
        self.timeout = timeout
        self.clock = clock
        self.counters = counters
        self._count_error = count_error
        self._count_discrepancies = count_discrepancies
        self._misses: dict[tuple[str, str], _Misses] = {}
        self._lost: set[tuple[str, str]] = set()

    async def check(self, account: str) -> bool:
        """Look up the account's overdue in-flight orders; True if the gate must be judged now.

        That is when an order was declared LOST, or a lookup began or stopped failing.
        """
        orders = await in_worker_thread(self.ledger.open_orders, account)
        in_flight = {o.client_order_id: o for o in orders if o.status in IN_FLIGHT_STATUSES}
        # Forget orders that left flight (acknowledged, filled, closed): their count is moot.
        for key in [k for k in self._misses if k[0] == account and k[1] not in in_flight]:
            del self._misses[key]
        self._lost = {k for k in self._lost if k[0] != account or k[1] in in_flight}
        failing = await in_worker_thread(self.ledger.failing_lookups, account)
        changed = False
        if failing - set(in_flight):
            # Its lookups failed, but a report moved it on: the broker has answered for it.
            await in_worker_thread(
                self.ledger.lookups_settled, account, failing - set(in_flight), "order left flight"
            )
            changed = True
        now = self.clock()
        for order in in_flight.values():
            # Our own clock only: when SUBMITTED was stored, else when the intent was.
            since = order.submitted_at or order.created_at
            if since is not None and (now - since).total_seconds() < self.after:
                continue
            try:
                changed = (
                    await self._check_order(account, order, failing=order.client_order_id in failing)
                    or changed
                )
            except Exception as e:
                log.exception("in-flight check of %s %s failed", account, order.client_order_id)
                self._count_error(e)
        return changed

    async def _check_order(self, account: str, order: OrderView, *, failing: bool) -> bool:
        """Look one in-flight order up; ingest it if found, else count a miss.

        A lookup that fails, hangs or answers garbage is not "not found": it is counted
        apart and raises STALE_DATA (one per order while open); only answered "not found"
        lookups count toward LOST.

        Returns:
            True if the gate must be judged now (LOST declared, a lookup began or stopped failing).
        """
        cid = order.client_order_id
        key = (account, cid)
        self.counters.inflight_checks += 1
        misses = self._misses.setdefault(key, _Misses())
        try:
            # Stores what it finds; an untranslatable answer is kept (and raised as a failure).
            found = await look_up(self.ledger, self.broker, account, cid, timeout=self.timeout)
        except BrokerQueryError as e:
            log.warning("lookup of in-flight %s %s failed: %s", account, cid, e)
            self._count_error(e)
            misses.failed += 1
            if isinstance(e, UntranslatableLookupError):
                self._count_discrepancies(e.events)
            self.counters.inflight_lookup_failures += 1
            events = await in_worker_thread(
                functools.partial(
                    self.ledger.lookup_failed, account, cid, failed=misses.failed, reason=str(e)
                )
            )
            self._count_discrepancies(events)
            return bool(events)
        if failing:
            await in_worker_thread(
                self.ledger.lookups_settled, account, {cid}, "the broker answered the lookup"
            )
        if found.report is not None:
            del self._misses[key]
            self._count_discrepancies(found.events)
            return failing
        misses.not_found += 1
        log.info(
            "in-flight %s %s (%s) not found by the broker: %d of %d lookups (%d failed, not counted)",
            account,
            cid,
            order.status,
            misses.not_found,
            self.retries,
            misses.failed,
        )
        if misses.not_found < self.retries or key in self._lost:
            return failing
        events = await in_worker_thread(
            self.ledger.declare_lost, account, cid, not_found=misses.not_found, failed=misses.failed
        )
        self._count_discrepancies(events)
        self._lost.add(key)
        if not events:
            return failing  # it left flight meanwhile (a report arrived): nothing lost
        self.counters.inflight_lost += 1
        log.error("in-flight %s %s declared LOST; %s locked; nothing re-sent", account, cid, order.symbol)
        return True
