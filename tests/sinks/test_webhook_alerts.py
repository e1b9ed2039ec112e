"""Webhook sink against a local HTTP server (signatures verified), alerts through apprise's json:// target."""

from __future__ import annotations

import time

import pytest

from tests.builders import ACCOUNT, D, order_report
from tests.sinks.conftest import Receiver, busy_day, position, snapshot
from trueup import Ledger
from trueup.retry import Backoff
from trueup.sinks import (
    AlertsConfig,
    AlertSink,
    SignatureError,
    SinkRunner,
    SinkUnavailable,
    WebhookConfig,
    WebhookSink,
    verify_signature,
)
from trueup.sinks.webhook import signature

SECRET = "s3cret"  # noqa: S105 - a test key
FAST = Backoff(first=0.001, most=0.002)


def webhook(receiver: Receiver, **kw: object) -> WebhookSink:
    return WebhookSink(WebhookConfig(url=f"{receiver.url}/hook", secret=SECRET, timeout=5, **kw))  # type: ignore[arg-type]


def test_each_event_is_posted_signed_and_the_receiver_verifies_it(ledger: Ledger, receiver: Receiver) -> None:
    busy_day(ledger)
    runner = SinkRunner(ledger, webhook(receiver))
    runner.run_once()
    assert runner.delivered == len(receiver.requests) > 0
    for request in receiver.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        verify_signature(SECRET, request.body, headers["x-trueup-timestamp"], headers["x-trueup-signature"])
        assert headers["x-trueup-event-id"] == request.json()["id"]
    kinds = [r.json()["kind"] for r in receiver.requests]
    assert kinds.count("ORDER_UPDATED") == 3


