"""The trading gate of one account: may new orders go out, and on which symbols not.

Startup: RECONCILING until the first reconciliation, then READY or BLOCKED. New orders
are refused unless READY; cancels always pass; a reduce-only order passes when it
reduces the broker's live position by no more than what our working orders on the same
side do not already take (its capacity). Symbol locks (policy `lock`) and orphan-order
quarantines refuse new orders in their scope even when READY. A manual override needs
an operator and the override permission, and is stored like every other change.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from trueup.domain.errors import NotReadyError
from trueup.domain.ids import NAMESPACE
from trueup.domain.status import Side

OVERRIDE_PERMISSION = "trueup.gate.override"
POSITION_LOCK = "position policy"
"""Owner of the locks the `lock` position policy places (and lifts when positions agree)."""
LOST_ORDER_LOCK = "lost order"
"""Owner of the locks placed when an in-flight order cannot be found (lifted by an operator)."""
"""The permission an operator must hold to override the gate."""


class GateState(StrEnum):
    """Whether new orders may be sent."""

    RECONCILING = "RECONCILING"
    READY = "READY"
    BLOCKED = "BLOCKED"


def gate_id(account: str) -> UUID:
    """Id of the gate of `account`."""
    return uuid5(NAMESPACE, f"gate|{account}")


class Gate(Aggregate):
    """The gate of one account."""

    TOPIC = "trueup:Gate"

    class Event(Aggregate.Event):
        """Base of gate events."""

        TOPIC = "trueup:Gate.Event"

    class Opened(Event, Aggregate.Created):
        """The account's gate was first used."""

        TOPIC = "trueup:Gate.Opened"
        account: str

    class Changed(Event):
        """The gate moved (startup, a reconciliation's verdict, or an override)."""

        TOPIC = "trueup:Gate.Changed"
        state: GateState
        reasons: tuple[str, ...]
        by: str
        """"reconciler", "startup", or the operator who overrode."""
        permission: str | None
        ts: datetime

        def apply(self, aggregate: Gate) -> None:
            """Take the new state; an override remembers what it overrode."""
            if self.permission is not None:
                aggregate.overridden = aggregate.reasons
            elif self.state is not GateState.READY:
                aggregate.overridden = None  # a new session or new reasons: the override is spent
            aggregate.state = self.state
            aggregate.reasons = self.reasons

    class SymbolLocked(Event):
        """New risk on the symbol is refused (position policy `lock`)."""

        TOPIC = "trueup:Gate.SymbolLocked"
        symbol: str
        reason: str
        owner: str
        """What placed the lock ("position policy", "lost order"); only its owner lifts it."""

        def apply(self, aggregate: Gate) -> None:
            """Add the lock."""
            aggregate.locks = {**aggregate.locks, self.symbol: self.reason}
            aggregate.lock_owners = {**aggregate.lock_owners, self.symbol: self.owner}

    class SymbolClaimed(Event):
        """A strategy owns the symbol: orphan orders in it quarantine only that strategy."""

        TOPIC = "trueup:Gate.SymbolClaimed"
        symbol: str
        strategy: str

        def apply(self, aggregate: Gate) -> None:
            """Record the claim."""
            aggregate.claims = {**aggregate.claims, self.symbol: self.strategy}

    class SymbolUnlocked(Event):
        """The lock on the symbol was lifted."""

        TOPIC = "trueup:Gate.SymbolUnlocked"
        symbol: str
        by: str

        def apply(self, aggregate: Gate) -> None:
            """Remove the lock."""
            aggregate.locks = {k: v for k, v in aggregate.locks.items() if k != self.symbol}
            aggregate.lock_owners = {k: v for k, v in aggregate.lock_owners.items() if k != self.symbol}

    def __init__(self, *, account: str) -> None:
        """Initialise RECONCILING, with no locks."""
        self.account = account
        self.state = GateState.RECONCILING
        self.reasons: tuple[str, ...] = ()
        self.locks: dict[str, str] = {}
        self.lock_owners: dict[str, str] = {}
        self.claims: dict[str, str] = {}
        self.overridden: tuple[str, ...] | None = None
        """Blocking reasons an operator overrode; the same reasons do not block again."""

    @classmethod
    def open(cls, account: str) -> Gate:
        """Create the gate of `account`."""
        return cls._create(cls.Opened, id=gate_id(account), account=account)

    def move(self, state: GateState, reasons: tuple[str, ...], by: str, ts: datetime) -> None:
        """Change state (no event if nothing changes; an override holds for the reasons it saw)."""
        overridden = self.overridden
        if state is GateState.BLOCKED and overridden is not None and set(reasons) <= set(overridden):
            return
        if (state, reasons) != (self.state, self.reasons):
            self.trigger_event(self.Changed, state=state, reasons=reasons, by=by, permission=None, ts=ts)

    def override(self, operator: str, permission: str, reason: str, ts: datetime) -> None:
        """Open the gate by hand; refused without an operator and the override permission."""
        if not operator.strip():
            msg = "a gate override needs the operator's identity"
            raise PermissionError(msg)
        if permission != OVERRIDE_PERMISSION:
            msg = f"operator {operator!r} lacks {OVERRIDE_PERMISSION!r} (has {permission!r})"
            raise PermissionError(msg)
        self.trigger_event(
            self.Changed,
            state=GateState.READY,
            reasons=(f"override: {reason}",),
            by=operator,
            permission=permission,
            ts=ts,
        )

    def lock(self, symbol: str, reason: str, owner: str) -> None:
        """Lock a symbol (no event if already locked)."""
        if symbol not in self.locks:
            self.trigger_event(self.SymbolLocked, symbol=symbol, reason=reason, owner=owner)

    def claim(self, symbol: str, strategy: str) -> None:
        """Record that `strategy` owns `symbol` (no event if it already does)."""
        if self.claims.get(symbol) != strategy:
            self.trigger_event(self.SymbolClaimed, symbol=symbol, strategy=strategy)

    def unlock(self, symbol: str, by: str) -> None:
        """Lift a symbol lock (no event if not locked)."""
        if symbol in self.locks:
            self.trigger_event(self.SymbolUnlocked, symbol=symbol, by=by)


