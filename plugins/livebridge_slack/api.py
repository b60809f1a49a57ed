"""Reading Slack Web API failures: worth retrying or not, and when."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from livebridge import parse_retry_after

__all__ = ["TRANSIENT_ERRORS", "TRANSPORT_ERRORS", "error_of", "is_transient", "retry_after"]

#: Slack ``error`` codes that say "not now" rather than "never".
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

#: What a Web API call raises when Slack could not be reached or did not answer in time.
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError, SlackClientError)


def error_of(exc: SlackApiError) -> str:
    """Slack's ``error`` code, or the HTTP status when there is none."""
    return str(exc.response.get("error") or f"HTTP {exc.response.status_code}")


def is_transient(exc: SlackApiError) -> bool:
    """Whether the same call may succeed later (rate limit, Slack-side trouble)."""
    status = exc.response.status_code
    return status == 429 or status >= 500 or error_of(exc) in TRANSIENT_ERRORS


def retry_after(exc: SlackApiError) -> float | None:
    """Seconds Slack asked to wait (``Retry-After``), if it did."""
    return parse_retry_after(exc.response.headers.get("Retry-After"))
