"""The ``slack`` source: Slack messages in (Events API over HTTP, or Socket Mode), agent
replies out (``chat.postMessage`` in the customer's thread, files uploaded there; an agent's
edit or deletion changes or deletes the message the bridge posted).

Both transports hand the Events API payload to one path, ``SlackSource.receive``: filter
(bots, the bridge's own posts, system subtypes, channels not bridged), dedupe on
``event_id``, look the user up (cached, never blocking for long) and accept durably. Slack
is answered only after that, and never waits for Livedesk. Shared files are fetched later,
just before delivery (``fetch_attachments``: ``files.info``, then the download with the bot
token), so the request is answered at once and their bytes never wait in the outbox.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from livebridge import (
    AcceptResult,
    Attachment,
    BodyError,
    Bridge,
    Busy,
    Duration,
    FileError,
    InboundMessage,
    LivebridgeError,
    OutboundReply,
    Permanent,
    Retryable,
    Sender,
    Source,
    SourceSettings,
    equal,
    fetch_file,
    hmac_sha256_hex,
    read_body,
    required_secret,
    timestamp_problem,
)
from livebridge_slack.api import TRANSPORT_ERRORS, error_of, is_transient, retry_after
from livebridge_slack.mrkdwn import markdown_to_mrkdwn, mrkdwn_refs, mrkdwn_to_text
from livebridge_slack.users import UserDirectory

__all__ = ["SlackSettings", "SlackSource"]

#: Subtypes that are a person writing; every other subtype is a bot, an edit or a system note.
KEPT_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
#: ``channels: dms`` bridges direct messages: one-to-one and group DMs.
DM_TYPES = frozenset({"im", "mpim"})
#: Slack's replay window for signed requests (seconds).
MAX_SIGNATURE_AGE = 300
#: Timeout of the Web API calls outside the request path (auth.test, chat.postMessage,
#: opening the Socket Mode connection).
API_TIMEOUT = 15.0
#: How long the bridge remembers the ``ts`` of its own posts, to drop their echo.
POSTED_TTL = 86400.0
#: How long the bridge remembers where it posted an agent's reply (to edit or delete it).
REPLY_TTL = 30 * 86400.0

_SECRET_ENV = {
    "signing_secret": ("events", "SLACK_SIGNING_SECRET"),
    "app_token": ("socket", "SLACK_APP_TOKEN"),
}
_FALLBACKS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


class SlackSettings(SourceSettings):
    """``type: slack``.

    ``conversation`` picks what one Livedesk conversation is: a Slack ``thread`` (a top-level
    message and its replies; the default), a whole ``channel`` or DM, or a ``sender``. Agent
    replies go to the channel of the customer's latest message: in ``thread`` granularity
    always into the thread; in ``channel`` and ``sender`` granularity into the thread only
    when that message was written in one, else top-level (the channel is the conversation).
    """

    path: str = "/slack/events"
    mode: Literal["events", "socket"] = Field(
        default="events", description="events: Slack POSTs to `path`; socket: Socket Mode")
    signing_secret: SecretStr | None = Field(default=None, validate_default=True,
                                             description="required in events mode")
    bot_token: Annotated[SecretStr, required_secret("SLACK_BOT_TOKEN")] = Field(
        description="xoxb-...: auth.test, users.info, chat.postMessage")
    app_token: SecretStr | None = Field(default=None, validate_default=True,
                                        description="xapp-...: required in socket mode")
    api_url: str = "https://slack.com/api/"
    channels: Literal["all", "dms"] | Annotated[list[str], Field(min_length=1)] = Field(
        default="all", description="all the app is in, dms only, or a list of channel ids")
    conversation: Literal["thread", "channel", "sender"] = "thread"
    user_cache_ttl: Duration = 3600.0
    user_cache_size: int = Field(default=10_000, ge=1)
    user_lookup_timeout: Duration = 1.0
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_file_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description=(
        "a larger shared file reaches Livedesk as a line with its link"))
    max_message_file_bytes: int = Field(default=40 * 1024 * 1024, gt=0, description=(
        "the files of one message together; those beyond reach Livedesk as links"))

    @field_validator("signing_secret", "app_token")
    @classmethod
    def _required_by_mode(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        mode, env = _SECRET_ENV[str(info.field_name)]
        if value is not None and value.get_secret_value():
            return value
        if info.data.get("mode") == mode:
            raise ValueError(f"required in {mode} mode (e.g. {info.field_name}: ${{{env}}})")
        return None

    @field_validator("api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


def _fallback_counter(registry: CollectorRegistry) -> Counter:
    """``livebridge_slack_profile_fallbacks_total``, registered once per daemon registry."""
    if registry not in _FALLBACKS:
        _FALLBACKS[registry] = Counter(
            "livebridge_slack_profile_fallbacks_total",
            "Slack senders accepted without their profile (users.info failed or paused).",
            ("source",), registry=registry,
        )
    return _FALLBACKS[registry]


def _posted_key(channel: str, ts: str) -> str:
    return f"posted:{channel}:{ts}"


#: Where the bridge reads text: these must be absent, null or strings (that can be stored).
_PAYLOAD_TEXT = ("type", "event_id", "team_id")
_MESSAGE_TEXT = ("type", "subtype", "user", "channel", "ts", "thread_ts", "text",
                 "channel_type", "team", "user_team", "bot_id")
_FILE_TEXT = ("name", "title", "id", "mimetype", "permalink", "url_private")


def _is_text(value: Any) -> bool:
    """Absent, or a string without unpaired surrogates (``"\\ud800"`` in JSON)."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _list_of_objects(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, dict) for v in value))


