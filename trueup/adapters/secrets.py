"""Secrets out of error text: what a broker echoes back is redacted before it becomes our text.

Some gateways answer an error with the request they refused, headers included: Alpaca's
``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``, Kite's ``Authorization: token
api_key:access_token``. Each adapter turns an SDK error into our error (`BrokerQueryError`,
`SubmitRejected`, ...) at one place, and passes the text through a `Redactor` there, so the
secret reaches no message, STALE_DATA detail, gate reason, CLI output, log line or stored
event. A `Redactor` replaces the secrets its client holds wherever they appear, then any
value after a header-looking name that says secret, token, key, password, signature or
authorization, whatever the secret (one the client never held, a rotated token).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["MASK", "Redactor"]

MASK: Final = "***"

_SENSITIVE_NAME: Final = (
    r"[\w-]*(?:secret|token|passw(?:or)?d|signature|api[_-]?key|key[_-]?id|auth\w*)[\w-]*"
)
_HEADER_ECHO: Final = re.compile(
    # name, then ": " / "=" / '": "' (header, form or JSON/dict echo), then an optional
    # scheme ("token ", "Bearer ") and the value up to a quote, space, comma or bracket.
    rf"""(?ix)
    (?P<name>\b{_SENSITIVE_NAME})
    (?P<sep>["']?\s*[:=]\s*["']?)
    (?P<scheme>(?:token|bearer|basic)\s+)?
    (?P<value>[^\s"',;}}\]&]+)
    """
)
_SHORTEST_SECRET: Final = 4
"""Shorter values are not replaced by themselves (they would mask ordinary words)."""


class Redactor:
    """Masks the secrets it holds, and header-looking echoes of any secret, in text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        """Mask each of `secrets` (empty and very short ones are left to the pattern)."""
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Mask `secret` too (a new access token); the old ones stay masked."""
        if secret and len(secret) >= _SHORTEST_SECRET:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        """`text` with every secret masked."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return _HEADER_ECHO.sub(_mask_value, text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def _mask_value(match: re.Match[str]) -> str:
    return f"{match['name']}{match['sep']}{match['scheme'] or ''}{MASK}"
