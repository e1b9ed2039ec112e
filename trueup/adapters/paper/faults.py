"""Fault injection for the paper broker: the plan, the log entries, and the pure dice.

Faults that touch callbacks (drop, duplicate, delay, reorder) are decided per callback by
`callback_fate` from the broker's fault generator; the others are injected by calling
the broker (`outage`, `disconnect`, `manual_order`, `shift_position`). Every fault the
broker injects is logged as a `Fault` naming the order and execution it affected, so a
report can later explain how the books absorbed it.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from trueup.adapters.paper.rng import SplitMix64, ppm
from trueup.domain.errors import ConfigError

__all__ = ["CallbackFate", "Fault", "FaultKind", "FaultPlan", "callback_fate"]


class FaultKind(StrEnum):
    """What was injected."""

    DROP = "drop"
    """A callback was never delivered (the state it carried is in the snapshot)."""
    DUPLICATE = "duplicate"
    """A callback was delivered twice."""
    DELAY = "delay"
    """A callback was held back some steps."""
    REORDER = "reorder"
    """A callback was delivered after callbacks emitted later."""
    OUTAGE = "outage"
    """Queries failed for some steps; a submit's outcome was unknown to its caller."""
    DISCONNECT = "disconnect"
    """The stream dropped: undelivered callbacks and those emitted until the reconnect were lost."""
    MANUAL_ORDER = "manual_order"
    """An order was placed by hand at the broker, without a client order id."""
    SHIFT_POSITION = "shift_position"
    """A position changed at the broker without an order or a fill."""


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Probabilities of the callback faults, each rolled once per callback.

    Outages, disconnects, manual orders and position shifts are not in the plan: they are
    injected by calling the broker, at moments the caller chooses.
    """

    drop: float = 0.0
    """Probability that a callback is never delivered (0 to 1)."""
    duplicate: float = 0.0
    """Probability that a callback is delivered twice."""
    delay: float = 0.0
    """Probability that a callback is held back 1 to `max_delay` steps."""
    reorder: float = 0.0
    """Probability that a callback is delivered after the next 1 to `reorder_window` callbacks."""
    max_delay: int = 3
    """Longest hold of a delayed callback, in steps (>= 1)."""
    reorder_window: int = 2
    """Most later callbacks a reordered one may be overtaken by (>= 1)."""

    def __post_init__(self) -> None:
        """Refuse a probability outside [0, 1] or a window below 1, naming the field."""
        for name in ("drop", "duplicate", "delay", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                msg = f"FaultPlan.{name} must be a probability in [0, 1], got {value!r}"
                raise ConfigError(msg)
        for name in ("max_delay", "reorder_window"):
            value = getattr(self, name)
            if value < 1:
                msg = f"FaultPlan.{name} must be >= 1, got {value!r}"
                raise ConfigError(msg)


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One injected fault, as logged in the broker's `faults` table."""

    id: int
    """Position in the fault log (1, 2, ...)."""
    step: int
    """Market step at which it was injected."""
    kind: FaultKind
    """What was injected."""
    detail: str
    """What it did, in words, naming the ids it affected."""
    order_id: str | None = None
    """The broker order id it affected, if any."""
    exec_id: str | None = None
    """The execution id it affected, if any."""
    callback: int | None = None
    """The outbox sequence number of the callback it affected, if any."""


class CallbackFate(msgspec.Struct, frozen=True, kw_only=True):
    """What the fault dice decided for one callback."""

    drop: bool = False
    """Never delivered."""
    duplicate: bool = False
    """Delivered twice."""
    delay: int = 0
    """Steps to hold it back (0: none)."""
    reorder: int = 0
    """Number of later callbacks that overtake it (0: none)."""


def callback_fate(plan: FaultPlan, rng: SplitMix64) -> CallbackFate:
    """Roll the callback faults of `plan` for one callback.

    The same six rolls are made whatever the plan says, so the fault generator's
    position depends only on how many callbacks were emitted: changing a probability
    changes outcomes, never the dice that later callbacks see.
    """
    dropped = rng.chance(ppm(plan.drop))
    duplicated = rng.chance(ppm(plan.duplicate))
    delayed = rng.chance(ppm(plan.delay))
    hold = 1 + rng.below(plan.max_delay)
    reordered = rng.chance(ppm(plan.reorder))
    overtaken_by = 1 + rng.below(plan.reorder_window)
    if dropped:
        return CallbackFate(drop=True)  # a lost message has no copies and no schedule
    # Delay wins over reorder: a delayed callback is already overtaken by everything
    # emitted while it is held.
    return CallbackFate(
        duplicate=duplicated,
        delay=hold if delayed else 0,
        reorder=overtaken_by if reordered and not delayed else 0,
    )
