"""The sinks inside `trueup run`: a shifted position reaches a webhook and NATS once, metrics scrapeable.

Each test runs the installed daemon (`python -m trueup.cli run`) against the paper broker
with ``[sinks.*]`` tables, a local stdlib HTTP receiver on 127.0.0.1 and the machine's
NATS server, then reads what arrived and the daemon's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import Counter
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from tests.operations.running import Daemon, get, paper_config, sample, shift, wait_for
from tests.sinks.conftest import Receiver
from tests.sinks.test_nats import _delete_stream, read_stream
from trueup import Ledger
from trueup.operations.metrics import Metrics
from trueup.operations.sinks import SinkHost, SinkPlan
from trueup.retry import Backoff
from trueup.sinks import WebhookConfig, WebhookSink, verify_signature
from trueup.sinks.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

SECRET_VAR = "TRUEUP_TEST_HOOK_SECRET"  # noqa: S105 - a variable's name


@pytest.fixture
def stream(nats_url: str, stream_names: tuple[str, str]):
    yield stream_names
    with contextlib.suppress(NotFoundError):  # a daemon that never published made none
        asyncio.run(_delete_stream(nats_url, stream_names[0]))


def _events(receiver: Receiver, secret: str) -> list[dict]:
    """Every request received, its signature verified, as the JSON event it carries."""
    with receiver.lock:
        requests = list(receiver.requests)
    out = []
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        verify_signature(
            secret, request.body, headers.get(TIMESTAMP_HEADER.lower()), headers.get(SIGNATURE_HEADER.lower())
        )
        event = request.json()
        assert headers[EVENT_ID_HEADER.lower()] == event["id"]
        out.append(event)
    return out


def _raised(events: list[dict], kind: str) -> list[dict]:
    return [
        e
        for e in events
        if e["kind"] == "DISCREPANCY" and e["data"]["kind"] == kind and e["data"]["lifecycle"] == "raised"
    ]


def _cycles(daemon: Daemon) -> float:
    return (
        sample(
            daemon.metrics(),
            "trueup_reconciliation_cycles_total",
            account="PAPER",
            trigger="periodic",
            outcome="ok",
        )
        or 0
    )


def test_trueup_run_delivers_a_shifted_position_to_its_webhook_and_nats_once(
    tmp_path: Path, receiver: Receiver, nats_url: str, stream: tuple[str, str]
) -> None:
    name, prefix = stream
    secret = secrets.token_hex(16)
    extra = f"""
[sinks.webhook]
url = "{receiver.url}/hook"
secret_env = "{SECRET_VAR}"
[sinks.nats]
servers = ["{nats_url}"]
stream = "{name}"
subject_prefix = "{prefix}"
"""
    daemon = Daemon(paper_config(tmp_path, startup_delay=0, extra=extra), env={SECRET_VAR: secret})
    try:
        wait_for("/readyz 200", lambda: get(daemon.base + "/readyz")[0] == 200, timeout=30)
        shift(tmp_path, "AAPL", 10)
        wait_for(
            "the webhook to receive the raised discrepancy",
            lambda: _raised(_events(receiver, secret), "MISSING_LOCAL_POSITION"),
            timeout=30,
        )
        # More cycles see the same open problem: one alarm, never re-sent each cycle.
        seen = _cycles(daemon)
        wait_for("three more periodic cycles", lambda: _cycles(daemon) >= seen + 3, timeout=30)
        events = _events(receiver, secret)
        raised = _raised(events, "MISSING_LOCAL_POSITION")
        assert len(raised) == 1, raised
        assert raised[0]["account"] == "PAPER"
        assert raised[0]["data"]["key"] == "AAPL"
        repeated = [i for i, n in Counter(e["id"] for e in events).items() if n > 1]
        assert repeated == []
        # NATS, on a connection of its own: the same event, once, on its subject.
        on_nats = wait_for(
            "the event in the JetStream stream",
            lambda: [m for m in read_stream(nats_url, name) if m[1] == raised[0]["id"]],
            timeout=30,
        )
        assert len(on_nats) == 1
        assert on_nats[0][0] == f"{prefix}.PAPER.discrepancy"
        assert on_nats[0][2] == raised[0]
        assert Counter(m[1] for m in read_stream(nats_url, name)).most_common(1)[0][1] == 1
        metrics = daemon.metrics()
        for sink in ("sink-webhook", "sink-nats"):
            assert sample(metrics, "trueup_sink_dead_letters_total", sink=sink) == 0
            assert (sample(metrics, "trueup_sink_delivered_total", sink=sink) or 0) >= len(raised)
            assert sample(metrics, "trueup_sink_running", sink=sink) == 1
            assert sample(metrics, "trueup_sink_restarts_total", sink=sink) == 0
            assert sample(metrics, "trueup_sink_lag_events", sink=sink) is not None
        assert daemon.terminate(timeout=30) == 0
    finally:
        daemon.kill()
    lines = [json.loads(line) for line in daemon.lines]
    assert secret not in "\n".join(daemon.lines)
    stopped = {line["message"].split()[1] for line in lines if " stopped at log position " in line["message"]}
    assert stopped == {"sink-webhook", "sink-nats"}  # both joined before the daemon's exit
    assert lines[-1]["message"] == "stopped"


def test_a_dead_letter_of_a_hosted_sink_is_counted_on_the_daemons_metrics(
    tmp_path: Path, receiver: Receiver
) -> None:
    secret = secrets.token_hex(16)
    receiver.statuses = [400, 400]  # the first event is refused twice: max_attempts
    extra = f"""
