"""Mutated official fixtures and every translator that reads broker JSON, for the fuzz tests.

The fixtures (tests/fixtures/, with their sources) are mutated the ways a broker or a
network garbles a payload: a key dropped, a value of the wrong type, a NUL or a lone
UTF-16 surrogate in a string, a deep nesting, a huge or non-finite number.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trueup.adapters.alpaca import translate as alpaca
from trueup.adapters.ib import envelope as ib
from trueup.adapters.kite import translate as kite
from trueup.adapters.paper import translate as paper
from trueup.domain.reports import Report

FIXTURES = Path(__file__).parent.parent / "fixtures"
ACCOUNT = "FUZZ1"
AS_OF = datetime(2024, 1, 2, 15, 30, tzinfo=UTC)

Translator = Callable[[str], Sequence[Any]]


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def _no_reports(_key: object) -> Sequence[Report]:
    """A translator that answers a dedupe key, not reports: read, then nothing to book."""
    return []


def _kite_holdings(raw: str) -> Sequence[Report]:
    return kite.to_account_positions(_fixture("kite/positions.json"), raw, account=ACCOUNT, as_of=AS_OF)


def _kite_positions(raw: str) -> Sequence[Report]:
    return kite.to_account_positions(raw, _fixture("kite/holdings.json"), account=ACCOUNT, as_of=AS_OF)


# (fixture, translator name, translator): every JSON translator of every adapter.
TRANSLATORS: list[tuple[str, str, Translator]] = [
    (
        "alpaca/streaming.md__trade_updates_fill_example.json",
        "alpaca.trade_update",
        lambda r: alpaca.to_reports_from_trade_update(r, account=ACCOUNT),
    ),
    (
        "alpaca/streaming.md__trade_updates_fill_example.json",
        "alpaca.trade_update_fill_key",
        lambda r: _no_reports(alpaca.trade_update_fill_key(r, account=ACCOUNT)),
    ),
    (
        "alpaca/test_order_routes.py__test_get_orders.json",
        "alpaca.orders",
        lambda r: alpaca.to_order_reports(r, account=ACCOUNT),
    ),
    (
        "alpaca/test_order_routes.py__test_get_order_by_id.json",
        "alpaca.order",
        lambda r: alpaca.to_order_reports(r, account=ACCOUNT),
    ),
    (
        "alpaca/test_order_routes.py__test_cancel_orders.json",
        "alpaca.bulk",
        lambda r: alpaca.to_order_reports_from_bulk(r, account=ACCOUNT),
    ),
    (
        "alpaca/test_position_routes.py__test_get_all_positions.json",
        "alpaca.positions",
        lambda r: alpaca.to_position_reports(r, account=ACCOUNT, as_of=AS_OF),
    ),
    (
        "alpaca/test_account_activities_routes.py__test_get_activities_for_account_max_items_and_single_request_date.json",
        "alpaca.activities",
        lambda r: alpaca.to_fill_reports_from_activities(r, account=ACCOUNT),
    ),
    (
        "alpaca/account-trade-activity-v2.yaml__example.json",
        "alpaca.activity_keys",
        lambda r: _no_reports(alpaca.activity_fill_keys(r, account=ACCOUNT)),
    ),
    ("kite/orders.json", "kite.orders", lambda r: kite.to_order_reports(r, account=ACCOUNT)),
    (
        "kite/order_info.json",
        "kite.history",
        lambda r: kite.to_order_reports_from_history(r, account=ACCOUNT),
    ),
    ("kite/trades.json", "kite.trades", lambda r: kite.to_fill_reports(r, account=ACCOUNT)),
    ("kite/order_trades.json", "kite.order_trades", lambda r: kite.to_fill_reports(r, account=ACCOUNT)),
    (
        "kite/positions.json",
        "kite.positions",
        lambda r: kite.to_position_reports(r, account=ACCOUNT, as_of=AS_OF),
    ),
    ("kite/positions.json", "kite.account_positions", _kite_positions),
    ("kite/holdings.json", "kite.holdings", _kite_holdings),
    ("kite/postback.json", "kite.update", lambda r: kite.to_reports_from_update(r, account=ACCOUNT)),
    ("kite/postback.json", "kite.trigger", lambda r: kite.update_as_trigger(r, account=ACCOUNT)),
    ("kite/postback.json", "ib.envelope", lambda r: ib.to_reports(r, account=ACCOUNT)),
    ("kite/postback.json", "paper.reports", lambda r: paper.to_reports(r, account=ACCOUNT)),
]

_STRANGE_TEXT = ["\x00", "AA\x00PL", "\ud800", "x\udfffy", "", " ", "\u202e", "9" * 400]
_STRANGE_VALUES: list[Any] = [
    None,
    True,
    [],
    {},
    0,
    -1,
    10**400,
    -(10**400),
    1e308,
    "1e999999999",
    "-1e999999999",
    "NaN",
    "Infinity",
    "9" * 5000,
    "0." + "0" * 5000 + "1",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "99999999999999999999",
    *_STRANGE_TEXT,
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value` (dict keys and list indexes)."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


_DEEP = "__deep_nesting__"
"""Marks where `mutate` writes a deep nesting into the text (json.dumps cannot encode one)."""


def _nested(depth: int) -> str:
    return '{"a":[' * depth + "1" + "]}" * depth


def mutate(text: str, rng: random.Random) -> str:
    """`text` (a JSON fixture) with one to three mutations applied."""
    if rng.random() < 0.05:
        return rng.choice(["", "{", "null", "[]", "\x00", "\ud800", "[" * 100_000, '{"a":' * 50_000])
    doc = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = rng.random()
        if action < 0.25 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.45 and isinstance(parent[last], str):
            cut = rng.randint(0, len(parent[last]))
            parent[last] = parent[last][:cut] + rng.choice(_STRANGE_TEXT) + parent[last][cut:]
        elif action < 0.5:
            parent[last] = _DEEP
        else:
            parent[last] = rng.choice(_STRANGE_VALUES)
    # ensure_ascii: a lone surrogate goes out as a `\ud800` escape, as a broker's JSON carries it.
    raw = json.dumps(doc, ensure_ascii=rng.random() < 0.5 or _has_surrogate(doc))
    return raw.replace(f'"{_DEEP}"', _nested(rng.choice([50, 2000, 20_000])))


def _has_surrogate(value: Any) -> bool:
    return any(
        "\ud800" <= c <= "\udfff"
        for c in json.dumps(value, ensure_ascii=False, default=str)
        if c > "\uffff" or "\ud800" <= c <= "\udfff"
    )


def cases(seed: int, count: int) -> list[tuple[str, Translator, str]]:
    """`count` (translator name, translator, mutated payload), reproducible from `seed`."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        fixture, name, translate = TRANSLATORS[i % len(TRANSLATORS)]
        out.append((name, translate, mutate(_fixture(fixture), rng)))
    return out
