"""Discrepancies: every refused, conflicting or surprising input, recorded with its evidence."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate


class DiscrepancyKind(StrEnum):
    """What disagreed."""

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
    QUANTITY_CHANGED = "QUANTITY_CHANGED"
    """The broker reports a quantity for an order that nobody asked it to amend to; ours kept."""
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


class LostOutcome(StrEnum):
    """How an operator settles a LOST order (`Ledger.resolve_lost`)."""

    GONE = "gone"
    """The broker does not have it: closed here (CANCELED), never re-sent."""
    FOUND = "found"
    """The broker has it: it stays open and is booked from the broker's reports as usual."""


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
    DiscrepancyKind.QUANTITY_CHANGED: Severity.ERROR,
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
    topic: str | None = None
    """Which problem of its kind about `key` this is, when the rule names one (see `problem_topic`)."""

    @property
    def level(self) -> Severity:
        """Effective severity."""
        return self.severity or DEFAULT_SEVERITY[self.kind]

    @property
    def problem(self) -> tuple[str, str, str]:
        """The problem this finding is a sighting of: (kind, subject, topic)."""
        return (self.kind.value, self.key, problem_topic(self.kind, self.expected, self.topic))


SUBJECT_KINDS = frozenset(
    {
        DiscrepancyKind.ORPHAN_ORDER,
        DiscrepancyKind.MISSING_AT_BROKER,
        DiscrepancyKind.LOST,
        DiscrepancyKind.POSITION_MISMATCH,
        DiscrepancyKind.MISSING_LOCAL_POSITION,
        DiscrepancyKind.NAKED_POSITION,
    }
)
"""Kinds about the state of one subject (an order, a symbol): one problem per kind and subject."""


def problem_topic(kind: DiscrepancyKind | str, expected: str, topic: str | None = None) -> str:
    """What tells one problem of `kind` about a subject from another of the same kind.

    One problem is one discrepancy: a new sighting of an open one updates it (`Discrepancy.Seen`)
    instead of raising another. The identity never includes volatile text (counts, ages,
    broker words, evidence): a rule that names a `topic` gets it; a kind about a subject's
    state (`SUBJECT_KINDS`: the order is missing or lost, the position disagrees) has one
    problem per subject, whatever the figures; any other kind is told apart by what was
    expected (the STALE_DATA of the fills is not that of the positions). A finding about one
    execution names it in its topic (execution E1 repeated with other figures is not E2,
    though both first read ``5 @ 100``).
    """
    if topic is not None:
        return topic
    return "" if DiscrepancyKind(kind) in SUBJECT_KINDS else expected


class Discrepancy(Aggregate):
    """One recorded problem: raised once, updated on each new sighting, resolved at most once.

    Lifecycle: `Raised`, then any number of `Seen` (the same problem seen again: latest
    actual, detail, severity and evidence, last seen, count of sightings), then `Resolved`.
    A resolution by an operator is an *acknowledgement* (`Resolved.acknowledged`): the same
    problem seen again unchanged is not raised again; `Cleared` ends the acknowledgement
    once the problem is seen gone or changed, and a recurrence is a new discrepancy.
    """

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
        topic: str | None = None
        """`problem_topic` of the finding (None in events stored before it existed: derived)."""

    class Seen(Event):
        """The open discrepancy's problem was seen again: one problem, one alarm."""

        TOPIC = "trueup:Discrepancy.Seen"
        severity: str
        actual: str
        detail: str
        evidence_id: UUID | None
        ts_seen: datetime
        count: int
        """Sightings so far, the first (Raised) included."""

        def apply(self, aggregate: Discrepancy) -> None:
            """Take the latest figures and evidence; count the sighting."""
            aggregate.severity = Severity(self.severity)
            aggregate.actual = self.actual
            aggregate.detail = self.detail
            aggregate.evidence_id = self.evidence_id
            aggregate.last_seen = self.ts_seen
            aggregate.count = self.count

    class Resolved(Event):
        """The discrepancy no longer holds (repaired, confirmed, or overridden)."""

        TOPIC = "trueup:Discrepancy.Resolved"
        resolution: str
        by: str
        ts_resolved: datetime
        acknowledged: bool = False
        """Resolved by an operator while the problem may still be present (see the class)."""

        def apply(self, aggregate: Discrepancy) -> None:
            """Mark resolved."""
            aggregate.resolution = self.resolution
            aggregate.resolved_by = self.by
            aggregate.acknowledged = self.acknowledged

    class Cleared(Event):
        """The acknowledged problem was seen gone or changed: a recurrence is raised anew."""

        TOPIC = "trueup:Discrepancy.Cleared"
        reason: str
        ts_cleared: datetime

        def apply(self, aggregate: Discrepancy) -> None:
            """End the acknowledgement."""
            aggregate.acknowledged = False

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
        topic: str | None = None,
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
        self.topic = problem_topic(self.kind, expected, topic)
        self.last_seen = ts_detected
        self.count = 1
        self.resolution: str | None = None
        self.resolved_by: str | None = None
        self.acknowledged = False

    @property
    def problem(self) -> tuple[str, str, str]:
        """The problem this discrepancy records: (kind, subject, topic), as `Finding.problem`."""
        return (self.kind.value, self.key, self.topic)

    def see(self, finding: Finding, evidence_id: UUID | None, ts: datetime) -> None:
        """Record another sighting of this open discrepancy's problem.

        Nothing is stored for the evidence it already names (the same snapshot reconciled
        again is not a new sighting), nor once it is resolved.
        """
        if self.resolution is not None or (evidence_id is not None and evidence_id == self.evidence_id):
            return
        self.trigger_event(
            self.Seen,
            severity=finding.level.value,
            actual=finding.actual,
            detail=finding.detail,
            evidence_id=evidence_id,
            ts_seen=ts,
            count=self.count + 1,
        )

    def resolve(self, resolution: str, by: str, ts: datetime, *, acknowledged: bool = False) -> None:
        """Record that the discrepancy was resolved; a second resolve changes nothing."""
        if self.resolution is None:
            self.trigger_event(
                self.Resolved, resolution=resolution, by=by, ts_resolved=ts, acknowledged=acknowledged
            )

    def clear(self, reason: str, ts: datetime) -> None:
        """End an acknowledgement (no event if there is none)."""
        if self.acknowledged:
            self.trigger_event(self.Cleared, reason=reason, ts_cleared=ts)
