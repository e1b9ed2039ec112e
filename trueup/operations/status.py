"""The JSON of `trueup status`: served at /v1/status by `trueup run`, printed by the CLI."""

from __future__ import annotations

from collections import Counter
from typing import Any

from trueup.domain.status import IN_FLIGHT_STATUSES
from trueup.ledger import Ledger

__all__ = ["gate_report", "status_report"]


def gate_report(ledger: Ledger, account: str) -> dict[str, Any]:
    """One account's gate: state, reasons, locked symbols and quarantined scopes."""
    state, reasons, locks = ledger.gate_details(account)
    return {
        "account": account,
        "gate": str(state),
        "reasons": list(reasons),
        "locked_symbols": locks,
        "quarantined": sorted(ledger.quarantined_scopes(account)),
    }


def status_report(ledger: Ledger, account: str | None = None) -> dict[str, Any]:
    """Gate per account, open orders and discrepancies, log positions, the service counters."""
    accounts = [account] if account else ledger.accounts()
    open_views = ledger.discrepancies(account)
    report: dict[str, Any] = {
        "store": repr(ledger),
        "log_position": ledger.last_position(),
        "projection_position": ledger.projector.position(),
        "accounts": {},
        "open_discrepancies_by_kind": dict(Counter(d.kind for d in open_views)),
        "critical_open": sum(1 for d in open_views if d.severity == "CRITICAL"),
        "service": ledger.service_status(),
    }
    for name in accounts:
        gate = gate_report(ledger, name)
        orders = ledger.open_orders(name)
        by_kind: dict[str, dict[str, int]] = {}
        for d in open_views:
            if d.account == name:
                severities = by_kind.setdefault(d.kind, {})
                severities[d.severity] = severities.get(d.severity, 0) + 1
        report["accounts"][name] = {
            "gate": gate["gate"],
            "reasons": gate["reasons"],
            "locked_symbols": gate["locked_symbols"],
            "quarantined": gate["quarantined"],
            "open_orders": len(orders),
            "inflight_orders": sum(1 for o in orders if o.status in IN_FLIGHT_STATUSES),
            "positions": len(ledger.positions(name)),
            "open_discrepancies": by_kind,
        }
    return report
