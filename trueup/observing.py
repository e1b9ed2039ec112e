"""`ServiceObserver`: what the reconciliation service tells an observer (metrics) as it works."""

from __future__ import annotations

from typing import Protocol

from trueup.application.reconciler import ReconcileResult

__all__ = ["ServiceObserver"]


class ServiceObserver(Protocol):
    """What the service tells an observer (metrics) as it works; every call returns at once.

    An observer that raises is logged and counted like any other failure; the service goes on.
    """

    def reconciled(self, account: str, trigger: str, result: ReconcileResult | None, seconds: float) -> None:
        """One reconciliation of `account` ended (`result` None: the ledger raised)."""

    def raised(self, account: str, kind: str, severity: str) -> None:
        """A discrepancy was raised through the service."""

    def stream_message(self, account: str, outcome: str) -> None:
        """A stream message was handled: ``applied``, ``invalid`` (stored, INVALID_REPORT) or ``error``."""
