"""The status-rank rule, one test per row and per transition kind."""

from __future__ import annotations

import msgspec
import pytest

from tests.builders import T0, D, apply, fill_report, kinds, new_order, order_report
from trueup.domain.order import Order
from trueup.domain.status import TERMINAL_STATUSES, OrderFlag, OrderStatus, ReportSource, Side

RANKS = [
    (OrderStatus.INTENDED, 0, False),
    (OrderStatus.SUBMITTED, 5, False),
    (OrderStatus.PENDING_NEW, 10, False),
    (OrderStatus.ACCEPTED, 20, False),
    (OrderStatus.PARTIALLY_FILLED, 30, False),
    (OrderStatus.FILLED, 100, True),
    (OrderStatus.CANCELED, 100, True),
    (OrderStatus.REJECTED, 100, True),
    (OrderStatus.EXPIRED, 100, True),
    (OrderStatus.REPLACED, 100, True),
]


@pytest.mark.parametrize(("status", "rank", "terminal"), RANKS, ids=[r[0].value for r in RANKS])
def test_rank_table(status: OrderStatus, rank: int, terminal: bool) -> None:
    # Check each row of the rank table (docs/rules.md).
    assert status.rank == rank
    assert status.is_terminal is terminal


def test_unknown_has_no_rank_and_is_not_terminal() -> None:
    assert OrderStatus.UNKNOWN.rank < 0
    assert not OrderStatus.UNKNOWN.is_terminal


# Raw broker statuses and what the adapters map them to; each moves a
# fresh order forward to its normalized status.
BROKER_STATUS_SAMPLES = [
    ("alpaca", "pending_new", OrderStatus.PENDING_NEW, frozenset()),
    ("alpaca", "accepted", OrderStatus.PENDING_NEW, frozenset()),
    ("alpaca", "new", OrderStatus.ACCEPTED, frozenset()),
    ("alpaca", "held", OrderStatus.ACCEPTED, frozenset({OrderFlag.HELD})),
    ("alpaca", "canceled", OrderStatus.CANCELED, frozenset()),
    ("alpaca", "expired", OrderStatus.EXPIRED, frozenset()),
    ("alpaca", "rejected", OrderStatus.REJECTED, frozenset()),
    ("alpaca", "replaced", OrderStatus.REPLACED, frozenset()),
    ("ib", "PreSubmitted", OrderStatus.ACCEPTED, frozenset({OrderFlag.HELD})),
    ("ib", "Submitted", OrderStatus.ACCEPTED, frozenset()),
    ("ib", "ApiCancelled", OrderStatus.CANCELED, frozenset()),
    ("kite", "OPEN PENDING", OrderStatus.PENDING_NEW, frozenset()),
    ("kite", "TRIGGER PENDING", OrderStatus.ACCEPTED, frozenset({OrderFlag.HELD})),
    ("kite", "OPEN", OrderStatus.ACCEPTED, frozenset()),
    ("kite", "CANCELLED", OrderStatus.CANCELED, frozenset()),
    ("kite", "REJECTED", OrderStatus.REJECTED, frozenset()),
]


@pytest.mark.parametrize(
    ("broker", "raw", "status", "flags"),
    BROKER_STATUS_SAMPLES,
    ids=[f"{b}-{r}" for b, r, _, _ in BROKER_STATUS_SAMPLES],
)
def test_forward_move_from_broker_status(
    broker: str, raw: str, status: OrderStatus, flags: frozenset[OrderFlag]
) -> None:
    order = new_order()
    apply(order, order_report(status, raw=raw, flags=flags))
    assert order.state.status is status
    assert order.state.flags == (frozenset() if status.is_terminal else flags)
    assert order.state.raw_status == raw, broker


def test_lower_rank_changes_nothing() -> None:
    # A late "new" after "partially filled" (Alpaca replays) must not move the order back.
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1), order_report("ACCEPTED", filled=4, avg=10, ts=3))
    version = order.version
    outcomes = apply(order, order_report("PENDING_NEW", ts=2, raw="pending_new"))
    assert order.state.status is OrderStatus.PARTIALLY_FILLED
    assert order.version == version
    assert kinds(outcomes) == []


