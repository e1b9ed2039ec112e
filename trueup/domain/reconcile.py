"""Pure reconciliation rules: comparing our books with a broker snapshot.

The shell (`trueup.application.reconciler`) fetches state and stores decisions; everything that
decides lives here and reads no clock and does no I/O.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum

from trueup.domain.discrepancy import DiscrepancyKind, Finding, Severity
from trueup.domain.money import QUANTITY_TOLERANCE
from trueup.domain.reports import BrokerSnapshot, PositionReport
from trueup.domain.status import OrderStatus


class PositionPolicy(StrEnum):
    """What reconciliation does when a position differs from the broker's."""

    REPAIR = "repair"
    """Book synthetic fills to match the broker (POSITION_SYNCED) and record a DISCREPANCY."""
    ALERT = "alert"
    """Record a DISCREPANCY only."""
    LOCK = "lock"
    """Record a DISCREPANCY and refuse new risk on the symbol until resolved."""


# Quantity differences below this are rounding, not a mismatch (brokers report
# fractional shares to 9 places); cost differences below it per unit are ignored too.
POSITION_TOLERANCE = QUANTITY_TOLERANCE

AVG_COST_TOLERANCE = Decimal("0.0001")
"""Relative: a broker average within 0.01% of ours (rounded on the broker's side) agrees."""

# Statuses at the broker that prove it accepted the order, so reconciliation derives an
# ACCEPTED step first when we never saw one (lifecycle order: accepted, amendments,
# fills, then the final status).
_PROVES_ACCEPTED = frozenset(
    {
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REPLACED,
    }
)


def proves_accepted(broker_status: OrderStatus, local_status: OrderStatus) -> bool:
    """Whether an ACCEPTED step must be derived before applying the broker's status."""
    return broker_status in _PROVES_ACCEPTED and local_status.rank < OrderStatus.ACCEPTED.rank


def too_old(age_seconds: float, max_age_seconds: float) -> bool:
    """Whether a snapshot is too old to conclude anything from."""
    return age_seconds > max_age_seconds


def stale_findings(snapshot: BrokerSnapshot, *, age_seconds: float, max_age_seconds: float) -> list[Finding]:
    """STALE_DATA for every part of the snapshot that failed, or for all of it if too old."""
    findings = []
    if too_old(age_seconds, max_age_seconds):
        findings.append(
            Finding(
                DiscrepancyKind.STALE_DATA,
                snapshot.account,
                f"a snapshot at most {max_age_seconds:g}s old",
                f"{age_seconds:.1f}s old (as of {snapshot.as_of.isoformat()})",
                "snapshot too old; nothing concluded from it",
            )
        )
        return findings
    # `actual` stays "query failed" so a recurring failure is one open discrepancy; the
    # broker's own words (they may vary) go in the detail.
    return [
        Finding(
            DiscrepancyKind.STALE_DATA,
            snapshot.account,
            f"the broker's {part}",
            "query failed",
            f"broker {part} unknown{_because(snapshot, part)}; not read as empty, nothing concluded",
        )
        for part in ("orders", "fills", "positions")
        if getattr(snapshot, part) is None
    ]


def no_stream_finding(account: str, seconds: float) -> Finding:
    """STALE_DATA: the account has had no live broker stream for `seconds`.

    Fills and cancels the broker pushes are not reaching the books, so the books may be
    behind the broker whatever the last snapshot said. `actual` stays the same while the
    stream is down, so it is one open discrepancy; the duration goes in the detail.
    """
    return Finding(
        DiscrepancyKind.STALE_DATA,
        account,
        "a live broker stream",
        "no live stream",
        f"no live broker stream for {seconds:.0f}s: pushed fills and cancels are not reaching the books",
    )


def stale_reasons(snapshot: BrokerSnapshot) -> list[str]:
    """What the gate says about a snapshot with unknown parts: the parts and why, one line per cause."""
    by_cause: dict[str, list[str]] = {}
    for part in ("orders", "fills", "positions"):
        if getattr(snapshot, part) is None:
            by_cause.setdefault(snapshot.failures.get(part, ""), []).append(part)
    return [
        f"broker data stale: {', '.join(parts)} unknown{f' ({cause})' if cause else ''} (see STALE_DATA)"
        for cause, parts in by_cause.items()
    ]


