"""The raw log: every broker payload as received, and the broker-id -> client-id links."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate


class BrokerMessage(Aggregate):
    """One payload as it arrived from a broker (or a report handed to `Ledger.ingest`).

    Stored before the events it causes, in the same transaction, so the log always
    shows the evidence first. A payload that fails translation is stored all the same.
    """

    TOPIC = "trueup:BrokerMessage"

    class Event(Aggregate.Event):
        """Base of raw-log events."""

        TOPIC = "trueup:BrokerMessage.Event"

    class Received(Event, Aggregate.Created):
        """A payload arrived."""

        TOPIC = "trueup:BrokerMessage.Received"
        account: str
        """Account the payload concerns, or "" when it could not be told."""
        source: str
        """Who sent it: an adapter name ("alpaca", "ib", ...), "report" or "snapshot"."""
        kind: str
        """What it is: "order", "fill", "position", "snapshot", or the adapter's channel."""
        payload: str
        """The payload, verbatim (JSON text for reports)."""
        ts_received: datetime
        """When we received it."""

    def __init__(self, account: str, source: str, kind: str, payload: str, ts_received: datetime) -> None:
        """Initialise from the Received event."""
        self.account = account
        self.source = source
        self.kind = kind
        self.payload = payload
        self.ts_received = ts_received


class BrokerOrderLink(Aggregate):
    """Maps a broker order id (IB permId, Alpaca id, Kite order_id) to our client order id.

    Executions often carry only the broker's id (Kite trades have no tag); the link
    lets them reach the right order. One client id may own several broker ids
    (Alpaca replace chains, Kite autoslice children).
    """

    TOPIC = "trueup:BrokerOrderLink"

    class Event(Aggregate.Event):
        """Base of link events."""

        TOPIC = "trueup:BrokerOrderLink.Event"

    class Linked(Event, Aggregate.Created):
        """The broker order id was first seen for this client order id."""

        TOPIC = "trueup:BrokerOrderLink.Linked"
        account: str
        broker_order_id: str
        client_order_id: str

    class Relinked(Event):
        """The broker order id, first seen untagged (an orphan), turned out to be our order's."""

        TOPIC = "trueup:BrokerOrderLink.Relinked"
        client_order_id: str

        def apply(self, aggregate: BrokerOrderLink) -> None:
            """Point the broker id at our order."""
            aggregate.client_order_id = self.client_order_id

    def __init__(self, account: str, broker_order_id: str, client_order_id: str) -> None:
        """Initialise from the Linked event."""
        self.account = account
        self.broker_order_id = broker_order_id
        self.client_order_id = client_order_id
