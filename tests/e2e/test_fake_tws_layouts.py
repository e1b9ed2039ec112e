"""The fake TWS's message layouts, checked against ib_async's own decoder field by field.

ib_async unpacks each message with a trailing `*fields`, so a layout one field short
fails, and one field long would still parse with every later field shifted. Each check
below decodes the fake's message with the real `Decoder` at server version 176, asserts
that fields near the end land in the right attributes, and that dropping the last field
breaks the decode (so nothing is left over).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from ib_async.decoder import Decoder

from tests.e2e import fake_tws
from tests.e2e.fake_tws import FakeExecution, FakeOrder


class Recorder:
    """A wrapper that records what the decoder hands it."""

    defaultTimezone = UTC  # noqa: N815 - ib_async's attribute name

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.ib = type("IB", (), {"TimezoneTWS": ""})()

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def decoder() -> tuple[Decoder, Recorder]:
    recorder = Recorder()
    return Decoder(recorder, fake_tws.SERVER_VERSION), recorder  # type: ignore[arg-type]


def order(status: str = "Submitted") -> FakeOrder:
    return FakeOrder(
        perm_id=1_734_000_009,
        order_id=12,
        client_id=7,
        account="DU123",
        symbol="AAPL",
        con_id=265598,
        action="SELL",
        quantity=Decimal(10),
        order_type="LMT",
        lmt_price=Decimal("187.43"),
        order_ref="REF9",
        status=status,
        filled=Decimal(4),
        cost=Decimal(400),
    )


def test_open_order_layout() -> None:
    dec, recorder = decoder()
    fields = fake_tws.open_order_fields(order())
    dec.openOrder(list(fields))
    [(name, (order_id, contract, decoded, state))] = recorder.calls
    assert name == "openOrder"
    assert order_id == 12
    assert (contract.conId, contract.symbol, contract.localSymbol) == (265598, "AAPL", "AAPL")
    assert (decoded.action, decoded.totalQuantity, decoded.lmtPrice) == ("SELL", 10.0, 187.43)
    assert (decoded.orderRef, decoded.clientId, decoded.permId, decoded.account) == (
        "REF9",
        7,
        1_734_000_009,
        "DU123",
    )
    assert state.status == "Submitted"
    assert decoded.whatIf is False
    assert decoded.adjustedOrderType == "None"  # the block after the conditions lands where it should
    with pytest.raises(ValueError, match="not enough values"):
        dec.openOrder(fields[:-1])


def test_completed_order_layout() -> None:
    dec, recorder = decoder()
    fields = fake_tws.completed_order_fields(order("Filled"))
    dec.completedOrder(list(fields))
    [(name, (contract, decoded, state))] = recorder.calls
    assert name == "completedOrder"
    assert contract.symbol == "AAPL"
    assert (decoded.orderRef, decoded.permId, decoded.orderId, decoded.clientId) == (
        "REF9",
        1_734_000_009,
        0,
        0,
    )
    assert decoded.filledQuantity == 4.0
    assert (state.status, state.completedStatus, state.completedTime) == (
        "Filled",
        "Filled",
        "20240501 20:00:00 UTC",
    )
    with pytest.raises(ValueError, match="not enough values"):
        dec.completedOrder(fields[:-1])


def test_exec_details_and_commission_layouts() -> None:
    dec, recorder = decoder()
    execution = FakeExecution(
        "0000e0d5.00000001.01.01",
        order(),
        Decimal(4),
        Decimal("100.25"),
        Decimal(4),
        Decimal("100.25"),
        datetime(2024, 5, 1, 14, 30, 4, tzinfo=UTC),
        Decimal("1.25"),
    )
    fields = fake_tws.exec_details_fields(execution, req_id=5)
    dec.execDetails(list(fields))
    dec.commissionReport(fake_tws.commission_fields(execution))
    (name, (req_id, contract, decoded)), (_, (report,)) = recorder.calls
    assert (name, req_id, contract.symbol) == ("execDetails", 5, "AAPL")
    assert (decoded.execId, decoded.side, decoded.shares, decoded.price) == (
        execution.exec_id,
        "SLD",
        4.0,
        100.25,
    )
    assert (decoded.permId, decoded.clientId, decoded.orderRef) == (1_734_000_009, 7, "REF9")
    assert decoded.time == datetime(2024, 5, 1, 14, 30, 4, tzinfo=UTC)
    assert decoded.lastLiquidity == 1
    assert (report.execId, report.commission, report.currency) == (execution.exec_id, 1.25, "USD")
    with pytest.raises(ValueError, match="not enough values"):
        dec.execDetails(fields[:-1])


def test_order_status_and_error_layouts() -> None:
    dec, recorder = decoder()
    dec.interpret(fake_tws.order_status_fields(order()))
    dec.errorMsg(fake_tws.error_fields(12, 201, "Order rejected"))
    (name, args), (error_name, error_args) = recorder.calls
    assert name == "orderStatus"
    assert args == (12, "Submitted", 4.0, 6.0, 100.0, 1_734_000_009, 0, 0.0, 7, "", 0.0)
    assert (error_name, error_args) == ("error", (12, 201, "Order rejected", ""))
