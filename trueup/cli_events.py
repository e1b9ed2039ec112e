"""`trueup events`: which events a reader asked for, and one line per event naming its subject.

Every event belongs to an aggregate: an order, a position, a discrepancy, a gate, an
operator log or a raw broker message. The line names it the way an operator does (the
account and the client order id, the symbol, the discrepancy's kind and subject), looked
up once from the read models, so ``--account`` and ``--order`` filter on the same names.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from trueup.cli_support import plain
from trueup.domain.audit import OperatorLog, operator_log_id
from trueup.domain.gate import gate_id
from trueup.ledger import Ledger, LoggedEvent

_HIDDEN = frozenset(
    {"originator_id", "originator_version", "originator_topic", "timestamp", "payload", "raw", "state"}
)


@dataclass
class EventFilter:
    """The events a reader wants, and the subject of each."""

    ledger: Ledger
    account: str | None = None
    order: str | None = None
    topic: str | None = None
    until: int | datetime | None = None
    names: dict[UUID, tuple[str, str]] = field(default_factory=dict)
    """Aggregate id -> (account, subject) from the read models."""

    def __post_init__(self) -> None:
        """Name every order, position and discrepancy once."""
        projector = self.ledger.projector
        projector.catch_up()
        for statement, label in (
            ("SELECT order_id AS id, account, client_order_id AS subject FROM {trueup_orders}", "order"),
            ("SELECT position_id AS id, account, symbol AS subject FROM {trueup_positions}", "position"),
            ("SELECT id, account, kind || ' ' || subject AS subject FROM {trueup_discrepancies}", ""),
        ):
            for row in projector.rows(statement):
                try:
                    ident = UUID(str(row["id"]))
                except ValueError:
                    continue
                subject = f"{label} {row['subject']}" if label else str(row["subject"])
                self.names[ident] = (str(row["account"]), subject)
        for account in self.ledger.accounts():
            self.names[gate_id(account)] = (account, "gate")
            self.names[operator_log_id(account)] = (account, "operator")

    def subject(self, logged: LoggedEvent) -> tuple[str, str]:
        """(account, what the event is about) for one event."""
        event = logged.event
        if isinstance(event, OperatorLog.Acted):
            return event.account, event.subject  # what the operator acted on
        known = self.names.get(event.originator_id)
        if known is not None:
            return known
        account = str(getattr(event, "account", "") or "")
        for attribute, label in (("client_order_id", "order"), ("symbol", "symbol"), ("key", "")):
            value = getattr(event, attribute, None)
            if value:
                return account, f"{label} {value}".strip()
        return account, ""

    def wants(self, logged: LoggedEvent) -> bool:
        """Whether the event passes --account, --order and --topic."""
        if self.topic and self.topic.lower() not in logged.topic.lower():
            return False
        if self.account is None and self.order is None:
            return True
        account, subject = self.subject(logged)
        if self.account is not None and account != self.account:
            return False
        return self.order is None or subject == f"order {self.order}" or _names_order(logged, self.order)

    def past(self, logged: LoggedEvent) -> bool:
        """Whether the event is after --until."""
        if self.until is None:
            return False
        if isinstance(self.until, int):
            return logged.position > self.until
        return logged.timestamp > self.until


def _names_order(logged: LoggedEvent, client_order_id: str) -> bool:
    # Discrepancies about an order, and operator commands on it, name it as their subject.
    event = logged.event
    return client_order_id in {getattr(event, "key", None), getattr(event, "subject", None)}


def print_event(logged: LoggedEvent, subject: tuple[str, str], *, as_json: bool) -> None:
    """One line: position, time, topic, account, subject, then the event's fields in plain words."""
    account, about = subject
    if as_json:
        record: dict[str, Any] = {
            "position": logged.position,
            "topic": logged.topic,
            "id": str(logged.event.originator_id),
            "account": account,
            "subject": about,
        }
        for key, value in msgspec.to_builtins(vars(logged.event)).items():
            if key in {"originator_id", "originator_version"}:
                continue
            # An event field named like a line's own key (a discrepancy's problem `topic`)
            # keeps its value under event_<name>; the line's keys mean the same for all.
            record[f"event_{key}" if key in record and record[key] != value else key] = value
        sys.stdout.write(json.dumps(record, default=str) + "\n")
    else:
        fields = {k: v for k, v in vars(logged.event).items() if k not in _HIDDEN}
        topic = logged.topic.removeprefix("trueup:")
        summary = "; ".join(f"{k} {plain(v)}" for k, v in fields.items() if plain(v) != "")
        when = logged.timestamp.strftime("%H:%M:%S")
        named = f"{account} {about}".strip()
        sys.stdout.write(f"{logged.position:>7} {when} {topic:<26} {named}: {summary}\n")
    sys.stdout.flush()
