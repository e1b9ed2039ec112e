"""Operator commands: resolve, abandon, accept-quantity, unlock, claim, override, each audited.

Each use case checks the operator's permission first (`authorize`), then makes its change
and records an `OperatorLog.Acted` (who, why, on what, which discrepancies it settled) in
the same transaction: the log never shows a change by hand without the hand. The
permission is granted per operator (`Operator.permissions`, from the `trueup run` config's
``[operators.NAME]`` tables for the command line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from trueup.application.gatekeeping import gate_in, rejudge_gate
from trueup.application.unit_of_work import UnitOfWork, Writer, order_id
from trueup.domain.audit import MANAGE_RECONCILIATION, OperatorCommand, OperatorLog, operator_log_id
from trueup.domain.discrepancy import Discrepancy, DiscrepancyKind
from trueup.domain.gate import LOST_ORDER_LOCK, OVERRIDE_PERMISSION, Gate
from trueup.domain.order import Order
from trueup.domain.views import DiscrepancyView
from trueup.projections.queries import Queries

__all__ = [
    "Operator",
    "abandon_order",
    "accept_quantity",
    "authorize",
    "claim_symbol",
    "discrepancy_history",
    "find_discrepancy",
    "override_gate",
    "resolve_discrepancy",
    "unlock_symbol",
]

ID_PREFIX_MIN = 6
"""Shortest discrepancy id prefix accepted (tables print the first 8 hex digits)."""


@dataclass(frozen=True)
class Operator:
    """A person acting on the books, with the permissions the config grants them."""

    name: str
    permissions: frozenset[str] = field(default_factory=frozenset)


def authorize(operator: Operator, reason: str | None) -> None:
    """Refuse a command without an operator, a reason (when one is required) or the permission.

    Raises:
        PermissionError: naming what is missing.
    """
    if not operator.name.strip():
        msg = "an operator command needs the operator's name (--operator)"
        raise PermissionError(msg)
    if MANAGE_RECONCILIATION not in operator.permissions:
        msg = (
            f"operator {operator.name!r} lacks the {MANAGE_RECONCILIATION!r} permission "
            f"(grant it in the config: [operators.{operator.name}] permissions = "
            f'["{MANAGE_RECONCILIATION}"])'
        )
        raise PermissionError(msg)
    if reason is not None and not reason.strip():
        msg = "an operator command needs a reason (--reason TEXT): what was checked at the broker"
        raise PermissionError(msg)


def _record(  # noqa: PLR0913 - the record of one command
    unit: UnitOfWork,
    account: str,
    command: OperatorCommand,
    operator: Operator,
    *,
    reason: str,
    subject: str,
    discrepancies: Sequence[UUID] = (),
) -> None:
    audit = unit.get(operator_log_id(account))
    if audit is None:
        audit = OperatorLog.open(account)
        unit.add(audit)
    audit.acted(
        command,
        operator=operator.name,
        reason=reason,
        subject=subject,
        discrepancies=tuple(discrepancies),
        ts=unit.clock(),
    )
    unit.collect(audit)


def find_discrepancy(queries: Queries, ident: str) -> DiscrepancyView:
    """The discrepancy a user named: its id as `--json` prints it, its 32 hex digits, or a prefix.

    Raises:
        LookupError: no such discrepancy, or a prefix that names more than one.
    """
    text = ident.strip().lower()
    compact = text.replace("-", "")
    if len(compact) < ID_PREFIX_MIN or any(c not in "0123456789abcdef" for c in compact):
        msg = f"discrepancy id {ident!r} is not an id: give the id `trueup discrepancies` prints"
        raise LookupError(msg)
    matches = [v for v in queries.discrepancies(include_resolved=True) if v.id.hex.startswith(compact)]
    if not matches:
        msg = f"no discrepancy {ident!r} in this store (see `trueup discrepancies --all`)"
        raise LookupError(msg)
    if len(matches) > 1:
        msg = f"discrepancy id {ident!r} is ambiguous ({len(matches)} match): give more digits"
        raise LookupError(msg)
    return matches[0]


def resolve_discrepancy(
    writer: Writer, queries: Queries, operator: Operator, ident: str, reason: str
) -> DiscrepancyView:
    """Mark a discrepancy resolved by an operator, with the reason (lifts an orphan's quarantine).

    An acknowledgement (see `Discrepancy`): the same problem seen again unchanged is not
    raised again. The gate is judged again (stale-data reasons stand until a fresh snapshot).

    Raises:
        PermissionError: see `authorize`.
        LookupError: no such discrepancy, or it is resolved already.
    """
    authorize(operator, reason)
    view = find_discrepancy(queries, ident)

    def apply(unit: UnitOfWork) -> None:
        discrepancy: Discrepancy | None = unit.get(view.id)
        if discrepancy is None:
            msg = f"no discrepancy {view.id}"
            raise LookupError(msg)
        if discrepancy.resolution is not None:
            msg = (
                f"discrepancy {view.id} is already resolved "
                f"({discrepancy.resolution!r} by {discrepancy.resolved_by})"
            )
            raise LookupError(msg)
        discrepancy.resolve(reason, operator.name, unit.clock(), acknowledged=True)
        unit.collect(discrepancy)
        _record(
            unit,
            view.account,
            OperatorCommand.RESOLVE,
            operator,
            reason=reason,
            subject=str(view.id),
            discrepancies=[view.id],
        )

    writer.commit(apply, what=f"resolve of {view.id}")
    rejudge_gate(writer, queries, view.account)  # a settled CRITICAL no longer blocks
    return find_discrepancy(queries, str(view.id))


def abandon_order(  # noqa: PLR0913 - who, why, and the order
    writer: Writer, queries: Queries, operator: Operator, account: str, client_order_id: str, *, reason: str
) -> list[UUID]:
    """Close an open order the operator checked is gone at the broker; nothing is re-sent.

    For an order without fills (a fill proves the broker had it; its outcome then comes
    from the broker's reports). Its open LOST and MISSING_AT_BROKER discrepancies are
    resolved with the reason, and a lock its LOST placed is lifted unless another open
    LOST order holds the same symbol.

    Returns:
        The ids of the discrepancies resolved.

    Raises:
        PermissionError: see `authorize`.
        LookupError: no such order.
        ValueError: the order is closed already, or has fills.
    """
    authorize(operator, reason)
    open_views = queries.discrepancies(account)
    settled: list[UUID] = []

    def apply(unit: UnitOfWork) -> None:
        settled.clear()
        order: Order | None = unit.get(order_id(account, client_order_id))
        if order is None:
            msg = f"{account}: no order {client_order_id!r} (see `trueup orders --all --account {account}`)"
            raise LookupError(msg)
        state = order.state
        if state.status.is_terminal:
            msg = f"{account}: order {client_order_id} is {state.status} already; nothing to abandon"
            raise ValueError(msg)
        if state.filled_qty > 0:
            msg = (
                f"{account}: order {client_order_id} has fills ({state.filled_qty}): the broker had it; "
                "its outcome comes from the broker's reports (run `trueup reconcile`)"
            )
            raise ValueError(msg)
        order.trigger_event(Order.Abandoned, reason=f"{reason} (by {operator.name})")
        unit.collect(order)
        kinds = {DiscrepancyKind.LOST, DiscrepancyKind.MISSING_AT_BROKER}
        for view in open_views:
            if view.key == client_order_id and view.kind in kinds:
                discrepancy = unit.get(view.id)
                if discrepancy is not None and discrepancy.resolution is None:
                    discrepancy.resolve(f"abandoned: {reason}", operator.name, unit.clock())
                    unit.collect(discrepancy)
                    settled.append(view.id)
        other_lost = any(
            v.kind == DiscrepancyKind.LOST and v.key != client_order_id and v.scope == f"*:{state.symbol}"
            for v in open_views
        )
        gate: Gate = gate_in(unit, account)
        if gate.lock_owners.get(state.symbol) == LOST_ORDER_LOCK and not other_lost:
            gate.unlock(state.symbol, operator.name)
            unit.collect(gate)
        _record(
            unit,
            account,
            OperatorCommand.ABANDON,
            operator,
            reason=reason,
            subject=client_order_id,
            discrepancies=settled,
        )

    writer.commit(apply, what=f"abandon of {client_order_id}")
    rejudge_gate(writer, queries, account)
    return list(settled)


def accept_quantity(  # noqa: PLR0913 - who, why, the order and its quantity
    writer: Writer,
    queries: Queries,
    operator: Operator,
    account: str,
    client_order_id: str,
    *,
    quantity: Decimal,
    reason: str,
) -> list[UUID]:
    """Take a quantity the broker reports though nobody requested it (QUANTITY_CHANGED).

    Stores `Order.AmendRequested` in the operator's name, as if the modify had been sent
    through trueup: the broker's next report of that quantity amends the order (the next
    reconcile, or the daemon's next cycle). The order's open QUANTITY_CHANGED discrepancies
    are resolved with the reason; a later report of yet another quantity raises it again.

    Returns:
        The ids of the discrepancies resolved.

    Raises:
        PermissionError: see `authorize`.
        LookupError: no such order.
        ValueError: the order is closed, or the quantity is not a positive number.
    """
    authorize(operator, reason)
    if not quantity.is_finite() or quantity <= 0:
        msg = f"quantity must be a positive number, got {quantity}"
        raise ValueError(msg)
    open_views = [
        v
        for v in queries.discrepancies(account)
        if v.key == client_order_id and v.kind == DiscrepancyKind.QUANTITY_CHANGED
    ]
    settled: list[UUID] = []

    def apply(unit: UnitOfWork) -> None:
        settled.clear()
        order: Order | None = unit.get(order_id(account, client_order_id))
        if order is None:
            msg = f"{account}: no order {client_order_id!r} (see `trueup orders --all --account {account}`)"
            raise LookupError(msg)
        if order.state.status.is_terminal:
            msg = f"{account}: order {client_order_id} is {order.state.status}; its quantity is final"
            raise ValueError(msg)
        order.trigger_event(
            Order.AmendRequested,
            quantity=quantity,
            limit_price=None,
            ts_requested=unit.clock(),
            by=operator.name,
        )
        unit.collect(order)
        for view in open_views:
            discrepancy = unit.get(view.id)
            if discrepancy is not None and discrepancy.resolution is None:
                discrepancy.resolve(f"quantity {quantity} accepted: {reason}", operator.name, unit.clock())
                unit.collect(discrepancy)
                settled.append(view.id)
        _record(
            unit,
            account,
            OperatorCommand.ACCEPT_QUANTITY,
            operator,
            reason=reason,
            subject=f"{client_order_id} quantity {quantity}",
            discrepancies=settled,
        )

    writer.commit(apply, what=f"accept-quantity of {client_order_id}")
    rejudge_gate(writer, queries, account)
    return list(settled)


def unlock_symbol(writer: Writer, operator: Operator, account: str, symbol: str, reason: str) -> None:
    """Lift a symbol lock by hand (whatever placed it).

    Raises:
        PermissionError: see `authorize`.
        LookupError: the symbol is not locked.
    """
    authorize(operator, None)

    def apply(unit: UnitOfWork) -> None:
        gate: Gate = gate_in(unit, account)
        if symbol not in gate.locks:
            locked = ", ".join(sorted(gate.locks)) or "none"
            msg = f"{account}: {symbol} is not locked (locked: {locked})"
            raise LookupError(msg)
        gate.unlock(symbol, operator.name)
        unit.collect(gate)
        _record(unit, account, OperatorCommand.UNLOCK, operator, reason=reason, subject=symbol)

    writer.commit(apply, what=f"unlock of {symbol}")


def claim_symbol(  # noqa: PLR0913 - who, why, and the claim
    writer: Writer, operator: Operator, account: str, strategy: str, symbol: str, *, reason: str
) -> None:
    """Record that `strategy` owns `symbol`: orphan orders in it quarantine only that strategy.

    Raises:
        PermissionError: see `authorize`.
        ValueError: an empty strategy or symbol.
    """
    authorize(operator, None)
    if not strategy.strip() or not symbol.strip():
        msg = f"claim needs a strategy and a symbol, got {strategy!r} {symbol!r}"
        raise ValueError(msg)

    def apply(unit: UnitOfWork) -> None:
        gate: Gate = gate_in(unit, account)
        gate.claim(symbol, strategy)
        unit.collect(gate)
        _record(unit, account, OperatorCommand.CLAIM, operator, reason=reason, subject=f"{strategy}:{symbol}")

    writer.commit(apply, what=f"claim of {symbol}")


def override_gate(writer: Writer, operator: Operator, account: str, reason: str) -> None:
    """Open the account's gate by hand (symbol locks of LOST orders still hold).

    Raises:
        PermissionError: see `authorize`.
    """
    authorize(operator, reason)

    def apply(unit: UnitOfWork) -> None:
        gate: Gate = gate_in(unit, account)
        gate.override(operator.name, OVERRIDE_PERMISSION, reason, unit.clock())
        unit.collect(gate)
        _record(unit, account, OperatorCommand.OVERRIDE, operator, reason=reason, subject=account)

    writer.commit(apply, what=f"override of {account}")


def discrepancy_history(writer: Writer, view: DiscrepancyView) -> list[Any]:
    """The discrepancy's events and the operator commands that name it, in time order."""
    store = writer.store
    ident = operator_log_id(view.account)
    stored = store.stored_events([view.id, ident])
    own = [store.app.mapper.to_domain_event(s) for s in stored.get(view.id, [])]
    acts = [
        event
        for event in (store.app.mapper.to_domain_event(s) for s in stored.get(ident, []))
        if isinstance(event, OperatorLog.Acted) and view.id in event.discrepancies
    ]
    return sorted([*own, *acts], key=lambda e: e.timestamp)