def check_new_order(  # noqa: PLR0913 - everything the decision reads
    gate: Gate | None,
    *,
    account: str,
    symbol: str,
    side: Side,
    quantity: Decimal,
    strategy: str | None,
    quarantined_scopes: frozenset[str],
    reduce_only: bool = False,
    live_position: Decimal | None = None,
    working_same_side: Decimal | None = Decimal(0),
) -> None:
    """Refuse a new order the gate does not allow, with the reason; return if allowed.

    A reduce-only order's capacity is the broker's live position less what our working
    orders in the symbol on the same side still have to fill (`working_same_side`; None
    when one of them has no known quantity): two reduce-only SELL 4 against a long 4
    would flip it, so the second is refused.

    Raises:
        NotReadyError: naming the gate state, the lock or the quarantine scope.
    """
    if reduce_only:
        # A reduce-only order lowers risk: allowed in any state, but only when the broker's
        # live position proves it reduces. Without that figure we fail closed.
        if live_position is None:
            msg = f"{account}: reduce-only {side} {quantity} {symbol} refused: broker's live position unknown"
            raise NotReadyError(msg)
        reduces = (live_position > 0 and side is Side.SELL) or (live_position < 0 and side is Side.BUY)
        if not reduces or quantity > abs(live_position):
            msg = (
                f"{account}: reduce-only {side} {quantity} {symbol} does not reduce the broker's "
                f"live position {live_position}"
            )
            raise NotReadyError(msg)
        if working_same_side is None:
            msg = (
                f"{account}: reduce-only {side} {quantity} {symbol} refused: a working {side} order "
                f"in {symbol} has no known quantity, so the capacity left is unknown"
            )
            raise NotReadyError(msg)
        capacity = abs(live_position) - working_same_side
        if quantity > capacity:
            msg = (
                f"{account}: reduce-only {side} {quantity} {symbol} refused: the live position "
                f"{live_position} less our working {side} orders ({working_same_side}) "
                f"leaves {max(capacity, 0)}"
            )
            raise NotReadyError(msg)
        return
    if gate is None or gate.state is not GateState.READY:
        state = GateState.RECONCILING if gate is None else gate.state
        reasons = "" if gate is None or not gate.reasons else f" ({'; '.join(gate.reasons)})"
        msg = f"{account}: new orders refused: gate is {state}{reasons}"
        raise NotReadyError(msg)
    if symbol in gate.locks:
        msg = f"{account}: new orders in {symbol} refused: symbol locked ({gate.locks[symbol]})"
        raise NotReadyError(msg)
    for scope in (f"*:{symbol}", f"{strategy}:{symbol}" if strategy else None):
        if scope is not None and scope in quarantined_scopes:
            msg = f"{account}: new orders in {symbol} refused: orphan order quarantines {scope}"
            raise NotReadyError(msg)
