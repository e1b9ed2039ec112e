"""After reconcile(snapshot) under `repair`, the books equal the snapshot; a second run stores nothing.

Local books see a random part of what the broker sent (dropped callbacks, a crash); the
snapshot is the broker's truth. Orders are generated like the convergence property's.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import D, at, unique_cid
from tests.property.test_convergence import ACCOUNT, order_truth
from trueup import BrokerSnapshot, Ledger, OrderReport, PositionReport
from trueup.domain.position import PositionState
from trueup.domain.reports import FillReport, Report
from trueup.domain.rules import working_status

NOW = 100_000.0
TOLERANCE = Decimal("1e-9")


def broker_positions(reports: list[Report], extra: dict[str, tuple[int, int]]) -> list[PositionReport]:
    """The broker's positions: its executions in time order (latest correction only), plus external ones."""
    latest: dict[str, FillReport] = {}
    for r in reports:
        if isinstance(r, FillReport):
            key = r.exec_id.rsplit(".", 1)[0]
            latest[key] = r  # truth lists corrections after originals
    states: dict[str, PositionState] = {}
    for fill in sorted(latest.values(), key=lambda f: (f.ts_event, f.exec_id)):
        state = states.setdefault(fill.symbol, PositionState(account=ACCOUNT, symbol=fill.symbol))
        state.trade(fill.side.sign * fill.qty, fill.price)
    for symbol, (qty, price) in extra.items():
        state = states.setdefault(symbol, PositionState(account=ACCOUNT, symbol=symbol))
        state.trade(D(qty), D(price))
    return [
        PositionReport(ACCOUNT, s.symbol, s.qty, s.avg_cost, at(NOW - 1)) for s in states.values() if s.qty
    ]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Report], BrokerSnapshot]:
    count = draw(st.integers(1, 3))
    truths = [draw(order_truth(i)) for i in range(count)]
    seen: list[Report] = []
    for truth in truths:
        # The books saw a random subset of what the broker sent, in order.
        seen += [r for r in truth if draw(st.booleans())]
    everything = [r for truth in truths for r in truth]
    finals = [[r for r in truth if isinstance(r, OrderReport)][-1] for truth in truths]
    fills = [r for r in everything if isinstance(r, FillReport)]
    extra = draw(
        st.dictionaries(
            st.sampled_from(["IBM", "TSLA"]),
            st.tuples(st.integers(-50, 50).filter(bool), st.integers(1, 500)),
            max_size=1,
        )
    )
    snapshot = BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(NOW - 1),
        orders=finals,
        fills=draw(st.permutations(fills)),
        positions=broker_positions(everything, extra),
        complete_history=True,
    )
    return seen, snapshot


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(case=scenario())
def test_repair_makes_the_books_equal_the_snapshot_and_is_idempotent(
    case: tuple[list[Report], BrokerSnapshot],
) -> None:
    seen, snapshot = case
    with Ledger.open(f"memory://{unique_cid('rprop')}", clock=lambda: at(NOW)) as ledger:
        for report in seen:
            if (
                isinstance(report, OrderReport)
                and report.client_order_id
                and ledger.order(ACCOUNT, report.client_order_id) is None
            ):
                ledger.intend(ACCOUNT, report.client_order_id, report.symbol, report.side, report.quantity)
        ledger.ingest(seen)
        ledger.reconcile(snapshot, policy="repair")
        assert snapshot.orders is not None
        for report in snapshot.orders:
            assert report.client_order_id is not None
            order = ledger.order(ACCOUNT, report.client_order_id)
            assert order is not None
            expected = (
                report.status
                if report.status.is_terminal
                else working_status(report.status, report.filled_qty, report.quantity)
            )
            assert order.status is expected
            assert order.filled_qty == report.filled_qty
            assert order.flags == (frozenset() if expected.is_terminal else report.flags)
        broker = {p.symbol: p for p in snapshot.positions or []}
        local = {p.symbol: p for p in ledger.positions(ACCOUNT)}
        assert set(local) == set(broker)
        for symbol, position in broker.items():
            assert local[symbol].qty == position.qty
            assert abs(local[symbol].avg_cost - position.avg_cost) <= TOLERANCE
        stored = sum(1 for _ in ledger.events())
        again = ledger.reconcile(snapshot, policy="repair")
        assert again.events == []
        assert sum(1 for _ in ledger.events()) == stored
