"""Bounds of the ledger's settings as msgspec constraints, and errors that name key, value and bound.

`validate` turns msgspec's validation error into a `ConfigError` in one form for every
setting, wherever it came from (a `Ledger.open` argument, a config file's table):
``accounts.ib1.inflight_retries: must be >= 1, got 0``. The bounds live only in the
`Annotated` constraints, never in hand-written checks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta

from trueup.domain.errors import ConfigError

__all__ = [
    "Count",
    "LedgerSettings",
    "NonEmpty",
    "PositiveSeconds",
    "Seconds",
    "ServiceSettings",
    "validate",
]

T = TypeVar("T")

Seconds = Annotated[float, Meta(ge=0)]
"""A duration in seconds, zero allowed."""
PositiveSeconds = Annotated[float, Meta(gt=0)]
"""A duration in seconds, more than zero."""
Count = Annotated[int, Meta(ge=1)]
"""A count of at least one."""
NonEmpty = Annotated[str, Meta(min_length=1)]
"""A string with at least one character."""


class LedgerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ledger's reconciliation settings (`Ledger.open`)."""

    lost_after: Annotated[
        int, Meta(ge=1, description="Complete snapshots an open order may be missing from before LOST.")
    ] = 3
    max_snapshot_age: Annotated[
        float, Meta(gt=0, description="Seconds after which a broker snapshot is STALE_DATA.")
    ] = 60.0
    match_every: Annotated[
        float,
        Meta(ge=0, description="Seconds between two BooksMatched records while the books keep matching."),
    ] = 300.0

    closed_order_retention: (
        Annotated[
            PositiveSeconds,
            Meta(
                description=(
                    "Seconds after which an order closed here and at the broker is left out of the "
                    "comparison of later reconciliations (none: every listed order is compared)."
                )
            ),
        ]
        | None
    ) = None


class ServiceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The reconciliation service's settings (`ReconciliationService`)."""

    accounts: Annotated[
        tuple[Annotated[str, Meta(pattern=r"\S")], ...],
        Meta(min_length=1, description="The broker accounts the service reconciles."),
    ]
    period: Annotated[float, Meta(gt=0, description="Seconds between periodic reconciliations.")] = 5.0
    inflight_after: Annotated[
        float, Meta(ge=0, description="Seconds before a SUBMITTED / PENDING_NEW order is looked up.")
    ] = 10.0
    inflight_retries: Annotated[
        int, Meta(ge=1, description="Lookups that do not find an in-flight order before it is LOST.")
    ] = 3
    inflight_period: (
        Annotated[
            PositiveSeconds, Meta(description="Seconds between in-flight checks (none: after each period).")
        ]
        | None
    ) = None
    broker_timeout: Annotated[
        PositiveSeconds, Meta(description="Deadline of each snapshot and lookup the service makes.")
    ] = 30.0
    stream_wait: Annotated[
        PositiveSeconds, Meta(description="Seconds a stream message waits for its account's reconciliation.")
    ] = 60.0
    stream_grace: Annotated[
        PositiveSeconds, Meta(description="Seconds an account may go without a live stream before it blocks.")
    ] = 30.0


