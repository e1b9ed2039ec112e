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
  `SNAPSHOT_ATTEMPTS` times), else the positions are left unknown for this cycle. The
  parts, their paging and the raw-answer helpers are `AlpacaReads` (`reads.py`).

Secrets are handed to the SDK and kept nowhere else: not in `repr`, logs or errors;
`from_env` reads them from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from trueup.adapters.alpaca.ids import replace_client_order_id
from trueup.adapters.alpaca.reads import (
    ACTIVITY_PAGE_SIZE,
    MAX_PAGES,
    ORDER_PAGE_SIZE,
    PAGE_OVERLAP,
    AlpacaReads,
    api_code,
    api_status,
    describe,
    encode,
)
from trueup.adapters.alpaca.stream import AlpacaStream
from trueup.adapters.alpaca.translate import (
    to_order_reports,
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
    LookupAnswer,
    OrderReport,
    RawAnswer,
)
from trueup.domain.status import Side

try:
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from requests import RequestException, Response, Session
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Alpaca adapter needs alpaca-py: pip install 'trueup[alpaca]'"
    raise ImportError(msg) from e

__all__ = [
    "ACTIVITY_PAGE_SIZE",
    "ALREADY_EXISTS_CODE",
    "MAX_PAGES",
    "NOT_FOUND_CODE",
    "ORDER_PAGE_SIZE",
    "PAGE_OVERLAP",
    "SNAPSHOT_ATTEMPTS",
    "AlpacaClient",
    "AlpacaCredentialsMissing",
]

log = logging.getLogger(__name__)

ALREADY_EXISTS_CODE: Final = 40010001
"""HTTP 422 code: `client_order_id must be unique` (the order is already there)."""
NOT_FOUND_CODE: Final = 40410000
"""HTTP 404 code: the order (or position) does not exist."""

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
        self._reads = AlpacaReads(
            self._trading, account=account, redact=self._redact, order_page_size=order_page_size
        )

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
        await self._reads.call(f"cancel {client_order_id}", self._trading.cancel_order_by_id, broker_order_id)

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
            if api_status(e) == 404 and api_code(e) == NOT_FOUND_CODE:
                return LookupAnswer(
                    report=None, raw=RawAnswer(source=self.name, kind="lookup", payload=self._redact(str(e)))
                )
            msg = f"{account}: {what} failed: {describe(e, self._redact)}"
            raise BrokerQueryError(msg) from None  # its text may echo secrets: msg has it redacted
        except (RequestException, OSError, ValueError) as e:
            msg = f"{account}: {what} failed: {describe(e, self._redact)}"
            raise BrokerQueryError(msg) from None  # its text may echo secrets: msg has it redacted
        text = encode(payload)
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
            orders, complete = await self._reads.orders(account, answers, failures, since)
            fills, seen = await self._reads.fills(account, answers, failures, since)
            positions = await self._reads.positions(account, as_of, answers, failures)
            if fills is None or positions is None:
                break  # nothing to hold the positions against
            try:
                newest = await self._reads.newest_fill_id()
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
            status, code = api_status(e), api_code(e)
            if status == 422 and code == ALREADY_EXISTS_CODE:
                log.info("order %s: already at Alpaca (422 %s); looking it up", cid, code)
                return await self._ack_existing(account, cid)
            if status is not None and 400 <= status < 500 and status not in _UNCERTAIN_STATUS:
                msg = f"Alpaca refused order {cid}: {describe(e, self._redact)}"
                raise SubmitRejected(msg, raw=self._redact(str(e))) from None  # its text may echo secrets
            msg = f"order {cid}: outcome unknown ({describe(e, self._redact)})"
            raise SubmitUncertain(msg) from None  # its text may echo secrets: msg has it redacted
        except (RequestException, OSError, ValueError) as e:
            msg = f"order {cid}: outcome unknown ({describe(e, self._redact)})"
            raise SubmitUncertain(msg) from None  # its text may echo secrets: msg has it redacted
        return self._ack(account, cid, payload)

    async def _ack_existing(self, account: str, cid: str) -> SubmitAck:
        """The acknowledgement of an order Alpaca already has under our client id."""
        try:
            payload = await asyncio.to_thread(self._trading.get_order_by_client_id, cid)
        except (APIError, RequestException, OSError, ValueError) as e:
            msg = f"order {cid}: already at Alpaca, but the lookup failed ({describe(e, self._redact)})"
            raise SubmitUncertain(msg) from None  # its text may echo secrets: msg has it redacted
        return self._ack(account, cid, payload)

    @staticmethod
    def _ack(account: str, cid: str, payload: object) -> SubmitAck:
        """A `SubmitAck` from the order Alpaca returned (its id and its report)."""
        raw = encode(payload)
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
