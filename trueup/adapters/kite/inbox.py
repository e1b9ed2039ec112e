"""`Inbox`: the bounded queue of Kite updates (postbacks, WebSocket order updates) waiting for the stream.

Standard library only. Producers are other threads (the postback receiver's, KiteTicker's);
the consumer is `KiteClient.stream()` on the event loop, woken through the one `wake`
callback registered last (`listen`). At most `limit` updates wait: an update beyond that
is not queued but counted (`refused_postbacks`, `dropped_updates`) and marks an overflow,
which the consumer takes (`take_overflow`) as a reason to re-read the order book. One lock
guards the queue, the counters, the overflow mark and the listener.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["Inbox"]


class Inbox:
    """Updates as `(kind, payload)`, oldest first, at most `limit` waiting; thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._items: deque[tuple[str, str]] = deque()
        self._wake: Callable[[], None] | None = None
        self._listener = 0
        self._overflowed = False
        self.refused_postbacks = 0
        """Postbacks refused because the inbox was full (answered 503: Kite retries them)."""
        self.dropped_updates = 0
        """WebSocket updates dropped because the inbox was full (a refresh is forced instead)."""

    def put(self, kind: str, payload: str) -> bool:
        """Queue an update; False (nothing queued, a refresh owed) when the inbox is full."""
        with self._lock:
            taken = len(self._items) < self.limit
            if taken:
                self._items.append((kind, payload))
            else:
                self._overflowed = True
                if kind == "postback":
                    self.refused_postbacks += 1
                else:
                    self.dropped_updates += 1
            wake = self._wake
        if wake is not None:
            wake()
        return taken

    def next(self) -> tuple[str, str] | None:
        """The oldest waiting update, taken out; None if none waits."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def take_overflow(self) -> bool:
        """Whether updates were turned away since the last call (the book must be re-read)."""
        with self._lock:
            overflowed, self._overflowed = self._overflowed, False
        return overflowed

    def listen(self, wake: Callable[[], None]) -> tuple[int, bool]:
        """Call `wake` after each update from now on, instead of any earlier listener's.

        Returns:
            This listener's number (for `release`), and whether updates wait already.
        """
        with self._lock:
            self._listener += 1
            self._wake = wake
            return self._listener, bool(self._items)

    def release(self, listener: int) -> None:
        """Stop waking `listener`, unless a newer listener has taken over."""
        with self._lock:
            if self._listener == listener:
                self._wake = None
