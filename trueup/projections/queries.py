"""Read queries over the read models: orders, positions, discrepancies, accounts.

Every query first lets the projector catch up with the log, so what it returns includes
every event stored before the call (read-your-writes), whoever wrote it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from trueup.adapters.eventstore.store import IN_IDS, select_in
from trueup.domain.discrepancy import problem_topic
from trueup.domain.order import OrderState
from trueup.domain.position import PositionState
from trueup.domain.views import DiscrepancyView, OrderView, PositionView
from trueup.projections.projector import Projector

_ORDER_STATE = msgspec.json.Decoder(OrderState)
_POSITION_STATE = msgspec.json.Decoder(PositionState)


class Queries:
    """The read side of one store, with the caches that keep periodic reconciliation cheap."""

    def __init__(self, projector: Projector) -> None:
        """Read through `projector` (which keeps the tables up to date)."""
        self.projector = projector
        self._open_states: dict[str, dict[str, tuple[int, OrderState]]] = {}
        """Decoded open-order states by account and client id, with their row's log position."""
        self._open_lists: dict[str, tuple[int, list[OrderState]]] = {}
        """The last open-order list by account, with the tracking position it was read at."""

    # -- views -----------------------------------------------------------------------------

    def orders(self, account: str | None, *, open_only: bool) -> list[OrderView]:
        """Orders (open ones only if asked), oldest first."""
        self.projector.catch_up()
        clauses = (["is_open = 1"] if open_only else []) + (["account = ?"] if account else [])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.projector.rows(
            f"SELECT state FROM {{trueup_orders}} {where} ORDER BY position",  # noqa: S608
            [account] if account else [],
        )
        return [_ORDER_STATE.decode(row["state"]).view() for row in rows]

    def positions(self, account: str | None = None, *, include_flat: bool = False) -> list[PositionView]:
        """Net positions by account and symbol (flat ones only if asked)."""
        self.projector.catch_up()
        where, params = ("WHERE account = ?", [account]) if account else ("", [])
        rows = self.projector.rows(
            f"SELECT state FROM {{trueup_positions}} {where} ORDER BY account, symbol",  # noqa: S608
            params,
        )
        views = (_POSITION_STATE.decode(row["state"]).view() for row in rows)
        return [v for v in views if include_flat or v.qty != 0]

    def discrepancies(
        self, account: str | None = None, *, include_resolved: bool = False, acknowledged: bool = False
    ) -> list[DiscrepancyView]:
        """Recorded discrepancies, in log order (open ones unless asked).

        `acknowledged` adds the resolved ones an operator's acknowledgement still covers
        (what the use cases that record findings need to keep one problem one alarm).
        """
        self.projector.catch_up()
        clauses, params = [], []
        if account:
            clauses.append("account = ?")
            params.append(account)
        if not include_resolved:
            clauses.append(
                "(resolution IS NULL OR acknowledged = 1)" if acknowledged else "resolution IS NULL"
            )
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.projector.rows(
            f"SELECT * FROM {{trueup_discrepancies}} {where} ORDER BY position",  # noqa: S608
            params,
        )
        return [_discrepancy_view(row) for row in rows]

    def accounts(self) -> list[str]:
        """Accounts that have orders, positions or discrepancies."""
        self.projector.catch_up()
        rows = self.projector.rows(
            "SELECT account FROM {trueup_orders} UNION SELECT account FROM {trueup_positions} "
            "UNION SELECT account FROM {trueup_discrepancies} ORDER BY account"
        )
        return [str(row["account"]) for row in rows if row["account"]]

    def service_status(self) -> dict[str, Any]:
        """Counters the reconciliation service last saved (empty if none ran on this store)."""
        return self.projector.service_status()

    # -- states, for the reconciler ----------------------------------------------------------

    def open_order_states(self, account: str) -> list[OrderState]:
        """Read-model states of the account's open orders, oldest first (read-only objects).

        Decoded states are kept between calls and re-read only for rows whose log position
        moved, so a periodic reconciliation of unchanged books decodes nothing.
        """
        self.projector.catch_up()
        # The tables are a function of the log up to the tracking position: if it has not
        # moved since the last call, neither has any row (the steady state of a periodic
        # reconciliation that finds nothing, which stores nothing).
        tracked = self.projector.position()
        listed = self._open_lists.get(account)
        if listed is not None and listed[0] == tracked:
            return listed[1]
        rows = self.projector.tuples(
            "SELECT client_order_id, position FROM {trueup_orders} "
            "WHERE account = ? AND is_open = 1 ORDER BY position",
            [account],
        )
        cached = self._open_states.get(account, {})
        fresh: dict[str, tuple[int, OrderState]] = {}
        changed = set()
        for cid, position in rows:
            entry = cached.get(cid)
            if entry is not None and entry[0] == position:
                fresh[cid] = entry
            else:
                changed.add(cid)
        for state, position in self._states_by_id(account, changed):
            fresh[state.client_order_id] = (position, state)
        self._open_states[account] = fresh  # replaced whole: readers in other threads see one or the other
        states = [entry[1] for cid, _ in rows if (entry := fresh.get(cid)) is not None]
        if self.projector.position() == tracked:  # no writer moved the tables while we read
            self._open_lists[account] = (tracked, states)
        return states

    def order_states(self, account: str, client_order_ids: set[str]) -> dict[str, OrderState]:
        """Read-model states of the account's open orders and of the named orders."""
        states = {s.client_order_id: s for s in self.open_order_states(account)}
        for state, _ in self._states_by_id(account, client_order_ids - states.keys()):
            states[state.client_order_id] = state
        return states

    def position_states(self, account: str) -> list[PositionState]:
        """Read-model states of the account's positions, flat ones included."""
        self.projector.catch_up()
        rows = self.projector.tuples("SELECT state FROM {trueup_positions} WHERE account = ?", [account])
        return [_POSITION_STATE.decode(state) for (state,) in rows]

    def _states_by_id(self, account: str, client_order_ids: set[str]) -> Iterator[tuple[OrderState, int]]:
        """Read-model states (with their row's log position) of the named orders."""
        rows = select_in(
            self.projector.tuples,
            f"SELECT state, position FROM {{trueup_orders}} "  # noqa: S608 - table names and marks only
            f"WHERE account = ? AND client_order_id IN {IN_IDS}",
            sorted(client_order_ids),
            [account],
        )
        for state, position in rows:
            yield _ORDER_STATE.decode(state), int(position)


def _discrepancy_view(row: dict[str, Any]) -> DiscrepancyView:
    return DiscrepancyView(
        id=UUID(str(row["id"])),
        kind=row["kind"],
        severity=row["severity"],
        account=row["account"],
        key=row["subject"],
        expected=row["expected"],
        actual=row["actual"],
        detail=row["detail"],
        evidence_id=UUID(str(row["evidence_id"])) if row["evidence_id"] else None,
        evidence_position=row["evidence_position"],
        position=row["position"],
        ts_detected=datetime.fromisoformat(row["ts_detected"]),
        resolution=row["resolution"],
        scope=row["scope"],
        last_seen=datetime.fromisoformat(row["last_seen"]) if row["last_seen"] else None,
        count=int(row["sightings"]),
        topic=row["topic"] if row["topic"] is not None else problem_topic(row["kind"], row["expected"]),
        resolved_by=row["resolved_by"],
        acknowledged=bool(row["acknowledged"]),
    )
