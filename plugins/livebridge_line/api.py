"""LINE Messaging API calls over the daemon's shared HTTP session: push, profiles, content.

Each call has a timeout; a failure is a ``LineApiError`` that says whether trying again later
may help (429, 5xx, no answer) and how long LINE asked to wait (``Retry-After``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from livebridge import parse_retry_after

__all__ = ["Content", "LineApi", "LineApiError", "Profile"]

#: What an HTTP call raises when LINE could not be reached or did not answer in time.
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError)
#: How much of an error body is kept (LINE's ``{"message": ...}`` is short).
_ERROR_KEPT = 500


class LineApiError(Exception):
    """A failed LINE call: ``status`` (0: no answer), LINE's ``message``, ``retry_after``."""

    def __init__(self, call: str, status: int, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"LINE {call}: {f'HTTP {status}' if status else 'no answer'}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Whether the same call may succeed later (no answer, rate limit, LINE-side trouble)."""
        return self.status in (0, 429) or self.status >= 500


@dataclass(frozen=True, slots=True)
class Profile:
    """A LINE user's display name and picture (either may be missing)."""

    name: str | None
    picture: str | None


@dataclass(frozen=True, slots=True)
class Content:
    """A message's file from the content API: the bytes, or (over the cap) only its size."""

    content_type: str
    size: int | None
    data: bytes | None


def _message_of(raw: bytes) -> str:
    """LINE's error ``message`` (its body is ``{"message": ..., "details": [...]}``)."""
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("message"), str):
        return str(found["message"])[:_ERROR_KEPT]
    return raw[:_ERROR_KEPT].decode("utf-8", "replace")


class LineApi:
    """The Messaging API of one channel (``api_url``) and its content host (``data_api_url``)."""

    def __init__(self, http: aiohttp.ClientSession, token: str, *, api_url: str,
                 data_api_url: str, timeout: float) -> None:
        self._http = http
        self._auth = {"Authorization": f"Bearer {token}"}
        self._api = api_url.rstrip("/")
        self._data_api = data_api_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def push(self, to: str, messages: list[dict[str, Any]], retry_key: str) -> None:
        """``POST /v2/bot/message/push``; a 409 (this retry key was already accepted) is
        success: the messages were sent before."""
        call = "push"
        headers = {**self._auth, "X-Line-Retry-Key": retry_key}
        try:
            async with self._http.post(f"{self._api}/v2/bot/message/push", headers=headers,
                                       json={"to": to, "messages": messages},
                                       timeout=self._timeout) as resp:
                if resp.status in {200, 409}:
                    return
                raise await _error(call, resp)
        except TRANSPORT_ERRORS as exc:
            raise LineApiError(call, 0, repr(exc)) from exc

    async def profile(self, user: str, group: str | None = None, room: str | None = None,
                      *, timeout: float) -> Profile:
        """The profile of ``user``: as a friend of the bot, or as a member of ``group`` /
        ``room`` (whose members need not be friends)."""
        if group:
            path = f"/v2/bot/group/{quote(group, safe='')}/member/{quote(user, safe='')}"
        elif room:
            path = f"/v2/bot/room/{quote(room, safe='')}/member/{quote(user, safe='')}"
        else:
            path = f"/v2/bot/profile/{quote(user, safe='')}"
        call = "profile"
        try:
            async with self._http.get(self._api + path, headers=self._auth,
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    raise await _error(call, resp)
                raw = await resp.read()
        except TRANSPORT_ERRORS as exc:
            raise LineApiError(call, 0, repr(exc)) from exc
        try:
            found = json.loads(raw)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise LineApiError(call, 200, "not a JSON object")
        name, picture = found.get("displayName"), found.get("pictureUrl")
        return Profile(name if isinstance(name, str) and name else None,
                       picture if isinstance(picture, str) and picture else None)

    async def content(self, message_id: str, cap: int) -> Content:
        """``GET /v2/bot/message/{id}/content`` from the data API, read up to ``cap`` bytes:
        past it, only the type and size are kept (no bytes)."""
        call = "content"
        url = f"{self._data_api}/v2/bot/message/{quote(message_id, safe='')}/content"
        try:
            async with self._http.get(url, headers=self._auth, timeout=self._timeout) as resp:
                if resp.status != 200:  # 202: a video or audio still being prepared
                    raise await _error(call, resp)
                kind = resp.content_type or "application/octet-stream"
                if resp.content_length is not None and resp.content_length > cap:
                    return Content(kind, resp.content_length, None)
                data = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > cap:
                        return Content(kind, resp.content_length, None)
                return Content(kind, len(data), bytes(data))
        except TRANSPORT_ERRORS as exc:
            raise LineApiError(call, 0, repr(exc)) from exc


async def _error(call: str, resp: aiohttp.ClientResponse) -> LineApiError:
    raw = await resp.content.read(_ERROR_KEPT * 4)
    return LineApiError(call, resp.status, _message_of(raw),
                        parse_retry_after(resp.headers.get("Retry-After")))
