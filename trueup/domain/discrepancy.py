"""Discrepancies: every refused, conflicting or surprising input, recorded with its evidence."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate


class DiscrepancyKind(StrEnum):
    """What disagreed (DESIGN.md, "Reconciliation")."""

    ORPHAN_ORDER = "ORPHAN_ORDER"
    """An order at the broker that we never sent or do not know."""
    MISSING_AT_BROKER = "MISSING_AT_BROKER"
    """Open here, absent from a complete-history snapshot."""
    LOST = "LOST"
    """Missing at the broker for more cycles than allowed."""
    STATUS_CONFLICT = "STATUS_CONFLICT"
    """Two terminal statuses disagree, or the broker's status contradicts the fills."""
    FILL_MISMATCH = "FILL_MISMATCH"
    """Fill figures disagree (same exec id, different content; cumulative without price; ...)."""
    OVERFILL = "OVERFILL"
    """A fill or report would take filled quantity above the order quantity; refused."""
    POSITION_MISMATCH = "POSITION_MISMATCH"
    """Our position differs from the broker's."""
    MISSING_LOCAL_POSITION = "MISSING_LOCAL_POSITION"
    """The broker holds a position we do not have."""
    NAKED_POSITION = "NAKED_POSITION"
    """We hold a position the broker does not have."""
    STALE_DATA = "STALE_DATA"
    """A broker query failed or is too old; nothing was concluded from it."""
    UNKNOWN_STATUS = "UNKNOWN_STATUS"
    """A broker status string no table maps; the report changed nothing."""
    INVALID_REPORT = "INVALID_REPORT"
    """A payload or report could not be read or contradicts the order it names."""
    DEAD_LETTER = "DEAD_LETTER"
    """A sink gave up on a log event after its retries and moved on (trueup.sinks)."""


class Severity(StrEnum):
    """How loudly to tell: CRITICAL makes `trueup status` exit non-zero."""

    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


DEFAULT_SEVERITY: dict[DiscrepancyKind, Severity] = {
    DiscrepancyKind.ORPHAN_ORDER: Severity.ERROR,
    DiscrepancyKind.MISSING_AT_BROKER: Severity.ERROR,
    DiscrepancyKind.LOST: Severity.CRITICAL,
    DiscrepancyKind.STATUS_CONFLICT: Severity.WARNING,
    DiscrepancyKind.FILL_MISMATCH: Severity.WARNING,
    DiscrepancyKind.OVERFILL: Severity.CRITICAL,
    DiscrepancyKind.POSITION_MISMATCH: Severity.ERROR,
    DiscrepancyKind.MISSING_LOCAL_POSITION: Severity.ERROR,
    DiscrepancyKind.NAKED_POSITION: Severity.CRITICAL,
    DiscrepancyKind.STALE_DATA: Severity.WARNING,
    DiscrepancyKind.UNKNOWN_STATUS: Severity.WARNING,
    DiscrepancyKind.INVALID_REPORT: Severity.ERROR,
    DiscrepancyKind.DEAD_LETTER: Severity.ERROR,
}
"""Severity of each kind unless a rule says otherwise."""


class Finding(msgspec.Struct, frozen=True):
    """A discrepancy a pure rule found; the ledger stores it with its evidence."""

    kind: DiscrepancyKind
    """What disagreed."""
    key: str
    """Subject: a client order id, a symbol, or the account."""
    expected: str
    """What we believed (or what the rule required)."""
    actual: str
    """What the input said."""
    detail: str
    """One sentence for the operator: what happened and what was done."""
    severity: Severity | None = None
    """Overrides the kind's default severity."""
    scope: str | None = None
    """Quarantine scope, for orphan orders and symbol locks."""

    @property
    def level(self) -> Severity:
        """Effective severity."""
        return self.severity or DEFAULT_SEVERITY[self.kind]


class Discrepancy(Aggregate):
    """One recorded discrepancy; raised once, resolved at most once."""

    TOPIC = "trueup:Discrepancy"

    class Event(Aggregate.Event):
        """Base of discrepancy events."""

        TOPIC = "trueup:Discrepancy.Event"

    class Raised(Event, Aggregate.Created):
        """A discrepancy was found."""

        TOPIC = "trueup:Discrepancy.Raised"
        kind: str
        severity: str
        account: str
        key: str
        expected: str
        actual: str
        detail: str
        evidence_id: UUID | None
        """Aggregate id of the raw broker message (or snapshot) that shows it."""
        ts_detected: datetime
        scope: str | None
        """Quarantine scope ("strategy:symbol", "*:symbol") for orphan orders and locks."""

    class Resolved(Event):
        """The discrepancy no longer holds (repaired, confirmed, or overridden)."""

        TOPIC = "trueup:Discrepancy.Resolved"
        resolution: str
        by: str
        ts_resolved: datetime

        def apply(self, aggregate: Discrepancy) -> None:
            """Mark resolved."""
            aggregate.resolution = self.resolution
            aggregate.resolved_by = self.by

    def __init__(  # noqa: PLR0913 - mirrors the Raised event
        self,
        *,
        kind: str,
        severity: str,
        account: str,
        key: str,
        expected: str,
        actual: str,
        detail: str,
        evidence_id: UUID | None,
        ts_detected: datetime,
        scope: str | None,
    ) -> None:
        """Initialise from the Raised event."""
        self.kind = DiscrepancyKind(kind)
        self.severity = Severity(severity)
        self.account = account
        self.key = key
        self.expected = expected
        self.actual = actual
        self.detail = detail
        self.evidence_id = evidence_id
        self.ts_detected = ts_detected
        self.scope = scope
        self.resolution: str | None = None
        self.resolved_by: str | None = None

    def resolve(self, resolution: str, by: str, ts: datetime) -> None:
        """Record that the discrepancy was resolved; a second resolve changes nothing."""
        if self.resolution is None:
            self.trigger_event(self.Resolved, resolution=resolution, by=by, ts_resolved=ts)
