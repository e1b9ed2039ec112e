"""Store URLs: which store a URL names, parsed into the settings eventsourcing reads.

`resolve_store_url` picks the store (argument, ``TRUEUP_STORE``, `DEFAULT_STORE`);
`parse_store_url` turns it into a `StoreConfig` or refuses it naming the bad part;
`redact` hides a password for messages and logs. The URLs themselves are described in
`store.py`, which opens them; every name here is importable from there too.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from trueup.domain.errors import ConfigError

__all__ = [
    "DEFAULT_STORE",
    "POSTGRES_CONNECT_TIMEOUT_SECONDS",
    "POSTGRES_LOCK_TIMEOUT_SECONDS",
    "StoreConfig",
    "parse_store_url",
    "redact",
    "resolve_store_url",
]

DEFAULT_STORE = "sqlite:///trueup.db"
"""Store used when neither an argument nor TRUEUP_STORE names one."""

POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
"""An unreachable server is named within seconds, not after the pool's 30 s."""

POSTGRES_LOCK_TIMEOUT_SECONDS = "5"
"""A stuck writer must not block every writer forever."""


@dataclass(frozen=True)
class StoreConfig:
    """A parsed store URL: which backend, and the environment eventsourcing reads."""

    url: str
    dialect: str
    """"sqlite" or "postgres"."""
    env: Mapping[str, str]
    schema: str | None = None
    path: Path | None = None
    """SQLite file, when the store is a file."""
    postgres_conninfo: dict[str, Any] = field(default_factory=dict)


def resolve_store_url(url: str | None) -> str:
    """The store to open: the argument, else TRUEUP_STORE, else sqlite:///trueup.db."""
    return url or os.environ.get("TRUEUP_STORE") or DEFAULT_STORE


def parse_store_url(url: str) -> StoreConfig:
    """Turn a store URL into eventsourcing settings; raise ConfigError naming the bad part."""
    base_env = {"AGGREGATE_CACHE_MAXSIZE": "10000"}
    if url.startswith("memory://"):
        name = url.removeprefix("memory://") or uuid.uuid4().hex
        dbname = f"file:trueup-{name}?mode=memory&cache=shared"
        env = {**base_env, "PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": dbname}
        return StoreConfig(url=url, dialect="sqlite", env=env)
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        dbname = parts.path.lstrip("/") or "postgres"
        schema = parse_qs(parts.query).get("schema", [""])[0] or None
        conninfo = {
            "dbname": dbname,
            "host": parts.hostname or "127.0.0.1",
            "port": str(parts.port or 5432),
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password or "") or parse_qs(parts.query).get("password", [""])[0],
        }
        env = {
            **base_env,
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": conninfo["dbname"],
            "POSTGRES_HOST": conninfo["host"],
            "POSTGRES_PORT": conninfo["port"],
            "POSTGRES_USER": conninfo["user"],
            "POSTGRES_PASSWORD": conninfo["password"],
            "POSTGRES_LOCK_TIMEOUT": POSTGRES_LOCK_TIMEOUT_SECONDS,
            "POSTGRES_CONNECT_TIMEOUT": str(POSTGRES_CONNECT_TIMEOUT_SECONDS),
            # The stored-function insert path skips the table lock and tracking (gotcha 6).
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }
        if schema is not None:
            if not schema.replace("_", "").isalnum():
                msg = f"store URL schema must be letters, digits and _, got {schema!r}"
                raise ConfigError(msg)
            env["POSTGRES_SCHEMA"] = schema
        return StoreConfig(url=url, dialect="postgres", env=env, schema=schema, postgres_conninfo=conninfo)
    if "://" in url and not url.startswith("sqlite://"):
        msg = (
            f"store URL {url!r} is not supported: use sqlite:///path.db, "
            "postgresql://user@host:port/db or memory://"
        )
        raise ConfigError(msg)
    if url.startswith("sqlite://") and not url.startswith("sqlite:///"):
        # sqlite://rel.db would be a file under a directory named "sqlite:".
        rest = url.removeprefix("sqlite://")
        msg = (
            f"store URL {url!r} has two slashes: use sqlite:///{rest} (relative to the current "
            "directory) or sqlite:////absolute/path.db"
        )
        raise ConfigError(msg)
    # sqlite:///trueup.db is relative, sqlite:////var/lib/trueup.db absolute.
    path = Path(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)
    env = {**base_env, "PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    return StoreConfig(url=url, dialect="sqlite", env=env, path=path)


_QUERY_PASSWORD = re.compile(r"([?&;]password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@")
    # libpq also takes the password as a query parameter (`?password=...`).
    return _QUERY_PASSWORD.sub(r"\g<1>***", url)
