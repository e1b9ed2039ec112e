"""`AlpacaClient`: `BrokerClient` for Alpaca, through alpaca-py's `TradingClient` and `TradingStream`.

Needs the `alpaca` extra (`pip install 'trueup[alpaca]'`); the package `__init__` does not
import this module, so `import trueup` works without it. The SDK is blocking: every call
runs in a worker thread (`asyncio.to_thread`) under an HTTP timeout. Every answer is asked
for as raw JSON (`raw_data=True`), encoded back to JSON and translated by the pure
`translate.py`. Orders are sent as raw JSON bodies through the SDK's own `post`/`patch`, so
quantities and prices travel as exact decimal strings (alpaca-py's request models hold
floats). `stream()` is the `trade_updates` websocket (`stream.py`), a fresh one per call.

Outcomes:

* submit and replace: HTTP 422 code 40010001 ("client_order_id must be unique") means the
  order is already placed (alpaca-py retries a POST on 429/504, so a 504 whose order landed
  comes back as this 422): the order is looked up by client id and acknowledged, never
  rejected. Any other 4xx is `SubmitRejected`; 5xx, 408, 429, timeouts and dropped
  connections are `SubmitUncertain` (look it up, never re-send).
* replace (`PATCH /v2/orders/{id}`): Alpaca makes a new order with a new id; it carries the
  fresh client id trueup derives for the leg (`ids.replace_client_order_id`) and `replaces`.
* lookup: HTTP 404 with Alpaca's code 40410000 proves absence (None); a 404 without that
  code (a wrong URL, a proxy) and every other failure is `BrokerQueryError`.
* snapshot: each part (orders, fills, positions) that cannot be fetched or translated is
  None, never `[]`; `complete_history` is True only if order paging reached a short page.
  Alpaca has no atomic snapshot: a fill between reading the fills and the positions would
  be in the broker's position only, and a repair would book it twice. So the newest fill
  is read again after the positions; if it moved, the snapshot is taken again (up to
  `SNAPSHOT_ATTEMPTS` times), else the positions are left unknown for this cycle.

Secrets are handed to the SDK and kept nowhere else: not in `repr`, logs or errors;
`from_env` reads them from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import msgspec

from trueup.adapters.alpaca.ids import replace_client_order_id
from trueup.adapters.alpaca.stream import AlpacaStream
from trueup.adapters.alpaca.translate import (
    to_fill_reports_from_activities,
    to_order_reports,
    to_position_reports,
)
from trueup.adapters.base import (
    OrderRequest,
    OrderType,
    ReplaceRequest,
    StreamItem,
    SubmitAck,
    SubmitRejected,
    SubmitUncertain,
)
from trueup.adapters.secrets import Redactor
from trueup.domain.errors import BrokerQueryError, TrueupError
from trueup.domain.reports import (
    BrokerSnapshot,
    FillReport,
    LookupAnswer,
    OrderReport,
    PositionReport,
    RawAnswer,
)
from trueup.domain.status import Side

try:
    from alpaca.common.enums import Sort
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import GetOrdersRequest
    from requests import RequestException, Response, Session
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Alpaca adapter needs alpaca-py: pip install 'trueup[alpaca]'"
    raise ImportError(msg) from e

__all__ = ["ALREADY_EXISTS_CODE", "NOT_FOUND_CODE", "AlpacaClient", "AlpacaCredentialsMissing"]

log = logging.getLogger(__name__)

ALREADY_EXISTS_CODE: Final = 40010001
"""HTTP 422 code: `client_order_id must be unique` (the order is already there)."""
NOT_FOUND_CODE: Final = 40410000
"""HTTP 404 code: the order (or position) does not exist."""
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
SNAPSHOT_ATTEMPTS: Final = 3
"""Snapshots taken before giving up on a consistent cut of fills and positions."""

HTTP_TIMEOUT: Final = 10.0
"""Seconds to wait for Alpaca to connect or answer; alpaca-py itself sets none."""
ENV_KEY: Final = "APCA_API_KEY_ID"
ENV_SECRET: Final = "APCA_API_SECRET_KEY"  # noqa: S105 - the variable's name, not a secret
ENV_BASE_URL: Final = "APCA_API_BASE_URL"
ENV_STREAM_URL: Final = "APCA_API_STREAM_URL"
ENV_PAPER: Final = "APCA_PAPER"

_UNCERTAIN_STATUS: Final = frozenset({408, 429})
_ORDER_SIDE: Final = {Side.BUY: "buy", Side.SELL: "sell"}
_ENCODER: Final = msgspec.json.Encoder()
_T = TypeVar("_T")
_H = TypeVar("_H")


class AlpacaCredentialsMissing(TrueupError):  # noqa: N818 - names the condition
    """`AlpacaClient.from_env` found no key id or secret in the environment."""


class _TimeoutSession(Session):
    """A requests `Session` that never waits forever: every request gets `timeout` by default."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> Response:  # type: ignore[override]  # noqa: ANN401 - requests' own signature
        """Send with the default timeout unless the caller gave one."""
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)  # type: ignore[arg-type]


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


