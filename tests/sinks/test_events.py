"""The published payloads: ORDER_UPDATED and POSITION_SYNCED name their subject; old events still decode."""

from __future__ import annotations

import msgspec

from tests.builders import ACCOUNT, D, order_report
from tests.sinks.conftest import busy_day, position, snapshot
from trueup import Ledger, LoggedEvent
from trueup.domain.order import Order
from trueup.domain.position import Position
from trueup.sinks.events import lifecycle, sink_event


def published(ledger: Ledger) -> list:
    return [e for e in (sink_event(ledger.store, logged) for logged in ledger.events()) if e is not None]


def test_order_updated_carries_account_client_id_symbol_status_and_filled(ledger: Ledger) -> None:
    busy_day(ledger, orders=2)
    updates = [e for e in published(ledger) if e.kind == "ORDER_UPDATED"]
    assert [(u.account, u.data["client_order_id"], u.data["symbol"]) for u in updates] == [
        (ACCOUNT, "C0", "AAPL"),
        (ACCOUNT, "C1", "AAPL"),
    ]
    first = updates[0].data
    assert (first["status_before"], first["status_after"]) == ("INTENDED", "FILLED")
    assert (first["filled_before"], first["filled_after"]) == (D(0), D(10))
    # The stored event itself carries them: no second lookup on the subscriber's side.
    stored = [e.event for e in ledger.events() if isinstance(e.event, Order.Updated)]
    assert [(e.account, e.client_order_id, e.symbol) for e in stored][0] == (ACCOUNT, "C0", "AAPL")


def test_an_orphans_first_update_does_not_claim_it_was_intended(ledger: Ledger) -> None:
    ledger.reconcile(snapshot(orders=[order_report("ACCEPTED", cid="X9", broker_id="BX9")]))
    [update] = [e.event for e in ledger.events() if isinstance(e.event, Order.Updated)]
    assert update.status_before is None
    assert (update.client_order_id, update.status_after) == ("X9", "ACCEPTED")
    [public] = [e for e in published(ledger) if e.kind == "ORDER_UPDATED"]
    assert public.data["status_before"] is None


def test_position_synced_carries_account_symbol_and_quantity_before_and_after(ledger: Ledger) -> None:
    ledger.reconcile(snapshot(orders=[], positions=[position("MSFT", 7, 50)]))
    ledger.reconcile(snapshot(orders=[], positions=[position("MSFT", -3, 55)]))
    syncs = [e for e in published(ledger) if e.kind == "POSITION_SYNCED"]
    assert [(s.account, s.data["symbol"], s.data["qty_before"], s.data["qty_after"]) for s in syncs] == [
        (ACCOUNT, "MSFT", D(0), D(7)),
        (ACCOUNT, "MSFT", D(7), D(-3)),
    ]
    assert len(syncs[1].data["fills"]) == 2  # the flip: one fill closes, one opens


def _as_old_format(ledger: Ledger, logged: LoggedEvent, *drop: str) -> LoggedEvent:
    """The event as a store written before `drop` existed holds it: decoded without those keys."""
    mapper = ledger.store.app.mapper
    stored = mapper.to_stored_event(logged.event)
    state = msgspec.json.decode(stored.state)
    for name in drop:
        del state[name]
    old = type(stored)(
        stored.originator_id, stored.originator_version, stored.topic, msgspec.json.encode(state)
    )
    return LoggedEvent(logged.position, logged.topic, mapper.to_domain_event(old))


def test_old_format_events_decode_with_defaults_and_publish_alike(ledger: Ledger) -> None:
    busy_day(ledger, orders=1)
    logged = list(ledger.events())
    new_update = next(e for e in logged if isinstance(e.event, Order.Updated))
    new_sync = next(e for e in logged if isinstance(e.event, Position.Synced))
    old_update = _as_old_format(ledger, new_update, "account", "client_order_id", "symbol")
    old_sync = _as_old_format(ledger, new_sync, "account", "symbol", "qty_before")
    assert (old_update.event.account, old_update.event.client_order_id) == ("", "")
    assert old_sync.event.qty_before is None
    # Replay: the aggregate rebuilt from the old-format events is the same order and position.
    order = ledger.store.aggregate(old_update.event.originator_id)
    assert order.state.client_order_id == "C0"
    # Published alike: the sink fills in what the old event lacks from the aggregate.
    store = ledger.store
    assert sink_event(store, old_update).data == sink_event(store, new_update).data
    assert sink_event(store, old_sync).data == sink_event(store, new_sync).data


class _State:
    def __init__(self, severity: str, resolution: str | None = None) -> None:
        self.severity, self.resolution = severity, resolution


def test_lifecycle_is_read_from_state_so_a_discrepancy_updated_in_place_is_not_raised_again() -> None:
    assert lifecycle(None, _State("ERROR")) == "raised"
    assert lifecycle(_State("ERROR"), _State("ERROR")) == "updated"  # seen again this cycle
    assert lifecycle(_State("WARNING"), _State("CRITICAL")) == "escalated"
    assert lifecycle(_State("CRITICAL"), _State("WARNING")) == "updated"
    assert lifecycle(_State("ERROR"), _State("ERROR", "repaired")) == "resolved"
    assert lifecycle(_State("ERROR", "repaired"), _State("ERROR")) == "reopened"


def test_discrepancy_and_gate_events_are_published_with_their_whole_state(ledger: Ledger) -> None:
    ledger.reconcile(snapshot(orders=[], positions=[position("TSLA", 5, 10)]), policy="alert")
    events = published(ledger)
    [raised] = [e for e in events if e.kind == "DISCREPANCY"]
    assert raised.data["lifecycle"] == "raised"
    assert (raised.data["kind"], raised.data["key"], raised.data["account"]) == (
        "MISSING_LOCAL_POSITION",
        "TSLA",
        ACCOUNT,
    )
    gates = [e for e in events if e.kind == "GATE_CHANGED"]
    assert [(g.data["state_before"], g.data["state"]) for g in gates] == [("RECONCILING", "READY")]
