"""Evidence of reconciliation: raw broker answers stored verbatim first, and clean runs leave a trace."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest

from tests.builders import ACCOUNT, D, at, unique_cid
from trueup import BrokerSnapshot, Ledger, PositionReport
from trueup.domain.errors import ConfigError
from trueup.domain.reconcile import PositionPolicy
from trueup.domain.reports import RawAnswer

now = [100.0]


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    now[0] = 100.0
    with Ledger.open(f"memory://{unique_cid('evi')}", clock=lambda: at(now[0])) as opened:
        yield opened


def snapshot(
    positions: list[PositionReport] | None,
    raw: tuple[RawAnswer, ...] = (),
    failures: dict[str, str] | None = None,
) -> BrokerSnapshot:
    return BrokerSnapshot(
        account=ACCOUNT,
        as_of=at(now[0] - 1),
        orders=[],
        fills=[],
        positions=positions,
        complete_history=True,
        failures=failures or {},
        raw=raw,
    )


def pos(symbol: str, qty: int, avg: int) -> PositionReport:
    return PositionReport(ACCOUNT, symbol, D(qty), D(avg), at(now[0] - 1))


def answers(*payloads: tuple[str, str]) -> tuple[RawAnswer, ...]:
    return tuple(RawAnswer(source="alpaca", kind=kind, payload=payload) for kind, payload in payloads)


def messages(ledger: Ledger) -> list[tuple[int, str, str]]:
    """(position, kind, payload) of every raw-log record."""
    return [
        (e.position, e.event.kind, e.event.payload)
        for e in ledger.events()
        if e.topic == "trueup:BrokerMessage.Received"
    ]


def matches(ledger: Ledger) -> list[object]:
    return [e for e in ledger.events() if e.topic == "trueup:BooksMatched.Recorded"]


# -- raw answers --------------------------------------------------------------------------------


def test_the_brokers_answers_are_stored_verbatim_before_what_is_concluded(ledger: Ledger) -> None:
    body = '[{"symbol":"AAPL","qty":"5","avg_entry_price":"10.0","current_price":"10.5"}]'
    raw = answers(("orders", "[]"), ("fills", "[]"), ("positions", body))
    result = ledger.reconcile(snapshot([pos("AAPL", 5, 10)], raw))
    assert result.position_syncs  # something was concluded (a repair)
    log = messages(ledger)
    kinds = [kind for _, kind, _ in log]
    assert kinds == ["answer:orders", "answer:fills", "answer:positions", "snapshot"]
    assert log[2][2] == body  # verbatim, not trueup's translation
    stored = msgspec.json.decode(log[3][2])
    assert "raw" not in stored or stored["raw"] == []  # the text is held once, by the answers
    answer_ids = {
        str(e.event.originator_id) for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received"
    }
    assert set(stored["raw_ids"]) <= answer_ids
    assert len(stored["raw_ids"]) == 3
    first_conclusion = min(e.position for e in ledger.events() if e.topic != "trueup:BrokerMessage.Received")
    assert max(p for p, _, _ in log) < first_conclusion


def test_an_unchanged_answer_is_stored_once(ledger: Ledger) -> None:
    raw = answers(("orders", "[]"), ("fills", "[]"), ("positions", "[]"))
    ledger.reconcile(snapshot([pos("AAPL", 5, 10)], raw))
    now[0] += 1
    ledger.reconcile(snapshot([pos("AAPL", 7, 10)], raw))  # another repair, same answer texts
    kinds = [kind for _, kind, _ in messages(ledger)]
    assert kinds.count("answer:orders") == 1
    assert kinds.count("snapshot") == 2


def test_an_untranslatable_answer_is_kept_and_reported_once(ledger: Ledger) -> None:
    broken = RawAnswer(
        source="alpaca", kind="positions", payload='[{"qty": true}]', error="bad qty at $[0].qty"
    )
    raw = (*answers(("orders", "[]"), ("fills", "[]")), broken)
    first = ledger.reconcile(snapshot(None, raw, {"positions": "alpaca positions untranslatable"}))
    invalid = [d for d in first.discrepancies if d.kind == "INVALID_REPORT"]
    assert len(invalid) == 1
    assert invalid[0].key == "answer:positions"
    log = messages(ledger)
    kept = [(p, payload) for p, kind, payload in log if kind == "answer:positions"]
    assert [payload for _, payload in kept] == ['[{"qty": true}]']
    ident = next(
        str(e.event.originator_id)
        for e in ledger.events()
        if getattr(e.event, "kind", "") == "answer:positions"
    )
    assert ident in invalid[0].detail
    # Still broken next cycle, with another text: the new text is kept, the alarm is not raised again.
    now[0] += 5
    other = msgspec.structs.replace(broken, payload='[{"qty": false}]')
    again = ledger.reconcile(
        snapshot(None, (*raw[:2], other), {"positions": "alpaca positions untranslatable"})
    )
    assert [d.kind for d in again.discrepancies] == []
    assert [payload for _, kind, payload in messages(ledger) if kind == "answer:positions"] == [
        '[{"qty": true}]',
        '[{"qty": false}]',
    ]
    # Translatable again: the INVALID_REPORT is resolved.
    now[0] += 5
    ledger.reconcile(snapshot([], answers(("orders", "[]"), ("fills", "[]"), ("positions", "[]"))))
    assert not [d for d in ledger.discrepancies(ACCOUNT) if d.kind == "INVALID_REPORT"]


def test_a_snapshot_that_stores_nothing_stores_no_answer(ledger: Ledger) -> None:
    raw = answers(("orders", "[]"), ("fills", "[]"), ("positions", "[]"))
    ledger.reconcile(snapshot([], raw))  # clean: a match record with its evidence
    count = sum(1 for _ in ledger.events())
    now[0] += 5
    assert ledger.reconcile(snapshot([], raw)).events == []
    assert sum(1 for _ in ledger.events()) == count  # a periodic run of unchanged books stays a read


# -- the trace of a clean reconcile ---------------------------------------------------------------


def test_a_clean_reconcile_leaves_a_trace_an_audit_can_read(ledger: Ledger) -> None:
    result = ledger.reconcile(snapshot([]))
    assert result.events == []
    assert result.matched is not None
    assert result.matched.account == ACCOUNT
    assert result.matched.as_of == at(99)
    recorded = matches(ledger)
    assert len(recorded) == 1
    evidence = next(e for e in ledger.events() if e.topic == "trueup:BrokerMessage.Received")
    assert recorded[0].event.evidence_id == evidence.event.originator_id  # the snapshot it matched
    audit = ledger.as_of(ledger.last_position())
    assert [(m["account"], m["as_of"]) for m in audit.matched] == [(ACCOUNT, at(99))]


def test_matched_books_are_recorded_at_a_change_and_then_once_per_interval(ledger: Ledger) -> None:
    ledger.reconcile(snapshot([]))
    for _ in range(10):  # 50 s of a 5 s period: no new record
        now[0] += 5
        assert ledger.reconcile(snapshot([])).matched is None
    now[0] += 300
    assert ledger.reconcile(snapshot([])).matched is not None  # the interval elapsed
    now[0] += 5
    assert ledger.reconcile(snapshot([pos("AAPL", 1, 10)])).position_syncs  # not clean: a repair
    now[0] += 5
    back = ledger.reconcile(snapshot([pos("AAPL", 1, 10)]))
    assert back.matched is not None  # matching again is a change: recorded at once
    assert len(matches(ledger)) == 3


def test_no_trace_while_a_part_is_unknown_or_a_discrepancy_is_open(ledger: Ledger) -> None:
    assert ledger.reconcile(snapshot(None)).matched is None  # positions unknown: STALE_DATA open
    now[0] += 5
    result = ledger.reconcile(snapshot([pos("AAPL", 1, 10)]), policy=PositionPolicy.ALERT)
    assert result.matched is None
    assert Decimal(0) == sum((p.qty for p in ledger.positions(ACCOUNT)), Decimal(0))
    now[0] += 5
    assert ledger.reconcile(snapshot([pos("AAPL", 1, 10)]), policy=PositionPolicy.ALERT).matched is None
    assert matches(ledger) == []


@pytest.mark.parametrize(("every", "recorded"), [(0, 4), (10, 2), (3600, 1)])
def test_the_match_interval_is_a_setting_of_the_ledger(every: float, recorded: int) -> None:
    now[0] = 100.0
    with Ledger.open(f"memory://{unique_cid('evi')}", clock=lambda: at(now[0]), match_every=every) as books:
        for _ in range(4):  # clean runs 5 s apart
            books.reconcile(snapshot([]))
            now[0] += 5
        assert len(matches(books)) == recorded


@pytest.mark.parametrize("every", [-1, -0.001, float("nan"), float("inf"), "300", True])
def test_a_match_interval_that_is_no_finite_gap_is_refused(every: object) -> None:
    with pytest.raises(ConfigError, match="match_every"):
        Ledger.open(f"memory://{unique_cid('evi')}", match_every=every)  # type: ignore[arg-type]
