"""The operator's hand in the books: every command an operator ran, who ran it and why.

One `OperatorLog` per account holds an `Acted` event per operator command (resolve,
abandon, unlock, claim, override), stored in the same transaction as the change the
command made, so the log shows the change and the person and reason behind it together.
`Acted.discrepancies` names the discrepancies the command settled: their history is
their own events plus every `Acted` that names them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from trueup.domain.ids import NAMESPACE

MANAGE_RECONCILIATION = "manage_reconciliation"
"""The permission every operator command needs (granted per operator in the config)."""


class OperatorCommand(StrEnum):
    """What an operator did."""

    RESOLVE = "resolve"
    """Marked a discrepancy resolved."""
    ABANDON = "abandon"
    """Closed an order known to be gone at the broker."""
    UNLOCK = "unlock"
    """Lifted a symbol lock."""
    CLAIM = "claim"
    """Gave a symbol to a strategy (orphan orders in it quarantine only that strategy)."""
    OVERRIDE = "override"
    """Opened the account's gate by hand."""
    ACCEPT_QUANTITY = "accept-quantity"
    """Took a quantity the broker reports for an order that nobody asked it to amend to."""


def operator_log_id(account: str) -> UUID:
    """Id of the operator log of `account`."""
    return uuid5(NAMESPACE, f"operator-log|{account}")


class OperatorLog(Aggregate):
    """The operator commands run on one account, in order."""

    TOPIC = "trueup:OperatorLog"

    class Event(Aggregate.Event):
        """Base of operator-log events."""

        TOPIC = "trueup:OperatorLog.Event"

    class Opened(Event, Aggregate.Created):
        """The account's first operator command."""

        TOPIC = "trueup:OperatorLog.Opened"
        account: str

    class Acted(Event):
        """An operator ran a command; stored with the change it made."""

        TOPIC = "trueup:OperatorLog.Acted"
        account: str
        command: str
        operator: str
        reason: str
        subject: str
        """What it acted on: a client order id, a symbol, a discrepancy id, or the account."""
        discrepancies: tuple[UUID, ...]
        """The discrepancies it settled (their history shows this event)."""
        ts: datetime

    def __init__(self, *, account: str) -> None:
        """Initialise empty."""
        self.account = account

    @classmethod
    def open(cls, account: str) -> OperatorLog:
        """Create the operator log of `account`."""
        return cls._create(cls.Opened, id=operator_log_id(account), account=account)

    def acted(  # noqa: PLR0913 - the record of one command
        self,
        command: OperatorCommand,
        *,
        operator: str,
        reason: str,
        subject: str,
        discrepancies: tuple[UUID, ...],
        ts: datetime,
    ) -> None:
        """Record one command (who, why, on what)."""
        self.trigger_event(
            self.Acted,
            account=self.account,
            command=command.value,
            operator=operator,
            reason=reason,
            subject=subject,
            discrepancies=discrepancies,
            ts=ts,
        )
