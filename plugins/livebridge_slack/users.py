"""Slack users as livebridge senders (``users.info``) and the names of mentioned users and
channels (``conversations.info``): cached, never in the way of delivery."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from livebridge import Sender
from livebridge_slack.api import TRANSPORT_ERRORS, error_of, is_transient, retry_after

__all__ = ["LOOKUP_PAUSE", "MAX_NAME_LOOKUPS", "UserDirectory", "sender_of"]

#: How long lookups pause after Slack throttled or failed, unless it said (``Retry-After``).
LOOKUP_PAUSE = 30.0
#: Mentions looked up per message at most; the others keep their ids.
MAX_NAME_LOOKUPS = 20
#: The Web API method that describes an id, by its first letter, and the answer's field.
_LOOKUPS = {"U": ("users.info", "user"), "W": ("users.info", "user"),
            "C": ("conversations.info", "channel"), "G": ("conversations.info", "channel")}


def sender_of(external_id: str, user: Mapping[str, Any]) -> Sender:
    """A ``Sender`` from a ``users.info`` user object: name, email and avatar."""
    profile = user.get("profile") or {}
    name = (user.get("real_name") or profile.get("real_name") or profile.get("display_name")
            or user.get("name") or user.get("id"))
    return Sender(external_id=external_id, name=name or None, email=profile.get("email") or None,
                  avatar_url=profile.get("image_192") or None)


class UserDirectory:
    """Slack users (``users.info``) and channels (``conversations.info``), behind a bounded
    LRU cache with a TTL.

    A miss is looked up with a short timeout; on any failure the sender is the bare user id
    and ``on_fallback(user, why)`` is called (a mention just keeps its id). After a rate limit, a
    timeout or a server error, lookups pause (for ``Retry-After`` or ``LOOKUP_PAUSE``
    seconds) so that a Slack in trouble does not slow every request down.
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
        self._cache: OrderedDict[str, tuple[float, Mapping[str, Any]]] = OrderedDict()
        self._paused_until = 0.0

    async def sender(self, team: str, user: str) -> Sender:
        """The sender ``team:user``, with the Slack profile when it can be had."""
        key = f"{team}:{user}"
        found, why = await self._object(team, user)
        if found is None:
            self._on_fallback(user, why)
            return Sender(external_id=key, name=user)
        return sender_of(key, found)

    async def names(self, team: str, ids: Iterable[str]) -> dict[str, str]:
        """Names of mentioned users and channels (ids from ``mrkdwn_refs``), looked up at
        once; those that cannot be had (user groups, failures, past ``MAX_NAME_LOOKUPS``)
        are left out."""
        wanted = sorted(i for i in set(ids) if i[:1] in _LOOKUPS)[:MAX_NAME_LOOKUPS]
        found = await asyncio.gather(*(self._name(team, i) for i in wanted))
        return {i: name for i, name in zip(wanted, found, strict=True) if name}

    async def _name(self, team: str, ref: str) -> str | None:
        found, _ = await self._object(team, ref)
        if found is None:
            return None
        name = sender_of(ref, found).name if _LOOKUPS[ref[0]][1] == "user" else found.get("name")
        return name if isinstance(name, str) and name else None

    async def _object(self, team: str, ref: str) -> tuple[Mapping[str, Any] | None, str]:
        """The user or channel object of ``ref``, cached; or None and why not."""
        key = f"{team}:{ref}"
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1], ""
        if now < self._paused_until:
            return None, "lookups paused"
        found, why = await self._lookup(ref, now)
        if found is None:
            return None, why
        self._cache[key] = (now + self._ttl, found)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return found, ""

    async def _lookup(self, ref: str, now: float) -> tuple[Mapping[str, Any] | None, str]:
        """``users.info`` or ``conversations.info``: the object, or None and why not."""
        method, field = _LOOKUPS[ref[0]]
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._web.api_call(method, http_verb="GET",
                                                    params={field: ref})
        except SlackApiError as exc:
            if is_transient(exc):
                self._paused_until = now + (retry_after(exc) or LOOKUP_PAUSE)
            return None, error_of(exc)
        except TRANSPORT_ERRORS as exc:
            self._paused_until = now + LOOKUP_PAUSE
            return None, repr(exc)
        found = response.get(field)
        return (found, "") if isinstance(found, dict) else (None, f"no {field} in the answer")
