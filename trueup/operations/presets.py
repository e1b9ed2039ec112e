"""The timings of one account's reconciliation, and the presets that supply them all.

`trueup.operations.config` resolves a file's values over one of these presets
(`conservative`, the default; `aggressive`; `paper`); each bound is a msgspec constraint.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

from trueup.settings import (
    BrokerTimeout,
    Count,
    MatchEvery,
    PositiveSeconds,
    Seconds,
    StreamGrace,
    StreamWait,
)

StartupDelay = Annotated[
    Seconds,
    Meta(description="Seconds to wait after start before the startup reconciliation (gate RECONCILING)."),
]
Period = Annotated[PositiveSeconds, Meta(description="Seconds between periodic reconciliations.")]
InflightInterval = Annotated[PositiveSeconds, Meta(description="Seconds between in-flight order checks.")]
InflightAfter = Annotated[
    Seconds, Meta(description="Seconds an order may stay SUBMITTED / PENDING_NEW before it is looked up.")
]
InflightRetries = Annotated[
    Count, Meta(description="Lookups that do not find an in-flight order before it is declared LOST.")
]
LostAfter = Annotated[
    Count, Meta(description="Complete snapshots an open order may be missing from before LOST (global only).")
]
MaxSnapshotAge = Annotated[
    PositiveSeconds, Meta(description="Seconds after which a broker snapshot is STALE_DATA (global only).")
]
Lookback = Annotated[
    PositiveSeconds,
    Meta(
        description=(
            "Seconds of order and fill history a snapshot reads (Alpaca; IB and Kite read their day, "
            "whichever is later); older orders are unverifiable, not missing."
        )
    ),
]
ClosedOrderRetention = Annotated[
    PositiveSeconds,
    Meta(
        description=(
            "Seconds after which an order closed here and at the broker is left out of the periodic "
            "comparison (never deleted; global only)."
        )
    ),
]
BrokerDeadline = Annotated[
    BrokerTimeout,
    Meta(
        description=(
            "Deadline in seconds of each broker snapshot and lookup; a missed one is a failed "
            "query (STALE_DATA, gate BLOCKED until a snapshot succeeds)."
        )
    ),
]
StreamMessageWait = Annotated[
    StreamWait,
    Meta(
        description=(
            "Seconds a stream message waits for its account's reconciliation before it is applied anyway."
        )
    ),
]
StreamDownGrace = Annotated[
    StreamGrace,
    Meta(
        description=(
            "Seconds an account may go without a live broker stream before reconciliations record "
            "STALE_DATA and keep its gate BLOCKED."
        )
    ),
]
MatchedEvery = Annotated[
    MatchEvery,
    Meta(
        description=(
            "Seconds of snapshot time between two BooksMatched records while the books keep "
            "matching (0: every matching snapshot; global only)."
        )
    ),
]


class Timings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Every timing of one account's reconciliation, resolved (a preset supplies them all)."""

    startup_delay: StartupDelay
    period: Period
    inflight_interval: InflightInterval
    inflight_after: InflightAfter
    inflight_retries: InflightRetries
    lookback: Lookback
    broker_timeout: BrokerDeadline
    stream_wait: StreamMessageWait
    stream_grace: StreamDownGrace


class Preset(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A preset: the timings, and the ledger's global settings."""

    timings: Timings
    lost_after: LostAfter
    max_snapshot_age: MaxSnapshotAge
    closed_order_retention: ClosedOrderRetention
    match_every: MatchedEvery


DAY: Final = 86_400.0

PRESETS: Final[dict[str, Preset]] = {
    # Live money, cautious about conclusions: slow to call an order LOST (more lookups,
    # a longer threshold, more missing snapshots), strict about stale broker data.
    "conservative": Preset(
        timings=Timings(
            startup_delay=5.0,
            period=10.0,
            inflight_interval=10.0,
            inflight_after=30.0,
            inflight_retries=5,
            lookback=30 * DAY,
            broker_timeout=30.0,
            stream_wait=60.0,
            stream_grace=30.0,
        ),
        lost_after=4,
        max_snapshot_age=30.0,
        closed_order_retention=7 * DAY,
        match_every=300.0,
    ),
    # Live money, fast detection: checks often and concludes sooner (more broker calls);
    # shorter deadlines, so a hung broker or a dead stream blocks the gate sooner.
    "aggressive": Preset(
        timings=Timings(
            startup_delay=0.0,
            period=2.0,
            inflight_interval=2.0,
            inflight_after=5.0,
            inflight_retries=3,
            lookback=7 * DAY,
            broker_timeout=10.0,
            stream_wait=15.0,
            stream_grace=10.0,
        ),
        lost_after=2,
        max_snapshot_age=10.0,
        closed_order_retention=1 * DAY,
        match_every=60.0,
    ),
    # Paper trading: nothing real at stake, spare the broker's API (and the store: fewer
    # BooksMatched records); a slow paper endpoint is not a reason to block.
    "paper": Preset(
        timings=Timings(
            startup_delay=0.0,
            period=60.0,
            inflight_interval=30.0,
            inflight_after=60.0,
            inflight_retries=3,
            lookback=7 * DAY,
            broker_timeout=60.0,
            stream_wait=120.0,
            stream_grace=120.0,
        ),
        lost_after=3,
        max_snapshot_age=120.0,
        closed_order_retention=1 * DAY,
        match_every=900.0,
    ),
}
