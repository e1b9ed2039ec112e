"""Settling a LOST order by hand: one use case, one transaction, who and why recorded.

`resolve_lost` is what an operator calls once they know what became of an order trueup
declared LOST (the reconciler after `lost_after` snapshots that omit it, or the service
after in-flight lookups that never find it). In one transaction it closes the order
(`gone`) or keeps it open with its missing count reset (`found`, optionally booking the
broker's report the operator found), resolves the order's LOST and MISSING_AT_BROKER
discrepancies naming the operator and the reason, and lifts the symbol lock a lost order
placed once no other LOST order holds it; then the gate is judged again.

`lift_lost_lock` is the lock step on its own, for the reconciler when a lost order is
listed by the broker again.
"""

from __future__ import annotations

from uuid import UUID

from trueup.application.booking import apply_report, record_message
from trueup.application.findings import OpenDiscrepancies, open_in
from trueup.application.gatekeeping import rejudge_gate
from trueup.application.orders import existing_order
from trueup.application.unit_of_work import UnitOfWork, Writer
from trueup.domain.discrepancy import DiscrepancyKind, LostOutcome
from trueup.domain.gate import LOST_ORDER_LOCK, GateState, gate_id
from trueup.domain.order import Order
from trueup.domain.reports import REPORT_ENCODER, OrderReport
from trueup.projections.queries import Queries

_LOST_KINDS = frozenset({DiscrepancyKind.LOST, DiscrepancyKind.MISSING_AT_BROKER})


def resolve_lost(  # noqa: PLR0913 - the order, the outcome, who and why, and what was found
    writer: Writer,
    queries: Queries,
    account: str,
    client_order_id: str,
    *,
    outcome: LostOutcome | str,
    by: str,
    reason: str,
    report: OrderReport | None = None,
) -> GateState:
    """Settle a LOST (or missing) order; see `Ledger.resolve_lost`."""
    outcome = LostOutcome(outcome)
    if not by.strip() or not reason.strip():
        msg = "resolving a LOST order needs the operator's identity and a reason"
        raise PermissionError(msg)
    if report is not None and (outcome is not LostOutcome.FOUND or report.account != account):
        msg = "a broker report is given only with outcome 'found', for the same account"
        raise ValueError(msg)

    def apply(unit: UnitOfWork) -> None:
        order = existing_order(unit, account, client_order_id)
        in_force = open_in(unit, account)
        if not any(in_force.is_open(kind, client_order_id) for kind in _LOST_KINDS):
            msg = f"{account}: order {client_order_id!r} has no open LOST or MISSING_AT_BROKER discrepancy"
            raise LookupError(msg)
        if outcome is LostOutcome.GONE:
            if not order.state.status.is_terminal:
                order.trigger_event(Order.DeclaredGone, by=by, reason=reason)
        else:
            order.trigger_event(Order.Found, by=by, reason=reason)
        unit.collect(order)
        if report is not None:
            message = record_message(
                unit,
                account=account,
                source="operator",
                kind="found",
                payload=REPORT_ENCODER.encode(report).decode(),
            )
            apply_report(unit, report, message.id)
        in_force.resolve(unit, set(_LOST_KINDS), client_order_id, f"{outcome}: {reason}", by=by)
        lift_lost_lock(unit, in_force, account, order.state.symbol, by=by)

    writer.commit(apply, what=f"resolve_lost of {client_order_id}")
    return rejudge_gate(writer, queries, account)


def lift_lost_lock(
    unit: UnitOfWork, in_force: OpenDiscrepancies, account: str, symbol: str, *, by: str
) -> None:
    """Lift the lock a lost order placed on `symbol`, unless another open LOST still holds it."""
    gate = unit.get(gate_id(account))
    if gate is None or gate.lock_owners.get(symbol) != LOST_ORDER_LOCK:
        return
    scope = f"*:{symbol}"
    if any(
        problem[0] == DiscrepancyKind.LOST.value and _scope(unit, ident) == scope
        for problem, ident in in_force.open.items()
    ):
        return
    gate.unlock(symbol, by)
    unit.collect(gate)


def _scope(unit: UnitOfWork, ident: UUID) -> str | None:
    discrepancy = unit.get(ident)
    if discrepancy is None or discrepancy.resolution is not None:
        return None
    return discrepancy.scope  # type: ignore[no-any-return]