def test_equal_rank_newer_report_updates_flags() -> None:
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1))
    apply(order, order_report("ACCEPTED", ts=2, flags=frozenset({OrderFlag.CANCEL_PENDING})))
    assert order.state.flags == {OrderFlag.CANCEL_PENDING}
    # Alpaca order_cancel_rejected: the order is back to plain "new".
    apply(order, order_report("ACCEPTED", ts=3))
    assert order.state.flags == frozenset()


def test_equal_rank_older_report_changes_nothing() -> None:
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=5, flags=frozenset({OrderFlag.CANCEL_PENDING})))
    version = order.version
    apply(order, order_report("ACCEPTED", ts=4))
    assert order.state.flags == {OrderFlag.CANCEL_PENDING}
    assert order.version == version


def test_equal_rank_same_time_flags_accumulate() -> None:
    # Same time, different flags: union, so arrival order cannot matter.
    a, b = new_order(), new_order()
    held = order_report("ACCEPTED", ts=1, flags=frozenset({OrderFlag.HELD}))
    pending = order_report("ACCEPTED", ts=1, flags=frozenset({OrderFlag.CANCEL_PENDING}))
    apply(a, held, pending)
    apply(b, pending, held)
    assert a.state.flags == b.state.flags == {OrderFlag.HELD, OrderFlag.CANCEL_PENDING}


def test_flags_do_not_block_fills() -> None:
    # IB PendingCancel -> Filled (ib_insync#491): fills arrive while cancel is pending.
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1, flags=frozenset({OrderFlag.CANCEL_PENDING})))
    apply(order, fill_report("E1", 10, 100, ts=2))
    assert order.state.status is OrderStatus.FILLED
    assert order.state.flags == frozenset()


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES), ids=str)
def test_terminal_is_locked_against_working_reports(terminal: OrderStatus) -> None:
    order = new_order()
    filled = 10 if terminal is OrderStatus.FILLED else 0
    apply(order, order_report(terminal, filled=filled, avg=100 if filled else None, ts=1))
    version = order.version
    outcomes = apply(order, order_report("ACCEPTED", ts=2), order_report("PENDING_NEW", ts=3))
    assert order.state.status is terminal
    assert order.version == version
    assert kinds(outcomes) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (OrderStatus.CANCELED, OrderStatus.EXPIRED),
        (OrderStatus.EXPIRED, OrderStatus.CANCELED),
        (OrderStatus.REJECTED, OrderStatus.CANCELED),
        (OrderStatus.CANCELED, OrderStatus.REJECTED),
        (OrderStatus.REPLACED, OrderStatus.CANCELED),
    ],
    ids=lambda s: s.value,
)
def test_conflicting_terminals_keep_first_and_raise(first: OrderStatus, second: OrderStatus) -> None:
    order = new_order()
    apply(order, order_report(first, ts=1))
    outcomes = apply(order, order_report(second, ts=2))
    assert order.state.status is first
    assert kinds(outcomes) == ["STATUS_CONFLICT"]
    finding = outcomes[0].findings[0]
    assert (finding.expected, finding.actual) == (first.value, second.value)


def test_filled_then_canceled_keeps_filled_and_raises() -> None:
    order = new_order()
    apply(order, order_report("FILLED", filled=10, avg=100, ts=1))
    outcomes = apply(order, order_report("CANCELED", filled=10, avg=100, ts=2))
    assert order.state.status is OrderStatus.FILLED
    assert kinds(outcomes) == ["STATUS_CONFLICT"]


def test_canceled_to_filled_when_fills_reach_quantity() -> None:
    # A fill raced the cancel: the executions prove the order filled.
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1), fill_report("E1", 6, 100, ts=2))
    apply(order, order_report("CANCELED", filled=6, avg=100, ts=3))
    assert order.state.status is OrderStatus.CANCELED
    outcomes = apply(order, fill_report("E2", 4, 101, ts=4))
    assert order.state.status is OrderStatus.FILLED
    assert order.state.filled_qty == D(10)
    assert kinds(outcomes) == []


def test_canceled_to_filled_from_a_filled_report() -> None:
    order = new_order()
    apply(order, order_report("CANCELED", filled=6, avg=100, ts=1))
    outcomes = apply(order, order_report("FILLED", filled=10, avg=100, ts=2))
    assert order.state.status is OrderStatus.FILLED
    assert order.state.filled_qty == D(10)
    assert kinds(outcomes) == []