def _malformed_field(payload: Mapping[str, Any]) -> str | None:
    """The first field the bridge reads from an Events API payload that has the wrong JSON
    type (or text that cannot be stored), or None. Slack never sends such a payload; other
    event types are not looked into (``team_join`` has a ``user`` object, for one)."""
    wrong = next((k for k in _PAYLOAD_TEXT if not _is_text(payload.get(k))), None)
    if wrong is not None:
        return wrong
    if not _list_of_objects(payload.get("authorizations")):
        return "authorizations"
    event = payload.get("event")
    if payload.get("type") != "event_callback" or event is None:
        return None
    if not isinstance(event, dict):
        return "event"
    if not _is_text(event.get("type")):
        return "event.type"
    if event.get("type") != "message":
        return None
    wrong = next((k for k in _MESSAGE_TEXT if not _is_text(event.get(k))), None)
    if wrong is not None:
        return f"event.{wrong}"
    files = event.get("files")
    if not _list_of_objects(files):
        return "event.files"
    for file in files or []:
        wrong = next((k for k in _FILE_TEXT if not _is_text(file.get(k))), None)
        if wrong is not None:
            return f"event.files.{wrong}"
        size = file.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            return "event.files.size"
    return None


def _retry_num(headers: Mapping[str, str]) -> int:
    """``X-Slack-Retry-Num`` (informational: 0 when absent or not a small number)."""
    retry = headers.get("X-Slack-Retry-Num", "")
    return int(retry) if retry.isascii() and retry.isdigit() and len(retry) <= 6 else 0


def _reply_key(livedesk_message_id: int) -> str:
    return f"reply:{livedesk_message_id}"


def _attachment(file: Mapping[str, Any]) -> Attachment:
    """A Slack file object as a link (name, type, size, Slack URL), to fetch later by its
    id (a Slack Connect stub, ``file_access: check_file_info``, has little more than that)."""
    file_id = file.get("id")
    return Attachment(
        name=str(file.get("name") or file.get("title") or file_id or "file"),
        content_type=str(file.get("mimetype") or "application/octet-stream"),
        size=file["size"] if isinstance(file.get("size"), int) else None,
        url=file.get("permalink") or file.get("url_private") or None,
        fetch_ref=file_id if isinstance(file_id, str) and file_id else None,
    )


def _attachments(files: Any) -> list[Attachment]:
    """Slack ``files`` as links, to fetch before delivery."""
    if not isinstance(files, list):
        return []
    return [_attachment(f) for f in files if isinstance(f, dict)]


