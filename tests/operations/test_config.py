"""The `trueup run` config: every error case with its exact message, presets, resolution, docs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.builders import at, unique_cid
from trueup import BrokerSnapshot, ConfigError, Ledger, PositionReport
from trueup.domain.reconcile import PositionPolicy
from trueup.operations.config import PRESETS, TIMING_FIELDS, missing_env, parse_config
from trueup.operations.reference import REFERENCE_TABLES, config_reference, starting_file
from trueup.service import ReconciliationService

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "operations.md"


def paper(**extra: Any) -> dict[str, Any]:
    return {"broker": "paper", "account_id": "P1", **extra}


def one(account: dict[str, Any], name: str = "ib1", **top: Any) -> dict[str, Any]:
    return {**top, "accounts": {name: account}}


ERRORS = [
    (
        one({"broker": "ib", "account_id": "DU1", "inflight_retries": 0}),
        "accounts.ib1.inflight_retries: must be >= 1, got 0",
    ),
    (one({"broker": "ib", "account_id": "DU1", "period": 0}), "accounts.ib1.period: must be > 0, got 0"),
    (
        one({"broker": "ib", "account_id": "DU1", "startup_delay": -1}),
        "accounts.ib1.startup_delay: must be >= 0, got -1",
    ),
    (
        one({"broker": "ib", "account_id": "DU1", "inflight_after": -0.5}),
        "accounts.ib1.inflight_after: must be >= 0, got -0.5",
    ),
    (
        one({"broker": "ib", "account_id": "DU1", "inflight_interval": 0}),
        "accounts.ib1.inflight_interval: must be > 0, got 0",
    ),
    (one(paper(), period=-1), "period: must be > 0, got -1"),
    (one(paper(), lost_after=0), "lost_after: must be >= 1, got 0"),
    (one(paper(), max_snapshot_age=-1), "max_snapshot_age: must be > 0, got -1"),
    (one(paper(), preset="fast"), "preset: must be one of conservative, aggressive, paper, got 'fast'"),
    (one(paper(), log_format="xml"), "log_format: must be one of text, json, got 'xml'"),
    (one(paper(), http={"port": 70000}), "http.port: must be <= 65535, got 70000"),
    (one(paper(), http={"host": ""}), "http.host: must not be empty, got ''"),
    (one(paper(), perod=3), "perod: unknown setting (did you mean period?)"),
    (
        one({"broker": "ibx", "account_id": "DU1"}),
        "accounts.ib1.broker: must be one of paper, alpaca, kite, ib, got 'ibx'",
    ),
    (one({"account_id": "DU1"}), "accounts.ib1.broker: required setting is missing"),
    (one({"broker": "ib"}), "accounts.ib1.account_id: required setting is missing"),
    (one({"broker": "ib", "account_id": ""}), "accounts.ib1.account_id: must not be empty, got ''"),
    (
        one({"broker": "ib", "account_id": "DU1", "perod": 3}),
        "accounts.ib1.perod: unknown setting (did you mean period?)",
    ),
    (one({"broker": "ib", "account_id": "DU1", "lost_after": 2}), "accounts.ib1.lost_after: unknown setting"),
    (
        one({"broker": "ib", "account_id": "DU1", "position_policy": "fix"}),
        "accounts.ib1.position_policy: must be one of repair, alert, lock, got 'fix'",
    ),
    (
        one({"broker": "ib", "account_id": "DU1", "period": "5"}),
        "accounts.ib1.period: must be a number, got '5'",
    ),
    (
        one({"broker": "ib", "account_id": "DU1", "inflight_retries": 2.5}),
        "accounts.ib1.inflight_retries: must be an integer, got 2.5",
    ),
    (
        one({"broker": "ib", "account_id": "DU1", "inflight_retries": True}),
        "accounts.ib1.inflight_retries: must be an integer, got true",
    ),
    (one(paper(faults={"drop": 1.5}), "p"), "accounts.p.faults.drop: must be <= 1, got 1.5"),
    (one(paper(faults={"max_delay": 0}), "p"), "accounts.p.faults.max_delay: must be >= 1, got 0"),
    (one(paper(step_every=0), "p"), "accounts.p.step_every: must be > 0, got 0"),
    (
        one(paper(claims=[{"strategy": "", "symbol": "A"}]), "p"),
        "accounts.p.claims[0].strategy: must not be empty, got ''",
    ),
    (
        one(paper(claims=[{"strategy": "mm"}]), "p"),
        "accounts.p.claims[0].symbol: required setting is missing",
    ),
    (
        one({"broker": "alpaca", "account_id": "A", "credentials": {"api_key": "PK 123"}}, "a"),
        "accounts.a.credentials.api_key: must match ^[A-Za-z_][A-Za-z0-9_]*$, got 'PK 123'",
    ),
    (
        one({"broker": "kite", "account_id": "K", "credentials": {"token": "X"}}, "k"),
        "accounts.k.credentials.token: unknown setting",
    ),
    ({"accounts": {}}, "accounts: at least one [accounts.NAME] table is required"),
    ({"accounts": {"a": 3}}, "accounts.a: must be a table, got 3"),
    (
        {"accounts": {"a": paper(account_id="X"), "b": {"broker": "ib", "account_id": "X"}}},
        "accounts.b.account_id: 'X' is already accounts.a",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), ERRORS, ids=[m.split(":")[0] + "|" + m.split(": ")[1][:18] for _, m in ERRORS]
)
def test_each_wrong_setting_names_key_value_and_bound(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == message


def test_presets_differ_where_documented() -> None:
    c, a, p = (PRESETS[n] for n in ("conservative", "aggressive", "paper"))
    # aggressive checks more often and concludes sooner than conservative ...
    assert a.timings.period < c.timings.period
    assert a.timings.inflight_interval < c.timings.inflight_interval
    assert a.timings.inflight_after < c.timings.inflight_after
    assert a.timings.inflight_retries < c.timings.inflight_retries
    assert a.lost_after < c.lost_after
    assert a.timings.startup_delay < c.timings.startup_delay
    # ... paper spares the broker: slower than either live preset
    assert p.timings.period > c.timings.period
    assert p.max_snapshot_age > c.max_snapshot_age
    assert parse_config(one(paper())).file.preset == "conservative"  # the default


def test_resolution_preset_then_file_then_account() -> None:
    config = parse_config(
        {
            "preset": "aggressive",
            "period": 7,
            "accounts": {
                "a": paper(account_id="A", inflight_retries=9),
                "b": paper(account_id="B", state="b.db"),
            },
        }
    )
    a, b = config.accounts
    assert (a.timings.period, a.timings.inflight_retries) == (7.0, 9)
    assert (b.timings.period, b.timings.inflight_retries) == (
        7.0,
        PRESETS["aggressive"].timings.inflight_retries,
    )
    assert a.timings.inflight_after == PRESETS["aggressive"].timings.inflight_after
    assert config.lost_after == PRESETS["aggressive"].lost_after
    assert a.broker == "paper"


def test_describe_shows_credentials_as_names_and_secrets_as_stars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "PKSECRETVALUE1")
    monkeypatch.delenv("MY_SECRET", raising=False)
    monkeypatch.setenv("MY_STORE", "postgresql://u:hunter2@127.0.0.1/db")
    config = parse_config(
        one(
            {
                "broker": "alpaca",
                "account_id": "A",
                "credentials": {"api_key": "MY_KEY", "secret_key": "MY_SECRET"},
            },
            "a",
            store_env="MY_STORE",
        )
    )
    shown = msgspec.json.encode(config.describe()).decode()
    assert "PKSECRETVALUE1" not in shown
    assert "hunter2" not in shown
    creds = config.describe()["accounts"]["a"]["credentials"]
    assert creds["api_key"] == {"env": "MY_KEY", "value": "***"}
    assert creds["secret_key"] == {"env": "MY_SECRET", "value": "(not set)"}
    assert missing_env(config) == [
        "accounts.a.credentials.secret_key: environment variable MY_SECRET is not set"
    ]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_config_init_writes_a_file_that_checks_as_its_preset(preset: str) -> None:
    config = parse_config(tomllib.loads(starting_file(preset)))
    assert config.file.preset == preset
    assert config.accounts[0].timings == PRESETS[preset].timings


def test_cli_config_check_exits_1_with_the_message_and_init_round_trips(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[accounts.ib1]\nbroker = "ib"\naccount_id = "DU1"\ninflight_retries = 0\n')
    trueup = [sys.executable, "-m", "trueup.cli"]
    result = subprocess.run(  # noqa: S603 - our interpreter, our command
        [*trueup, "config", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "accounts.ib1.inflight_retries: must be >= 1, got 0" in result.stderr
    # `run` refuses the same file before anything connects or opens
    store = tmp_path / "never.db"
    bad.write_text(bad.read_text() + "\n[http]\nport = 0\n\n# store\n")
    result = subprocess.run(  # noqa: S603 - our interpreter, our command
        [*trueup, "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert "accounts.ib1.inflight_retries: must be >= 1, got 0" in result.stderr
    assert not store.exists()
    good = tmp_path / "good.toml"
    subprocess.run(  # noqa: S603 - our interpreter, our command
        [*trueup, "config", "init", "--preset", "paper", "--output", str(good)], check=True
    )
    checked = subprocess.run(  # noqa: S603 - our interpreter, our command
        [*trueup, "config", "check", str(good)], capture_output=True, text=True, check=True
    )
    assert msgspec.json.decode(checked.stdout)["preset"] == "paper"


def test_run_refuses_a_missing_credential_before_connecting(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[accounts.a]\nbroker = "alpaca"\naccount_id = "PA1"\ncredentials = { api_key = "NO_SUCH_VAR_1", secret_key = "NO_SUCH_VAR_2" }\n'
    )
    result = subprocess.run(  # noqa: S603 - our interpreter, our command
        [sys.executable, "-m", "trueup.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert "accounts.a.credentials.api_key: environment variable NO_SUCH_VAR_1 is not set" in result.stderr
    assert not (tmp_path / "trueup.db").exists()


# -- the bounds below the config -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lost_after": -5}, "lost_after: must be >= 1, got -5"),
        ({"lost_after": 0}, "lost_after: must be >= 1, got 0"),
        ({"max_snapshot_age": -1}, "max_snapshot_age: must be > 0, got -1"),
        ({"max_snapshot_age": 0}, "max_snapshot_age: must be > 0, got 0"),
        ({"lost_after": 1.5}, "lost_after: must be an integer, got 1.5"),
    ],
)
def test_ledger_open_rejects_out_of_range_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Ledger.open(f"memory://{unique_cid('cfg')}", **kwargs)
    assert str(caught.value) == message


def test_service_rejects_an_out_of_range_inflight_period() -> None:
    with Ledger.open(f"memory://{unique_cid('cfg')}") as ledger:
        with pytest.raises(ConfigError, match=r"^inflight_period: must be > 0, got 0$"):
            ReconciliationService(ledger, object(), accounts=["A"], inflight_period=0)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"^inflight_retries: must be >= 1, got 0$"):
            ReconciliationService(ledger, object(), accounts=["A"], inflight_retries=0)  # type: ignore[arg-type]


def test_a_position_discrepancy_resolves_when_both_sides_go_flat() -> None:
    # The broker held a position we never booked (alert policy: nothing repaired), then it
    # went away at the broker: nothing disagrees any more, so the discrepancy must close.
    with Ledger.open(
        f"memory://{unique_cid('flat')}", clock=lambda: at(100), policies={"A": PositionPolicy.ALERT}
    ) as ledger:
        ledger.begin_startup("A")
        held = BrokerSnapshot(
            "A",
            at(99),
            orders=[],
            fills=[],
            positions=[PositionReport("A", "AAPL", Decimal(10), Decimal(100), at(99))],
            complete_history=True,
        )
        ledger.reconcile(held)
        assert [d.kind for d in ledger.discrepancies("A")] == ["MISSING_LOCAL_POSITION"]
        ledger.reconcile(
            BrokerSnapshot("A", at(99), orders=[], fills=[], positions=[], complete_history=True)
        )
        assert ledger.discrepancies("A") == []


# -- the generated reference -------------------------------------------------------------------


def test_every_config_field_is_in_the_docs_reference() -> None:
    text = DOCS.read_text()
    block = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", text, re.DOTALL)
    assert block, "docs/operations.md lacks the config-reference markers"
    assert block[1] == config_reference(), "regenerate it: trueup config reference"
    for _, cls in REFERENCE_TABLES:
        for field in msgspec.structs.fields(cls):
            assert f"| `{field.encode_name}` |" in block[1], field.name
    assert set(TIMING_FIELDS) <= set(block[1].replace("`", " ").split())
