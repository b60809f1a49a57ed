"""Checking signed requests: HMAC-SHA256 compared in constant time, timestamp windows.

Shared by every source and the Livedesk webhook, so that none of them can be crashed by a
non-ASCII header (``hmac.compare_digest`` refuses non-ASCII ``str``) or tricked by a
non-constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

__all__ = ["equal", "hmac_sha256_hex", "timestamp_problem"]


def hmac_sha256_hex(key: str | bytes, message: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of ``message`` under ``key``."""
    raw_key = key.encode() if isinstance(key, str) else key
    return hmac.new(raw_key, message, hashlib.sha256).hexdigest()


def equal(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time equality of a value from a request and the expected one (any text)."""

    def raw(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")

    return hmac.compare_digest(raw(given), raw(expected))


def timestamp_problem(stamp: str | int | float | None, max_age: float,
                      now: float | None = None) -> str | None:
    """Why a request's Unix timestamp is refused (``"bad timestamp"``, ``"stale timestamp"``),
    or None when it lies within ``max_age`` seconds of now (either side)."""
    try:
        when = float(stamp)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return "bad timestamp"
    if math.isnan(when) or abs((time.time() if now is None else now) - when) > max_age:
        return "stale timestamp"
    return None
