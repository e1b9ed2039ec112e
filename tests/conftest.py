"""Shared fixtures: a store URL per backend (memory, SQLite file, PostgreSQL on 127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import watchdog

os.environ.setdefault("EVENTSOURCING_DISABLE_REDEFINITION_CHECK", "y")

POSTGRES_URL = os.environ.get("TRUEUP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL.replace("postgresql://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def make_store_url(kind: str, tmp_path: Path) -> str:
    """A fresh, empty store of the given kind."""
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'trueup.db'}"
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return f"{POSTGRES_URL}?schema={schema}"


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store on each backend; PostgreSQL schemas are dropped afterwards."""
    url = make_store_url(request.param, tmp_path)
    yield url
    if request.param == "postgres":
        _drop_schema(url.rsplit("schema=", 1)[1])


_WATCHDOG = watchdog.from_env()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Dump every thread and task of a test that overruns the watchdog's deadline (tests/watchdog.py)."""
    if _WATCHDOG is not None:
        _WATCHDOG.started(item.nodeid)
    try:
        yield
    finally:
        if _WATCHDOG is not None:
            _WATCHDOG.finished()
