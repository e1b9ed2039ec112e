"""Crash-safe submission: write ahead, send once, and after a crash look up, never re-send.

The submit path, and what a crash at each point leaves behind:

1. the gate is checked (startup gate, symbol locks, orphan quarantines);
2. the intent is stored with its client id (INTENDED). A crash here: never sent;
   recovery closes it;
3. SUBMITTED is stored. A crash here (``submit.before_broker_call``): recovery looks the
   id up at the broker and finds nothing, so it closes the order; nothing is re-sent;
4. the broker is called with our id in its own field. A crash here
   (``submit.after_broker_call``): the broker has the order, we do not know it; recovery
   finds it by our id and books it;
5. the acknowledgement and the broker id are stored.

Submitting a client id that already exists returns the existing order and sends nothing:
that, and the broker refusing a duplicate client id, is why a retry can never double an
order. The lookups recovery makes are in `trueup.lookups` (re-exported here).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal

import msgspec

from trueup.adapters.base import (
    BROKER_CALL_TIMEOUT,
    BrokerClient,
    ModifyingBroker,
    OrderRequest,
    ReplaceRequest,
    ReplacingBroker,
    SubmitAck,
    SubmitRejected,
    SubmitUncertain,
    absence_provable,
    check_client_order_id,
    snapshot_or_unknown,
)
from trueup.application.books import Books
from trueup.application.reconciler import ReconcileResult
from trueup.blocking import in_worker_thread
from trueup.domain.errors import BrokerQueryError
from trueup.domain.reports import OrderReport
from trueup.domain.status import OrderStatus, ReportSource
from trueup.domain.views import OrderView
from trueup.faults import crash_point
from trueup.lookups import (
    Looked,
    UntranslatableLookupError,
    look_up,
    record_lookup,
)

__all__ = [
    "Looked",
    "RecoveryReport",
    "StartupError",
    "StartupOutcome",
    "StartupReconcile",
    "Submitter",
    "UntranslatableLookupError",
    "look_up",
    "reconcile_from",
    "record_lookup",
    "start_accounts",
    "start_session",
]

log = logging.getLogger(__name__)


class RecoveryReport(msgspec.Struct):
    """What startup recovery found for intents without an acknowledgement."""

    found: list[str] = msgspec.field(default_factory=list)
    """Client ids found at the broker and booked."""
    abandoned: list[str] = msgspec.field(default_factory=list)
    """Client ids proven absent at the broker and closed (never re-sent)."""
    unresolved: list[str] = msgspec.field(default_factory=list)
    """Client ids the broker could not be asked about; trading stays blocked."""


class Submitter:
    """Sends orders for one ledger through one broker client.

    Every ledger call runs in a worker thread (`trueup.blocking`): each is a database
    transaction, and the event loop that awaits the broker must not wait on the disk.
    """

    def __init__(self, ledger: Books, broker: BrokerClient, *, timeout: float = BROKER_CALL_TIMEOUT) -> None:
        """Submit into `ledger` through `broker`; `timeout` bounds each broker query (not submits)."""
        self.ledger = ledger
        self.broker = broker
        self.timeout = timeout

    async def submit(self, request: OrderRequest) -> OrderView:
        """Send a new order once, crash-safely; see the module docstring for each step.

        Returns:
            The order as stored after the broker's answer (or SUBMITTED if the answer is
            unknown: the in-flight check and recovery resolve it by lookup).

        Raises:
            InvalidReport: the client id does not fit every broker's field.
            NotReadyError: the gate refuses the order (state, lock, quarantine).
        """
        ledger = self.ledger
        check_client_order_id(request.client_order_id)
        existing = await in_worker_thread(ledger.order, request.account, request.client_order_id)
        if existing is not None:
            log.info(
                "submit %s: already recorded (%s); nothing sent", request.client_order_id, existing.status
            )
            return existing
        live_position = await self._live_position(request) if request.reduce_only else None
        check = functools.partial(
            ledger.check_new_order,
            request.account,
            request.symbol,
            request.side,
            request.quantity,
            strategy=request.strategy,
            reduce_only=request.reduce_only,
            live_position=live_position,
        )
        await in_worker_thread(check)  # refused before anything is written
        return await self._send(request, functools.partial(self.broker.submit, request), check=check)

    async def replace(
        self,
        account: str,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
    ) -> OrderView:
        """Amend a working order by replacing it with a new leg, crash-safely (like `submit`).

        The leg's client id is derived from the chain's first id and the leg's number; the
        leg is recorded (INTENDED, chained to the order it replaces, then SUBMITTED) before
        the broker call. If the answer is lost, the leg is looked up like any submitted
        order, never re-sent. Replacing an order that already has a recorded leg (one the
        broker did not refuse) returns that leg and sends nothing, so a retry is safe.

        Returns:
            The new leg as stored after the broker's answer.

        Raises:
            TypeError: the broker does not amend by replacement.
            LookupError: no such order.
            ValueError: the order is not working, or has no broker id yet.
            NotReadyError: the gate refuses new risk on the symbol.
        """
        broker = self.broker
        if not isinstance(broker, ReplacingBroker):
            msg = f"broker {broker.name!r} does not amend orders by replacement"
            raise TypeError(msg)
        planned = await in_worker_thread(
            self._plan_leg, broker, account, client_order_id, quantity, limit_price
        )
        if isinstance(planned, OrderView):
            return planned  # already recorded: nothing is sent
        leg, request = planned
        return await self._send(leg, functools.partial(broker.replace, request), replaces=client_order_id)

    def _plan_leg(
        self,
        broker: ReplacingBroker,
        account: str,
        client_order_id: str,
        quantity: Decimal | None,
        limit_price: Decimal | None,
    ) -> OrderView | tuple[OrderRequest, ReplaceRequest]:
        """The recorded leg replacing the order, or the leg to send (runs in a worker thread)."""
        ledger = self.ledger
        current = ledger.order(account, client_order_id)
        if current is None:
            msg = f"{account}: no order {client_order_id!r} to replace"
            raise LookupError(msg)
        if current.replaced_by is not None:
            return self._existing(account, current.replaced_by)
        root, n = self._chain_root(account, current)
        leg_id = broker.replace_client_order_id(root, n)
        existing = ledger.order(account, leg_id)
        while existing is not None and existing.status is OrderStatus.REJECTED:
            # A refused leg replaced nothing, but the broker may still hold its id: take the next.
            n += 1
            leg_id = broker.replace_client_order_id(root, n)
            existing = ledger.order(account, leg_id)
        if existing is not None:
            log.info(
                "replace %s: leg %s already recorded (%s); nothing sent",
                client_order_id,
                leg_id,
                existing.status,
            )
            return existing
        if current.status.is_terminal or not current.broker_order_ids:
            msg = f"{account}: {client_order_id} is {current.status}; only a working order can be replaced"
            raise ValueError(msg)
        leg = OrderRequest(
            account=account,
            client_order_id=leg_id,
            symbol=current.symbol,
            side=current.side,
            quantity=quantity if quantity is not None else current.quantity or Decimal(0),
            limit_price=limit_price if limit_price is not None else current.limit_price,
            strategy=current.strategy,
        )
        ledger.check_new_order(account, leg.symbol, leg.side, leg.quantity, strategy=leg.strategy)
        request = ReplaceRequest(
            account=account,
            client_order_id=leg_id,
            replaces=client_order_id,
            broker_order_id=current.broker_order_ids[-1],
            symbol=leg.symbol,
            side=leg.side,
            quantity=leg.quantity,
            limit_price=leg.limit_price,
        )
        return leg, request

    async def _send(
        self,
        request: OrderRequest,
        call: Callable[[], Awaitable[SubmitAck]],
        *,
        replaces: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> OrderView:
        """Steps 2-5 of the module docstring for `request`; `call` makes the broker call.

        `call` is invoked only after the intent and SUBMITTED are stored: write-ahead.
        `check` (the gate's) runs again with the intent's write, under the books'
        `gate_lock`: two orders checked at once cannot both use one reduce-only capacity.
        """
        cid = request.client_order_id
        await in_worker_thread(self._write_ahead, request, replaces, check)
        crash_point("submit.before_broker_call")
        try:
            ack = await call()
        except SubmitRejected as e:
            return await in_worker_thread(self._record_rejection, request, e)
        except SubmitUncertain:
            log.warning("order %s: outcome unknown; will look it up, never re-send", cid)
            return await in_worker_thread(self._view, request)
        crash_point("submit.after_broker_call")
        return await in_worker_thread(self._record_ack, request, ack)

    def _write_ahead(
        self, request: OrderRequest, replaces: str | None, check: Callable[[], None] | None
    ) -> None:
        """Store the intent, then SUBMITTED (steps 2 and 3; runs in a worker thread)."""
        if check is None:
            self._intend(request, replaces)
        else:
            with self.ledger.gate_lock:
                check()
                self._intend(request, replaces)
        self.ledger.mark_submitted(request.account, request.client_order_id)

    def _intend(self, request: OrderRequest, replaces: str | None) -> None:
        self.ledger.intend(
            request.account,
            request.client_order_id,
            request.symbol,
            request.side,
            request.quantity,
            limit_price=request.limit_price,
            strategy=request.strategy,
            replaces=replaces,
        )

    def _chain_root(self, account: str, order: OrderView) -> tuple[str, int]:
        """The first leg's client id and the number the next leg gets."""
        legs = 1
        while order.replaces is not None:
            previous = self.ledger.order(account, order.replaces)
            if previous is None:  # pragma: no cover - Chained names a stored order
                break
            order, legs = previous, legs + 1
        return order.client_order_id, legs

    def _existing(self, account: str, client_order_id: str) -> OrderView:
        view = self.ledger.order(account, client_order_id)
        if view is None:  # pragma: no cover - Superseded names a stored order
            msg = f"order {client_order_id} vanished from the ledger"
            raise LookupError(msg)
        return view

    async def modify(
        self,
        account: str,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
    ) -> OrderView:
        """Change a working order's terms in place (Kite), the request stored before the call.

        `Order.AmendRequested` is stored first (write-ahead): the broker's report of the
        requested quantity then amends the order, while a quantity nobody requested raises
        QUANTITY_CHANGED and keeps ours. A failed call leaves the request standing: the
        broker may have applied it. The outcome arrives as reports.

        Returns:
            The order as stored after the request (its terms change when the broker confirms).

        Raises:
            TypeError: the broker does not modify orders in place (Alpaca: use `replace`).
            LookupError: no such order.
            ValueError: the order is closed.
            BrokerQueryError: the broker refused the modify or did not answer.
        """
        broker = self.broker
        if not isinstance(broker, ModifyingBroker):
            msg = f"broker {broker.name!r} does not modify orders in place"
            raise TypeError(msg)
        view = await in_worker_thread(
            self.ledger.request_amend, account, client_order_id, quantity=quantity, limit_price=limit_price
        )
        await broker.modify(account, client_order_id, quantity=quantity, limit_price=limit_price)
        return view

    async def cancel(self, account: str, client_order_id: str) -> None:
        """Ask the broker to cancel (cancels always pass the gate); the outcome arrives as reports."""
        order = await in_worker_thread(self.ledger.order, account, client_order_id)
        broker_id = order.broker_order_ids[-1] if order is not None and order.broker_order_ids else None
        await self.broker.cancel(account, client_order_id, broker_id)

    async def recover(self, account: str) -> RecoveryReport:
        """Resolve intents without an acknowledgement by looking them up; never re-send.

        INTENDED orders were never sent (SUBMITTED is stored before every broker call):
        they are closed. SUBMITTED orders are looked up by client id: found ones are
        booked, proven-absent ones closed; if the broker cannot be asked (whatever the
        lookup raised, a missed deadline, an answer that is not an order report), they
        stay unresolved and the caller must keep the gate closed.
        """
        ledger = self.ledger
        report = RecoveryReport()
        for order in await in_worker_thread(ledger.open_orders, account):
            cid = order.client_order_id
            if order.status is OrderStatus.INTENDED:
                reason = "intent recorded but never sent (crash before submit)"
                await in_worker_thread(ledger.abandon, account, cid, reason)
                report.abandoned.append(cid)
            elif order.status is OrderStatus.SUBMITTED:
                try:
                    looked = await look_up(ledger, self.broker, account, cid, timeout=self.timeout)
                except BrokerQueryError as e:
                    log.warning("recovery: lookup of %s failed: %s", cid, e)
                    report.unresolved.append(cid)
                    continue
                found = looked.report
                if found is None and not absence_provable(self.broker, order.submitted_at, ledger.clock()):
                    # A day-scoped broker forgets yesterday's orders: not finding one sent
                    # before today's window proves nothing (it may have filled). Stay blocked.
                    log.warning("recovery: %s sent before the broker's history window; outcome unknown", cid)
                    report.unresolved.append(cid)
                elif found is None:
                    if looked.answer is not None:  # the broker's word the order is closed on, first
                        await in_worker_thread(
                            record_lookup, ledger, looked.answer, account=account, source=self.broker.name
                        )
                    reason = "not at the broker after restart; never re-sent"
                    await in_worker_thread(ledger.abandon, account, cid, reason)
                    report.abandoned.append(cid)
                else:
                    report.found.append(cid)  # booked by the lookup
        return report

    async def _live_position(self, request: OrderRequest) -> Decimal | None:
        """The broker's position in the symbol now; None (the gate refuses) if unknown."""
        snapshot = await snapshot_or_unknown(
            self.broker, request.account, self.ledger.clock(), timeout=self.timeout
        )
        if snapshot.positions is None:
            return None  # unknown: the gate fails closed for reduce-only orders
        return sum((p.qty for p in snapshot.positions if p.symbol == request.symbol), Decimal(0))

    def _record_ack(self, request: OrderRequest, ack: SubmitAck) -> OrderView:
        """Store the acknowledgement (step 5; runs in a worker thread); the order after it."""
        report = ack.report or self._report(
            request, ack.broker_order_id, OrderStatus.PENDING_NEW, "acknowledged"
        )
        self.ledger.ingest_raw(
            ack.raw,
            lambda _raw: [report],
            account=request.account,
            source=self.broker.name,
            kind="submit_ack",
        )
        return self._view(request)

    def _record_rejection(self, request: OrderRequest, error: SubmitRejected) -> OrderView:
        """Store the broker's refusal (runs in a worker thread); the order after it."""
        report = self._report(request, None, OrderStatus.REJECTED, f"rejected: {error}")
        self.ledger.ingest_raw(
            error.raw or str(error),
            lambda _raw: [report],
            account=request.account,
            source=self.broker.name,
            kind="submit_rejected",
        )
        return self._view(request)

    def _report(
        self, request: OrderRequest, broker_order_id: str | None, status: OrderStatus, raw: str
    ) -> OrderReport:
        return OrderReport(
            account=request.account,
            client_order_id=request.client_order_id,
            broker_order_id=broker_order_id,
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            status=status,
            filled_qty=Decimal(0),
            avg_price=None,
            ts_event=self.ledger.clock(),
            raw_status=raw,
            limit_price=request.limit_price,
            source=ReportSource.BROKER,
        )

    def _view(self, request: OrderRequest) -> OrderView:
        return self._existing(request.account, request.client_order_id)


StartupReconcile = Callable[[Sequence[str]], Awaitable[Mapping[str, ReconcileResult | None]]]
"""Reconciles the accounts once; an account whose reconciliation failed maps to None."""

StartupError = Callable[[str, str, Exception], None]
"""Told (account, which step, the exception) when a startup step fails for an account."""


class StartupOutcome(msgspec.Struct):
    """What startup did for one account."""

    recovery: RecoveryReport | None
    """Unacknowledged intents found, closed or unresolved (None if recovery failed)."""
    result: ReconcileResult | None
    """The startup reconciliation, its gate the final verdict (None if it failed)."""


async def start_accounts(  # noqa: PLR0913 - the accounts and how to start them
    ledger: Books,
    broker: BrokerClient,
    accounts: Sequence[str],
    *,
    reconcile: StartupReconcile,
    on_error: StartupError | None = None,
    timeout: float = BROKER_CALL_TIMEOUT,  # noqa: ASYNC109 - each recovery lookup's deadline
) -> dict[str, StartupOutcome]:
    """Startup of accounts: gates RECONCILING, recovery, one reconciliation, the final verdict.

    1. every account's gate goes to RECONCILING first, so none trades on an old verdict
       while another is recovered;
    2. intents without an acknowledgement are looked up by client id (found: booked;
       proven absent: closed); nothing is re-sent;
    3. `reconcile` reconciles the accounts against the broker;
    4. an account with intents the broker could not be asked about stays BLOCKED, naming
       them, whatever the reconciliation found.

    Args:
        ledger: the books.
        broker: the broker the accounts are at.
        accounts: the accounts to start.
        reconcile: reconciles the accounts (step 3).
        on_error: called instead of raising when step 1 or 2 fails for an account.
        timeout: deadline in seconds of each recovery lookup.

    Returns:
        Each account's recovery and startup reconciliation.
    """
    for account in accounts:
        try:
            await in_worker_thread(ledger.begin_startup, account)
        except Exception as e:
            if on_error is None:
                raise
            on_error(account, "could not move the gate to RECONCILING", e)
    recoveries: dict[str, RecoveryReport | None] = {}
    for account in accounts:
        try:
            recoveries[account] = await Submitter(ledger, broker, timeout=timeout).recover(account)
        except Exception as e:
            if on_error is None:
                raise
            on_error(account, "recovery of unacknowledged submits failed", e)
            recoveries[account] = None
    results = await reconcile(accounts)
    outcomes = {}
    for account in accounts:
        recovery, result = recoveries[account], results.get(account)
        if recovery is not None and recovery.unresolved:
            reasons = tuple(f"submit {cid} awaiting broker lookup" for cid in recovery.unresolved)
            gate = await in_worker_thread(ledger.block, account, reasons)
            if result is not None:
                result.gate = gate  # the verdict the caller sees is the final one
        outcomes[account] = StartupOutcome(recovery=recovery, result=result)
    return outcomes


async def start_session(
    ledger: Books, broker: BrokerClient, account: str
) -> tuple[RecoveryReport, ReconcileResult]:
    """Startup of one account (see `start_accounts`); a failure of any step raises.

    Nothing is allowed before this completes; if some intents could not be looked up the
    gate stays BLOCKED naming them, whatever the reconciliation found.

    Returns:
        The recovery report and the ReconcileResult of the startup reconciliation.
    """

    async def reconcile(accounts: Sequence[str]) -> dict[str, ReconcileResult | None]:
        return {name: await reconcile_from(ledger, broker, name) for name in accounts}

    outcome = (await start_accounts(ledger, broker, [account], reconcile=reconcile))[account]
    if outcome.recovery is None or outcome.result is None:  # pragma: no cover - failures raised above
        msg = f"startup of {account} did not complete"
        raise RuntimeError(msg)
    return outcome.recovery, outcome.result


async def reconcile_from(
    ledger: Books,
    broker: BrokerClient,
    account: str,
    *,
    timeout: float = BROKER_CALL_TIMEOUT,  # noqa: ASYNC109 - the snapshot's deadline
    retakes: int = 2,
) -> ReconcileResult:
    """Ask the broker for a snapshot and reconcile it, retaken if a fill was booked meanwhile.

    The log position is read before the broker is asked (the snapshot's cut); if a
    position of the account moved in the log after it (by this process or another), the
    ledger compares no positions and the snapshot is taken again, up to `retakes` times.
    A failed, hung (`timeout` seconds) or unusable snapshot is STALE_DATA, never "flat".

    Returns:
        The last reconciliation (its `retake` still set if positions kept moving).
    """
    for attempt in range(retakes + 1):
        cut = await in_worker_thread(ledger.last_position)
        snapshot = await snapshot_or_unknown(broker, account, ledger.clock(), timeout=timeout)
        result = await in_worker_thread(functools.partial(ledger.reconcile, snapshot, cut=cut))
        if not result.retake or attempt == retakes:
            break
        log.info("a position of %s moved after its snapshot was asked for; retaking it", account)
    return result
