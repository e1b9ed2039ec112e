"""The stored log read page by page (temporary in this branch; replaced by the eventstore branch)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec

from trueup.adapters.store import Store


class LoggedEvent(msgspec.Struct, frozen=True):
    """One stored event with its position in the log."""

    position: int
    """Notification id: the event's place in the log, gapless per writer."""
    topic: str
    """Stable explicit topic, e.g. "trueup:Order.FillBooked"."""
    event: Any
    """The decoded domain event."""

    @property
    def timestamp(self) -> datetime:
        """When the event was recorded."""
        return self.event.timestamp  # type: ignore[no-any-return]


def read_log(store: Store, after: int = 0, until: datetime | int | None = None) -> Iterator[LoggedEvent]:
    """Stream the stored log in order, page by page."""
    stop = until if isinstance(until, int) else None
    position = after
    recorder = store.app.recorder
    mapper = store.app.mapper
    while True:
        page = recorder.select_notifications(start=position, limit=1000, stop=stop, inclusive_of_start=False)
        if not page:
            return
        for notification in page:
            event: Any = mapper.to_domain_event(notification)
            if isinstance(until, datetime) and event.timestamp > until:
                return
            yield LoggedEvent(position=notification.id, topic=notification.topic, event=event)
        position = page[-1].id
