"""Findings: one problem, one discrepancy; updating and resolving the recorded ones.

A `Finding` is what a rule concluded; a `Discrepancy` is the stored record of a problem.
A problem is (kind, subject, topic) (`Finding.problem`, `problem_topic`): never the figures,
counts, ages, broker words or evidence, which change from one sighting to the next. So:

- a finding of a problem that is open updates it (`Discrepancy.Seen`: the latest actual,
  detail, severity and evidence, when last seen, how many sightings); it is never raised
  again, and the gate's reasons do not grow;
- a finding of a problem an operator acknowledged (resolved it by hand while it may still
  be present) is not raised again while its `actual` is unchanged; a changed one ends the
  acknowledgement (`Discrepancy.Cleared`) and is raised anew, as is a recurrence after
  the reconciler saw the problem gone (`OpenDiscrepancies.resolve` clears it too; for a
  problem found by booking an order's reports, `end_unsighted`: see the reconciler);
- otherwise a new discrepancy is raised, its id derived from the problem and the evidence
  (orphan orders: from kind and subject only), so the same finding on the same evidence is
  recorded once however often it is applied (the same snapshot reconciled again);
- open discrepancies of one problem recorded before this rule existed (one per cycle) are
  merged at the next sighting: the newest takes it, the others are resolved as merged.

`OpenDiscrepancies` holds an account's discrepancies in force, read once per unit of work
and account (`open_in`), and only when something is found or resolved.
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

Problem = tuple[str, str, str]
"""(kind, subject, topic): what one discrepancy is about."""


def open_in(unit: UnitOfWork, account: str) -> OpenDiscrepancies:
    """The account's discrepancies in force, as `unit` read them (once per unit and account)."""
    found: OpenDiscrepancies | None = unit.in_force.get(account)
    if found is None:
        views = unit.discrepancies(account) if unit.discrepancies is not None else ()
        found = unit.in_force[account] = OpenDiscrepancies(account, views)
    return found


def record_findings(
    unit: UnitOfWork, account: str, findings: Sequence[Finding], evidence: UUID | None
) -> list[Discrepancy]:
    """Record findings, one discrepancy per problem (see the module); return the new ones."""
    return open_in(unit, account).record_new(unit, findings, evidence)


