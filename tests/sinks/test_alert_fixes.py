"""Each alert names the `trueup` command that resolves it and links the kind's runbook section."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, D, order_report
from tests.sinks.conftest import Receiver
from trueup import Ledger
from trueup.domain.discrepancy import DiscrepancyKind
from trueup.sinks.alerts import AlertsConfig, alert_for
from trueup.sinks.events import DISCREPANCY, GATE_CHANGED, SinkEvent

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
ANCHORS = set(re.findall(r'<a id="([a-z_]+)"></a>', RUNBOOKS.read_text()))
CONFIG = AlertsConfig(urls=("json://127.0.0.1:1/alerts",), runbooks="https://desk.example/trueup/runbooks")
ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def raised(kind: DiscrepancyKind) -> SinkEvent:
    return SinkEvent(
        id=f"{ID}/1",
        kind=DISCREPANCY,
        account=ACCOUNT,
        position=7,
        topic="trueup:Discrepancy.Raised",
        timestamp=datetime(2026, 1, 2, tzinfo=UTC),
        data={
            "id": ID,
            "lifecycle": "raised",
            "kind": kind.value,
            "severity": "CRITICAL",
            "severity_before": None,
            "account": ACCOUNT,
            "key": "C1",
            "expected": "quantity 10",
            "actual": "quantity 6",
            "detail": "what happened",
            "scope": "*:AAPL",
            "resolution": None,
            "resolved_by": None,
        },
    )


@pytest.mark.parametrize("kind", list(DiscrepancyKind), ids=str)
def test_every_kind_links_its_runbook_section_and_names_a_trueup_command(kind: DiscrepancyKind) -> None:
    alert = alert_for(raised(kind), CONFIG)
    assert alert is not None
    lines = dict(line.split(": ", 1) for line in alert.body.splitlines())
    assert kind.value.lower() in ANCHORS  # the section exists
    assert lines["Runbook"] == f"https://desk.example/trueup/runbooks#{kind.value.lower()}"
    fix = lines["To resolve"]
    assert "trueup " in fix
    assert "ledger." not in fix  # no library calls for a person at 3 a.m.
    assert "{" not in fix  # every placeholder filled


def test_the_commands_are_filled_in_with_the_discrepancy() -> None:
    lost = dict(
        line.split(": ", 1) for line in alert_for(raised(DiscrepancyKind.LOST), CONFIG).body.splitlines()
    )  # type: ignore[union-attr]
    assert f"trueup abandon {ACCOUNT} C1 --reason TEXT" in lost["To resolve"]
    assert f"trueup unlock {ACCOUNT} AAPL --reason TEXT" in lost["To resolve"]
    assert f"trueup resolve {ID} --reason TEXT" in lost["To resolve"]
    changed = alert_for(raised(DiscrepancyKind.QUANTITY_CHANGED), CONFIG)
    assert changed is not None
    assert f"trueup accept-quantity {ACCOUNT} C1 6 --reason TEXT" in changed.body


def test_a_gate_alert_names_the_override_command() -> None:
    event = SinkEvent(
        id=f"{ID}/2",
        kind=GATE_CHANGED,
        account=ACCOUNT,
        position=8,
        topic="trueup:Gate.Changed",
        timestamp=datetime(2026, 1, 2, tzinfo=UTC),
        data={
            "account": ACCOUNT,
            "state": "BLOCKED",
            "state_before": "READY",
            "reasons": ["x"],
            "by": "r",
            "override": False,
        },
    )
    alert = alert_for(event, CONFIG)
    assert alert is not None
    assert f"trueup override {ACCOUNT} --reason TEXT" in alert.body
    assert "ledger." not in alert.body


def test_a_quantity_changed_alert_reaches_people_with_the_fix(ledger: Ledger, receiver: Receiver) -> None:
    from tests.sinks.test_webhook_alerts import alerts

    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.ingest(order_report("ACCEPTED", qty=6, ts=2))
    alerts(ledger, receiver, gate=False).run_once()
    [message] = [r.json() for r in receiver.requests if "QUANTITY_CHANGED" in r.json()["title"]]
    assert f"trueup accept-quantity {ACCOUNT} C1 6 --reason TEXT" in message["message"]
    assert "Runbook: docs/runbooks.md#quantity_changed" in message["message"]
