"""trueup: event-sourced order and position reconciliation for trading systems.

The public contract (DESIGN.md): report types, statuses, views, errors and `Ledger`.
Broker SDKs are optional extras and are never imported here.
"""

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

__all__ = [
    "BrokerQueryError",
    "BrokerSnapshot",
    "ConfigError",
    "ConflictError",
    "DiscrepancyKind",
    "DiscrepancyView",
    "FillReport",
    "FillView",
    "InvalidReport",
    "Ledger",
    "LoggedEvent",
    "NotReadyError",
    "OrderFlag",
    "OrderReport",
    "OrderStatus",
    "OrderView",
    "PositionReport",
    "PositionView",
    "Report",
    "ReportSource",
    "Severity",
    "Side",
    "StoreError",
    "TrueupError",
]
