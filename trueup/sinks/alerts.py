"""Alerts to people through apprise URLs: one message per problem, with the fix.

What is alerted:

- a discrepancy of `min_severity` or above (LOST and DEAD_LETTER always): when it is
  raised, when it escalates (its severity goes up), when it is resolved, and when a
  resolved one reopens. Nothing else: a discrepancy seen again each cycle, updated in
  place or not, sends nothing (the stage is read from the discrepancy's state before
  and after each event, `trueup.sinks.events.lifecycle`);
- a gate change to BLOCKED, and back from BLOCKED to READY.

Each alert names the account, the order or symbol, what we expected, what the broker
said, and what resolves it. Alerts already sent are recorded in the store
(``trueup_alerts_sent``, keyed by consumer, discrepancy or gate event and stage), so a
restart that re-reads the last event does not send its alert twice (only a crash
between the send and that record can, once).

A new alert sink starts at the end of the log (`start="end"`): history is not replayed
to people. Needs the ``sinks`` extra (apprise).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec

from trueup.adapters.eventstore.store import Store
from trueup.domain.discrepancy import DiscrepancyKind, Severity
from trueup.domain.errors import ConfigError
from trueup.sinks.base import Sink, redacted
from trueup.sinks.events import DISCREPANCY, GATE_CHANGED, SEVERITY_RANK, SinkEvent

log = logging.getLogger(__name__)

ALERTS_TABLE = "trueup_alerts_sent"
ALWAYS = frozenset({DiscrepancyKind.LOST.value, DiscrepancyKind.DEAD_LETTER.value})
"""Kinds alerted whatever their severity."""
STAGES = frozenset({"raised", "escalated", "resolved", "reopened"})
"""Discrepancy lifecycle stages that reach people ("updated" never does)."""

_RESOLVE = "trueup resolve {id} --reason TEXT"
_RECONCILE = "trueup reconcile --broker BROKER --account {account}"
_POSITION_FIX = (
    "check the position at the broker; to take the broker's figure: "
    + _RECONCILE
    + " --policy repair; else fix the cause, then "
    + _RESOLVE
    + " (and trueup unlock {account} {symbol} --reason TEXT if it was locked)"
)
FIXES: dict[str, str] = {
    DiscrepancyKind.POSITION_MISMATCH.value: _POSITION_FIX,
    DiscrepancyKind.MISSING_LOCAL_POSITION.value: _POSITION_FIX,
    DiscrepancyKind.NAKED_POSITION.value: _POSITION_FIX,
    DiscrepancyKind.STALE_DATA.value: (
        "check the broker connection; it resolves on the next fresh snapshot: " + _RECONCILE
    ),
    DiscrepancyKind.LOST.value: (
        "look the order up at the broker by our client id; if it is gone: "
        "trueup abandon {account} {key} --reason TEXT; if the broker has it: "
        + _RECONCILE
        + ", then "
        + _RESOLVE
        + " and trueup unlock {account} {symbol} --reason TEXT"
    ),
    DiscrepancyKind.MISSING_AT_BROKER.value: (
        "look the order up at the broker; if it is gone: trueup abandon {account} {key} --reason TEXT; "
        "the next reconcile resolves this if it is listed again"
    ),
    DiscrepancyKind.ORPHAN_ORDER.value: (
        "cancel it at the broker or keep it, then "
        + _RESOLVE
        + "; if a strategy owns the symbol's manual orders: "
        "trueup claim {account} STRATEGY {symbol} --reason TEXT"
    ),
    DiscrepancyKind.OVERFILL.value: (
        "check the order's executions and quantity at the broker; have a wrong execution corrected there, "
        "then " + _RESOLVE
    ),
    DiscrepancyKind.QUANTITY_CHANGED.value: (
        "ask who changed the order at the broker; if the broker's quantity is wrong, modify or cancel it "
        "there; if it stands: trueup accept-quantity {account} {key} {broker_quantity} --reason TEXT"
    ),
    DiscrepancyKind.DEAD_LETTER.value: (
        "fix the sink's destination, re-send the event by hand if it matters, then " + _RESOLVE
    ),
}
"""What resolves each kind, with the `trueup` command (the default: check at the broker, then resolve)."""
DEFAULT_FIX = "check at the broker, then " + _RESOLVE
RUNBOOKS = "docs/runbooks.md"
"""Where alert links point unless `AlertsConfig.runbooks` says otherwise (anchors appended)."""


def runbook_link(base: str, kind: str) -> str:
    """The link to the runbook section of `kind` (docs/runbooks.md anchors are the lower-case kind)."""
    return f"{base}#{kind.lower()}"


def _fix(data: dict[str, Any]) -> str:
    """The fix for a discrepancy, its commands filled in with its id, account, key and symbol."""
    scope = data.get("scope") or ""
    symbol = scope.split(":", 1)[1] if ":" in scope else data["key"]
    template = FIXES.get(data["kind"], DEFAULT_FIX)
    broker_quantity = str(data.get("actual") or "").removeprefix("quantity ") or "QUANTITY"
    return template.format(
        id=data["id"],
        account=data["account"],
        key=data["key"],
        symbol=symbol,
        broker_quantity=broker_quantity,
    )


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the alert sink (``[sinks.alerts]`` in a daemon's config)."""

    urls: tuple[str, ...]
    """apprise URLs (slack://..., tgram://..., mailto://..., json://...); never logged."""
    min_severity: Severity = Severity.ERROR
    """Discrepancies below this are not alerted (LOST and DEAD_LETTER always are)."""
    gate: bool = True
    """Alert gate changes to BLOCKED and back."""
    consumer: str = "sink-alerts"
    max_attempts: int = 8
    """Failed sends of one alert before it is dead-lettered (apprise reports no reason)."""
    start: Literal["beginning", "end"] = "end"
    runbooks: str = RUNBOOKS
    """Base of the runbook links (a URL of docs/runbooks.md where the desk reads it)."""

    def __post_init__(self) -> None:
        """Refuse settings that cannot work."""
        if not self.urls:
            msg = "alert sink: no apprise URLs configured"
            raise ConfigError(msg)

    def __repr__(self) -> str:
        """Mask the URLs: they carry tokens."""
        return redacted(self, "urls")


