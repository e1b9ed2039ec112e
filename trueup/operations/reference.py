"""Text generated from the config Structs: the reference in docs/operations.md, `config init`."""

from __future__ import annotations

from typing import Any

import msgspec

from trueup.operations.config import (
    PRESETS,
    AlpacaAccount,
    AlpacaCredentials,
    ConfigFile,
    Http,
    IbAccount,
    IbCredentials,
    KiteAccount,
    KiteCredentials,
    MarketHours,
    OperatorGrant,
    PaperAccount,
    PaperFaults,
)
from trueup.operations.sink_config import (
    AlertsSinkSettings,
    NatsSinkSettings,
    SinksTable,
    WebhookSinkSettings,
)

__all__ = ["REFERENCE_TABLES", "config_reference", "starting_file"]

REFERENCE_TABLES: tuple[tuple[str, type[msgspec.Struct]], ...] = (
    ("top level", ConfigFile),
    ("[http]", Http),
    ('[accounts.NAME] with broker = "paper"', PaperAccount),
    ("[accounts.NAME.faults] (paper)", PaperFaults),
    ("[accounts.NAME.market_hours] (every broker)", MarketHours),
    ('[accounts.NAME] with broker = "alpaca"', AlpacaAccount),
    ("[accounts.NAME.credentials] (alpaca)", AlpacaCredentials),
    ('[accounts.NAME] with broker = "kite"', KiteAccount),
    ("[accounts.NAME.credentials] (kite)", KiteCredentials),
    ('[accounts.NAME] with broker = "ib"', IbAccount),
    ("[accounts.NAME.credentials] (ib)", IbCredentials),
    ("[operators.NAME]", OperatorGrant),
    ("[sinks]", SinksTable),
    ("[sinks.nats]", NatsSinkSettings),
    ("[sinks.webhook]", WebhookSinkSettings),
    ("[sinks.alerts]", AlertsSinkSettings),
)


