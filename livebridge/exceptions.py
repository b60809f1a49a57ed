"""Exceptions raised by livebridge."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "Busy",
    "ConfigError",
    "LivebridgeError",
    "Overloaded",
    "Permanent",
    "PluginError",
    "Refused",
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


class Refused(LivebridgeError):
    """A request refused: ``status`` (a 4xx), a short fixed ``reason`` (fit for a metric
    label), what exactly was wrong (``detail``) and extra response ``headers``.

    The one refusal type: ``Source.reject(request, exc)`` logs, counts and answers it.
    """

    def __init__(self, status: int, reason: str, detail: str | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers


class Busy(LivebridgeError):
    """The bridge cannot take a message right now: ``Source.reject(request, exc)`` answers
    503 with ``Retry-After: retry_after`` so the provider retries."""

    retry_after: int = 10


class Overloaded(Busy):
    """The outbox is full."""

    def __init__(self, retry_after: int = 30) -> None:
        self.retry_after = retry_after
        super().__init__(f"outbox is full; retry in {retry_after} s")


class StoreUnavailable(Busy):
    """The store cannot take writes right now (for example, Redis is unreachable)."""


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
