"""Reading ib_async objects by attribute path: the IB translators' shared readers.

`Reader` walks attribute paths of one duck-typed ib_async object (`trade.orderStatus.filled`)
and refuses a bad value with an `InvalidReport` naming the full path; numbers become
`Decimal` from `str()` of the float, IB's "no value" (`UNSET_DOUBLE`, `UNSET_INTEGER`) is
unknown, never a number. Pure: no clock, no I/O, no ib_async import (see `translate`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from trueup.adapters.base import CLIENT_ORDER_ID
from trueup.domain.errors import InvalidReport
from trueup.domain.status import Side

__all__ = ["UNSET_DOUBLE", "UNSET_INTEGER", "Reader", "our_id", "utc"]

UNSET_DOUBLE: Final = sys.float_info.max
"""IB's "no value" for a double (ib_async.util.UNSET_DOUBLE): unknown, never a number."""

UNSET_INTEGER: Final = 2**31 - 1
"""IB's "no value" for an int (ib_async.util.UNSET_INTEGER): unknown, never an id."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""ib_async's default `Execution.time`: an execution stamped with it has no time."""

_MISSING: Final = object()


class Reader:
    """Reads attribute paths of one ib_async object, refusing bad values with the full path."""

    def __init__(self, root: object, name: str, *, what: str, account: str) -> None:
        self.root, self.name, self.what, self.account = root, name, what, account

    def fail(self, path: str, detail: str) -> InvalidReport:
        """The refusal of the value at `path` (relative to the object), naming the full path."""
        full = f"{self.name}.{path}" if path else self.name
        msg = f"ib {self.what} for account {self.account!r}: {detail} at `{full}`"
        return InvalidReport(msg, field=full)

    def get(self, path: str) -> Any:  # noqa: ANN401 - duck-typed ib_async attribute
        """The attribute at dotted `path`; a missing one is refused."""
        obj: object = self.root
        walked: list[str] = []
        for name in path.split("."):
            walked.append(name)
            obj = getattr(obj, name, _MISSING)
            if obj is _MISSING:
                raise self.fail(".".join(walked), "attribute is missing")
        return obj

    def text(self, path: str, *, required: bool = False) -> str:
        """A string attribute (non-empty when `required`)."""
        value = self.get(path)
        if not isinstance(value, str) or (required and not value.strip()):
            kind = "a non-empty string" if required else "a string"
            raise self.fail(path, f"must be {kind}, got {value!r}")
        return value

    def integer(self, path: str) -> int:
        """An int attribute (a bool is refused)."""
        value = self.get(path)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an int, got {value!r}")
        return value

    def perm_id(self, *paths: str) -> str | None:
        """The first set `permId` among `paths` as text; None while 0 or UNSET_INTEGER (unknown)."""
        for path in paths:
            value = self.integer(path)
            if value not in {0, UNSET_INTEGER}:
                return str(value)
        return None

    def number(self, path: str) -> Decimal | None:
        """The value as a Decimal; None for UNSET_DOUBLE (or a None ib_async allows, e.g. lmtPrice)."""
        value = self.get(path)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise self.fail(path, f"must be a number, got {type(value).__name__} {value!r}")
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            if value == UNSET_DOUBLE:
                return None
            if not math.isfinite(value):
                raise self.fail(path, f"must be finite, got {value!r}")
            # str() is the shortest repr that round-trips: 187.43 -> "187.43", not the binary expansion.
            return Decimal(str(value))
        if not value.is_finite():
            raise self.fail(path, f"must be finite, got {value}")
        return None if float(value) == UNSET_DOUBLE else value

    def required_number(self, path: str) -> Decimal:
        """A number attribute that must be set (`number`, refusing unknown)."""
        value = self.number(path)
        if value is None:
            raise self.fail(path, "is unset (UNSET_DOUBLE or None)")
        return value

    def time(self, path: str) -> datetime:
        """A timezone-aware time attribute in UTC (naive or ib_async's unset epoch refused)."""
        value = self.get(path)
        if not isinstance(value, datetime):
            raise self.fail(path, f"must be a datetime, got {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise self.fail(path, f"must be timezone-aware, got naive {value.isoformat()}")
        if value == _EPOCH:
            raise self.fail(path, "is unset (ib_async's default, the epoch)")
        return value.astimezone(UTC)

    def symbol(self, contract: str) -> str:
        """The contract's `localSymbol` when set, else its `symbol` (non-empty)."""
        local = self.text(f"{contract}.localSymbol")
        if local.strip():
            return local
        return self.text(f"{contract}.symbol", required=True)

    def side(self, path: str, table: Mapping[str, Side]) -> Side:
        """The side `table` maps the attribute's string to; anything else is refused."""
        value = self.get(path)
        side = table.get(value) if isinstance(value, str) else None
        if side is None:
            raise self.fail(path, f"must be one of {sorted(table)}, got {value!r}")
        return side

    def check_account(self, path: str, *, required: bool = False) -> None:
        """Refuse an account attribute naming another account (empty passes unless `required`)."""
        value = self.text(path, required=required)
        if value and value != self.account:
            raise self.fail(path, f"belongs to account {value!r}, not {self.account!r}")

    @contextmanager
    def located(self, fields: Mapping[str, str]) -> Iterator[None]:
        """Re-raise a report constructor's `InvalidReport` with the attribute path of its source."""
        try:
            yield
        except InvalidReport as e:
            path = fields.get(e.field or "")
            if path is None:
                raise  # an argument (account, ts_event), not an attribute
            raise self.fail(path, str(e)) from e


def utc(value: datetime) -> datetime:
    """UTC for an aware time; a naive one passes through so the report refuses it by name."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value
    return value.astimezone(UTC)


def our_id(order_ref: str) -> str | None:
    """`orderRef` as our `client_order_id`, or None when it is not an id we could have sent."""
    return order_ref if CLIENT_ORDER_ID.fullmatch(order_ref) else None
