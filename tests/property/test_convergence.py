"""Convergence: any permutation, with any duplication, of the same reports gives the same books.

The reports come from a generated "broker truth" (orders with executions, cumulative
status reports, IB-style corrections, cancel-pending flags, a final status), so each
set is one a real broker could send; only the arrival order and repetition vary.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import D, at, unique_cid
from trueup import Ledger
from trueup.domain.reports import FillReport, OrderReport, Report
from trueup.domain.status import OrderFlag, OrderStatus, Side

ACCOUNT = "DUPROP"


@st.composite
def order_truth(draw: st.DrawFn, index: int) -> list[Report]:
    """All reports a broker could send about one order, in the order it sent them."""
    cid = f"P{index}"
    broker_id = f"B{index}"
    side = draw(st.sampled_from(list(Side)))
    symbol = draw(st.sampled_from(["AAPL", "MSFT"]))
    quantity = draw(st.integers(1, 40))
    executions = draw(st.lists(st.integers(1, 10), max_size=5))
    fills: list[tuple[int, Decimal]] = []
    left = quantity
    for size in executions:
        if left == 0:
            break
        take = min(size, left)
        fills.append((take, Decimal(draw(st.integers(9_000, 11_000))) / 100))
        left -= take
    filled_all = left == 0
    final = (
        OrderStatus.FILLED
        if filled_all
        else draw(st.sampled_from([OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.ACCEPTED]))
    )
    t = index * 1000.0
    reports: list[Report] = []

    def status(
        status: OrderStatus, cum: int, cost: Decimal, flags: frozenset[OrderFlag] = frozenset()
    ) -> None:
        nonlocal t
        t += 1
        reports.append(
            OrderReport(
                account=ACCOUNT,
                client_order_id=cid,
                broker_order_id=broker_id,
                symbol=symbol,
                side=side,
                quantity=D(quantity),
                status=status,
                filled_qty=D(cum),
                avg_price=(cost / cum) if cum else None,
                ts_event=at(t),
                raw_status=status.value.lower(),
                flags=flags,
            )
        )

    status(OrderStatus.PENDING_NEW, 0, Decimal(0))
    status(
        OrderStatus.ACCEPTED, 0, Decimal(0), draw(st.sampled_from([frozenset(), frozenset({OrderFlag.HELD})]))
    )
    cum, cost = 0, Decimal(0)
    for n, (size, price) in enumerate(fills):
        t += 1
        exec_id = f"{index:04x}.{n:04x}.01"
        if draw(st.booleans()):
            # IB correction: the original (smaller or equal, other price) then ".02" with the truth.
            original = draw(st.integers(1, size))
            reports.append(_fill(cid, broker_id, f"{exec_id}.01", symbol, side, original, price + 1, t))
            exec_id = f"{exec_id}.02"
        else:
            exec_id = f"{exec_id}.01"
        reports.append(_fill(cid, broker_id, exec_id, symbol, side, size, price, t))
        cum += size
        cost += size * price
        if draw(st.booleans()):
            status(OrderStatus.ACCEPTED, cum, cost)
    if final is not OrderStatus.FILLED and draw(st.booleans()):
        status(OrderStatus.ACCEPTED, cum, cost, frozenset({OrderFlag.CANCEL_PENDING}))
        if final is OrderStatus.ACCEPTED:
            status(OrderStatus.ACCEPTED, cum, cost)  # cancel rejected: flag clears
    status(final, cum, cost)
    return reports


def _fill(
    cid: str, broker_id: str, exec_id: str, symbol: str, side: Side, qty: int, price: Decimal, t: float
) -> FillReport:
    return FillReport(
        account=ACCOUNT,
        client_order_id=cid,
        broker_order_id=broker_id,
        exec_id=exec_id,
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=price,
        ts_event=at(t),
    )


@st.composite
def truth(draw: st.DrawFn) -> list[Report]:
    """Reports for one to three orders."""
    count = draw(st.integers(1, 3))
    return [r for i in range(count) for r in draw(order_truth(i))]


@st.composite
def delivery(draw: st.DrawFn, reports: list[Report]) -> list[list[Report]]:
    """The same reports permuted, some repeated, cut into ingest batches."""
    repeated = reports + draw(st.lists(st.sampled_from(reports), max_size=len(reports)))
    shuffled = draw(st.permutations(repeated))
    batches: list[list[Report]] = []
    i = 0
    while i < len(shuffled):
        size = draw(st.integers(1, 4))
        batches.append(shuffled[i : i + size])
        i += size
    return batches


def semantic_state(ledger: Ledger, reports: list[Report]) -> dict[str, Any]:
    """What must converge: each order's status, flags and fills, and each position's quantity."""
    state: dict[str, Any] = {}
    for cid in sorted({r.client_order_id for r in reports if r.client_order_id}):
        order = ledger.order(ACCOUNT, cid)
        assert order is not None
        state[cid] = (
            order.status,
            order.flags,
            order.quantity,
            order.filled_qty,
            order.avg_fill_price,
            order.inferred_qty,
            sorted((f.exec_id, f.qty, f.price) for f in order.fills),
            sorted(order.broker_order_ids),
        )
    for position in ledger.positions(ACCOUNT, include_flat=True):
        state[f"pos:{position.symbol}"] = position.qty
    return state


def one_sided_costs(ledger: Ledger, reports: list[Report]) -> dict[str, Decimal]:
    """Average cost of positions built from one side only (order-independent by construction)."""
    sides: dict[str, set[Side]] = {}
    for r in reports:
        sides.setdefault(r.symbol, set()).add(r.side)
    return {
        p.symbol: p.avg_cost
        for p in ledger.positions(ACCOUNT, include_flat=True)
        if len(sides.get(p.symbol, ())) == 1
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
def test_any_permutation_with_duplicates_converges(data: st.DataObject) -> None:
    reports = data.draw(truth())
    batches = data.draw(delivery(reports))
    with (
        Ledger.open(f"memory://{unique_cid('conv')}") as in_order,
        Ledger.open(f"memory://{unique_cid('perm')}") as permuted,
    ):
        in_order.ingest(reports)
        previous: dict[str, tuple[OrderStatus, Decimal]] = {}
        for batch in batches:
            permuted.ingest(batch)
            _check_invariants(permuted, reports, previous)
        assert semantic_state(permuted, reports) == semantic_state(in_order, reports)
        assert one_sided_costs(permuted, reports) == one_sided_costs(in_order, reports)


def _check_invariants(
    ledger: Ledger, reports: list[Report], previous: dict[str, tuple[OrderStatus, Decimal]]
) -> None:
    """Filled quantity never decreases nor exceeds the quantity; terminal moves only CANCELED->FILLED."""
    for cid in {r.client_order_id for r in reports if r.client_order_id}:
        order = ledger.order(ACCOUNT, cid)
        if order is None:
            continue
        assert order.quantity is None or order.filled_qty <= order.quantity
        if cid in previous:
            status, filled = previous[cid]
            assert order.filled_qty >= filled
            if status.is_terminal and order.status != status:
                assert (status, order.status) == (OrderStatus.CANCELED, OrderStatus.FILLED)
        previous[cid] = (order.status, order.filled_qty)
