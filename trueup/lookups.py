"""Lookups of one order at the broker by our client id, the broker's answer kept verbatim.

`look_up` asks (through `lookup_answer` when the port has it, else `lookup`, with a
deadline) and books what it found, its answer stored first as the evidence;
`record_lookup` books an answer already had. An answer that does not translate is kept
with an INVALID_REPORT and raised (`UntranslatableLookupError`): absence is unknown, never
"not found". Used by startup recovery (`trueup.submission`) and the service's in-flight
checks (`trueup.inflight`); all of it is importable from `trueup.submission` too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import msgspec

from trueup.adapters.base import (
    BROKER_CALL_TIMEOUT,
    AnsweringLookup,
    BrokerClient,
    checked_lookup,
    checked_lookup_answer,
)
from trueup.application.books import Books
from trueup.blocking import in_worker_thread
from trueup.domain.errors import BrokerQueryError, InvalidReport
from trueup.domain.reports import REPORT_DECODER, REPORT_ENCODER, LookupAnswer, OrderReport, Report

__all__ = ["Looked", "UntranslatableLookupError", "look_up", "record_lookup"]


def record_lookup(
    ledger: Books, found: OrderReport | LookupAnswer, *, account: str, source: str
) -> list[object]:
    """Book what a broker lookup found, its answer kept verbatim as the evidence.

    `found` is the port's `LookupAnswer` (from `lookup_answer`), or the report of a port
    that gives only `lookup`: then its JSON is all the raw log can keep. An answer with an
    error (untranslatable) is kept and raises an INVALID_REPORT naming it; nothing is
    booked from it. An answer proving absence is kept as evidence, nothing booked. A
    blocking call: from asyncio code run it in a worker thread.

    Returns:
        The domain events stored.
    """
    if isinstance(found, OrderReport):
        return _ingest(ledger, REPORT_ENCODER.encode(found).decode(), _decode_report, account, source)
    raw, report = found.raw, found.report
    if raw is None:
        return [] if report is None else record_lookup(ledger, report, account=account, source=source)
    error = raw.error
    if error is not None:
        return _ingest(ledger, raw.payload, functools.partial(_untranslatable, error), account, source)
    return _ingest(ledger, raw.payload, lambda _raw: [] if report is None else [report], account, source)


async def look_up(
    ledger: Books,
    broker: BrokerClient,
    account: str,
    client_order_id: str,
    *,
    timeout: float = BROKER_CALL_TIMEOUT,  # noqa: ASYNC109 - the broker call's deadline
) -> Looked:
    """Ask the broker for the order carrying our id; keep its answer; book what it found.

    Through `lookup_answer` when the port has it (`AnsweringLookup`), else `lookup`, with
    a deadline (`timeout`). A found order is booked with the broker's answer as its
    evidence; a proven absence is returned unbooked (the caller decides what it proves);
    an untranslatable answer is kept with an INVALID_REPORT and raised: absence is
    unknown, never "not found".

    Raises:
        UntranslatableLookupError: the answer did not translate (kept; `events` names what was stored).
        BrokerQueryError: the broker could not be asked, missed the deadline or answered
            something that is not about our order; absence is unknown.
    """
    if not isinstance(broker, AnsweringLookup):
        report = await checked_lookup(broker, account, client_order_id, timeout=timeout)
        if report is None:
            return Looked(report=None)
        events = await in_worker_thread(
            record_lookup, ledger, report, account=report.account, source=broker.name
        )
        return Looked(report=report, events=events)
    answer = await checked_lookup_answer(broker, account, client_order_id, timeout=timeout)
    if answer.report is None and (answer.raw is None or answer.raw.error is None):
        return Looked(report=None, answer=answer)
    events = await in_worker_thread(record_lookup, ledger, answer, account=account, source=broker.name)
    if answer.report is None:
        raise UntranslatableLookupError(str(answer.raw.error if answer.raw else ""), events=events)
    return Looked(report=answer.report, events=events, answer=answer)


class Looked(msgspec.Struct):
    """What `look_up` found and stored."""

    report: OrderReport | None
    """The order as the broker has it; None: the broker proved it has none."""
    events: list[object] = msgspec.field(default_factory=list)
    """The events stored (the answer, the booking, any discrepancy)."""
    answer: LookupAnswer | None = None
    """The broker's answer, when the port gives it (a proven absence is stored by the caller)."""


class UntranslatableLookupError(BrokerQueryError):
    """The broker answered a lookup in a form that does not translate; the answer was kept."""

    def __init__(self, msg: str, *, events: list[object]) -> None:
        """Name the error; `events` are what was stored (the answer, its INVALID_REPORT)."""
        super().__init__(msg)
        self.events = events


def _ingest(
    ledger: Books, payload: str, translate: Callable[[str], Sequence[Report]], account: str, source: str
) -> list[object]:
    return list(ledger.ingest_raw(payload, translate, account=account, source=source, kind="lookup"))


def _untranslatable(error: str, _payload: str) -> Sequence[Report]:
    raise InvalidReport(error)


def _decode_report(payload: str) -> Sequence[Report]:
    return [REPORT_DECODER.decode(payload)]