class SlackSource(Source[SlackSettings]):
    """Slack workspaces the app is installed in, as a livebridge source."""

    type_name = "slack"
    edits_replies = True

    def __init__(self, settings: SlackSettings, bridge: Bridge) -> None:
        super().__init__(settings, bridge)
        s = self.settings
        self.web = AsyncWebClient(token=s.bot_token.get_secret_value(), base_url=s.api_url)
        self._users = UserDirectory(self.web, ttl=s.user_cache_ttl, size=s.user_cache_size,
                                    timeout=s.user_lookup_timeout,
                                    on_fallback=self._profile_fallback)
        self._fallbacks = _fallback_counter(bridge.metrics.registry).labels(source=self.name)
        self._bot_users: set[str] = set()
        self._socket: SocketModeClient | None = None

    def routes(self) -> list[web.RouteDef]:
        """The Events API endpoint (events mode only)."""
        return [web.post(self.settings.path, self.handle)] if self.settings.mode == "events" else []

    def describe(self) -> Mapping[str, Any]:
        """Name, type, mode and (events mode) path."""
        events = self.settings.mode == "events"
        return {**super().describe(), "mode": self.settings.mode,
                "path": self.settings.path if events else None}

    async def start(self) -> None:
        """Learn the app's bot user (``auth.test``); in socket mode, connect."""
        self.web.session = self.bridge.http
        await self._learn_bot_user()
        if self.settings.mode == "socket":
            self._socket = await self._open_socket()

    async def stop(self) -> None:
        """Close the Socket Mode connection, if any."""
        if self._socket is not None:
            await self._socket.close()  # type: ignore[no-untyped-call]
            self._socket = None

    # --- events mode ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """``POST`` handler of the Events API: verify, then ``receive``, then answer. An
        unsigned or stale request is refused before its body is read."""
        timestamp, problem = self._stamp_problem(request.headers)
        if problem:
            return self.reject(request, 401, problem)
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyError as exc:
            return self.reject(request, exc)
        if not self._signed(request.headers, timestamp, body):
            return self.reject(request, 401, "bad signature")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return self.reject(request, 400, "malformed JSON")
        if not isinstance(payload, dict):
            return self.reject(request, 400, "expected a JSON object")
        if payload.get("type") == "url_verification":
            challenge = payload.get("challenge")
            if not isinstance(challenge, str):
                return self.reject(request, 400, "malformed event", detail={"field": "challenge"})
            return web.json_response({"challenge": challenge})
        wrong = _malformed_field(payload)
        if wrong is not None:
            return self.reject(request, 400, "malformed event", detail={"field": wrong})
        try:
            result, reason = await self.receive(payload, retry=_retry_num(request.headers))
        except Busy as exc:
            return self.reject(request, exc, detail={"retry_after": exc.retry_after})
        return web.json_response({"ok": True, "result": result.value, "reason": reason})

    @staticmethod
    def _stamp_problem(headers: Mapping[str, str]) -> tuple[str, str | None]:
        """The request's timestamp, and why the request is not Slack's from its headers alone
        (unsigned, a bad or stale timestamp: a 5-minute window), or None."""
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        if not timestamp or not headers.get("X-Slack-Signature"):
            return timestamp, "unsigned"
        if not (timestamp.isascii() and timestamp.isdigit()):  # Unix seconds, as signed
            return timestamp, "bad timestamp"
        return timestamp, timestamp_problem(timestamp, MAX_SIGNATURE_AGE)

    def _signed(self, headers: Mapping[str, str], timestamp: str, body: bytes) -> bool:
        """Whether the v0 signature matches ``v0:{timestamp}:{body}``."""
        secret = self.settings.signing_secret
        assert secret is not None  # the settings require the secret in events mode
        base = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac_sha256_hex(secret.get_secret_value(), base)
        return equal(headers.get("X-Slack-Signature", ""), expected)

    # --- socket mode ----------------------------------------------------------------------

    async def _open_socket(self) -> SocketModeClient:
        """A connected Socket Mode client. The URL is fetched first, under a timeout: given a
        refused app token, ``connect()`` alone would retry forever."""
        assert self.settings.app_token is not None  # the settings require it in socket mode
        client = SocketModeClient(app_token=self.settings.app_token.get_secret_value(),
                                  web_client=self.web)
        client.socket_mode_request_listeners.append(self._on_socket_request)
        try:
            async with asyncio.timeout(API_TIMEOUT):
                client.wss_uri = await client.issue_new_wss_url()
                await client.connect()  # type: ignore[no-untyped-call]
        except TRANSPORT_ERRORS as exc:  # SlackApiError included
            await client.close()  # type: ignore[no-untyped-call]
            raise LivebridgeError(
                f"slack source {self.name!r}: cannot open Socket Mode ({exc!r}); "
                "check app_token (SLACK_APP_TOKEN) and api_url"
            ) from exc
        self.log.info("slack socket mode connected")
        return client

    async def _on_socket_request(self, client: AsyncBaseSocketModeClient,
                                 request: SocketModeRequest) -> None:
        """Ack an envelope once its event is accepted; not when the bridge is busy, so that
        Slack delivers it again."""
        if request.type == "events_api":
            try:
                await self.receive(request.payload, retry=request.retry_attempt or 0)
            except Busy as exc:
                self.log.warning("slack envelope not acknowledged, Slack will resend it",
                                 envelope_id=request.envelope_id, error=str(exc))
                return
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    # --- both transports ------------------------------------------------------------------

    async def receive(self, payload: Mapping[str, Any], *, retry: int = 0
                      ) -> tuple[AcceptResult, str | None]:
        """Normalize one Events API payload and accept it; returns the result and, when
        dropped, why. Raises ``Overloaded`` / ``StoreUnavailable`` (do not ack)."""
        result, reason = await self._offer(payload)
        if reason is not None:  # dropped here (the bridge counts what a hook drops)
            self.count_dropped(reason)
        self.log.info("slack event", event_id=payload.get("event_id"), result=result.value,
                      reason=reason, retry=retry)
        return result, reason

    async def _offer(self, payload: Mapping[str, Any]) -> tuple[AcceptResult, str | None]:
        if _malformed_field(payload) is not None:  # answered 400 in events mode
            return AcceptResult.DROPPED, "malformed event"
        event = payload.get("event")
        if payload.get("type") != "event_callback" or not isinstance(event, dict):
            return AcceptResult.DROPPED, "not an event"
        self._learn_bot_users(payload)
        reason = self._skip_reason(event)
        if reason is not None:
            return AcceptResult.DROPPED, reason
        event_id = str(payload.get("event_id") or "")
        team = str(payload.get("team_id") or event.get("team") or "")
        if not event_id or not team:
            return AcceptResult.DROPPED, "incomplete event"
        if await self.bridge.seen(self, event_id):
            self.bridge.metrics.deduplicated.labels(source=self.name).inc()
            return AcceptResult.DUPLICATE, None
        if await self.bridge.state(self).get(_posted_key(event["channel"], event["ts"])):
            return AcceptResult.DROPPED, "own post"
        raw = str(event.get("text") or "")
        sender, names = await asyncio.gather(  # at once: each lookup has its own timeout
            self._users.sender(str(event.get("user_team") or team), event["user"]),
            self._users.names(team, mrkdwn_refs(raw)))
        message = self._message(event_id, team, event, sender, mrkdwn_to_text(raw, names))
        return await self.bridge.accept(message, self), None

    def _learn_bot_users(self, payload: Mapping[str, Any]) -> None:
        """The app's bot user, from the payload's ``authorizations``."""
        for authorization in payload.get("authorizations") or []:
            if isinstance(authorization, dict) and authorization.get("is_bot"):
                user = authorization.get("user_id")
                if isinstance(user, str) and user:
                    self._bot_users.add(user)

    def _skip_reason(self, event: Mapping[str, Any]) -> str | None:
        """Why ``event`` is not a customer's message to bridge, or None."""
        if event.get("type") != "message":
            return "not a message"
        if event.get("bot_id") or event.get("subtype") == "bot_message":
            return "bot message"
        if event.get("hidden") or event.get("subtype") not in KEPT_SUBTYPES:
            return "system message"
        fields = (event.get("user"), event.get("channel"), event.get("ts"))
        if not all(isinstance(v, str) and v for v in fields):
            return "incomplete event"
        if event["user"] in self._bot_users:
            return "own bot user"
        channels = self.settings.channels
        if isinstance(channels, list):
            bridged = event["channel"] in channels
        else:
            bridged = channels == "all" or event.get("channel_type") in DM_TYPES
        return None if bridged else "channel not bridged"

    def _message(self, event_id: str, team: str, event: Mapping[str, Any],
                 sender: Sender, text: str) -> InboundMessage:
        channel, ts = event["channel"], event["ts"]
        root = event.get("thread_ts") or ts
        in_thread = root != ts
        granularity = self.settings.conversation
        thread_key = {
            "thread": f"{team}:{channel}:{root}",
            "channel": f"{team}:{channel}",
            "sender": sender.external_id,
        }[granularity]
        metadata = {"slack_team": team, "slack_channel": channel,
                    "slack_channel_type": event.get("channel_type")}
        return InboundMessage(
            source=self.name, event_id=event_id, sender=sender, thread_key=thread_key,
            text=text, attachments=_attachments(event.get("files")),
            message_ref=f"{channel}:{ts}", reply_to=f"{channel}:{root}" if in_thread else None,
            metadata={k: v for k, v in metadata.items() if v},
            reply_context={"team": team, "channel": channel,
                           "thread_ts": root if granularity == "thread" or in_thread else None},
        )

    # --- files ----------------------------------------------------------------------------

    async def fetch_attachments(self, message: InboundMessage) -> list[Attachment]:
        """The message's Slack files with their bytes, within ``max_file_bytes`` each and
        ``max_message_file_bytes`` together; a file over a cap, or that cannot be read, stays
        a link (with what ``files.info`` told about it)."""
        budget = self.settings.max_message_file_bytes
        found = []
        for attachment in message.attachments:
            if attachment.fetch_ref is not None and attachment.data is None:
                fetched = await self._fetch(attachment, budget)
                budget -= len(fetched.data or b"")
                found.append(fetched)
            else:
                found.append(attachment)
        return found

    async def _fetch(self, attachment: Attachment, budget: int) -> Attachment:
        """One file: ``files.info`` (which also resolves Slack Connect stubs), then its
        ``url_private_download`` with the bot token (``files:read``)."""
        log = self.log.bind(file=attachment.fetch_ref)
        try:
            async with asyncio.timeout(API_TIMEOUT):
                info = (await self.web.files_info(file=str(attachment.fetch_ref)))["file"]
        except SlackApiError as exc:
            log.warning("slack file not readable (files.info), sent as a link",
                        error=error_of(exc))
            return attachment
        except TRANSPORT_ERRORS as exc:
            log.warning("slack file not readable (files.info), sent as a link", error=repr(exc))
            return attachment
        if not isinstance(info, dict):
            return attachment
        attachment = _attachment(info)
        limit = min(self.settings.max_file_bytes, budget)
        url = info.get("url_private_download")
        if attachment.size is not None and attachment.size > limit:
            log.warning("slack file over the size cap, sent as a link", size=attachment.size,
                        limit=limit)
            return attachment
        if not isinstance(url, str) or not url:
            log.warning("slack file has no download URL, sent as a link")
            return attachment
        token = self.settings.bot_token.get_secret_value()
        try:
            data, kind = await fetch_file(self.bridge.http, url, limit,
                                          headers={"Authorization": f"Bearer {token}"})
        except FileError as exc:
            log.warning("slack file not downloaded, sent as a link", error=str(exc))
            return attachment
        if kind == "text/html" and attachment.content_type != "text/html":
            log.warning("slack answered its sign-in page for a file (is files:read granted?);"
                        " sent as a link")
            return attachment
        return attachment.model_copy(update={"data": data, "size": len(data)})

    # --- Web API --------------------------------------------------------------------------

    async def _learn_bot_user(self) -> None:
        """The app's own bot user, from ``auth.test``; a refused bot token stops the start."""
        try:
            async with asyncio.timeout(API_TIMEOUT):
                auth = await self.web.auth_test()
        except SlackApiError as exc:
            if not is_transient(exc):
                raise LivebridgeError(
                    f"slack source {self.name!r}: Slack refused the bot token "
                    f"(auth.test: {error_of(exc)}); check bot_token (SLACK_BOT_TOKEN)"
                ) from exc
            error = error_of(exc)
        except TRANSPORT_ERRORS as exc:
            error = repr(exc)
        else:
            self._bot_users.add(str(auth["user_id"]))
            return
        self.log.warning("slack auth.test failed; learning the bot user from events", error=error)

    def _profile_fallback(self, user: str, why: str) -> None:
        self._fallbacks.inc()
        self.log.warning("slack profile unavailable; using the user id as the name",
                         user=user, error=why)

    async def send_reply(self, reply: OutboundReply) -> None:
        """Post the agent's reply where the customer wrote: its text (Markdown as mrkdwn)
        with ``chat.postMessage``, its files uploaded into the same thread; remember the
        text's ``ts``, to drop its echo and to edit or delete it later."""
        channel = reply.reply_context.get("channel")
        if not channel:
            raise Permanent("no Slack channel recorded for this conversation")
        if reply.action != "send":
            await self._change(reply)
            return
        state = self.bridge.state(self)
        thread_ts = reply.reply_context.get("thread_ts")
        prepared = await self.bridge.reply_files(reply)
        key = _reply_key(reply.livedesk_message_id)
        if prepared.text and await state.get(key) is None:  # not on a retry after the files
            posted = await self._web("chat.postMessage", self.web.chat_postMessage(
                channel=channel, text=markdown_to_mrkdwn(prepared.text), thread_ts=thread_ts))
            ts = str(posted["ts"])
            await state.set(_posted_key(channel, ts), "1", ttl=POSTED_TTL)
            await state.set(key, json.dumps({"channel": channel, "ts": ts}), ttl=REPLY_TTL)
        if prepared.files:
            await self._web("files.upload_v2", self.web.files_upload_v2(
                file_uploads=[{"file": f.data, "filename": f.name, "title": f.name}
                              for f in prepared.files],
                channel=channel, thread_ts=thread_ts))

    async def _change(self, reply: OutboundReply) -> None:
        """Edit or delete the message posted for ``reply.livedesk_message_id``."""
        state = self.bridge.state(self)
        key = _reply_key(reply.livedesk_message_id)
        raw = await state.get(key)
        if raw is None:
            self.log.warning(f"no Slack message recorded for this reply; {reply.action} "
                             "not made", livedesk_message_id=reply.livedesk_message_id)
            return
        posted = json.loads(raw)
        if reply.action == "edit":
            await self._web("chat.update", self.web.chat_update(
                channel=posted["channel"], ts=posted["ts"], text=markdown_to_mrkdwn(reply.text)))
            return
        try:
            await self._web("chat.delete", self.web.chat_delete(channel=posted["channel"],
                                                                 ts=posted["ts"]))
        except Permanent as exc:
            if exc.response != "message_not_found":  # else: already deleted in Slack
                raise
        await state.delete(key)

    async def _web(self, method: str, call: Awaitable[AsyncSlackResponse]
                   ) -> AsyncSlackResponse:
        """Await a Web API call under ``API_TIMEOUT``; its failure as ``Retryable`` (rate
        limit, Slack trouble, transport) or ``Permanent``."""
        try:
            async with asyncio.timeout(API_TIMEOUT):
                return await call
        except SlackApiError as exc:
            error = error_of(exc)
            message = f"slack {method}: {error}"
            if is_transient(exc):
                raise Retryable(message, retry_after=retry_after(exc), response=error) from exc
            raise Permanent(message, response=error) from exc
        except TRANSPORT_ERRORS as exc:
            raise Retryable(f"slack {method}: {exc!r}") from exc