[sinks.webhook]
url = "{receiver.url}/hook"
secret_env = "{SECRET_VAR}"
max_attempts = 2
"""
    daemon = Daemon(paper_config(tmp_path, startup_delay=0, extra=extra), env={SECRET_VAR: secret})
    try:
        assert sample(daemon.metrics(), "trueup_sink_dead_letters_total", sink="sink-webhook") == 0
        wait_for(
            "the dead letter on /metrics",
            lambda: sample(daemon.metrics(), "trueup_sink_dead_letters_total", sink="sink-webhook") == 1,
            timeout=30,
        )
        # The dead letter is a discrepancy in the log, and the sink moved on: it delivers it.
        dead = wait_for(
            "the DEAD_LETTER discrepancy at the webhook",
            lambda: _raised(_events(receiver, secret), "DEAD_LETTER"),
            timeout=30,
        )
        assert dead[0]["data"]["key"].startswith("sink-webhook@")
        assert sample(daemon.metrics(), "trueup_sink_running", sink="sink-webhook") == 1
        assert daemon.terminate(timeout=30) == 0
    finally:
        daemon.kill()


def test_run_refuses_a_sink_secret_that_is_not_set_before_opening_anything(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = paper_config(
        tmp_path, extra='[sinks.webhook]\nurl = "http://127.0.0.1:9/hook"\nsecret_env = "NO_SUCH_HOOK_VAR"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_HOOK_VAR"}
    result = subprocess.run(  # noqa: S603 - our interpreter, our command
        [sys.executable, "-m", "trueup.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "sinks.webhook.secret_env: environment variable NO_SUCH_HOOK_VAR is not set" in result.stderr
    assert not (tmp_path / "trueup.db").exists()
    # an apprise URL apprise refuses: named by its position and scheme, never shown
    config = paper_config(tmp_path, extra='[sinks.alerts]\nurls_env = "HOOK_URLS"\n')
    env["HOOK_URLS"] = "nosuchscheme://tok3n@host"
    result = subprocess.run(  # noqa: S603 - our interpreter, our command
        [sys.executable, "-m", "trueup.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "sinks.alerts.urls_env: apprise does not accept URL #1 of HOOK_URLS (nosuchscheme://...)" in (
        result.stderr
    )
    assert "tok3n" not in result.stderr
    assert not (tmp_path / "trueup.db").exists()


# -- the supervisor, in process ------------------------------------------------------------


def test_a_sink_that_fails_to_start_is_restarted_with_backoff_and_counted(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Building the sink fails twice (its client, its table): the host logs, counts, retries."""
    failures = [RuntimeError("first build fails"), OSError("second build fails")]
    secret = "k" * 16

    def build(_store: object) -> WebhookSink:
        if failures:
            raise failures.pop(0)
        return WebhookSink(WebhookConfig(url=receiver.url + "/hook", secret=secret))

    with Ledger.open(f"sqlite:///{tmp_path / 'host.db'}") as ledger:
        ledger.begin_startup("A")  # something in the log to deliver
        metrics = Metrics(["A"], sinks=["sink-webhook"])
        host = SinkHost(
            ledger,
            [SinkPlan("webhook", "sink-webhook", 3, "beginning", build)],
            metrics,
            restart_backoff=Backoff(first=0.01, most=0.05),
        )
        metrics.sink_positions = host.positions
        host.start()
        try:
            wait_for("a delivery after two restarts", lambda: receiver.requests, timeout=30)
            assert host.restarts == {"sink-webhook": 2}
            metrics.refresh(ledger)
            text = metrics.exposition().decode()
            assert sample(text, "trueup_sink_restarts_total", sink="sink-webhook") == 2
            assert sample(text, "trueup_sink_running", sink="sink-webhook") == 1
            wait_for(
                "the lag at 0",
                lambda: (
                    metrics.refresh(ledger)
                    or sample(metrics.exposition().decode(), "trueup_sink_lag_events", sink="sink-webhook")
                    == 0
                ),
                timeout=30,
            )
        finally:
            host.stop()
        assert not any(t.is_alive() for t in host.threads)
        assert sample(metrics.exposition().decode(), "trueup_sink_running", sink="sink-webhook") == 0
