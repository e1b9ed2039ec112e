"""Audit replay: the books as they stood at a log position or a time, folded in memory.

Streams the log once (page by page) and applies each event with the domain's own
`apply()`; holds one state per order, position and discrepancy, never the history.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from trueup.domain.discrepancy import Discrepancy
from trueup.domain.order import Order, OrderState
from trueup.domain.position import Position, PositionState
from trueup.domain.views import OrderView, PositionView


class AsOf(msgspec.Struct):
    """Read-only books at one point of the log."""

    position: int
    """Last log position applied."""
    timestamp: datetime | None
    """Recording time of that event."""
    orders: list[OrderView]
    positions: list[PositionView]
    open_discrepancies: list[dict[str, Any]]


def replay(events: Iterable[Any]) -> AsOf:
    """Fold logged events (`LoggedEvent`s, in order) into the books they imply."""
    orders: dict[UUID, OrderState] = {}
    positions: dict[UUID, PositionState] = {}
    discrepancies: dict[UUID, dict[str, Any]] = {}
    last_position, last_time = 0, None
    for logged in events:
        event = logged.event
        last_position, last_time = logged.position, event.timestamp
        oid = event.originator_id
        if isinstance(event, Order.Event):
            orders[oid] = _evolve(Order, orders.get(oid), event)
        elif isinstance(event, Position.Event):
            positions[oid] = _evolve(Position, positions.get(oid), event)
        elif isinstance(event, Discrepancy.Raised):
            discrepancies[oid] = {
                "kind": event.kind,
                "severity": event.severity,
                "key": event.key,
                "expected": event.expected,
                "actual": event.actual,
                "detail": event.detail,
                "position": logged.position,
                "count": 1,
                "last_seen": event.ts_detected,
            }
        elif isinstance(event, Discrepancy.Seen):
            if oid in discrepancies:
                discrepancies[oid].update(
                    severity=event.severity,
                    actual=event.actual,
                    detail=event.detail,
                    count=event.count,
                    last_seen=event.ts_seen,
                )
        elif isinstance(event, Discrepancy.Resolved):
            discrepancies.pop(oid, None)
    return AsOf(
        position=last_position,
        timestamp=last_time,
        orders=[state.view() for state in orders.values()],
        positions=[state.view() for state in positions.values() if state.qty],
        open_discrepancies=sorted(discrepancies.values(), key=lambda d: d["position"]),
    )


def _evolve(cls: type[Order | Position], state: Any, event: Any) -> Any:  # noqa: ANN401
    """Apply one event to a state through the aggregate's own code."""
    if state is None:
        return event.mutate(None).state
    shell = cls.__new__(cls)
    shell.state = state
    event.apply(shell)
    return shell.state