class Alert(msgspec.Struct, frozen=True):
    """One message to people."""

    key: str
    """Dedupe key: one alert per key, ever."""
    title: str
    body: str
    level: Severity


class AlertSendError(RuntimeError):
    """apprise reported that no configured service took the alert."""


def alert_for(event: SinkEvent, config: AlertsConfig) -> Alert | None:
    """The alert `event` calls for, or None."""
    if event.kind == DISCREPANCY:
        return _discrepancy_alert(event, config)
    if event.kind == GATE_CHANGED and config.gate:
        return _gate_alert(event, config)
    return None


def _discrepancy_alert(event: SinkEvent, config: AlertsConfig) -> Alert | None:
    data = event.data
    stage = data["lifecycle"]
    if stage not in STAGES:
        return None
    severity = Severity(data["severity"])
    if data["kind"] not in ALWAYS and SEVERITY_RANK[severity] < SEVERITY_RANK[config.min_severity]:
        return None
    fix = _fix(data)
    headline = {
        "raised": f"{severity} {data['kind']} raised",
        "escalated": f"{data['kind']} escalated {data['severity_before']} -> {severity}",
        "resolved": f"{data['kind']} resolved",
        "reopened": f"{severity} {data['kind']} reopened",
    }[stage]
    lines = [
        f"Account: {data['account']}",
        f"Order or symbol: {data['key']}",
        f"We expected: {data['expected']}",
        f"The broker said: {data['actual']}",
        f"What happened: {data['detail']}",
    ]
    if stage == "resolved":
        lines.append(f"Resolution: {data['resolution']} (by {data['resolved_by']})")
    else:
        lines.append(f"To resolve: {fix}")
        lines.append(f"Runbook: {runbook_link(config.runbooks, data['kind'])}")
    lines.append(f"Discrepancy: {data['id']} (log position {event.position})")
    return Alert(
        key=f"discrepancy|{data['id']}|{stage}|{severity}|{event.id if stage == 'reopened' else ''}",
        title=f"[trueup] {data['account']} {data['key']}: {headline}",
        body="\n".join(lines),
        level=Severity.INFO if stage == "resolved" else severity,
    )


