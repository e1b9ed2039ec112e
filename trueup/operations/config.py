"""The `trueup run` config file: TOML read with `tomllib`, validated by msgspec Structs.

A file names a preset (`conservative`, the default; `aggressive`; `paper`), may override
any timing globally, and has one table per account under ``[accounts.NAME]``, which may
override the timings again for that account. Resolution: preset, then the file's
top-level values, then the account's. Every bound is a msgspec constraint; an error names
the key, the value and the bound (``accounts.ib1.inflight_retries: must be >= 1, got 0``).

Credentials are the *names* of environment variables, never their values; the values
are read only when a broker client is made (`trueup.operations.brokers`), and
`Config.describe` shows them as ``***``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from trueup.adapters.eventstore.store import redact
from trueup.domain.errors import ConfigError
from trueup.operations.presets import (
    PRESETS,
    BrokerDeadline,
    ClosedOrderRetention,
    InflightAfter,
    InflightInterval,
    InflightRetries,
    Lookback,
    LostAfter,
    MatchedEvery,
    MaxSnapshotAge,
    Period,
    StartupDelay,
    StreamDownGrace,
    StreamMessageWait,
    Timings,
)
from trueup.operations.sink_config import SINK_CHOICES, SinksTable
from trueup.settings import (
    Count,
    NonEmpty,
    PositiveSeconds,
    validate,
)

__all__ = [
    "BROKERS",
    "PRESETS",
    "AccountSettings",
    "AlpacaAccount",
    "Config",
    "ConfigFile",
    "IbAccount",
    "KiteAccount",
    "MarketHours",
    "OperatorGrant",
    "PaperAccount",
    "Timings",
    "load_config",
    "parse_config",
]

BROKERS: Final = ("paper", "alpaca", "kite", "ib")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PRESET_NAMES: Final = ("conservative", "aggressive", "paper")
POLICIES: Final = ("repair", "alert", "lock")
CHOICES: Final = {
    "broker": BROKERS,
    "weekdays": WEEKDAYS,
    "preset": PRESET_NAMES,
    "position_policy": POLICIES,
    "log_format": ("text", "json"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "permissions": ("manage_reconciliation",),
    **SINK_CHOICES,
}

EnvName = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The NAME of an environment variable holding the value (never the value).",
    ),
]
Probability = Annotated[float, Meta(ge=0, le=1)]
Port = Annotated[int, Meta(ge=0, le=65535, description="TCP port (0: any free port).")]


ClockTime = Annotated[
    str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM, local to `timezone`.")
]


class Claim(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A strategy's claim on a symbol: orphan orders in it quarantine only that strategy."""

    strategy: Annotated[NonEmpty, Meta(description="The strategy that owns the symbol.")]
    symbol: Annotated[NonEmpty, Meta(description="The symbol it owns.")]