def test_canceled_stays_canceled_when_a_partial_fill_arrives() -> None:
    order = new_order()
    apply(order, order_report("CANCELED", ts=1))
    apply(order, fill_report("E1", 3, 100, ts=2))
    assert order.state.status is OrderStatus.CANCELED
    assert order.state.filled_qty == D(3)


def test_unknown_status_changes_nothing_and_raises() -> None:
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1))
    version = order.version
    outcomes = apply(order, order_report("UNKNOWN", raw="TRADE_HALT", filled=5, avg=10, ts=2, broker_id="B9"))
    assert order.version == version
    assert order.state.filled_qty == 0
    assert order.state.broker_order_ids == ("B1",)
    assert kinds(outcomes) == ["UNKNOWN_STATUS"]
    assert outcomes[0].findings[0].actual == "TRADE_HALT"


def test_client_side_terminal_is_only_a_flag() -> None:
    # ib_async marks a live order Cancelled on any non-warning error.
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1))
    apply(order, order_report("CANCELED", raw="Cancelled", source=ReportSource.CLIENT, ts=2))
    assert order.state.status is OrderStatus.ACCEPTED
    assert OrderFlag.UNCONFIRMED_TERMINAL in order.state.flags
    # TWS then confirms the order is working: the flag clears.
    apply(order, order_report("ACCEPTED", raw="Submitted", ts=3))
    assert order.state.flags == frozenset()


def test_client_side_pending_cancel_sets_flag_without_rank() -> None:
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1))
    apply(
        order,
        order_report(
            "ACCEPTED",
            raw="PendingCancel",
            source=ReportSource.CLIENT,
            flags=frozenset({OrderFlag.CANCEL_PENDING}),
            ts=2,
        ),
    )
    assert order.state.status is OrderStatus.ACCEPTED
    assert order.state.flags == {OrderFlag.CANCEL_PENDING}


def test_partially_filled_is_derived_from_fills() -> None:
    # IB "Submitted" with filled > 0, Kite "OPEN" with filled_quantity > 0.
    order = new_order()
    apply(order, order_report("ACCEPTED", raw="Submitted", filled=4, avg=100, ts=1))
    assert order.state.status is OrderStatus.PARTIALLY_FILLED


def test_filled_is_derived_when_fills_reach_quantity() -> None:
    # IB: "Market orders executions will not always trigger a Filled status".
    order = new_order()
    apply(order, order_report("ACCEPTED", ts=1), fill_report("E1", 10, 100, ts=2))
    assert order.state.status is OrderStatus.FILLED


def test_filled_report_short_of_quantity_does_not_claim_filled() -> None:
    order = new_order()
    outcomes = apply(order, order_report("FILLED", filled=7, avg=100, ts=1))
    assert order.state.status is OrderStatus.PARTIALLY_FILLED
    assert kinds(outcomes) == ["FILL_MISMATCH"]


def test_report_for_another_symbol_is_refused() -> None:
    order = new_order()
    outcomes = apply(order, order_report("ACCEPTED", symbol="MSFT"))
    assert order.state.status is OrderStatus.INTENDED
    assert kinds(outcomes) == ["INVALID_REPORT"]


def request_amend(order: Order, qty: int | None, limit: int | None = None) -> None:
    """What `Submitter.modify` stores before it calls the broker."""
    order.trigger_event(
        Order.AmendRequested,
        quantity=None if qty is None else D(qty),
        limit_price=None if limit is None else D(limit),
        ts_requested=T0,
    )


def test_requested_amendment_takes_broker_quantity() -> None:
    order = new_order(qty=10)
    request_amend(order, 12, 101)
    outcomes = apply(order, order_report("ACCEPTED", qty=12, limit=101, ts=2))
    assert (order.state.quantity, order.state.limit_price) == (D(12), D(101))
    assert kinds(outcomes) == []
    assert order.state.amend_requests == ()  # confirmed: done
    apply(order, order_report("ACCEPTED", qty=10, ts=1))  # older terms: ignored
    assert order.state.quantity == D(12)


