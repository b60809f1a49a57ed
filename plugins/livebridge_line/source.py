"""The ``line`` source: LINE Messaging API webhook events in, agent replies out by the push
API.

``LineSource.handle`` verifies ``X-Line-Signature`` over the raw body, checks the fields it
reads, then offers each event: messages are deduplicated on ``webhookEventId``, their
sender's profile looked up (cached in the store), files fetched from the content API, and
accepted durably before LINE is answered 200.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import uuid
import weakref
from collections.abc import Mapping
from typing import Annotated, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, SecretStr

from livebridge import (
    AcceptResult,
    Attachment,
    BodyError,
    Busy,
    Duration,
    InboundMessage,
    OutboundReply,
    Permanent,
    Sender,
    Source,
    SourceSettings,
    Throttled,
    Unavailable,
    equal,
    hmac_sha256_hex,
    markdown_to_text,
    read_body,
    required_secret,
)
from livebridge_line.api import LineApi, LineApiError, Profile
from livebridge_line.events import (
    FILE_TYPES,
    chat_of,
    malformed_field,
    readable_line,
    storable,
)

__all__ = ["LineSettings", "LineSource", "retry_key"]

#: LINE's limits on a push: characters a text message, messages a request.
MAX_TEXT = 5000
MAX_MESSAGES = 5
#: What LINE shows of a file by URL: an image (JPEG or PNG, at most 10 MB) or an MP4 video
#: (at most 200 MB, with a preview image), each URL HTTPS and at most 2000 characters.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
VIDEO_TYPES = frozenset({"video/mp4"})
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_URL = 2000
#: Event types counted by their own name in ``livebridge_line_events_total``; others: "other".
COUNTED_TYPES = frozenset({"message", "follow", "unfollow", "join", "leave", "memberJoined",
                           "memberLeft", "postback", "unsend", "beacon", "accountLink",
                           "videoPlayComplete"})
#: Namespace of the ``X-Line-Retry-Key`` UUIDs derived from Livedesk message ids.
RETRY_KEY_NAMESPACE = uuid.UUID("0b5c2f1e-5e0a-4c47-9a51-6c1f1f6e3a10")

#: File extensions ``mimetypes`` does not know (LINE's audio is M4A).
_EXTENSIONS = {"audio/m4a": ".m4a", "audio/x-m4a": ".m4a"}

_EVENTS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


class LineSettings(SourceSettings):
    """``type: line``: one LINE Official Account (a Messaging API channel)."""

    path: str = "/line/webhook"
    channel_secret: Annotated[SecretStr, required_secret("LINE_CHANNEL_SECRET")] = Field(
        description="verifies X-Line-Signature")
    channel_access_token: Annotated[
        SecretStr, required_secret("LINE_CHANNEL_ACCESS_TOKEN")] = Field(
        description="push, profile and content API calls")
    api_url: str = "https://api.line.me"
    data_api_url: str = Field(default="https://api-data.line.me",
                              description="the content API's host")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_file_bytes: int = Field(default=10 * 1024 * 1024, ge=0,
                                description="past it, a file is an attachment line")
    profile_cache_ttl: Duration = 86400.0
    profile_timeout: Duration = 2.0
    api_timeout: Duration = 15.0


def _events_counter(registry: CollectorRegistry) -> Counter:
    """``livebridge_line_events_total``, registered once per daemon registry."""
    if registry not in _EVENTS:
        _EVENTS[registry] = Counter(
            "livebridge_line_events_total", "LINE webhook events received, by type.",
            ("source", "type"), registry=registry,
        )
    return _EVENTS[registry]


def retry_key(reply: OutboundReply, push: int) -> str:
    """The ``X-Line-Retry-Key`` of the ``push``-th request of a reply: the same on every
    attempt, so LINE sends a retried push once."""
    name = f"{reply.conversation_id}:{reply.livedesk_message_id}:{push}"
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, name))


def _signature(secret: str, body: bytes) -> str:
    """LINE's ``X-Line-Signature``: base64 of the HMAC-SHA256 of the body."""
    return base64.b64encode(bytes.fromhex(hmac_sha256_hex(secret, body))).decode()


