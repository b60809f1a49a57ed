"""Slack users as livebridge senders: ``users.info``, cached, never in the way of delivery."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from livebridge import Sender
from livebridge_slack.api import TRANSPORT_ERRORS, error_of, is_transient, retry_after

__all__ = ["LOOKUP_PAUSE", "UserDirectory", "sender_of"]

#: How long lookups pause after Slack throttled or failed, unless it said (``Retry-After``).
LOOKUP_PAUSE = 30.0


def sender_of(external_id: str, user: Mapping[str, Any]) -> Sender:
    """A ``Sender`` from a ``users.info`` user object: name, email and avatar."""
    profile = user.get("profile") or {}
    name = (user.get("real_name") or profile.get("real_name") or profile.get("display_name")
            or user.get("name") or user.get("id"))
    return Sender(external_id=external_id, name=name or None, email=profile.get("email") or None,
                  avatar_url=profile.get("image_192") or None)


class UserDirectory:
    """Slack users by ``users.info``, behind a bounded LRU cache with a TTL.

    A miss is looked up with a short timeout; on any failure the sender is the bare user id
    and ``on_fallback(user, why)`` is called. After a rate limit, a timeout or a server error,
    lookups pause (for ``Retry-After`` or ``LOOKUP_PAUSE`` seconds) so that a Slack in trouble
    does not slow every request down.
    """

    def __init__(self, web: AsyncWebClient, *, ttl: float, size: int, timeout: float,
                 on_fallback: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._web = web
        self._ttl = ttl
        self._size = size
        self._timeout = timeout
        self._on_fallback = on_fallback
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Sender]] = OrderedDict()
        self._paused_until = 0.0

    async def sender(self, team: str, user: str) -> Sender:
        """The sender ``team:user``, with the Slack profile when it can be had."""
        key = f"{team}:{user}"
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        if now < self._paused_until:
            found, why = None, "lookups paused"
        else:
            found, why = await self._lookup(user, now)
        if found is None:
            self._on_fallback(user, why)
            return Sender(external_id=key, name=user)
        sender = sender_of(key, found)
        self._cache[key] = (now + self._ttl, sender)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return sender

    async def _lookup(self, user: str, now: float) -> tuple[Mapping[str, Any] | None, str]:
        """``users.info``: the user object, or None and why not."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._web.users_info(user=user)
        except SlackApiError as exc:
            if is_transient(exc):
                self._paused_until = now + (retry_after(exc) or LOOKUP_PAUSE)
            return None, error_of(exc)
        except TRANSPORT_ERRORS as exc:
            self._paused_until = now + LOOKUP_PAUSE
            return None, repr(exc)
        found = response.get("user")
        return (found, "") if isinstance(found, dict) else (None, "no user in the answer")