def _status(error: APIError) -> int | None:
    status = error.status_code
    return status if isinstance(status, int) else None


def _code(error: APIError) -> int | None:
    """Alpaca's error code from the JSON body, or None if the body is not Alpaca's JSON."""
    try:
        code = error.code
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, int) else None


def _describe(error: BaseException, redact: Redactor) -> str:
    """An error as text for messages: status and body for API errors, the type otherwise.

    The one place an SDK error becomes our text: an error body that echoes the request's
    headers (the key id, the secret key) is redacted here, before it is cut to length.
    """
    text = redact(str(error))[:500]
    if isinstance(error, APIError):
        return f"HTTP {_status(error)}: {text}"
    return f"{type(error).__name__}: {text}"


def _encode(payload: object) -> str:
    """The SDK's decoded JSON, encoded back to JSON text for the pure translators."""
    return _ENCODER.encode(payload).decode()


class AlpacaClient:
    """Alpaca Trading API for one account: REST (submit, replace, cancel, lookup, snapshot) and stream."""

    name = "alpaca"
    """Adapter name: the `source` of what this client reports."""

    def __init__(  # noqa: PLR0913 - the credentials, then keyword-only options
        self,
        api_key: str,
        secret_key: str,
        *,
        account: str,
        paper: bool = True,
        url_override: str | None = None,
        stream_url_override: str | None = None,
        order_page_size: int = ORDER_PAGE_SIZE,
        timeout: float = HTTP_TIMEOUT,
        silence_after: float = 30.0,
        lookback: float | None = None,
    ) -> None:
        """Open a `TradingClient` (raw JSON answers) for `account`, trueup's name for it.

        `order_page_size` is the `limit` of each `GET /v2/orders` page (1-500); `timeout`
        bounds every HTTP request; `stream_url_override` and `silence_after` configure the
        `trade_updates` stream (see `AlpacaStream`). `lookback`: seconds of history a
        snapshot reads (orders submitted and fills made since ``now - lookback``, plus every
        open order); None reads the whole history.
        """
        if lookback is not None and not lookback > 0:
            msg = f"lookback must be > 0 seconds, got {lookback!r}"
            raise ValueError(msg)
        self.lookback = lookback
        if not 1 <= order_page_size <= ORDER_PAGE_SIZE:
            msg = f"order_page_size must be 1-{ORDER_PAGE_SIZE}, got {order_page_size}"
            raise ValueError(msg)
        if timeout <= 0:
            msg = f"timeout must be positive, got {timeout}"
            raise ValueError(msg)
        self.account = account
        self.paper = paper
        self.url_override = url_override
        self.order_page_size = order_page_size
        self.timeout = timeout
        self._redact = Redactor([api_key, secret_key])
        self._trading = TradingClient(
            api_key, secret_key, paper=paper, url_override=url_override, raw_data=True
        )
        # alpaca-py's RESTClient keeps a plain Session in `_session` and passes no timeout;
        # without one a server that never answers blocks a worker thread for good.
        if not isinstance(getattr(self._trading, "_session", None), Session):  # pragma: no cover
            msg = "alpaca-py no longer keeps a requests Session in TradingClient._session"
            raise TypeError(msg)
        self._trading._session = _TimeoutSession(timeout)

        def new_stream() -> AlpacaStream:
            return AlpacaStream(
                api_key,
                secret_key,
                account=account,
                paper=paper,
                url_override=stream_url_override,
                silence_after=silence_after,
            )

        self._new_stream = new_stream
        self._streams: list[AlpacaStream] = []

    @classmethod
    def from_env(cls, account: str, environ: Mapping[str, str] | None = None, **options: Any) -> AlpacaClient:  # noqa: ANN401
        """A client with credentials from the environment, as alpaca-py's own tools name them.

        `APCA_API_KEY_ID` and `APCA_API_SECRET_KEY` are required; `APCA_API_BASE_URL` and
        `APCA_API_STREAM_URL` point at another server; `APCA_PAPER=false` selects live
        trading (paper is the default). The secret is passed to the SDK and kept nowhere else.

        Raises:
            AlpacaCredentialsMissing: the key id or the secret is not set (the message names
                the variables, never their values).
        """
        env = os.environ if environ is None else environ
        key, secret = env.get(ENV_KEY, ""), env.get(ENV_SECRET, "")
        missing = [name for name, value in ((ENV_KEY, key), (ENV_SECRET, secret)) if not value]
        if missing:
            msg = f"Alpaca credentials missing: set {' and '.join(missing)} in the environment"
            raise AlpacaCredentialsMissing(msg)
        paper = env.get(ENV_PAPER, "true").strip().lower() not in {"0", "false", "no"}
        return cls(
            key,
            secret,
            account=account,
            paper=paper,
            url_override=env.get(ENV_BASE_URL) or None,
            stream_url_override=env.get(ENV_STREAM_URL) or None,
            **options,
        )

    def __repr__(self) -> str:
        return (
            f"AlpacaClient(account={self.account!r}, paper={self.paper!r}, "
            f"url_override={self.url_override!r})"
        )

    # -- BrokerClient ----------------------------------------------------------------------

    def stream(self) -> AsyncIterator[StreamItem]:
        """A new `trade_updates` stream: raw messages, and `Reconnected` after every reconnect."""
        stream = self._new_stream()
        self._streams.append(stream)
        return stream.items()

    def close(self) -> None:
        """Stop every stream this client started (their SDK threads end shortly after)."""
        for stream in self._streams:
            stream.stop()

    async def submit(self, request: OrderRequest) -> SubmitAck:
        """Send a new order with `client_order_id` = our id.

        Raises:
            SubmitRejected: Alpaca refused it (a 4xx other than "already exists"), or the
                request cannot be expressed; nothing was placed.
            SubmitUncertain: no answer, a 5xx/408/429, or "already exists" whose lookup failed.
        """
        if request.account != self.account:
            msg = f"account {request.account!r} is not this Alpaca client's ({self.account!r})"
            raise SubmitRejected(msg)
        body = _order_body(request)
        return await self._send(request.account, request.client_order_id, self._trading.post, "/orders", body)

    def replace_client_order_id(self, root: str, n: int) -> str:
        """The client id of the `n`-th replace leg of the order first sent as `root`."""
        return replace_client_order_id(root, n)

    async def replace(self, request: ReplaceRequest) -> SubmitAck:
        """Replace a working order (`PATCH /v2/orders/{id}`); Alpaca answers with the new leg.

        Raises:
            SubmitRejected: Alpaca refused the replace (not replaceable, bad terms); the old
                order is unchanged.
            SubmitUncertain: the outcome is unknown; look the new leg up by its client id.
        """
        if request.account != self.account:
            msg = f"account {request.account!r} is not this Alpaca client's ({self.account!r})"
            raise SubmitRejected(msg)
        body: dict[str, Any] = {"qty": str(request.quantity), "client_order_id": request.client_order_id}
        if request.limit_price is not None:
            body["limit_price"] = str(request.limit_price)
        path = f"/orders/{request.broker_order_id}"
        return await self._send(request.account, request.client_order_id, self._trading.patch, path, body)

    async def cancel(self, account: str, client_order_id: str, broker_order_id: str | None) -> None:
        """Ask Alpaca to cancel (`DELETE /v2/orders/{id}`); the outcome arrives as reports.

        Without `broker_order_id` the order is looked up by `client_order_id` first.

        Raises:
            BrokerQueryError: the account is not this client's, the order is unknown, or
                Alpaca did not accept the cancel request.
        """
        self._check_account(account)
        if broker_order_id is None:
            found = await self.lookup(account, client_order_id)
            if found is None or found.broker_order_id is None:
                msg = f"{account}: no order {client_order_id!r} at Alpaca; nothing canceled"
                raise BrokerQueryError(msg)
            broker_order_id = found.broker_order_id
        await self._call(f"cancel {client_order_id}", self._trading.cancel_order_by_id, broker_order_id)

    async def lookup(self, account: str, client_order_id: str) -> OrderReport | None:
        """The order carrying `client_order_id`, or None when Alpaca answers 404/40410000.

        Raises:
            BrokerQueryError: Alpaca could not be asked, answered otherwise, or the
                answer does not translate; absence is unknown.
        """
        answer = await self.lookup_answer(account, client_order_id)
        if answer.raw is not None and answer.raw.error is not None:
            raise BrokerQueryError(answer.raw.error)
        return answer.report

    async def lookup_answer(self, account: str, client_order_id: str) -> LookupAnswer:
        """`lookup` with Alpaca's answer (the order as the SDK decoded it, encoded back to JSON).

        An answer that does not translate, or names another order, is returned with its
        error (absence unknown), not raised, so that it can be kept.

        Raises:
            BrokerQueryError: Alpaca could not be asked or answered other than 404/40410000.
        """
        self._check_account(account)
        what = f"lookup {client_order_id}"
        try:
            payload = await asyncio.to_thread(self._trading.get_order_by_client_id, client_order_id)
        except APIError as e:
            if _status(e) == 404 and _code(e) == NOT_FOUND_CODE:
                return LookupAnswer(
                    report=None, raw=RawAnswer(source=self.name, kind="lookup", payload=self._redact(str(e)))
                )
            msg = f"{account}: {what} failed: {_describe(e, self._redact)}"
            raise BrokerQueryError(msg) from None  # its text may echo secrets: msg has it redacted
        except (RequestException, OSError, ValueError) as e:
            msg = f"{account}: {what} failed: {_describe(e, self._redact)}"
            raise BrokerQueryError(msg) from None  # its text may echo secrets: msg has it redacted
        text = _encode(payload)
        try:
            reports = to_order_reports(text, account=account)
        except TrueupError as e:
            why = f"{account}: {what}: untranslatable answer: {e}"
            return LookupAnswer(
                report=None, raw=RawAnswer(source=self.name, kind="lookup", payload=text, error=why)
            )
        raw = RawAnswer(source=self.name, kind="lookup", payload=text)
        for report in reports:
            if report.client_order_id == client_order_id:
                return LookupAnswer(report=report, raw=raw)
        why = f"{account}: {what}: the answer does not carry that client_order_id"
        return LookupAnswer(report=None, raw=msgspec.structs.replace(raw, error=why))

    async def snapshot(self, account: str) -> BrokerSnapshot:
        """All orders (paged), all FILL activities (paged) and open positions.

        A part that cannot be fetched or translated is None (STALE_DATA), never `[]`.

        Raises:
            BrokerQueryError: the account is not this client's.
        """
        self._check_account(account)
        failures: dict[str, str] = {}
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            as_of = datetime.now(UTC)
            # The answers as read (the text each part was translated from), kept verbatim.
            answers: list[RawAnswer] = []
            since = None if self.lookback is None else as_of - timedelta(seconds=self.lookback)
            orders, complete = await self._orders(account, answers, failures, since)
            fills, seen = await self._fills(account, answers, failures, since)
            positions = await self._positions(account, as_of, answers, failures)
            if fills is None or positions is None:
                break  # nothing to hold the positions against
            try:
                newest = await self._newest_fill_id()
                # Membership, not equality with our last: same-millisecond fills may be
                # listed in another order (Alpaca-API#170).
                moved = newest is not None and newest not in seen
            except BrokerQueryError as e:
                positions, failures["positions"] = None, f"could not confirm them against the fills: {e}"
                break
            if not moved:
                break
            log.info("%s: fills arrived during snapshot %d of %d", account, attempt, SNAPSHOT_ATTEMPTS)
        else:
            positions = None
            failures["positions"] = "fills kept arriving while the snapshot was taken; compared next cycle"
        return BrokerSnapshot(
            account=account,
            as_of=as_of,
            orders=orders,
            fills=fills,
            positions=positions,
            # With a lookback the lists start at `since`: absence of an older order proves nothing.
            complete_history=complete and orders is not None and since is None,
            history_since=since,
            # A reason stays only for a part still unknown (an earlier attempt may have failed).
            failures={
                part: why
                for part, why, value in (
                    ("orders", failures.get("orders"), orders),
                    ("fills", failures.get("fills"), fills),
                    ("positions", failures.get("positions"), positions),
                )
                if value is None and why is not None
            },
            raw=tuple(answers),
        )

    # -- snapshot parts ------------------------------------------------------------------

    async def _orders(
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
                page = await self._call("list orders", self._trading.get_orders, query)
            except BrokerQueryError as e:
                log.warning("%s: orders unavailable: %s", account, e)
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

    async def _fills(
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
                page = await self._call("list fills", self._trading.get, "/account/activities/FILL", params)
            except BrokerQueryError as e:
                log.warning("%s: fills unavailable: %s", account, e)
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
        log.warning("%s: fill paging did not finish; fills unknown", account)
        return None, frozenset()

    async def _newest_fill_id(self) -> str | None:
        """The id of the newest FILL activity (None if there is none).

        Raises:
            BrokerQueryError: Alpaca could not be asked.
        """
        params = {"direction": "desc", "page_size": 1}
        page = await self._call("newest fill", self._trading.get, "/account/activities/FILL", params)
        try:
            heads = _ACTIVITY_HEADS.decode(_encode(page))
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            msg = f"{self.account}: newest fill: unreadable answer: {e}"
            raise BrokerQueryError(msg) from e
        return heads[0].id if heads else None

    async def _positions(
        self, account: str, as_of: datetime, answers: list[RawAnswer], failures: dict[str, str]
    ) -> list[PositionReport] | None:
        try:
            payload = await self._call("list positions", self._trading.get_all_positions)
        except BrokerQueryError as e:
            log.warning("%s: positions unavailable: %s", account, e)
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
        text = _encode(page)
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
        text = _encode(payload)
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

    # -- helpers -------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., _T], *args: object) -> _T:
        """Run one blocking SDK call in a thread; any failure is a `BrokerQueryError`."""
        try:
            return await asyncio.to_thread(fn, *args)
        except (APIError, RequestException, OSError, ValueError) as e:
            msg = f"{self.account}: {what} failed: {_describe(e, self._redact)}"
            raise BrokerQueryError(msg) from None  # its text may echo secrets: msg has it redacted

    async def _send(
        self,
        account: str,
        cid: str,
        method: Callable[[str, dict[str, Any]], object],
        path: str,
        body: dict[str, Any],
    ) -> SubmitAck:
        """POST or PATCH an order carrying `cid`, and classify the answer (module docstring)."""
        try:
            payload = await asyncio.to_thread(method, path, body)
        except APIError as e:
            status, code = _status(e), _code(e)
            if status == 422 and code == ALREADY_EXISTS_CODE:
                log.info("order %s: already at Alpaca (422 %s); looking it up", cid, code)
                return await self._ack_existing(account, cid)
            if status is not None and 400 <= status < 500 and status not in _UNCERTAIN_STATUS:
                msg = f"Alpaca refused order {cid}: {_describe(e, self._redact)}"
                raise SubmitRejected(msg, raw=self._redact(str(e))) from None  # its text may echo secrets
            msg = f"order {cid}: outcome unknown ({_describe(e, self._redact)})"
            raise SubmitUncertain(msg) from None  # its text may echo secrets: msg has it redacted
        except (RequestException, OSError, ValueError) as e:
            msg = f"order {cid}: outcome unknown ({_describe(e, self._redact)})"
            raise SubmitUncertain(msg) from None  # its text may echo secrets: msg has it redacted
        return self._ack(account, cid, payload)

    async def _ack_existing(self, account: str, cid: str) -> SubmitAck:
        """The acknowledgement of an order Alpaca already has under our client id."""
        try:
            payload = await asyncio.to_thread(self._trading.get_order_by_client_id, cid)
        except (APIError, RequestException, OSError, ValueError) as e:
            msg = f"order {cid}: already at Alpaca, but the lookup failed ({_describe(e, self._redact)})"
            raise SubmitUncertain(msg) from None  # its text may echo secrets: msg has it redacted
        return self._ack(account, cid, payload)

    @staticmethod
    def _ack(account: str, cid: str, payload: object) -> SubmitAck:
        """A `SubmitAck` from the order Alpaca returned (its id and its report)."""
        raw = _encode(payload)
        try:
            reports = to_order_reports(raw, account=account)
        except TrueupError as e:
            msg = f"order {cid}: Alpaca's answer does not translate ({e})"
            raise SubmitUncertain(msg) from e
        report = next((r for r in reports if r.client_order_id == cid), None)
        if report is None or report.broker_order_id is None:
            msg = f"order {cid}: Alpaca's answer does not carry our client_order_id"
            raise SubmitUncertain(msg)
        return SubmitAck(broker_order_id=report.broker_order_id, raw=raw, report=report)

    def _check_account(self, account: str) -> None:
        if account != self.account:
            msg = f"account {account!r} is not this Alpaca client's ({self.account!r})"
            raise BrokerQueryError(msg)


def _order_body(request: OrderRequest) -> dict[str, Any]:
    """The JSON body of `POST /v2/orders`: exact decimal strings, our id, a day order.

    Raises:
        SubmitRejected: the order cannot be expressed (a limit order without a price).
    """
    body: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": str(request.quantity),
        "side": _ORDER_SIDE[request.side],
        "type": "market",
        "time_in_force": "day",
        "client_order_id": request.client_order_id,
    }
    if request.order_type is OrderType.LIMIT:
        if request.limit_price is None:
            msg = f"limit order {request.client_order_id} without a limit price"
            raise SubmitRejected(msg)
        body["type"] = "limit"
        body["limit_price"] = str(request.limit_price)
    return body
