"""The gate of each account: startup, verdicts, locks, claims, quarantines, overrides.

`GateKeeping` is a mixin of the books (one module per concern) over three public
attributes: the `writer` that commits, the `queries` that read the projections, and the
`store` gates are loaded from. `gate_in`, `change_gate` and `judge_gate` are the same
steps for the other use cases (the reconciler, declaring an order lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from uuid import UUID

from trueup.adapters.base import check_side
from trueup.adapters.eventstore.store import Store
from trueup.application.unit_of_work import Clock, UnitOfWork, Writer, load, order_id
from trueup.domain.discrepancy import DiscrepancyKind
from trueup.domain.gate import Gate, GateState, check_new_order, gate_id
from trueup.domain.status import Side
from trueup.domain.views import OrderView
from trueup.projections.queries import Queries

log = logging.getLogger(__name__)


class GateKeeping:
    """Ledger methods about the trading gate of each account."""

    store: Store
    writer: Writer
    queries: Queries
    clock: Clock

    def begin_startup(self, account: str) -> GateState:
        """Put the account's gate in RECONCILING: no new orders until a reconciliation passes."""
        change_gate(
            self.writer,
            account,
            lambda g: g.move(
                GateState.RECONCILING, ("startup reconciliation pending",), "startup", self.clock()
            ),
        )
        return self.gate(account)

    def gate(self, account: str) -> GateState:
        """The account's gate state (RECONCILING until its first reconciliation)."""
        return gate_state(self.store, account)

    def gate_details(self, account: str) -> tuple[GateState, tuple[str, ...], dict[str, str]]:
        """Gate state, the reasons for it, and the locked symbols with why."""
        gate = load(self.store, gate_id(account))
        if gate is None:
            return GateState.RECONCILING, ("no reconciliation yet",), {}
        return GateState(gate.state), tuple(gate.reasons), dict(gate.locks)

    def check_new_order(  # noqa: PLR0913 - what the gate decides on
        self,
        account: str,
        symbol: str,
        side: Side | str,
        quantity: Decimal,
        *,
        strategy: str | None = None,
        reduce_only: bool = False,
        live_position: Decimal | None = None,
    ) -> None:
        """Refuse a new order the gate does not allow (cancels never need this check).

        Raises:
            NotReadyError: the gate is not READY, the symbol is locked or quarantined, or a
                reduce-only order does not reduce the broker's `live_position` within the
                capacity our working orders on the same side leave.
        """
        check_new_order(
            load(self.store, gate_id(account)),
            account=account,
            symbol=symbol,
            side=check_side(side),
            quantity=quantity,
            strategy=strategy,
            quarantined_scopes=self.quarantined_scopes(account),
            reduce_only=reduce_only,
            live_position=live_position,
            working_same_side=self.working_quantity(account, symbol, Side(side))
            if reduce_only
            else Decimal(0),
        )

    def working_quantity(self, account: str, symbol: str, side: Side) -> Decimal | None:
        """What our open orders in `symbol` on `side` have still to fill (None if one's size is unknown)."""
        total = Decimal(0)
        for state in self.queries.open_order_states(account):
            if state.symbol == symbol and state.side is side:
                if state.quantity is None:
                    return None
                total += max(state.quantity - state.filled_qty, Decimal(0))
        return total

    def orphan_orders(self, account: str) -> list[tuple[OrderView, str]]:
        """Orders at the broker we never sent, still quarantining, with their scope."""
        orphans = []
        for d in self.queries.discrepancies(account):
            if d.kind == DiscrepancyKind.ORPHAN_ORDER and d.scope:
                order = load(self.store, order_id(account, d.key))
                if order is not None:
                    orphans.append((order.state.view(), d.scope))
        return orphans

    def quarantined_scopes(self, account: str) -> frozenset[str]:
        """Scopes ("strategy:symbol", "*:symbol") quarantined by open orphan orders."""
        return frozenset(
            d.scope
            for d in self.queries.discrepancies(account)
            if d.kind == DiscrepancyKind.ORPHAN_ORDER and d.scope
        )

    def override_gate(self, account: str, *, operator: str, permission: str, reason: str) -> GateState:
        """Open the gate by hand; stored with the operator, the permission and the reason.

        Raises:
            PermissionError: no operator, or not the override permission.
        """
        change_gate(self.writer, account, lambda g: g.override(operator, permission, reason, self.clock()))
        log.warning("gate of %s overridden by %s: %s", account, operator, reason)
        return self.gate(account)

    def claim(self, account: str, symbol: str, strategy: str) -> None:
        """Record that `strategy` owns `symbol`: orphan orders in it quarantine only that strategy."""
        change_gate(self.writer, account, lambda g: g.claim(symbol, strategy))

    def resolve_discrepancy(self, discrepancy: UUID, *, resolution: str, by: str) -> None:
        """Mark a discrepancy resolved by an operator (lifts an orphan's quarantine).

        The resolution is an acknowledgement: while the problem is seen again unchanged
        (same kind, subject and `actual`), no new discrepancy is raised; once it changes, or
        the reconciler sees it gone and it comes back, it is raised anew. A LOST order is
        settled with `resolve_lost`, which also closes or keeps the order and lifts its lock.
        """

        def apply(unit: UnitOfWork) -> None:
            aggregate = unit.get(discrepancy)
            if aggregate is None:
                msg = f"no discrepancy {discrepancy}"
                raise LookupError(msg)
            aggregate.resolve(resolution, by, unit.clock(), acknowledged=True)
            unit.collect(aggregate)

        self.writer.commit(apply)

    def unlock_symbol(self, account: str, symbol: str, *, by: str) -> None:
        """Lift a symbol lock by hand."""
        change_gate(self.writer, account, lambda g: g.unlock(symbol, by))

    def block(self, account: str, reasons: tuple[str, ...]) -> GateState:
        """Close the gate with reasons (recovery could not resolve everything)."""
        change_gate(
            self.writer, account, lambda g: g.move(GateState.BLOCKED, reasons, "startup", self.clock())
        )
        return self.gate(account)


