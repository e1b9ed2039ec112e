"""The gate side of the Ledger: startup, verdicts, locks, claims, quarantines, overrides.

A mixin of `trueup.Ledger` (one module per concern); `_LedgerCore` names what it uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from trueup.domain.discrepancy import Discrepancy, DiscrepancyKind, Finding
from trueup.domain.gate import Gate, GateState, check_new_order, gate_id
from trueup.domain.status import Side
from trueup.domain.views import DiscrepancyView, OrderView

if TYPE_CHECKING:
    from trueup.ledger import _Batch

log = logging.getLogger(__name__)


class _LedgerCore(Protocol):
    """What the gate methods use of the Ledger."""

    def clock(self) -> datetime:
        """Now, tz-aware UTC."""
        ...

    def _commit(self, apply: Callable[[_Batch], object]) -> Sequence[object]: ...

    def _get(self, ident: UUID) -> Any: ...  # noqa: ANN401 - any aggregate or None

    def _raise(
        self, batch: _Batch, account: str, findings: Sequence[Finding], evidence: UUID | None
    ) -> list[Discrepancy]: ...

    def order(self, account: str, client_order_id: str) -> OrderView | None:
        """The order, or None."""
        ...

    def discrepancies(
        self, account: str | None = None, *, include_resolved: bool = False
    ) -> list[DiscrepancyView]:
        """Open discrepancies."""
        ...

    def gate(self, account: str) -> GateState:
        """The gate state."""
        ...

    def quarantined_scopes(self, account: str) -> frozenset[str]:
        """Quarantined scopes."""
        ...

    def _change_gate(self, account: str, change: Callable[[Gate], None]) -> None: ...

    def _gate_aggregate(self, batch: _Batch, account: str) -> Gate: ...


class GateKeeping:
    """Ledger methods about the trading gate of each account."""

    def begin_startup(self: _LedgerCore, account: str) -> GateState:
        """Put the account's gate in RECONCILING: no new orders until a reconciliation passes."""
        self._change_gate(
            account,
            lambda g: g.move(
                GateState.RECONCILING, ("startup reconciliation pending",), "startup", self.clock()
            ),
        )
        return self.gate(account)

    def gate(self: _LedgerCore, account: str) -> GateState:
        """The account's gate state (RECONCILING until its first reconciliation)."""
        gate = self._get(gate_id(account))
        return GateState.RECONCILING if gate is None else GateState(gate.state)

    def gate_details(self: _LedgerCore, account: str) -> tuple[GateState, tuple[str, ...], dict[str, str]]:
        """Gate state, the reasons for it, and the locked symbols with why."""
        gate = self._get(gate_id(account))
        if gate is None:
            return GateState.RECONCILING, ("no reconciliation yet",), {}
        return GateState(gate.state), tuple(gate.reasons), dict(gate.locks)

    def check_new_order(  # noqa: PLR0913 - what the gate decides on
        self: _LedgerCore,
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
                reduce-only order does not reduce the broker's `live_position`.
        """
        check_new_order(
            self._get(gate_id(account)),
            symbol=symbol,
            side=Side(side),
            quantity=quantity,
            strategy=strategy,
            quarantined_scopes=self.quarantined_scopes(account),
            reduce_only=reduce_only,
            live_position=live_position,
        )

    def orphan_orders(self: _LedgerCore, account: str) -> list[tuple[OrderView, str]]:
        """Orders at the broker we never sent, still quarantining, with their scope."""
        orphans = []
        for d in self.discrepancies(account):
            if d.kind == DiscrepancyKind.ORPHAN_ORDER and d.scope:
                order = self.order(account, d.key)
                if order is not None:
                    orphans.append((order, d.scope))
        return orphans

    def quarantined_scopes(self: _LedgerCore, account: str) -> frozenset[str]:
        """Scopes ("strategy:symbol", "*:symbol") quarantined by open orphan orders."""
        return frozenset(
            d.scope for d in self.discrepancies(account) if d.kind == DiscrepancyKind.ORPHAN_ORDER and d.scope
        )

    def override_gate(
        self: _LedgerCore, account: str, *, operator: str, permission: str, reason: str
    ) -> GateState:
        """Open the gate by hand; stored with the operator, the permission and the reason.

        Raises:
            PermissionError: no operator, or not the override permission.
        """
        self._change_gate(account, lambda g: g.override(operator, permission, reason, self.clock()))
        log.warning("gate of %s overridden by %s: %s", account, operator, reason)
        return self.gate(account)

    def claim(self: _LedgerCore, account: str, symbol: str, strategy: str) -> None:
        """Record that `strategy` owns `symbol`: orphan orders in it quarantine only that strategy."""
        self._change_gate(account, lambda g: g.claim(symbol, strategy))

    def resolve_discrepancy(self: _LedgerCore, discrepancy: UUID, *, resolution: str, by: str) -> None:
        """Mark a discrepancy resolved by an operator (lifts an orphan's quarantine)."""

        def apply(batch: _Batch) -> None:
            aggregate = batch.get(discrepancy)
            if aggregate is None:
                msg = f"no discrepancy {discrepancy}"
                raise LookupError(msg)
            aggregate.resolve(resolution, by, self.clock())
            batch.collect(aggregate)

        self._commit(apply)

    def unlock_symbol(self: _LedgerCore, account: str, symbol: str, *, by: str) -> None:
        """Lift a symbol lock by hand."""
        self._change_gate(account, lambda g: g.unlock(symbol, by))

    def block(self: _LedgerCore, account: str, reasons: tuple[str, ...]) -> GateState:
        """Close the gate with reasons (recovery could not resolve everything)."""
        self._change_gate(account, lambda g: g.move(GateState.BLOCKED, reasons, "startup", self.clock()))
        return self.gate(account)

    def _change_gate(self: _LedgerCore, account: str, change: Callable[[Gate], None]) -> None:
        """Apply one change to the account's gate in its own transaction."""

        def apply(batch: _Batch) -> None:
            gate = self._gate_aggregate(batch, account)
            change(gate)
            batch.collect(gate)

        self._commit(apply)

    def _gate_aggregate(self: _LedgerCore, batch: _Batch, account: str) -> Gate:
        gate = batch.get(gate_id(account))
        if gate is None:
            gate = Gate.open(account)
            batch.add(gate)
        return gate  # type: ignore[no-any-return]

    def _judge_gate(self: _LedgerCore, account: str, *, stale: Sequence[str]) -> GateState:
        """READY unless the data was stale (`stale` says how) or a critical discrepancy is open."""
        reasons = list(stale)
        reasons += [
            f"{d.kind} {d.key}: {d.detail}" for d in self.discrepancies(account) if d.severity == "CRITICAL"
        ]
        verdict = GateState.BLOCKED if reasons else GateState.READY

        self._change_gate(account, lambda g: g.move(verdict, tuple(reasons), "reconciler", self.clock()))
        return self.gate(account)
