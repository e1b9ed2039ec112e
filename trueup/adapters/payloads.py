"""Reading broker JSON into wire structs, with errors that name the JSON path of the bad field.

Every adapter's translator decodes with msgspec and re-raises its errors as
`InvalidReport` carrying the path ("$[0].qty"), so an operator sees which field of which
payload was wrong, and the raw payload (kept by the ledger) can be found by it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Final, ParamSpec, TypeVar

import msgspec

from trueup.domain.errors import InvalidReport, TrueupError

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")

# msgspec says "Expected `decimal`, got `bool` - at `$[0].qty`" and
# "Object missing required field `id` - at `$[0]`".
_AT_PATH: Final = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_FIELD: Final = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


class PayloadReader:
    """Decodes one broker's payloads, naming the broker, the account and the field path in errors."""

    def __init__(self, broker: str) -> None:
        """Read payloads of `broker` ("alpaca", "kite", ...)."""
        self.broker = broker

    def invalid(self, *, what: str, account: str | None, path: str, detail: str) -> InvalidReport:
        """The error for a bad field at `path` of a `what` payload."""
        whose = f" for account {account!r}" if account is not None else ""
        msg = f"{self.broker} {what}{whose}: {detail} at `{path}`"
        return InvalidReport(msg, field=path)

    def decode(
        self,
        decoder: msgspec.json.Decoder[_T],
        raw: bytes | str | msgspec.Raw,
        *,
        what: str,
        account: str | None,
        prefix: str = "$",
    ) -> _T:
        """Decode `raw`, turning msgspec's errors into `InvalidReport` at `prefix` + msgspec's path."""
        try:
            return decoder.decode(raw)
        except msgspec.ValidationError as e:
            text = str(e)
            at = _AT_PATH.search(text)
            path = prefix + (at.group("path") if at else "")
            missing = _MISSING_FIELD.match(text)
            if missing:
                path = f"{path}.{missing.group('name')}"
            detail = text[: at.start()] if at else text
            raise self.invalid(what=what, account=account, path=path, detail=detail) from e
        except msgspec.DecodeError as e:
            raise self.invalid(what=what, account=account, path=prefix, detail=f"not valid JSON ({e})") from e
        except (RecursionError, UnicodeError, ArithmeticError, ValueError, TypeError) as e:
            # Nesting deeper than the decoder's stack, a lone surrogate in text, a number no
            # Decimal context holds: the payload is unreadable, not the translator broken.
            detail = f"unreadable ({type(e).__name__}: {e})"
            raise self.invalid(what=what, account=account, path=prefix, detail=detail) from e

    def translator(self, function: Callable[_P, _R]) -> Callable[_P, _R]:
        """Make `function` (a translator) raise only `TrueupError` for bad data.

        Whatever a payload makes it raise besides (decimal.Overflow on a 400-digit
        quantity, OverflowError on a date past year 9999, RecursionError) becomes an
        `InvalidReport` naming the error, so a caller that treats `TrueupError` as "this
        part is unknown" never sees a crash instead.
        """

        @functools.wraps(function)
        def translate(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return function(*args, **kwargs)
            except TrueupError:
                raise
            except (RecursionError, ArithmeticError, UnicodeError, ValueError, TypeError, LookupError) as e:
                msg = f"{self.broker} {function.__name__}: unreadable payload ({type(e).__name__}: {e})"
                raise InvalidReport(msg) from e

        return translate

    @contextmanager
    def located(self, what: str, account: str, path: str, fields: Mapping[str, str]) -> Iterator[None]:
        """Re-raise a report constructor's `InvalidReport` with the JSON path of the source field."""
        try:
            yield
        except InvalidReport as e:
            name = fields.get(e.field or "")
            if name is None:
                raise  # an argument (account), not a payload field
            raise self.invalid(what=what, account=account, path=f"{path}.{name}", detail=str(e)) from e

    def finite(self, value: Decimal, *, what: str, account: str, path: str) -> Decimal:
        """Refuse NaN/Infinity before any comparison (a NaN comparison raises InvalidOperation)."""
        if not value.is_finite():
            raise self.invalid(what=what, account=account, path=path, detail=f"must be finite, got {value}")
        return value
