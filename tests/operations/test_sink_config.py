"""The `[sinks.*]` config tables: every error with its exact message, secrets as names, the template."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import msgspec
import pytest

from trueup import ConfigError
from trueup.operations.brokers import secret_values
from trueup.operations.config import missing_env, parse_config
from trueup.operations.reference import starting_file
from trueup.operations.sinks import plan_sinks, sink_problems
from trueup.sinks import AlertSink, NatsSink, WebhookSink


def with_sinks(**sinks: Any) -> dict[str, Any]:
    return {"accounts": {"p": {"broker": "paper", "account_id": "P1"}}, "sinks": sinks}


ERRORS = [
    (with_sinks(webhook={}), "sinks.webhook.url: required setting is missing"),
    (
        with_sinks(webhook={"url": "ftp://h/x"}),
        "sinks.webhook: url must be http(s)://HOST/PATH, got 'ftp://h/x'",
    ),
    (
        with_sinks(webhook={"url": "http://h/", "secret_env": "my secret"}),
        "sinks.webhook.secret_env: must match ^[A-Za-z_][A-Za-z0-9_]*$, got 'my secret'",
    ),
    (with_sinks(webhook={"url": "http://h/", "timeout": 0}), "sinks.webhook.timeout: must be > 0, got 0"),
    (with_sinks(nats={"max_attempts": 0}), "sinks.nats.max_attempts: must be >= 1, got 0"),
    (
        with_sinks(nats={"kinds": ["ORDERS"]}),
        (
            "sinks.nats.kinds[0]: must be one of ORDER_UPDATED, POSITION_SYNCED, DISCREPANCY, GATE_CHANGED, "
            "got 'ORDERS'"
        ),
    ),
    (with_sinks(nats={"kinds": []}), "sinks.nats.kinds: must not be empty, got []"),
    (with_sinks(nats={"servers": []}), "sinks.nats.servers: must not be empty, got []"),
    (
        with_sinks(nats={"servers": ["nats://user:hunter2@h:4222"]}),
        (
            "sinks.nats: servers[0] has credentials, refused here (they would be shown); "
            "name a variable holding the URLs with servers_env"
        ),
    ),
    (
        with_sinks(nats={"servers": ["http://h:4222"]}),
        "sinks.nats: servers[0] must be nats://HOST:PORT (or tls, ws, wss), got 'http://h:4222'",
    ),
    (with_sinks(nats={"stream": "A.B"}), "sinks.nats.stream: must match ^[A-Za-z0-9_-]+$, got 'A.B'"),
    (with_sinks(nats={"strem": "X"}), "sinks.nats.strem: unknown setting (did you mean stream?)"),
    (with_sinks(slack={}), "sinks.slack: unknown setting"),
    (
        with_sinks(alerts={"min_severity": "LOUD"}),
        "sinks.alerts.min_severity: must be one of INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
    ),
    (
        with_sinks(alerts={"start": "now"}),
        "sinks.alerts.start: must be one of beginning, end, got 'now'",
    ),
    (
        with_sinks(nats={}, webhook={"url": "http://h/", "consumer": "sink-nats"}),
        "sinks: consumer names must differ between sinks, got ['sink-nats', 'sink-nats']",
    ),
]


@pytest.mark.parametrize(("raw", "message"), ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_each_wrong_sink_setting_names_key_value_and_bound(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value)


def test_sink_secrets_are_names_shown_as_stars_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_KEY", "whsec-value-1")
    monkeypatch.setenv("ALERT_URLS", "json://127.0.0.1:9/tok3n, json://127.0.0.1:9/other")
    monkeypatch.delenv("NATS_URLS", raising=False)
    config = parse_config(
        with_sinks(
            webhook={"url": "http://u:pw1@h/x", "secret_env": "HOOK_KEY"},
            alerts={"urls_env": "ALERT_URLS"},
            nats={"servers_env": "NATS_URLS"},
        )
    )
    shown = config.describe()["sinks"]
    assert shown["webhook"]["secret_env"] == {"env": "HOOK_KEY", "value": "***"}
    assert shown["webhook"]["url"] == "http://u:***@h/x"
    assert shown["alerts"]["urls_env"] == {"env": "ALERT_URLS", "value": "***"}
    assert shown["nats"]["servers_env"] == {"env": "NATS_URLS", "value": "(not set)"}
    text = msgspec.json.encode(config.describe()).decode()
    for secret in ("whsec-value-1", "tok3n", "pw1"):
        assert secret not in text
    assert missing_env(config) == ["sinks.nats.servers_env: environment variable NATS_URLS is not set"]
    assert {"whsec-value-1", "json://127.0.0.1:9/tok3n, json://127.0.0.1:9/other"} <= secret_values(
        config.env_names()
    )


def test_plan_sinks_builds_each_sink_from_its_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    environ = {"HOOK_KEY": "k" * 12, "ALERT_URLS": "json://127.0.0.1:9/a json://127.0.0.1:9/b"}
    config = parse_config(
        with_sinks(
            webhook={"url": "http://127.0.0.1:9/x", "secret_env": "HOOK_KEY", "max_attempts": 3},
            alerts={"urls_env": "ALERT_URLS", "min_severity": "WARNING"},
            nats={"servers": ["nats://127.0.0.1:4222"], "kinds": ["DISCREPANCY"], "consumer": "n1"},
        )
    )
    plans = {p.table: p for p in plan_sinks(config, environ)}
    assert {t: (p.consumer, p.max_attempts, p.start) for t, p in plans.items()} == {
        "nats": ("n1", 5, "beginning"),
        "webhook": ("sink-webhook", 3, "beginning"),
        "alerts": ("sink-alerts", 8, "end"),
    }
    from trueup import Ledger

    with Ledger.open(f"sqlite:///{tmp_path / 's.db'}") as ledger:
        nats = plans["nats"].build(ledger.store)
        webhook = plans["webhook"].build(ledger.store)
        alerts = plans["alerts"].build(ledger.store)
    assert isinstance(nats, NatsSink)
    assert nats.config.kinds == frozenset({"DISCREPANCY"})
    assert isinstance(webhook, WebhookSink)
    assert webhook.config.secret == "k" * 12
    assert isinstance(alerts, AlertSink)
    assert alerts.config.urls == (
        "json://127.0.0.1:9/a",
        "json://127.0.0.1:9/b",
    )
    assert alerts.config.min_severity == "WARNING"
    assert sink_problems(config, {**environ, "ALERT_URLS": "nosuch://x"}) == [
        "sinks.alerts.urls_env: apprise does not accept URL #1 of ALERT_URLS (nosuch://...)"
    ]


@pytest.mark.parametrize("preset", ["conservative", "paper"])
def test_the_starting_file_documents_the_sinks_and_they_parse_uncommented(preset: str) -> None:
    text = starting_file(preset)
    block = text[text.index("# [sinks.nats]") :]
    uncommented = re.sub(r"^# ?", "", block, flags=re.MULTILINE)
    config = parse_config(tomllib.loads(text + "\n" + uncommented))
    assert set(config.file.sinks.configured()) == {"nats", "webhook", "alerts"}
    assert config.file.sinks.webhook is not None
    assert config.file.sinks.webhook.secret_env == "TRUEUP_WEBHOOK_SECRET"  # noqa: S105 - a variable's name
