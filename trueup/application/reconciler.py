"""Reconciliation: compare the books with a broker snapshot, store what it proves.

Shell, core, shell: the ledger's state and the snapshot go in; the pure rules of
`trueup.domain.rules` and `trueup.domain.reconcile` decide; the decisions are stored in
one transaction, after the evidence that proves them (`trueup.application.evidence`: the
broker's answers verbatim, then the snapshot). Reconciling the same snapshot twice, or
again after a restart, stores nothing new: decisions are idempotent, and a discrepancy
that is still open is not raised again. A clean run leaves a BooksMatched record when
one is due (`evidence.Matches`). Positions are compared in `positions.py`; the result and
the state of a run are in `runs.py` (`ReconcileResult` is importable from here too).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import msgspec
from eventsourcing.persistence import PersistenceError

from trueup.application.booking import apply_report, client_order_id_for
from trueup.application.evidence import (
    MATCH_EVERY_SECONDS,
    Matches,
    prepend_evidence,
    untranslatable,
)
from trueup.application.findings import open_in
from trueup.application.gatekeeping import gate_in, judge_gate
from trueup.application.positions import compare_positions
from trueup.application.resolutions import lift_lost_lock
from trueup.application.runs import ReconcileResult, ReconcileRun
from trueup.application.unit_of_work import UnitOfWork, Writer, store_error
from trueup.domain.discrepancy import Discrepancy, DiscrepancyKind, Finding
from trueup.domain.gate import LOST_ORDER_LOCK
from trueup.domain.ids import order_id, position_id
from trueup.domain.messages import BooksMatched
from trueup.domain.order import Order, OrderState, exec_key
from trueup.domain.position import Position
from trueup.domain.reconcile import (
    PositionPolicy,
    no_stream_finding,
    proves_accepted,
    stale_findings,
    stale_reasons,
    too_old,
)
from trueup.domain.reports import BrokerSnapshot, FillReport, OrderReport
from trueup.domain.rules import working_status
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource
from trueup.projections.queries import Queries

__all__ = ["ReconcileResult", "Reconciler"]

_BOOKING_KINDS = frozenset(
    {
        DiscrepancyKind.OVERFILL,
        DiscrepancyKind.FILL_MISMATCH,
        DiscrepancyKind.STATUS_CONFLICT,
        DiscrepancyKind.UNKNOWN_STATUS,
        DiscrepancyKind.INVALID_REPORT,
        DiscrepancyKind.QUANTITY_CHANGED,
    }
)
"""Problems booking an order's reports finds, about that order (its client id the subject)."""


