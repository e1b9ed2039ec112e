"""Retrying a failed handler with backoff: `Backoff` (the delays), `Retrier` (the loop), `PoisonPolicy`.

Subscriptions and saved-position consumers hand each event to a handler until it
returns without raising; a failure is logged with its traceback, counted, and retried
after the next delay, so a bug in a handler neither spins a core nor skips an event.

By default an event is retried for ever: a handler that always fails on one event
stalls there. A `PoisonPolicy` (opt-in) bounds that: after `max_attempts` failed tries
of one event the event is handed to the policy's `dead_letter` callback, and the
caller moves past it. Failures of the `transient` kinds (the destination is down, not
the event bad) are retried without limit and never counted towards the bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, auto
from typing import TypeVar, overload

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


class DeadLettered(Enum):
    """The type of `DEAD_LETTERED`."""

    DEAD_LETTERED = auto()


DEAD_LETTERED = DeadLettered.DEAD_LETTERED
"""What `Retrier.call` returns when the event failed too often and was dead-lettered."""

DeadLetterCallback = Callable[[LoggedEvent, Exception, int], object]
"""``dead_letter(event, last_error, attempts)``: record the event the handler gave up on."""


@dataclass(frozen=True)
class PoisonPolicy:
    """After `max_attempts` failed tries of one event, dead-letter it and move on.

    `dead_letter(event, error, attempts)` must record the event somewhere durable (it is
    retried with backoff until it returns); only then does the caller move past it.
    """

    max_attempts: int
    """Failed tries of one event (transient failures not counted) before it is dead-lettered."""
    dead_letter: DeadLetterCallback
    """Records the event given up on; called once per dead-lettered event (retried if it raises)."""
    transient: tuple[type[Exception], ...] = ()
    """Failures that say the destination is unavailable: retried for ever, never counted."""

    def __post_init__(self) -> None:
        """Refuse a bound that would dead-letter without a single try."""
        if self.max_attempts < 1:
            msg = f"PoisonPolicy.max_attempts must be at least 1, not {self.max_attempts}"
            raise ValueError(msg)


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

    @overload
    def call(
        self,
        fn: Callable[[LoggedEvent], T],
        event: LoggedEvent,
        owner: str,
        stop: threading.Event,
        poison: None = None,
        *,
        raise_transient: bool = False,
    ) -> T | Stopped: ...

    @overload
    def call(
        self,
        fn: Callable[[LoggedEvent], T],
        event: LoggedEvent,
        owner: str,
        stop: threading.Event,
        poison: PoisonPolicy | None,
        *,
        raise_transient: bool = False,
    ) -> T | Stopped | DeadLettered: ...

    def call(  # noqa: PLR0913 - the call, its event, who asks, when to stop, and the two policies
        self,
        fn: Callable[[LoggedEvent], T],
        event: LoggedEvent,
        owner: str,
        stop: threading.Event,
        poison: PoisonPolicy | None = None,
        *,
        raise_transient: bool = False,
    ) -> T | Stopped | DeadLettered:
        """``fn(event)``, repeated until it returns without raising; STOPPED if stopped first.

        With `poison`, after `poison.max_attempts` counted failures the event is handed to
        `poison.dead_letter` and DEAD_LETTERED is returned. With `raise_transient`, a
        transient failure is raised instead of retried (for one-shot runs that must not
        wait out an outage).
        """
        attempts = 0
        for delay in self.backoff.delays():
            if stop.is_set():
                break
            try:
                return fn(event)
            except Exception as e:  # any handler failure is logged, counted and retried
                transient = poison is not None and isinstance(e, poison.transient)
                if transient and raise_transient:
                    raise
                if poison is not None and not transient:
                    attempts += 1
                    if attempts >= poison.max_attempts:
                        self.errors += 1
                        self.last_error = e
                        self.log.exception(
                            "%s: handler failed on event %d (%s) %d times; dead-lettering it",
                            owner,
                            event.position,
                            event.topic,
                            attempts,
                        )
                        return self._dead_letter(
                            poison, event, e, attempts, owner, stop, raise_failure=raise_transient
                        )
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

    def _dead_letter(  # noqa: PLR0913, PLR0917 - what to record and where
        self,
        poison: PoisonPolicy,
        event: LoggedEvent,
        error: Exception,
        attempts: int,
        owner: str,
        stop: threading.Event,
        *,
        raise_failure: bool,
    ) -> DeadLettered | Stopped:
        """Record the dead letter, retrying the record itself until it is stored (or stopped)."""
        for delay in self.backoff.delays():
            try:
                poison.dead_letter(event, error, attempts)
            except Exception as e:  # a failed record is retried: the event must not vanish
                if raise_failure:
                    raise
                self.log.exception(
                    "%s: recording dead letter of event %d failed; retrying in %.3fs",
                    owner,
                    event.position,
                    delay,
                )
                if not self.failed(e, delay, stop):
                    return STOPPED
            else:
                return DEAD_LETTERED
        return STOPPED  # pragma: no cover - delays() never ends
