"""Pure translation of stored ib_async events (`wire.IbEnvelope` JSON) into reports.

The client stores each ib_async event as an envelope before anything reads it; this
module turns that stored text into reports, with no clock, no I/O and no ib_async, so
replaying the raw log gives the same reports as the live objects did:

* `orderStatus` / `openOrder` / `placeOrder` (our submit's acknowledgement) -> one
  `OrderReport` at `received_at`, source BROKER, or CLIENT when ib_async set the status
  itself (`translate.to_order_status`, `local`);
* `execDetails` -> one `FillReport` (commission None: the report comes later);
* `commissionReport` -> the same `FillReport` again, now with the commission joined by
  `execId` (the ledger dedupes the execution and records the commission once);
* `position` -> one `PositionReport` (evidence only: the ledger compares positions in
  reconciliation, where a whole snapshot is known);
* `error`, `connected`, `disconnected` -> nothing: kept in the raw log for the audit.
  An error that ib_async turns into an order status (`Cancelled`, `ValidationError`)
  arrives as its own `orderStatus` envelope first.

Objects of another account (a login that manages several) translate to nothing: they
are stored, not applied to this account's books.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from trueup.adapters.ib.translate import to_fill_report, to_order_report, to_position_report
from trueup.adapters.ib.wire import IbEnvelope, envelope_decoder
from trueup.adapters.payloads import PayloadReader
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import Report
from trueup.domain.status import ReportSource

__all__ = ["EVIDENCE_ONLY_EVENTS", "ORDER_EVENTS", "IbEventTranslator", "to_reports"]

ORDER_EVENTS: Final = frozenset({"orderStatus", "openOrder", "placeOrder"})
"""Envelopes carrying a `Trade` ("placeOrder": the Trade as TWS's answer to our placeOrder left it)."""
FILL_EVENTS: Final = frozenset({"execDetails", "commissionReport"})
"""Envelopes carrying a `Fill`."""
EVIDENCE_ONLY_EVENTS: Final = frozenset({"error", "connected", "disconnected"})
"""Envelopes stored for the audit that change no order."""

_READER: Final = PayloadReader("ib")


def _missing(envelope: IbEnvelope, part: str, account: str) -> InvalidReport:
    return _READER.invalid(
        what=f"{envelope.event} event",
        account=account,
        path=f"$.{part}",
        detail=f"a {envelope.event} event must carry `{part}`",
    )


def _order_reports(envelope: IbEnvelope, account: str) -> list[Report]:
    trade = envelope.trade
    if trade is None:
        raise _missing(envelope, "trade", account)
    if trade.order.account not in {"", account}:
        return []
    report = to_order_report(
        trade,  # type: ignore[arg-type]  # the wire struct has the Trade's attributes
        account=account,
        ts_event=envelope.received_at,
        source=ReportSource.BROKER,
        local=envelope.local,
    )
    return [report]


def _fill_reports(envelope: IbEnvelope, account: str) -> list[Report]:
    fill = envelope.fill
    if fill is None:
        raise _missing(envelope, "fill", account)
    if fill.execution.acctNumber not in {"", account}:
        return []
    return [to_fill_report(fill, account=account)]  # type: ignore[arg-type]  # duck-typed Fill


def _position_reports(envelope: IbEnvelope, account: str) -> list[Report]:
    position = envelope.position
    if position is None:
        raise _missing(envelope, "position", account)
    if position.account != account:
        return []
    report = to_position_report(position, account=account, as_of=envelope.received_at)  # type: ignore[arg-type]
    return [report]


def _no_reports(_envelope: IbEnvelope, _account: str) -> list[Report]:
    return []


_BY_EVENT: Final[dict[str, Callable[[IbEnvelope, str], list[Report]]]] = {
    **dict.fromkeys(ORDER_EVENTS, _order_reports),
    **dict.fromkeys(FILL_EVENTS, _fill_reports),
    "position": _position_reports,
    **dict.fromkeys(EVIDENCE_ONLY_EVENTS, _no_reports),
}


@_READER.translator
def to_reports(payload: str | bytes, *, account: str) -> list[Report]:
    """The reports one stored envelope gives for `account` (see the module docstring).

    Raises:
        InvalidReport: the payload is not an envelope, names an unknown event, or lacks
            or mangles the object its event carries (the field path says where).
    """
    envelope = _READER.decode(envelope_decoder(), payload, what="event", account=account)
    if envelope.unreadable is not None:
        detail = f"the client could not copy this {envelope.event} event: {envelope.unreadable}"
        raise _READER.invalid(what="event", account=account, path="$.unreadable", detail=detail)
    translate = _BY_EVENT.get(envelope.event)
    if translate is None:
        detail = f"unknown event {envelope.event!r}"
        raise _READER.invalid(what="event", account=account, path="$.event", detail=detail)
    return translate(envelope, account)


class IbEventTranslator:
    """`to_reports` bound to one account: the `translate` of the client's `RawMessage`s."""

    def __init__(self, account: str) -> None:
        """Translate envelopes for `account`."""
        self.account = account

    def __call__(self, payload: str) -> Sequence[Report]:
        """Translate one stored envelope."""
        return to_reports(payload, account=self.account)

    def __repr__(self) -> str:
        return f"ib.to_reports(account={self.account!r})"