_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_BOUND: Final = re.compile(r"^Expected `[^`]*` (?P<op>>=|<=|>|<) (?P<bound>\S+)$")
_LENGTH: Final = re.compile(r"^Expected `[^`]*` of length (?P<op>>=|<=) (?P<bound>\d+)$")
_TYPE: Final = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`$")
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")
_CHOICE: Final = re.compile(r"^Invalid (?:enum )?value (?P<value>.*)$")
_PATTERN: Final = re.compile(r"^Expected `str` matching regex '(?P<regex>.*)'$")
_STEP: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_TYPE_NAMES: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
}


def validate(
    raw: Mapping[str, Any],
    cls: type[T],
    *,
    where: str = "",
    choices: Mapping[str, tuple[str, ...]] | None = None,
) -> T:
    """Convert `raw` into `cls`, or raise ConfigError naming the key, the value and the bound.

    Args:
        raw: the settings, as a mapping of builtin values (TOML tables, keyword arguments).
        cls: the msgspec Struct whose constraints are the bounds.
        where: the dotted path of `raw` itself (``accounts.ib1``), prefixed to every key.
        choices: allowed values by setting name, to list in the message of a bad choice.

    Raises:
        ConfigError: ``<key>: must be >= 1, got 0`` and the like; one setting per error.
    """
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as e:
        raise ConfigError(describe_error(str(e), raw, cls, where=where, choices=choices or {})) from None


def describe_error(  # noqa: C901, PLR0911 - one branch per kind of msgspec error
    message: str,
    raw: Mapping[str, Any],
    cls: type[Any],
    *,
    where: str,
    choices: Mapping[str, tuple[str, ...]],
) -> str:
    """The message of a msgspec error rewritten as ``<key>: <what is wrong>, got <value>``."""
    match = _AT.match(message)
    what = match["what"] if match else message
    path = (match["path"] if match else None) or ""

    def key(*more: str) -> str:
        dotted = where + path
        for part in more:
            dotted = f"{dotted}.{part}"
        return dotted.lstrip(".") or "(top level)"

    value = _lookup(raw, path)
    if m := _MISSING.match(what):
        return f"{key(m['field'])}: required setting is missing"
    if m := _UNKNOWN.match(what):
        return f"{key(m['field'])}: unknown setting{_did_you_mean(m['field'], cls, path)}"
    if m := _BOUND.match(what):
        return f"{key()}: must be {m['op']} {_number(m['bound'])}, got {_show(value)}"
    if m := _LENGTH.match(what):
        if m["bound"] == "1" and m["op"] == ">=":
            return f"{key()}: must not be empty, got {_show(value)}"
        return f"{key()}: length must be {m['op']} {m['bound']}, got {_show(value)}"
    if m := _PATTERN.match(what):
        regex = m["regex"].replace("\\\\", "\\")  # msgspec doubles a backslash in the message
        return f"{key()}: must match {regex}, got {_show(value)}"
    if m := _TYPE.match(what):
        wants = [w.strip() for w in m["want"].split("|") if w.strip() != "null"]
        want = " or ".join(_TYPE_NAMES.get(w, w) for w in wants)
        return f"{key()}: must be {want}, got {_show(value)}"
    if _CHOICE.match(what):
        name = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])  # an item of a list: the list's
        allowed = choices.get(name)
        listed = f"one of {', '.join(allowed)}" if allowed else "a known value"
        return f"{key()}: must be {listed}, got {_show(value)}"
    return f"{key()}: {what}"


def _lookup(raw: object, path: str) -> object:
    """The value at msgspec's error path (``.a.b[0].c``) in `raw`, or None."""
    value: object = raw
    for name, index in _STEP.findall(path):
        if name and isinstance(value, Mapping):
            value = value.get(name)
        elif index and isinstance(value, list | tuple) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def _did_you_mean(field: str, cls: type[Any], path: str) -> str:
    """`` (did you mean x?)`` when a known setting of that table is close to `field`."""
    known: list[str] = []
    info = msgspec.inspect.type_info(cls)
    for name, _ in _STEP.findall(path):
        info = _step_into(info, name) if name else _step_into(info, None)
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    for member in members:
        if isinstance(member, msgspec.inspect.StructType):
            known += [f.encode_name for f in member.fields]
    close = difflib.get_close_matches(field, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _step_into(info: msgspec.inspect.Type, name: str | None) -> msgspec.inspect.Type:
    """The type of field `name` of a struct (or the item type of a list when `name` is None)."""
    while isinstance(info, msgspec.inspect.Metadata):  # an Annotated field: its constraints' type
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        info = structs[0] if len(structs) == 1 else info
    if name is None and isinstance(info, msgspec.inspect.ListType):
        return info.item_type
    if isinstance(info, msgspec.inspect.StructType):
        for f in info.fields:
            if f.encode_name == name:
                return f.type
    return msgspec.inspect.AnyType()


def _number(text: str) -> str:
    """``0.0`` as ``0``: bounds read as the user wrote them."""
    return text.removesuffix(".0")


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing"
    return str(value)
