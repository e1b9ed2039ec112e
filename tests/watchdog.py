"""A test watchdog: when a test runs past a deadline, dump every thread and every asyncio task.

A hang in a test is a hang a user's daemon would have. pytest-timeout kills a stuck test
after the fact; this dumps, while the test is still stuck, where each thread stands
(faulthandler) and where each task of each running event loop is awaiting, so the cause
can be read from the log of the one run in a hundred that stalls.

Enabled by `tests/conftest.py` for every test; `TRUEUP_TEST_WATCHDOG` sets the deadline in
seconds (default 120; 0 disables it). Dumps go to stderr, or to the file named by
`TRUEUP_TEST_WATCHDOG_FILE`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

DEFAULT_DEADLINE = 120.0


def running_loops() -> list[asyncio.AbstractEventLoop]:
    """Every event loop of the process that is running now (found through the collector)."""
    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]


def dump_tasks(out: TextIO) -> None:
    """Write each pending task of each running loop with the stack it is suspended in."""
    for loop in running_loops():
        for _attempt in range(5):  # the set may change under us: the loop runs in another thread
            try:
                tasks = list(asyncio.all_tasks(loop))
                break
            except RuntimeError:
                continue
        else:
            tasks = []
        out.write(f"--- event loop {loop!r}: {len(tasks)} tasks\n")
        for task in tasks:
            buffer = io.StringIO()
            try:
                task.print_stack(file=buffer)
            except Exception as e:  # noqa: BLE001 - diagnostics only: say why and go on
                buffer.write(f"(stack unavailable: {type(e).__name__}: {e})\n")
            out.write(f"{task!r}\n{buffer.getvalue()}")
            coro = task.get_coro()
            awaited = getattr(coro, "cr_await", None)
            while awaited is not None:  # the chain below the task's own frame (futures, sleeps)
                out.write(f"    awaiting {awaited!r}\n")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)


def dump_all(why: str, out: TextIO | None = None) -> None:
    """Dump every thread (faulthandler) and every asyncio task, headed by `why`."""
    target = out or _target()
    target.write(f"\n===== watchdog: {why} =====\n")
    target.flush()
    faulthandler.dump_traceback(file=target, all_threads=True)
    dump_tasks(target)
    target.write("===== end of watchdog dump =====\n")
    target.flush()
    if out is None and target is not sys.stderr:
        target.close()


def _target() -> TextIO:
    path = os.environ.get("TRUEUP_TEST_WATCHDOG_FILE")
    return Path(path).open("a", encoding="utf-8") if path else sys.stderr


class Watchdog:
    """One daemon thread watching the running test; dumps once per test that overruns."""

    def __init__(self, deadline: float) -> None:
        """Dump a test still running after `deadline` seconds."""
        self.deadline = deadline
        self._lock = threading.Lock()
        self._current: tuple[str, float] | None = None
        self._dumped: set[str] = set()
        self._thread = threading.Thread(target=self._watch, name="test-watchdog", daemon=True)
        self._thread.start()

    def started(self, test: str) -> None:
        """`test` starts now."""
        with self._lock:
            self._current = (test, time.monotonic())

    def finished(self) -> None:
        """The running test ended."""
        with self._lock:
            self._current = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.deadline / 4))
            with self._lock:
                current = self._current
            if current is None:
                continue
            test, since = current
            if test not in self._dumped and time.monotonic() - since > self.deadline:
                self._dumped.add(test)
                dump_all(f"{test} still running after {self.deadline:g}s")


def from_env() -> Watchdog | None:
    """The watchdog `TRUEUP_TEST_WATCHDOG` asks for (None if disabled)."""
    deadline = float(os.environ.get("TRUEUP_TEST_WATCHDOG", DEFAULT_DEADLINE))
    return Watchdog(deadline) if deadline > 0 else None
