"""MsgspecMapper: every event class round-trips exactly, through the mapper and through SQLite."""

from __future__ import annotations

import enum
import os
import sqlite3
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from trueup.adapters.eventstore.codec import MsgspecMapper, register_msgspec_mapper

# Re-importing this module (e.g. under another name) must not trip the redefinition check.
os.environ.setdefault("EVENTSOURCING_DISABLE_REDEFINITION_CHECK", "y")

NOW = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)
THIRD = Decimal(9020) / Decimal(3)  # Decimal('3006.666666666666666666666667')


class Tag(enum.StrEnum):
    VIP = "vip"
    MARGIN = "margin"
    FROZEN = "frozen"


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class Leg(msgspec.Struct, frozen=True):
    symbol: str
    side: Side
    qty: Decimal
    limit: Decimal | None = None


class Fill(msgspec.Struct, frozen=True):
    exec_id: str
    qty: Decimal
    price: Decimal
    at: datetime
    venue: str | None
    legs: tuple[Leg, ...]


class Opaque:
    """A type msgspec cannot decode."""


class Account(Aggregate):
    TOPIC = "codec-test:Account"

    class Event(Aggregate.Event):
        TOPIC = "codec-test:Account.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "codec-test:Account.Opened"
        name: str
        owner_id: UUID
        opened_at: datetime
        tags: frozenset[Tag]
        limits: dict[str, Decimal]
        note: str | None
        active: bool
        max_orders: int

    class Credited(Event):
        TOPIC = "codec-test:Account.Credited"
        amount: Decimal
        reference: str | None
        balances: dict[str, Decimal]

        def apply(self, aggregate: Account) -> None:
            aggregate.balance += self.amount

    class Tagged(Event):
        TOPIC = "codec-test:Account.Tagged"
        tags: frozenset[Tag]
        primary: Tag | None

    class Renamed(Event):
        """Version 2 added `reason`."""

        TOPIC = "codec-test:Account.Renamed"
        class_version = 2
        name: str
        reason: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason"] = "unknown (v1)"

        def apply(self, aggregate: Account) -> None:
            aggregate.name = self.name

    def __init__(
        self,
        *,
        name: str,
        owner_id: UUID,
        opened_at: datetime,
        tags: frozenset[Tag],
        limits: dict[str, Decimal],
        note: str | None,
        active: bool,
        max_orders: int,
    ) -> None:
        # Snapshot-friendly state (gotcha 10): only what the default JSON transcoder restores.
        self.name = name
        self.owner_id = owner_id
        self.opened_at = opened_at
        self.balance = Decimal(0)
        self.note = note
        self.max_orders = max_orders
        del tags, limits, active

    @classmethod
    def open(cls, name: str) -> Account:
        return cls._create(
            cls.Opened,
            name=name,
            owner_id=uuid4(),
            opened_at=NOW,
            tags=frozenset({Tag.VIP, Tag.MARGIN, Tag.FROZEN}),
            limits={"daily": THIRD, "single": Decimal("1E+3")},
            note=None,
            active=True,
            max_orders=7,
        )


class Basket(Aggregate):
    TOPIC = "codec-test:Basket"

    class Event(Aggregate.Event):
        TOPIC = "codec-test:Basket.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "codec-test:Basket.Created"
        symbol: str
        legs: list[Leg]
        window: tuple[datetime, datetime]

    class Filled(Event):
        TOPIC = "codec-test:Basket.Filled"
        fill: Fill
        bounds: tuple[Decimal, ...]
        order_ids: tuple[UUID, ...]
        side: Side | None

        def apply(self, aggregate: Basket) -> None:
            aggregate.fills.append(self.fill)

    class Cleared(Event):
        TOPIC = "codec-test:Basket.Cleared"
        reason: str = "manual"

    def __init__(self, *, symbol: str, legs: list[Leg], window: tuple[datetime, datetime]) -> None:
        self.symbol = symbol
        self.legs = legs
        self.window = window
        self.fills: list[Fill] = []