def _constraint(t: msgspec.inspect.Type) -> tuple[str, str]:
    """A field's type and bounds in words."""
    if isinstance(t, msgspec.inspect.Metadata):
        return _constraint(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        inner = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        return _constraint(inner[0]) if len(inner) == 1 else ("any", "")
    bounds: list[str] = []
    for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        value = getattr(t, attr, None)
        if value is not None:
            bounds.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    if getattr(t, "min_length", None):
        bounds.append("not empty")
    if pattern := getattr(t, "pattern", None):
        bounds.append(
            "an environment variable name"
            if pattern == _ENV_NAME
            else f"matches `{pattern.replace('|', chr(92) + '|')}`"
        )
    if isinstance(t, msgspec.inspect.LiteralType):
        return "string", "one of " + ", ".join(f"`{v}`" for v in t.values)
    names = {
        msgspec.inspect.FloatType: "seconds / number",
        msgspec.inspect.IntType: "integer",
        msgspec.inspect.StrType: "string",
        msgspec.inspect.ListType: "list",
        msgspec.inspect.VarTupleType: "list",
        msgspec.inspect.DictType: "tables",
        msgspec.inspect.StructType: "table",
        msgspec.inspect.BoolType: "boolean",
    }
    return names.get(type(t), type(t).__name__), ", ".join(bounds)


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _default(field: msgspec.inspect.Field) -> str:
    if field.required:
        return "required"
    value: Any = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
    if value is None:
        return "preset" if field.name in _TIMINGS else "none"
    if isinstance(value, msgspec.Struct):
        return "see its table"
    return f"`{msgspec.json.encode(value).decode()}`"


_TIMINGS = {
    "startup_delay",
    "period",
    "inflight_interval",
    "inflight_after",
    "inflight_retries",
    "lookback",
    "lost_after",
    "max_snapshot_age",
    "closed_order_retention",
}


def config_reference() -> str:
    """The config reference in Markdown: one table per section, one row per field."""
    lines: list[str] = []
    for title, cls in REFERENCE_TABLES:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)  # noqa: S101 - REFERENCE_TABLES holds Structs
        lines += [
            f"#### {title}",
            "",
            "| key | type | bounds | default | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        if info.tag_field is not None:
            lines.append(f"| `{info.tag_field}` | string | `{info.tag}` | required | The broker adapter. |")
        for field in info.fields:
            kind, bounds = _constraint(field.type)
            description = _description(field.type)
            lines.append(f"| `{field.name}` | {kind} | {bounds} | {_default(field)} | {description} |")
        lines.append("")
    lines += [
        "#### presets",
        "",
        "| setting | " + " | ".join(PRESETS) + " |",
        "| --- |" + " --- |" * len(PRESETS),
    ]
    for name in msgspec.structs.fields(next(iter(PRESETS.values())).timings):
        lines.append(
            f"| `{name.name}` | "
            + " | ".join(f"{getattr(p.timings, name.name):g}" for p in PRESETS.values())
            + " |"
        )
    for setting in ("lost_after", "max_snapshot_age", "closed_order_retention"):
        lines.append(
            f"| `{setting}` | " + " | ".join(f"{getattr(p, setting):g}" for p in PRESETS.values()) + " |"
        )
    return "\n".join(lines) + "\n"


def _description(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.UnionType):
        for x in t.types:
            if not isinstance(x, msgspec.inspect.NoneType):
                return _description(x)
    if isinstance(t, msgspec.inspect.Metadata):
        described = (t.extra_json_schema or {}).get("description")
        return str(described).replace("|", "\\|") if described else _description(t.type)
    if isinstance(t, msgspec.inspect.StructType):
        return (t.cls.__doc__ or "").splitlines()[0]
    return ""


def starting_file(preset: str) -> str:
    """A commented config file for `preset`: one paper account, the real brokers commented out."""
    p = PRESETS[preset]
    t = p.timings
    return f"""# trueup run --config trueup.toml        (check it: trueup config check trueup.toml)
# Every timing below is the "{preset}" preset's; delete a line to keep the preset's value.
preset = "{preset}"
store = "sqlite:///trueup.db"          # or store_env = "TRUEUP_STORE" (a URL with a password)
log_format = "text"                   # "json" for log shippers

# Global timings (seconds), overriding the preset; an account table may override them again.
startup_delay = {t.startup_delay:g}          # wait before the startup reconciliation
period = {t.period:g}                 # between periodic reconciliations
inflight_interval = {t.inflight_interval:g}      # between in-flight order checks
inflight_after = {t.inflight_after:g}         # an order SUBMITTED this long is looked up
inflight_retries = {t.inflight_retries}        # lookups without an answer before LOST
lookback = {t.lookback:g}           # order and fill history a snapshot reads (Alpaca)
lost_after = {p.lost_after}              # snapshots an order may be missing from before LOST
max_snapshot_age = {p.max_snapshot_age:g}      # an older snapshot is STALE_DATA
closed_order_retention = {p.closed_order_retention:g}  # closed longer ago: not compared periodically

[http]
host = "127.0.0.1"                    # /metrics /healthz /readyz /v1/gate/ACCOUNT /v1/status
port = 9464

[accounts.paper]
broker = "paper"                      # needs no credentials
account_id = "PAPER"
state = "paper.db"
position_policy = "alert"             # repair | alert | lock
# market_hours = {{ timezone = "America/New_York", open = "09:30", close = "16:00",
#                  weekdays = ["mon", "tue", "wed", "thu", "fri"] }}
# claims = [{{ strategy = "mm", symbol = "AAPL" }}]
# faults = {{ drop = 0.05, duplicate = 0.05, delay = 0.1, reorder = 0.1 }}

# Credentials are the NAMES of environment variables, never their values.
# [accounts.alpaca1]
# broker = "alpaca"
# account_id = "PA1234567"
# credentials = {{ api_key = "APCA_API_KEY_ID", secret_key = "APCA_API_SECRET_KEY" }}
#
# [accounts.kite1]
# broker = "kite"
# account_id = "AB1234"
# credentials = {{ api_key = "KITE_API_KEY", access_token = "KITE_ACCESS_TOKEN",
#                 api_secret = "KITE_API_SECRET" }}
#
# [accounts.ib1]
# broker = "ib"
# account_id = "DU1234567"
# credentials = {{ host = "IB_HOST", port = "IB_PORT", client_id = "IB_CLIENT_ID" }}
# inflight_retries = 5

# Sinks, each optional, each in a thread of the daemon (secrets are variable NAMES too).
# [sinks.nats]                        # JetStream: subjects trueup.<account>.<kind>
# servers = ["nats://127.0.0.1:4222"]  # or servers_env = "NATS_URLS" (URLs with credentials)
# stream = "TRUEUP"
#
# [sinks.webhook]                     # signed JSON POSTs (X-Trueup-Signature)
# url = "https://example.internal/trueup"
# secret_env = "TRUEUP_WEBHOOK_SECRET"
#
# [sinks.alerts]                      # people, through apprise (slack://, tgram://, mailto://)
# urls_env = "TRUEUP_ALERT_URLS"
# min_severity = "ERROR"
"""
