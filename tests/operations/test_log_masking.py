"""`trueup run`'s logs never carry a configured secret's value, in text or JSON.

Unit: `setup_logging` with the secrets `trueup run` derives from the config
(`secret_values(config.env_names())`) masks them wherever a record would carry them: the
message, its arguments, an exception and its traceback, one line per event. End to end:
`trueup run` at DEBUG against the local fake Alpaca (REST errors that echo the request's
headers, as some gateways do) and the fake trade_updates stream (the SDK's websocket
library logs its frames at DEBUG, the authentication frame with key and secret included):
the secret appears in no line of either log format.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import fake_alpaca, fake_alpaca_stream
from tests.e2e.fake_alpaca import FakeAlpaca
from tests.e2e.fake_alpaca_stream import FakeAlpacaStream
from tests.operations.running import Daemon, wait_for
from trueup.operations.brokers import secret_values
from trueup.operations.config import parse_config
from trueup.operations.logs import setup_logging

KEY, SECRET = "PKMASKKEY0001", "mask-s3cr3t-value-never-logged"
TOKEN = "kite-token-never-logged-42"  # noqa: S105 - a test's made-up secret
STORE_PASSWORD = "store-pw-never-logged"  # noqa: S105 - a test's made-up secret


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was (setup_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = {name: logging.getLogger(name).level for name in ("websockets", "aiohttp.access")}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, was in quieted.items():
        logging.getLogger(name).setLevel(was)


def configured_secrets(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    monkeypatch.setenv("MASK_KEY", KEY)
    monkeypatch.setenv("MASK_SECRET", SECRET)
    monkeypatch.setenv("MASK_TOKEN", TOKEN)
    monkeypatch.setenv("MASK_STORE", f"postgresql://trueup:{STORE_PASSWORD}@127.0.0.1:5432/books")
    config = parse_config(
        {
            "store_env": "MASK_STORE",
            "accounts": {
                "a": {
                    "broker": "alpaca",
                    "account_id": "PA1",
                    "credentials": {"api_key": "MASK_KEY", "secret_key": "MASK_SECRET"},
                },
                "k": {"broker": "kite", "account_id": "K1", "credentials": {"access_token": "MASK_TOKEN"}},
            },
        }
    )
    return secret_values(config.env_names())


def refuse() -> None:
    msg = f"broker refused:\nheaders {{'APCA-API-SECRET-KEY': '{SECRET}'}}"
    raise RuntimeError(msg)


def log_everything(secrets: set[str]) -> None:
    log = logging.getLogger("trueup.test.masking")
    log.info("connecting with key %s and secret %s", KEY, SECRET)
    log.warning("token rotated: %r", {"access_token": TOKEN})
    log.info("store %s", f"postgresql://trueup:{STORE_PASSWORD}@127.0.0.1:5432/books")
    try:
        refuse()
    except RuntimeError:
        log.exception("the broker raised with %s", SECRET)
    assert len(secrets) == 4


@pytest.mark.parametrize("as_json", [False, True])
def test_every_configured_secret_is_masked_in_each_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root_logging: None, as_json: bool
) -> None:
    secrets = configured_secrets(monkeypatch)
    setup_logging("INFO", as_json=as_json, secrets=secrets)
    log_everything(secrets)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 4  # one line per event, the traceback's included
    for secret in (KEY, SECRET, TOKEN, STORE_PASSWORD):
        assert secret not in err
    assert err.count("***") >= 6
    if as_json:
        records = [json.loads(line) for line in lines]  # every line is a JSON document
        assert records[0]["message"] == "connecting with key *** and secret ***"
        assert "RuntimeError: broker refused" in records[3]["error"]
        assert "Traceback" in records[3]["error"]
    else:
        assert lines[0].endswith("trueup.test.masking: connecting with key *** and secret ***")
        assert "RuntimeError: broker refused:\\nheaders" in lines[3]


def test_without_the_secrets_the_same_records_would_carry_them(
    capsys: pytest.CaptureFixture[str], root_logging: None
) -> None:
    """The premise: the records above do carry every secret when nothing masks them."""
    setup_logging("INFO", as_json=True, secrets=())
    log_everything({KEY, SECRET, TOKEN, STORE_PASSWORD})
    err = capsys.readouterr().err
    for secret in (KEY, SECRET, TOKEN, STORE_PASSWORD):
        assert secret in err


# -- end to end: trueup run ---------------------------------------------------------------------


@pytest.fixture
def alpaca() -> Iterator[tuple[FakeAlpaca, FakeAlpacaStream]]:
    with fake_alpaca.running() as rest, fake_alpaca_stream.running() as stream:
        rest.echo_headers = True
        rest.fail("GET", "/v2/positions", status=500, times=1000)  # every cycle: an echoed error
        yield rest, stream


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_trueup_run_never_logs_a_configured_secret(
    tmp_path: Path, alpaca: tuple[FakeAlpaca, FakeAlpacaStream], log_format: str
) -> None:
    rest, stream = alpaca
    config = tmp_path / "trueup.toml"
    config.write_text(
        f"""preset = "aggressive"
store = "sqlite:///{tmp_path / "trueup.db"}"
log_format = "{log_format}"
log_level = "DEBUG"
period = 0.3
[http]
port = 0
[accounts.a]
broker = "alpaca"
account_id = "ALPACA"
credentials = {{ api_key = "MY_KEY", secret_key = "MY_SECRET", base_url = "MY_URL", stream_url = "MY_STREAM" }}
"""
    )
    env = {"MY_KEY": KEY, "MY_SECRET": SECRET, "MY_URL": rest.url, "MY_STREAM": stream.url}
    daemon = Daemon(config, env=env)
    try:
        wait_for("a failed positions query logged", lambda: any("positions" in x for x in daemon.lines), 60)
        wait_for("the stream to authenticate", lambda: stream.connections >= 1, 60)
        started = time.monotonic()
        wait_for("two cycles more", lambda: time.monotonic() - started > 1.0, 10)
        assert daemon.terminate(timeout=60) == 0
    finally:
        daemon.kill()
    assert len(daemon.lines) > 5
    text = "\n".join(daemon.lines)
    # Not even a piece of one: a log line cut to length (the websocket library shortens the
    # frames it logs) would carry the secret's tail where no whole-value mask can find it.
    for secret in (SECRET, KEY):
        pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
        assert [p for p in pieces if p in text] == [], secret
    assert "***" in text  # something tried to carry a secret, and was masked
    if log_format == "json":
        for line in daemon.lines:
            json.loads(line)
