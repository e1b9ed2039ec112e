"""The trueup error tree: one base, one class per way things go wrong."""

from __future__ import annotations


class TrueupError(Exception):
    """Base of every error trueup raises on purpose."""


class InvalidReport(TrueupError, ValueError):  # noqa: N818 - named for the INVALID_REPORT it becomes
    """Raised when a broker report or payload cannot be read; names the field and the value."""

    def __init__(self, msg: str, *, field: str | None = None) -> None:
        """Build the error; `field` is the path of the offending field, if known."""
        super().__init__(msg)
        self.field = field


class BrokerQueryError(TrueupError):
    """Raised when a broker query fails; becomes STALE_DATA, never an empty answer."""


class NotReadyError(TrueupError):
    """Raised when a new order is refused because the startup gate is not READY or a lock holds."""


class ConfigError(TrueupError, ValueError):
    """Raised when a setting (store URL, policy, id) is malformed; names the key and the value."""


class StoreError(TrueupError):
    """Raised when the event store fails; wraps eventsourcing's PersistenceError once."""


class ConflictError(StoreError):
    """Raised when optimistic concurrency retries are exhausted on a busy aggregate."""
