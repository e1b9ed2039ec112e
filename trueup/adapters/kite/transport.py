"""`KiteTransport`: kiteconnect's calls answered as the raw JSON text Kite sent, its errors translated.

Needs the `kite` extra: the only module that imports kiteconnect (`client.py` and
`reads.py` need the extra through it). The transport owns the `KiteConnect` of one account,
hence the access token (never in a `repr`, a log line or an error). kiteconnect is
blocking (requests): every call runs in a worker thread (`asyncio.to_thread`). Its
answer is the body read from the requests session's response hook, before kiteconnect
turns numbers into floats and times into naive datetimes, so the pure translators get
Kite's text; were the hook not to run (a changed SDK), what kiteconnect decoded is encoded
back in Kite's formats (`encode`).

Errors: a `TokenException` is `KiteTokenExpired` (a `BrokerQueryError` whose message says
the token expired) and sets `token_expired` until a call succeeds or `set_access_token`;
Kite's other errors, requests' and a malformed answer (`FAILED`) are `BrokerQueryError`.
A placement (`place`) is `SubmitRejected` when Kite proved nothing was placed
(`REFUSED`, or a `TokenException`); any other failure is raised as it came (one of
`FAILED`), for the caller to settle the uncertain outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Final

from trueup.adapters.base import SubmitRejected
from trueup.adapters.kite.wire import KITE_TIME_FORMAT
from trueup.adapters.secrets import Redactor
from trueup.domain.errors import BrokerQueryError

try:
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kite_errors
    from requests import RequestException, Response
except ImportError as e:  # pragma: no cover - exercised only without the extra
    msg = "the Kite adapter needs kiteconnect: pip install 'trueup[kite]'"
    raise ImportError(msg) from e

__all__ = [
    "EXPIRY_MESSAGE",
    "FAILED",
    "REFUSED",
    "KiteTokenExpired",
    "KiteTransport",
    "describe",
    "encode",
]

log = logging.getLogger(__name__)

EXPIRY_MESSAGE: Final = (
    "Kite access token expired or invalid (TokenException): Kite tokens expire every day; "
    "log in again and set the new token (KiteClient.set_access_token)"
)

REFUSED: Final = (
    kite_errors.InputException,
    kite_errors.OrderException,
    kite_errors.PermissionException,
)
"""Kite exceptions that prove an order was not placed (besides TokenException)."""
FAILED: Final = (kite_errors.KiteException, RequestException, OSError, ValueError, KeyError, TypeError)
"""What a kiteconnect call raises when it fails: Kite's errors, requests', a malformed answer."""


class KiteTokenExpired(BrokerQueryError):  # noqa: N818 - names the condition, like BrokerQueryError
    """Raised when Kite refused the access token (TokenException): set a new one to continue."""


class _RawBodies:
    """The body of the last HTTP response of each thread, from the requests session's hook."""

    def __init__(self) -> None:
        self._local = threading.local()

    def hook(self, response: Response, *_args: object, **_kwargs: object) -> None:
        self._local.body = response.content

    def take(self) -> bytes | None:
        body: bytes | None = getattr(self._local, "body", None)
        self._local.body = None
        return body


class KiteTransport:
    """One account's `KiteConnect`: calls in worker threads, raw answers, Kite's errors translated."""

    def __init__(
        self, api_key: str, access_token: str, *, account: str, root: str | None, timeout: float
    ) -> None:
        """Open the `KiteConnect` (`root`: Kite's own when None; `timeout`: seconds per HTTP call)."""
        self.account = account
        self.redact = Redactor([api_key, access_token])
        """Masks the api_key and every access token set, and echoed headers, in error text."""
        self.kite = KiteConnect(api_key, access_token=access_token, root=root, timeout=timeout)
        """The SDK client: pass its bound methods to `query` / `place`."""
        self._bodies = _RawBodies()
        self.kite.reqsession.hooks["response"].append(self._bodies.hook)
        self._token_expired = False

    @property
    def token_expired(self) -> bool:
        """Whether Kite refused the access token since it was last set (or a call last succeeded)."""
        return self._token_expired

    def set_access_token(self, access_token: str) -> None:
        """Use a new access token; ends the expiry window."""
        self.redact.add(access_token)
        self.kite.set_access_token(access_token)
        self._token_expired = False

    async def query(self, what: str, method: Callable[..., object], *args: object, **kwargs: object) -> str:
        """`method(*args, **kwargs)` in a worker thread; Kite's and requests' errors as `BrokerQueryError`.

        Raises:
            KiteTokenExpired: Kite refused the access token.
            BrokerQueryError: the call failed (`what` names it in the message).
        """
        try:
            raw = await asyncio.to_thread(self._fetch, method, *args, **kwargs)
        except kite_errors.TokenException as e:
            raise self._expired(what, e) from None  # the SDK error may echo the token
        except FAILED as e:
            msg = f"{self.account}: Kite {what} failed: {self.describe(e)}"
            raise BrokerQueryError(msg) from None  # its text may echo the token: msg has it redacted
        self._token_expired = False
        return raw

    async def place(self, cid: str, method: Callable[..., object], params: Mapping[str, object]) -> str:
        """Send the placement of order `cid` (`method(**params)`) in a worker thread; Kite's raw answer.

        Raises:
            SubmitRejected: Kite refused it, or the token expired; nothing was placed.
            Exception: one of `FAILED`, as raised: no answer, the order may exist.
        """
        try:
            raw = await asyncio.to_thread(self._fetch, method, **params)
        except kite_errors.TokenException as e:
            expired = self._expired(f"submit {cid}", e)
            msg = f"{expired}; order {cid} not placed"
            raise SubmitRejected(msg, raw=self.redact(str(e))) from None
        except REFUSED as e:
            msg = f"Kite refused order {cid}: {self.describe(e)}"
            raise SubmitRejected(msg, raw=self.redact(str(e))) from None
        self._token_expired = False
        return raw

    def _fetch(self, method: Callable[..., object], *args: object, **kwargs: object) -> str:
        """Call a kiteconnect method in this worker thread; its answer as the raw JSON text."""
        self._bodies.take()
        result = method(*args, **kwargs)
        body = self._bodies.take()
        if body is None:  # the hook did not run (a changed SDK): encode what it decoded
            return encode(result)
        return body.decode("utf-8", errors="backslashreplace")

    def describe(self, error: BaseException) -> str:
        """`describe(error)` with this account's secrets masked: how an SDK error becomes our text."""
        return describe(error, self.redact)

    def _expired(self, what: str, error: BaseException) -> KiteTokenExpired:
        self._token_expired = True
        log.error("kite %s: %s failed: %s", self.account, what, EXPIRY_MESSAGE)
        why = self.describe(error)
        return KiteTokenExpired(f"{self.account}: Kite {what} failed: {EXPIRY_MESSAGE} ({why})")


def describe(error: BaseException, redact: Redactor | None = None) -> str:
    """An error as text: Kite's HTTP code and message, or the exception's type and text.

    Redacted (echoed request headers; `redact`'s secrets) before it is cut to length.
    """
    code = getattr(error, "code", None)
    where = f" (HTTP {code})" if isinstance(error, kite_errors.KiteException) else ""
    text = (redact or Redactor())(str(error))[:500]
    return f"{type(error).__name__}{where}: {text}"


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.strftime(KITE_TIME_FORMAT)  # kiteconnect parsed Kite's own format, naive IST
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def encode(payload: object) -> str:
    """JSON text of what kiteconnect decoded, in Kite's formats."""
    return json.dumps(payload, default=_json_default, separators=(",", ":"), ensure_ascii=False)
