"""Kite updates as stream items: postbacks and WebSocket order updates, each a trigger for a refresh.

No SDK needed. `stream` yields every update of an `Inbox` verbatim as a `RawMessage`,
before verification, so the payload is stored first. Its translator (`Trigger`, over
`translate.update_as_trigger`) reports nothing: a postback whose checksum fails is
refused (INVALID_REPORT, kept); an authentic one is only a trigger, since its checksum
does not cover its body and a slice's update would speak for the logical order. After
each burst with an authentic update (a postback whose checksum verifies, or any WebSocket
update), or after the inbox turned updates away, `stream` yields one `RefreshNeeded`: the
order book is the truth to re-read. The api secret that verifies postbacks stays in a
`Secret`, out of every `repr`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from trueup.adapters.base import RawMessage, RefreshNeeded, StreamItem
from trueup.adapters.kite.inbox import Inbox
from trueup.adapters.kite.readers import verify_postback
from trueup.adapters.kite.translate import update_as_trigger
from trueup.domain.errors import TrueupError
from trueup.domain.reports import Report

__all__ = ["Secret", "Trigger", "stream"]

log = logging.getLogger(__name__)


class Secret:
    """A secret that never shows in a repr or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it on, never keep or show it."""
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


class Trigger:
    """Checks an update (a postback's checksum first) and reports nothing: updates only trigger a refresh."""

    def __init__(self, account: str, secret: Secret | None) -> None:
        """Translate `account`'s updates: postbacks with `secret`, WebSocket updates without (None)."""
        self.account = account
        self._secret = secret

    def __call__(self, payload: str) -> Sequence[Report]:
        """No reports (`translate.update_as_trigger`); a postback with a bad checksum raises InvalidReport."""
        secret = self._secret.reveal() if self._secret is not None else None
        return update_as_trigger(payload, account=self.account, api_secret=secret)

    def __repr__(self) -> str:
        kind = "postback" if self._secret is not None else "ws_order_update"
        return f"update_as_trigger({kind}, account={self.account!r})"


async def stream(
    inbox: Inbox,
    *,
    account: str,
    source: str,
    translators: Mapping[str, Callable[[str], Sequence[Report]]],
    secret: Secret,
) -> AsyncIterator[StreamItem]:
    """The inbox's updates as `RawMessage`s (translated by `translators[kind]`), then a `RefreshNeeded`.

    Iterating makes this stream the inbox's listener (a new one takes over from the
    previous); updates received with nobody iterating wait in the inbox.
    """
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(ready.set)
        except RuntimeError:  # the consumer's loop closed: payloads stay in the inbox
            log.debug("kite stream: consumer loop closed")

    listener, waiting = inbox.listen(wake)
    if waiting:
        ready.set()
    refresh = False
    try:
        while True:
            await ready.wait()
            ready.clear()
            while (item := inbox.next()) is not None:
                kind, payload = item
                yield RawMessage(
                    account=account,
                    source=source,
                    kind=kind,
                    payload=payload,
                    translate=translators[kind],
                )
                refresh = refresh or _authentic(kind, payload, secret)
            if inbox.take_overflow():
                refresh = True
            if refresh:
                refresh = False
                yield RefreshNeeded(account=account, source=source, reason="order updates")
    finally:
        inbox.release(listener)


def _authentic(kind: str, payload: str, secret: Secret) -> bool:
    """Whether an update may trigger a refresh: a verified postback, or any WebSocket update."""
    if kind != "postback":
        return True
    try:
        return verify_postback(payload, secret.reveal())
    except TrueupError:
        return False
