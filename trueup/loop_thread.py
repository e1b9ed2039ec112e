"""One event loop in a thread of its own, for synchronous code that calls async brokers.

ib_async binds its `IB` object (and trueup's IB connection binds its locks and queues)
to the event loop it first runs in. ``asyncio.run`` per call makes a new loop each
time: the first call's connection is left on a closed loop, and the second call fails
with "bound to a different event loop". A `LoopThread` keeps one loop running for the
life of its owner (a `Ledger`), so every synchronous call reaches the broker on the same
loop, and the broker's callbacks keep being read between calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running one event loop; `run` executes a coroutine on it and waits."""

    def __init__(self, name: str = "trueup-loop") -> None:
        """Create it; the thread starts on the first `run`."""
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started if needed)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and return its result (or raise its exception).

        Raises:
            RuntimeError: called from the loop's own thread (it would wait for itself):
                from async code, await the async method instead.
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            coroutine.close()
            msg = "a synchronous trueup call was made on trueup's own event loop: await the async method"
            raise RuntimeError(msg)
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()

    def close(self) -> None:
        """Cancel what still runs, stop the loop and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
