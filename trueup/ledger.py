"""`trueup.Ledger`: the embeddable facade over the log, the rules and the read models."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self
from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, PersistenceError

from trueup.adapters.base import BrokerClient, OrderRequest
from trueup.adapters.eventstore.log import LoggedEvent as LoggedEvent  # noqa: PLC0414 - a public re-export
from trueup.adapters.eventstore.log import read_log
from trueup.adapters.eventstore.store import Store, open_store, project_events, redact, resolve_store_url
from trueup.domain import ids
from trueup.domain.discrepancy import Discrepancy, DiscrepancyKind, Finding, Severity
from trueup.domain.errors import ConflictError, InvalidReport, StoreError
from trueup.domain.gate import gate_id
from trueup.domain.ids import discrepancy_id, external_client_order_id
from trueup.domain.messages import BrokerMessage, BrokerOrderLink
from trueup.domain.order import Order, OrderState
from trueup.domain.position import Position, PositionState, position_legs
from trueup.domain.reconcile import PositionPolicy, quarantine_scope
from trueup.domain.reports import (
    REPORT_ENCODER,
    BrokerSnapshot,
    FillReport,
    OrderReport,
    PositionReport,
    Report,
)
from trueup.domain.rules import Outcome, decide_fill, decide_order_report
from trueup.domain.status import OrderStatus, Side
from trueup.domain.views import DiscrepancyView, OrderView, PositionView
from trueup.faults import crash_point
from trueup.gatekeeping import GateKeeping
from trueup.projections.projector import Projector
from trueup.projections.replay import AsOf, replay
from trueup.reconciler import Reconciler, ReconcileResult
from trueup.subscriptions import Subscription, subscribe

log = logging.getLogger(__name__)

# The same few ids are derived again and again (every report of an order names it, its
# link and its position): uuid5 hashes each time, so remember the recent ones.
order_id = functools.lru_cache(maxsize=65_536)(ids.order_id)
position_id = functools.lru_cache(maxsize=65_536)(ids.position_id)
broker_link_id = functools.lru_cache(maxsize=65_536)(ids.broker_link_id)

MAX_ATTEMPTS = 12
"""Reload-and-retry rounds when another writer touched the same aggregates first."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


