"""IB's `avgCost` of a contract with a multiplier, divided through the translator the store uses.

IB gives a position's `avgCost` per contract, the multiplier included: ES (multiplier 50)
bought at 5,000.25 shows 250,012.5. The report's `avg_cost` is per unit of price (5,000.25),
still marked not comparable (it includes commissions). A multiplier that is not a positive
number is refused naming `position.contract.multiplier`, and through `Ledger.ingest_raw`
the payload is kept with an INVALID_REPORT that says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import ib_async
import msgspec
import pytest

from tests.builders import unique_cid
from trueup import Ledger
from trueup.adapters.ib.envelope import IbEventTranslator, to_reports
from trueup.adapters.ib.translate import to_position_report, to_position_reports
from trueup.adapters.ib.wire import IbEnvelope, position_wire
from trueup.domain.errors import InvalidReport
from trueup.domain.reports import PositionReport

ACCOUNT = "DU123"
RECEIVED = datetime(2024, 5, 1, 14, 30, 6, tzinfo=UTC)
D = Decimal


def es(multiplier: str = "50") -> ib_async.Contract:
    return ib_async.Contract(
        conId=495512563, symbol="ES", secType="FUT", localSymbol="ESM4", multiplier=multiplier
    )


def stored(position: ib_async.Position) -> str:
    envelope = IbEnvelope(event="position", received_at=RECEIVED, position=position_wire(position))
    return msgspec.json.encode(envelope).decode()


def test_a_stored_es_position_reads_5000_25_per_unit_not_per_contract() -> None:
    row = ib_async.Position(ACCOUNT, es(), 2.0, 250012.5)
    [report] = IbEventTranslator(ACCOUNT)(stored(row))
    assert report == PositionReport(
        account=ACCOUNT,
        symbol="ESM4",
        qty=D("2.0"),
        avg_cost=D("5000.25"),
        ts_event=RECEIVED,
        avg_cost_comparable=False,  # it still includes commissions: never a price or a cost basis
    )
    # the live object gives the same
    assert to_position_report(row, account=ACCOUNT, as_of=RECEIVED) == report


@pytest.mark.parametrize(
    ("multiplier", "avg_cost", "per_unit"),
    [
        ("50", 250012.5, "5000.25"),  # ES
        ("5", 25001.25, "5000.25"),  # MES
        ("1000", 78450.0, "78.45"),  # CL
        ("100", 18741.0, "187.41"),  # an option: 100 shares a contract
        ("", 187.41, "187.41"),  # a stock: no multiplier
        ("0", 187.41, "187.41"),  # ib_async's "no multiplier"
    ],
)
def test_the_multiplier_divides_the_average_cost(multiplier: str, avg_cost: float, per_unit: str) -> None:
    [report] = to_reports(stored(ib_async.Position(ACCOUNT, es(multiplier), 1.0, avg_cost)), account=ACCOUNT)
    assert report.avg_cost == D(per_unit)
    assert report.avg_cost_comparable is False


def test_rows_of_one_future_net_to_the_weighted_per_unit_average() -> None:
    rows = [
        ib_async.Position(ACCOUNT, es(), 1.0, 250012.5),  # 5,000.25
        ib_async.Position(ACCOUNT, es(), 3.0, 250037.5),  # 5,000.75
    ]
    [report] = to_position_reports(rows, account=ACCOUNT, as_of=RECEIVED)
    assert report.qty == D(4)
    assert report.avg_cost == D("5000.625")
    assert report.avg_cost_comparable is False


@pytest.mark.parametrize(
    ("multiplier", "said"),
    [
        ("x", "must be a number, got 'x'"),
        ("-50", "must be > 0, got '-50'"),
        ("inf", "must be > 0, got 'inf'"),
    ],
)
def test_a_bad_multiplier_is_refused_naming_the_field(multiplier: str, said: str) -> None:
    payload = stored(ib_async.Position(ACCOUNT, es(multiplier), 1.0, 250012.5))
    with pytest.raises(InvalidReport) as raised:
        to_reports(payload, account=ACCOUNT)
    assert raised.value.field == "position.contract.multiplier"
    assert said in str(raised.value)
    # through the ledger: the payload is kept, an INVALID_REPORT names the field, nothing booked
    with Ledger.open(f"memory://{unique_cid('mult')}") as ledger:
        ledger.ingest_raw(payload, IbEventTranslator(ACCOUNT), account=ACCOUNT, source="ib", kind="position")
        [message] = [e for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"]
        assert message.event.payload == payload
        [found] = ledger.discrepancies(ACCOUNT)
        assert found.kind == "INVALID_REPORT"
        assert "position.contract.multiplier" in found.actual
        assert said in found.actual
        assert found.evidence_position == message.position
        assert ledger.positions() == []