class LineSource(Source[LineSettings]):
    """A LINE Official Account as a livebridge source."""

    type_name = "line"
    api: LineApi
    _events: Counter

    def routes(self) -> list[web.RouteDef]:
        """The webhook endpoint."""
        return [web.post(self.settings.path, self.handle)]

    async def start(self) -> None:
        """Set up the API client on the daemon's HTTP session."""
        s = self.settings
        self.api = LineApi(self.bridge.http, s.channel_access_token.get_secret_value(),
                           api_url=s.api_url, data_api_url=s.data_api_url,
                           timeout=s.api_timeout)
        self._events = _events_counter(self.bridge.metrics.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """``POST`` handler of the webhook: verify, check, offer each event, answer."""
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyError as exc:
            return self.reject(request, exc)
        signature = request.headers.get("X-Line-Signature")
        if not signature:
            return self.reject(request, 401, "unsigned")
        expected = _signature(self.settings.channel_secret.get_secret_value(), body)
        if not equal(signature, expected):
            return self.reject(request, 401, "bad signature")
        try:
            payload = json.loads(body.decode("utf-8"))  # LINE sends UTF-8 only
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return self.reject(request, 400, "malformed JSON")
        if not isinstance(payload, dict) or not storable(payload):
            return self.reject(request, 400, "malformed JSON")
        wrong = malformed_field(payload)
        if wrong is not None:
            return self.reject(request, 400, "malformed event", detail={"field": wrong})
        try:
            results = [await self.receive(event) for event in payload["events"]]
        except Busy as exc:
            return self.reject(request, exc, detail={"retry_after": exc.retry_after})
        return web.json_response({"ok": True, "results": [
            {"result": result.value, "reason": reason} for result, reason in results]})

    async def receive(self, event: Mapping[str, Any]) -> tuple[AcceptResult, str | None]:
        """Offer one (checked) webhook event; returns the result and, when dropped, why.
        Raises ``Overloaded`` / ``StoreUnavailable``."""
        kind = str(event.get("type"))
        self._events.labels(source=self.name,
                            type=kind if kind in COUNTED_TYPES else "other").inc()
        result, reason = await self._offer(event)
        if reason is not None:  # dropped here (the bridge counts what a hook drops)
            self.count_dropped(reason)
        self.log.info("line event", event_id=event.get("webhookEventId"), type=kind,
                      result=result.value, reason=reason,
                      redelivery=(event.get("deliveryContext") or {}).get("isRedelivery"))
        return result, reason

    async def _offer(self, event: Mapping[str, Any]) -> tuple[AcceptResult, str | None]:
        kind = event.get("type")
        if kind in ("follow", "unfollow"):
            return AcceptResult.DROPPED, kind
        if kind != "message":
            return AcceptResult.DROPPED, "not a message"
        source = event.get("source") or {}
        chat = chat_of(source)
        event_id, message = event.get("webhookEventId"), event["message"]
        if not event_id or chat is None or not message.get("id"):
            return AcceptResult.DROPPED, "incomplete event"
        if await self.bridge.seen(self, event_id):
            self.bridge.metrics.deduplicated.labels(source=self.name).inc()
            return AcceptResult.DUPLICATE, None
        chat_id, group = chat
        user = source.get("userId")
        sender = await self._sender(user, source) if user else Sender(external_id=chat_id)
        text, attachments = await self._content(message)
        if group:  # one conversation for the whole group: say who wrote
            who = sender.name or sender.external_id
            text = f"{who}: {text}" if text else f"{who}:"
        inbound = InboundMessage(
            source=self.name, event_id=event_id, sender=sender, thread_key=chat_id,
            text=text, attachments=attachments, message_ref=message["id"],
            reply_to=message.get("quotedMessageId") or None,
            metadata={"line_chat_type": source.get("type"), "line_chat": chat_id},
            reply_context={"to": chat_id},
        )
        return await self.bridge.accept(inbound, self), None

    async def _content(self, message: Mapping[str, Any]) -> tuple[str, list[Attachment]]:
        """The text of a message and its file, if it has one."""
        kind = message.get("type")
        if kind == "text":
            return str(message.get("text") or ""), []
        if kind in FILE_TYPES:
            return "", [await self._file(message)]
        return readable_line(message), []

    async def _file(self, message: Mapping[str, Any]) -> Attachment:
        """The file of an image, video, audio or file message, to fetch just before delivery
        (``fetch_attachments``): LINE gets its 200 once the message is stored, not after a
        download."""
        kind, message_id = str(message["type"]), str(message["id"])
        name = message.get("fileName") or f"{kind}-{message_id}"
        provider = message.get("contentProvider") or {}
        if provider.get("type") == "external":  # sent by a LINE app, kept on its servers
            return Attachment(name=name, content_type=FILE_TYPES[kind],
                              url=provider.get("originalContentUrl") or None)
        return Attachment(name=name, content_type=FILE_TYPES[kind],
                          size=message.get("fileSize"), fetch_ref=message_id)

    async def fetch_attachments(self, message: InboundMessage) -> list[Attachment]:
        """The message's LINE files with their bytes, within ``max_file_bytes`` each; a file
        over the cap, or that cannot be fetched, stays its name, type and size."""
        return [await self._fetch(a) if a.fetch_ref is not None and a.data is None else a
                for a in message.attachments]

    async def _fetch(self, attachment: Attachment) -> Attachment:
        message_id = str(attachment.fetch_ref)
        try:
            content = await self.api.content(message_id, self.settings.max_file_bytes)
        except LineApiError as exc:
            self.log.warning("line content not fetched", message_id=message_id, error=str(exc))
            return attachment
        name = attachment.name
        if "." not in name:  # a name made up from the message type: give it an extension
            mime = content.content_type
            name += _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ""
        if content.data is None:
            self.log.warning("line content over max_file_bytes", message_id=message_id,
                             size=content.size)
        return attachment.model_copy(update={
            "name": name, "content_type": content.content_type,
            "size": content.size or attachment.size, "data": content.data})

    async def _sender(self, user: str, source: Mapping[str, Any]) -> Sender:
        """The LINE user, with the display name and picture of their profile (cached)."""
        group, room = source.get("groupId"), source.get("roomId")
        key = f"profile:{group or room or ''}:{user}"
        state = self.bridge.state(self)
        cached = await state.get(key)
        if cached is not None:
            profile = Profile(**json.loads(cached))
        else:
            try:
                profile = await self.api.profile(user, group, room,
                                                 timeout=self.settings.profile_timeout)
            except LineApiError as exc:
                self.log.warning("line profile unavailable", user=user, error=str(exc))
                if exc.status != 404:  # try again next time
                    return Sender(external_id=user)
                profile = Profile(None, None)  # not a friend, left the group: no profile
            await state.set(key, json.dumps({"name": profile.name, "picture": profile.picture}),
                            ttl=self.settings.profile_cache_ttl)
        return Sender(external_id=user, name=profile.name, avatar_url=profile.picture)

    async def send_reply(self, reply: OutboundReply) -> None:
        """Push the agent's reply to the user, group or room: its text (with a line for each
        file LINE cannot show) as text messages, then its images and videos, ``MAX_MESSAGES``
        to a request, each request with its own retry key."""
        to = reply.reply_context.get("to")
        if not to:
            raise Permanent("no LINE chat recorded for this conversation")
        messages = _reply_messages(reply)
        if not messages:
            raise Permanent("the reply has neither text nor files")
        for push, start in enumerate(range(0, len(messages), MAX_MESSAGES)):
            try:
                await self.api.push(str(to), messages[start:start + MAX_MESSAGES],
                                    retry_key(reply, push))
            except LineApiError as exc:
                if exc.status == 429:  # the route pauses and slows down
                    raise Throttled(str(exc), retry_after=exc.retry_after,
                                    response=exc.message) from exc
                if exc.transient:  # no answer or a 5xx: counts toward the route's breaker
                    raise Unavailable(str(exc), retry_after=exc.retry_after,
                                      response=exc.message) from exc
                raise Permanent(str(exc), response=exc.message) from exc


def _reply_messages(reply: OutboundReply) -> list[dict[str, Any]]:
    """LINE messages of an agent's reply: its text (LINE shows plain text: the agent's
    Markdown made readable), followed by a line for each file that is not sent as media, in
    text messages of at most ``MAX_TEXT`` characters; then an image or video message for each
    file LINE can show from its URL."""
    media = [_media(a) for a in reply.attachments]
    lines = [a.line() for a, m in zip(reply.attachments, media, strict=True) if m is None]
    text = "\n\n".join(p for p in (markdown_to_text(reply.text).strip(), *lines) if p)
    return [{"type": "text", "text": text[i:i + MAX_TEXT]}
            for i in range(0, len(text), MAX_TEXT)] + [m for m in media if m is not None]


def _linkable(url: str | None) -> bool:
    """Whether LINE fetches ``url`` for a media message: HTTPS, at most ``MAX_URL`` long."""
    return url is not None and url.startswith("https://") and len(url) <= MAX_URL


def _media(file: Attachment) -> dict[str, Any] | None:
    """The image or video message of a reply's file, or None when LINE cannot show it: not
    HTTPS, not a type or size LINE plays, a video without a preview image, and any audio
    (LINE's audio message needs the duration, which Livedesk does not give)."""
    if not _linkable(file.url):
        return None
    size = file.size or 0
    if file.content_type in IMAGE_TYPES and size <= MAX_IMAGE_BYTES:
        preview = file.thumb_url if _linkable(file.thumb_url) else file.url
        return {"type": "image", "originalContentUrl": file.url, "previewImageUrl": preview}
    if file.content_type in VIDEO_TYPES and size <= MAX_VIDEO_BYTES and _linkable(
            file.thumb_url):
        return {"type": "video", "originalContentUrl": file.url,
                "previewImageUrl": file.thumb_url}
    return None
