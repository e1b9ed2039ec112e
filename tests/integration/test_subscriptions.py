"""Following the log: followers, handler subscriptions and saved-position consumers on every store.

Nothing here asserts on time: waits have generous deadlines only so a broken build fails
instead of hanging.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, D, fill_report, order_report, unique_cid
from trueup import Ledger, LoggedEvent
from trueup.adapters.eventstore.store import Cursor, Store
from trueup.subscriptions import Backoff, SavedPositionConsumer, follow, subscribe

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 60.0
"""Seconds before a wait gives up: a hang guard, not a measurement."""

FAST_RETRY = Backoff(first=0.01, most=0.02)


def add_orders(ledger: Ledger, count: int) -> int:
    """Intend `count` orders and ingest an ack and a full fill for each; return the log head."""
    for _ in range(count):
        cid = unique_cid("S")
        ledger.intend(ACCOUNT, cid, "AAPL", "BUY", D(10))
        ledger.ingest(
            [
                order_report("ACCEPTED", cid=cid, broker_id=f"B{cid}", ts=1),
                fill_report(f"E{cid}", 10, 100, cid=cid, broker_id=f"B{cid}", ts=2),
            ]
        )
    return head(ledger)


def head(ledger: Ledger) -> int:
    """Position of the newest event in the log."""
    return ledger.store.app.recorder.max_notification_id() or 0


def log_positions(ledger: Ledger, after: int = 0) -> list[int]:
    return [e.position for e in ledger.events(after=after)]


def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition()` until true (fail after DEADLINE seconds)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def create_sink(store: Store) -> None:
    # No key on position: a duplicate delivery must show up as a second row, not an error.
    with store.transaction() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {store.table('sink')} (position BIGINT NOT NULL, topic TEXT)"
        )


def sink_positions(store: Store) -> list[int]:
    with store.reading() as cursor:
        cursor.execute(f"SELECT position FROM {store.table('sink')} ORDER BY position")
        rows = cursor.fetchall()
    return [int(r["position"]) for r in rows]


def sink_writer(store: Store) -> Callable[[LoggedEvent, Cursor], None]:
    insert = store.sql(f"INSERT INTO {store.table('sink')} (position, topic) VALUES (?, ?)")

    def write(event: LoggedEvent, cursor: Cursor) -> None:
        cursor.execute(insert, (event.position, event.topic))

    return write


# -- follower --------------------------------------------------------------------------


def test_follower_yields_after_position_waits_and_stops(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        start = add_orders(ledger, 2)
        add_orders(ledger, 1)
        received: list[LoggedEvent] = []
        with follow(ledger, after=start) as follower:
            thread = threading.Thread(target=lambda: received.extend(follower))
            thread.start()
            last = add_orders(ledger, 2)  # appended while it follows
            eventually(lambda: follower.position >= last, "the follower to reach the head")
            follower.stop()  # from another thread, while it waits for more
            thread.join(DEADLINE)
            assert not thread.is_alive()
        assert [(e.position, e.topic) for e in received] == [
            (e.position, e.topic) for e in ledger.events(after=start)
        ]
        assert all(e.event.originator_id is not None for e in received)  # decoded domain events


# -- subscribe -------------------------------------------------------------------------


def test_subscriber_receives_exactly_the_events_after_its_position(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        start = add_orders(ledger, 3)
        add_orders(ledger, 2)  # after the start position, before subscribing
        received: list[LoggedEvent] = []
        with subscribe(ledger, received.append, from_position=start) as subscription:
            for _ in range(4):
                last = add_orders(ledger, 1)  # appended while it runs
            assert subscription.wait(last, timeout=DEADLINE)
        assert not subscription.running
        expected = list(ledger.events(after=start))
        assert [(e.position, e.topic) for e in received] == [(e.position, e.topic) for e in expected]
        assert [type(e.event) for e in received] == [type(e.event) for e in expected]
        assert subscription.position == last
        assert subscription.errors == 0


def test_handler_that_raises_sees_the_event_again_and_nothing_is_skipped(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Ledger.open(store_url) as ledger:
        last = add_orders(ledger, 3)
        positions = log_positions(ledger)
        poisoned = positions[len(positions) // 2]
        failures_left = {poisoned: 2}
        seen: list[int] = []
        accepted: list[int] = []

        def handler(event: LoggedEvent) -> None:
            seen.append(event.position)
            if failures_left.get(event.position, 0) > 0:
                failures_left[event.position] -= 1
                raise RuntimeError(f"boom at {event.position}")
            accepted.append(event.position)

        with (
            caplog.at_level(logging.ERROR, logger="trueup.subscriptions"),
            subscribe(ledger, handler, backoff=FAST_RETRY, name="flaky") as subscription,
        ):
            assert subscription.wait(last, timeout=DEADLINE)
        assert accepted == positions
        assert seen.count(poisoned) == 3
        assert Counter(seen) - Counter({poisoned: 2}) == Counter(positions)
        assert subscription.errors == 2
        assert isinstance(subscription.last_error, RuntimeError)
        failures = [r for r in caplog.records if r.exc_info and f"event {poisoned}" in r.getMessage()]
        assert len(failures) == 2


# -- SavedPositionConsumer, in process -------------------------------------------------


def test_consumer_run_once_saves_and_resumes(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        add_orders(ledger, 2)
        positions = log_positions(ledger)
        seen: list[int] = []
        consumer = SavedPositionConsumer(ledger, "counter", lambda e: seen.append(e.position))
        assert consumer.position() == 0
        assert consumer.run_once(max_events=3) == 3
        assert consumer.position() == positions[2]
        again = SavedPositionConsumer(ledger, "counter", lambda e: seen.append(e.position))  # a restart
        assert again.run_once() == len(positions) - 3
        assert again.run_once() == 0
        assert seen == positions
        # A new consumer starts where it is told; a saved position wins over that afterwards.
        late = SavedPositionConsumer(ledger, "late", lambda e: None, from_position=positions[-2])
        assert late.run_once() == 1
        assert (
            SavedPositionConsumer(ledger, "late", lambda e: None, from_position=0).position() == positions[-1]
        )


def test_exactly_once_handler_failure_rolls_back_its_writes_and_position(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        add_orders(ledger, 2)
        positions = log_positions(ledger)
        create_sink(ledger.store)
        write = sink_writer(ledger.store)
        poisoned = positions[4]

        def failing(event: LoggedEvent, cursor: Cursor) -> None:
            write(event, cursor)
            if event.position == poisoned:
                raise RuntimeError("boom")

        consumer = SavedPositionConsumer(ledger, "sink", failing, exactly_once=True)
        with pytest.raises(RuntimeError, match="boom"):
            consumer.run_once()
        assert consumer.position() == positions[3]
        assert sink_positions(ledger.store) == positions[:4]
        fixed = SavedPositionConsumer(ledger, "sink", write, exactly_once=True)
        assert fixed.run_once() == len(positions) - 4
        assert sink_positions(ledger.store) == positions


def test_two_exactly_once_consumers_of_one_name_apply_each_event_once(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        add_orders(ledger, 6)
        create_sink(ledger.store)
        write = sink_writer(ledger.store)
        consumers = [SavedPositionConsumer(ledger, "shared", write, exactly_once=True) for _ in range(2)]
        counts: list[int] = []
        threads = [threading.Thread(target=lambda c=c: counts.append(c.run_once())) for c in consumers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
        positions = log_positions(ledger)
        assert sink_positions(ledger.store) == positions
        assert sum(counts) == len(positions)


def test_consumer_run_forever_follows_new_events(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with Ledger.open(store_url) as ledger:
        add_orders(ledger, 1)
        create_sink(ledger.store)
        write = sink_writer(ledger.store)
        failed_once: set[int] = set()

        def flaky(event: LoggedEvent, cursor: Cursor) -> None:
            write(event, cursor)
            if event.position not in failed_once:  # every event fails once, after writing
                failed_once.add(event.position)
                raise RuntimeError("transient")

        consumer = SavedPositionConsumer(ledger, "live", flaky, exactly_once=True, backoff=FAST_RETRY)
        stop = threading.Event()
        processed: list[int] = []
        with caplog.at_level(logging.CRITICAL, logger="trueup.subscriptions"):
            thread = threading.Thread(target=lambda: processed.append(consumer.run_forever(stop)))
            thread.start()
            try:
                last = add_orders(ledger, 2)
                eventually(lambda: consumer.position() >= last, "the consumer to reach the head")
            finally:
                stop.set()
                thread.join(DEADLINE)
        assert not thread.is_alive()
        positions = log_positions(ledger)
        assert sink_positions(ledger.store) == positions  # each once: the failed attempts rolled back
        assert processed == [len(positions)]
        assert consumer.errors == len(positions)


# -- SavedPositionConsumer, killed for real --------------------------------------------

CHILD = """
import sys, time
from trueup import Ledger
from trueup.subscriptions import SavedPositionConsumer