class Broken(Aggregate):
    TOPIC = "codec-test:Broken"

    class Event(Aggregate.Event):
        TOPIC = "codec-test:Broken.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "codec-test:Broken.Created"

    class Poked(Event):
        TOPIC = "codec-test:Broken.Poked"
        thing: Opaque


def make_account() -> Account:
    account = Account.open("alice")
    account.trigger_event(
        Account.Credited, amount=THIRD, reference="wire-1", balances={"USD": THIRD, "EUR": Decimal("-0.00")}
    )
    account.trigger_event(Account.Credited, amount=Decimal("0.1"), reference=None, balances={})
    account.trigger_event(Account.Tagged, tags=frozenset({Tag.FROZEN, Tag.VIP}), primary=Tag.VIP)
    account.trigger_event(Account.Tagged, tags=frozenset(), primary=None)
    account.trigger_event(Account.Renamed, name="alice b", reason="marriage")
    return account


def make_basket() -> Basket:
    legs = [Leg("AAPL", Side.BUY, Decimal(10)), Leg("MSFT", Side.SELL, Decimal("2.50"), THIRD)]
    basket = Basket._create(Basket.Created, symbol="PAIR", legs=legs, window=(NOW, NOW + timedelta(hours=1)))
    fill = Fill("x.01", Decimal("1.000"), THIRD, NOW, None, tuple(legs))
    basket.trigger_event(
        Basket.Filled, fill=fill, bounds=(Decimal("0.5"), THIRD), order_ids=(uuid4(), uuid4()), side=Side.SELL
    )
    basket.trigger_event(Basket.Filled, fill=fill, bounds=(), order_ids=(), side=None)
    basket.trigger_event(Basket.Cleared, reason="eod")
    return basket


def all_events() -> list[DomainEventProtocol[UUID]]:
    return [*make_account().collect_events(), *make_basket().collect_events()]


