"""trueup: event-sourced order and position reconciliation for trading systems.

The public contract: report types, statuses, views, errors and `Ledger`; the service, the
submitter and the types their calls take are imported on first use (`__getattr__`), so
`import trueup` stays light. Broker SDKs are optional extras and are never imported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trueup.domain.discrepancy import DiscrepancyKind, Severity
from trueup.domain.errors import (
    BrokerQueryError,
    ConfigError,
    ConflictError,
    InvalidReport,
    NotReadyError,
    StoreError,
    TrueupError,
)
from trueup.domain.reports import BrokerSnapshot, FillReport, OrderReport, PositionReport, Report
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource, Side
from trueup.domain.views import DiscrepancyView, FillView, OrderView, PositionView
from trueup.ledger import Ledger, LoggedEvent

if TYPE_CHECKING:
    from trueup.adapters.base import OrderRequest, OrderType
    from trueup.application.reconciler import ReconcileResult
    from trueup.domain.gate import GateState
    from trueup.domain.reconcile import PositionPolicy
    from trueup.domain.reports import RawAnswer
    from trueup.service import ReconciliationService
    from trueup.submission import Submitter, start_session

_LAZY = {
    "GateState": "trueup.domain.gate",
    "OrderRequest": "trueup.adapters.base",
    "OrderType": "trueup.adapters.base",
    "PositionPolicy": "trueup.domain.reconcile",
    "RawAnswer": "trueup.domain.reports",
    "ReconcileResult": "trueup.application.reconciler",
    "ReconciliationService": "trueup.service",
    "Submitter": "trueup.submission",
    "start_session": "trueup.submission",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whichever public name is asked for
    """Import a lazily exported name on first use."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'trueup' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BrokerQueryError",
    "BrokerSnapshot",
    "ConfigError",
    "ConflictError",
    "DiscrepancyKind",
    "DiscrepancyView",
    "FillReport",
    "FillView",
    "GateState",
    "InvalidReport",
    "Ledger",
    "LoggedEvent",
    "NotReadyError",
    "OrderFlag",
    "OrderReport",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "OrderView",
    "PositionPolicy",
    "PositionReport",
    "PositionView",
    "RawAnswer",
    "ReconcileResult",
    "ReconciliationService",
    "Report",
    "ReportSource",
    "Severity",
    "Side",
    "StoreError",
    "Submitter",
    "TrueupError",
    "start_session",
]
