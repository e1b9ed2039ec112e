"""Blocking ledger calls from asyncio code: always in a worker thread, never on the loop.

Every ledger call is a database transaction (an fsync on SQLite, a round trip on
PostgreSQL); made on the event loop it would stall the broker's stream, heartbeats and
every other task for its whole duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def in_worker_thread(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a blocking call in a worker thread and return its result.

    A thread cannot be interrupted: if the awaiting task is cancelled, wait for the call
    to finish before passing the cancellation on, so that whoever cancelled may close the
    ledger without a write still running under it.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn; the cancellation wins
        raise
