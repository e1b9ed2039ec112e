"""Poison events: with a PoisonPolicy a handler that always fails on one event no longer stalls.

Without the policy (the default) the documented behaviour holds: the event is retried for
ever (tests/integration/test_subscriptions.py). Nothing here asserts on time.
"""

from __future__ import annotations

import threading

import pytest

from tests.builders import ACCOUNT, D, unique_cid
from tests.integration.test_subscriptions import FAST_RETRY, add_orders, eventually, head, log_positions
from trueup import Ledger, LoggedEvent
from trueup.subscriptions import PoisonPolicy, SavedPositionConsumer, subscribe


class UnavailableError(Exception):
    pass


class Recorder:
    """A handler that fails for ever on one position, and a dead-letter record."""

    def __init__(self, poison_at: int) -> None:
        self.poison_at = poison_at
        self.seen: list[int] = []
        self.tries = 0
        self.dead: list[tuple[int, str, int]] = []

    def handle(self, event: LoggedEvent) -> None:
        if event.position == self.poison_at:
            self.tries += 1
            msg = f"cannot handle {event.position}"
            raise ValueError(msg)
        self.seen.append(event.position)

    def dead_letter(self, event: LoggedEvent, error: Exception, attempts: int) -> None:
        self.dead.append((event.position, str(error), attempts))


def test_consumer_run_forever_dead_letters_a_poison_event_and_moves_on(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        last = add_orders(ledger, 2)
        positions = log_positions(ledger)
        recorder = Recorder(poison_at=positions[1])
        consumer = SavedPositionConsumer(
            ledger,
            "poisoned",
            recorder.handle,
            backoff=FAST_RETRY,
            poison=PoisonPolicy(3, recorder.dead_letter),
        )
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run_forever, args=(stop,))
        thread.start()
        try:
            eventually(lambda: consumer.position() == last, "the consumer to pass the poison event")
        finally:
            stop.set()
            thread.join()
        assert recorder.dead == [(positions[1], f"cannot handle {positions[1]}", 3)]
        assert recorder.tries == 3
        assert recorder.seen == [p for p in positions if p != positions[1]]
        assert consumer.dead_letters == 1


def test_consumer_run_once_dead_letters_after_the_bound(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        last = add_orders(ledger, 1)
        positions = log_positions(ledger)
        recorder = Recorder(poison_at=positions[0])
        consumer = SavedPositionConsumer(
            ledger, "once", recorder.handle, backoff=FAST_RETRY, poison=PoisonPolicy(2, recorder.dead_letter)
        )
        assert consumer.run_once() == len(positions)
        assert consumer.position() == last
        assert [d[0] for d in recorder.dead] == [positions[0]]
        # A second run has nothing left: the dead letter is not retried.
        assert consumer.run_once() == 0


def test_transient_failures_never_count_towards_the_bound(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        last = add_orders(ledger, 1)
        outage = {"left": 6}
        seen: list[int] = []
        dead: list[int] = []

        def handle(event: LoggedEvent) -> None:
            if outage["left"]:
                outage["left"] -= 1
                msg = "destination down"
                raise UnavailableError(msg)
            seen.append(event.position)

        consumer = SavedPositionConsumer(
            ledger,
            "outage",
            handle,
            backoff=FAST_RETRY,
            poison=PoisonPolicy(2, lambda e, _err, _n: dead.append(e.position), (UnavailableError,)),
        )
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run_forever, args=(stop,))
        thread.start()
        try:
            eventually(lambda: consumer.position() == last, "the consumer to outlast the outage")
        finally:
            stop.set()
            thread.join()
        assert dead == []
        assert seen == log_positions(ledger)


def test_run_once_raises_a_transient_failure_and_keeps_the_event(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        add_orders(ledger, 1)

        def handle(_event: LoggedEvent) -> None:
            msg = "destination down"
            raise UnavailableError(msg)

        consumer = SavedPositionConsumer(
            ledger,
            "down",
            handle,
            backoff=FAST_RETRY,
            poison=PoisonPolicy(2, lambda *_: None, (UnavailableError,)),
        )
        with pytest.raises(UnavailableError):
            consumer.run_once()
        assert consumer.position() == 0


def test_exactly_once_consumer_dead_letters_and_moves_its_position(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        last = add_orders(ledger, 1)
        positions = log_positions(ledger)
        dead: list[int] = []
        applied: list[int] = []

        def handle(event: LoggedEvent, _cursor: object) -> None:
            if event.position == positions[-1]:
                msg = "bad event"
                raise ValueError(msg)
            applied.append(event.position)

        consumer = SavedPositionConsumer(
            ledger,
            "xo",
            handle,
            exactly_once=True,
            backoff=FAST_RETRY,
            poison=PoisonPolicy(2, lambda e, _err, _n: dead.append(e.position)),
        )
        assert consumer.run_once() == len(positions)
        assert (consumer.position(), dead, applied) == (last, [positions[-1]], positions[:-1])


def test_subscription_with_a_poison_policy_moves_past_the_event(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        ledger.intend(ACCOUNT, unique_cid("P"), "AAPL", "BUY", D(1))
        ledger.intend(ACCOUNT, unique_cid("P"), "AAPL", "BUY", D(1))
        positions = log_positions(ledger)
        recorder = Recorder(poison_at=positions[0])
        with subscribe(
            ledger, recorder.handle, backoff=FAST_RETRY, poison=PoisonPolicy(2, recorder.dead_letter)
        ) as subscription:
            assert subscription.wait(head(ledger), timeout=60)
        assert recorder.seen == positions[1:]
        assert subscription.dead_letters == 1


def test_a_failing_dead_letter_record_is_retried_until_it_is_stored(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        last = add_orders(ledger, 1)
        positions = log_positions(ledger)
        recorder = Recorder(poison_at=positions[0])
        failures = {"left": 3}

        def dead_letter(event: LoggedEvent, error: Exception, attempts: int) -> None:
            if failures["left"]:
                failures["left"] -= 1
                msg = "dead-letter store down"
                raise OSError(msg)
            recorder.dead_letter(event, error, attempts)

        consumer = SavedPositionConsumer(
            ledger, "dl", recorder.handle, backoff=FAST_RETRY, poison=PoisonPolicy(1, dead_letter)
        )
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run_forever, args=(stop,))
        thread.start()
        try:
            eventually(lambda: consumer.position() == last, "the consumer to record the dead letter")
        finally:
            stop.set()
            thread.join()
        assert [d[0] for d in recorder.dead] == [positions[0]]


def test_poison_policy_refuses_a_bound_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PoisonPolicy(0, lambda *_: None)
