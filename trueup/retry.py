"""Retrying a failed handler with backoff: `Backoff` (the delays) and `Retrier` (the loop).

Subscriptions and saved-position consumers hand each event to a handler until it
returns without raising; a failure is logged with its traceback, counted, and retried
after the next delay, so a bug in a handler neither spins a core nor skips an event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, auto
from typing import TypeVar

from trueup.adapters.eventstore.log import LoggedEvent

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How long to wait before retrying a failed handler or a failed read.

    The delay starts at `first` seconds and doubles after each consecutive failure, up
    to `most`: a bug in a handler must not spin a core or flood the log, but a passing
    fault (a dropped connection) should cost little.
    """

    first: float = 0.05
    """Delay after the first failure, in seconds."""
    most: float = 2.0
    """Longest delay, in seconds."""

    def delays(self) -> Iterator[float]:
        """The successive delays: first, 2*first, ... capped at most."""
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.most)


class Stopped(Enum):
    """The type of `STOPPED`."""

    STOPPED = auto()


STOPPED = Stopped.STOPPED
"""What `Retrier.call` returns when stopped before the call succeeded."""


class Retrier:
    """Retries a handler with backoff, logging each failure with its traceback, and counts failures."""

    def __init__(self, backoff: Backoff, logger: logging.Logger | None = None) -> None:
        """Retry after `backoff`'s delays, logging failures to `logger` (default: this module's)."""
        self.backoff = backoff
        self.log = logger or logging.getLogger(__name__)
        self.errors = 0
        self.last_error: Exception | None = None

    def failed(self, error: Exception, delay: float, stop: threading.Event) -> bool:
        """Count `error` (already logged by the caller), wait `delay`; False if stopped meanwhile."""
        self.errors += 1
        self.last_error = error
        return not stop.wait(delay)

    def call(
        self, fn: Callable[[LoggedEvent], T], event: LoggedEvent, owner: str, stop: threading.Event
    ) -> T | Stopped:
        """``fn(event)``, repeated until it returns without raising; STOPPED if stopped first."""
        for delay in self.backoff.delays():
            if stop.is_set():
                break
            try:
                return fn(event)
            except Exception as e:  # any handler failure is logged, counted and retried
                self.log.exception(
                    "%s: handler failed on event %d (%s); retrying in %.3fs",
                    owner,
                    event.position,
                    event.topic,
                    delay,
                )
                if not self.failed(e, delay, stop):
                    break
        return STOPPED
