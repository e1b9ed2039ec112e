"""The NATS JetStream sink against a real server: each event once, also across a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nats
import pytest

from tests.builders import at
from tests.sinks.conftest import NOW, busy_day
from trueup import Ledger
from trueup.sinks import NatsConfig, NatsSink, SinkRunner
from trueup.sinks.events import sink_event

TRUEUP = str(Path(sys.executable).with_name("trueup"))


async def _read_stream(url: str, stream: str) -> list[tuple[str, str, dict]]:
    """Every message in `stream`, read on a connection of its own: (subject, msg id, body)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            found.append((msg.subject, msg.headers["Nats-Msg-Id"], __import__("json").loads(msg.data)))
        return found
    finally:
        await nc.close()


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def read_stream(url: str, stream: str) -> list[tuple[str, str, dict]]:
    return asyncio.run(_read_stream(url, stream))


def expected_ids(ledger: Ledger) -> list[str]:
    return [e.id for e in (sink_event(ledger.store, logged) for logged in ledger.events()) if e is not None]


@pytest.fixture
def stream(nats_url: str, stream_names: tuple[str, str]):
    yield stream_names
    asyncio.run(_delete_stream(nats_url, stream_names[0]))


def test_events_reach_subjects_by_account_and_kind_once_each(
    ledger: Ledger, nats_url: str, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    busy_day(ledger)
    config = NatsConfig(servers=(nats_url,), stream=name, subject_prefix=prefix)
    runner = SinkRunner(ledger, NatsSink(config))
    try:
        runner.run_once()
        runner.run_once()  # nothing new: nothing re-sent
    finally:
        runner.close()
    messages = read_stream(nats_url, name)
    assert [m[1] for m in messages] == expected_ids(ledger)
    subjects = Counter(m[0] for m in messages)
    assert subjects[f"{prefix}.DU123.order_updated"] == 3
    assert subjects[f"{prefix}.DU123.position_synced"] == 2  # AAPL (naked) and MSFT repaired
    assert subjects[f"{prefix}.DU123.gate_changed"] >= 1
    assert subjects[f"{prefix}.DU123.discrepancy"] >= 1
    update = next(m[2] for m in messages if m[0].endswith("order_updated"))
    assert update["data"]["client_order_id"] == "C0"
    assert update["data"]["filled_after"] == "10"  # exact decimal string


def test_a_resend_after_a_lost_position_is_dropped_by_the_duplicate_window(
    ledger: Ledger, nats_url: str, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    busy_day(ledger)
    config = NatsConfig(servers=(nats_url,), stream=name, subject_prefix=prefix)
    first = NatsSink(config)
    SinkRunner(ledger, first, consumer="a").run_once()
    first.close()
    # A second consumer name starts from zero: every event is re-sent, none is stored twice.
    again = NatsSink(config)
    SinkRunner(ledger, again, consumer="b").run_once()
    again.close()
    assert again.published == 0
    assert again.duplicates == len(expected_ids(ledger))
    assert [m[1] for m in read_stream(nats_url, name)] == expected_ids(ledger)


def test_publisher_sigkilled_mid_batch_resumes_and_each_event_is_seen_once(
    tmp_path: Path, nats_url: str, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    url = f"sqlite:///{tmp_path / 'sink.db'}"
    with Ledger.open(url, clock=lambda: at(NOW)) as ledger:
        busy_day(ledger, orders=6)
        wanted = expected_ids(ledger)
    command = [TRUEUP, "sink", "nats", "--store", url, "--server", nats_url, "--stream", name]
    command += ["--subject-prefix", prefix, "--once"]
    env = {**os.environ, "TRUEUP_CRASH_AT": "sink.after_deliver:4"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    env.pop("TRUEUP_CRASH_AT")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
    assert done.returncode == 0, done.stderr
    ids = [m[1] for m in read_stream(nats_url, name)]
    assert ids == wanted  # each event once, in log order, the re-sent fourth included once


def test_a_server_started_from_the_wheel_works_too(
    ledger: Ledger, started_nats_server: str, stream_names: tuple[str, str]
) -> None:
    name, prefix = stream_names
    busy_day(ledger, orders=1)
    sink = NatsSink(NatsConfig(servers=(started_nats_server,), stream=name, subject_prefix=prefix))
    SinkRunner(ledger, sink).run_once()
    sink.close()
    assert [m[1] for m in read_stream(started_nats_server, name)] == expected_ids(ledger)


def test_an_unreachable_server_is_unavailable_never_a_dead_letter(ledger: Ledger, tmp_path: Path) -> None:
    from tests.sinks.conftest import _free_port
    from trueup.sinks import SinkUnavailable

    busy_day(ledger, orders=1)
    sink = NatsSink(NatsConfig(servers=(f"nats://127.0.0.1:{_free_port()}",), connect_timeout=0.5))
    runner = SinkRunner(ledger, sink, max_attempts=1)
    with pytest.raises(SinkUnavailable):
        runner.run_once()
    runner.close()
    first = next(e.position for e in (sink_event(ledger.store, x) for x in ledger.events()) if e is not None)
    assert runner.position() == first - 1  # events no sink publishes were passed; the first one waits
    assert [d for d in ledger.discrepancies() if d.kind == "DEAD_LETTER"] == []
