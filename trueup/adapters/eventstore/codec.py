"""A msgspec Mapper for eventsourcing 9.5, which ships only a JSON transcoder.

Events are encoded as msgspec JSON: Decimals as strings (exact), datetimes as RFC 3339
with offset, UUIDs canonical, enums by value, sets sorted. They are decoded with a typed
decoder built once per event class from its annotations, so Decimals, datetimes, UUIDs,
enums, tuples and nested Structs come back typed without registered transcodings.

Plug it in with either::

    class LedgerApp(Application[UUID]):
        def construct_mapper(self) -> Mapper[UUID]:
            return MsgspecMapper()

or ``register_msgspec_mapper(env)`` before constructing the application (the factory
then passes its transcoder, cipher and compressor, which this mapper honours).

Snapshots hold ``vars(aggregate)`` under an untyped ``state: dict[str, Any]``, which a
typed decoder cannot restore, so they go through the base Mapper's JSON transcoder.
Types referenced by event annotations must resolve from the event module's globals.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any, ClassVar

import msgspec
from eventsourcing.domain import CanSnapshotAggregate, DomainEventProtocol, TAggregateID
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import get_topic, resolve_topic

if typing.TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ["MsgspecMapper", "register_msgspec_mapper"]

# "deterministic" sorts sets and frozensets, so equal events always encode to equal bytes;
# Decimals as strings because JSON numbers would lose precision in other readers.
_ENCODER = msgspec.json.Encoder(decimal_format="string", order="deterministic")
_PLAIN_DECODER: msgspec.json.Decoder[dict[str, Any]] = msgspec.json.Decoder(dict[str, Any])
# Stored in their own columns; their TypeVar annotation also breaks typed decode (gotcha 11).
_HEADER_FIELDS = frozenset({"originator_id", "originator_version"})


class _Versioned(msgspec.Struct):
    """Just the stored class_version; msgspec skips every other key cheaply."""

    class_version: int = 1


_VERSION_DECODER = msgspec.json.Decoder(_Versioned)


@dataclasses.dataclass(frozen=True)
class _EventCodec:
    """The typed state Struct of one event class, its decoder and its class_version."""

    struct: type[msgspec.Struct]
    decoder: msgspec.json.Decoder[Any]
    class_version: int


@cache
def _event_codec(cls: type[Any]) -> _EventCodec:
    """Build (once per class) a Struct mirroring the event's fields, minus the header."""
    defaults = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if name in _HEADER_FIELDS or hint is ClassVar or typing.get_origin(hint) is ClassVar:
            continue
        field = defaults.get(name)
        if field is not None and field.default is not dataclasses.MISSING:
            fields.append((name, hint, field.default))
        elif field is not None and field.default_factory is not dataclasses.MISSING:
            fields.append((name, hint, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((name, hint))
    # kw_only lets required fields follow defaulted ones, in the class's own field order.
    struct = msgspec.defstruct(f"{cls.__qualname__}.State", fields, kw_only=True)
    return _EventCodec(struct, msgspec.json.Decoder(struct), getattr(cls, "class_version", 1))


def _escape_surrogates(value: Any) -> Any:  # noqa: ANN401 - any decoded JSON value
    """`value` with every string's lone surrogates written as backslash escapes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_surrogates(v) for v in value]
    return value


def _default_transcoder() -> JSONTranscoder:
    """The transcoder Application would build: UUIDs, Decimals and datetimes."""
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DecimalAsStr())
    transcoder.register(DatetimeAsISO())
    return transcoder


class MsgspecMapper(Mapper[TAggregateID]):
    """Converts domain events to stored events and back with msgspec."""

    def __init__(
        self,
        transcoder: Transcoder | None = None,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        """Keep ``transcoder`` (or a default JSON one) for snapshots only."""
        super().__init__(transcoder or _default_transcoder(), compressor, cipher)

    def to_stored_event(self, domain_event: DomainEventProtocol[TAggregateID]) -> StoredEvent:
        """Encode an event's state (without id and version) as msgspec JSON."""
        if isinstance(domain_event, CanSnapshotAggregate):
            return super().to_stored_event(domain_event)
        # Build the decoder now, so a class that could not be read back fails on save, not replay.
        codec = _event_codec(type(domain_event))
        state = {k: v for k, v in vars(domain_event).items() if k not in _HEADER_FIELDS}
        if codec.class_version > 1:
            state["class_version"] = codec.class_version
        try:
            data = _ENCODER.encode(state)
        except UnicodeEncodeError:
            # A lone surrogate in some text (an error message quoting a broker): UTF-8 cannot
            # carry it. Losing the whole transaction for it would lose the raw payload too, so
            # such text is stored with the character escaped (raw payloads are escaped
            # losslessly before they get here: `BrokerMessage.Received.payload_encoding`).
            data = _ENCODER.encode(_escape_surrogates(msgspec.to_builtins(state, order="deterministic")))
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[TAggregateID]:
        """Decode a stored event into its class, upcasting older class versions."""
        cls = resolve_topic(stored_event.topic)
        if issubclass(cls, CanSnapshotAggregate):
            return super().to_domain_event(stored_event)
        id_type = typing.cast("Hashable", type(stored_event.originator_id))  # for lru_cache
        id_convertor = find_id_convertor(cls, id_type)
        return typing.cast(
            "DomainEventProtocol[TAggregateID]",
            self.decode_event(
                cls,
                id_convertor(stored_event.originator_id),
                stored_event.originator_version,
                stored_event.state,
                stored_event.topic,
            ),
        )

    def decode_event(
        self,
        cls: Any,  # noqa: ANN401 - an event class
        originator_id: object,
        originator_version: int,
        data: bytes,
        topic: str = "",
    ) -> Any:  # noqa: ANN401 - an instance of `cls`
        """Decode one stored event's state into `cls` (not a snapshot), with the given header.

        The projections call this directly with the row's columns: it skips building a
        StoredEvent and converting the id, which `to_domain_event` pays for every event.
        """
        codec = _event_codec(cls)
        try:
            state = self._decode_state(cls, codec, data)
        except Exception as e:
            msg = (
                f"Failed to deserialise state of stored event with topic "
                f"'{topic or get_topic(cls)}', originator_id '{originator_id}' and "
                f"originator_version {originator_version}: {e}"
            )
            raise MapperDeserialisationError(msg) from e
        state["originator_id"] = originator_id
        state["originator_version"] = originator_version
        # Like the base Mapper: no __init__ (it would stamp a new timestamp), just the fields.
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        return domain_event

    def _decode_state(self, cls: type[Any], codec: _EventCodec, data: bytes) -> dict[str, Any]:
        """Decrypt, decompress and decode the state, upcasting it if it is older."""
        if self.cipher:
            data = self.cipher.decrypt(data)
        if self.compressor:
            data = self.compressor.decompress(data)
        current = codec.class_version
        # Only versioned classes pay for a second (cheap) parse to read the stored version.
        if current > 1 and _VERSION_DECODER.decode(data).class_version < current:
            # Upcasters work on the plain dict, so type it only after they have run.
            plain = _PLAIN_DECODER.decode(data)
            version = plain.pop("class_version", 1)
            while version < current:
                getattr(cls, f"upcast_v{version}_v{version + 1}")(plain)
                version += 1
            decoded = msgspec.convert(plain, codec.struct, strict=False)
        else:
            decoded = codec.decoder.decode(data)
        # asdict is shallow: nested Structs stay Structs, as the event holds them.
        return msgspec.structs.asdict(decoded)


def register_msgspec_mapper(env: dict[str, str]) -> None:
    """Make an Application built with ``env`` use MsgspecMapper (via MAPPER_TOPIC)."""
    env["MAPPER_TOPIC"] = get_topic(MsgspecMapper)
