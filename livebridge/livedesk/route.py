"""The inbound route: outbox → Livedesk, through the sink.

Livedesk's errors are translated here, at its edge, into what the dispatcher knows:
``Throttled`` (429: pause the route, slow down), ``Unavailable`` (transport errors, timeouts,
408, 5xx: the breaker's business), ``Retryable`` (the per-conversation limit, ``422 Too many
messages``: this item backs off) and ``Permanent`` (any other 4xx).
"""

from __future__ import annotations

from livebridge.exceptions import Permanent, Retryable, Throttled, Unavailable
from livebridge.livedesk.client import LivedeskError
from livebridge.livedesk.sink import LivedeskSink
from livebridge.model import InboundMessage
from livebridge.outbox import Flow, Route
from livebridge.store import OutboxItem

__all__ = ["ROUTE", "LivedeskRoute", "translate"]

#: The inbound route's name in the store.
ROUTE = "livedesk"

_TOO_MANY_MESSAGES = "Too many messages"


def translate(exc: LivedeskError) -> Retryable | Permanent:
    """What a failed Livedesk call means for the item and the route."""
    message, body = str(exc), exc.body
    if exc.status == 429:
        return Throttled(message, retry_after=exc.retry_after, response=body)
    if exc.status is None or exc.status == 408 or exc.status >= 500:
        return Unavailable(message, retry_after=exc.retry_after, response=body)
    if exc.status == 422 and _TOO_MANY_MESSAGES in body:  # one busy conversation's limit
        return Retryable(message, retry_after=exc.retry_after, response=body)
    return Permanent(message, response=body)


class LivedeskRoute(Route):
    """Delivers inbound messages to Livedesk; its breaker and rate are Livedesk's."""

    def __init__(self, sink: LivedeskSink, flow: Flow) -> None:
        super().__init__(ROUTE, flow)
        self.sink = sink

    async def deliver(self, item: OutboxItem) -> None:
        """Deliver one inbound message through the sink."""
        try:
            await self.sink.deliver(InboundMessage.model_validate_json(item.payload))
        except LivedeskError as exc:
            raise translate(exc) from exc