class MarketHours(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """When the account's market is open (`trueup_market_open`: the silent-stream alert waits for it)."""

    timezone: Annotated[NonEmpty, Meta(description="IANA time zone of the open and close times.")] = (
        "America/New_York"
    )
    open: Annotated[ClockTime, Meta(description="Opening time, HH:MM local.")] = "09:30"
    close: Annotated[
        ClockTime, Meta(description="Closing time, HH:MM local (before `open`: the session spans midnight).")
    ] = "16:00"
    weekdays: Annotated[
        tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...],
        Meta(min_length=1, description="Days the session opens on (local): mon ... sun."),
    ] = ("mon", "tue", "wed", "thu", "fri")

    def __post_init__(self) -> None:
        """A time zone the system knows (msgspec has no constraint for it)."""
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            msg = f"timezone must be an IANA time zone such as America/New_York, got {self.timezone!r}"
            raise ValueError(msg) from None
        if self.open == self.close:
            msg = f"open and close must differ, got {self.open!r} for both"
            raise ValueError(msg)

    def is_open(self, now: datetime) -> bool:
        """Whether the session is open at `now` (tz-aware)."""
        local = now.astimezone(zoneinfo.ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        start, end = _minutes(self.open), _minutes(self.close)
        if start < end:
            return WEEKDAYS[local.weekday()] in self.weekdays and start <= minute < end
        # Overnight session: the part after midnight belongs to the day it opened.
        if minute >= start:
            return WEEKDAYS[local.weekday()] in self.weekdays
        opened = local - timedelta(days=1)
        return minute < end and WEEKDAYS[opened.weekday()] in self.weekdays


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


US_EQUITIES: Final = MarketHours()
NSE_EQUITIES: Final = MarketHours(timezone="Asia/Kolkata", open="09:15", close="15:30")


class Http(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where the HTTP endpoint listens (/metrics, /healthz, /readyz, /v1/gate, /v1/status)."""

    host: Annotated[
        NonEmpty, Meta(description="Address to listen on; keep 127.0.0.1 unless a proxy guards it.")
    ] = "127.0.0.1"
    port: Port = 9464


class PaperFaults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The paper broker's callback faults (probabilities per callback)."""

    drop: Annotated[Probability, Meta(description="Probability that a callback is never delivered.")] = 0.0
    duplicate: Annotated[Probability, Meta(description="Probability that a callback is delivered twice.")] = (
        0.0
    )
    delay: Annotated[Probability, Meta(description="Probability that a callback is held back.")] = 0.0
    reorder: Annotated[
        Probability, Meta(description="Probability that a callback is overtaken by later ones.")
    ] = 0.0
    max_delay: Annotated[Count, Meta(description="Longest hold of a delayed callback, in market steps.")] = 3
    reorder_window: Annotated[
        Count, Meta(description="Most later callbacks that may overtake a reordered one.")
    ] = 2


class Account(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, tag_field="broker"):
    """What every account table has; `broker` picks the kind."""

    account_id: Annotated[NonEmpty, Meta(description="The broker's account id (the ledger's account name).")]
    position_policy: Annotated[
        Literal["repair", "alert", "lock"],
        Meta(description="What a position mismatch does: repair, alert or lock."),
    ] = "repair"
    claims: Annotated[
        list[Claim], Meta(description="Claims of external orders: [{strategy, symbol}, ...].")
    ] = []
    startup_delay: StartupDelay | None = None
    period: Period | None = None
    inflight_interval: InflightInterval | None = None
    inflight_after: InflightAfter | None = None
    inflight_retries: InflightRetries | None = None
    lookback: Lookback | None = None
    broker_timeout: BrokerDeadline | None = None
    stream_wait: StreamMessageWait | None = None
    stream_grace: StreamDownGrace | None = None
    market_hours: Annotated[
        MarketHours, Meta(description="When the market is open (the silent-stream alert).")
    ] = US_EQUITIES


class PaperAccount(Account, tag="paper", frozen=True):
    """The paper broker: a simulated broker in one SQLite file; needs no credentials."""

    state: Annotated[NonEmpty, Meta(description="The paper broker's state file (created if missing).")] = (
        "paper.db"
    )
    seed: Annotated[int, Meta(description="Seed of the paper market and its faults.")] = 0
    symbols: Annotated[tuple[NonEmpty, ...], Meta(description="Symbols the paper market trades.")] = (
        "AAPL",
        "MSFT",
        "TSLA",
    )
    faults: Annotated[PaperFaults, Meta(description="Callback faults of the paper broker.")] = PaperFaults()
    step_every: Annotated[
        PositiveSeconds | None,
        Meta(description="Advance the paper market one step every this many seconds (none: never)."),
    ] = None


class AlpacaCredentials(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Names of the environment variables with the Alpaca credentials."""

    api_key: EnvName = "APCA_API_KEY_ID"
    secret_key: EnvName = "APCA_API_SECRET_KEY"  # noqa: S105 - a variable's name
    base_url: EnvName | None = None
    stream_url: EnvName | None = None
    paper: EnvName | None = None


class KiteCredentials(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Names of the environment variables with the Kite credentials."""

    api_key: EnvName = "KITE_API_KEY"
    access_token: EnvName = "KITE_ACCESS_TOKEN"  # noqa: S105 - a variable's name
    api_secret: EnvName = "KITE_API_SECRET"  # noqa: S105 - a variable's name
    root: EnvName | None = None


class IbCredentials(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Names of the environment variables with the TWS / IB Gateway address (no secret)."""

    host: Annotated[
        EnvName | None,
        Meta(description="Variable with the TWS / Gateway host (none: IB_HOST, else 127.0.0.1)."),
    ] = None
    port: Annotated[
        EnvName | None, Meta(description="Variable with its port (none: IB_PORT, else 7497).")
    ] = None
    client_id: Annotated[
        EnvName | None, Meta(description="Variable with the API clientId (none: IB_CLIENT_ID, else 1).")
    ] = None


class AlpacaAccount(Account, tag="alpaca", frozen=True):
    """An Alpaca account (REST and the trade_updates stream)."""

    credentials: Annotated[AlpacaCredentials, Meta(description="Environment variable names.")] = (
        AlpacaCredentials()
    )


class KiteAccount(Account, tag="kite", frozen=True):
    """A Zerodha Kite account."""

    market_hours: Annotated[
        MarketHours, Meta(description="When the market is open (default NSE, 09:15-15:30 Asia/Kolkata).")
    ] = NSE_EQUITIES

    credentials: Annotated[KiteCredentials, Meta(description="Environment variable names.")] = (
        KiteCredentials()
    )


class IbAccount(Account, tag="ib", frozen=True):
    """An Interactive Brokers account through TWS or IB Gateway."""

    credentials: Annotated[IbCredentials, Meta(description="Environment variable names.")] = IbCredentials()


AnyAccount = PaperAccount | AlpacaAccount | KiteAccount | IbAccount

Permission = Literal["manage_reconciliation"]


class OperatorGrant(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What one operator may do with the operator commands (`trueup resolve`, `abandon`, ...)."""

    permissions: Annotated[
        list[Permission],
        Meta(description="Permissions: manage_reconciliation (resolve, abandon, unlock, claim, override)."),
    ] = []


class ConfigFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The top level of the file: the preset, global settings and overrides, the accounts."""

    preset: Annotated[
        Literal["conservative", "aggressive", "paper"],
        Meta(description="Preset of every timing: conservative, aggressive, paper."),
    ] = "conservative"
    store: Annotated[
        NonEmpty,
        Meta(description="Store URL: sqlite:///path.db or postgresql://... (a password is never shown)."),
    ] = "sqlite:///trueup.db"
    store_env: Annotated[
        EnvName | None,
        Meta(description="Name of an environment variable holding the store URL (wins over `store`)."),
    ] = None
    log_format: Annotated[
        Literal["text", "json"], Meta(description="One line per event: text, or JSON for log shippers.")
    ] = "text"
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], Meta(description="Least level logged.")
    ] = "INFO"
    http: Annotated[Http, Meta(description="The HTTP endpoint.")] = Http()
    lost_after: LostAfter | None = None
    max_snapshot_age: MaxSnapshotAge | None = None
    closed_order_retention: ClosedOrderRetention | None = None
    match_every: MatchedEvery | None = None
    lookback: Lookback | None = None
    startup_delay: StartupDelay | None = None
    period: Period | None = None
    inflight_interval: InflightInterval | None = None
    inflight_after: InflightAfter | None = None
    inflight_retries: InflightRetries | None = None
    broker_timeout: BrokerDeadline | None = None
    stream_wait: StreamMessageWait | None = None
    stream_grace: StreamDownGrace | None = None
    # Each table is validated on its own (`parse_config`), so an error names its
    # accounts.NAME: msgspec's path of a dict value does not carry the key.
    accounts: Annotated[
        dict[str, Any], Meta(min_length=1, description="One table per account: [accounts.NAME].")
    ]
    operators: Annotated[
        dict[Annotated[str, Meta(pattern=r"\S")], Any],
        Meta(description="One table per operator: [operators.NAME] with their permissions."),
    ] = {}
    sinks: Annotated[
        SinksTable, Meta(description="Sinks the daemon hosts: [sinks.nats], [sinks.webhook], [sinks.alerts].")
    ] = SinksTable()


TIMING_FIELDS: Final = tuple(f.name for f in msgspec.structs.fields(Timings))


@dataclass(frozen=True)
class AccountSettings:
    """One account, resolved: its table and its timings with the preset and overrides applied."""

    name: str
    account: AnyAccount
    timings: Timings

    @property
    def broker(self) -> str:
        """``paper``, ``alpaca``, ``kite`` or ``ib``."""
        return str(type(self.account).__struct_config__.tag)


@dataclass(frozen=True)
class Config:
    """The resolved config: what `trueup run` runs."""

    file: ConfigFile
    lost_after: int
    max_snapshot_age: float
    closed_order_retention: float
    match_every: float
    accounts: tuple[AccountSettings, ...]
    operators: dict[str, OperatorGrant] = dataclasses.field(default_factory=dict)

    def permissions(self, operator: str) -> frozenset[str]:
        """The permissions `operator` holds (none for a name the config does not list)."""
        grant = self.operators.get(operator)
        return frozenset(grant.permissions) if grant is not None else frozenset()

    @property
    def store(self) -> str:
        """The store URL (from `store_env` when set)."""
        if self.file.store_env is not None:
            return os.environ.get(self.file.store_env, "")
        return self.file.store

    def env_names(self) -> dict[str, str]:
        """Every environment variable the config names, by its dotted key."""
        names: dict[str, str] = {}
        if self.file.store_env is not None:
            names["store_env"] = self.file.store_env
        for settings in self.accounts:
            credentials = getattr(settings.account, "credentials", None)
            if credentials is None:
                continue
            for field in msgspec.structs.fields(credentials):
                value = getattr(credentials, field.name)
                if value is not None:
                    names[f"accounts.{settings.name}.credentials.{field.name}"] = value
        names.update(self.file.sinks.env_names())
        return names

    def describe(self) -> dict[str, Any]:
        """The resolved config as builtins, secrets as ``***`` (credentials: name and whether set)."""
        out: dict[str, Any] = {
            "preset": self.file.preset,
            "store": redact(self.store) if self.store else "(not set)",
            "store_env": self.file.store_env,
            "log_format": self.file.log_format,
            "log_level": self.file.log_level,
            "http": msgspec.to_builtins(self.file.http),
            "lost_after": self.lost_after,
            "max_snapshot_age": self.max_snapshot_age,
            "closed_order_retention": self.closed_order_retention,
            "match_every": self.match_every,
            "accounts": {},
            "operators": {name: list(g.permissions) for name, g in self.operators.items()},
        }
        for settings in self.accounts:
            table = msgspec.to_builtins(settings.account)
            table.update(msgspec.to_builtins(settings.timings))
            if "credentials" in table:
                table["credentials"] = {
                    key: {"env": name, "value": "***" if os.environ.get(name) else "(not set)"}
                    for key, name in table["credentials"].items()
                    if name is not None
                }
            out["accounts"][settings.name] = table
        out["sinks"] = _describe_sinks(self.file.sinks)
        return out


def _describe_sinks(sinks: SinksTable) -> dict[str, Any]:
    """The sink tables, each variable as its name and ``***`` (set) or ``(not set)``."""
    out: dict[str, Any] = {}
    for name, table in sinks.configured().items():
        shown = msgspec.to_builtins(table)
        for key, value in shown.items():
            if key.endswith("_env") and value is not None:
                shown[key] = {"env": value, "value": "***" if os.environ.get(value) else "(not set)"}
        if "url" in shown:
            shown["url"] = redact(shown["url"])
        out[name] = shown
    return out


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document and resolve presets and overrides.

    Raises:
        ConfigError: a setting is wrong, named with its value and bound.
    """
    file = validate(raw, ConfigFile, choices=CHOICES)
    preset = PRESETS[file.preset]
    base = msgspec.structs.asdict(preset.timings)
    base.update({k: getattr(file, k) for k in TIMING_FIELDS if getattr(file, k) is not None})
    accounts = []
    owners: dict[str, str] = {}
    for name, table in file.accounts.items():
        where = f"accounts.{name}"
        account: AnyAccount = validate(table, AnyAccount, where=where, choices=CHOICES)  # type: ignore[arg-type]
        if account.account_id in owners:
            # One ledger account per broker account: two tables on one id would mix their books
            # (a rule across tables: no msgspec constraint can say it).
            msg = (
                f"{where}.account_id: {account.account_id!r} is already accounts.{owners[account.account_id]}"
            )
            raise ConfigError(msg)
        owners[account.account_id] = name
        timings = dict(base)
        timings.update({k: getattr(account, k) for k in TIMING_FIELDS if getattr(account, k) is not None})
        accounts.append(AccountSettings(name, account, msgspec.convert(timings, Timings)))
    operators = {}
    for name, table in file.operators.items():
        where = f"operators.{name}"
        operators[name] = validate(table, OperatorGrant, where=where, choices=CHOICES)
    return Config(
        operators=operators,
        file=file,
        lost_after=file.lost_after if file.lost_after is not None else preset.lost_after,
        max_snapshot_age=file.max_snapshot_age
        if file.max_snapshot_age is not None
        else preset.max_snapshot_age,
        closed_order_retention=file.closed_order_retention
        if file.closed_order_retention is not None
        else preset.closed_order_retention,
        match_every=file.match_every if file.match_every is not None else preset.match_every,
        accounts=tuple(accounts),
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a setting is wrong.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        msg = f"{path}: cannot read the config file: {e.strerror or e}"
        raise ConfigError(msg) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = f"{path}: not valid TOML: {e}"
        raise ConfigError(msg) from None
    return parse_config(raw)


def missing_env(config: Config) -> list[str]:
    """``key: environment variable NAME is not set`` for every required variable that is empty."""
    optional = {"base_url", "stream_url", "paper", "root", "host", "port", "client_id"}
    return [
        f"{key}: environment variable {name} is not set"
        for key, name in config.env_names().items()
        if key.rsplit(".", 1)[-1] not in optional and not os.environ.get(name)
    ]
