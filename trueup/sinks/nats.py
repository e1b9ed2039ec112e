"""NATS JetStream sink: every published event to ``<prefix>.<account>.<kind>``, exactly once.

Each event is published with its id (``<aggregate id>/<version>``) as the
``Nats-Msg-Id`` header and the sink waits for JetStream's acknowledgement before its
position is saved. A sink killed after the publish but before the save re-sends that
event when it restarts; JetStream drops the copy as a duplicate as long as the restart
comes within the stream's duplicate window, so subscribers see each event once.

The stream is created if missing with these settings (`NatsConfig` names them):
subjects ``<prefix>.>``, file storage, limits retention, ``duplicate_window`` 2 minutes,
``max_age`` 7 days, one replica. An existing stream is used as it is (its settings are
the operator's); one that does not cover ``<prefix>.>`` is refused.

Subjects: the account and kind are single subject tokens: characters NATS does not
allow in a token (``.``, ``*``, ``>``, white space) become ``_``; the kind is lower
case (``trueup.DU123.order_updated``, ``trueup.DU123.discrepancy``).

Needs the ``sinks`` extra (nats-py). The client runs on its own event loop in a
background thread, so the connection keeps answering the server's pings between events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec

from trueup.domain.errors import ConfigError
from trueup.sinks.base import Sink, SinkUnavailable
from trueup.sinks.events import KINDS, SinkEvent, encode

log = logging.getLogger(__name__)

T = TypeVar("T")

_BAD_TOKEN = re.compile(r"[.*>\s]")


class NatsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the NATS JetStream sink (``[sinks.nats]`` in a daemon's config)."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "TRUEUP"
    """JetStream stream holding the events (created if missing)."""
    subject_prefix: str = "trueup"
    kinds: frozenset[str] = KINDS
    """Which published kinds to send (default: all four)."""
    duplicate_window: float = 120.0
    """Seconds JetStream remembers message ids (for a stream this sink creates)."""
    max_age: float = 7 * 24 * 3600.0
    """Seconds a message is kept (for a stream this sink creates)."""
    connect_timeout: float = 2.0
    publish_timeout: float = 5.0
    consumer: str = "sink-nats"
    """Consumer name: the sink's saved position in the store."""
    max_attempts: int = 5
    """Counted failures of one event before it is dead-lettered."""

    def __post_init__(self) -> None:
        """Refuse settings that cannot work."""
        if not self.servers:
            msg = "NATS sink: no servers configured"
            raise ConfigError(msg)
        unknown = set(self.kinds) - KINDS
        if unknown:
            msg = f"NATS sink: unknown kinds {sorted(unknown)}; known: {sorted(KINDS)}"
            raise ConfigError(msg)
        if not self.subject_prefix or _BAD_TOKEN.sub("", self.subject_prefix.replace(".", "")) == "":
            msg = f"NATS sink: invalid subject prefix {self.subject_prefix!r}"
            raise ConfigError(msg)


def subject_token(value: str) -> str:
    """`value` as one NATS subject token."""
    return _BAD_TOKEN.sub("_", value) or "_"


def subject_for(config: NatsConfig, event: SinkEvent) -> str:
    """``<prefix>.<account>.<kind>`` for `event`."""
    return f"{config.subject_prefix}.{subject_token(event.account)}.{event.kind.lower()}"


class NatsSink(Sink):
    """Publishes events to JetStream with their ids as message ids."""

    name = "sink-nats"

    def __init__(self, config: NatsConfig) -> None:
        """Publish with `config`; nothing connects until the first event."""
        try:
            import nats  # noqa: PLC0415, F401 - optional extra, checked up front
        except ImportError as e:
            msg = "the NATS sink needs its extra: pip install 'trueup[sinks]'"
            raise ConfigError(msg) from e
        self.config = config
        self.name = config.consumer
        self.published = 0
        """Messages JetStream stored (duplicates excluded)."""
        self.duplicates = 0
        """Messages JetStream recognised as already stored (a re-send after a crash)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Any = None
        self._js: Any = None

    def wants(self, event: SinkEvent) -> bool:
        """Only the configured kinds."""
        return event.kind in self.config.kinds

    def deliver(self, event: SinkEvent) -> None:
        """Publish one event and wait for JetStream's acknowledgement."""
        from nats.errors import Error as NatsError  # noqa: PLC0415 - optional extra
        from nats.js.errors import APIError, NoStreamResponseError  # noqa: PLC0415

        try:
            ack = self._run(self._publish(event), self.config.connect_timeout + self.config.publish_timeout)
        except NoStreamResponseError as e:
            self._drop_connection()  # the stream went away: ensure it again on the next try
            msg = f"NATS: no stream answered for {subject_for(self.config, event)}"
            raise SinkUnavailable(msg) from e
        except APIError:
            raise  # JetStream refused this message: counted, dead-lettered after the bound
        except ConfigError as e:  # the stream does not take our subjects: wait for the operator
            self._drop_connection()
            raise SinkUnavailable(str(e)) from e
        except (NatsError, OSError, TimeoutError) as e:
            self._drop_connection()
            msg = f"NATS {','.join(self.config.servers)} unavailable: {type(e).__name__}: {e}"
            raise SinkUnavailable(msg) from e
        if ack.duplicate:
            self.duplicates += 1
        else:
            self.published += 1

    def close(self) -> None:
        """Drain the connection and stop the client's loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._nc is not None:
            try:
                self._run(self._nc.close(), self.config.connect_timeout)
            except Exception:  # closing a dead connection: nothing left to release
                log.debug("closing the NATS connection failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = self._nc = self._js = None

    # -- on the client's loop ----------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="trueup-sink-nats", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _publish(self, event: SinkEvent) -> Any:  # noqa: ANN401 - nats-py's PubAck
        js = await self._jetstream()
        return await js.publish(
            subject_for(self.config, event),
            encode(event),
            timeout=self.config.publish_timeout,
            headers={"Nats-Msg-Id": event.id, "Trueup-Kind": event.kind},
        )

    async def _jetstream(self) -> Any:  # noqa: ANN401 - nats-py's JetStreamContext
        if self._js is not None:
            return self._js
        import nats  # noqa: PLC0415 - optional extra

        self._nc = await nats.connect(
            servers=list(self.config.servers),
            connect_timeout=self.config.connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            name=f"trueup {self.name}",
        )
        js = self._nc.jetstream(timeout=self.config.publish_timeout)
        await self._ensure_stream(js)
        self._js = js
        return js

    async def _ensure_stream(self, js: Any) -> None:  # noqa: ANN401 - nats-py's JetStreamContext
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig  # noqa: PLC0415
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        config = self.config
        wanted = f"{config.subject_prefix}.>"
        try:
            info = await js.stream_info(config.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=config.stream,
                    subjects=[wanted],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    duplicate_window=config.duplicate_window,
                    max_age=config.max_age,
                    num_replicas=1,
                    description="trueup events (ORDER_UPDATED, POSITION_SYNCED, DISCREPANCY, GATE_CHANGED)",
                )
            )
            log.info("created JetStream stream %s for %s", config.stream, wanted)
            return
        subjects = info.config.subjects or []
        if wanted not in subjects and ">" not in subjects:
            msg = f"JetStream stream {config.stream!r} takes {subjects}, not {wanted!r}"
            raise ConfigError(msg)

    def _drop_connection(self) -> None:
        nc = self._nc
        self._nc = self._js = None
        if nc is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(nc.close(), self._loop)
