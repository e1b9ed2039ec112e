"""What one reconciliation stored (`ReconcileResult`), and its state while it runs (`ReconcileRun`).

Shared by the reconciler (`reconciler.py`) and its position comparison (`positions.py`);
`ReconcileResult` is importable from `trueup.application.reconciler` too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from trueup.application.evidence import Answers, answers_of, snapshot_id, stored_form
from trueup.application.findings import OpenDiscrepancies
from trueup.domain.gate import GateState
from trueup.domain.order import OrderState
from trueup.domain.reconcile import PositionPolicy
from trueup.domain.reports import BrokerSnapshot

__all__ = ["ReconcileResult", "ReconcileRun"]


class ReconcileResult(msgspec.Struct):
    """What one reconciliation stored."""

    account: str
    order_updates: list[Any] = msgspec.field(default_factory=list)
    """ORDER_UPDATED events (`Order.Updated`)."""
    position_syncs: list[Any] = msgspec.field(default_factory=list)
    """POSITION_SYNCED events (`Position.Synced`)."""
    discrepancies: list[Any] = msgspec.field(default_factory=list)
    """DISCREPANCY events (`Discrepancy.Raised`)."""
    events: list[Any] = msgspec.field(default_factory=list)
    """Every event stored, derived order events included, in log order."""
    stale: bool = False
    """Part or all of the snapshot could not be used (STALE_DATA)."""
    gate: GateState | None = None
    """The account's gate after this reconciliation."""
    matched: Any = None
    """The BooksMatched record (`BooksMatched.Recorded`) a clean run stored, when one was due.

    Not in `events`: it changes nothing in the books, it proves they matched."""
    retake: bool = False
    """Nothing was concluded about orders or positions: the books moved after the
    snapshot's cut (a fill another writer booked meanwhile, say), so the snapshot may
    predate it. Take a new snapshot and reconcile again."""


@dataclass
class ReconcileRun:
    """State of one reconciliation while its batch is built."""

    snapshot: BrokerSnapshot
    policy: PositionPolicy
    lost_after: int
    open: OpenDiscrepancies
    """Discrepancies of the account open when the run started (and recorded since)."""
    known: dict[str, OrderState] = field(default_factory=dict)
    """Read-model state of the orders the snapshot names, by client order id."""
    by_broker_id: dict[str, str] = field(default_factory=dict)
    """Broker order id -> client order id, from those states."""
    listed: set[str] = field(default_factory=set)
    """Client order ids the snapshot listed."""
    stale: bool = False
    stale_reasons: list[str] = field(default_factory=list)
    """The gate's reasons for stale data: which parts, and the broker's words for why."""
    clean: bool = False
    """Fresh, every part known, nothing open and nothing concluded: the books matched."""
    retired_before: datetime | None = None
    """Orders closed at the broker before this instant and not open here are not compared."""
    compared_orders: bool = False
    """The snapshot's orders were compared (known and fresh enough)."""

    @functools.cached_property
    def answers(self) -> Answers:
        """The broker's raw answers with their content addresses, hashed only when needed."""
        return answers_of(self.snapshot)

    retake: bool = False
    """The books moved after the snapshot's cut: nothing was concluded about them."""

    @functools.cached_property
    def evidence(self) -> UUID:
        """The snapshot's id, computed only once something is concluded from it.

        Hashing the encoded snapshot is a tenth of a periodic run that finds nothing.
        """
        return snapshot_id(stored_form(self.snapshot, self.answers))
