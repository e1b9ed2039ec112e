"""Crash points: named places where a crash test may SIGKILL the process.

`TRUEUP_CRASH_AT=<point>:<n>` kills the process with SIGKILL the n-th time (1-based)
execution reaches `crash_point(<point>)`. Unset (always, outside crash tests), a crash
point is one dictionary lookup. The points are the moments of the submit path where a
real crash would hurt most:

- ``submit.before_broker_call``: the intent and SUBMITTED are stored, nothing sent.
- ``submit.after_broker_call``: the broker has the order, our acknowledgement is not stored.
- ``stream.before_ingest``: a fill arrived from the broker and is not ingested yet.
- ``ingest.mid_batch``: a batch of reports is decided but its transaction not committed.
- ``sink.after_deliver``: a sink delivered an event, its saved position does not show it yet.
"""

from __future__ import annotations

import os
import signal

_TARGET: tuple[str, int] | None = None
_SEEN: dict[str, int] = {}


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.rpartition(":")
    return (point, int(count)) if point and count.isdigit() else (value, 1)


_TARGET = _parse(os.environ.get("TRUEUP_CRASH_AT"))


def crash_point(name: str) -> None:
    """SIGKILL this process if TRUEUP_CRASH_AT names this point and its count is reached."""
    if _TARGET is None or _TARGET[0] != name:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
