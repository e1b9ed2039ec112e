"""What one projector page works with: its rows, the states it knows, the writes it queues.

- `Row`: one stored event as read for projection, its columns undecoded.
- `StateCache`: order and position states carried from one page to the next, valid only
  while the tracking position proves nobody else wrote in between.
- `Page`: one page being applied: its states (cached, loaded or created), what it
  changed, and its row writes, queued in log order and flushed with one executemany per
  run of the same statement.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from trueup.adapters.eventstore.store import Cursor
from trueup.domain.order import Order, OrderState
from trueup.domain.position import Position, PositionState

STATE_CACHE_SIZE = 20_000
"""Order (and position) states kept between pages, least recently touched dropped first."""


class Row(msgspec.Struct, array_like=True):
    """One stored event as read for projection: its columns, undecoded."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


class StateCache:
    """Order and position states as of one log position, carried from page to page.

    Valid only for a page that starts exactly there: the tables are a function of the
    log up to the tracking position, so if the tracking row still holds the position we
    left it at, these are the states the tables hold. The states are mutable and a page
    mutates them, so a page takes them (emptying the cache) and gives them back only
    after it committed.
    """

    def __init__(self) -> None:
        self.position = -1
        self.orders: OrderedDict[str, OrderState] = OrderedDict()
        self.positions: OrderedDict[str, PositionState] = OrderedDict()

    def take(self, start: int) -> tuple[OrderedDict[str, OrderState], OrderedDict[str, PositionState]]:
        """The cached states for a page starting at `start` (empty if they are not as of it)."""
        valid = self.position == start
        orders, positions = self.orders, self.positions
        self.position, self.orders, self.positions = -1, OrderedDict(), OrderedDict()
        return (orders, positions) if valid else (OrderedDict(), OrderedDict())

    def keep(self, end: int, page: Page) -> None:
        """The states as of `end`, after the page ending there committed."""
        for states in (page.orders, page.positions):
            while len(states) > STATE_CACHE_SIZE:
                states.popitem(last=False)
        self.position, self.orders, self.positions = end, page.orders, page.positions

    def clear(self) -> None:
        """Forget every state (the tables were emptied)."""
        self.take(-2)


class Page:
    """One page being applied: the states it knows, which it changed, the writes it queued."""

    def __init__(
        self,
        cursor: Cursor,
        orders: OrderedDict[str, OrderState],
        positions: OrderedDict[str, PositionState],
    ) -> None:
        self.cursor = cursor
        self.orders = orders
        """Known order states (cached, loaded or created), least recently touched first."""
        self.positions = positions
        self.changed_orders: dict[str, int] = {}
        """Orders this page changed, with the log position of the last event applied."""
        self.changed_positions: dict[str, int] = {}
        self.message_positions: dict[str, int] = {}
        self.writes: list[tuple[str, tuple[object, ...]]] = []
        """(statement, parameters) queued in log order, flushed by runs of one statement."""

    def order(self, oid: str) -> Order:
        """The order `oid` as the page knows it, on a shell sharing its (mutable) state."""
        state = self.orders.get(oid)
        if state is None:
            msg = f"order {oid} has events but no created event in the log"
            raise LookupError(msg)
        self.orders.move_to_end(oid)
        shell = Order.__new__(Order)
        shell.state = state
        return shell

    def position(self, pid: str) -> Position:
        """The position `pid` as the page knows it, on a shell sharing its (mutable) state."""
        state = self.positions.get(pid)
        if state is None:
            msg = f"position {pid} has events but no created event in the log"
            raise LookupError(msg)
        self.positions.move_to_end(pid)
        shell = Position.__new__(Position)
        shell.state = state
        return shell

    def write(self, statement: str, params: tuple[object, ...]) -> None:
        """Queue one row write, to run in log order at `flush`."""
        self.writes.append((statement, params))

    def flush(self) -> None:
        """Run the queued writes in order, one executemany per run of the same statement."""
        writes = self.writes
        executemany = getattr(self.cursor, "executemany", None)
        start = 0
        while start < len(writes):
            statement = writes[start][0]
            end = start + 1
            while end < len(writes) and writes[end][0] is statement:
                end += 1
            if executemany is None or end - start == 1:
                for k in range(start, end):
                    self.cursor.execute(statement, writes[k][1])
            else:
                executemany(statement, [params for _, params in writes[start:end]])
            start = end
        self.writes = []
