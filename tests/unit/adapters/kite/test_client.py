"""KiteClient without a broker: configuration, secrets, the postback receiver and the stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.adapters.kite.test_translate import order_json
from trueup.adapters.base import BrokerClient, RawMessage, RefreshNeeded, StreamItem
from trueup.adapters.kite import transport
from trueup.adapters.kite.client import InboxFull, KiteClient
from trueup.adapters.kite.postback import serve
from trueup.domain.errors import ConfigError, InvalidReport

ACCOUNT = "ZK1"
KEY, TOKEN, SECRET = "unit-api-key", "unit-access-token-123", "unit-api-secret-456"
ENV = {"KITE_API_KEY": KEY, "KITE_ACCESS_TOKEN": TOKEN, "KITE_API_SECRET": SECRET}


def make_client(**options: Any) -> KiteClient:
    return KiteClient(KEY, TOKEN, SECRET, account=ACCOUNT, root="http://127.0.0.1:9", **options)


def signed(body: dict[str, Any], secret: str = SECRET) -> bytes:
    checksum = hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode()).hexdigest()
    return json.dumps(body | {"checksum": checksum}).encode()


# --- configuration and secrets -------------------------------------------------------------------


def test_it_is_a_broker_client() -> None:
    assert isinstance(make_client(), BrokerClient)
    assert make_client().name == "kite"


def test_from_env_reads_the_four_variables() -> None:
    client = KiteClient.from_env(ACCOUNT, environ={**ENV, "KITE_ROOT": "http://127.0.0.1:1"}, timeout=3.0)
    assert (client.account, client.root, client.timeout) == (ACCOUNT, "http://127.0.0.1:1", 3.0)
    assert KiteClient.from_env(ACCOUNT, environ=ENV).root is None  # Kite's own root


def test_from_env_names_missing_variables_never_values() -> None:
    with pytest.raises(ConfigError) as caught:
        KiteClient.from_env(ACCOUNT, environ={"KITE_API_KEY": KEY, "KITE_API_SECRET": ""})
    assert "KITE_ACCESS_TOKEN" in str(caught.value)
    assert "KITE_API_SECRET" in str(caught.value)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0}, {"lookup_attempts": 0}, {"lookup_backoff": -1}],
    ids=["timeout", "attempts", "backoff"],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_client(**options)


def test_empty_credentials_are_refused_without_echoing_the_others() -> None:
    with pytest.raises(ConfigError, match="access_token") as caught:
        KiteClient(KEY, "", SECRET, account=ACCOUNT)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError):
        make_client().set_access_token("")


def test_secrets_stay_out_of_repr_and_stream_items() -> None:
    client = make_client()
    texts = [repr(client), *(repr(t) for t in client._translators.values()), repr(vars(client))]
    for text in texts:
        assert TOKEN not in text
        assert SECRET not in text
    client.set_access_token("a-new-token-789")
    assert "a-new-token-789" not in repr(client)


# --- the postback receiver ------------------------------------------------------------------------


@pytest.fixture
def inbox() -> Iterator[tuple[list[bytes], str]]:
    received: list[bytes] = []

    def sink(body: bytes) -> None:
        if body == b"refuse":
            msg = "sink full"
            raise RuntimeError(msg)
        received.append(body)

    with serve(sink, max_body=64) as server:
        yield received, server.url


def post(url: str, body: bytes | None, method: str = "POST") -> int:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - 127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_receiver_hands_bodies_over_verbatim(inbox: tuple[list[bytes], str]) -> None:
    received, url = inbox
    assert post(url, b'{"order_id": "1", "x": "\xc3\xa9"}') == 200
    assert received == [b'{"order_id": "1", "x": "\xc3\xa9"}']


def test_receiver_refuses_other_methods_large_bodies_and_reports_a_failing_sink(
    inbox: tuple[list[bytes], str], caplog: pytest.LogCaptureFixture
) -> None:
    received, url = inbox
    assert post(url, None, method="GET") == 405
    assert post(url, b"x" * 65) == 413
    with caplog.at_level(logging.ERROR):
        assert post(url, b"refuse") == 503
    assert "sink refused" in caplog.text
    assert received == []


def test_receiver_answers_503_when_the_inbox_is_full_and_counts_it() -> None:
    client = make_client(inbox_limit=1)
    with client.serve_postbacks() as server:
        body = signed(order_json(status="UPDATE", filled_quantity=4, average_price=1500))
        assert post(server.url, body) == 200
        assert post(server.url, body) == 503  # nobody reads the stream: Kite retries later
        assert (server.receiver.refused, client.refused_postbacks) == (1, 1)
    (item,) = take(client, 1)
    assert isinstance(item, RawMessage)


def test_receiver_threads_are_bounded() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_sink(body: bytes) -> None:
        entered.set()
        release.wait(10)

    with serve(slow_sink, max_threads=1) as server:
        first = threading.Thread(target=post, args=(server.url, b"{}"))
        first.start()
        assert entered.wait(10)
        assert post(server.url, b"{}") == 503  # no second thread: answered at once
        assert server.busy == 1
        release.set()
        first.join(10)
        assert post(server.url, b"{}") == 200  # the slot is free again


# --- the stream ---------------------------------------------------------------------------------------


def take(client: KiteClient, count: int, *, feed: Any = None) -> list[StreamItem]:
    """The first `count` items of `client.stream()`; `feed` runs once the stream iterates."""

    async def go() -> list[StreamItem]:
        items: list[StreamItem] = []
        stream = client.stream()
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        if feed is not None:
            await asyncio.to_thread(feed)
        items.append(await asyncio.wait_for(first, 10))
        while len(items) < count:
            items.append(await asyncio.wait_for(anext(stream), 10))
        await stream.aclose()
        return items

    return asyncio.run(go())


def test_postbacks_wait_for_the_stream_then_one_refresh_per_burst() -> None:
    client = make_client()
    good = signed(order_json(status="UPDATE", filled_quantity=4, average_price=1500))
    client.accept_postback(good)
    client.accept_postback(good)  # a duplicate
    first, second, refresh = take(client, 3)
    assert isinstance(first, RawMessage)
    assert (first.account, first.source, first.kind) == (ACCOUNT, "kite", "postback")
    assert first.payload == good.decode()
    assert second == first
    assert refresh == RefreshNeeded(account=ACCOUNT, source="kite", reason="order updates")
    # Verified, kept raw, and applied as nothing but the refresh: the order book says what changed.
    assert first.translate(first.payload) == []


def test_a_postback_failing_verification_is_yielded_raw_and_triggers_nothing() -> None:
    client = make_client()
    forged = signed(order_json(status="COMPLETE", filled_quantity=10), secret="forger")  # noqa: S106 - a forger's secret
    good = signed(order_json(status="UPDATE", filled_quantity=4, average_price=1500))

    def feed() -> None:
        client.accept_postback(forged)

    (bad,) = take(client, 1, feed=feed)
    assert isinstance(bad, RawMessage)
    with pytest.raises(InvalidReport, match="not verified"):
        bad.translate(bad.payload)
    # The next authentic one is followed by the refresh; the forged one never was.
    client.accept_postback(forged)
    client.accept_postback(good)
    items = take(client, 3)
    assert [type(i).__name__ for i in items] == ["RawMessage", "RawMessage", "RefreshNeeded"]


def test_an_authentic_postback_of_ours_never_changes_an_order_by_itself() -> None:
    # The checksum covers order_id + order_timestamp only: a body with a captured checksum
    # verifies whatever it says (quantity 1, REJECTED). It may only trigger a refresh.
    client = make_client()
    genuine = order_json(status="OPEN", quantity=10)
    forged = {**genuine, "status": "REJECTED", "quantity": 1}
    body = signed(genuine)
    forged["checksum"] = json.loads(body)["checksum"]
    client.accept_postback(json.dumps(forged).encode())
    item, refresh = take(client, 2)
    assert isinstance(item, RawMessage)
    assert json.loads(item.payload)["status"] == "REJECTED"  # kept verbatim
    assert item.translate(item.payload) == []
    assert isinstance(refresh, RefreshNeeded)


def test_a_full_inbox_refuses_postbacks_and_forces_a_refresh_for_dropped_updates() -> None:
    client = make_client(inbox_limit=2)
    good = signed(order_json(status="UPDATE", filled_quantity=4, average_price=1500))
    client.accept_postback(good)
    client.accept_postback(good)
    with pytest.raises(InboxFull, match="postback refused"):
        client.accept_postback(good)
    client.on_order_update(object(), json.loads(json.dumps(order_json(status="OPEN", checksum=""))))
    assert (client.refused_postbacks, client.dropped_updates) == (1, 1)
    items = take(client, 3)
    assert [type(i).__name__ for i in items] == ["RawMessage", "RawMessage", "RefreshNeeded"]


def test_undecodable_postback_bytes_are_kept() -> None:
    client = make_client()
    client.accept_postback(b"\xff\xfe not json")
    (item,) = take(client, 1)
    assert isinstance(item, RawMessage)
    assert item.payload == "\\xff\\xfe not json"
    with pytest.raises(InvalidReport):
        item.translate(item.payload)


def test_websocket_order_updates_are_yielded_and_trigger_a_refresh() -> None:
    client = make_client()
    # KiteTicker hands over the decoded frame's data (floats; checksum blank).
    data = json.loads(json.dumps(order_json(status="MODIFIED", quantity=6, price=101.5, checksum="")))
    client.on_order_update(object(), data)
    update, refresh = take(client, 2)
    assert isinstance(update, RawMessage)
    assert update.kind == "ws_order_update"
    assert json.loads(update.payload) == {"type": "order", "data": data}
    assert update.translate(update.payload) == []  # a trigger: the order book is the truth
    assert isinstance(refresh, RefreshNeeded)


def test_sdk_answers_are_encoded_back_in_kites_formats() -> None:
    # Used only if the requests hook did not capture the raw body.
    naive_ist = datetime(2024, 5, 1, 9, 15)  # noqa: DTZ001 - kiteconnect gives naive IST
    payload = [{"order_timestamp": naive_ist, "price": 101.5, "quantity": 6, "p": Decimal("1.10")}]
    assert json.loads(transport.encode(payload)) == [
        {"order_timestamp": "2024-05-01 09:15:00", "price": 101.5, "quantity": 6, "p": 1.1}
    ]
