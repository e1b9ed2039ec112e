"""Any interleaving of stream fills and reconciliations counts every execution once.

The broker executes our orders over time; each execution (and the order's cumulative
status after it) travels the stream with any delay, duplicated or not, while
reconciliations take consistent snapshots of the broker in which any part may be
unknown. Whatever the interleaving, once the stream is drained our position is the
broker's (less a broker-only position no complete snapshot has shown yet): never above
it, so a real execution a repair stood for is never counted a second time. One
complete reconciliation then makes them equal, and a second one stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import at, unique_cid
from trueup import BrokerSnapshot, Ledger, OrderReport, PositionReport
from trueup.domain.position import PositionState
from trueup.domain.reports import FillReport, Report
from trueup.domain.status import OrderStatus, Side

ACCOUNT = "DU13"
SYMBOL = "CL"
NOW = 10_000.0


@dataclass
class BrokerOrder:
    cid: str
    side: Side
    quantity: Decimal
    executions: list[tuple[Decimal, Decimal]]
    """(qty, price) still to execute, in order."""
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


@dataclass
class Broker:
    orders: list[BrokerOrder]
    external: Decimal
    """A position the broker holds from no order in its lists (a transfer, an old order)."""
    fills: list[FillReport] = field(default_factory=list)
    clock: int = 0

    def report(self, order: BrokerOrder) -> OrderReport:
        done = order.filled == order.quantity
        return OrderReport(
            account=ACCOUNT,
            client_order_id=order.cid,
            broker_order_id=f"B-{order.cid}",
            symbol=SYMBOL,
            side=order.side,
            quantity=order.quantity,
            status=OrderStatus.FILLED if done else OrderStatus.ACCEPTED,
            filled_qty=order.filled,
            avg_price=order.cost / order.filled if order.filled else None,
            ts_event=at(self.clock),
            raw_status="filled" if done else "accepted",
        )

    def execute(self, order: BrokerOrder) -> list[Report]:
        """The broker executes the order's next slice; what the stream will carry about it."""
        qty, price = order.executions.pop(0)
        self.clock += 1
        order.filled += qty
        order.cost += qty * price
        fill = FillReport(
            account=ACCOUNT,
            client_order_id=order.cid,
            broker_order_id=f"B-{order.cid}",
            exec_id=f"X-{order.cid}-{len(order.executions)}",
            symbol=SYMBOL,
            side=order.side,
            qty=qty,
            price=price,
            ts_event=at(self.clock),
        )
        self.fills.append(fill)
        return [fill, self.report(order)]

    def position(self) -> Decimal:
        return self.external + sum((f.side.sign * f.qty for f in self.fills), Decimal(0))

    def snapshot(self, as_of: float, unknown: frozenset[str]) -> BrokerSnapshot:
        state = PositionState(account=ACCOUNT, symbol=SYMBOL)
        if self.external:
            state.trade(self.external, Decimal(20))
        for fill in self.fills:
            state.trade(fill.side.sign * fill.qty, fill.price)
        positions = [PositionReport(ACCOUNT, SYMBOL, state.qty, state.avg_cost or Decimal(0), at(as_of))]
        return BrokerSnapshot(
            account=ACCOUNT,
            as_of=at(as_of),
            orders=None if "orders" in unknown else [self.report(o) for o in self.orders],
            fills=None if "fills" in unknown else list(self.fills),
            positions=None if "positions" in unknown else [p for p in positions if p.qty],
        )


slices = st.lists(
    st.tuples(st.integers(1, 30).map(Decimal), st.integers(-50, 120).map(Decimal)), min_size=1, max_size=3
)
parts = st.frozensets(st.sampled_from(["orders", "fills", "positions"]))


@st.composite
def world(draw: st.DrawFn) -> tuple[Broker, list[tuple[str, object]]]:
    orders = [
        BrokerOrder(
            cid=f"C{i}",
            side=draw(st.sampled_from(Side)),
            quantity=sum((q for q, _ in executions), Decimal(0)),
            executions=executions,
        )
        for i, executions in enumerate(draw(st.lists(slices, min_size=1, max_size=3)))
    ]
    external = Decimal(draw(st.sampled_from([0, 0, 25, -10])))
    steps = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("execute"), st.integers(0, len(orders) - 1)),
                st.tuples(st.just("deliver"), st.tuples(st.integers(0, 99), st.booleans())),
                st.tuples(st.just("reconcile"), parts),
            ),
            max_size=25,
        )
    )
    return Broker(orders, external), steps


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=world())
def test_any_interleaving_of_stream_fills_and_reconciliations_counts_each_execution_once(
    case: tuple[Broker, list[tuple[str, object]]],
) -> None:
    broker, steps = case
    in_flight: list[Report] = []
    external_shown = False
    with Ledger.open(f"memory://{unique_cid('once')}", clock=lambda: at(NOW)) as ledger:
        for order in broker.orders:
            ledger.intend(ACCOUNT, order.cid, SYMBOL, order.side, order.quantity)
            ledger.ingest(broker.report(order))
        for number, (kind, arg) in enumerate(steps):
            if kind == "execute":
                assert isinstance(arg, int)
                order = broker.orders[arg]
                if order.executions:
                    in_flight += broker.execute(order)
            elif kind == "deliver" and in_flight:
                assert isinstance(arg, tuple)
                index, duplicate = arg
                report = (
                    in_flight[index % len(in_flight)] if duplicate else in_flight.pop(index % len(in_flight))
                )
                ledger.ingest(report)
            elif kind == "reconcile":
                assert isinstance(arg, frozenset)
                # The service holds the stream while it reconciles: the snapshot is the broker now.
                ledger.reconcile(broker.snapshot(NOW - 50 + number * 0.01, arg), policy="repair")
                external_shown |= not ({"orders", "fills", "positions"} & arg)
        for report in in_flight:
            ledger.ingest(report)
        ours = sum((p.qty for p in ledger.positions(ACCOUNT, include_flat=True)), Decimal(0))
        # Never above the broker: every execution counted once, the broker-only part
        # booked only by a complete snapshot.
        assert ours == broker.position() - (Decimal(0) if external_shown else broker.external)
        assert not [d for d in ledger.discrepancies(ACCOUNT, include_resolved=True) if d.kind == "OVERFILL"]
        ledger.reconcile(broker.snapshot(NOW - 1, frozenset()), policy="repair")
        ours = sum((p.qty for p in ledger.positions(ACCOUNT, include_flat=True)), Decimal(0))
        assert ours == broker.position()
        for order in broker.orders:
            view = ledger.order(ACCOUNT, order.cid)
            assert view is not None
            assert view.filled_qty == order.filled
        stored = ledger.last_position()
        assert ledger.reconcile(broker.snapshot(NOW - 0.5, frozenset()), policy="repair").events == []
        # Nothing concluded: at most the proof that the books matched (and its evidence).
        proof = {"trueup:BooksMatched.Recorded", "trueup:BrokerMessage.Received"}
        assert {logged.topic for logged in ledger.events(after=stored)} <= proof
