"""Booking broker reports: the raw message first, then what the rules decide from it.

`ingest` and `ingest_raw` are the use cases; `apply_report` is the one step every path
that books a report shares (ingest, the stream, lookups and the reconciler): find the
order the report names (by broker-id link first, then client id) or start tracking an
orphan, let the pure rules decide, move the position by the fill legs, link the broker's
id, chain a replace leg, and record what the rules found.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from uuid import UUID, uuid4

from trueup.application.findings import record_findings
from trueup.application.unit_of_work import (
    Events,
    UnitOfWork,
    Writer,
    broker_link_id,
    order_id,
    position_id,
)
from trueup.domain.discrepancy import DiscrepancyKind, Finding
from trueup.domain.gate import gate_id
from trueup.domain.ids import discrepancy_id, external_client_order_id
from trueup.domain.messages import BrokerMessage, BrokerOrderLink, storable_payload
from trueup.domain.order import Order
from trueup.domain.position import Position, position_legs
from trueup.domain.reconcile import quarantine_scope
from trueup.domain.reports import REPORT_ENCODER, FillReport, OrderReport, PositionReport, Report
from trueup.domain.rules import Outcome, decide_fill, decide_order_report
from trueup.domain.status import OrderStatus

log = logging.getLogger(__name__)


def ingest(writer: Writer, reports: Report | Iterable[Report]) -> Events:
    """Book broker reports through the rules, all in one transaction (see `Ledger.ingest`)."""
    items: list[Report] = (
        [reports] if isinstance(reports, OrderReport | FillReport | PositionReport) else list(reports)
    )

    def apply(unit: UnitOfWork) -> None:
        unit.prefetch(_order_and_link_ids(items))
        for report in items:
            ingest_report(unit, report)

    return writer.commit(apply)


def ingest_raw(  # noqa: PLR0913 - the payload, its translator and where it came from
    writer: Writer,
    payload: str,
    translate: Callable[[str], Sequence[Report]],
    *,
    account: str,
    source: str,
    kind: str,
) -> Events:
    """Store a broker payload verbatim, translate it, book it (see `Ledger.ingest_raw`)."""

    def apply(unit: UnitOfWork) -> None:
        message = record_message(unit, account=account, source=source, kind=kind, payload=payload)
        try:
            reports = list(translate(payload))
        except Exception as e:  # noqa: BLE001 - any failure to read a payload keeps it and says why
            finding = Finding(
                DiscrepancyKind.INVALID_REPORT,
                account or source,
                f"a readable {source} {kind} payload",
                readable_text(f"{type(e).__name__}: {e}"),
                readable_text(f"payload kept in the raw log but not applied: {e}"),
            )
            record_findings(unit, account or "", [finding], message.id)
            return
        for report in reports:
            apply_report(unit, report, message.id)

    return writer.commit(apply)


def readable_text(text: str) -> str:
    """`text` (an error naming broker data) with NUL and lone surrogates escaped.

    Every store can then hold it as text: a discrepancy must be stored and read back,
    whatever the broker sent.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


def record_message(unit: UnitOfWork, *, account: str, source: str, kind: str, payload: str) -> BrokerMessage:
    """Record a broker payload losslessly in the raw log; reports from it name it as evidence."""
    stored, encoding = storable_payload(payload)
    message = BrokerMessage._create(
        BrokerMessage.Received,
        id=uuid4(),
        account=account,
        source=source,
        kind=kind,
        payload=stored,
        ts_received=unit.clock(),
        payload_encoding=encoding,
    )
    unit.collect(message)
    return message


def ingest_report(unit: UnitOfWork, report: Report) -> None:
    """Record a report handed to `Ledger.ingest` (as tagged JSON), then book it."""
    kind = type(report).__struct_config__.tag
    message = record_message(
        unit,
        account=report.account,
        source="report",
        kind=str(kind),
        payload=REPORT_ENCODER.encode(report).decode(),
    )
    apply_report(unit, report, message.id)


