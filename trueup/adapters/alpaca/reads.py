"""`AlpacaReads`: the snapshot parts of `AlpacaClient` (orders, fills, positions), paged.

Also the raw-answer helpers every Alpaca call shares (`encode`, `describe`, `api_status`,
`api_code`).

`AlpacaReads` pages `GET /v2/orders` forward by `submitted_at` (with `PAGE_OVERLAP`, deduped
by id) and `GET /v2/account/activities/FILL` by `page_token`; a part that cannot be fetched
or translated is None (its answer kept, its reason in `failures`), never `[]`. Every SDK call
runs in a worker thread; any failure is a `BrokerQueryError` whose text is redacted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import msgspec

from trueup.adapters.alpaca.translate import (
    to_fill_reports_from_activities,
    to_order_reports,
    to_position_reports,
)
from trueup.adapters.secrets import Redactor
from trueup.domain.errors import BrokerQueryError, TrueupError
from trueup.domain.reports import FillReport, OrderReport, PositionReport, RawAnswer

try:
    from alpaca.common.enums import Sort
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import GetOrdersRequest
    from requests import RequestException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Alpaca adapter needs alpaca-py: pip install 'trueup[alpaca]'"
    raise ImportError(msg) from e

__all__ = [
    "ACTIVITY_PAGE_SIZE",
    "MAX_PAGES",
    "ORDER_PAGE_SIZE",
    "PAGE_OVERLAP",
    "AlpacaReads",
    "api_code",
    "api_status",
    "describe",
    "encode",
]

# The client's logger: these records keep the name they had before the reads moved here.
log = logging.getLogger("trueup.adapters.alpaca.client")

ORDER_PAGE_SIZE: Final = 500
"""Largest `limit` `GET /v2/orders` accepts."""
ACTIVITY_PAGE_SIZE: Final = 100
"""Largest `page_size` `GET /v2/account/activities` accepts without `date`."""
PAGE_OVERLAP: Final = timedelta(milliseconds=1)
"""How far each orders page re-reads before the previous page's last `submitted_at` (`after` is
exclusive, and times are rounded to microseconds): ties with the last order are read again and
deduped. More than a page of orders within this window cannot be paged: history incomplete."""
MAX_PAGES: Final = 10_000
"""Give up paging (history incomplete) after this many pages."""

_ENCODER: Final = msgspec.json.Encoder()
_T = TypeVar("_T")
_H = TypeVar("_H")


class _OrderHead(msgspec.Struct):
    """The fields paging needs from one listed order."""

    id: str
    submitted_at: datetime | None = None
    created_at: datetime | None = None


class _ActivityHead(msgspec.Struct):
    """The field paging needs from one listed activity."""

    id: str


_ORDER_HEADS: Final = msgspec.json.Decoder(list[_OrderHead])
_ACTIVITY_HEADS: Final = msgspec.json.Decoder(list[_ActivityHead])


def api_status(error: APIError) -> int | None:
    """The HTTP status of an SDK error, or None if it has none."""
    status = error.status_code
    return status if isinstance(status, int) else None


def api_code(error: APIError) -> int | None:
    """Alpaca's error code from the JSON body, or None if the body is not Alpaca's JSON."""
    try:
        code = error.code
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, int) else None


def describe(error: BaseException, redact: Redactor) -> str:
    """An error as text for messages: status and body for API errors, the type otherwise.

    The one place an SDK error becomes our text: an error body that echoes the request's
    headers (the key id, the secret key) is redacted here, before it is cut to length.
    """
    text = redact(str(error))[:500]
    if isinstance(error, APIError):
        return f"HTTP {api_status(error)}: {text}"
    return f"{type(error).__name__}: {text}"


def encode(payload: object) -> str:
    """The SDK's decoded JSON, encoded back to JSON text for the pure translators."""
    return _ENCODER.encode(payload).decode()


