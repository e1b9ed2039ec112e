"""The status-rank and fill rules as pure functions.

Each rule reads an `Order` and a report and returns an `Outcome`: the events to
trigger and the findings (discrepancies) to record. Nothing here raises on bad input;
a refused or conflicting report yields a finding that says why.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from trueup.domain.discrepancy import DiscrepancyKind, Finding, Severity
from trueup.domain.money import derived_price, exceeds, money_context
from trueup.domain.order import Change, Order, OrderState, exec_key
from trueup.domain.reports import FillReport, OrderReport
from trueup.domain.status import OrderFlag, OrderStatus, ReportSource, Side

# Flags that describe a request in flight; a terminal status answers the request.
_REQUEST_FLAGS = frozenset({OrderFlag.CANCEL_PENDING, OrderFlag.REPLACE_PENDING})


class Outcome(msgspec.Struct):
    """What a rule decided: events to trigger, in order, and findings to record."""

    changes: list[Change] = msgspec.field(default_factory=list)
    findings: list[Finding] = msgspec.field(default_factory=list)

    def change(self, event: type[Order.Event], **fields: object) -> None:
        """Add an event to trigger."""
        self.changes.append(Change(event, dict(fields)))

    def find(  # noqa: PLR0913, PLR0917 - the parts of a finding, in reading order
        self,
        kind: DiscrepancyKind,
        key: str,
        expected: object,
        actual: object,
        detail: str,
        severity: Severity | None = None,
        *,
        topic: str | None = None,
    ) -> None:
        """Add a finding (`topic`: which problem of its kind about `key`, see `problem_topic`)."""
        self.findings.append(Finding(kind, key, str(expected), str(actual), detail, severity, topic=topic))


def _identity_mismatch(order: OrderState, symbol: str, side: Side, outcome: Outcome) -> bool:
    # A report that names this order but another instrument or direction is not about
    # this order as we know it: refuse it whole rather than guess which part is right.
    if symbol != order.symbol or side != order.side:
        outcome.find(
            DiscrepancyKind.INVALID_REPORT,
            order.client_order_id,
            f"{order.side} {order.symbol}",
            f"{side} {symbol}",
            "report names this order with another symbol or side; refused",
        )
        return True
    return False


def _link(order: OrderState, broker_order_id: str | None, outcome: Outcome) -> None:
    if broker_order_id and broker_order_id not in order.broker_order_ids:
        outcome.change(Order.BrokerIdLinked, broker_order_id=broker_order_id)


def working_status(reported: OrderStatus, filled: Decimal, quantity: Decimal | None) -> OrderStatus:
    """The status a working order has given its fills (FILLED once they reach the quantity)."""
    # PARTIALLY_FILLED is derived from the fills, never trusted from the status string:
    # IB says "Submitted" with filled > 0, Kite says "OPEN" with filled_quantity > 0.
    if quantity is not None and not exceeds(quantity, filled):
        return OrderStatus.FILLED
    if filled > 0 and reported.rank < OrderStatus.PARTIALLY_FILLED.rank:
        return OrderStatus.PARTIALLY_FILLED
    return reported


def _transition(  # noqa: C901, PLR0911, PLR0913 - one decision table, one exit per row
    order: OrderState,
    target: OrderStatus,
    *,
    filled: Decimal,
    reported: OrderReport | None,
    ts: datetime | None,
    reason: str,
    outcome: Outcome,
) -> None:
    """Apply the rank rule for moving `order` to `target`.

    `filled` is the order's filled quantity once this input's fills are counted;
    `reported` is the report asking for the move, or None when the fills imply it.
    """
    current = order.status
    raw = reported.raw_status if reported is not None else (order.raw_status or "")
    source = reported.source.value if reported is not None else "fills"
    if current.is_terminal:
        if target == current or not target.is_terminal:
            return  # duplicate terminal, or a late lower-rank message: raw kept, no change
        if (
            current is OrderStatus.CANCELED
            and target is OrderStatus.FILLED
            and order.quantity is not None
            and filled >= order.quantity
        ):
            # The one terminal correction: fills raced the cancel and reached the quantity.
            reason = "fills reached the quantity after the cancel: CANCELED -> FILLED"
            outcome.change(
                Order.StatusUpdated,
                status=target,
                flags=frozenset(),
                raw_status=raw,
                source=source,
                ts_event=ts,
                reason=reason,
            )
            return
        outcome.find(
            DiscrepancyKind.STATUS_CONFLICT,
            order.client_order_id,
            current,
            target,
            f"terminal status {current} kept; later {target} ({raw}) not applied",
        )
        return
    if target.is_terminal:
        flags: frozenset[OrderFlag] = frozenset()  # a terminal status answers every request
    elif reported is None:
        flags = order.flags
    else:
        flags = reported.flags
    if target.rank > current.rank:
        outcome.change(
            Order.StatusUpdated,
            status=target,
            flags=flags,
            raw_status=raw,
            source=source,
            ts_event=ts,
            reason=reason,
        )
        return
    if target.rank < current.rank or reported is None or ts is None:
        return  # lower rank: a late or replayed message; raw kept, nothing changes
    # Equal rank: the newest report's flags win. A newer report is recorded even with
    # the same flags, so that an older one arriving later cannot bring back a stale
    # flag (cancel pending after the cancel was rejected). On a tie of times, flags
    # accumulate, so the outcome does not depend on arrival order.
    last = order.status_ts
    if last is not None and ts < last:
        return
    if last is not None and ts == last:
        flags = order.flags | flags
        if flags == order.flags:
            return  # an exact duplicate
    outcome.change(
        Order.StatusUpdated,
        status=current,
        flags=flags,
        raw_status=raw,
        source=source,
        ts_event=ts,
        reason="newer report at equal rank",
    )


def plausible_price(price: Decimal, *references: Decimal) -> bool:
    """Whether a derived price can be real: one <= 0 only if a reference price is <= 0 too.

    Instruments that trade below zero (oil futures in 2020, calendar spreads) show it in
    their own prices; a non-positive price derived from positive ones is an inconsistency.
    """
    return price > 0 or any(reference <= 0 for reference in references)


@money_context
def _reprice_inferred(order: OrderState, remaining: Decimal, real_cost: Decimal) -> Decimal | None:
    """Price the inferred quantity still outstanding so the average matches the report."""
    if remaining <= 0:
        return None
    if order.reported_avg:  # 0 is how brokers say "no average" (Kite, IB), never a price
        price = derived_price(order.reported_avg * order.reported_filled - real_cost, remaining)
        if plausible_price(price, order.reported_avg, *(f.price for f in order.fills.values())):
            return price
    return order.inferred_price


@money_context
def decide_order_report(order: OrderState, report: OrderReport) -> Outcome:  # noqa: C901, PLR0912
    """Decide what an order report changes (rank rule, amendments, inferred fill).

    Steps: 1. refuse a report naming another symbol/side; 2. an unknown status changes
    nothing; 3. link the broker id; 4. client-side statuses only set flags; 5. take the
    broker's terms if newer (a changed quantity only if expected: `_amended_quantity`);
    6. refuse a cumulative above the quantity; 7. book one inferred fill if the
    cumulative runs ahead of our fills; 8. move the status.
    """
    outcome = Outcome()
    cid = order.client_order_id
    # 1.
    if _identity_mismatch(order, report.symbol, report.side, outcome):
        return outcome
    # 2.
    if report.status is OrderStatus.UNKNOWN:
        outcome.find(
            DiscrepancyKind.UNKNOWN_STATUS,
            cid,
            "a mapped status",
            report.raw_status,
            f"unknown broker status {report.raw_status!r}; report stored, order unchanged",
        )
        return outcome
    # 3.
    _link(order, report.broker_order_id, outcome)
    # 4. ib_async invents PendingCancel and error-driven Cancelled without TWS saying so:
    # an intent, not a fact. Record it as flags; never move the rank on it.
    if report.source is ReportSource.CLIENT:
        if order.status.is_terminal:
            return outcome
        flags = order.flags | report.flags
        if report.status.is_terminal:
            flags |= {OrderFlag.UNCONFIRMED_TERMINAL}
        if flags != order.flags:
            outcome.change(
                Order.StatusUpdated,
                status=order.status,
                flags=flags,
                raw_status=report.raw_status,
                source=report.source.value,
                ts_event=order.status_ts or report.ts_event,
                reason=f"client-side {report.raw_status}: flagged, awaiting broker confirmation",
            )
        return outcome
    # 5.
    quantity = order.quantity
    newer_terms = order.amend_ts is None or report.ts_event >= order.amend_ts
    # A report flagged REPLACE_PENDING may carry the requested terms (Kite's MODIFY PENDING):
    # the old terms stay in force, and fills at them are no overfill, until the broker
    # confirms the replace with a report without the flag.
    newer_terms = newer_terms and OrderFlag.REPLACE_PENDING not in report.flags
    limit_changed = report.limit_price is not None and report.limit_price != order.limit_price
    if not order.status.is_terminal and newer_terms and (report.quantity != quantity or limit_changed):
        if report.quantity < order.real_filled:
            outcome.find(
                DiscrepancyKind.FILL_MISMATCH,
                cid,
                f">= {order.real_filled} (booked fills)",
                report.quantity,
                "broker quantity is below the executions booked; quantity kept",
            )
        else:
            quantity = _amended_quantity(order, report, outcome)
            limit = report.limit_price if report.limit_price is not None else order.limit_price
            if (quantity, limit) != (order.quantity, order.limit_price):
                outcome.change(Order.Amended, quantity=quantity, limit_price=limit, ts_event=report.ts_event)
    # 6.
    cumulative = report.filled_qty
    if quantity is not None and exceeds(cumulative, quantity):
        outcome.find(
            DiscrepancyKind.OVERFILL,
            cid,
            f"<= {quantity}",
            cumulative,
            "reported cumulative fill exceeds the order quantity; report refused",
        )
        return outcome
    # 7.
    filled = order.filled_qty
    if cumulative > filled:
        inferred = _infer(order, report, outcome)
        if inferred:
            filled = cumulative
    # 8.
    target: OrderStatus = report.status
    if target is OrderStatus.FILLED and quantity is not None and exceeds(quantity, filled):
        outcome.find(
            DiscrepancyKind.FILL_MISMATCH,
            cid,
            f"filled {quantity}",
            f"FILLED with filled_qty {filled}",
            "broker says FILLED but the cumulative is short; status not moved to FILLED",
        )
        target = OrderStatus.ACCEPTED
    if not target.is_terminal:
        target = working_status(target, filled, quantity)
    _transition(
        order,
        target,
        filled=filled,
        reported=report,
        ts=report.ts_event,
        reason=f"broker reported {report.raw_status}",
        outcome=outcome,
    )
    return outcome


def _amended_quantity(order: OrderState, report: OrderReport, outcome: Outcome) -> Decimal:
    """The quantity the order has after `report`: the broker's if expected, else ours, found.

    A broker quantity is expected when the order had none yet, when it is one we asked
    for (`Order.AmendRequested`, stored before the modify call), or when the adapter
    derived it by a rule of the broker's own (`OrderReport.quantity_basis`). Any other
    change is never taken silently: the order keeps its quantity (so fills above it are
    refused as an overfill) and QUANTITY_CHANGED names both.
    """
    ours = order.quantity
    if ours is None or report.quantity == ours or report.quantity_basis or order.requested(report.quantity):
        return report.quantity
    outcome.findings.append(
        Finding(
            DiscrepancyKind.QUANTITY_CHANGED,
            order.client_order_id,
            f"quantity {ours}",
            f"quantity {report.quantity}",
            f"broker reports quantity {report.quantity} for our order of {ours} and no amend to it "
            f"was requested; {ours} kept (modified by hand at the broker?)",
            topic="quantity",
        )
    )
    return ours


@money_context
def _infer(order: OrderState, report: OrderReport, outcome: Outcome) -> bool:
    """Book one inferred fill for the gap between the cumulative and our fills."""
    cid = order.client_order_id
    cumulative = report.filled_qty
    outstanding = cumulative - order.real_filled
    price: Decimal | None = None
    if report.avg_price:  # 0 is how brokers say "no average" (Kite, IB), never a price
        price = derived_price(report.avg_price * cumulative - order.real_cost, outstanding)
        if not plausible_price(price, report.avg_price, *(f.price for f in order.fills.values())):
            outcome.find(
                DiscrepancyKind.FILL_MISMATCH,
                cid,
                f"average consistent with booked fills (cost {order.real_cost})",
                f"{cumulative} @ {report.avg_price}",
                "reported average cannot be matched; inferred fill priced at the reported average",
            )
            price = report.avg_price
    else:
        last_fill_price = max(order.fills.values(), key=lambda f: f.ts_event).price if order.fills else None
        price = report.limit_price or order.limit_price or last_fill_price
        if price is None:
            outcome.find(
                DiscrepancyKind.FILL_MISMATCH,
                cid,
                f"filled {order.filled_qty}",
                f"cumulative {cumulative} without a price",
                "cumulative fill ahead of executions and no price to book it at; not booked",
            )
            return False
        outcome.find(
            DiscrepancyKind.FILL_MISMATCH,
            cid,
            "an average price with the cumulative",
            f"cumulative {cumulative} without a price",
            f"inferred fill priced at {price} until the executions arrive",
            Severity.INFO,
        )
    far = far_outside(price, order, report)
    if far is not None:
        outcome.findings.append(
            Finding(
                DiscrepancyKind.FILL_MISMATCH,
                cid,
                f"an inferred price within {far}",
                f"inferred {outstanding} @ {price}",
                f"inferred fill priced at {price}, far outside {far}: booked, check the broker's average",
                topic="inferred price far outside",
            )
        )
    outcome.change(
        Order.FillInferred,
        qty=outstanding - order.inferred_qty,
        inferred_qty=outstanding,
        price=price,
        reported_filled=cumulative,
        reported_avg=report.avg_price,
        ts_event=report.ts_event,
    )
    return True


FAR_OUTSIDE = Decimal("0.05")
"""How far beyond its reference band an inferred price is "far outside" (see `far_outside`)."""


def far_outside(price: Decimal, order: OrderState, report: OrderReport) -> str | None:
    """The reference band an inferred `price` lies far outside, or None if it is near it.

    The band runs from the lowest to the highest of the order's real fill prices, the
    reported average and the limit price (those known). "Far outside" is beyond the band by
    more than its width and more than `FAR_OUTSIDE` (5%) of its largest magnitude: an
    average of fills spread over the band never is, a price derived from a rounded average
    over a tiny remainder (or from a wrong one) is.
    """
    references = [fill.price for fill in order.fills.values()]
    references += [p for p in (report.avg_price, report.limit_price or order.limit_price) if p is not None]
    if not order.fills or not references:
        return None  # without real fills the inferred price is the average itself
    low, high = min(references), max(references)
    margin = max(high - low, FAR_OUTSIDE * max(abs(low), abs(high)))
    if low - margin <= price <= high + margin:
        return None
    return f"{low}..{high} (+/- {margin})"


@money_context
def decide_fill(order: OrderState, fill: FillReport) -> Outcome:  # noqa: C901, PLR0912
    """Decide what an execution changes (dedupe, correction, supersession, overfill).

    Steps: 1. refuse a fill naming another symbol/side; 2. link the broker id; 3. dedupe
    by execution key (a higher IB revision replaces, a lower one is stale); 4. refuse an
    overfill; 5. book it, superseding inferred quantity; 6. derive the status.
    """
    outcome = Outcome()
    cid = order.client_order_id
    # 1.
    if _identity_mismatch(order, fill.symbol, fill.side, outcome):
        return outcome
    # 2.
    _link(order, fill.broker_order_id, outcome)
    # 3.
    key, revision = exec_key(fill.exec_id)
    existing = order.fills.get(key)
    previous_qty = Decimal(0)
    if existing is not None:
        if revision < existing.revision:
            return outcome  # the original of an execution already corrected: stale
        if revision == existing.revision:
            if (existing.qty, existing.price) != (fill.qty, fill.price):
                outcome.find(
                    DiscrepancyKind.FILL_MISMATCH,
                    cid,
                    f"{existing.qty} @ {existing.price}",
                    f"{fill.qty} @ {fill.price}",
                    f"execution {fill.exec_id} repeated with other figures; first kept",
                    # One problem per execution (not per figures: two executions of one
                    # order may share them); every repeat of it is a sighting.
                    topic=f"execution {key} repeated with other figures",
                )
            elif fill.commission is not None and existing.commission is None:
                outcome.change(Order.CommissionRecorded, key=key, commission=fill.commission)
            return outcome  # duplicate: applied once
        previous_qty = existing.qty
    # 4.
    real_after = order.real_filled - previous_qty + fill.qty
    if order.quantity is not None and exceeds(real_after, order.quantity):
        outcome.find(
            DiscrepancyKind.OVERFILL,
            cid,
            f"<= {order.quantity}",
            real_after,
            f"execution {fill.exec_id} of {fill.qty} would overfill the order; refused",
        )
        return outcome
    # 5. Real executions replace inferred quantity first, never add to it.
    growth = fill.qty - previous_qty
    superseded = min(max(growth, Decimal(0)), order.inferred_qty)
    real_cost_after = order.real_cost + fill.qty * fill.price
    if existing is not None:
        real_cost_after -= existing.qty * existing.price
    remaining = order.inferred_qty - superseded
    common = {
        "exec_id": fill.exec_id,
        "key": key,
        "revision": revision,
        "qty": fill.qty,
        "price": fill.price,
        "ts_event": fill.ts_event,
        # A correction is a new execution: its commission comes with its own report
        # (joined by the new execId), never carried over from the revision it replaces.
        "commission": fill.commission,
        "superseded_qty": superseded,
        "inferred_price": _reprice_inferred(order, remaining, real_cost_after),
    }
    if existing is None:
        outcome.change(Order.FillBooked, **common)
    else:
        outcome.change(Order.FillCorrected, previous_exec_id=existing.exec_id, **common)
    if fill.price == 0:
        outcome.find(
            DiscrepancyKind.FILL_MISMATCH,
            cid,
            "a fill price",
            f"execution {fill.exec_id} at price 0",
            f"execution {fill.exec_id} of {fill.qty} booked at price 0: check it at the broker "
            "(the average and P&L include it)",
            # One problem per execution (its corrections are sightings of it).
            topic=f"execution {key} at price 0",
        )
    # 6.
    filled_after = real_after + remaining
    if order.status is OrderStatus.REJECTED:
        outcome.find(
            DiscrepancyKind.STATUS_CONFLICT,
            cid,
            "no executions on a rejected order",
            f"execution {fill.exec_id}",
            "execution booked on an order the broker rejected",
        )
    elif filled_after > 0:
        _transition(
            order,
            working_status(OrderStatus.ACCEPTED, filled_after, order.quantity),
            filled=filled_after,
            reported=None,
            ts=order.status_ts,  # implied by fills, not reported: the report time stays
            reason=f"execution {fill.exec_id}",
            outcome=outcome,
        )
    return outcome
