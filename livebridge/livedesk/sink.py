"""The Livedesk sink: a message becomes contact (once) → conversation (per thread) → message.

The bridge owns identity. The maps (sender → contact, thread → conversation, message ref →
Livedesk message) live in the store, so a known sender in a known thread costs one call, and
a retry never repeats a step that already succeeded. Each find-or-create runs under a lock
on its key, shared by every daemon on the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pluggy
import structlog

from livebridge.livedesk.client import LivedeskClient, LivedeskError
from livebridge.model import InboundMessage
from livebridge.plugins import call_each
from livebridge.store import Store

__all__ = ["MAX_CONTENT", "Delivery", "LivedeskSink", "render_content"]

#: Livedesk (Chatwoot) refuses longer message content.
MAX_CONTENT = 150_000
#: How long a delivered message can be named as ``reply_to`` (the map is purged after).
MESSAGE_REF_TTL = 90 * 86400
_TAKEN = "has already been taken"

log = structlog.get_logger("livebridge.sink")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a delivered message landed."""

    contact_id: int
    conversation_id: int
    message_id: int


def render_content(message: InboundMessage, limit: int = MAX_CONTENT) -> str:
    """The message text with its attachments listed, truncated visibly past ``limit``."""
    parts = [message.text.strip()]
    for a in message.attachments:
        size = f", {a.size} bytes" if a.size is not None else ""
        where = a.url or "(file not forwarded)"
        parts.append(f"[attachment] {a.name} ({a.content_type}{size}): {where}")
    content = "\n\n".join(p for p in parts if p) or "(empty message)"
    if len(content) > limit:
        note = f"\n\n[truncated: {len(content) - limit} more characters not shown]"
        content = content[: limit - len(note)] + note
    return content


class LivedeskSink:
    """Delivers inbound messages to one Livedesk inbox."""

    def __init__(self, client: LivedeskClient, store: Store, inbox_id: int,
                 pm: pluggy.PluginManager) -> None:
        self.client = client
        self.store = store
        self.inbox_id = inbox_id
        self._pm = pm

    def _key(self, source: str, value: str) -> str:
        return f"{self.inbox_id}|{source}|{value}"

    async def deliver(self, message: InboundMessage) -> Delivery:
        """Deliver ``message``; raises ``LivedeskError`` (see ``.retryable``) on failure."""
        contact_id = await self._contact(message)
        try:
            conversation_id = await self._conversation(message, contact_id)
        except LivedeskError as exc:
            if exc.status != 404:  # 404: the mapped contact is gone from Livedesk
                raise
            contact_id = await self._contact(message, stale=contact_id)
            conversation_id = await self._conversation(message, contact_id)
        in_reply_to = None
        if message.reply_to:
            found = await self.store.kv_get("message", self._key(message.source, message.reply_to))
            in_reply_to = int(found) if found else None
        content = render_content(message)
        try:
            posted = await self.client.create_message(conversation_id, content,
                                                      in_reply_to=in_reply_to)
        except LivedeskError as exc:
            if exc.status != 404:  # 404: the mapped conversation is gone from Livedesk
                raise
            conversation_id = await self._conversation(message, contact_id, stale=conversation_id)
            posted = await self.client.create_message(conversation_id, content,
                                                      in_reply_to=in_reply_to)
        delivery = Delivery(contact_id, conversation_id, int(posted["id"]))
        await self.store.kv_set("message", self._key(message.source, message.ref),
                                str(delivery.message_id), MESSAGE_REF_TTL)
        await self.store.kv_set(
            "thread", f"{self.inbox_id}|{conversation_id}",
            json.dumps({"source": message.source, "thread_key": message.thread_key,
                        "reply_context": message.reply_context}),
        )
        await call_each(
            self._pm.hook.livebridge_message_delivered, message=message, contact_id=contact_id,
            conversation_id=conversation_id, livedesk_message_id=delivery.message_id,
        )
        return delivery

    async def thread_of(self, conversation_id: int) -> dict[str, Any] | None:
        """The source, thread key and reply context of a conversation the bridge opened."""
        raw = await self.store.kv_get("thread", f"{self.inbox_id}|{conversation_id}")
        return None if raw is None else dict(json.loads(raw))

    async def _find_or_create(self, namespace: str, key: str, stale: int | None,
                              create: Any) -> int:
        known = await self.store.kv_get(namespace, key)
        if known is not None and int(known) != stale:
            return int(known)
        async with self.store.lock(f"{namespace}:{key}"):
            known = await self.store.kv_get(namespace, key)
            if known is not None and int(known) != stale:
                return int(known)  # another worker or daemon created it meanwhile
            created = int(await create())
            await self.store.kv_set(namespace, key, str(created))
            log.info(f"{namespace} created", key=key, id=created, replaced=stale)
            return created

    async def _contact(self, message: InboundMessage, stale: int | None = None) -> int:
        async def create() -> int:
            s = message.sender
            try:
                contact = await self.client.create_contact(
                    self.inbox_id, name=s.name or s.email or s.phone or s.external_id,
                    email=s.email, phone_number=s.phone, avatar_url=s.avatar_url,
                    identifier=f"{message.source}:{s.external_id}",
                    custom_attributes=s.attributes,
                )
            except LivedeskError as exc:
                if exc.status != 422 or _TAKEN not in exc.body:
                    raise
                existing = await self._find_contact(message)
                if existing is None:
                    raise
                log.info("contact already in Livedesk, reusing it", contact_id=existing["id"])
                return int(existing["id"])
            return int(contact["id"])

        key = self._key(message.source, message.sender.external_id)
        return await self._find_or_create("contact", key, stale, create)

    async def _find_contact(self, message: InboundMessage) -> dict[str, Any] | None:
        s = message.sender
        wanted = [
            ("identifier", f"{message.source}:{s.external_id}"),
            ("email", s.email.lower() if s.email else None),
            ("phone_number", s.phone),
        ]
        for field, value in wanted:
            if not value:
                continue
            for contact in await self.client.search_contacts(value):
                found = contact.get(field)
                if isinstance(found, str) and found.lower() == value.lower():
                    return contact
        return None

    async def _conversation(self, message: InboundMessage, contact_id: int,
                            stale: int | None = None) -> int:
        async def create() -> int:
            conversation = await self.client.create_conversation(
                self.inbox_id, contact_id, custom_attributes=message.metadata or None
            )
            return int(conversation["id"])

        key = self._key(message.source, message.thread_key)
        return await self._find_or_create("conversation", key, stale, create)