class _Batch:
    """Aggregates loaded and changed while one ingest call is applied, and its events in order."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.aggregates: dict[UUID, Aggregate | None] = {}
        self.events: list[DomainEventProtocol[UUID]] = []
        self.raised: set[UUID] = set()

    def get(self, ident: UUID) -> Any:  # noqa: ANN401 - Order, Position, link or None
        if ident not in self.aggregates:
            try:
                self.aggregates[ident] = self.ledger.store.aggregate(ident)
            except AggregateNotFoundError:
                self.aggregates[ident] = None
        return self.aggregates[ident]

    def prefetch(self, idents: Iterable[UUID]) -> None:
        """Load many aggregates with short histories (orders, broker-id links) in one read.

        Each would otherwise cost one repository read: a pooled transaction, a query and a
        deep copy of the cached aggregate, most of an ingest batch's time. They are rebuilt
        from their events, as the repository does on a cache miss; an aggregate absent from
        the log is None, as `get` records it. A writer that gets in before our save is
        caught by optimistic concurrency, as with the repository.
        """
        wanted = sorted({i for i in idents if i not in self.aggregates}, key=str)
        if not wanted:
            return
        store = self.ledger.store
        try:
            stored = store.stored_events(wanted)
        except PersistenceError as e:
            raise _store_error(e) from e
        mapper = store.app.mapper
        for ident in wanted:
            events = stored.get(ident)
            self.aggregates[ident] = (
                project_events(None, (mapper.to_domain_event(e) for e in events)) if events else None
            )

    def add(self, aggregate: Aggregate) -> None:
        self.aggregates[aggregate.id] = aggregate

    def positions(self, account: str) -> list[Position]:
        """Positions of `account` loaded or created in this batch."""
        return [a for a in self.aggregates.values() if isinstance(a, Position) and a.state.account == account]

    def collect(self, *aggregates: Aggregate | None) -> None:
        """Move pending events into the batch, in the order given (evidence first)."""
        for aggregate in aggregates:
            if aggregate is not None:
                self.events.extend(aggregate.collect_events())


class Ledger(GateKeeping):
    """The books: orders, fills and positions as the broker reports them, with every discrepancy.

    Open with `Ledger.open(store)`; close with `close()` or use it as a context manager.
    Methods are thread-safe in the sense of the event store: concurrent writers to the
    same order are serialized by optimistic concurrency with reload-and-retry.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utc_now,
        policies: Mapping[str, PositionPolicy] | None = None,
        lost_after: int = 3,
        max_snapshot_age: float = 60.0,
    ) -> None:
        """Wrap an open store; prefer `Ledger.open`."""
        self.store = store
        self.clock = clock
        self.policies = dict(policies or {})
        self.lost_after = lost_after
        self.max_snapshot_age = max_snapshot_age
        self.projector = Projector(store)
        self.reconciler = Reconciler(self)
        self._open_states: dict[str, dict[str, tuple[int, OrderState]]] = {}
        """Decoded open-order states by account and client id, with their row's log position."""
        self._open_lists: dict[str, tuple[int, list[OrderState]]] = {}
        """The last open-order list by account, with the tracking position it was read at."""

    @classmethod
    def open(
        cls,
        store: str | None = None,
        *,
        clock: Clock = utc_now,
        policies: Mapping[str, PositionPolicy] | None = None,
        lost_after: int = 3,
        max_snapshot_age: float = 60.0,
    ) -> Self:
        """Open a ledger on a store URL.

        Args:
            store: ``sqlite:///path.db``, ``postgresql://...`` or ``memory://``; defaults
                to ``TRUEUP_STORE`` or ``sqlite:///trueup.db``.
            clock: source of "now" (tz-aware UTC); tests pass a fixed clock.
            policies: position policy per account (default `repair`).
            lost_after: complete snapshots an open order may be missing from before LOST.
            max_snapshot_age: seconds after which a snapshot is STALE_DATA.

        Returns:
            The ledger, with its read models caught up.

        Raises:
            ConfigError: the URL is malformed.
            StoreError: the store cannot be opened.
        """
        ledger = cls(
            open_store(resolve_store_url(store)),
            clock=clock,
            policies=policies,
            lost_after=lost_after,
            max_snapshot_age=max_snapshot_age,
        )
        ledger.projector.catch_up()
        return ledger

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()

    def __enter__(self) -> Self:
        """Use as a context manager."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on exit."""
        self.close()

    def __repr__(self) -> str:
        """Name the store, never its password."""
        return f"Ledger({redact(self.store.config.url)!r})"

    # -- writing -------------------------------------------------------------------------

    def intend(  # noqa: PLR0913 - the terms of an order
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side | str,
        quantity: Decimal,
        *,
        limit_price: Decimal | None = None,
        strategy: str | None = None,
        replaces: str | None = None,
    ) -> OrderView:
        """Record the intent to place an order, before anything is sent (write-ahead).

        Recording the same client order id again returns the existing order unchanged.

        Args:
            account: broker account.
            client_order_id: our id; it travels to the broker in its own field.
            symbol: normalized instrument symbol.
            side: BUY or SELL.
            quantity: order quantity (> 0).
            limit_price: limit price, None for market orders.
            strategy: owning strategy, used for quarantine scopes.
            replaces: our client id of the working order this one replaces (a replace leg).

        Returns:
            The order as recorded.

        Raises:
            InvalidReport: a term is malformed (named in the message).
        """
        side = Side(side)
        _require_decimal("quantity", quantity, positive=True)
        if limit_price is not None:
            _require_decimal("limit_price", limit_price, positive=True)
        for attempt in range(MAX_ATTEMPTS):
            existing = self._get(order_id(account, client_order_id))
            if existing is not None:
                return existing.state.view()  # type: ignore[no-any-return]
            order = Order.intend(
                account=account,
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                quantity=quantity,
                limit_price=limit_price,
                strategy=strategy,
                ts=self.clock(),
            )
            if replaces is not None:
                order.trigger_event(Order.Chained, replaces=replaces)
            try:
                self.store.app.save(order)
            except IntegrityError:
                log.debug("intend %s raced another writer (attempt %d)", client_order_id, attempt)
                _backoff(attempt)
                continue
            except PersistenceError as e:
                raise _store_error(e) from e
            return order.state.view()
        raise ConflictError(_conflict_message("intend", client_order_id))

    def ingest(self, reports: Report | Iterable[Report]) -> list[DomainEventProtocol[UUID]]:
        """Apply broker reports through the rules, all in one transaction.

        Each report is stored in the raw log before the events it causes. A report the
        rules refuse (overfill, conflicting terminal, unknown status, wrong symbol)
        changes nothing but a DISCREPANCY; nothing here raises on bad input.

        Args:
            reports: one report or many (OrderReport, FillReport, PositionReport).

        Returns:
            The domain events stored (order, position and discrepancy events).
        """
        items: list[Report] = (
            [reports] if isinstance(reports, OrderReport | FillReport | PositionReport) else list(reports)
        )

        def apply(batch: _Batch) -> None:
            batch.prefetch(_order_and_link_ids(items))
            for report in items:
                self._ingest_report(batch, report)

        return self._commit(apply)

    def ingest_raw(
        self,
        payload: str,
        translate: Callable[[str], Sequence[Report]],
        *,
        account: str,
        source: str,
        kind: str,
    ) -> list[DomainEventProtocol[UUID]]:
        """Store a broker payload verbatim, translate it, and apply what it says.

        A payload that fails translation is kept and raises an INVALID_REPORT
        discrepancy naming the error; it is never dropped.

        Args:
            payload: the payload exactly as received.
            translate: the adapter's pure translator (payload -> reports).
            account: the account the payload concerns ("" if unknown).
            source: adapter name, e.g. "alpaca".
            kind: channel or endpoint, e.g. "trade_updates".

        Returns:
            The domain events stored.
        """

        def apply(batch: _Batch) -> None:
            message = self._record_message(batch, account=account, source=source, kind=kind, payload=payload)
            try:
                reports = list(translate(payload))
            except Exception as e:  # noqa: BLE001 - any failure to read a payload keeps it and says why
                finding = Finding(
                    DiscrepancyKind.INVALID_REPORT,
                    account or source,
                    f"a readable {source} {kind} payload",
                    f"{type(e).__name__}: {e}",
                    f"payload kept in the raw log but not applied: {e}",
                )
                self._raise(batch, account or "", [finding], message.id)
                return
            for report in reports:
                self._apply_report(batch, report, message.id)

        return self._commit(apply)

    def _commit(self, apply: Callable[[_Batch], object]) -> list[DomainEventProtocol[UUID]]:
        """Run `apply` on a fresh batch and save its events in one transaction, retrying conflicts."""
        for attempt in range(MAX_ATTEMPTS):
            batch = _Batch(self)
            apply(batch)
            if not batch.events:
                return []
            crash_point("ingest.mid_batch")
            try:
                # The events are already collected in causal order (evidence first):
                # put them straight into the event store, one transaction.
                self.store.app.events.put(batch.events)
            except IntegrityError:
                # Another writer saved events for one of these aggregates first: reload and
                # redo, after a jittered pause so two writers do not keep colliding.
                log.debug("ingest raced another writer (attempt %d); retrying", attempt)
                _backoff(attempt)
                continue
            except PersistenceError as e:
                raise _store_error(e) from e
            # Read models catch up when read (every reader calls catch_up first), so a
            # write costs one transaction, not two.
            return [e for e in batch.events if not isinstance(e, BrokerMessage.Event)]
        raise ConflictError(_conflict_message("ingest", f"{len(batch.events)} events"))

    def _record_message(
        self, batch: _Batch, *, account: str, source: str, kind: str, payload: str
    ) -> BrokerMessage:
        message = BrokerMessage._create(
            BrokerMessage.Received,
            id=uuid4(),
            account=account,
            source=source,
            kind=kind,
            payload=payload,
            ts_received=self.clock(),
        )
        batch.collect(message)
        return message

    def _ingest_report(self, batch: _Batch, report: Report) -> None:
        kind = type(report).__struct_config__.tag
        message = self._record_message(
            batch,
            account=report.account,
            source="report",
            kind=str(kind),
            payload=REPORT_ENCODER.encode(report).decode(),
        )
        self._apply_report(batch, report, message.id)

    def _apply_report(self, batch: _Batch, report: Report, evidence: UUID) -> None:
        if isinstance(report, PositionReport):
            # A streamed position is evidence only: it races fills in flight, so only
            # reconciliation against a whole snapshot compares positions.
            return
        order, findings = self._resolve_order(batch, report)
        before = (order.state.filled_qty, order.state.fill_cost)
        try:
            if isinstance(report, OrderReport):
                outcome = decide_order_report(order.state, report)
            else:
                outcome = decide_fill(order.state, report)
        except Exception as e:  # a rule bug must not lose the report: record it, go on
            log.exception("rules failed on %r", report)
            outcome = Outcome()
            outcome.find(
                DiscrepancyKind.INVALID_REPORT,
                order.state.client_order_id,
                "a report the rules can apply",
                f"{type(e).__name__}: {e}",
                "internal error while applying the report; report kept, order unchanged",
            )
        was_open = not order.state.status.is_terminal
        order.record(outcome.changes)
        position = self._move_position(batch, order, before, report)
        link = self._link(batch, order, report)
        predecessor = self._chain(batch, order, report)
        batch.collect(order, link, position, predecessor)
        self._raise(batch, report.account, [*findings, *outcome.findings], evidence)
        # (after raising: an orphan first seen already done is resolved at once)
        if was_open and order.state.origin == "broker" and order.state.status.is_terminal:
            # An orphan order that is done risks nothing more: lift its quarantine.
            orphan = batch.get(
                discrepancy_id(
                    DiscrepancyKind.ORPHAN_ORDER, report.account, order.state.client_order_id, "orphan"
                )
            )
            if orphan is not None and orphan.resolution is None:
                orphan.resolve(f"orphan order {order.state.status} at the broker", "reconciler", self.clock())
                batch.collect(orphan)

    def _client_order_id_of(self, batch: _Batch, report: OrderReport | FillReport) -> str:
        """The client order id a report belongs to: by broker-id link first, then its own."""
        if report.broker_order_id:
            link = batch.get(broker_link_id(report.account, report.broker_order_id))
            if link is not None:
                return str(link.client_order_id)
        return report.client_order_id or external_client_order_id(str(report.broker_order_id))

    def _resolve_order(self, batch: _Batch, report: OrderReport | FillReport) -> tuple[Order, list[Finding]]:
        """Find the order a report names (by broker-id link, then client id), or start one."""
        findings: list[Finding] = []
        account = report.account
        client_order_id = self._client_order_id_of(batch, report)
        if report.client_order_id and report.client_order_id != client_order_id:
            findings.append(
                Finding(
                    DiscrepancyKind.INVALID_REPORT,
                    report.client_order_id,
                    client_order_id,
                    report.client_order_id,
                    f"broker order {report.broker_order_id} is linked to "
                    f"{client_order_id}; report applied to that order",
                )
            )
        order = batch.get(order_id(account, client_order_id))
        if order is None:
            quantity = report.quantity if isinstance(report, OrderReport) else None
            limit = report.limit_price if isinstance(report, OrderReport) else None
            order = Order.discover(
                account=account,
                client_order_id=client_order_id,
                symbol=report.symbol,
                side=report.side,
                quantity=quantity,
                limit_price=limit,
                ts=report.ts_event,
            )
            batch.add(order)
            if self._predecessor(batch, report) is not None:
                return order, findings  # a replace leg of one of ours: not an orphan
            gate = batch.get(gate_id(account))
            scope = quarantine_scope(report.symbol, gate.claims.get(report.symbol) if gate else None)
            findings.append(
                Finding(
                    DiscrepancyKind.ORPHAN_ORDER,
                    client_order_id,
                    "an order we recorded",
                    f"{report.side} {report.symbol} broker id {report.broker_order_id}",
                    f"broker reported an order we never sent; tracked from now on, {scope} quarantined",
                    scope=scope,
                )
            )
        return order, findings

    def _predecessor(self, batch: _Batch, report: OrderReport | FillReport) -> Order | None:
        """The order a replace leg continues: the one linked to the broker id it `replaces`."""
        if not isinstance(report, OrderReport) or not report.replaces:
            return None
        link = batch.get(broker_link_id(report.account, report.replaces))
        if link is None:
            return None
        return batch.get(order_id(report.account, str(link.client_order_id)))  # type: ignore[no-any-return]

    def _chain(self, batch: _Batch, order: Order, report: OrderReport | FillReport) -> Order | None:
        """Link a replace leg to the order it continues, both ways, once the broker confirms it.

        Alpaca gives a replacement its own order id (and our fresh client id); each leg is an
        order here, `replaces` / `replaced_by` name the chain. A leg the broker rejected
        replaced nothing, so its predecessor is not marked.
        """
        predecessor = self._predecessor(batch, report)
        if predecessor is None or predecessor is order:
            return None
        if order.state.replaces is None:
            order.trigger_event(Order.Chained, replaces=predecessor.state.client_order_id)
        if predecessor.state.replaced_by is not None or order.state.status is OrderStatus.REJECTED:
            return None
        predecessor.trigger_event(Order.Superseded, replaced_by=order.state.client_order_id)
        return predecessor

    def _link(self, batch: _Batch, order: Order, report: OrderReport | FillReport) -> BrokerOrderLink | None:
        broker_id = report.broker_order_id
        if not broker_id:
            return None
        ident = broker_link_id(report.account, broker_id)
        if batch.get(ident) is not None:
            return None
        link = BrokerOrderLink._create(
            BrokerOrderLink.Linked,
            id=ident,
            account=report.account,
            broker_order_id=broker_id,
            client_order_id=order.state.client_order_id,
        )
        batch.add(link)
        return link

    def _move_position(
        self, batch: _Batch, order: Order, before: tuple[Decimal, Decimal], report: OrderReport | FillReport
    ) -> Position | None:
        state = order.state
        after = (state.filled_qty, state.fill_cost)
        if after == before:
            return None
        price = report.price if isinstance(report, FillReport) else (state.inferred_price or Decimal(0))
        legs = position_legs(state.side, before, after, price)
        if not legs:
            return None
        ident = position_id(state.account, state.symbol)
        position = batch.get(ident)
        if position is None:
            position = Position.open(state.account, state.symbol)
            batch.add(position)
        position.trigger_event(
            Position.Changed,
            client_order_id=state.client_order_id,
            side=state.side,
            legs=tuple(legs),
            ts_event=report.ts_event,
        )
        return position  # type: ignore[no-any-return]

    def _raise(
        self, batch: _Batch, account: str, findings: Sequence[Finding], evidence: UUID | None
    ) -> list[Discrepancy]:
        """Store findings as discrepancies (one per kind, subject and evidence); return them."""
        raised = []
        for finding in findings:
            # An orphan order is one discrepancy however often it is reported, so that its
            # quarantine is lifted by resolving one thing.
            orphan = finding.kind is DiscrepancyKind.ORPHAN_ORDER
            proof = "orphan" if orphan else f"{evidence}|{finding.detail}"
            ident = discrepancy_id(finding.kind, account, finding.key, proof)
            # The same finding on the same evidence is one discrepancy: raising it again
            # (a repeated report, a retried batch) stores nothing.
            if ident in batch.raised or batch.get(ident) is not None:
                continue
            batch.raised.add(ident)
            log.warning("%s %s %s: %s", finding.level, finding.kind, finding.key, finding.detail)
            discrepancy = Discrepancy._create(
                Discrepancy.Raised,
                id=ident,
                kind=finding.kind.value,
                severity=finding.level.value,
                account=account,
                key=finding.key,
                expected=finding.expected,
                actual=finding.actual,
                detail=finding.detail,
                evidence_id=evidence,
                ts_detected=self.clock(),
                scope=finding.scope,
            )
            batch.add(discrepancy)
            batch.collect(discrepancy)
            raised.append(discrepancy)
        return raised

    # -- submission -------------------------------------------------------------------------

    def submit(self, request: OrderRequest, broker: BrokerClient) -> OrderView:
        """Send a new order crash-safely from synchronous code (see `trueup.submission`).

        Write-ahead intent and SUBMITTED, one broker call carrying the client id, then
        the acknowledgement and broker id. An existing client id returns the existing
        order and sends nothing. From async code use `submit_async`.

        Raises:
            InvalidReport: the client id does not fit every broker's field.
            NotReadyError: the gate refuses new orders (state, lock or quarantine).
        """
        return asyncio.run(self.submit_async(request, broker))

    async def submit_async(self, request: OrderRequest, broker: BrokerClient) -> OrderView:
        """The async equivalent of `submit`, for event loops (the service, async brokers)."""
        from trueup.submission import Submitter  # noqa: PLC0415 - submission builds on Ledger

        return await Submitter(self, broker).submit(request)

    def mark_submitted(self, account: str, client_order_id: str) -> OrderView:
        """Store SUBMITTED for an intended order, just before it is sent (write-ahead)."""

        def apply(batch: _Batch) -> None:
            order = self._existing_order(batch, account, client_order_id)
            if order.state.status is OrderStatus.INTENDED:
                order.trigger_event(Order.Submitted, ts_submitted=self.clock())
                batch.collect(order)

        self._commit(apply)
        return self._view(account, client_order_id)

    def abandon(self, account: str, client_order_id: str, reason: str) -> OrderView:
        """Close an order the broker proved it does not have (recovery); nothing is re-sent."""
        open_views = self.discrepancies(account)

        def apply(batch: _Batch) -> None:
            order = self._existing_order(batch, account, client_order_id)
            status = order.state.status
            if status.rank > OrderStatus.SUBMITTED.rank:
                return  # the broker answered meanwhile: nothing to close
            order.trigger_event(Order.Abandoned, reason=reason)
            batch.collect(order)
            finding = Finding(
                DiscrepancyKind.MISSING_AT_BROKER,
                client_order_id,
                f"the {status} order at the broker",
                "not at the broker",
                f"closed here as never placed ({reason}); nothing re-sent",
                Severity.INFO,
            )
            for discrepancy in self._raise(batch, account, [finding], None):
                discrepancy.resolve("closed as never placed", "recovery", self.clock())
                batch.collect(discrepancy)
            # Closed for a known reason: it is no longer missing or lost.
            for view in open_views:
                if view.key == client_order_id and view.kind in {"MISSING_AT_BROKER", "LOST"}:
                    aggregate = batch.get(view.id)
                    aggregate.resolve(f"closed: {reason}", "recovery", self.clock())
                    batch.collect(aggregate)

        self._commit(apply)
        return self._view(account, client_order_id)

    def _existing_order(self, batch: _Batch, account: str, client_order_id: str) -> Order:
        order = batch.get(order_id(account, client_order_id))
        if order is None:
            msg = f"{account}: no order {client_order_id!r}; record it with intend() first"
            raise LookupError(msg)
        return order  # type: ignore[no-any-return]

    def _view(self, account: str, client_order_id: str) -> OrderView:
        view = self.order(account, client_order_id)
        if view is None:
            msg = f"{account}: no order {client_order_id!r}"
            raise LookupError(msg)
        return view

    # -- reconciliation and the gate --------------------------------------------------------

    def reconcile(
        self, snapshot: BrokerSnapshot, *, policy: PositionPolicy | str | None = None
    ) -> ReconcileResult:
        """Compare the books with a broker snapshot and store what it proves.

        Stores ORDER_UPDATED (`Order.Updated`, after the derived lifecycle events),
        POSITION_SYNCED (`Position.Synced`) and DISCREPANCY (`Discrepancy.Raised`) events,
        then moves the account's gate to READY or BLOCKED. A part of the snapshot that
        is None is STALE_DATA: nothing is concluded from it, never "flat" or "missing".

        Args:
            snapshot: what the broker said, as of `snapshot.as_of`.
            policy: position policy for this run; default the account's (`repair`).

        Returns:
            What was stored, and the gate after it.
        """
        chosen = PositionPolicy(policy or self.policies.get(snapshot.account, PositionPolicy.REPAIR))
        return self.reconciler.reconcile(
            snapshot, policy=chosen, max_age_seconds=self.max_snapshot_age, lost_after=self.lost_after
        )

    def _open_order_states(self, account: str) -> list[OrderState]:
        """Read-model states of the account's open orders, oldest first (read-only objects).

        Decoded states are kept between calls and re-read only for rows whose log position
        moved, so a periodic reconciliation of unchanged books decodes nothing.
        """
        self.projector.catch_up()
        # The tables are a function of the log up to the tracking position: if it has not
        # moved since the last call, neither has any row (the steady state of a periodic
        # reconciliation that finds nothing, which stores nothing).
        tracked = self.projector.position()
        listed = self._open_lists.get(account)
        if listed is not None and listed[0] == tracked:
            return listed[1]
        rows = self.projector.tuples(
            "SELECT client_order_id, position FROM {trueup_orders} "
            "WHERE account = ? AND is_open = 1 ORDER BY position",
            [account],
        )
        cached = self._open_states.get(account, {})
        fresh: dict[str, tuple[int, OrderState]] = {}
        changed = set()
        for cid, position in rows:
            entry = cached.get(cid)
            if entry is not None and entry[0] == position:
                fresh[cid] = entry
            else:
                changed.add(cid)
        for state, position in self._states_by_id(account, changed):
            fresh[state.client_order_id] = (position, state)
        self._open_states[account] = fresh  # replaced whole: readers in other threads see one or the other
        states = [entry[1] for cid, _ in rows if (entry := fresh.get(cid)) is not None]
        if self.projector.position() == tracked:  # no writer moved the tables while we read
            self._open_lists[account] = (tracked, states)
        return states

    def _states_by_id(self, account: str, client_order_ids: set[str]) -> Iterator[tuple[OrderState, int]]:
        """Read-model states (with their row's log position) of the named orders."""
        wanted = sorted(client_order_ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self.projector.tuples(
                f"SELECT state, position FROM {{trueup_orders}} "  # noqa: S608
                f"WHERE account = ? AND client_order_id IN ({marks})",
                [account, *chunk],
            )
            for state, position in rows:
                yield _ORDER_STATE.decode(state), int(position)

    def _order_states(self, account: str, client_order_ids: set[str]) -> dict[str, OrderState]:
        """Read-model states of the account's open orders and of the named orders."""
        states = {s.client_order_id: s for s in self._open_order_states(account)}
        for state, _ in self._states_by_id(account, client_order_ids - states.keys()):
            states[state.client_order_id] = state
        return states

    def _position_states(self, account: str) -> list[PositionState]:
        self.projector.catch_up()
        rows = self.projector.tuples("SELECT state FROM {trueup_positions} WHERE account = ?", [account])
        return [_POSITION_STATE.decode(state) for (state,) in rows]

    # -- reading -------------------------------------------------------------------------

    def _get(self, ident: UUID) -> Any:  # noqa: ANN401 - any aggregate or None
        try:
            return self.store.aggregate(ident)
        except AggregateNotFoundError:
            return None
        except PersistenceError as e:
            raise _store_error(e) from e

    def order(self, account: str, client_order_id: str) -> OrderView | None:
        """The order as the log has it now, or None if unknown."""
        order = self._get(order_id(account, client_order_id))
        return None if order is None else order.state.view()

    def open_orders(self, account: str | None = None) -> list[OrderView]:
        """Orders that may still trade, oldest first."""
        return self._orders(account, open_only=True)

    def all_orders(self, account: str | None = None) -> list[OrderView]:
        """Every order, open and closed, oldest first."""
        return self._orders(account, open_only=False)

    def _orders(self, account: str | None, *, open_only: bool) -> list[OrderView]:
        self.projector.catch_up()
        clauses = (["is_open = 1"] if open_only else []) + (["account = ?"] if account else [])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.projector.rows(
            f"SELECT state FROM {{trueup_orders}} {where} ORDER BY position",  # noqa: S608
            [account] if account else [],
        )
        return [_ORDER_STATE.decode(row["state"]).view() for row in rows]

    def positions(self, account: str | None = None, *, include_flat: bool = False) -> list[PositionView]:
        """Net positions by account and symbol (flat ones only if asked)."""
        self.projector.catch_up()
        where, params = ("WHERE account = ?", [account]) if account else ("", [])
        rows = self.projector.rows(
            f"SELECT state FROM {{trueup_positions}} {where} ORDER BY account, symbol",  # noqa: S608
            params,
        )
        views = (_POSITION_STATE.decode(row["state"]).view() for row in rows)
        return [v for v in views if include_flat or v.qty != 0]

    def discrepancies(
        self, account: str | None = None, *, include_resolved: bool = False
    ) -> list[DiscrepancyView]:
        """Recorded discrepancies, in log order (open ones unless asked)."""
        self.projector.catch_up()
        clauses, params = [], []
        if account:
            clauses.append("account = ?")
            params.append(account)
        if not include_resolved:
            clauses.append("resolution IS NULL")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.projector.rows(
            f"SELECT * FROM {{trueup_discrepancies}} {where} ORDER BY position",  # noqa: S608
            params,
        )
        return [
            DiscrepancyView(
                id=UUID(str(row["id"])),
                kind=row["kind"],
                severity=row["severity"],
                account=row["account"],
                key=row["subject"],
                expected=row["expected"],
                actual=row["actual"],
                detail=row["detail"],
                evidence_id=UUID(str(row["evidence_id"])) if row["evidence_id"] else None,
                evidence_position=row["evidence_position"],
                position=row["position"],
                ts_detected=datetime.fromisoformat(row["ts_detected"]),
                resolution=row["resolution"],
                scope=row["scope"],
            )
            for row in rows
        ]

    def last_position(self) -> int:
        """Position of the last stored event (0 for an empty log)."""
        return self.store.app.recorder.max_notification_id() or 0

    def accounts(self) -> list[str]:
        """Accounts that have orders, positions or a gate."""
        self.projector.catch_up()
        rows = self.projector.rows(
            "SELECT account FROM {trueup_orders} UNION SELECT account FROM {trueup_positions} "
            "UNION SELECT account FROM {trueup_discrepancies} ORDER BY account"
        )
        return [str(row["account"]) for row in rows if row["account"]]

    def service_status(self) -> dict[str, Any]:
        """Counters the reconciliation service last saved (empty if none ran on this store)."""
        return self.projector.service_status()

    def subscribe(self, handler: Callable[[LoggedEvent], object], from_position: int = 0) -> Subscription:
        """Call `handler` with every event after `from_position`, in log order, in a thread.

        PostgreSQL delivers by LISTEN/NOTIFY, SQLite by a polling follower. A handler that
        raises sees the same event again after a backoff; nothing is skipped. For a saved
        position that survives a crash use `trueup.subscriptions.SavedPositionConsumer`.

        Returns:
            The running subscription (a context manager; `stop()` ends it).
        """
        return subscribe(self, handler, from_position)

    def as_of(self, until: datetime | int) -> AsOf:
        """The books as they stood at a log position (inclusive) or time: an audit replay."""
        return replay(self.events(until=until))

    def events(self, after: int = 0, until: datetime | int | None = None) -> Iterator[LoggedEvent]:
        """Stream the stored log in order, page by page (never the whole log in memory).

        Args:
            after: start after this log position (0 = from the beginning).
            until: stop at this log position (int, inclusive) or at the first event
                recorded after this time (datetime).

        Yields:
            Each stored event with its position and topic.
        """
        yield from read_log(self.store, after, until)


_ORDER_STATE = msgspec.json.Decoder(OrderState)
_POSITION_STATE = msgspec.json.Decoder(PositionState)


def _order_and_link_ids(reports: Iterable[Report]) -> Iterator[UUID]:
    """Ids of the orders and broker-id links the reports name."""
    for report in reports:
        if isinstance(report, PositionReport):
            continue
        if report.broker_order_id:
            yield broker_link_id(report.account, report.broker_order_id)
        if report.client_order_id:
            yield order_id(report.account, report.client_order_id)


def _require_decimal(name: str, value: object, *, positive: bool = False) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or (positive and value <= 0):
        msg = f"{name} must be a finite{' positive' if positive else ''} Decimal, got {value!r}"
        raise InvalidReport(msg, field=name)


def _backoff(attempt: int) -> None:
    # Full jitter, growing fast to a 1 s cap: a writer whose read-modify-write is slower than
    # a competitor's commit interval (a loaded machine) must get a window, not starve.
    time.sleep(random.uniform(0, min(1.0, 0.001 * 4**attempt)))  # noqa: S311 - jitter, not secrecy


def _store_error(error: PersistenceError) -> StoreError:
    return StoreError(f"event store failed: {type(error).__name__}: {error}")


def _conflict_message(what: str, subject: str) -> str:
    return f"{what} of {subject} still conflicted after {MAX_ATTEMPTS} reload-and-retry rounds"
