"""Broker text that a store cannot hold as text (NUL, lone surrogates) never loses or poisons the log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trueup import Ledger
from trueup.adapters.alpaca.translate import to_reports_from_trade_update
from trueup.adapters.kite.translate import to_order_reports
from trueup.domain.errors import InvalidReport, NotReadyError
from trueup.domain.messages import BrokerMessage, original_payload, storable_payload
from trueup.domain.order import Order
from trueup.domain.reports import FillReport, OrderReport
from trueup.domain.status import OrderStatus, Side

FIXTURES = Path(__file__).parent.parent / "fixtures"
NOW = datetime(2024, 1, 2, tzinfo=UTC)


def _trade_update(symbol_text: str) -> str:
    """The official Alpaca fill example, its symbol replaced by JSON text (escapes kept)."""
    raw = (FIXTURES / "alpaca/streaming.md__trade_updates_fill_example.json").read_text()
    assert raw.count('"SOLUSD"') >= 1
    return raw.replace('"SOLUSD"', f'"{symbol_text}"')


@pytest.mark.parametrize("text", ["AA\x00PL", "\x00", "x\ud800"])
@pytest.mark.parametrize("field", ["symbol", "account", "client_order_id", "broker_order_id", "raw_status"])
def test_a_report_with_unstorable_text_is_invalid(field: str, text: str) -> None:
    terms: dict[str, object] = {
        "account": "A1",
        "client_order_id": "c1",
        "broker_order_id": "b1",
        "symbol": "AAPL",
        "side": Side.BUY,
        "quantity": Decimal(1),
        "status": OrderStatus.ACCEPTED,
        "filled_qty": Decimal(0),
        "avg_price": None,
        "ts_event": NOW,
        "raw_status": "new",
    }
    terms[field] = text
    with pytest.raises(InvalidReport) as raised:
        OrderReport(**terms)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_a_fill_with_a_nul_in_its_exec_id_is_invalid() -> None:
    with pytest.raises(InvalidReport, match="exec_id"):
        FillReport(
            account="A1",
            client_order_id="c1",
            broker_order_id=None,
            exec_id="e\x001",
            symbol="AAPL",
            side=Side.BUY,
            qty=Decimal(1),
            price=Decimal(1),
            ts_event=NOW,
        )


def test_an_intent_with_a_nul_is_refused(store_url: str) -> None:
    with Ledger.open(store_url) as ledger, pytest.raises(InvalidReport, match="symbol"):
        ledger.intend("A1", "c1", "AA\x00PL", "BUY", Decimal(1))


def test_a_nul_from_alpaca_trade_updates_leaves_every_read_working(store_url: str) -> None:
    """End to end on every store (PostgreSQL refuses NUL in text): kept raw, flagged, nothing blocked."""
    raw = _trade_update("SO\\u0000LUSD")  # the escape survives JSON decoding as a real NUL
    with Ledger.open(store_url) as ledger:
        ledger.ingest_raw(
            raw,
            lambda p: to_reports_from_trade_update(p, account="A1"),
            account="A1",
            source="alpaca",
            kind="trade_updates",
        )
        ledger.intend("A1", "c2", "MSFT", "BUY", Decimal(1))
        assert [o.client_order_id for o in ledger.open_orders()] == ["c2"]
        assert ledger.positions() == []
        [flagged] = ledger.discrepancies()
        assert flagged.kind == "INVALID_REPORT"
        assert "NUL" in flagged.detail
        with pytest.raises(NotReadyError, match="RECONCILING"):  # the gate answers, as for any new ledger
            ledger.check_new_order("A1", "MSFT", "BUY", Decimal(1))
        ledger.projector.rebuild()
        stored = [e.event for e in ledger.events() if isinstance(e.event, BrokerMessage.Received)]
        assert stored[0].original == raw


def test_a_nul_in_a_kite_rest_answer_is_an_invalid_report() -> None:
    answer = json.loads((FIXTURES / "kite/orders.json").read_text())
    answer["data"][0]["tradingsymbol"] = "INF\x00Y"
    with pytest.raises(InvalidReport, match="tradingsymbol"):
        to_order_reports(json.dumps(answer), account="A1")


def test_an_event_the_read_models_cannot_store_is_recorded_and_skipped(store_url: str) -> None:
    """Written past every check (an older version, another writer): later reads still work."""
    with Ledger.open(store_url) as ledger:
        bad = Order.intend(
            account="A1",
            client_order_id="c1",
            symbol="AA\x00PL",
            side=Side.BUY,
            quantity=Decimal(1),
            limit_price=None,
            strategy=None,
            ts=NOW,
        )
        ledger.store.app.save(bad)
        ledger.intend("A1", "c2", "MSFT", "BUY", Decimal(1))
        opened = [o.client_order_id for o in ledger.open_orders()]
        if ledger.store.dialect == "postgres":
            assert opened == ["c2"]
            [skipped] = ledger.discrepancies()
            assert (skipped.kind, skipped.severity, skipped.key) == (
                "INVALID_REPORT",
                "CRITICAL",
                "log position 1",
            )
            assert "trueup rebuild" in skipped.detail
        else:  # SQLite stores NUL in text: nothing to skip
            assert opened == ["c1", "c2"]
        ledger.projector.rebuild()
        assert ledger.projector.position() == ledger.last_position()


@pytest.mark.parametrize("payload", ['{"x": "\ud800"}', "\udfff", "a\ud83d", "\\ud800 and \ud800"])
def test_a_lone_surrogate_payload_is_stored_exactly(store_url: str, payload: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.ingest_raw(payload, lambda _p: [], account="A1", source="alpaca", kind="trade_updates")
        [logged] = [e.event for e in ledger.events() if isinstance(e.event, BrokerMessage.Received)]
        assert logged.original == payload
        message = ledger.store.aggregate(logged.originator_id)
        assert message.payload == payload


def test_an_error_quoting_a_surrogate_is_stored(store_url: str) -> None:
    """A translator's error may quote the broker's text: the discrepancy is stored all the same."""

    def translate(payload: str) -> list[OrderReport]:
        raise ValueError(payload)

    with Ledger.open(store_url) as ledger:
        ledger.ingest_raw("bad \ud800 \x00", translate, account="A1", source="kite", kind="ws")
        [flagged] = ledger.discrepancies()
        assert "ValueError" in flagged.actual


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF)))
def test_any_text_round_trips_through_its_stored_form(payload: str) -> None:
    stored, encoding = storable_payload(payload)
    stored.encode("utf-8")  # every store can hold the stored form
    assert original_payload(stored, encoding) == payload
