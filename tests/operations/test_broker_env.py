"""The broker clients `trueup run` makes read the environment as `trueup reconcile --broker` does.

A variable the config names wins; a setting it names none for reads the standard
variable (IB_HOST, IB_PORT, IB_CLIENT_ID, APCA_API_BASE_URL, ...); unset, the default.
"""

from __future__ import annotations

from typing import Any

import pytest

from trueup import ConfigError
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.adapters.ib.client import DEFAULT_HOST, DEFAULT_PORT, IbClient
from trueup.operations.brokers import make_broker
from trueup.operations.config import parse_config

IB_VARS = ("IB_HOST", "IB_PORT", "IB_CLIENT_ID", "TWS_HOST", "TWS_PORT", "TWS_CLIENT")


def ib(credentials: dict[str, str] | None = None) -> IbClient:
    table: dict[str, Any] = {"broker": "ib", "account_id": "DU1"}
    if credentials is not None:
        table["credentials"] = credentials
    (settings,) = parse_config({"accounts": {"ib1": table}}).accounts
    return make_broker(settings)


def address(client: IbClient) -> tuple[str, int, int]:
    return client.host, client.port, client.client_id


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*IB_VARS, "APCA_API_BASE_URL", "MY_ALPACA_URL"):
        monkeypatch.delenv(name, raising=False)


def test_an_ib_account_without_named_variables_reads_ib_host_and_ib_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IB_HOST", "10.9.8.7")
    monkeypatch.setenv("IB_PORT", "4002")
    monkeypatch.setenv("IB_CLIENT_ID", "17")
    from_run = ib()
    assert address(from_run) == ("10.9.8.7", 4002, 17)
    # what `trueup reconcile --broker ib` builds from the same environment
    assert address(from_run) == address(IbClient.from_env("DU1"))


def test_a_variable_the_config_names_wins_over_the_standard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_HOST", "10.9.8.7")
    monkeypatch.setenv("IB_PORT", "4002")
    monkeypatch.setenv("TWS_HOST", "192.0.2.5")
    monkeypatch.setenv("TWS_PORT", "7496")
    assert address(ib({"host": "TWS_HOST", "port": "TWS_PORT"})) == ("192.0.2.5", 7496, 1)
    # a named variable that is unset is not replaced by the standard one: the default
    assert address(ib({"host": "TWS_HOST", "port": "TWS_PORT", "client_id": "TWS_CLIENT"}))[2] == 1


def test_nothing_set_means_the_adapters_defaults() -> None:
    assert address(ib()) == (DEFAULT_HOST, DEFAULT_PORT, 1)
    assert address(ib({"host": "TWS_HOST"})) == (DEFAULT_HOST, DEFAULT_PORT, 1)


def test_a_bad_port_in_the_standard_variable_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_PORT", "seventy")
    with pytest.raises(ConfigError, match=r"^IB_PORT must be an integer, got 'seventy'$"):
        ib()


def test_an_alpaca_account_reads_apca_api_base_url_like_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", "PKTEST000000")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "secret-test-000000")
    monkeypatch.setenv("APCA_API_BASE_URL", "http://127.0.0.1:1")
    (settings,) = parse_config({"accounts": {"a": {"broker": "alpaca", "account_id": "PA1"}}}).accounts
    client = make_broker(settings)
    try:
        assert client.url_override == "http://127.0.0.1:1"
        assert client.url_override == AlpacaClient.from_env("PA1").url_override
    finally:
        client.close()
    monkeypatch.setenv("MY_ALPACA_URL", "http://127.0.0.1:2")
    table = {"broker": "alpaca", "account_id": "PA1", "credentials": {"base_url": "MY_ALPACA_URL"}}
    (settings,) = parse_config({"accounts": {"a": table}}).accounts
    client = make_broker(settings)
    try:
        assert client.url_override == "http://127.0.0.1:2"  # the named variable wins
    finally:
        client.close()