class OpenDiscrepancies:
    """An account's discrepancies in force (open, or acknowledged) and those recorded since."""

    def __init__(self, account: str, views: Iterable[DiscrepancyView]) -> None:
        """The discrepancies in force `views` of `account`, in log order."""
        self.account = account
        self.views = list(views)
        self.open: dict[Problem, UUID] = {}
        """The open discrepancy of each problem (the newest, if older code recorded several)."""
        self.merged: dict[Problem, list[UUID]] = {}
        """Older open discrepancies of the same problem, resolved into `open` when it is seen."""
        self.acknowledged: dict[Problem, DiscrepancyView] = {}
        """Problems an operator resolved by hand, not raised again while unchanged."""
        self.by_key: dict[str, list[DiscrepancyView]] = {}
        """The views by subject, so resolving one subject does not scan them all."""
        self.sighted: set[Problem] = set()
        """Problems found in this unit of work (open, acknowledged or new)."""
        for view in self.views:
            self.by_key.setdefault(view.key, []).append(view)
            if view.resolution is None:
                older = self.open.get(view.problem)
                if older is not None:
                    self.merged.setdefault(view.problem, []).append(older)
                self.open[view.problem] = view.id
            elif view.acknowledged:
                self.acknowledged[view.problem] = view

    def is_open(self, kind: DiscrepancyKind, key: str) -> bool:
        """Whether a discrepancy of `kind` about `key` is open (or was recorded in this unit)."""
        return any(problem[0] == kind.value and problem[1] == key for problem in self.open)

    def subjects(self, kinds: Iterable[DiscrepancyKind]) -> set[str]:
        """Subjects of the discrepancies of these kinds in force (open or acknowledged)."""
        wanted = set(kinds)
        return {view.key for view in self.views if view.kind in wanted}

    def record_new(
        self, unit: UnitOfWork, findings: Iterable[Finding], evidence: UUID | None
    ) -> list[Discrepancy]:
        """Record each finding as a sighting of its open problem, or as a new discrepancy."""
        recorded = []
        for finding in findings:
            problem = finding.problem
            self.sighted.add(problem)
            if self._see(unit, problem, finding, evidence):
                continue
            acknowledged = self.acknowledged.get(problem)
            if acknowledged is not None:
                if acknowledged.actual == finding.actual:
                    continue  # the operator's resolution stands while the problem is unchanged
                self._clear(unit, acknowledged, f"seen changed: {finding.actual}")
            discrepancy = self._raise(unit, finding, evidence)
            if discrepancy is not None:
                recorded.append(discrepancy)
        return recorded

    def resolve(
        self,
        unit: UnitOfWork,
        kinds: set[DiscrepancyKind],
        key: str | None,
        resolution: str,
        *,
        by: str = "reconciler",
    ) -> list[Discrepancy]:
        """Resolve the open discrepancies of these kinds (about one subject, or all); return them.

        The problem is settled or was seen gone, so an operator's acknowledgement of it
        ends too: a recurrence is a new discrepancy.
        """
        resolved = []
        for view in self.views if key is None else self.by_key.get(key, ()):
            if view.kind not in kinds:
                continue
            if view.resolution is not None:
                self._clear(unit, view, f"seen gone: {resolution}")
                continue
            discrepancy = unit.get(view.id)
            if discrepancy is not None and discrepancy.resolution is None:
                discrepancy.resolve(resolution, by, unit.clock())
                unit.collect(discrepancy)
                resolved.append(discrepancy)
            if self.open.get(view.problem) == view.id:
                del self.open[view.problem]
        return resolved

    def acknowledged_subjects(self, kinds: Iterable[DiscrepancyKind]) -> set[str]:
        """Subjects of the acknowledged problems of these kinds."""
        wanted = {kind.value for kind in kinds}
        return {problem[1] for problem in self.acknowledged if problem[0] in wanted}

    def end_unsighted(
        self, unit: UnitOfWork, kinds: Iterable[DiscrepancyKind], key: str, reason: str
    ) -> None:
        """End the acknowledgements of these kinds about `key` not found again in this unit."""
        wanted = {kind.value for kind in kinds}
        for problem, view in list(self.acknowledged.items()):
            if problem[0] in wanted and problem[1] == key and problem not in self.sighted:
                self._clear(unit, view, f"seen gone: {reason}")

    def _see(self, unit: UnitOfWork, problem: Problem, finding: Finding, evidence: UUID | None) -> bool:
        """Record a sighting of the problem's open discrepancy; False if none is open."""
        ident = self.open.get(problem)
        discrepancy = unit.get(ident) if ident is not None else None
        if discrepancy is None or discrepancy.resolution is not None:
            return False
        discrepancy.see(finding, evidence, unit.clock())
        unit.collect(discrepancy)
        for older in self.merged.pop(problem, ()):
            duplicate = unit.get(older)
            if duplicate is not None and duplicate.resolution is None:
                duplicate.resolve(f"merged into {ident}: the same problem", "trueup", unit.clock())
                unit.collect(duplicate)
        return True

    def _clear(self, unit: UnitOfWork, view: DiscrepancyView, reason: str) -> None:
        discrepancy = unit.get(view.id)
        if discrepancy is not None:
            discrepancy.clear(reason, unit.clock())
            unit.collect(discrepancy)
        if self.acknowledged.get(view.problem) is view:
            del self.acknowledged[view.problem]

    def _raise(self, unit: UnitOfWork, finding: Finding, evidence: UUID | None) -> Discrepancy | None:
        kind, key, topic = finding.problem
        if finding.kind is DiscrepancyKind.ORPHAN_ORDER:
            # One record per orphan order ever, so that its quarantine is lifted by
            # resolving one thing and booking can find it by id.
            proof = "orphan"
        else:
            # Without evidence, the time tells a recurrence from the first record.
            proof = f"{topic}|{evidence if evidence is not None else unit.clock().isoformat()}"
        ident = discrepancy_id(kind, self.account, key, proof)
        # The same problem on the same evidence is one record: applying it again (the same
        # snapshot reconciled again after the first was resolved) stores nothing.
        if ident in unit.raised or unit.get(ident) is not None:
            return None
        unit.raised.add(ident)
        log.warning("%s %s %s: %s", finding.level, finding.kind, finding.key, finding.detail)
        discrepancy: Discrepancy = Discrepancy._create(
            Discrepancy.Raised,
            id=ident,
            kind=kind,
            severity=finding.level.value,
            account=self.account,
            key=key,
            expected=finding.expected,
            actual=finding.actual,
            detail=finding.detail,
            evidence_id=evidence,
            ts_detected=unit.clock(),
            scope=finding.scope,
            topic=topic,
        )
        unit.add(discrepancy)
        unit.collect(discrepancy)
        self.open[finding.problem] = ident
        return discrepancy


def resolve_all(unit: UnitOfWork, discrepancies: Iterable[Discrepancy], resolution: str, by: str) -> None:
    """Resolve discrepancies just recorded (a finding already settled when it is found)."""
    for discrepancy in discrepancies:
        discrepancy.resolve(resolution, by, unit.clock())
        unit.collect(discrepancy)
