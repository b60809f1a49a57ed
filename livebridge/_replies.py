"""Agent replies: Livedesk's channel webhook in (``ReplyReceiver``), the owning source's
``send_reply`` out (``ReplyRoute``, one route per source).

Livedesk (like Chatwoot) posts each event once with no retry, so a reply is stored in the
outbox before the webhook is answered 2xx; the outbox takes replies up to a much larger bound
than inbound messages, so backpressure on inbound never loses one. Each source's replies are
their own route (breaker, rate, concurrency): a failing Livedesk never holds them back. A
reply that is dead-lettered leaves a private note in its conversation, so the agent knows.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiohttp import web

from livebridge._livedesk.client import LivedeskClient
from livebridge._outbox import Flow, Route
from livebridge._store import OutboxItem
from livebridge.exceptions import Overloaded, ReplyNotSupported, StoreUnavailable
from livebridge.files import guess_type, name_of
from livebridge.forms import BodyError, read_body
from livebridge.http import reject
from livebridge.metrics import Metrics
from livebridge.model import Attachment, OutboundReply, ReplyAction
from livebridge.signing import equal, hmac_sha256_hex, timestamp_problem
from livebridge.source import Source

__all__ = ["ReplyHost", "ReplyReceiver", "ReplyRoute", "reply_route", "sign_webhook",
           "verify_webhook"]

log = structlog.get_logger("livebridge._replies")

_MAX_BODY = 1024 * 1024
_SOURCE = "livedesk-webhook"


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chatwoot-Signature`` value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac_sha256_hex(secret, timestamp.encode() + b"." + body)


def verify_webhook(secret: str, headers: Any, body: bytes, max_age: float,
                   now: float | None = None) -> str | None:
    """Check the signature and timestamp; return why the request is refused, or None."""
    timestamp = headers.get("X-Chatwoot-Timestamp", "")
    signature = headers.get("X-Chatwoot-Signature", "")
    if not timestamp or not signature:
        return "unsigned"
    problem = timestamp_problem(timestamp, max_age, now)
    if problem:
        return problem
    if not equal(signature, sign_webhook(secret, timestamp, body)):
        return "bad signature"
    return None


#: ``message_type`` values (string or number) of what agents and automations send: an
#: outgoing message or a template (out-of-office, CSAT).
_SENT_TYPES = ("outgoing", 1, "template", 3)


def _is_agent_reply(event: dict[str, Any]) -> bool:
    """An agent's (or automation's) public message, created or later edited or deleted."""
    sent = event.get("message_type") in _SENT_TYPES
    created_or_updated = event.get("event") in ("message_created", "message_updated")
    return created_or_updated and sent and not event.get("private")


def _attachments_of(event: dict[str, Any]) -> list[Attachment]:
    """Chatwoot's ``attachments`` (``Attachment#push_event_data``) as links to fetch; entries
    without a usable ``data_url`` (locations, contact cards, a malformed URL) are skipped."""
    found = event.get("attachments")
    attachments = []
    for item in found if isinstance(found, list) else []:
        url = item.get("data_url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            continue
        size, thumb = item.get("file_size"), item.get("thumb_url")
        try:
            name = name_of(url)
        except ValueError:  # urlsplit refuses it ("http://[oops/x.png")
            continue
        attachments.append(Attachment(
            name=name, content_type=guess_type(name), url=url,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            thumb_url=thumb if isinstance(thumb, str) and thumb else None))
    return attachments


def _action_of(event: dict[str, Any]) -> ReplyAction:
    if event.get("event") != "message_updated":
        return "send"
    attributes = event.get("content_attributes")
    deleted = isinstance(attributes, dict) and attributes.get("deleted") is True
    return "delete" if deleted else "edit"


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("not an id")
    number = int(value)
    if number <= 0:
        raise ValueError("not an id")
    return number


def reply_route(source: str) -> str:
    """The name of the route of ``source``'s replies."""
    return f"reply:{source}"


class ReplyHost(Protocol):
    """What the webhook receiver needs of the daemon."""

    metrics: Metrics

    async def thread_of(self, conversation_id: int) -> dict[str, Any] | None:
        """The source thread recorded for a Livedesk conversation, if livebridge opened it."""

    async def queue_reply(self, reply: OutboundReply) -> bool | None:
        """Run the reply hooks and store the reply durably: True if stored, False for a
        duplicate, None if a hook dropped it; ``StoreUnavailable``/``Overloaded`` if the
        store cannot take it, ``ReplyNotSupported`` if no route can send it."""