def test_verification_refuses_a_tampered_body_a_wrong_secret_and_a_replay() -> None:
    body, now = b'{"kind":"ORDER_UPDATED"}', time.time()
    stamp = str(int(now))
    good = signature(SECRET, stamp, body)
    verify_signature(SECRET, body, stamp, good, now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body + b" ", stamp, good, now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("other", body, stamp, good, now=now)
    with pytest.raises(SignatureError, match="replay window"):
        verify_signature(SECRET, body, stamp, good, now=now + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify_signature(SECRET, body, None, good, now=now)
    # The timestamp is signed: moving it forward breaks the signature.
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body, str(int(now) + 10), good, now=now)


def test_a_refused_event_is_dead_lettered_as_a_discrepancy_and_the_sink_moves_on(
    ledger: Ledger, receiver: Receiver
) -> None:
    busy_day(ledger, orders=1)
    receiver.statuses = [500, 500, 500]  # the receiver's handler fails on the first event, 3 times
    runner = SinkRunner(ledger, webhook(receiver), max_attempts=3, backoff=FAST)
    runner.run_once()
    runner.run_once()  # the dead letter's own discrepancy is delivered too
    first_id = receiver.requests[0].json()["id"]
    assert [r.json()["id"] for r in receiver.requests[:3]] == [first_id] * 3
    assert runner.dead_letters == 1
    [dead] = [d for d in ledger.discrepancies() if d.kind == "DEAD_LETTER"]
    assert dead.account == ACCOUNT
    assert dead.key.startswith("sink-webhook@")
    assert "500" in dead.actual
    assert "failed 3 times" in dead.actual
    delivered = [r.json() for r in receiver.requests[3:]]
    assert first_id not in [d["id"] for d in delivered]
    assert any(d["kind"] == "DISCREPANCY" and d["data"]["kind"] == "DEAD_LETTER" for d in delivered)


def test_an_unavailable_receiver_is_retried_without_limit_and_nothing_is_dead_lettered(
    ledger: Ledger, receiver: Receiver
) -> None:
    busy_day(ledger, orders=1)
    receiver.statuses = [503] * 5
    runner = SinkRunner(ledger, webhook(receiver), max_attempts=1, backoff=FAST)
    for _ in range(5):
        with pytest.raises(SinkUnavailable, match="503"):
            runner.run_once()
    runner.run_once()
    assert runner.dead_letters == 0
    assert [d for d in ledger.discrepancies() if d.kind == "DEAD_LETTER"] == []


def test_a_webhook_config_refuses_a_missing_secret_and_hides_it() -> None:
    from trueup.domain.errors import ConfigError

    with pytest.raises(ConfigError, match="secret"):
        WebhookConfig(url="http://127.0.0.1/x", secret="")
    assert SECRET not in repr(WebhookConfig(url="http://127.0.0.1/x", secret=SECRET))


# -- alerts ----------------------------------------------------------------------------------


def alerts(ledger: Ledger, receiver: Receiver, **kw: object) -> SinkRunner:
    config = AlertsConfig(
        urls=(f"json://127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/alerts",), start="beginning", **kw
    )  # type: ignore[arg-type]
    return SinkRunner(ledger, AlertSink(config, ledger.store), backoff=FAST)


def titles(receiver: Receiver) -> list[str]:
    return [r.json()["title"] for r in receiver.requests]


def test_one_alert_per_discrepancy_lifecycle_never_one_per_cycle(ledger: Ledger, receiver: Receiver) -> None:
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.reconcile(
        snapshot(orders=[order_report("FILLED", filled=10, avg=100, ts=5)], positions=[]), policy="alert"
    )
    for _ in range(3):  # the same mismatch every cycle
        ledger.reconcile(snapshot(orders=[], positions=[]), policy="alert")
    runner = alerts(ledger, receiver)
    runner.run_once()
    naked = [t for t in titles(receiver) if "NAKED_POSITION" in t]
    assert naked == [f"[trueup] {ACCOUNT} AAPL: CRITICAL NAKED_POSITION raised"]
    body = next(r.json()["message"] for r in receiver.requests if "NAKED_POSITION" in r.json()["title"])
    assert f"Account: {ACCOUNT}" in body
    assert "Order or symbol: AAPL" in body
    assert "We expected: " in body
    assert "The broker said: " in body
    assert "trueup reconcile --broker BROKER --account DU123 --policy repair" in body
    # The broker agrees again: one "resolved", and running again sends nothing more.
    ledger.reconcile(snapshot(orders=[], positions=[position("AAPL", 10, 100)]), policy="alert")
    runner.run_once()
    runner.run_once()
    naked = [t for t in titles(receiver) if "NAKED_POSITION" in t]
    assert naked[1:] == [f"[trueup] {ACCOUNT} AAPL: NAKED_POSITION resolved"]


def test_gate_blocked_and_back_are_alerted_once_each(ledger: Ledger, receiver: Receiver) -> None:
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.reconcile(
        snapshot(orders=[order_report("FILLED", filled=10, avg=100, ts=5)], positions=[]), policy="alert"
    )
    ledger.reconcile(snapshot(orders=[], positions=[position("AAPL", 10, 100)]), policy="alert")
    runner = alerts(ledger, receiver)
    runner.run_once()
    gate = [t for t in titles(receiver) if "gate" in t]
    assert gate == [
        f"[trueup] {ACCOUNT}: gate BLOCKED, new orders refused",
        f"[trueup] {ACCOUNT}: gate READY again, new orders allowed",
    ]


def test_below_the_configured_severity_nothing_is_sent_but_lost_and_dead_letters_always_are(
    ledger: Ledger, receiver: Receiver
) -> None:
    ledger.reconcile(snapshot(orders=[], positions=[position("TSLA", 5, 10)]), policy="alert")  # ERROR
    runner = alerts(ledger, receiver, min_severity="CRITICAL", gate=False)
    runner.run_once()
    assert titles(receiver) == []


def test_a_restart_does_not_send_an_alert_twice(ledger: Ledger, receiver: Receiver) -> None:
    ledger.reconcile(snapshot(orders=[], positions=[position("TSLA", 5, 10)]), policy="alert")
    first = alerts(ledger, receiver, gate=False)
    first.run_once()
    sent = titles(receiver)
    assert len(sent) == 1
    # A consumer that lost its position (a crash before the save) re-reads the event: no second alert.
    with ledger.store.transaction() as cursor:
        cursor.execute("UPDATE trueup_consumers SET position = 0 WHERE name = 'sink-alerts'")
    alerts(ledger, receiver, gate=False).run_once()
    assert titles(receiver) == sent


def test_a_new_alert_sink_starts_at_the_end_of_the_log(ledger: Ledger, receiver: Receiver) -> None:
    ledger.reconcile(snapshot(orders=[], positions=[position("TSLA", 5, 10)]), policy="alert")
    config = AlertsConfig(urls=(f"json://127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/alerts",))
    runner = SinkRunner(ledger, AlertSink(config, ledger.store), start=config.start)
    assert runner.run_once() == 0
    assert receiver.requests == []


def test_dead_letters_are_alerted_whatever_the_minimum_severity(ledger: Ledger, receiver: Receiver) -> None:
    busy_day(ledger, orders=1)
    receiver.statuses = [500]
    SinkRunner(ledger, webhook(receiver), max_attempts=1, backoff=FAST).run_once()
    receiver.requests.clear()
    runner = alerts(ledger, receiver, min_severity="CRITICAL", gate=False)
    runner.run_once()
    dead = [r.json() for r in receiver.requests if "DEAD_LETTER" in r.json()["title"]]
    assert len(dead) == 1
    assert "sink-webhook" in dead[0]["message"]
    assert "To resolve: fix the sink's destination" in dead[0]["message"]


def test_a_discrepancy_seen_again_with_new_figures_each_cycle_alerts_once(
    ledger: Ledger, receiver: Receiver
) -> None:
    ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
    ledger.reconcile(
        snapshot(orders=[order_report("FILLED", filled=10, avg=100, ts=5)], positions=[]), policy="alert"
    )
    for n in range(3):  # the broker's figure differs each cycle: the open discrepancy is updated (Seen)
        ledger.reconcile(snapshot(orders=[], positions=[position("AAPL", n + 1, 100)]), policy="alert")
    assert sum(e.topic == "trueup:Discrepancy.Seen" for e in ledger.events()) >= 1
    alerts(ledger, receiver, gate=False).run_once()
    assert [t for t in titles(receiver) if "POSITION_MISMATCH" in t] == [
        f"[trueup] {ACCOUNT} AAPL: ERROR POSITION_MISMATCH raised"
    ]


def test_dead_letters_are_counted_in_the_prometheus_metric(ledger: Ledger, receiver: Receiver) -> None:
    from prometheus_client import REGISTRY

    def count() -> float:
        return REGISTRY.get_sample_value("trueup_sink_dead_letters_total", {"sink": "metric-hook"}) or 0.0

    before = count()
    busy_day(ledger, orders=1)
    receiver.statuses = [400]
    SinkRunner(ledger, webhook(receiver, consumer="metric-hook"), max_attempts=1, backoff=FAST).run_once()
    assert count() == before + 1