def gate_in(unit: UnitOfWork, account: str) -> Gate:
    """The account's gate as loaded in `unit`, opened (in RECONCILING) if it has none yet."""
    gate = unit.get(gate_id(account))
    if gate is None:
        gate = Gate.open(account)
        unit.add(gate)
    return gate  # type: ignore[no-any-return]


def change_gate(writer: Writer, account: str, change: Callable[[Gate], None]) -> None:
    """Apply one change to the account's gate in its own transaction."""

    def apply(unit: UnitOfWork) -> None:
        gate = gate_in(unit, account)
        change(gate)
        unit.collect(gate)

    writer.commit(apply)


def gate_state(store: Store, account: str) -> GateState:
    """The account's gate state (RECONCILING until its first reconciliation)."""
    gate = load(store, gate_id(account))
    return GateState.RECONCILING if gate is None else GateState(gate.state)


STALE_REASON = "broker data stale"
"""How every reason the gate has from stale broker data begins."""


def judge_gate(writer: Writer, queries: Queries, account: str, *, stale: Sequence[str]) -> GateState:
    """READY unless the data was stale (`stale` says how) or a critical discrepancy is open.

    One reason per open critical problem: a problem seen again updates its discrepancy, so
    the reasons do not grow from cycle to cycle. A STALE_DATA about one order (its in-flight
    lookup failing: the order may be working) blocks too, until a lookup answers: a failed
    query is never "all is well".
    """
    reasons = list(stale)
    for d in queries.discrepancies(account):
        if d.severity == "CRITICAL":
            reasons.append(f"{d.kind} {d.key}: {d.detail}")
        elif d.kind == DiscrepancyKind.STALE_DATA and d.key != account:
            reasons.append(f"{STALE_REASON}: lookup of {d.key} failing (see STALE_DATA)")
    reasons = list(dict.fromkeys(reasons))
    verdict = GateState.BLOCKED if reasons else GateState.READY
    change_gate(writer, account, lambda g: g.move(verdict, tuple(reasons), "reconciler", writer.clock()))
    return gate_state(writer.store, account)


def rejudge_gate(writer: Writer, queries: Queries, account: str) -> GateState:
    """Judge the gate again after an operator settled a discrepancy, between reconciliations.

    The stale-data reasons of the last reconciliation stand (only a fresh snapshot lifts
    them); a gate still RECONCILING waits for its first reconciliation.
    """
    gate = load(writer.store, gate_id(account))
    if gate is None or GateState(gate.state) is GateState.RECONCILING:
        return gate_state(writer.store, account)
    stale = [reason for reason in gate.reasons if reason.startswith(STALE_REASON)]
    return judge_gate(writer, queries, account, stale=stale)