def _gate_alert(event: SinkEvent, config: AlertsConfig) -> Alert | None:
    data = event.data
    state, before = data["state"], data["state_before"]
    reasons = "; ".join(data["reasons"]) or "none given"
    if state == "BLOCKED" and before != "BLOCKED":
        title = f"[trueup] {data['account']}: gate BLOCKED, new orders refused"
        fix = (
            "resolve what the reasons name (trueup discrepancies --account "
            f"{data['account']}: CRITICAL ones, stale broker data; see {config.runbooks}), then "
            f"trueup reconcile --broker BROKER --account {data['account']}; an operator may open it "
            f"by hand: trueup override {data['account']} --reason TEXT"
        )
        level = Severity.CRITICAL
    elif state == "READY" and before == "BLOCKED":
        title = f"[trueup] {data['account']}: gate READY again, new orders allowed"
        fix = "nothing to do" + (" (opened by an operator's override)" if data["override"] else "")
        level = Severity.INFO
    else:
        return None
    body = "\n".join(
        [
            f"Account: {data['account']}",
            f"Gate: {before} -> {state} (by {data['by']})",
            f"Reasons: {reasons}",
            f"To resolve: {fix}",
            f"Log position: {event.position}",
        ]
    )
    return Alert(key=f"gate|{event.id}", title=title, body=body, level=level)


class AlertSink(Sink):
    """Sends alerts through apprise, once per alert key."""

    name = "sink-alerts"

    def __init__(self, config: AlertsConfig, store: Store) -> None:
        """Send to `config.urls`; remember sent alerts in `store`."""
        try:
            import apprise  # noqa: PLC0415 - optional extra
        except ImportError as e:
            msg = "the alert sink needs its extra: pip install 'trueup[sinks]'"
            raise ConfigError(msg) from e
        self.config = config
        self.name = config.consumer
        self.store = store
        self.sent = 0
        self._apprise: Any = apprise.Apprise()
        for index, url in enumerate(config.urls):
            if not self._apprise.add(url):
                scheme = url.split(":", 1)[0]
                msg = f"alert sink: apprise does not accept URL #{index + 1} (scheme {scheme!r})"
                raise ConfigError(msg)
        self._levels = {
            Severity.INFO: apprise.NotifyType.SUCCESS,
            Severity.WARNING: apprise.NotifyType.WARNING,
            Severity.ERROR: apprise.NotifyType.FAILURE,
            Severity.CRITICAL: apprise.NotifyType.FAILURE,
        }
        self._table = store.table(ALERTS_TABLE)
        with store.transaction() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} "
                "(consumer TEXT NOT NULL, alert_key TEXT NOT NULL, PRIMARY KEY (consumer, alert_key))"
            )

    def wants(self, event: SinkEvent) -> bool:
        """Discrepancies and gate changes."""
        return event.kind in {DISCREPANCY, GATE_CHANGED}

    def deliver(self, event: SinkEvent) -> None:
        """Send the alert `event` calls for, unless it was sent already."""
        alert = alert_for(event, self.config)
        if alert is None or self._was_sent(alert.key):
            return
        level = self._levels[alert.level]
        if not self._apprise.notify(body=alert.body, title=alert.title, notify_type=level):
            msg = f"no alert service took {alert.title!r}"
            raise AlertSendError(msg)
        self.sent += 1
        with self.store.transaction() as cursor:
            cursor.execute(
                self.store.sql(
                    f"INSERT INTO {self._table} (consumer, alert_key) VALUES (?, ?) "  # noqa: S608
                    "ON CONFLICT DO NOTHING"
                ),
                (self.name, alert.key),
            )

    def _was_sent(self, key: str) -> bool:
        with self.store.reading() as cursor:
            cursor.execute(
                self.store.sql(f"SELECT 1 FROM {self._table} WHERE consumer = ? AND alert_key = ?"),  # noqa: S608
                (self.name, key),
            )
            return bool(cursor.fetchall())
