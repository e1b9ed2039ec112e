"""The raw log: every broker payload as received, and the broker-id -> client-id links."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

VERBATIM = ""
"""`payload_encoding` of a payload stored as received."""
ESCAPED = "unicode-escape"
"""`payload_encoding` of a payload stored with Python's ``unicode_escape`` codec (ASCII; every
backslash and non-ASCII character escaped): decoding gives back the exact text, lone
surrogates included."""


def storable_payload(payload: str) -> tuple[str, str]:
    r"""`payload` in a form every store holds, and the encoding that gives it back exactly.

    Text that UTF-8 can encode is stored verbatim (NUL included: events are stored as
    bytes, escaped in their JSON). Text that it cannot (a lone UTF-16 surrogate, as a
    `\ud800` escape in a broker's JSON decodes to) is stored escaped (`ESCAPED`).
    """
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError:
        return payload.encode("unicode_escape").decode("ascii"), ESCAPED
    return payload, VERBATIM


def original_payload(stored: str, encoding: str) -> str:
    """The payload as received, from its stored form (`storable_payload`'s inverse)."""
    if encoding == VERBATIM:
        return stored
    if encoding == ESCAPED:
        return stored.encode("ascii").decode("unicode_escape")
    msg = f"unknown payload encoding {encoding!r}"
    raise ValueError(msg)


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
        """The payload in its stored form (`payload_encoding`); `original` gives it as received."""
        ts_received: datetime
        """When we received it."""
        payload_encoding: str = VERBATIM
        """How `payload` is stored: `VERBATIM`, or `ESCAPED` for text UTF-8 cannot encode."""

        @property
        def original(self) -> str:
            """The payload exactly as received."""
            return original_payload(self.payload, self.payload_encoding)

    def __init__(  # noqa: PLR0913, PLR0917 - the Received event's fields
        self,
        account: str,
        source: str,
        kind: str,
        payload: str,
        ts_received: datetime,
        payload_encoding: str = VERBATIM,
    ) -> None:
        """Initialise from the Received event; `payload` is the payload as received."""
        self.account = account
        self.source = source
        self.kind = kind
        self.payload = original_payload(payload, payload_encoding)
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


class BooksMatched(Aggregate):
    """A reconciliation found the books equal to the broker's snapshot: the audit's proof.

    One small record per change of the matched state, and at most one per
    `Reconciler.match_every` seconds while it holds (see docs/rules.md); its evidence
    (the snapshot and the broker's raw answers) is stored just before it.
    """

    TOPIC = "trueup:BooksMatched"

    class Event(Aggregate.Event):
        """Base of match events."""

        TOPIC = "trueup:BooksMatched.Event"

    class Recorded(Event, Aggregate.Created):
        """The books matched the broker."""

        TOPIC = "trueup:BooksMatched.Recorded"
        account: str
        as_of: datetime
        """When the broker's snapshot was taken."""
        evidence_id: UUID
        """The stored snapshot (raw log) the books were compared with."""
        orders: int
        """Orders the broker listed."""
        fills: int
        """Executions the broker listed."""
        positions: int
        """Positions the broker listed."""

    def __init__(  # noqa: PLR0913, PLR0917 - the fields of the Recorded event
        self, account: str, as_of: datetime, evidence_id: UUID, orders: int, fills: int, positions: int
    ) -> None:
        """Initialise from the Recorded event."""
        self.account = account
        self.as_of = as_of
        self.evidence_id = evidence_id
        self.orders = orders
        self.fills = fills
        self.positions = positions