def apply_report(unit: UnitOfWork, report: Report, evidence: UUID) -> None:
    """Book one report already recorded as `evidence` (the step every path shares)."""
    if isinstance(report, PositionReport):
        # A streamed position is evidence only: it races fills in flight, so only
        # reconciliation against a whole snapshot compares positions.
        return
    order, findings = _resolve_order(unit, report)
    before = (order.state.filled_qty, order.state.fill_cost)
    try:
        if isinstance(report, OrderReport):
            outcome = decide_order_report(order.state, report)
        else:
            outcome = decide_fill(order.state, report)
    except Exception as e:  # a rule bug must not lose the report: record it, go on
        log.exception("rules failed on %r", report)
        outcome = Outcome()
        outcome.find(
            DiscrepancyKind.INVALID_REPORT,
            order.state.client_order_id,
            "a report the rules can apply",
            f"{type(e).__name__}: {e}",
            "internal error while applying the report; report kept, order unchanged",
        )
    was_open = not order.state.status.is_terminal
    order.record(outcome.changes)
    position = _move_position(unit, order, before, report)
    link = _link(unit, order, report)
    predecessor = _chain(unit, order, report)
    unit.collect(order, link, position, predecessor)
    record_findings(unit, report.account, [*findings, *outcome.findings], evidence)
    # (after raising: an orphan first seen already done is resolved at once)
    if was_open and order.state.origin == "broker" and order.state.status.is_terminal:
        # An orphan order that is done risks nothing more: lift its quarantine.
        orphan = unit.get(
            discrepancy_id(
                DiscrepancyKind.ORPHAN_ORDER, report.account, order.state.client_order_id, "orphan"
            )
        )
        if orphan is not None and orphan.resolution is None:
            orphan.resolve(f"orphan order {order.state.status} at the broker", "reconciler", unit.clock())
            unit.collect(orphan)


def client_order_id_for(unit: UnitOfWork, report: OrderReport | FillReport) -> str:
    """The client order id a report belongs to: by broker-id link first, then its own."""
    if report.broker_order_id:
        link = unit.get(broker_link_id(report.account, report.broker_order_id))
        if link is not None:
            return str(link.client_order_id)
    return report.client_order_id or external_client_order_id(str(report.broker_order_id))


def _resolve_order(unit: UnitOfWork, report: OrderReport | FillReport) -> tuple[Order, list[Finding]]:
    """Find the order a report names (by broker-id link, then client id), or start one."""
    findings: list[Finding] = []
    account = report.account
    client_order_id = client_order_id_for(unit, report)
    attached = _attach_orphan(unit, report, client_order_id)
    if attached is not None:
        return attached, findings
    if report.client_order_id and report.client_order_id != client_order_id:
        findings.append(
            Finding(
                DiscrepancyKind.INVALID_REPORT,
                report.client_order_id,
                client_order_id,
                report.client_order_id,
                f"broker order {report.broker_order_id} is linked to "
                f"{client_order_id}; report applied to that order",
            )
        )
    order = unit.get(order_id(account, client_order_id))
    if order is None:
        quantity = report.quantity if isinstance(report, OrderReport) else None
        limit = report.limit_price if isinstance(report, OrderReport) else None
        order = Order.discover(
            account=account,
            client_order_id=client_order_id,
            symbol=report.symbol,
            side=report.side,
            quantity=quantity,
            limit_price=limit,
            ts=report.ts_event,
        )
        unit.add(order)
        if _predecessor(unit, report) is not None:
            return order, findings  # a replace leg of one of ours: not an orphan
        gate = unit.get(gate_id(account))
        scope = quarantine_scope(report.symbol, gate.claims.get(report.symbol) if gate else None)
        findings.append(
            Finding(
                DiscrepancyKind.ORPHAN_ORDER,
                client_order_id,
                "an order we recorded",
                f"{report.side} {report.symbol} broker id {report.broker_order_id}",
                f"broker reported an order we never sent; tracked from now on, {scope} quarantined",
                scope=scope,
            )
        )
    return order, findings


