"""Broker clients for the configured accounts, credentials read from the named variables.

Each real adapter's ``from_env`` reads its standard variable names; the config names other
variables, so the values are copied under the standard names into a mapping handed to
``from_env`` (never into ``os.environ``, never logged). The paper broker needs none.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from trueup.operations.config import (
    AccountSettings,
    AlpacaAccount,
    IbAccount,
    KiteAccount,
    PaperAccount,
)

__all__ = ["close_broker", "make_broker", "secret_values"]


def _environ(pairs: dict[str, str | None]) -> dict[str, str]:
    """Standard variable name -> value of the configured variable (unset ones left out)."""
    return {std: os.environ[name] for std, name in pairs.items() if name and os.environ.get(name)}


def make_broker(settings: AccountSettings) -> Any:  # noqa: ANN401 - a BrokerClient of some adapter
    """The broker client for one account (adapters imported only when configured: optional extras).

    Raises:
        ImportError: the adapter's extra is not installed.
        ConfigError: a credential is missing (named, never its value).
    """
    account = settings.account
    if isinstance(account, PaperAccount):
        from trueup.adapters.paper.broker import PaperBroker  # noqa: PLC0415
        from trueup.adapters.paper.faults import FaultPlan  # noqa: PLC0415

        faults = account.faults
        return PaperBroker(
            account.state,
            account=account.account_id,
            seed=account.seed,
            symbols=account.symbols,
            faults=FaultPlan(
                drop=faults.drop,
                duplicate=faults.duplicate,
                delay=faults.delay,
                reorder=faults.reorder,
                max_delay=faults.max_delay,
                reorder_window=faults.reorder_window,
            ),
        )
    if isinstance(account, AlpacaAccount):
        from trueup.adapters.alpaca.client import AlpacaClient  # noqa: PLC0415

        c = account.credentials
        env = _environ(
            {
                "APCA_API_KEY_ID": c.api_key,
                "APCA_API_SECRET_KEY": c.secret_key,
                "APCA_API_BASE_URL": c.base_url,
                "APCA_API_STREAM_URL": c.stream_url,
                "APCA_PAPER": c.paper,
            }
        )
        return AlpacaClient.from_env(account.account_id, environ=env, lookback=settings.timings.lookback)
    if isinstance(account, KiteAccount):
        from trueup.adapters.kite.client import KiteClient  # noqa: PLC0415

        k = account.credentials
        env = _environ(
            {
                "KITE_API_KEY": k.api_key,
                "KITE_ACCESS_TOKEN": k.access_token,
                "KITE_API_SECRET": k.api_secret,
                "KITE_ROOT": k.root,
            }
        )
        return KiteClient.from_env(account.account_id, environ=env, lookback=settings.timings.lookback)
    if isinstance(account, IbAccount):
        from trueup.adapters.ib.client import IbClient  # noqa: PLC0415

        i = account.credentials
        env = _environ({"IB_HOST": i.host, "IB_PORT": i.port, "IB_CLIENT_ID": i.client_id})
        return IbClient.from_env(account.account_id, environ=env, lookback=settings.timings.lookback)
    msg = f"no adapter for {type(account).__name__}"  # pragma: no cover - the union is closed
    raise TypeError(msg)


def secret_values(names: dict[str, str]) -> set[str]:
    """The values of the named variables that are secrets (masked in every log line)."""
    secret_keys = {
        "api_key",
        "secret_key",
        "access_token",
        "api_secret",
        "store_env",
        "secret_env",  # [sinks.webhook]: the signing key
        "urls_env",  # [sinks.alerts]: apprise URLs carry tokens
        "servers_env",  # [sinks.nats]: server URLs with credentials
    }
    return {
        os.environ[name]
        for key, name in names.items()
        if key.rsplit(".", 1)[-1] in secret_keys and len(os.environ.get(name, "")) >= 4
    }


async def close_broker(client: object) -> None:
    """Close a client whatever its close is (sync, async or none)."""
    closed = getattr(client, "close", lambda: None)()
    if inspect.isawaitable(closed):
        await closed
