"""Logging for `trueup run`: one line per event (text or JSON), secrets masked.

A traceback stays on its event's line (newlines escaped in text, a field in JSON), so a
log shipper never splits one event into many. Every configured secret's value is replaced
by ``***`` wherever it would appear, a last guard behind "credentials are names".

A whole-value mask cannot find a secret a library cut short before logging it: the
websocket library's DEBUG lines dump each frame shortened to its head and tail, and the
tail of Alpaca's authentication frame is the secret key. So its loggers stay at INFO or
above whatever `log_level` says (frame dumps are not events either).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

__all__ = ["setup_logging"]

FRAME_DUMPING_LOGGERS: Final = ("websockets",)
"""Loggers whose DEBUG lines carry shortened wire frames (credentials included): INFO at least."""


class _Masking(logging.Formatter):
    def __init__(self, secrets: Iterable[str], *, as_json: bool) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.as_json = as_json

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        message = self.mask(record.getMessage())
        error = self.mask(self.formatException(record.exc_info)) if record.exc_info else None
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        if self.as_json:
            line: dict[str, object] = {
                "ts": ts,
                "level": record.levelname,
                "logger": record.name,
                "message": message,
            }
            if error:
                line["error"] = error
            return json.dumps(line, ensure_ascii=False)
        text = f"{ts} {record.levelname} {record.name}: {message}"
        if error:
            text += " | " + error.replace("\n", "\\n")
        return text.replace("\n", "\\n")


def setup_logging(level: str, *, as_json: bool, secrets: Iterable[str] = ()) -> None:
    """Send every log record to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Masking(secrets, as_json=as_json))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in FRAME_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    # aiohttp's access log would be one line per scrape: noise, not events.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
