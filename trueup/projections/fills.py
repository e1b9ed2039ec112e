"""The fills-ledger writers: the rows of the fills table, queued on a projection page.

An order's fills (`Order.FillBooked` / `FillCorrected`, and an orphan's fills moved to it
by `Order.Attached`), the reconciliation fills of a `Position.Synced` (under
`RECONCILE_ORDER_ID`, they belong to no order) and an order's inferred quantity (one row
under `INFERRED_KEY`, written when an event changes it). `Projector` calls these while it
applies a page; `sql` is its statements (`tables.statements`).
"""

from __future__ import annotations

from collections.abc import Mapping

from trueup.domain.order import BookedFill, Order, OrderState
from trueup.domain.position import Position, PositionState
from trueup.projections.pages import Page

RECONCILE_ORDER_ID = "~reconcile"
"""client_order_id of the fills-ledger rows of reconciliation fills."""
INFERRED_KEY = "~inferred"
"""exec_key of the fills-ledger row holding an order's inferred quantity."""


def write_fill(
    page: Page,
    sql: Mapping[str, str],
    state: OrderState,
    event: Order.FillBooked | Order.FillCorrected,
    position: int,
) -> None:
    """The row of a fill booked on (or corrected of) the order, at log position `position`."""
    page.write(
        sql["fill"],
        (
            state.account,
            state.client_order_id,
            event.key,
            event.exec_id,
            state.symbol,
            state.side.value,
            str(event.qty),
            str(event.price),
            event.ts_event.isoformat(),
            None if event.commission is None else str(event.commission),
            position,
        ),
    )


def write_fill_row(  # noqa: PLR0913, PLR0917 - one row's parts
    page: Page, sql: Mapping[str, str], state: OrderState, key: str, fill: BookedFill, position: int
) -> None:
    """The row of a fill already booked (an orphan's, moved to the order) under `key`."""
    page.write(
        sql["fill"],
        (
            state.account,
            state.client_order_id,
            key,
            fill.exec_id,
            state.symbol,
            state.side.value,
            str(fill.qty),
            str(fill.price),
            fill.ts_event.isoformat(),
            None if fill.commission is None else str(fill.commission),
            position,
        ),
    )


def write_synthetic_fills(
    page: Page, sql: Mapping[str, str], state: PositionState, event: Position.Synced, position: int
) -> None:
    """Reconciliation fills belong to no order: listed under RECONCILE_ORDER_ID."""
    for fill in event.fills:
        page.write(
            sql["synthetic_fill"],
            (
                state.account,
                RECONCILE_ORDER_ID,
                fill.exec_id,
                fill.exec_id,
                state.symbol,
                "BUY" if fill.qty > 0 else "SELL",
                str(abs(fill.qty)),
                "unknown" if fill.price is None else str(fill.price),
                event.ts_event.isoformat(),
                position,
            ),
        )


def write_inferred(page: Page, sql: Mapping[str, str], state: OrderState, position: int) -> None:
    """The order's inferred-quantity row, or its removal when nothing is inferred any more."""
    if state.inferred_qty > 0 and state.inferred_price is not None:
        page.write(
            sql["inferred"],
            (
                state.account,
                state.client_order_id,
                INFERRED_KEY,
                INFERRED_KEY,
                state.symbol,
                state.side.value,
                str(state.inferred_qty),
                str(state.inferred_price),
                state.status_ts.isoformat() if state.status_ts else "",
                position,
            ),
        )
    else:
        page.write(sql["no_inferred"], (state.account, state.client_order_id, INFERRED_KEY))
