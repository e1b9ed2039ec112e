"""Findings: recording discrepancies once, and resolving the open ones.

A `Finding` is what a rule concluded; a `Discrepancy` is the stored record of it. Two
rules keep one problem one record:

- `record_findings` derives each discrepancy's id from its kind, subject and evidence
  (orphans: from kind and subject only), so the same finding on the same evidence is
  recorded once however often it is seen (a repeated report, a retried transaction);
- `OpenDiscrepancies` holds what was open when a use case started, so a finding that is
  still open (same kind, subject, expected and actual) is not recorded again on new
  evidence, and the open ones can be resolved by kind and subject.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from uuid import UUID

from trueup.application.unit_of_work import UnitOfWork
from trueup.domain.discrepancy import Discrepancy, DiscrepancyKind, Finding
from trueup.domain.ids import discrepancy_id
from trueup.domain.views import DiscrepancyView

log = logging.getLogger(__name__)


def record_findings(
    unit: UnitOfWork, account: str, findings: Sequence[Finding], evidence: UUID | None
) -> list[Discrepancy]:
    """Record findings as discrepancies (one per kind, subject and evidence); return the new ones."""
    recorded = []
    for finding in findings:
        # An orphan order is one discrepancy however often it is reported, so that its
        # quarantine is lifted by resolving one thing.
        orphan = finding.kind is DiscrepancyKind.ORPHAN_ORDER
        proof = "orphan" if orphan else f"{evidence}|{finding.detail}"
        ident = discrepancy_id(finding.kind, account, finding.key, proof)
        # The same finding on the same evidence is one discrepancy: recording it again
        # (a repeated report, a retried batch) stores nothing.
        if ident in unit.raised or unit.get(ident) is not None:
            continue
        unit.raised.add(ident)
        log.warning("%s %s %s: %s", finding.level, finding.kind, finding.key, finding.detail)
        discrepancy = Discrepancy._create(
            Discrepancy.Raised,
            id=ident,
            kind=finding.kind.value,
            severity=finding.level.value,
            account=account,
            key=finding.key,
            expected=finding.expected,
            actual=finding.actual,
            detail=finding.detail,
            evidence_id=evidence,
            ts_detected=unit.clock(),
            scope=finding.scope,
        )
        unit.add(discrepancy)
        unit.collect(discrepancy)
        recorded.append(discrepancy)
    return recorded


class OpenDiscrepancies:
    """An account's discrepancies open when a use case started, by subject."""

    def __init__(self, account: str, views: Iterable[DiscrepancyView]) -> None:
        """The open discrepancies `views` of `account` (as `Ledger.discrepancies` lists them)."""
        self.account = account
        self.views = list(views)
        self.keys = {(v.kind, v.key, v.expected, v.actual) for v in self.views}
        """(kind, subject, expected, actual) of each open one, and of each recorded since."""
        self.by_key: dict[str, list[DiscrepancyView]] = {}
        """The views by subject, so resolving one subject does not scan them all."""
        for view in self.views:
            self.by_key.setdefault(view.key, []).append(view)

    def is_open(self, kind: DiscrepancyKind, key: str) -> bool:
        """Whether a discrepancy of `kind` about `key` was open."""
        return any(v.kind == kind for v in self.by_key.get(key, ()))

    def record_new(
        self, unit: UnitOfWork, findings: Iterable[Finding], evidence: UUID | None
    ) -> list[Discrepancy]:
        """Record the findings not already open (same kind, subject, expected and actual)."""
        fresh = []
        for finding in findings:
            key = (finding.kind.value, finding.key, finding.expected, finding.actual)
            if key in self.keys:
                continue
            self.keys.add(key)
            fresh.append(finding)
        return record_findings(unit, self.account, fresh, evidence)

    def resolve(
        self,
        unit: UnitOfWork,
        kinds: set[DiscrepancyKind],
        key: str | None,
        resolution: str,
        *,
        by: str = "reconciler",
    ) -> None:
        """Resolve the open discrepancies of these kinds (about one subject, or all)."""
        for view in self.views if key is None else self.by_key.get(key, ()):
            if view.kind in kinds:
                discrepancy = unit.get(view.id)
                if discrepancy is not None and discrepancy.resolution is None:
                    discrepancy.resolve(resolution, by, unit.clock())
                    unit.collect(discrepancy)
                    self.keys.discard((view.kind, view.key, view.expected, view.actual))


def resolve_all(unit: UnitOfWork, discrepancies: Iterable[Discrepancy], resolution: str, by: str) -> None:
    """Resolve discrepancies just recorded (a finding already settled when it is found)."""
    for discrepancy in discrepancies:
        discrepancy.resolve(resolution, by, unit.clock())
        unit.collect(discrepancy)