@pytest.mark.parametrize("broker_qty", [12, 7, 3])
def test_an_unrequested_quantity_change_is_a_discrepancy_and_ours_is_kept(broker_qty: int) -> None:
    order = new_order(qty=10, limit="100")
    apply(order, order_report("ACCEPTED", ts=1))
    outcomes = apply(order, order_report("ACCEPTED", qty=broker_qty, limit=101, ts=2))
    assert order.state.quantity == D(10)
    assert order.state.limit_price == D(101)  # a limit change is taken: the size is not
    [finding] = outcomes[0].findings
    assert (finding.kind, finding.expected, finding.actual) == (
        "QUANTITY_CHANGED",
        "quantity 10",
        f"quantity {broker_qty}",
    )
    assert finding.level == "ERROR"
    # Seen again each cycle: the same problem (one alarm), never an amendment.
    again = apply(order, order_report("ACCEPTED", qty=broker_qty, limit=101, ts=3))
    assert [f.problem for f in again[0].findings] == [finding.problem]
    assert order.state.quantity == D(10)


def test_a_quantity_other_than_the_requested_one_is_a_discrepancy() -> None:
    order = new_order(qty=10)
    request_amend(order, 6)
    outcomes = apply(order, order_report("ACCEPTED", qty=8, ts=2))
    assert order.state.quantity == D(10)
    assert kinds(outcomes) == ["QUANTITY_CHANGED"]
    apply(order, order_report("ACCEPTED", qty=6, ts=3))
    assert order.state.quantity == D(6)


def test_requests_confirmed_in_turn_and_a_stale_one_is_not_reusable() -> None:
    order = new_order(qty=10)
    request_amend(order, 6)
    request_amend(order, 8)
    apply(order, order_report("ACCEPTED", qty=8, ts=2))  # the later request answered first
    assert (order.state.quantity, order.state.amend_requests) == (D(8), ())
    outcomes = apply(order, order_report("ACCEPTED", qty=6, ts=3))  # the older one is done
    assert order.state.quantity == D(8)
    assert kinds(outcomes) == ["QUANTITY_CHANGED"]


def test_unrequested_quantity_above_ours_refuses_fills_beyond_ours() -> None:
    order = new_order(qty=10)
    outcomes = apply(order, order_report("PARTIALLY_FILLED", qty=12, filled=11, avg=100, ts=2))
    assert order.state.quantity == D(10)
    assert order.state.filled_qty == D(0)
    assert sorted(kinds(outcomes)) == ["OVERFILL", "QUANTITY_CHANGED"]


def test_a_quantity_the_adapter_derived_by_rule_is_taken() -> None:
    # Kite's autoslice: a child refused at placement never was an order (trueup.adapters.kite.groups).
    order = new_order(qty=10)
    report = msgspec.structs.replace(
        order_report("ACCEPTED", qty=6, ts=2), quantity_basis="sum of the 2 Kite orders with this tag"
    )
    outcomes = apply(order, report)
    assert order.state.quantity == D(6)
    assert kinds(outcomes) == []


def test_a_first_quantity_for_an_order_without_one_is_no_change() -> None:
    order = Order.discover(
        account="ACC",
        client_order_id="C1",
        symbol="AAPL",
        side=Side.BUY,
        quantity=None,
        limit_price=None,
        ts=T0,
    )
    outcomes = apply(order, order_report("ACCEPTED", qty=5, ts=2))
    assert order.state.quantity == D(5)
    assert kinds(outcomes) == []


def test_amendment_below_fills_is_refused() -> None:
    order = new_order(qty=10)
    apply(order, fill_report("E1", 6, 100, ts=1))
    outcomes = apply(order, order_report("ACCEPTED", qty=5, filled=6, avg=100, ts=2))
    assert order.state.quantity == D(10)
    assert "FILL_MISMATCH" in kinds(outcomes)


def test_events_have_explicit_stable_topics() -> None:
    # Renaming a class must not break replay: every event class names its topic.
    from eventsourcing.utils import get_topic

    for name in (
        "Intended",
        "Discovered",
        "BrokerIdLinked",
        "StatusUpdated",
        "Amended",
        "FillBooked",
        "FillCorrected",
        "FillInferred",
        "CommissionRecorded",
    ):
        assert get_topic(getattr(Order, name)) == f"trueup:Order.{name}"