class Reconciler:
    """Runs reconciliations on one store."""

    def __init__(self, writer: Writer, queries: Queries, *, match_every: float = MATCH_EVERY_SECONDS) -> None:
        """Store decisions through `writer`; read the books through `queries`.

        `match_every`: seconds of snapshot time between two BooksMatched records while the
        books keep matching (0: every clean run).
        """
        self.writer = writer
        self.queries = queries
        self.matches = Matches(match_every)
        self._compared: set[str] = set()
        """Accounts whose orders were compared in full since this reconciler was made."""

    def reconcile(  # noqa: PLR0913 - one transaction's steps, in order, and their knobs
        self,
        snapshot: BrokerSnapshot,
        *,
        policy: PositionPolicy,
        max_age_seconds: float,
        lost_after: int,
        cut: int | None = None,
        no_stream_seconds: float | None = None,
        closed_order_retention: float | None = None,
    ) -> ReconcileResult:
        """Compare the books with `snapshot` and store the decisions; see Ledger.reconcile.

        `cut` is the log position read before the broker was asked: an event of one of
        the account's orders or positions stored after it (a fill booked by another
        writer, another process included) is one the snapshot may not show, so orders
        and positions are then not compared (`retake`).
        `no_stream_seconds`: how long the caller has had no live broker stream (STALE_DATA).
        `closed_order_retention`: once an account's orders were compared in full (its first
        reconciliation here), later ones skip the broker's reports of orders that closed more
        than this many seconds before the snapshot and are not open here, and their fills.
        """
        account = snapshot.account
        run_state: list[ReconcileRun] = []
        retired_before = (
            snapshot.as_of - timedelta(seconds=closed_order_retention)
            if closed_order_retention is not None and account in self._compared
            else None
        )

        def apply(unit: UnitOfWork) -> None:
            run = ReconcileRun(
                snapshot=snapshot,
                policy=policy,
                lost_after=lost_after,
                open=open_in(unit, account),
                retired_before=retired_before,
            )
            run_state[:] = [run]
            if not self._freshness(unit, run, max_age_seconds, no_stream_seconds):
                self._prepend_evidence(unit, run)
                return  # too old: nothing else is concluded from it
            self._conclude(unit, run, cut)
            self._match(unit, run)
            self._prepend_evidence(unit, run)

        stored = self.writer.commit(apply)
        run = run_state[0]
        if run.compared_orders:
            self._compared.add(account)
        events = [e for e in stored if not isinstance(e, BooksMatched.Recorded)]
        result = ReconcileResult(account=account, events=events, stale=run.stale, retake=run.retake)
        result.matched = next((e for e in stored if isinstance(e, BooksMatched.Recorded)), None)
        self.matches.settle(account, snapshot.as_of, clean=run.clean, recorded=result.matched is not None)
        for event in events:
            if isinstance(event, Order.Updated):
                result.order_updates.append(event)
            elif isinstance(event, Position.Synced):
                result.position_syncs.append(event)
            elif isinstance(event, Discrepancy.Raised):
                result.discrepancies.append(event)
        result.gate = judge_gate(self.writer, self.queries, account, stale=run.stale_reasons)
        return result

    @staticmethod
    def _freshness(
        unit: UnitOfWork, run: ReconcileRun, max_age_seconds: float, no_stream_seconds: float | None
    ) -> bool:
        """Record what is stale (STALE_DATA, the gate's reasons); False if too old to use at all."""
        snapshot = run.snapshot
        age = (unit.clock() - snapshot.as_of).total_seconds()
        stale = stale_findings(snapshot, age_seconds=age, max_age_seconds=max_age_seconds)
        run.stale_reasons = (
            [f"broker data stale: snapshot {age:.1f}s old (see STALE_DATA)"]
            if too_old(age, max_age_seconds)
            else stale_reasons(snapshot)
        )
        if no_stream_seconds is not None:
            stale.append(no_stream_finding(snapshot.account, no_stream_seconds))
            run.stale_reasons.append(
                f"broker data stale: no live broker stream for {no_stream_seconds:.0f}s (see STALE_DATA)"
            )
        run.stale = bool(stale)
        run.open.record_new(unit, stale, run.evidence)
        untranslatable(unit, run.open, run.answers, lambda: run.evidence)
        return not too_old(age, max_age_seconds)

    # -- orders ----------------------------------------------------------------------------

    def _orders(
        self, unit: UnitOfWork, run: ReconcileRun, orders: list[OrderReport], fills: list[FillReport]
    ) -> None:
        if run.retired_before is not None:
            orders, fills = self._retire(run.snapshot.account, run.retired_before, orders, fills)
        # Compare against the read model first: an order that agrees needs no aggregate
        # load at all, which keeps a periodic reconciliation of unchanged books cheap.
        named = {r.client_order_id for r in orders if r.client_order_id}
        named |= {f.client_order_id for f in fills if f.client_order_id}
        run.known = self.queries.order_states(run.snapshot.account, named)
        run.by_broker_id = {b: s.client_order_id for s in run.known.values() for b in s.broker_order_ids}
        fills_by_order: dict[str, list[FillReport]] = {}
        for fill in fills:
            fills_by_order.setdefault(self._key(unit, run, fill), []).append(fill)
        for report in orders:
            key = self._key(unit, run, report)
            run.listed.add(key)
            listed_fills = fills_by_order.pop(key, None)
            order_fills = sorted(listed_fills, key=_fill_order) if listed_fills else []
            state = run.known.get(key)
            if state is not None and not state.missing_cycles and self._agrees(state, report, order_fills):
                continue
            self._order(unit, run, key, report, order_fills)
        # Executions of orders the snapshot did not list (IB lists executions of the day).
        for key, order_fills in fills_by_order.items():
            for fill in sorted(order_fills, key=_fill_order):
                apply_report(unit, fill, run.evidence)
            run.listed.add(key)
        if run.snapshot.complete_history or run.snapshot.history_since is not None:
            self._missing(unit, run)
        if run.snapshot.fills is not None:
            self._booking_problems_gone(unit, run)

    def _retire(
        self, account: str, before: datetime, orders: list[OrderReport], fills: list[FillReport]
    ) -> tuple[list[OrderReport], list[FillReport]]:
        """The reports still compared: not closed at the broker before `before`, or open here.

        An order open here is always compared (its close must be booked). One closed at the
        broker long ago and not open here was settled by an earlier comparison (the first
        reconciliation of the account compares every listed order); reading its state again
        every period would make a long-running daemon's reconciliation grow with its history.
        Nothing is deleted: the log and the read models keep every order.
        """
        open_ids: set[str] = set()
        for state in self.queries.open_order_states(account):
            open_ids.add(state.client_order_id)
            open_ids.update(state.broker_order_ids)

        def kept(report: OrderReport | FillReport) -> bool:
            return (
                report.client_order_id in open_ids
                or report.broker_order_id in open_ids
                or report.ts_event >= before
            )

        retired = {
            r.broker_order_id or r.client_order_id
            for r in orders
            if r.status.is_terminal and not kept(r)
        }
        return (
            [r for r in orders if not (r.status.is_terminal and not kept(r))],
            [f for f in fills if kept(f) or (f.broker_order_id or f.client_order_id) not in retired],
        )

    def _order(
        self,
        unit: UnitOfWork,
        run: ReconcileRun,
        key: str,
        report: OrderReport,
        order_fills: list[FillReport],
    ) -> None:
        """Bring one order in line with the broker's report and executions."""
        order = unit.get(order_id(report.account, key))
        if order is not None and order.state.missing_cycles:
            # Listed again: it was never lost.
            order.trigger_event(Order.SeenAtBroker, evidence_id=run.evidence)
            unit.collect(order)
            kinds = {DiscrepancyKind.MISSING_AT_BROKER, DiscrepancyKind.LOST}
            run.open.resolve(unit, kinds, key, "listed by the broker again")
            lift_lost_lock(unit, run.open, report.account, order.state.symbol, by="reconciler")
        if order is not None and self._agrees(order.state, report, order_fills):
            return
        before = (order.state.status, order.state.filled_qty) if order is not None else None
        # Lifecycle order: accepted, amendments, fills, then the final status.
        local_status = order.state.status if order is not None else OrderStatus.INTENDED
        if proves_accepted(report.status, local_status):
            accepted = msgspec.structs.replace(
                report,
                status=OrderStatus.ACCEPTED,
                filled_qty=Decimal(0),
                avg_price=None,
                flags=frozenset(),
                source=ReportSource.RECONCILE,
                raw_status=f"derived: {report.raw_status} proves it was accepted",
            )
            apply_report(unit, accepted, run.evidence)
        for fill in order_fills:
            apply_report(unit, fill, run.evidence)
        apply_report(unit, report, run.evidence)
        order = unit.get(order_id(report.account, key))
        state = order.state
        if state.real_filled > report.filled_qty:
            finding = Finding(
                DiscrepancyKind.FILL_MISMATCH,
                key,
                f"broker cumulative >= {state.real_filled} (our executions)",
                f"broker cumulative {report.filled_qty}",
                "we hold executions the broker's cumulative does not count",
                topic="executions the broker's cumulative does not count",
            )
            run.open.record_new(unit, [finding], run.evidence)
        after = (state.status, state.filled_qty)
        if after != before:
            order.trigger_event(
                Order.Updated,
                # An order first seen in this snapshot had no status here: never "INTENDED".
                status_before=before[0] if before else None,
                status_after=state.status,
                filled_before=before[1] if before else Decimal(0),
                filled_after=state.filled_qty,
                evidence_id=run.evidence,
                account=state.account,
                client_order_id=state.client_order_id,
                symbol=state.symbol,
            )
            unit.collect(order)

    def _key(self, unit: UnitOfWork, run: ReconcileRun, report: OrderReport | FillReport) -> str:
        """The client order id a report belongs to (same resolution as ingest: link first)."""
        if report.broker_order_id and report.broker_order_id in run.by_broker_id:
            return run.by_broker_id[report.broker_order_id]
        if report.client_order_id in run.known and not report.broker_order_id:
            return report.client_order_id
        return client_order_id_for(unit, report)

    @staticmethod
    def _agrees(state: OrderState, report: OrderReport, fills: list[FillReport]) -> bool:
        """Whether the broker's report says nothing our books do not already hold."""
        target = report.status
        if not target.is_terminal:
            target = working_status(target, report.filled_qty, report.quantity)
        # While a replace is pending the report may carry the requested terms: the order
        # keeps the terms in force (see `decide_order_report`), so they are not compared.
        pending = OrderFlag.REPLACE_PENDING in report.flags
        return (
            state.status is target
            and state.flags == report.flags
            and state.filled_qty == report.filled_qty
            and (pending or state.quantity == report.quantity)
            and (pending or report.limit_price is None or report.limit_price == state.limit_price)
            and (report.broker_order_id is None or report.broker_order_id in state.broker_order_ids)
            and (not fills or all(_booked(state, fill) for fill in fills))
        )

    def _booking_problems_gone(self, unit: UnitOfWork, run: ReconcileRun) -> None:
        """End acknowledgements of problems found by booking an order's reports, once not shown.

        Such a problem (an OVERFILL, a FILL_MISMATCH, ...) is about one order, and only the
        broker's reports of that order can show it again. With orders and fills known, it is
        seen gone when the broker lists the order and booking what it lists (nothing, if it
        agrees with the books) finds the problem no more; or when the order has ended here
        and a snapshot that covers its window no longer lists it (a day-scoped broker after
        midnight): nothing the broker says can show it again. See docs/rules.md.
        """
        snapshot = run.snapshot
        covers = snapshot.complete_history or snapshot.history_since is not None
        for key in sorted(run.open.acknowledged_subjects(_BOOKING_KINDS)):
            if key in run.listed:
                reason = "the broker's report of the order no longer shows it"
            else:
                order = unit.get(order_id(snapshot.account, key)) if covers else None
                if order is None or not order.state.status.is_terminal:
                    continue  # not an order, or one that may still change: it stands
                reason = f"order {order.state.status}; the broker no longer lists it"
            run.open.end_unsighted(unit, _BOOKING_KINDS, key, reason)

    def _missing(self, unit: UnitOfWork, run: ReconcileRun) -> None:
        """Open orders a complete (or day-scoped) snapshot does not list: missing, then lost.

        A day-scoped broker's lists cover only its window (`history_since`): an open order
        sent before it is just as unverifiable, and says so.
        """
        account = run.snapshot.account
        since = run.snapshot.history_since
        for state in self.queries.open_order_states(account):
            if state.client_order_id in run.listed or state.status.rank < OrderStatus.SUBMITTED.rank:
                continue  # listed, or never sent: absence proves nothing
            order = unit.get(order_id(account, state.client_order_id))
            if order is None or order.state.status.is_terminal:
                continue
            cycles = order.state.missing_cycles + 1
            order.trigger_event(Order.MissingAtBroker, cycles=cycles, evidence_id=run.evidence)
            unit.collect(order)
            sent = state.submitted_at or state.created_at
            if since is not None and (sent is None or sent < since):
                actual = f"absent; sent before the broker's history window ({since.isoformat()})"
                detail = "open here; the broker no longer lists orders that old: check its outcome by hand"
            else:
                actual = "absent from a complete-history snapshot"
                detail = "open here, unknown to the broker"
            findings = [
                Finding(
                    DiscrepancyKind.MISSING_AT_BROKER,
                    state.client_order_id,
                    f"{state.status} at the broker",
                    actual,
                    detail,
                )
            ]
            if cycles >= run.lost_after:
                # The texts stay the same from cycle to cycle: the count of sightings and
                # the order's missing cycles say how long it has been lost.
                findings.append(
                    Finding(
                        DiscrepancyKind.LOST,
                        state.client_order_id,
                        f"{state.status} at the broker",
                        f"absent from {run.lost_after} or more snapshots in a row",
                        f"order lost: the broker no longer lists it; {state.symbol} locked; "
                        "nothing is re-sent: settle it with Ledger.resolve_lost",
                        scope=f"*:{state.symbol}",
                    )
                )
                gate = gate_in(unit, account)
                gate.lock(state.symbol, f"LOST order {state.client_order_id}", LOST_ORDER_LOCK)
                unit.collect(gate)
            run.open.record_new(unit, findings, run.evidence)

    # -- positions -------------------------------------------------------------------------

    def _conclude(self, unit: UnitOfWork, run: ReconcileRun, cut: int | None) -> None:
        """Bring orders and positions in line, unless the books moved after the snapshot's cut."""
        snapshot = run.snapshot
        if not run.stale:
            # The snapshot's own (about the account); a failing lookup of one order is
            # settled by a lookup that answers.
            run.open.resolve(unit, {DiscrepancyKind.STALE_DATA}, snapshot.account, "broker data fresh again")
        # Checked in the transaction that would repair: a fill stored after this check
        # touches an aggregate this run loads (its order, its position), so the store
        # refuses our commit, and this runs again and sees it.
        run.retake = cut is not None and self._moved_since(cut, snapshot)
        if run.retake:
            return
        if snapshot.orders is not None:
            self._orders(unit, run, snapshot.orders, snapshot.fills or [])
            run.compared_orders = True
        if snapshot.positions is not None:
            compare_positions(unit, run, snapshot.positions, self.queries)

    def _moved_since(self, cut: int, snapshot: BrokerSnapshot) -> bool:
        """Whether an order or position of the snapshot's account changed after log position `cut`."""
        account = snapshot.account
        orders = {s.client_order_id for s in self.queries.open_order_states(account)}
        orders |= {r.client_order_id for r in snapshot.orders or () if r.client_order_id}
        orders |= {f.client_order_id for f in snapshot.fills or () if f.client_order_id}
        symbols = {p.symbol for p in snapshot.positions or ()}
        symbols |= {s.symbol for s in self.queries.position_states(account)}
        ours = {order_id(account, cid) for cid in orders} | {position_id(account, sym) for sym in symbols}
        recorder = self.writer.store.app.recorder
        start = cut
        try:
            while page := recorder.select_notifications(start=start, limit=500, inclusive_of_start=False):
                if any(n.originator_id in ours for n in page):
                    return True
                start = page[-1].id
        except PersistenceError as e:
            raise store_error(e) from e
        return False

    def _match(self, unit: UnitOfWork, run: ReconcileRun) -> None:
        """Record that the books matched, if this run is clean and a record is due."""
        snapshot = run.snapshot
        concluded = bool(unit.events) or run.stale or run.retake
        run.clean = not concluded and not run.open.views and _complete(snapshot)
        if run.clean and self.matches.due(snapshot.account, snapshot.as_of):
            self.matches.record(unit, snapshot, run.evidence)

    @staticmethod
    def _prepend_evidence(unit: UnitOfWork, run: ReconcileRun) -> None:
        """Store the evidence first: the broker's answers, then the snapshot (`evidence`)."""
        if unit.events or any(a.error is not None for a in run.snapshot.raw):
            prepend_evidence(unit, run.snapshot, run.answers, run.evidence)


def _complete(snapshot: BrokerSnapshot) -> bool:
    return snapshot.orders is not None and snapshot.fills is not None and snapshot.positions is not None


def _fill_order(fill: FillReport) -> tuple[object, str]:
    """Executions are applied in time order (exec id breaks ties)."""
    return (fill.ts_event, fill.exec_id)


def _booked(state: OrderState, fill: FillReport) -> bool:
    key, revision = exec_key(fill.exec_id)
    booked = state.fills.get(key)
    return booked is not None and booked.revision >= revision
