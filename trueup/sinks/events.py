"""The public form of a log event: `SinkEvent`, what every sink sends (docs/events.md).

`sink_event(store, logged)` turns a stored event into the payload a subscriber can act
on without a second lookup, or None for events no sink publishes (fills, raw broker
messages, position changes by fills). Four kinds are published:

- ORDER_UPDATED (`Order.Updated`): account, client order id, symbol, status and filled
  quantity before and after.
- POSITION_SYNCED (`Position.Synced`): account, symbol, quantity before and after.
- DISCREPANCY (every `Discrepancy` event): the discrepancy as it is after the event,
  with its `lifecycle`: raised, escalated (severity went up), resolved, reopened, or
  updated (anything else: the same problem seen again, which alerts ignore).
- GATE_CHANGED (`Gate.Changed`): the account's gate state before and after.

Events stored before `Order.Updated` and `Position.Synced` named their subject carry
empty fields; those are filled here from the aggregate as it stood at that event, so
old and new events publish alike. Discrepancy and gate events are always read that way
(their events carry only what changed).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from trueup.adapters.eventstore.log import LoggedEvent
from trueup.adapters.eventstore.store import Store
from trueup.domain.discrepancy import Discrepancy, Severity
from trueup.domain.gate import Gate
from trueup.domain.order import Order
from trueup.domain.position import Position

ORDER_UPDATED = "ORDER_UPDATED"
POSITION_SYNCED = "POSITION_SYNCED"
DISCREPANCY = "DISCREPANCY"
GATE_CHANGED = "GATE_CHANGED"
KINDS = frozenset({ORDER_UPDATED, POSITION_SYNCED, DISCREPANCY, GATE_CHANGED})
"""Every kind a sink publishes."""

SEVERITY_RANK = {s: rank for rank, s in enumerate(Severity)}
"""INFO < WARNING < ERROR < CRITICAL."""


class SinkEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One published event: its identity, where it is in the log, and its payload."""

    id: str
    """``<aggregate id>/<version>``: unique per stored event, the same on every re-read
    (the NATS message id, the webhook's ``X-Trueup-Event-Id``)."""
    kind: str
    """ORDER_UPDATED, POSITION_SYNCED, DISCREPANCY or GATE_CHANGED."""
    account: str
    position: int
    """The event's log position."""
    topic: str
    """The stored event's topic, e.g. ``trueup:Order.Updated``."""
    timestamp: datetime
    """When the event was recorded (UTC)."""
    data: dict[str, Any]
    """The kind's fields (docs/events.md); Decimals are exact strings once encoded."""


ENCODER = msgspec.json.Encoder(decimal_format="string", order="deterministic")
"""JSON for sink payloads: Decimals as exact strings, keys in a stable order."""


def encode(event: SinkEvent) -> bytes:
    """The event as JSON bytes (what NATS and webhooks carry)."""
    return ENCODER.encode(event)


def sink_event(store: Store, logged: LoggedEvent) -> SinkEvent | None:
    """The public form of `logged`, or None if no sink publishes its kind."""
    event = logged.event
    if isinstance(event, Order.Updated):
        kind, account, data = ORDER_UPDATED, *_order_updated(store, event)
    elif isinstance(event, Position.Synced):
        kind, account, data = POSITION_SYNCED, *_position_synced(store, event)
    elif isinstance(event, Discrepancy.Event):
        kind, account, data = DISCREPANCY, *_discrepancy(store, event)
    elif isinstance(event, Gate.Changed):
        kind, account, data = GATE_CHANGED, *_gate_changed(store, event)
    else:
        return None
    return SinkEvent(
        id=f"{event.originator_id}/{event.originator_version}",
        kind=kind,
        account=account,
        position=logged.position,
        topic=logged.topic,
        timestamp=event.timestamp,
        data=data,
    )


def _at(store: Store, ident: UUID, version: int) -> Any:  # noqa: ANN401 - any aggregate or None
    """The aggregate as it stood at `version` (None before its first event)."""
    if version < 1:
        return None
    return store.aggregate(ident, version)


def _order_updated(store: Store, event: Order.Updated) -> tuple[str, dict[str, Any]]:
    account, client_order_id, symbol = event.account, event.client_order_id, event.symbol
    if not account:  # stored before the event named its order
        state = _at(store, event.originator_id, event.originator_version).state
        account, client_order_id, symbol = state.account, state.client_order_id, state.symbol
    return account, {
        "account": account,
        "client_order_id": client_order_id,
        "symbol": symbol,
        "status_before": event.status_before,
        "status_after": event.status_after,
        "filled_before": event.filled_before,
        "filled_after": event.filled_after,
        "evidence_id": event.evidence_id,
    }


def _position_synced(store: Store, event: Position.Synced) -> tuple[str, dict[str, Any]]:
    account, symbol, qty_before = event.account, event.symbol, event.qty_before
    if not account or qty_before is None:  # stored before the event named its position
        state = _at(store, event.originator_id, event.originator_version).state
        account, symbol = state.account, state.symbol
        previous = _at(store, event.originator_id, event.originator_version - 1)
        qty_before = previous.state.qty if previous is not None else Decimal(0)
    return account, {
        "account": account,
        "symbol": symbol,
        "qty_before": qty_before,
        "qty_after": event.qty,
        "avg_cost": event.avg_cost,
        "fills": [{"exec_id": f.exec_id, "qty": f.qty, "price": f.price} for f in event.fills],
        "evidence_id": event.evidence_id,
    }


def lifecycle(before: Any, after: Any) -> str:  # noqa: ANN401 - Discrepancy aggregates (before may be None)
    """Which stage of its life a discrepancy event marks, from the aggregate before and after.

    Read from state, not from event names, so it holds however a discrepancy is kept up
    to date (re-raised or updated in place): one raise, each escalation, one resolution.
    """
    if before is None:
        return "raised"
    if before.resolution is None and after.resolution is not None:
        return "resolved"
    if before.resolution is not None and after.resolution is None:
        return "reopened"
    if SEVERITY_RANK[Severity(after.severity)] > SEVERITY_RANK[Severity(before.severity)]:
        return "escalated"
    return "updated"


def _discrepancy(store: Store, event: Discrepancy.Event) -> tuple[str, dict[str, Any]]:
    after = _at(store, event.originator_id, event.originator_version)
    before = _at(store, event.originator_id, event.originator_version - 1)
    return after.account, {
        "id": str(event.originator_id),
        "lifecycle": lifecycle(before, after),
        "kind": str(after.kind),
        "severity": str(after.severity),
        "severity_before": str(before.severity) if before is not None else None,
        "account": after.account,
        "key": after.key,
        "expected": after.expected,
        "actual": after.actual,
        "detail": after.detail,
        "scope": after.scope,
        "evidence_id": after.evidence_id,
        "ts_detected": after.ts_detected,
        "resolution": after.resolution,
        "resolved_by": after.resolved_by,
    }


def _gate_changed(store: Store, event: Gate.Changed) -> tuple[str, dict[str, Any]]:
    after = _at(store, event.originator_id, event.originator_version)
    before = _at(store, event.originator_id, event.originator_version - 1)
    return after.account, {
        "account": after.account,
        "state": str(event.state),
        "state_before": str(before.state) if before is not None else None,
        "reasons": list(event.reasons),
        "by": event.by,
        "override": event.permission is not None,
        "ts": event.ts,
    }