def _because(snapshot: BrokerSnapshot, part: str) -> str:
    cause = snapshot.failures.get(part)
    return f" ({cause})" if cause else ""


def broker_cost(broker: PositionReport | None) -> Decimal | None:
    """The broker's average as a cost basis comparable with ours, or None if it is not one.

    Not one: marked not comparable (IB's `avgCost` includes commissions), or 0 on a
    position that is not flat (brokers write 0 for "no average"). Flat costs nothing.
    """
    if broker is None or not broker.qty:
        return Decimal(0)
    if not broker.avg_cost_comparable or broker.avg_cost == 0:
        return None
    return broker.avg_cost


def averages_agree(local_avg: Decimal, broker_avg: Decimal) -> bool:
    """Whether two average costs agree: within POSITION_TOLERANCE, or AVG_COST_TOLERANCE of ours."""
    difference = abs(local_avg - broker_avg)
    return difference <= POSITION_TOLERANCE or difference <= abs(local_avg) * AVG_COST_TOLERANCE


def _cost_text(avg: Decimal | None) -> str:
    return "unknown cost" if avg is None else str(avg)


def position_finding(
    symbol: str,
    local_qty: Decimal,
    local_avg: Decimal | None,
    broker: PositionReport | None,
) -> Finding | None:
    """The discrepancy between our position and the broker's, or None if they agree.

    `broker` is None when the broker's (complete) list has no row for the symbol: flat.
    `local_avg` is None when our cost is unknown (see `PositionState.cost_known`).
    """
    broker_qty = broker.qty if broker is not None else Decimal(0)
    broker_avg = broker.avg_cost if broker is not None else Decimal(0)
    if abs(local_qty - broker_qty) <= POSITION_TOLERANCE:
        cost = broker_cost(broker)
        if broker_qty == 0 or cost is None:
            return None
        if local_avg is not None and averages_agree(local_avg, cost):
            return None
        return Finding(
            DiscrepancyKind.POSITION_MISMATCH,
            symbol,
            f"{local_qty} @ {_cost_text(local_avg)}",
            f"{broker_qty} @ {broker_avg}",
            "same quantity, our average cost unknown"
            if local_avg is None
            else "same quantity, different average cost",
            Severity.WARNING,
        )
    if broker_qty == 0:
        return Finding(
            DiscrepancyKind.NAKED_POSITION,
            symbol,
            f"{local_qty} @ {_cost_text(local_avg)}",
            "flat",
            "we hold a position the broker does not have",
        )
    if local_qty == 0:
        return Finding(
            DiscrepancyKind.MISSING_LOCAL_POSITION,
            symbol,
            "flat",
            f"{broker_qty} @ {broker_avg}",
            "the broker holds a position we have no record of",
        )
    return Finding(
        DiscrepancyKind.POSITION_MISMATCH,
        symbol,
        f"{local_qty} @ {_cost_text(local_avg)}",
        f"{broker_qty} @ {broker_avg}",
        "our position differs from the broker's",
    )


NOT_REPAIRED = "not repaired: the broker's orders or fills are unknown (a repair could count them twice)"


def repair_safe(snapshot: BrokerSnapshot) -> bool:
    """Whether a position may be repaired from `snapshot`: its orders and fills are known.

    The orders and fills are booked first, so a position repair stands only for what
    no order of the snapshot explains. With either part unknown, the broker's position
    may hold executions still on their way to us: a reconciliation fill would stand for
    them, and each would count twice when it arrives. Then the mismatch is only reported.
    """
    return snapshot.orders is not None and snapshot.fills is not None


def quarantine_scope(symbol: str, claimed_by: str | None) -> str:
    """Scope an orphan order quarantines: the claiming strategy's, else every strategy's."""
    return f"{claimed_by or '*'}:{symbol}"


def repair_prefix(account: str, symbol: str, local_qty: Decimal, broker: PositionReport | None) -> str:
    """Deterministic exec id prefix of a position repair: same mismatch, same id."""
    broker_part = f"{broker.qty}@{broker.avg_cost}" if broker is not None else "flat"
    digest = hashlib.sha256(f"{account}|{symbol}|{local_qty}|{broker_part}".encode()).hexdigest()
    return f"RECON-{digest[:16]}"