def assert_identical(got: object, want: object, path: str = "") -> None:
    """Equal value AND equal type, all the way down (Decimal('1.0') is not Decimal('1.00'))."""
    assert type(got) is type(want), f"{path}: {type(got)!r} is not {type(want)!r}"
    if isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple))
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_identical(g, w, f"{path}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict)
        assert got.keys() == want.keys(), path
        for key, w in want.items():
            assert_identical(got[key], w, f"{path}[{key!r}]")
    elif isinstance(want, frozenset | set):
        assert isinstance(got, frozenset | set)
        assert got == want, path
        assert {type(x) for x in got} == {type(x) for x in want}, path
    elif isinstance(want, msgspec.Struct):
        for name in want.__struct_fields__:
            assert_identical(getattr(got, name), getattr(want, name), f"{path}.{name}")
    elif isinstance(want, Decimal):
        assert str(got) == str(want), path
    elif isinstance(want, datetime):
        assert isinstance(got, datetime)
        assert got == want, path
        assert got.tzinfo is not None, path
        assert got.utcoffset() == want.utcoffset() == timedelta(0), path
    else:
        assert got == want, path


def test_the_sample_covers_every_event_class() -> None:
    classes: set[type[object]] = {type(e) for e in all_events()}
    assert classes == {
        Account.Opened,
        Account.Credited,
        Account.Tagged,
        Account.Renamed,
        Basket.Created,
        Basket.Filled,
        Basket.Cleared,
    }


@pytest.mark.parametrize(
    "event", all_events(), ids=lambda e: f"{type(e).__qualname__}-v{e.originator_version}"
)
def test_every_event_round_trips_with_identical_fields_and_types(event: DomainEventProtocol[UUID]) -> None:
    mapper: MsgspecMapper[UUID] = MsgspecMapper()
    stored = mapper.to_stored_event(event)
    assert stored.topic.startswith("codec-test:")
    assert stored.originator_id == event.originator_id
    assert stored.originator_version == event.originator_version
    decoded = mapper.to_domain_event(stored)
    assert type(decoded) is type(event)
    assert decoded == event
    assert vars(decoded).keys() == vars(event).keys()
    for name, want in vars(event).items():
        assert_identical(vars(decoded)[name], want, name)


def test_exact_decimal_and_utc_timestamps() -> None:
    mapper: MsgspecMapper[UUID] = MsgspecMapper()
    opened, credited = make_account().collect_events()[:2]
    stored = mapper.to_stored_event(credited)
    assert b'"3006.666666666666666666666667"' in stored.state  # a string, never a float
    decoded = mapper.to_domain_event(stored)
    assert decoded.amount == Decimal("3006.666666666666666666666667")  # type: ignore[attr-defined]
    assert decoded.timestamp.tzinfo is not None  # type: ignore[attr-defined]
    assert decoded.timestamp.utcoffset() == timedelta(0)  # type: ignore[attr-defined]
    assert decoded.timestamp == credited.timestamp  # type: ignore[attr-defined]
    created = mapper.to_domain_event(mapper.to_stored_event(opened))
    assert created.originator_topic == "codec-test:Account"  # type: ignore[attr-defined]
    assert created.opened_at == NOW  # type: ignore[attr-defined]


def test_encoding_is_deterministic_sets_sorted_and_header_not_in_state() -> None:
    mapper: MsgspecMapper[UUID] = MsgspecMapper()
    opened = make_account().collect_events()[0]
    state = msgspec.json.decode(mapper.to_stored_event(opened).state)
    assert state["tags"] == ["frozen", "margin", "vip"]
    assert state["owner_id"] == str(opened.owner_id)  # type: ignore[attr-defined]
    assert "originator_id" not in state
    assert "originator_version" not in state
    assert "class_version" not in state  # only added for class_version > 1
    assert mapper.to_stored_event(opened).state == mapper.to_stored_event(opened).state


def test_class_version_2_upcasts_an_old_v1_payload() -> None:
    mapper: MsgspecMapper[UUID] = MsgspecMapper()
    originator_id = uuid4()
    v1 = StoredEvent(
        originator_id=originator_id,
        originator_version=5,
        topic=get_topic(Account.Renamed),
        state=b'{"timestamp":"2024-03-01T14:30:15.123456Z","name":"bob"}',
    )
    event = mapper.to_domain_event(v1)
    assert type(event) is Account.Renamed
    assert vars(event) == {
        "timestamp": NOW,
        "name": "bob",
        "reason": "unknown (v1)",
        "originator_id": originator_id,
        "originator_version": 5,
    }
    # The current version is written with its class_version and read back without upcasting.
    renamed = make_account().collect_events()[-1]
    stored = mapper.to_stored_event(renamed)
    assert msgspec.json.decode(stored.state)["class_version"] == 2
    assert mapper.to_domain_event(stored) == renamed


def test_missing_defaulted_field_takes_the_event_class_default() -> None:
    mapper: MsgspecMapper[UUID] = MsgspecMapper()
    stored = StoredEvent(
        uuid4(), 4, get_topic(Basket.Cleared), b'{"timestamp":"2024-03-01T14:30:15.123456Z"}'
    )
    assert mapper.to_domain_event(stored).reason == "manual"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "state",
    [
        b'{"timestamp":"2024-03-01T14:30:15Z","amount":',  # truncated
        b'{"timestamp":"2024-03-01T14:30:15Z","amount":"lots","reference":null,"balances":{}}',
        b'{"timestamp":"2024-03-01T14:30:15Z","amount":"1","reference":null,"balances":[]}',  # wrong shape
        b'{"timestamp":"2024-03-01T14:30:15Z","reference":null,"balances":{}}',  # missing field
        b'{"timestamp":"yesterday","amount":"1","reference":null,"balances":{}}',
        b"\x00\x01garbage",
    ],
)
def test_corrupted_payload_raises_mapper_deserialisation_error(state: bytes) -> None:
    originator_id = uuid4()
    stored = StoredEvent(originator_id, 9, get_topic(Account.Credited), state)
    with pytest.raises(MapperDeserialisationError) as info:
        MsgspecMapper[UUID]().to_domain_event(stored)
    message = str(info.value)
    assert "codec-test:Account.Credited" in message
    assert str(originator_id) in message
    assert "originator_version 9" in message