url, mode, delay, start = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
with Ledger.open(url) as ledger:
    store = ledger.store
    insert = store.sql(f"INSERT INTO {store.table('sink')} (position, topic) VALUES (?, ?)")
    if mode == "exactly-once":
        def handle(event, cursor):
            cursor.execute(insert, (event.position, event.topic))
            time.sleep(delay)  # inside the transaction: a kill here must lose the row
        consumer = SavedPositionConsumer(ledger, "sink", handle, exactly_once=True, from_position=start)
    else:
        def handle(event):
            with store.transaction() as cursor:
                cursor.execute(insert, (event.position, event.topic))
            time.sleep(delay)  # after the row, before the position: a kill here repeats the event
        consumer = SavedPositionConsumer(ledger, "sink", handle, from_position=start)
    consumer.run_once()
"""

CROSS_PROCESS = pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""Memory stores cannot be shared across processes: SQLite file and PostgreSQL only."""


def run_consumer(url: str, mode: str, delay: float, start: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", CHILD, url, mode, str(delay), str(start)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill_mid_stream(ledger: Ledger, url: str, mode: str, start: int, total: int) -> None:
    """Start a slow consumer, SIGKILL it once it has done some but not all events."""
    process = run_consumer(url, mode, delay=0.02, start=start)
    try:
        deadline = time.monotonic() + DEADLINE
        while len(sink_positions(ledger.store)) < 5:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the consumer made no progress"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert 5 <= len(sink_positions(ledger.store)) < total, "the kill must land mid-stream"


def run_to_completion(url: str, mode: str, start: int) -> None:
    process = run_consumer(url, mode, delay=0, start=start)
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err.decode()


@CROSS_PROCESS
def test_exactly_once_consumer_killed_and_restarted_applies_each_event_once(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        start = add_orders(ledger, 1)
        add_orders(ledger, 15)
        create_sink(ledger.store)
        expected = log_positions(ledger, after=start)

        kill_mid_stream(ledger, store_url, "exactly-once", start, len(expected))
        saved = SavedPositionConsumer(ledger, "sink", lambda e: None).position()
        # The sink and the position committed together: the sink is exactly the prefix saved.
        assert sink_positions(ledger.store) == [p for p in expected if p <= saved]

        run_to_completion(store_url, "exactly-once", start)
        sink = sink_positions(ledger.store)
        assert Counter(sink).most_common(1)[0][1] == 1
        assert sink == expected


@CROSS_PROCESS
def test_at_least_once_consumer_killed_and_restarted_has_no_gaps(store_url: str) -> None:
    with Ledger.open(store_url) as ledger:
        start = add_orders(ledger, 1)
        add_orders(ledger, 15)
        create_sink(ledger.store)
        expected = log_positions(ledger, after=start)

        kill_mid_stream(ledger, store_url, "at-least-once", start, len(expected))
        saved = SavedPositionConsumer(ledger, "sink", lambda e: None).position()
        boundary = next(p for p in expected if p > saved)  # the one event that may be repeated

        run_to_completion(store_url, "at-least-once", start)
        counts = Counter(sink_positions(ledger.store))
        assert sorted(counts) == expected  # no gaps, nothing foreign
        assert {p: n for p, n in counts.items() if n > 1}.keys() <= {boundary}
        assert counts[boundary] <= 2
