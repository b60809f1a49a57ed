"""A local fake of LINE's Messaging API (push, profiles, message content), over real HTTP.

Serve ``FakeLine().app()`` with any aiohttp server and point the source's ``api_url`` and
``data_api_url`` at it. It answers as LINE does (shapes, status codes, ``X-Line-Retry-Key``
semantics) and records every call.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

__all__ = ["FakeLine"]

MAX_TEXT = 5000
MAX_MESSAGES = 5
MAX_URL = 2000
#: The message types this fake takes, besides text (both with these two URLs).
MEDIA_TYPES = ("image", "video")


def _error(status: int, message: str, *, headers: dict[str, str] | None = None,
           details: list[dict[str, str]] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers)


class FakeLine:
    """A LINE Messaging API for tests: ``add_profile``, ``add_content``, then look at
    ``pushed`` and ``calls``."""

    def __init__(self, *, token: str = "line-token") -> None:  # noqa: S107 - fake credential
        self.token = token
        #: (group or room id or "", user id) -> profile
        self.profiles: dict[tuple[str, str], dict[str, Any]] = {}
        #: message id -> (bytes, content type)
        self.contents: dict[str, tuple[bytes, str]] = {}
        #: Accepted pushes: ``{"to", "messages", "retry_key"}``.
        self.pushed: list[dict[str, Any]] = []
        #: Every request: (method, path).
        self.calls: list[tuple[str, str]] = []
        #: Answer pushes with this status (429: ``Retry-After: 7``).
        self.fail_push: int | None = None
        #: Send content chunked, without ``Content-Length`` (as a streaming server may).
        self.chunked_content = False
        #: Answer profile lookups with this status.
        self.fail_profile: int | None = None
        self._retry_keys: dict[str, str] = {}

    def add_profile(self, user: str, name: str, *, chat: str = "",
                    picture: str | None = None) -> dict[str, Any]:
        """A user's profile: as a friend (``chat=""``) or as a member of a group or room."""
        profile: dict[str, Any] = {"displayName": name, "userId": user}
        if picture:
            profile["pictureUrl"] = picture
        if not chat:
            profile.update(language="ja", statusMessage="Hello, LINE!")
        self.profiles[(chat, user)] = profile
        return profile

    def add_content(self, message_id: str, data: bytes, content_type: str) -> None:
        """The file of an image, video, audio or file message."""
        self.contents[message_id] = (data, content_type)

    def app(self) -> web.Application:
        """The aiohttp application serving the API under ``/v2/bot/``."""
        app = web.Application(middlewares=[self._record_and_authorize])
        app.router.add_post("/v2/bot/message/push", self._push)
        app.router.add_get("/v2/bot/profile/{user}", self._profile)
        app.router.add_get("/v2/bot/group/{chat}/member/{user}", self._profile)
        app.router.add_get("/v2/bot/room/{chat}/member/{user}", self._profile)
        app.router.add_get("/v2/bot/message/{id}/content", self._content)
        return app

    @web.middleware
    async def _record_and_authorize(self, request: web.Request,
                                    handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Authentication failed. Confirm that the access token in the "
                               "authorization header is valid.")
        response: web.StreamResponse = await handler(request)
        return response

    async def _push(self, request: web.Request) -> web.Response:
        if self.fail_push == 429:
            return _error(429, "The API rate limit has been exceeded. Try again later.",
                          headers={"Retry-After": "7"})
        if self.fail_push:
            return _error(self.fail_push, "fake failure")
        retry_key = request.headers.get("X-Line-Retry-Key")
        if retry_key is not None:
            try:
                uuid.UUID(retry_key)
            except ValueError:
                return _error(400, "The retry key is invalid")
            if retry_key in self._retry_keys:
                return _error(409, "The retry key is already accepted",
                              headers={"x-line-accepted-request-id": self._retry_keys[retry_key]})
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body has 1 error(s)")
        problem = _push_problem(body)
        if problem:
            return _error(400, "The request body has 1 error(s)",
                          details=[{"message": problem[1], "property": problem[0]}])
        request_id = str(uuid.uuid4())
        if retry_key is not None:
            self._retry_keys[retry_key] = request_id
        self.pushed.append({"to": body["to"], "messages": body["messages"],
                            "retry_key": retry_key})
        return web.json_response(
            {"sentMessages": [{"id": str(600000000000000 + len(self.pushed) * 10 + i),
                               "quoteToken": f"q{len(self.pushed)}-{i}"}
                              for i in range(len(body["messages"]))]},
            headers={"x-line-request-id": request_id})

    async def _profile(self, request: web.Request) -> web.Response:
        if self.fail_profile:
            return _error(self.fail_profile, "fake failure")
        key = (request.match_info.get("chat", ""), request.match_info["user"])
        profile = self.profiles.get(key)
        return web.json_response(profile) if profile else _error(404, "Not found")

    async def _content(self, request: web.Request) -> web.StreamResponse:
        found = self.contents.get(request.match_info["id"])
        if found is None:
            return _error(404, "Not found")
        if not self.chunked_content:
            return web.Response(body=found[0], content_type=found[1])
        response = web.StreamResponse(headers={"Content-Type": found[1]})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(found[0]), 1000):
            await response.write(found[0][start:start + 1000])
        await response.write_eof()
        return response


def _push_problem(body: Any) -> tuple[str, str] | None:
    """What LINE would refuse in a push body: (property, message), or None."""
    if not isinstance(body, dict) or not isinstance(body.get("to"), str) or not body["to"]:
        return "to", "must be specified"
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        return "messages", f"Size must be between 1 and {MAX_MESSAGES}"
    for i, message in enumerate(messages):
        problem = _message_problem(message)
        if problem:
            return f"messages[{i}]{problem[0]}", problem[1]
    return None


def _message_problem(message: Any) -> tuple[str, str] | None:
    """What LINE would refuse in a text, image or video message (the media by URL: LINE
    fetches them later, when the user opens them)."""
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
            return ".text", f"Length must be between 1 and {MAX_TEXT}"
        return None
    if kind not in MEDIA_TYPES:
        return ".type", "only text, image and video messages in this fake"
    for field in ("originalContentUrl", "previewImageUrl"):
        url = message.get(field)
        if not isinstance(url, str) or not url.startswith("https://") or len(url) > MAX_URL:
            return f".{field}", f"must be an HTTPS URL of at most {MAX_URL} characters"
    return None
