"""Agent replies: Livedesk's channel webhook in, the owning source's ``send_reply`` out.

Livedesk (like Chatwoot) posts each event once with no retry, so a reply is stored in the
outbox before the webhook is answered, and delivered with the same retries as inbound mail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from livebridge.exceptions import Overloaded, ReplyNotSupported, StoreUnavailable
from livebridge.model import OutboundReply
from livebridge.plugins import call_chain, call_each
from livebridge.source import read_body

if TYPE_CHECKING:
    from livebridge.app import Daemon

__all__ = ["ReplyRouter", "sign_webhook", "verify_webhook"]

log = structlog.get_logger("livebridge.replies")

_MAX_BODY = 1024 * 1024
_SOURCE = "livedesk-webhook"


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chatwoot-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(secret: str, headers: Any, body: bytes, max_age: float,
                   now: float | None = None) -> str | None:
    """Check the signature and timestamp; return why the request is refused, or None."""
    timestamp = headers.get("X-Chatwoot-Timestamp", "")
    signature = headers.get("X-Chatwoot-Signature", "")
    if not timestamp or not signature:
        return "unsigned"
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return "bad timestamp"
    if age > max_age:
        return "stale timestamp"
    if not hmac.compare_digest(sign_webhook(secret, timestamp, body), signature):
        return "bad signature"
    return None


def _is_agent_reply(event: dict[str, Any]) -> bool:
    kind = event.get("message_type")
    outgoing = kind in ("outgoing", 1)
    return event.get("event") == "message_created" and outgoing and not event.get("private")


class ReplyRouter:
    """Receives the channel webhook and sends queued replies through their source."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _reject(self, request: web.Request, status: int, reason: str) -> web.Response:
        log.warning("webhook rejected", status=status, reason=reason, remote=request.remote)
        self.daemon.metrics.rejected.labels(source=_SOURCE, reason=reason).inc()
        return web.json_response({"error": reason}, status=status)

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """``POST`` handler for the Livedesk channel's webhook URL."""
        daemon = self.daemon
        config = daemon.config.livedesk
        try:
            body = await read_body(request, _MAX_BODY)
        except web.HTTPRequestEntityTooLarge:
            return self._reject(request, 413, "body too large")
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
            reply = await self._reply_of(event)
        except (KeyError, TypeError, ValueError):
            return self._reject(request, 422, "message_created event without id/conversation")
        if reply is None:
            return web.json_response({"ignored": "conversation not opened by livebridge"})
        kept = await call_chain(daemon.pm.hook.livebridge_outbound_reply, reply, "reply")
        if kept is None:
            return web.json_response({"ignored": "dropped by a plugin hook"})
        try:
            if await daemon.store.depth() >= daemon.config.delivery.max_outbox:
                raise Overloaded()
            stored = await daemon.store.enqueue(
                "reply", kept.source, f"reply:{kept.livedesk_message_id}",
                f"reply\x1f{kept.source}\x1f{kept.thread_key}", kept.model_dump_json(),
                daemon.config.store.dedupe_window,
            )
        except (Overloaded, StoreUnavailable) as exc:
            log.error("webhook: could not store the reply", error=str(exc))
            return web.json_response({"error": str(exc)}, status=503,
                                     headers={"Retry-After": str(exc.retry_after)})
        return web.json_response({"queued": stored, "duplicate": not stored})

    async def _reply_of(self, event: dict[str, Any]) -> OutboundReply | None:
        conversation_id = int(event["conversation"]["id"])
        assert self.daemon.sink is not None
        thread = await self.daemon.sink.thread_of(conversation_id)
        if thread is None:
            return None
        sender = event.get("sender") or {}
        return OutboundReply(
            source=thread["source"], thread_key=thread["thread_key"],
            reply_context=thread.get("reply_context") or {},
            livedesk_message_id=int(event["id"]), conversation_id=conversation_id,
            text=str(event.get("content") or ""), agent_name=sender.get("name"),
        )

    async def send(self, reply: OutboundReply) -> None:
        """Deliver one queued reply through the source that owns its thread."""
        source = self.daemon.sources.get(reply.source)
        if source is None:
            raise ReplyNotSupported(f"source {reply.source!r} is no longer configured")
        await source.send_reply(reply)
        await call_each(self.daemon.pm.hook.livebridge_reply_sent, reply=reply)
