"""Evidence of a reconciliation: the broker's answers verbatim, the snapshot, the match record.

The raw log keeps, before anything concluded from a snapshot, every answer the adapter
read it from (`BrokerSnapshot.raw`), each under its content address so an unchanged
answer is stored once however many runs read it, then the snapshot as trueup read it,
its answers replaced by their message ids (`raw_ids`) so no text is held twice.

An answer the adapter could not translate is stored whatever else the run stores, and
named by an INVALID_REPORT (one per query while it stays untranslatable).

A clean run leaves a `BooksMatched` record: see `Matches`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import msgspec

from trueup.application.findings import OpenDiscrepancies
from trueup.application.unit_of_work import UnitOfWork
from trueup.domain.discrepancy import DiscrepancyKind, Finding
from trueup.domain.errors import ConfigError
from trueup.domain.ids import NAMESPACE, match_id, raw_answer_id
from trueup.domain.messages import BooksMatched, BrokerMessage
from trueup.domain.reports import REPORT_ENCODER, BrokerSnapshot, RawAnswer

MATCH_EVERY_SECONDS = 300.0
"""Default gap between two BooksMatched records while the books keep matching.

At a 5 s period a record per run would be 17,280 a day per account, each with its
evidence; one at each change of the matched state plus one per 5 minutes is about 288."""

Answers = list[tuple[UUID, RawAnswer]]


def check_match_every(every: object) -> float:
    """`every` as seconds between two BooksMatched records.

    Raises:
        ConfigError: it is not a finite number >= 0 (a negative gap would record every run
            while seeming to throttle; NaN would never record again).
    """
    if isinstance(every, bool) or not isinstance(every, int | float) or not 0 <= every < math.inf:
        msg = f"match_every must be a finite number of seconds >= 0, got {every!r}"
        raise ConfigError(msg)
    return float(every)


def answers_of(snapshot: BrokerSnapshot) -> Answers:
    """The snapshot's raw answers with their content addresses (hashes each payload once)."""
    account = snapshot.account
    return [(raw_answer_id(account, a.source, a.kind, a.payload), a) for a in snapshot.raw]


def stored_form(snapshot: BrokerSnapshot, answers: Answers) -> BrokerSnapshot:
    """The snapshot as the raw log keeps it: its answers replaced by their message ids."""
    if not snapshot.raw:
        return snapshot
    return msgspec.structs.replace(snapshot, raw=(), raw_ids=tuple(str(ident) for ident, _ in answers))


def snapshot_id(snapshot: BrokerSnapshot) -> UUID:
    """Content address of a snapshot: the same snapshot is the same evidence.

    Its raw answers count through their ids (the stored form), not their text.
    """
    if snapshot.raw:
        snapshot = stored_form(snapshot, answers_of(snapshot))
    digest = hashlib.sha256(REPORT_ENCODER.encode(snapshot)).hexdigest()
    return uuid5(NAMESPACE, f"snapshot|{snapshot.account}|{digest}")


def untranslatable(
    unit: UnitOfWork,
    open_now: OpenDiscrepancies,
    answers: Answers,
    evidence: Any,  # noqa: ANN401 - lazy id
) -> None:
    """An INVALID_REPORT per query whose answer did not translate; resolve the ones that do again.

    `evidence` is read only when there is something to record (computing it hashes the snapshot).
    """
    failed = {a.kind: (ident, a) for ident, a in answers if a.error is not None}
    if not answers:
        return
    if failed:
        findings = [
            Finding(
                DiscrepancyKind.INVALID_REPORT,
                f"answer:{kind}",
                f"a translatable {answer.source} {kind} answer",
                "untranslatable",
                f"{answer.error}; the answer is kept verbatim as raw message {ident}",
            )
            for kind, (ident, answer) in sorted(failed.items())
        ]
        open_now.record_new(unit, findings, evidence())
    for kind in sorted({a.kind for _, a in answers if a.error is None} - failed.keys()):
        if open_now.is_open(DiscrepancyKind.INVALID_REPORT, f"answer:{kind}"):
            open_now.resolve(unit, {DiscrepancyKind.INVALID_REPORT}, f"answer:{kind}", "translates again")


