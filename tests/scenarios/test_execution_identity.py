"""A FILL_MISMATCH about one execution is that execution's problem: told apart by its exec id.

"Execution X repeated with other figures" and "execution X booked at price 0" are
problems of one execution of an order. Two executions of one order with the same
figures are two problems (two discrepancies); one execution seen again N times is one
problem (one discrepancy, count N), whatever the figures of each sighting.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import ACCOUNT, D, fill_report, unique_cid
from trueup import Ledger
from trueup.domain.views import DiscrepancyView


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger.open(f"memory://{unique_cid('exec')}") as opened:
        opened.intend(ACCOUNT, "C1", "AAPL", "BUY", D(100))
        yield opened


def fill_mismatches(ledger: Ledger) -> list[DiscrepancyView]:
    return [d for d in ledger.discrepancies(ACCOUNT) if d.kind == "FILL_MISMATCH"]


def test_two_executions_repeated_with_other_figures_are_two_discrepancies(ledger: Ledger) -> None:
    # E1 and E2 both first booked 5 @ 100, then each repeated as 5 @ 101: same figures, two executions
    ledger.ingest([fill_report("E1", 5, 100), fill_report("E2", 5, 100)])
    ledger.ingest(fill_report("E1", 5, 101))
    ledger.ingest(fill_report("E2", 5, 101))
    found = fill_mismatches(ledger)
    assert len(found) == 2, [(d.expected, d.actual, d.detail) for d in found]
    assert {("E1" in d.detail, "E2" in d.detail) for d in found} == {(True, False), (False, True)}
    assert [d.count for d in found] == [1, 1]


def test_two_executions_at_price_0_are_two_discrepancies(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 5, 0))
    ledger.ingest(fill_report("E2", 5, 0))
    found = fill_mismatches(ledger)
    assert len(found) == 2, [(d.expected, d.actual, d.detail) for d in found]
    assert sorted(d.actual for d in found) == ["execution E1 at price 0", "execution E2 at price 0"]


def test_a_repeat_and_a_zero_price_of_one_execution_are_two_problems(ledger: Ledger) -> None:
    ledger.ingest(fill_report("E1", 5, 0))  # booked at price 0
    ledger.ingest(fill_report("E1", 5, 1))  # repeated with other figures
    assert len(fill_mismatches(ledger)) == 2


@settings(max_examples=25, deadline=None)
@given(prices=st.lists(st.integers(min_value=101, max_value=10_000), min_size=1, max_size=12))
def test_one_execution_repeated_n_times_with_other_figures_is_one_discrepancy_with_count_n(
    prices: list[int],
) -> None:
    with Ledger.open(f"memory://{unique_cid('exec')}") as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(100))
        ledger.ingest(fill_report("E1", 5, 100))
        for price in prices:
            ledger.ingest(fill_report("E1", 5, price))
        [found] = fill_mismatches(ledger)
        assert found.count == len(prices)
        assert found.expected == "5 @ 100"  # the first kept
        assert found.actual == f"5 @ {prices[-1]}"  # the latest sighting


def test_one_execution_corrected_at_price_0_again_is_one_discrepancy(ledger: Ledger) -> None:
    # IB revisions of one execution (.01 then its correction .02), both at price 0
    ledger.ingest(fill_report("0001.a.01.01", 5, 0))
    ledger.ingest(fill_report("0001.a.01.02", 6, 0))
    [found] = fill_mismatches(ledger)
    assert found.count == 2
