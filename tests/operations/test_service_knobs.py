"""The service's and the ledger's remaining knobs in the config, and the config's bounds as constraints.

`broker_timeout`, `stream_wait` and `stream_grace` (per account, `ReconciliationService`) and
`match_every` (global, `Ledger.open`): bounded by the same constraints as the keyword
arguments, set by the presets, and handed to the service and the ledger `trueup run` builds.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.builders import unique_cid
from trueup import ConfigError, Ledger
from trueup.operations import daemon as daemon_module
from trueup.operations.config import PRESETS, parse_config
from trueup.operations.reference import starting_file
from trueup.service import ReconciliationService

SERVICE_KNOBS = ("broker_timeout", "stream_wait", "stream_grace")


def paper(**extra: Any) -> dict[str, Any]:
    return {"accounts": {"p": {"broker": "paper", "account_id": "P1", **extra}}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**paper(), "broker_timeout": 0}, "broker_timeout: must be > 0, got 0"),
        (paper(broker_timeout=-3), "accounts.p.broker_timeout: must be > 0, got -3"),
        ({**paper(), "stream_wait": 0}, "stream_wait: must be > 0, got 0"),
        (paper(stream_wait=-1.5), "accounts.p.stream_wait: must be > 0, got -1.5"),
        ({**paper(), "stream_grace": 0}, "stream_grace: must be > 0, got 0"),
        (paper(stream_grace="30"), "accounts.p.stream_grace: must be a number, got '30'"),
        ({**paper(), "match_every": -1}, "match_every: must be >= 0, got -1"),
        (paper(match_every=5), "accounts.p.match_every: unknown setting"),
        # the checks that were hand-written, now constraints (same message form)
        ({"accounts": {}}, "accounts: must not be empty, got {}"),
        ({"preset": "paper"}, "accounts: required setting is missing"),
        ({"accounts": {"a": 3}}, "accounts.a: must be a table, got 3"),
        ({**paper(), "operators": {" ": {"permissions": []}}}, r"operators: a name must match \S, got ' '"),
        ({**paper(), "operators": {"bob": 3}}, "operators.bob: must be a table, got 3"),
    ],
)
def test_each_knob_fails_with_key_value_and_bound(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("knob", "bad"), [(k, 0) for k in SERVICE_KNOBS] + [(k, -2.5) for k in SERVICE_KNOBS]
)
def test_the_config_and_the_service_refuse_a_knob_alike(knob: str, bad: float) -> None:
    with pytest.raises(ConfigError) as from_file:
        parse_config({**paper(), knob: bad})
    with Ledger.open(f"memory://{unique_cid('knob')}") as ledger, pytest.raises(ConfigError) as from_code:
        ReconciliationService(ledger, object(), accounts=["A"], **{knob: bad})  # type: ignore[arg-type]
    assert str(from_file.value) == str(from_code.value)


@pytest.mark.parametrize("bad", [-1, -0.5, "5"])
def test_the_config_and_ledger_open_refuse_match_every_alike(bad: object) -> None:
    with pytest.raises(ConfigError) as from_file:
        parse_config({**paper(), "match_every": bad})
    with pytest.raises(ConfigError) as from_code:
        Ledger.open(f"memory://{unique_cid('knob')}", match_every=bad)  # type: ignore[arg-type]
    assert str(from_file.value) == str(from_code.value)
    assert parse_config({**paper(), "match_every": 0}).match_every == 0  # zero: every matching snapshot


def test_presets_set_the_knobs_and_differ_where_documented() -> None:
    c, a, p = (PRESETS[n] for n in ("conservative", "aggressive", "paper"))
    for knob in SERVICE_KNOBS:
        # aggressive: shorter deadlines than conservative; paper: more patient than either
        assert getattr(a.timings, knob) < getattr(c.timings, knob) < getattr(p.timings, knob), knob
    assert a.match_every < c.match_every < p.match_every
    # conservative keeps the library's defaults
    with Ledger.open(f"memory://{unique_cid('knob')}") as ledger:
        service = ReconciliationService(ledger, object(), accounts=["A"])  # type: ignore[arg-type]
        assert [getattr(service, k) for k in SERVICE_KNOBS] == [getattr(c.timings, k) for k in SERVICE_KNOBS]
        assert ledger.reconciler.matches.every == c.match_every


def test_knobs_resolve_from_preset_then_file_then_account() -> None:
    config = parse_config(
        {
            "preset": "aggressive",
            "stream_wait": 4,
            "match_every": 0,
            "accounts": {
                "a": {"broker": "paper", "account_id": "A", "broker_timeout": 2, "stream_grace": 3},
                "b": {"broker": "paper", "account_id": "B", "state": "b.db"},
            },
        }
    )
    a, b = config.accounts
    aggressive = PRESETS["aggressive"].timings
    assert (a.timings.broker_timeout, a.timings.stream_wait, a.timings.stream_grace) == (2, 4, 3)
    assert (b.timings.broker_timeout, b.timings.stream_wait, b.timings.stream_grace) == (
        aggressive.broker_timeout,
        4,
        aggressive.stream_grace,
    )
    assert config.match_every == 0
    assert parse_config({"preset": "paper", **paper()}).match_every == PRESETS["paper"].match_every
    shown = config.describe()
    assert shown["match_every"] == 0
    assert shown["accounts"]["a"]["broker_timeout"] == 2


@pytest.mark.parametrize("preset", list(PRESETS))
def test_config_init_writes_every_knob_of_its_preset(preset: str) -> None:
    text = starting_file(preset)
    raw = tomllib.loads(text)
    for knob in (*SERVICE_KNOBS, "match_every"):
        assert knob in raw, knob
    config = parse_config(raw)
    assert config.accounts[0].timings == PRESETS[preset].timings
    assert config.match_every == PRESETS[preset].match_every


def test_trueup_run_hands_the_knobs_to_the_service_and_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services: list[ReconciliationService] = []
    ledgers: list[Ledger] = []
    made: list[asyncio.Event] = []

    class Recorded(ReconciliationService):
        """The real service, kept to read what it was given."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            services.append(self)
            made[0].set()

    real_open = Ledger.open

    def recorded_open(*args: Any, **kwargs: Any) -> Ledger:
        ledger = real_open(*args, **kwargs)
        ledgers.append(ledger)
        return ledger

    monkeypatch.setattr(daemon_module, "ReconciliationService", Recorded)
    monkeypatch.setattr(daemon_module.Ledger, "open", recorded_open)
    config = parse_config(
        {
            "preset": "aggressive",
            "store": f"sqlite:///{tmp_path / 'trueup.db'}",
            "match_every": 42,
            "stream_wait": 8,
            "http": {"port": 0},
            "accounts": {
                "p": {
                    "broker": "paper",
                    "account_id": "P1",
                    "state": str(tmp_path / "paper.db"),
                    "broker_timeout": 7,
                    "stream_grace": 9,
                }
            },
        }
    )

    async def run_and_stop() -> int:
        made.append(asyncio.Event())
        daemon = daemon_module.Daemon(config)
        running = asyncio.create_task(daemon.run())
        waiting = asyncio.create_task(made[0].wait())
        await asyncio.wait({running, waiting}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        daemon.stop.set()
        return await asyncio.wait_for(running, 60)

    assert asyncio.run(run_and_stop()) == 0
    (service,) = services
    assert (service.broker_timeout, service.stream_wait, service.stream_grace) == (7, 8, 9)
    (ledger,) = ledgers
    assert ledger.reconciler.matches.every == 42
