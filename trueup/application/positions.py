"""Positions in a reconciliation: the books' positions compared with the broker's.

A position that agrees resolves its open position discrepancies (and lifts the position
policy's own lock); one that differs is, per the account's `PositionPolicy`, repaired
(synced to the broker's with reconciliation fills, when the snapshot makes that safe),
locked, or raised. Called by the reconciler (`reconciler.py`) inside its transaction.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from trueup.application.findings import resolve_all
from trueup.application.gatekeeping import gate_in
from trueup.application.runs import ReconcileRun
from trueup.application.unit_of_work import UnitOfWork
from trueup.domain.discrepancy import DiscrepancyKind, Finding
from trueup.domain.gate import POSITION_LOCK, gate_id
from trueup.domain.ids import position_id
from trueup.domain.position import Position, repair_fills
from trueup.domain.reconcile import (
    NOT_REPAIRED,
    PositionPolicy,
    broker_cost,
    position_finding,
    repair_prefix,
    repair_safe,
)
from trueup.domain.reports import PositionReport
from trueup.projections.queries import Queries

POSITION_KINDS = frozenset(
    {
        DiscrepancyKind.POSITION_MISMATCH,
        DiscrepancyKind.MISSING_LOCAL_POSITION,
        DiscrepancyKind.NAKED_POSITION,
    }
)
"""The position discrepancies: a symbol that agrees with the broker resolves them all."""


def compare_positions(
    unit: UnitOfWork, run: ReconcileRun, positions: list[PositionReport], queries: Queries
) -> None:
    """Compare the books' positions with the broker's; resolve, repair, lock or raise per the policy."""
    account = run.snapshot.account
    broker = {p.symbol: p for p in positions}
    local = {s.symbol: s for s in queries.position_states(account)}
    for aggregate in unit.positions(account):
        local[aggregate.state.symbol] = aggregate.state
    gate = unit.get(gate_id(account))
    # Symbols with a position discrepancy in force are compared too: one that went flat
    # on both sides is seen gone (resolved, its acknowledgement ended), not left open.
    for symbol in sorted(set(broker) | set(local) | run.open.subjects(POSITION_KINDS)):
        state = local.get(symbol)
        local_qty = state.qty if state is not None else Decimal(0)
        local_avg = state.avg_cost if state is not None else Decimal(0)
        finding = position_finding(symbol, local_qty, local_avg, broker.get(symbol))
        if finding is None:
            run.open.resolve(unit, set(POSITION_KINDS), symbol, "agrees with the broker")
            if gate is not None and gate.lock_owners.get(symbol) == POSITION_LOCK:
                gate.unlock(symbol, by="reconciler")  # only the position policy's own lock
                unit.collect(gate)
            continue
        if run.policy is PositionPolicy.REPAIR and repair_safe(run.snapshot):
            repair_position(unit, run, symbol, (local_qty, local_avg), broker.get(symbol), finding)
            continue
        if run.policy is PositionPolicy.REPAIR:
            # Executions the snapshot could not show may be what the broker's position
            # holds: a repair would stand for them and they would count twice on arrival.
            finding = msgspec.structs.replace(finding, detail=f"{finding.detail}; {NOT_REPAIRED}")
        if run.policy is PositionPolicy.LOCK:
            finding = msgspec.structs.replace(finding, scope=f"*:{symbol}")
            gate = gate or gate_in(unit, account)
            gate.lock(
                symbol, f"{finding.kind}: ours {finding.expected}, broker {finding.actual}", POSITION_LOCK
            )
            unit.collect(gate)
        run.open.record_new(unit, [finding], run.evidence)


def repair_position(  # noqa: PLR0913, PLR0917 - the inputs of one repair
    unit: UnitOfWork,
    run: ReconcileRun,
    symbol: str,
    local: tuple[Decimal, Decimal | None],
    broker: PositionReport | None,
    finding: Finding,
) -> None:
    """Sync the position to the broker's with reconciliation fills; the finding raised and resolved."""
    account = run.snapshot.account
    local_qty = local[0]
    broker_qty = broker.qty if broker is not None else Decimal(0)
    broker_avg = broker_cost(broker)
    fills = repair_fills(repair_prefix(account, symbol, local_qty, broker), local, broker_qty, broker_avg)
    position = unit.get(position_id(account, symbol))
    if position is None:
        position = Position.open(account, symbol)
        unit.add(position)
    position.trigger_event(
        Position.Synced,
        fills=tuple(fills),
        qty=broker_qty,
        avg_cost=broker_avg,
        evidence_id=run.evidence,
        ts_event=run.snapshot.as_of,
        at_cost=True,
        account=account,
        symbol=symbol,
        qty_before=local_qty,
    )
    unit.collect(position)
    detail = f"{finding.detail}; repaired: synced to the broker with {len(fills)} reconciliation fill(s)"
    if local_qty and fills and (fills[0].qty > 0) != (local_qty > 0):
        detail += "; closed at our own average cost: no P&L realized"
    if position.state.avg_cost is None:
        detail += (
            f"; cost unknown: the broker's average ({broker.avg_cost if broker else 0}) is not"
            " a cost basis comparable with ours, none booked"
        )
    raised = run.open.record_new(unit, [msgspec.structs.replace(finding, detail=detail)], run.evidence)
    resolve_all(unit, raised, "repaired: POSITION_SYNCED", "reconciler")
    run.open.resolve(unit, set(POSITION_KINDS), symbol, "repaired: POSITION_SYNCED")