class AlpacaReads:
    """The reads behind one `AlpacaClient`'s snapshot, through its `TradingClient`."""

    def __init__(
        self, trading: TradingClient, *, account: str, redact: Redactor, order_page_size: int
    ) -> None:
        self.account = account
        self.order_page_size = order_page_size
        self._trading = trading
        self._redact = redact

    async def orders(
        self, account: str, answers: list[RawAnswer], failures: dict[str, str], since: datetime | None
    ) -> tuple[list[OrderReport] | None, bool]:
        """Every order (submitted after `since`, and every open one), paged, deduped by id."""
        seen: dict[str, object] = {}
        if since is not None:
            # An open order submitted before the window is still live: list every open one.
            complete = await self._page_orders(
                account, answers, failures, seen, status=QueryOrderStatus.OPEN, after=None
            )
            if complete is None:
                return None, False
        complete = await self._page_orders(
            account, answers, failures, seen, status=QueryOrderStatus.ALL, after=since
        )
        if complete is None:
            return None, False
        orders = list(seen.values())
        return self._translate("orders", account, orders, to_order_reports, answers, failures), complete

    async def _page_orders(  # noqa: PLR0913 - one listing's terms
        self,
        account: str,
        answers: list[RawAnswer],
        failures: dict[str, str],
        seen: dict[str, object],
        *,
        status: QueryOrderStatus,
        after: datetime | None,
    ) -> bool | None:
        """Page forward by `submitted_at` with overlap into `seen`; whether paging ended (None: failed)."""
        for _ in range(MAX_PAGES):
            query = GetOrdersRequest(
                status=status,
                limit=self.order_page_size,
                direction=Sort.ASC,
                after=after,
                nested=True,
            )
            try:
                page = await self.call("list orders", self._trading.get_orders, query)
            except BrokerQueryError as e:
                log.warning("%s: orders unavailable: %s", account, e)
                failures["orders"] = str(e)  # redacted by `call`: STALE_DATA says why
                return None
            heads = self._heads(_ORDER_HEADS, page, "orders", answers, failures)
            if heads is None:
                return None
            assert isinstance(page, list)  # noqa: S101 - the decode above proved it
            for head, item in zip(heads, page, strict=True):
                seen.setdefault(head.id, item)
            if len(heads) < self.order_page_size:
                return True
            last = heads[-1].submitted_at or heads[-1].created_at
            next_after = None if last is None else last - PAGE_OVERLAP
            if next_after is None or (after is not None and next_after <= after):
                log.warning("%s: order paging cannot advance past %s; history incomplete", account, after)
                break
            after = next_after
        return False

    async def fills(
        self, account: str, answers: list[RawAnswer], failures: dict[str, str], since: datetime | None
    ) -> tuple[list[FillReport] | None, frozenset[str]]:
        """Every FILL activity (after `since`; paging by `page_token`, deduped by id), and their ids."""
        seen: dict[str, object] = {}
        token: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"direction": "asc", "page_size": ACTIVITY_PAGE_SIZE}
            if since is not None:
                params["after"] = since.isoformat()
            if token is not None:
                params["page_token"] = token
            try:
                page = await self.call("list fills", self._trading.get, "/account/activities/FILL", params)
            except BrokerQueryError as e:
                log.warning("%s: fills unavailable: %s", account, e)
                failures["fills"] = str(e)  # redacted by `call`: STALE_DATA says why
                return None, frozenset()
            heads = self._heads(_ACTIVITY_HEADS, page, "fills", answers, failures)
            if heads is None:
                return None, frozenset()
            assert isinstance(page, list)  # noqa: S101 - the decode above proved it
            for head, item in zip(heads, page, strict=True):
                seen.setdefault(head.id, item)
            if len(heads) < ACTIVITY_PAGE_SIZE:
                translate = to_fill_reports_from_activities
                fills = self._translate("fills", account, list(seen.values()), translate, answers, failures)
                return fills, frozenset(seen)
            if heads[-1].id == token:
                break
            token = heads[-1].id
        why = f"fill paging did not finish after {MAX_PAGES} pages"
        log.warning("%s: %s; fills unknown", account, why)
        failures["fills"] = why
        return None, frozenset()

    async def newest_fill_id(self) -> str | None:
        """The id of the newest FILL activity (None if there is none).

        Raises:
            BrokerQueryError: Alpaca could not be asked.
        """
        params = {"direction": "desc", "page_size": 1}
        page = await self.call("newest fill", self._trading.get, "/account/activities/FILL", params)
        try:
            heads = _ACTIVITY_HEADS.decode(encode(page))
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            msg = f"{self.account}: newest fill: unreadable answer: {e}"
            raise BrokerQueryError(msg) from e
        return heads[0].id if heads else None

    async def positions(
        self, account: str, as_of: datetime, answers: list[RawAnswer], failures: dict[str, str]
    ) -> list[PositionReport] | None:
        """Every open position, as of `as_of`."""
        try:
            payload = await self.call("list positions", self._trading.get_all_positions)
        except BrokerQueryError as e:
            log.warning("%s: positions unavailable: %s", account, e)
            failures["positions"] = str(e)  # redacted by `call`: STALE_DATA says why
            return None

        def translate(raw: str, *, account: str) -> list[PositionReport]:
            return to_position_reports(raw, account=account, as_of=as_of)

        return self._translate("positions", account, payload, translate, answers, failures)

    @staticmethod
    def _heads(
        decoder: msgspec.json.Decoder[list[_H]],
        page: object,
        what: str,
        answers: list[RawAnswer],
        failures: dict[str, str],
    ) -> list[_H] | None:
        """The paging heads of one page; a page that does not decode is kept and makes the part unknown."""
        text = encode(page)
        try:
            return decoder.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            why = f"alpaca {what} page unreadable: {e}"
            log.warning("%s; part unknown", why)
            answers.append(RawAnswer(source="alpaca", kind=what, payload=text, error=why))
            failures[what] = why
            return None

    @staticmethod
    def _translate(  # noqa: PLR0913, PLR0917 - one part and where its answer and failure go
        what: str,
        account: str,
        payload: object,
        translate: Callable[..., Sequence[_T]],
        answers: list[RawAnswer],
        failures: dict[str, str],
    ) -> list[_T] | None:
        """Translate one part, keeping its answer; one that does not translate makes the part unknown."""
        text = encode(payload)
        try:
            translated = list(translate(text, account=account))
        except TrueupError as e:
            why = f"alpaca {what} answer untranslatable: {e}"
            log.warning("%s: %s; part unknown", account, why)
            answers.append(RawAnswer(source="alpaca", kind=what, payload=text, error=why))
            failures[what] = why
            return None
        answers.append(RawAnswer(source="alpaca", kind=what, payload=text))
        return translated

    async def call(self, what: str, fn: Callable[..., _T], *args: object) -> _T:
        """Run one blocking SDK call in a thread; any failure is a `BrokerQueryError`."""
        try:
            return await asyncio.to_thread(fn, *args)
        except (APIError, RequestException, OSError, ValueError) as e:
            msg = f"{self.account}: {what} failed: {describe(e, self._redact)}"
            raise BrokerQueryError(msg) from None  # its text may echo secrets: msg has it redacted
