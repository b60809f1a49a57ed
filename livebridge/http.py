"""HTTP helpers for sources: refusing a request, reading a provider's ``Retry-After``."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from livebridge.exceptions import Busy, Refused

if TYPE_CHECKING:
    from livebridge.metrics import Metrics

__all__ = ["parse_retry_after", "reject"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def reject(
    log: Any,
    metrics: Metrics,
    source: str,
    request: web.Request,
    error: int | Refused | Busy,
    reason: str | None = None,
    *,
    detail: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Log and count a refused request; answer with ``{"error": reason, ...detail}``.

    ``error`` is a status with its ``reason``, or the error itself: a ``Refused`` answers its
    own status, reason, detail and headers; a ``Busy`` (``Overloaded``, ``StoreUnavailable``)
    answers 503 "busy" with ``Retry-After``. ``detail`` and ``headers`` add to those.
    """
    extra: dict[str, Any] = {}
    more: dict[str, str] = {}
    if isinstance(error, Refused):
        status, reason = error.status, error.reason
        extra = {"detail": error.detail} if error.detail else {}
        more = dict(error.headers or {})
    elif isinstance(error, Busy):
        status, reason = 503, "busy"
        more = {"Retry-After": str(error.retry_after)}
    else:
        status = error
        if reason is None:
            raise TypeError("reject(request, status, reason): the reason is missing")
    extra.update(detail or {})
    more.update(headers or {})
    log.warning("request rejected", status=status, reason=reason, path=request.path,
                remote=request.remote, **extra)
    metrics.labels(metrics.rejected, source, reason).inc()
    return web.Response(status=status, text=json.dumps({"error": reason, **extra}),
                        content_type="application/json", headers=more or None)
