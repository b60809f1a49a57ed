"""Exceptions raised by livebridge."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LivebridgeError",
    "Overloaded",
    "Permanent",
    "PluginError",
    "ReplyNotSupported",
    "Retryable",
    "StoreUnavailable",
    "Throttled",
    "Unavailable",
]


class LivebridgeError(Exception):
    """Base class of livebridge's own errors."""


class ConfigError(LivebridgeError):
    """The configuration is invalid; the message names the file, key path and fix."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {path}:\n{lines}")


class PluginError(LivebridgeError):
    """A plugin could not be loaded (for example, it implements an unknown hook)."""


class Overloaded(LivebridgeError):
    """The outbox is full: sources answer 503 with ``Retry-After`` so providers retry."""

    def __init__(self, retry_after: int = 30) -> None:
        self.retry_after = retry_after
        super().__init__(f"outbox is full; retry in {retry_after} s")


class StoreUnavailable(LivebridgeError):
    """The store cannot take writes right now (for example, Redis is unreachable)."""

    retry_after = 10


class ReplyNotSupported(LivebridgeError):
    """The source that owns a conversation cannot send agent replies back."""


class Retryable(LivebridgeError):
    """Delivery failed for a reason that may pass; try again later."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 response: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.response = response


class Permanent(LivebridgeError):
    """Delivery cannot succeed without an operator; dead-letter it."""

    def __init__(self, message: str, *, response: str | None = None) -> None:
        super().__init__(message)
        self.response = response


class Throttled(Retryable):
    """The receiver asks to slow down (HTTP 429): the route pauses for ``retry_after`` and
    lowers its rate; the item goes back without counting an attempt."""


class Unavailable(Retryable):
    """The receiver is down or unreachable (transport error, timeout, 5xx): counts toward
    the route's breaker, which stops the route after several in a row."""