def _attach_orphan(unit: UnitOfWork, report: OrderReport | FillReport, linked: str) -> Order | None:
    """Our order, when `report` names it for a broker id first seen untagged (an orphan).

    The orphan's fills and inferred part move to our order (`Order.Attached`; they are
    already in the position, so it does not move), the orphan record is closed
    (`Order.AttachedTo`, REPLACED by our order), the broker id is relinked to our order,
    and the orphan's quarantine is lifted. An execution both records had booked (ours by
    client id, the orphan by broker id) was in the position twice: it is un-booked once at
    its cost, so the position holds what our order holds. None when the report is not such a case.
    """
    broker_id = report.broker_order_id
    ours_id = report.client_order_id
    if not broker_id or not ours_id or ours_id == linked or linked != external_client_order_id(broker_id):
        return None
    orphan = unit.get(order_id(report.account, linked))
    ours = unit.get(order_id(report.account, ours_id))
    if orphan is None or ours is None or orphan.state.origin != "broker" or ours.state.origin == "broker":
        return None
    if (orphan.state.symbol, orphan.state.side) != (ours.state.symbol, ours.state.side):
        return None  # not the same order: the rules refuse the report as usual
    source = orphan.state
    # Both records are in the position; an execution both booked (ours by client id, the
    # orphan by broker id) is one execution, held once by our order after the attach.
    booked = (ours.state.filled_qty + source.filled_qty, ours.state.fill_cost + source.fill_cost)
    ours.trigger_event(
        Order.Attached,
        orphan=linked,
        broker_order_id=broker_id,
        fills=tuple(source.fills.values()),
        inferred_qty=source.inferred_qty,
        inferred_price=source.inferred_price,
        reported_filled=source.reported_filled,
        reported_avg=source.reported_avg,
        status=source.status,
    )
    orphan.trigger_event(Order.AttachedTo, client_order_id=ours_id)
    link = unit.get(broker_link_id(report.account, broker_id))
    link.trigger_event(BrokerOrderLink.Relinked, client_order_id=ours_id)
    position = _move_position(unit, ours, booked, report)  # un-books what was counted twice
    unit.collect(orphan, ours, link, position)
    quarantine = unit.get(discrepancy_id(DiscrepancyKind.ORPHAN_ORDER, report.account, linked, "orphan"))
    if quarantine is not None and quarantine.resolution is None:
        quarantine.resolve(
            f"attached to our order {ours_id}: it named our client id", "reconciler", unit.clock()
        )
        unit.collect(quarantine)
    return ours  # type: ignore[no-any-return]


def _predecessor(unit: UnitOfWork, report: OrderReport | FillReport) -> Order | None:
    """The order a replace leg continues: the one linked to the broker id it `replaces`."""
    if not isinstance(report, OrderReport) or not report.replaces:
        return None
    link = unit.get(broker_link_id(report.account, report.replaces))
    if link is None:
        return None
    return unit.get(order_id(report.account, str(link.client_order_id)))  # type: ignore[no-any-return]


def _chain(unit: UnitOfWork, order: Order, report: OrderReport | FillReport) -> Order | None:
    """Link a replace leg to the order it continues, both ways, once the broker confirms it.

    Alpaca gives a replacement its own order id (and our fresh client id); each leg is an
    order here, `replaces` / `replaced_by` name the chain. A leg the broker rejected
    replaced nothing, so its predecessor is not marked.
    """
    predecessor = _predecessor(unit, report)
    if predecessor is None or predecessor is order:
        return None
    if order.state.replaces is None:
        order.trigger_event(Order.Chained, replaces=predecessor.state.client_order_id)
    if predecessor.state.replaced_by is not None or order.state.status is OrderStatus.REJECTED:
        return None
    predecessor.trigger_event(Order.Superseded, replaced_by=order.state.client_order_id)
    return predecessor


def _link(unit: UnitOfWork, order: Order, report: OrderReport | FillReport) -> BrokerOrderLink | None:
    broker_id = report.broker_order_id
    if not broker_id:
        return None
    ident = broker_link_id(report.account, broker_id)
    if unit.get(ident) is not None:
        return None
    link = BrokerOrderLink._create(
        BrokerOrderLink.Linked,
        id=ident,
        account=report.account,
        broker_order_id=broker_id,
        client_order_id=order.state.client_order_id,
    )
    unit.add(link)
    return link


def _move_position(
    unit: UnitOfWork, order: Order, before: tuple[Decimal, Decimal], report: OrderReport | FillReport
) -> Position | None:
    state = order.state
    after = (state.filled_qty, state.fill_cost)
    if after == before:
        return None
    price = report.price if isinstance(report, FillReport) else (state.inferred_price or Decimal(0))
    legs = position_legs(state.side, before, after, price)
    if not legs:
        return None
    ident = position_id(state.account, state.symbol)
    position = unit.get(ident)
    if position is None:
        position = Position.open(state.account, state.symbol)
        unit.add(position)
    position.trigger_event(
        Position.Changed,
        client_order_id=state.client_order_id,
        side=state.side,
        legs=tuple(legs),
        ts_event=report.ts_event,
    )
    return position  # type: ignore[no-any-return]


def _order_and_link_ids(reports: Iterable[Report]) -> Iterator[UUID]:
    """Ids of the orders and broker-id links the reports name."""
    for report in reports:
        if isinstance(report, PositionReport):
            continue
        if report.broker_order_id:
            yield broker_link_id(report.account, report.broker_order_id)
        if report.client_order_id:
            yield order_id(report.account, report.client_order_id)