def test_an_undecodable_event_class_fails_on_save_not_on_replay() -> None:
    broken = Broken._create(Broken.Created)
    broken.trigger_event(Broken.Poked, thing=Opaque())
    with pytest.raises(TypeError, match="Opaque"):
        MsgspecMapper[UUID]().to_stored_event(broken.collect_events()[-1])


@settings(max_examples=300, deadline=None)
@given(
    amount=st.decimals(allow_nan=False, allow_infinity=False),
    other=st.decimals(allow_nan=False),
    text=st.text(),
    reference=st.none() | st.text(),
)
def test_property_decimals_and_strings_round_trip(
    amount: Decimal, other: Decimal, text: str, reference: str | None
) -> None:
    event = Account.Credited(  # type: ignore[call-arg]
        originator_id=uuid4(),
        originator_version=2,
        timestamp=NOW,
        amount=amount,
        reference=reference,
        balances={text: other, "": amount},
    )
    mapper: MsgspecMapper[UUID] = MsgspecMapper()
    decoded = mapper.to_domain_event(mapper.to_stored_event(event))
    for name, want in vars(event).items():
        assert_identical(vars(decoded)[name], want, name)


class CodecApp(Application[UUID]):
    is_snapshotting_enabled = True

    def construct_mapper(self) -> Mapper[UUID]:
        return MsgspecMapper()


def aggregate_state(aggregate: Aggregate) -> dict[str, Any]:
    return dict(vars(aggregate))


def test_application_over_sqlite_saves_reopens_and_gets_equal_aggregates(tmp_path: Any) -> None:
    db = str(tmp_path / "codec.db")
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db}
    account, basket = make_account(), make_basket()
    with CodecApp(env=env) as app:
        assert isinstance(app.mapper, MsgspecMapper)
        saved = [recording.domain_event for recording in app.save(account, basket)]
        app.take_snapshot(account.id)  # snapshots go through the JSON transcoder
    with CodecApp(env=env) as app:
        assert app.snapshots is not None
        (snapshot_event,) = app.snapshots.get(account.id)
        assert snapshot_event.originator_version == account.version
        got_account: Account = app.repository.get(account.id)
        got_basket: Basket = app.repository.get(basket.id)
        for name, want in aggregate_state(account).items():
            assert_identical(vars(got_account)[name], want, name)
        for name, want in aggregate_state(basket).items():
            assert_identical(vars(got_basket)[name], want, name)
        assert got_basket.fills[0].price == THIRD
        # Replaying the whole log decodes every stored event back to its class.
        notifications = app.recorder.select_notifications(start=None, limit=100)
        assert len(notifications) == len(saved) == 10
        assert [app.mapper.to_domain_event(n) for n in notifications] == saved
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(
            "SELECT state FROM stored_events WHERE topic = ?", ("codec-test:Account.Credited",)
        ).fetchone()
        assert b'"3006.666666666666666666666667"' in state
        (snapshot,) = conn.execute("SELECT state FROM stored_snapshots").fetchone()
        assert b'"_type_":"decimal_str"' in snapshot  # the library's JSON, not msgspec


def test_register_msgspec_mapper_sets_mapper_topic_and_honours_the_compressor(tmp_path: Any) -> None:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp_path / "registered.db"),
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
    }
    register_msgspec_mapper(env)
    assert env["MAPPER_TOPIC"] == "trueup.adapters.eventstore.codec:MsgspecMapper"
    basket = make_basket()
    with Application[UUID](env=env) as app:
        assert isinstance(app.mapper, MsgspecMapper)
        app.save(basket)
        (first,) = app.recorder.select_notifications(start=None, limit=1)
        assert msgspec.json.decode(zlib.decompress(first.state))["symbol"] == "PAIR"
    with Application[UUID](env=env) as app:
        got: Basket = app.repository.get(basket.id)
        for name, want in aggregate_state(basket).items():
            assert_identical(vars(got)[name], want, name)
