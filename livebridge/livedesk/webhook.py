"""Agent replies: Livedesk's channel webhook in, the owning source's ``send_reply`` out.

Livedesk (like Chatwoot) posts each event once with no retry, so a reply is stored in the
outbox before the webhook is answered, and delivered with the same retries as inbound mail.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from livebridge.exceptions import Overloaded, ReplyNotSupported, StoreUnavailable
from livebridge.files import guess_type, name_of
from livebridge.forms import BodyError, read_body
from livebridge.http import reject
from livebridge.model import Attachment, OutboundReply, ReplyAction
from livebridge.plugins import call_chain
from livebridge.signing import equal, hmac_sha256_hex, timestamp_problem

if TYPE_CHECKING:
    from livebridge.app import Daemon

__all__ = ["ReplyRouter", "sign_webhook", "verify_webhook"]

log = structlog.get_logger("livebridge.replies")

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
    without a ``data_url`` (locations, contact cards) are skipped."""
    found = event.get("attachments")
    attachments = []
    for item in found if isinstance(found, list) else []:
        url = item.get("data_url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            continue
        size = item.get("file_size")
        name = name_of(url)
        attachments.append(Attachment(
            name=name, content_type=guess_type(name), url=url,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None))
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


class ReplyRouter:
    """Receives the channel webhook and sends queued replies through their source."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _reject(self, request: web.Request, status: int, reason: str,
                headers: dict[str, str] | None = None) -> web.Response:
        return reject(log, self.daemon.metrics, _SOURCE, request, status, reason,
                      headers=headers)

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """``POST`` handler for the Livedesk channel's webhook URL."""
        daemon = self.daemon
        config = daemon.config.livedesk
        try:
            body = await read_body(request, _MAX_BODY)
        except BodyError as exc:
            return self._reject(request, exc.status, exc.reason)
        if config.webhook_secret is not None:
            problem = verify_webhook(config.webhook_secret.get_secret_value(), request.headers,
                                     body, config.webhook_max_age)
            if problem:
                return self._reject(request, 401, problem)
        try:
            event = json.loads(body)
        except ValueError:
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
            kept = await call_chain(daemon.pm.hook.livebridge_outbound_reply, reply, "reply")
            if kept is None:
                return web.json_response({"ignored": "dropped by a plugin hook"})
            stored = await daemon.enqueue(
                "reply", kept.source, kept.dedupe_key,
                f"reply\x1f{kept.source}\x1f{kept.thread_key}", kept.model_dump_json(),
            )
        except (Overloaded, StoreUnavailable) as exc:
            return self._reject(request, 503, "busy", {"Retry-After": str(exc.retry_after)})
        return web.json_response({"queued": stored, "duplicate": not stored})

    async def _reply_of(self, event: dict[str, Any], message_id: int,
                        conversation_id: int) -> OutboundReply | None:
        """The reply an event asks for, or None: not the bridge's conversation, a template
        while ``livedesk.forward_templates`` is off, or an edit its source cannot make
        (logged and counted)."""
        daemon = self.daemon
        assert daemon.sink is not None
        thread = await daemon.sink.thread_of(conversation_id)
        if thread is None:
            return None
        if event.get("message_type") in ("template", 3) and \
                not daemon.config.livedesk.forward_templates:
            log.info("template message not forwarded (livedesk.forward_templates is off)",
                     message_id=message_id)
            return None
        action = _action_of(event)
        source = daemon.sources.get(thread["source"])
        if action != "send" and source is not None and not source.edits_replies:
            log.warning(f"agent's {action} cannot reach the customer", source=source.name,
                        message_id=message_id)
            daemon.metrics.labels(daemon.metrics.dropped, source.name,
                                  f"reply {action} not supported").inc()
            return None
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

    async def send(self, reply: OutboundReply) -> None:
        """Deliver one queued reply through the source that owns its thread."""
        source = self.daemon.sources.get(reply.source)
        if source is None:
            raise ReplyNotSupported(f"source {reply.source!r} is no longer configured")
        await source.send_reply(reply)
        await self.daemon.notify("livebridge_reply_sent", reply=reply)
