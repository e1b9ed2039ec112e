"""Alpaca client order ids for replace chains. Pure: no clock, no I/O.

Re-exported by `translate.py`, whose order reports carry these ids unchanged.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_CLIENT_ORDER_ID", "replace_client_order_id"]

MAX_CLIENT_ORDER_ID: Final = 20
"""Longest id trueup sends: Kite's `tag` limit, the common alphabet of every broker."""

_BASE: Final = re.compile(r"[A-Za-z0-9]{1,20}")


def replace_client_order_id(base: str, n: int) -> str:
    """The fresh `client_order_id` to send with the `n`-th replace (PATCH) of the order `base`.

    Alpaca gives the replacement a new order id and refuses to reuse a `client_order_id`,
    even a cancelled one (HTTP 422, code 40010001); a PATCH without one gets an id Alpaca
    makes up, and our id is lost on the new leg. So every replace sends
    `base + "R" + str(n)`, with `base` cut from the right to keep the result within 20
    characters [A-Za-z0-9], the id alphabet every broker accepts.

    * Always derive from the root `base` with a growing `n` (`R1`, `R2`, ...), never from
      the previous leg's id, so ids never grow and every leg is a pure function of
      `(base, n)`: after a crash between the PATCH and storing its answer, look the leg up
      with `get_order_by_client_id(replace_client_order_id(base, n))` before retrying.
    * Persist `n` before sending, like the base token itself.
    * Cutting a 20-character base drops its last characters (2 for `R1`..`R9`, 3 for
      `R10`..`R99`). With the proposed token (2-character prefix + 18 random base36
      characters) 16 random characters (~82 bits) remain, so a leg colliding with another
      order's id stays negligible; a base of 18 characters or fewer is never cut.

    Raises:
        ValueError: `base` is not 1-20 characters [A-Za-z0-9], or `n` is not >= 1.
    """
    if not _BASE.fullmatch(base):
        msg = f"base must be 1-20 characters [A-Za-z0-9], got {base!r}"
        raise ValueError(msg)
    if isinstance(n, bool) or n < 1:
        msg = f"n must be an int >= 1, got {n!r}"
        raise ValueError(msg)
    suffix = f"R{n}"
    if len(suffix) >= MAX_CLIENT_ORDER_ID:
        msg = f"n is too large for a {MAX_CLIENT_ORDER_ID}-character id, got {n}"
        raise ValueError(msg)
    return base[: MAX_CLIENT_ORDER_ID - len(suffix)] + suffix
