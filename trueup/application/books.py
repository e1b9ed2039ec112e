"""`Books`: the documented Ledger calls that only touch the store, each a one-line use case.

`trueup.Ledger` is `Books` plus the calls that reach a broker or a thread (submit,
subscribe). The submitter and the service are typed on `Books`, so they build on the
books without importing the facade that builds on them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol

from trueup.adapters.eventstore.log import LoggedEvent, read_log
from trueup.adapters.eventstore.store import Store
from trueup.application import booking, orders, resolutions
from trueup.application.evidence import MATCH_EVERY_SECONDS
from trueup.application.gatekeeping import GateKeeping
from trueup.application.reconciler import Reconciler, ReconcileResult
from trueup.application.unit_of_work import Clock, Writer, load, order_id, utc_now
from trueup.domain.discrepancy import LostOutcome
from trueup.domain.gate import GateState
from trueup.domain.reconcile import PositionPolicy
from trueup.domain.reports import BrokerSnapshot, OrderReport, Report
from trueup.domain.status import Side
from trueup.domain.views import DiscrepancyView, OrderView, PositionView
from trueup.projections.projector import Projector
from trueup.projections.queries import Queries
from trueup.projections.replay import AsOf, replay


class Books(GateKeeping):
    """The books: orders, fills and positions as the broker reports them, with every discrepancy.

    Methods are thread-safe in the sense of the event store: concurrent writers to the
    same order are serialized by optimistic concurrency with reload-and-retry.
    """

    def __init__(  # noqa: PLR0913 - the store, then keyword-only settings
        self,
        store: Store,
        *,
        clock: Clock = utc_now,
        policies: Mapping[str, PositionPolicy] | None = None,
        lost_after: int = 3,
        max_snapshot_age: float = 60.0,
        match_every: float = MATCH_EVERY_SECONDS,
        closed_order_retention: float | None = None,
    ) -> None:
        """Wrap an open store; prefer `Ledger.open` (which documents the settings).

        Raises:
            ConfigError: `match_every` is negative or not finite.
        """
        self.store = store
        self.clock = clock
        self.policies = dict(policies or {})
        self.lost_after = lost_after
        self.max_snapshot_age = max_snapshot_age
        self.closed_order_retention = closed_order_retention
        self.projector = Projector(store)
        self.queries = Queries(self.projector)
        self.writer = Writer(
            store, clock, lambda account: self.queries.discrepancies(account, acknowledged=True)
        )
        self.reconciler = Reconciler(self.writer, self.queries, match_every=match_every)
        self.gate_lock = threading.Lock()
        """Held by the submitter from a gate check to the intent it allows (reduce-only capacity)."""

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
        return orders.intend(
            self.writer,
            account,
            client_order_id,
            symbol,
            side,
            quantity,
            limit_price=limit_price,
            strategy=strategy,
            replaces=replaces,
        )

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
        return booking.ingest(self.writer, reports)

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
        return booking.ingest_raw(self.writer, payload, translate, account=account, source=source, kind=kind)

    def mark_submitted(self, account: str, client_order_id: str) -> OrderView:
        """Store SUBMITTED for an intended order, just before it is sent (write-ahead)."""
        return orders.mark_submitted(self.writer, account, client_order_id)

    def request_amend(
        self,
        account: str,
        client_order_id: str,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        by: str = "",
    ) -> OrderView:
        """Store the terms a modify is about to ask of the broker, before the call (write-ahead).

        A later report with the requested quantity is the broker confirming it; any other
        change of quantity raises QUANTITY_CHANGED and keeps ours (docs/rules.md).

        Raises:
            InvalidReport: no term given, or a term is malformed.
            LookupError: no such order.
            ValueError: the order is closed.
        """
        return orders.request_amend(
            self.writer, account, client_order_id, quantity=quantity, limit_price=limit_price, by=by
        )

    def abandon(self, account: str, client_order_id: str, reason: str) -> OrderView:
        """Close an order the broker proved it does not have (recovery); nothing is re-sent."""
        return orders.abandon(self.writer, account, client_order_id, reason)

    def declare_lost(
        self, account: str, client_order_id: str, *, not_found: int, failed: int
    ) -> list[DomainEventProtocol[UUID]]:
        """Raise LOST for an in-flight order never confirmed by lookups, and lock its symbol.

        One transaction; nothing is re-sent, cancelled or closed (the order may exist at
        the broker). Stores nothing if a report moved the order out of flight meanwhile.

        Args:
            account: broker account.
            client_order_id: the in-flight order.
            not_found: lookups the broker answered without the order (at least 1).
            failed: lookups that failed (absence unknown): named, never counted.

        Returns:
            The events stored (none if the order is no longer in flight).
        """
        return orders.declare_lost(
            self.writer,
            account,
            client_order_id,
            not_found=not_found,
            failed=failed,
            detected=self.clock(),
        )

    def resolve_lost(  # noqa: PLR0913 - the order, the outcome, who and why, and what was found
        self,
        account: str,
        client_order_id: str,
        *,
        outcome: LostOutcome | str,
        by: str,
        reason: str,
        report: OrderReport | None = None,
    ) -> GateState:
        """Settle a LOST order by hand: close it or keep it, lift its lock, judge the gate again.

        One transaction: the order is closed as CANCELED (`gone`: the broker does not have
        it; nothing is re-sent, and fills that still arrive are booked) or kept open with
        its missing count reset (`found`: the broker has it; `report`, the broker's report
        the operator found, is booked at once, else the broker's next reports are); its
        LOST and MISSING_AT_BROKER discrepancies are resolved naming `by` and `reason`; the
        symbol lock a lost order placed is lifted unless another LOST order holds it. Then
        the gate is judged again (stale-data reasons stand until a fresh snapshot).

        The next reconcile respects it: an order resolved as gone is closed, so it is never
        missing again; a found order the broker lists is booked as usual, and one it still
        omits is counted missing from one again.

        Args:
            account: broker account.
            client_order_id: the LOST (or MISSING_AT_BROKER) order.
            outcome: `gone` or `found` (`trueup.domain.discrepancy.LostOutcome`).
            by: the operator.
            reason: why (what they checked).
            report: with `found`, the broker's report of the order, booked now.

        Returns:
            The account's gate afterwards.

        Raises:
            LookupError: no such order, or no open LOST or MISSING_AT_BROKER for it.
            PermissionError: no operator or no reason.
            ValueError: a report with outcome `gone`, or for another account.
        """
        return resolutions.resolve_lost(
            self.writer,
            self.queries,
            account,
            client_order_id,
            outcome=outcome,
            by=by,
            reason=reason,
            report=report,
        )

    # -- reconciliation ----------------------------------------------------------------------

    def lookup_failed(
        self, account: str, client_order_id: str, *, failed: int, reason: str
    ) -> list[DomainEventProtocol[UUID]]:
        """STALE_DATA for an in-flight order whose lookup failed: absence unknown, never LOST.

        One open discrepancy per order however often it fails; the gate stays BLOCKED
        until `lookups_settled` resolves it (a lookup answered, or the order left flight).
        """
        return orders.lookup_failed(self.writer, account, client_order_id, failed=failed, reason=reason)

    def lookups_settled(
        self, account: str, client_order_ids: set[str], resolution: str
    ) -> list[DomainEventProtocol[UUID]]:
        """Resolve the STALE_DATA of failing lookups of these orders."""
        return orders.lookups_settled(self.writer, account, client_order_ids, resolution)

    def failing_lookups(self, account: str) -> set[str]:
        """Orders of the account whose in-flight lookup is failing (an open STALE_DATA)."""
        return orders.failing_lookups(self.queries, account)

    def reconcile(
        self,
        snapshot: BrokerSnapshot,
        *,
        policy: PositionPolicy | str | None = None,
        cut: int | None = None,
        no_stream_seconds: float | None = None,
    ) -> ReconcileResult:
        """Compare the books with a broker snapshot and store what it proves.

        Stores ORDER_UPDATED (`Order.Updated`, after the derived lifecycle events),
        POSITION_SYNCED (`Position.Synced`) and DISCREPANCY (`Discrepancy.Raised`) events,
        then moves the account's gate to READY or BLOCKED. A part of the snapshot that
        is None is STALE_DATA: nothing is concluded from it, never "flat" or "missing".

        Args:
            snapshot: what the broker said, as of `snapshot.as_of`.
            policy: position policy for this run; default the account's (`repair`).
            cut: `last_position()` read just before the broker was asked for `snapshot`.
                If a position of the account moved in the log after it (a fill booked
                meanwhile, by this process or another), positions are not compared and
                the result says `retake`: a position is never repaired from a snapshot
                older than a fill already booked. None: the caller vouches nothing moved.
            no_stream_seconds: how long the caller (the service) has had no live broker
                stream; given, it is STALE_DATA and the gate stays BLOCKED.

        Returns:
            What was stored, and the gate after it.
        """
        chosen = PositionPolicy(policy or self.policies.get(snapshot.account, PositionPolicy.REPAIR))
        return self.reconciler.reconcile(
            snapshot,
            policy=chosen,
            max_age_seconds=self.max_snapshot_age,
            lost_after=self.lost_after,
            cut=cut,
            no_stream_seconds=no_stream_seconds,
            closed_order_retention=self.closed_order_retention,
        )

    # -- reading -------------------------------------------------------------------------

    def order(self, account: str, client_order_id: str) -> OrderView | None:
        """The order as the log has it now, or None if unknown."""
        order = load(self.store, order_id(account, client_order_id))
        return None if order is None else order.state.view()

    def open_orders(self, account: str | None = None) -> list[OrderView]:
        """Orders that may still trade, oldest first."""
        return self.queries.orders(account, open_only=True)

    def all_orders(self, account: str | None = None) -> list[OrderView]:
        """Every order, open and closed, oldest first."""
        return self.queries.orders(account, open_only=False)

    def positions(self, account: str | None = None, *, include_flat: bool = False) -> list[PositionView]:
        """Net positions by account and symbol (flat ones only if asked)."""
        return self.queries.positions(account, include_flat=include_flat)

    def discrepancies(
        self, account: str | None = None, *, include_resolved: bool = False
    ) -> list[DiscrepancyView]:
        """Recorded discrepancies, in log order (open ones unless asked)."""
        return self.queries.discrepancies(account, include_resolved=include_resolved)

    def last_position(self) -> int:
        """Position of the last stored event (0 for an empty log)."""
        return self.store.last_position()

    def accounts(self) -> list[str]:
        """Accounts that have orders, positions or a gate."""
        return self.queries.accounts()

    def service_status(self) -> dict[str, Any]:
        """Counters the reconciliation service last saved (empty if none ran on this store)."""
        return self.queries.service_status()

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
        return read_log(self.store, after, until)
