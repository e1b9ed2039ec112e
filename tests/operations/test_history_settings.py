"""lookback, closed_order_retention and market_hours: bounds, what they do, and the service's bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.builders import at, order_report, unique_cid
from tests.e2e.fake_alpaca import FakeAlpaca, running
from trueup import BrokerSnapshot, ConfigError, Ledger
from trueup.adapters.alpaca.client import AlpacaClient
from trueup.domain.status import OrderStatus
from trueup.operations.config import PRESETS, MarketHours, parse_config
from trueup.operations.metrics import Metrics
from trueup.service import ReconciliationService

ACCOUNT = "DU123"  # the builders' account
DAY = 86_400.0


def paper(**extra: Any) -> dict[str, Any]:
    return {"accounts": {"p": {"broker": "paper", "account_id": "P1", **extra}}}


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**paper(), "lookback": 0}, "lookback: must be > 0, got 0"),
        (paper(lookback=-1), "accounts.p.lookback: must be > 0, got -1"),
        ({**paper(), "closed_order_retention": 0}, "closed_order_retention: must be > 0, got 0"),
        (paper(closed_order_retention=5), "accounts.p.closed_order_retention: unknown setting"),
        (
            paper(market_hours={"timezone": "Mars/Base"}),
            (
                "accounts.p.market_hours: timezone must be an IANA time zone such as America/New_York, "
                "got 'Mars/Base'"
            ),
        ),
        (
            paper(market_hours={"open": "9:30"}),
            "accounts.p.market_hours.open: must match ^([01][0-9]|2[0-3]):[0-5][0-9]$, got '9:30'",
        ),
        (
            paper(market_hours={"weekdays": ["mon", "funday"]}),
            (
                "accounts.p.market_hours.weekdays[1]: must be one of mon, tue, wed, thu, fri, sat, sun, "
                "got 'funday'"
            ),
        ),
        (paper(market_hours={"weekdays": []}), "accounts.p.market_hours.weekdays: must not be empty, got []"),
        (
            paper(market_hours={"open": "10:00", "close": "10:00"}),
            "accounts.p.market_hours: open and close must differ, got '10:00' for both",
        ),
    ],
)
def test_new_settings_fail_with_key_value_and_bound(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message


def test_lookback_and_retention_resolve_from_preset_file_and_account() -> None:
    config = parse_config({"preset": "aggressive", **paper(lookback=3600)})
    assert config.accounts[0].timings.lookback == 3600
    assert config.closed_order_retention == PRESETS["aggressive"].closed_order_retention
    config = parse_config({"closed_order_retention": 60, "lookback": 120, **paper()})
    assert (config.closed_order_retention, config.accounts[0].timings.lookback) == (60, 120)
    # conservative reads further back and keeps closed orders compared longer than aggressive
    c, a = PRESETS["conservative"], PRESETS["aggressive"]
    assert c.timings.lookback > a.timings.lookback
    assert c.closed_order_retention > a.closed_order_retention


def test_market_hours_default_per_broker() -> None:
    kite = parse_config({"accounts": {"k": {"broker": "kite", "account_id": "K"}}}).accounts[0]
    assert kite.account.market_hours.timezone == "Asia/Kolkata"
    assert parse_config(paper()).accounts[0].account.market_hours.timezone == "America/New_York"


@pytest.mark.parametrize(
    ("hours", "when", "is_open"),
    [
        (MarketHours(), datetime(2025, 1, 6, 14, 30, tzinfo=UTC), True),  # Mon 09:30 New York
        (MarketHours(), datetime(2025, 1, 6, 14, 29, tzinfo=UTC), False),
        (MarketHours(), datetime(2025, 1, 6, 21, 0, tzinfo=UTC), False),  # 16:00: closed
        (MarketHours(), datetime(2025, 7, 7, 13, 30, tzinfo=UTC), True),  # summer time: 09:30 EDT
        (MarketHours(), datetime(2025, 1, 4, 15, 0, tzinfo=UTC), False),  # Saturday
        (
            MarketHours(timezone="Asia/Kolkata", open="09:15", close="15:30"),
            datetime(2025, 1, 6, 4, 0, tzinfo=UTC),
            True,
        ),
        # overnight session opening Sunday 18:00: Monday 02:00 belongs to Sunday's
        (
            MarketHours(timezone="America/Chicago", open="18:00", close="17:00", weekdays=("sun",)),
            datetime(2025, 1, 6, 8, 0, tzinfo=UTC),
            True,
        ),
        (
            MarketHours(timezone="America/Chicago", open="18:00", close="17:00", weekdays=("sun",)),
            datetime(2025, 1, 6, 23, 30, tzinfo=UTC),
            False,
        ),
    ],
)
def test_market_hours_is_open(hours: MarketHours, when: datetime, is_open: bool) -> None:
    assert hours.is_open(when) is is_open


def test_market_open_gauge_follows_each_accounts_hours() -> None:
    metrics = Metrics(["A", "B", "C"], market_hours={"A": lambda _: True, "B": lambda _: False})
    metrics.refresh_market(datetime.now(UTC))
    text = metrics.exposition().decode()
    assert 'trueup_market_open{account="A"} 1.0' in text
    assert 'trueup_market_open{account="B"} 0.0' in text
    assert 'trueup_market_open{account="C"} 1.0' in text  # no hours configured: always open


# -- the service's bounds, as constraints ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inflight_retries": 0}, "inflight_retries: must be >= 1, got 0"),
        ({"inflight_retries": 2.5}, "inflight_retries: must be an integer, got 2.5"),
        ({"period": 0}, "period: must be > 0, got 0"),
        ({"period": -1.5}, "period: must be > 0, got -1.5"),
        ({"inflight_after": -1}, "inflight_after: must be >= 0, got -1"),
        ({"inflight_period": 0}, "inflight_period: must be > 0, got 0"),
        ({"accounts": []}, "accounts: must not be empty, got ()"),
        ({"accounts": ["A", " "]}, "accounts[1]: must match \\S, got ' '"),
    ],
)
def test_service_rejects_out_of_range_arguments(kwargs: dict[str, Any], message: str) -> None:
    accounts = kwargs.pop("accounts", ["A"])
    with Ledger.open(f"memory://{unique_cid('svc')}") as ledger:
        with pytest.raises(ConfigError) as caught:
            ReconciliationService(ledger, object(), accounts=accounts, **kwargs)  # type: ignore[arg-type]
        assert str(caught.value) == message


def test_ledger_open_rejects_a_bad_retention() -> None:
    with pytest.raises(ConfigError) as caught:
        Ledger.open(f"memory://{unique_cid('ret')}", closed_order_retention=0)
    assert str(caught.value) == "closed_order_retention: must be > 0, got 0"


# -- closed_order_retention ------------------------------------------------------------------


def snapshot(orders: list[Any], as_of: float) -> BrokerSnapshot:
    return BrokerSnapshot(ACCOUNT, at(as_of), orders=orders, fills=[], positions=None, complete_history=True)


@pytest.fixture
def named() -> list[set[str]]:
    return []


def test_a_periodic_reconcile_skips_10000_old_closed_orders_and_compares_recent_ones(
    named: list[set[str]],
) -> None:
    now = 100 * DAY
    old = [
        order_report(OrderStatus.CANCELED, cid=f"OLD{i:05d}", broker_id=f"BO{i:05d}", ts=now - 30 * DAY)
        for i in range(10_000)
    ]
    with Ledger.open(
        f"memory://{unique_cid('ret')}", clock=lambda: at(now), closed_order_retention=7 * DAY
    ) as ledger:
        recent = order_report(OrderStatus.CANCELED, cid="RECENT", broker_id="BR", ts=now - DAY)
        working = order_report(OrderStatus.ACCEPTED, cid="OPEN", broker_id="BW", ts=now - 60 * DAY)
        first = ledger.reconcile(snapshot([*old, recent, working], now))  # startup: every order compared
        assert ledger.order(ACCOUNT, "OLD09999") is not None
        assert len(first.order_updates) == 10_002

        loads = ledger.queries.order_states

        def counting(account: str, ids: set[str]) -> Any:
            named.append(set(ids))
            return loads(account, ids)

        ledger.queries.order_states = counting  # type: ignore[method-assign]
        # At the broker: the recent one was filled after all (a correction), the open one
        # (sent 60 days ago) filled today, and every old one is as it was.
        recent_filled = order_report(
            OrderStatus.FILLED, cid="RECENT", broker_id="BR", filled=10, avg=1, ts=now - DAY + 1
        )
        working_filled = order_report(OrderStatus.CANCELED, cid="OPEN", broker_id="BW", ts=now - 60 * DAY)
        later = ledger.reconcile(snapshot([*old, recent_filled, working_filled], now + 10))
        assert named == [{"RECENT", "OPEN"}]  # the 10,000 old closed orders were not read
        assert ledger.order(ACCOUNT, "RECENT").status is OrderStatus.FILLED  # type: ignore[union-attr]
        assert ledger.order(ACCOUNT, "OPEN").status is OrderStatus.CANCELED  # type: ignore[union-attr]
        assert {e.client_order_id for e in later.order_updates} == {"RECENT", "OPEN"}
        # nothing was deleted: every old order is still in the log and the read models
        assert len(ledger.all_orders()) == 10_002


def test_without_retention_every_listed_order_is_compared(named: list[set[str]]) -> None:
    with Ledger.open(f"memory://{unique_cid('ret')}", clock=lambda: at(100 * DAY)) as ledger:
        old = [order_report(OrderStatus.CANCELED, cid=f"O{i}", broker_id=f"B{i}", ts=1) for i in range(5)]
        ledger.reconcile(snapshot(old, 100 * DAY))
        loads = ledger.queries.order_states
        ledger.queries.order_states = lambda a, ids: named.append(set(ids)) or loads(a, ids)  # type: ignore[method-assign,func-returns-value]
        ledger.reconcile(snapshot(old, 100 * DAY + 10))
        assert named == [{f"O{i}" for i in range(5)}]


# -- lookback (Alpaca, against the fake server) ------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with running() as server:
        yield server


def _age(order: dict[str, Any], days: float) -> None:
    when = (datetime.now(UTC) - timedelta(days=days)).isoformat().replace("+00:00", "Z")
    order.update(submitted_at=when, created_at=when, updated_at=when)


def test_alpaca_lookback_reads_from_now_minus_lookback_and_says_so(fake: FakeAlpaca) -> None:
    old_open = fake.place_external("AAPL", "1")
    old_closed = fake.place_external("MSFT", "2")
    fresh = fake.place_external("TSLA", "3")
    with fake.lock:
        old_closed.update(status="canceled")
        _age(old_open, 40)
        _age(old_closed, 40)

    async def take(lookback: float | None) -> BrokerSnapshot:
        client = AlpacaClient(
            "PKTESTKEY", "s3cr3t", account=ACCOUNT, url_override=fake.url, lookback=lookback
        )
        try:
            return await client.snapshot(ACCOUNT)
        finally:
            client.close()

    everything = asyncio.run(take(None))
    assert everything.complete_history
    assert everything.history_since is None
    assert {o.broker_order_id for o in everything.orders or []} == {
        old_open["id"],
        old_closed["id"],
        fresh["id"],
    }
    recent = asyncio.run(take(7 * DAY))
    assert not recent.complete_history
    assert recent.history_since is not None
    assert abs(recent.as_of - timedelta(days=7) - recent.history_since) < timedelta(seconds=1)
    # the old open order is still listed (every open order is); the old closed one is not
    assert {o.broker_order_id for o in recent.orders or []} == {old_open["id"], fresh["id"]}
    with pytest.raises(ValueError, match="lookback must be > 0 seconds, got 0"):
        AlpacaClient("PKTESTKEY", "s3cr3t", account=ACCOUNT, url_override=fake.url, lookback=0)