def prepend_evidence(unit: UnitOfWork, snapshot: BrokerSnapshot, answers: Answers, evidence: UUID) -> None:
    """Put the evidence before the run's events: the answers verbatim, then the snapshot.

    Each piece once (one already in the log is not stored again). A run that stores
    nothing else stores only its untranslatable answers not yet kept: no snapshot record
    per cycle while a broken answer stays broken.
    """
    concluded = bool(unit.events)
    now = unit.clock()
    messages: list[Any] = []
    seen: set[UUID] = set()
    for ident, answer in answers:
        if (not concluded and answer.error is None) or ident in seen or unit.get(ident) is not None:
            continue
        seen.add(ident)  # the same answer twice in one snapshot (a re-read): stored once
        messages += _message(
            ident, snapshot.account, answer.source, f"answer:{answer.kind}", answer.payload, now
        )
    if concluded and unit.get(evidence) is None:
        payload = REPORT_ENCODER.encode(stored_form(snapshot, answers)).decode()
        messages += _message(evidence, snapshot.account, "snapshot", "snapshot", payload, now)
    unit.events[:0] = messages


def _message(  # noqa: PLR0913, PLR0917 - the fields of one raw-log record
    ident: UUID, account: str, source: str, kind: str, payload: str, now: datetime
) -> Sequence[Any]:
    message = BrokerMessage._create(
        BrokerMessage.Received,
        id=ident,
        account=account,
        source=source,
        kind=kind,
        payload=payload,
        ts_received=now,
    )
    return message.collect_events()


class Matches:
    """When a clean reconciliation records that the books matched (`BooksMatched`).

    At the first clean run of an account in this process, at the first one after a run
    that was not clean, and then once per `every` seconds of snapshot time while the books
    keep matching; a run in between stores nothing. So an audit proves the books matched
    at any time to within `every`, and a log of unchanged books grows by one small record
    (and the answers that changed since the last) per `every`.
    """

    def __init__(self, every: float = MATCH_EVERY_SECONDS) -> None:
        """Record at most once per `every` seconds while matching; 0 records every clean run.

        Raises:
            ConfigError: `every` is negative or not a finite number of seconds.
        """
        self.every = check_match_every(every)
        self._last: dict[str, datetime] = {}
        """Snapshot time of the last record per account, while its books keep matching."""

    def due(self, account: str, as_of: datetime) -> bool:
        """Whether a clean run of `account` at `as_of` records a match."""
        last = self._last.get(account)
        return last is None or (as_of - last).total_seconds() >= self.every

    def record(self, unit: UnitOfWork, snapshot: BrokerSnapshot, evidence: UUID) -> None:
        """Collect the BooksMatched record of `snapshot`, unless the snapshot is already evidence.

        A snapshot already in the log proves what was stored from it (a repair that made
        the books match it, or its own match record): the same snapshot twice, or again
        after a restart, stores nothing new.
        """
        if unit.get(evidence) is not None:
            return
        ident = match_id(snapshot.account, evidence)
        record = BooksMatched._create(
            BooksMatched.Recorded,
            id=ident,
            account=snapshot.account,
            as_of=snapshot.as_of,
            evidence_id=evidence,
            orders=len(snapshot.orders or ()),
            fills=len(snapshot.fills or ()),
            positions=len(snapshot.positions or ()),
        )
        unit.add(record)
        unit.collect(record)

    def settle(self, account: str, as_of: datetime, *, clean: bool, recorded: bool) -> None:
        """After the commit: remember a stored record; forget the account after a run not clean."""
        if not clean:
            self._last.pop(account, None)
        elif recorded:
            self._last[account] = as_of