class ReplyReceiver:
    """Receives the channel webhook: verifies it (when there is a ``secret``) and queues
    each public agent reply to a conversation that livebridge opened."""

    def __init__(self, host: ReplyHost, secret: str | None, max_age: float, *,
                 forward_templates: bool = True) -> None:
        self.host = host
        self.secret = secret
        self.max_age = max_age
        self.forward_templates = forward_templates

    def _reject(self, request: web.Request, status: int, reason: str,
                headers: dict[str, str] | None = None) -> web.Response:
        return reject(log, self.host.metrics, _SOURCE, request, status, reason,
                      headers=headers)

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """``POST`` handler for the Livedesk channel's webhook URL."""
        try:
            body = await read_body(request, _MAX_BODY)
        except BodyError as exc:
            return self._reject(request, exc.status, exc.reason)
        if self.secret is not None:
            problem = verify_webhook(self.secret, request.headers, body, self.max_age)
            if problem:
                return self._reject(request, 401, problem)
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            return self._reject(request, 400, "malformed JSON")
        if not isinstance(event, dict):
            return self._reject(request, 400, "expected a JSON object")
        if not _is_agent_reply(event):
            return web.json_response({"ignored": "not an agent reply"})
        try:
            message_id = _positive_int(event.get("id"))
            conversation = event.get("conversation")
            conversation_id = _positive_int(
                conversation.get("id") if isinstance(conversation, dict) else None)
        except (TypeError, ValueError, OverflowError):
            return self._reject(request, 422, "message_created event without id/conversation")
        try:
            reply = await self._reply_of(event, message_id, conversation_id)
            if reply is None:
                return web.json_response({"ignored": "conversation not opened by livebridge"})
            stored = await self.host.queue_reply(reply)
        except (Overloaded, StoreUnavailable) as exc:
            return self._reject(request, 503, "busy", {"Retry-After": str(exc.retry_after)})
        except ReplyNotSupported as exc:
            log.warning("agent reply not sent back", reason=str(exc))
            return web.json_response({"ignored": str(exc)})
        if stored is None:
            return web.json_response({"ignored": "dropped by a plugin hook"})
        return web.json_response({"queued": stored, "duplicate": not stored})

    async def _reply_of(self, event: dict[str, Any], message_id: int,
                        conversation_id: int) -> OutboundReply | None:
        """The reply an event asks for, or None: not the bridge's conversation, or a
        template while ``livedesk.forward_templates`` is off."""
        thread = await self.host.thread_of(conversation_id)
        if thread is None:
            return None
        if event.get("message_type") in ("template", 3) and not self.forward_templates:
            log.info("template message not forwarded (livedesk.forward_templates is off)",
                     message_id=message_id)
            return None
        action = _action_of(event)
        sender = event.get("sender")
        name = sender.get("name") if isinstance(sender, dict) else None
        content = event.get("content")
        return OutboundReply(
            source=thread["source"], thread_key=thread["thread_key"],
            reply_context=thread.get("reply_context") or {},
            livedesk_message_id=message_id, conversation_id=conversation_id,
            text=content if isinstance(content, str) and action != "delete" else "",
            attachments=_attachments_of(event) if action == "send" else [],
            action=action, agent_name=name if isinstance(name, str) else None,
        )


_QUOTED = 300
_FAILED = {"send": "could not deliver this reply to the customer",
           "edit": "could not change the customer's copy of this edited reply",
           "delete": "could not delete the customer's copy of this deleted reply"}


def _failed_reply_note(reply: OutboundReply, reason: str) -> str:
    """The private note that tells agents a reply did not reach the customer, and why."""
    text = " ".join(reply.text.split())
    quoted = text if len(text) <= _QUOTED else text[:_QUOTED] + "…"
    files = ", ".join(a.name for a in reply.attachments)
    lines = [f"livebridge {_FAILED[reply.action]} ({reply.source}); the customer has not "
             "received it.",
             *([f"> {quoted}"] if quoted else []),
             *([f"Files: {files}"] if files else []),
             f"Why: {reason}",
             "Once the cause is fixed, an operator can send it again with "
             "`livebridge dlq replay` (see `livebridge dlq list`)."]
    return "\n\n".join(lines)


class ReplyRoute(Route):
    """Sends one source's queued replies through its ``send_reply``, at the route's rate;
    with a ``notes`` client, a dead-lettered reply leaves a private note in its
    conversation (``livedesk.note_failed_replies``)."""

    def __init__(self, source: Source, flow: Flow, notify: Callable[..., Awaitable[None]],
                 notes: LivedeskClient | None = None) -> None:
        super().__init__(reply_route(source.name), flow)
        self.source = source
        self._notify = notify
        self._notes = notes

    async def deliver(self, item: OutboxItem) -> None:
        """Send one reply; ``livebridge_reply_sent`` hooks hear of it."""
        reply = OutboundReply.model_validate_json(item.payload)
        await self.limiter.acquire()
        await self.source.send_reply(reply)
        await self._notify("livebridge_reply_sent", reply=reply)

    async def on_dead_letter(self, item: OutboxItem, reason: str) -> None:
        """Tell the agents: a private note in the reply's conversation."""
        if self._notes is None:
            return
        reply = OutboundReply.model_validate_json(item.payload)
        await self._notes.create_note(reply.conversation_id, _failed_reply_note(reply, reason))
        log.info("failed reply noted in its conversation", item=item.id,
                 conversation=reply.conversation_id)
