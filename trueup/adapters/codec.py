"""A msgspec Mapper for eventsourcing 9.5 (which ships only a JSON transcoder).

Events are encoded as msgspec JSON (Decimals as strings, so they round-trip exactly)
and decoded with a typed decoder built once per event class from its annotations,
which gives back Decimals, datetimes, UUIDs, enums and nested Structs without any
registered transcodings. `originator_id`/`originator_version` are stored in their own
columns, not in the state (their TypeVar annotation breaks typed decoding, gotcha 11).
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any, ClassVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

_ENCODER = msgspec.json.Encoder(decimal_format="string", order="deterministic")
_PLAIN_DECODER = msgspec.json.Decoder()
_HEADER_FIELDS = frozenset({"originator_id", "originator_version"})


class _Codec:
    """The typed decoder of one event class and the names of its fields."""

    def __init__(self, cls: type[Any]) -> None:
        hints = typing.get_type_hints(cls)
        fields = [
            (name, hint)
            for name, hint in hints.items()
            if name not in _HEADER_FIELDS and typing.get_origin(hint) is not ClassVar
        ]
        self.state_type: Any = msgspec.defstruct(f"{cls.__name__}State", fields)
        self.decoder = msgspec.json.Decoder(self.state_type)
        self.names = tuple(name for name, _ in fields)


@cache
def _codec(cls: type[Any]) -> _Codec:
    return _Codec(cls)


class MsgspecMapper(Mapper[UUID]):
    """Converts domain events to stored events and back with msgspec."""

    def __init__(self, *_: object, **__: object) -> None:
        """Take no transcoder, compressor or cipher: msgspec does the encoding."""
        super().__init__(transcoder=None)  # type: ignore[arg-type]

    def to_stored_event(self, domain_event: Any) -> StoredEvent:  # noqa: ANN401 - any event
        """Encode an event's fields (without id and version) as JSON."""
        state = {k: v for k, v in vars(domain_event).items() if k not in _HEADER_FIELDS}
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=_ENCODER.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:  # noqa: ANN401 - any event
        """Decode a stored event into its class, upcasting older class versions."""
        cls = resolve_topic(stored_event.topic)
        codec = _codec(cls)
        try:
            state = self._decode(cls, codec, stored_event.state)
        except (msgspec.DecodeError, TypeError, ValueError, KeyError) as e:
            msg = (
                f"Failed to deserialise state of stored event with topic "
                f"'{stored_event.topic}', originator_id '{stored_event.originator_id}' and "
                f"originator_version {stored_event.originator_version}: {e}"
            )
            raise MapperDeserialisationError(msg) from e
        originator_id = stored_event.originator_id
        if not isinstance(originator_id, UUID):
            originator_id = UUID(str(originator_id))
        state["originator_id"] = originator_id
        state["originator_version"] = stored_event.originator_version
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    @staticmethod
    def _decode(event_class: type[Any], codec: _Codec, data: bytes) -> dict[str, Any]:
        class_version = getattr(event_class, "class_version", 1)
        if class_version == 1:
            decoded = codec.decoder.decode(data)
        else:
            # An older version must be upcast as plain data before it can be typed.
            plain: dict[str, Any] = _PLAIN_DECODER.decode(data)
            version = plain.pop("class_version", 1)
            while version < class_version:
                getattr(event_class, f"upcast_v{version}_v{version + 1}")(plain)
                version += 1
            decoded = msgspec.convert(plain, codec.state_type, strict=False)
        return {name: getattr(decoded, name) for name in codec.names}
