"""The Livedesk sink: a message becomes contact (once) → conversation (per thread) → message.

The bridge owns identity. The maps (sender → contact, thread → conversation, message ref →
Livedesk message) live in the store, so a known sender in a known thread costs one call, and
a retry never repeats a step that already succeeded. Each find-or-create runs under a lock
on its key, shared by every daemon on the store.

Livedesk has no idempotency key, so a create whose answer was lost (a timeout after Livedesk
acted, a crash) is ambiguous. Contacts recover through Livedesk's uniqueness ("has already
been taken" → search). Conversations are tagged with their thread (custom attribute
``livebridge_thread``) and a marker with the time is stored before each create: when a marker
is found without a mapping, the contact's conversations are searched for the tag; while the
earlier create may still be running at Livedesk (``settle`` seconds), the attempt is retried
later instead of creating a second conversation.

Agents delete and merge contacts and delete conversations, so a recorded id can answer 404.
Each such id is resolved again, under the same locks: a contact by creating it (a merged
contact's identifier or email is taken by the contact it was merged into: search finds that
one), a conversation by creating it for the live contact; then the message is delivered.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from livebridge._livedesk.client import LivedeskClient, LivedeskError
from livebridge._store import Store
from livebridge.exceptions import Retryable
from livebridge.model import Attachment, InboundMessage
from livebridge.source import Source

__all__ = ["MAX_CONTENT", "MAX_FILES", "Delivery", "LivedeskSink", "render_content"]

#: Livedesk (Chatwoot) refuses longer message content.
MAX_CONTENT = 150_000
#: Livedesk (Chatwoot) takes at most this many attachments a message.
MAX_FILES = 15
#: How long a delivered message can be named as ``reply_to`` (the map is purged after).
MESSAGE_REF_TTL = 90 * 86400
#: How long a "conversation create was attempted" marker is kept.
PENDING_TTL = 86400
THREAD_TAG = "livebridge_thread"
_TAKEN = "has already been taken"

log = structlog.get_logger("livebridge.sink")

#: ``notify(hook_name, **kwargs)``: calls an observe-only plugin hook.
Notify = Callable[..., Awaitable[None]]


class _Recent:
    """A bounded map of recently used values, in front of the store (the store is the truth:
    a stale entry ends in a 404 from Livedesk, whose recovery reads the store again)."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a delivered message landed."""

    contact_id: int
    conversation_id: int
    message_id: int


def uploads(message: InboundMessage) -> list[Attachment]:
    """The attachments whose bytes are uploaded to Livedesk (at most ``MAX_FILES``)."""
    return [a for a in message.attachments if a.data is not None][:MAX_FILES]


def render_content(message: InboundMessage, limit: int = MAX_CONTENT) -> str:
    """The message text, with the attachments that are not uploaded listed (a link, or a
    note that the file was not forwarded), truncated visibly past ``limit``."""
    uploaded = {id(a) for a in uploads(message)}
    parts = [message.text.strip()]
    parts += [a.line() for a in message.attachments if id(a) not in uploaded]
    content = "\n\n".join(p for p in parts if p)
    if not content and not uploaded:
        content = "(empty message)"
    if len(content) > limit:
        note = f"\n\n[truncated: {len(content) - limit} more characters not shown]"
        content = content[: limit - len(note)] + note
    return content


class LivedeskSink:
    """Delivers inbound messages to one Livedesk inbox."""

    def __init__(self, client: LivedeskClient, store: Store, inbox_id: int,
                 notify: Notify, *, settle: float = 20.0,
                 sources: Mapping[str, Source] | None = None) -> None:
        self.client = client
        self.sources = sources or {}
        self.store = store
        self.inbox_id = inbox_id
        self.settle = settle
        self._notify = notify
        self._recent: dict[str, _Recent] = {"contact": _Recent(), "conversation": _Recent(),
                                             "thread": _Recent()}

    def key(self, source: str, value: str) -> str:
        """The store key of a sender, thread or message ref of ``source`` in this inbox."""
        return f"{self.inbox_id}|{source}|{value}"

    async def mapped(self, namespace: str, source: str, value: str) -> int | None:
        """The Livedesk id recorded for a sender (``contact``), a thread (``conversation``)
        or a message ref (``message``), if any."""
        found = await self.store.kv_get(namespace, self.key(source, value))
        return int(found) if found else None

    async def deliver(self, message: InboundMessage) -> Delivery:
        """Deliver ``message``; raises ``LivedeskError`` (see ``.retryable``) on failure.

        Once the contact and conversation are known, its source (in ``sources``) fetches the
        files it fetches late, so that their bytes are uploaded without ever being stored in
        the outbox (and not downloaded again while Livedesk is down)."""
        contact_id, conversation_id = await self._conversation(
            message, await self._contact(message))
        source = self.sources.get(message.source)
        if source is not None:  # after the calls that fail while Livedesk is down
            message = message.model_copy(
                update={"attachments": await source.fetch_attachments(message)})
        in_reply_to = None
        if message.reply_to:
            in_reply_to = await self.mapped("message", message.source, message.reply_to)
        content, files = render_content(message), uploads(message)
        # Where agent replies go is recorded before the message shows in Livedesk, so an
        # agent answering it at once already replies to this message.
        await self._record_thread(message, conversation_id)
        try:
            posted = await self.client.create_message(conversation_id, content,
                                                      in_reply_to=in_reply_to, files=files)
        except LivedeskError as exc:
            if exc.status != 404:  # 404: the mapped conversation is gone from Livedesk
                raise
            contact_id, conversation_id = await self._conversation(message, contact_id,
                                                                   stale=conversation_id)
            await self._record_thread(message, conversation_id)
            posted = await self.client.create_message(conversation_id, content,
                                                      in_reply_to=in_reply_to, files=files)
        delivery = Delivery(contact_id, conversation_id, int(posted["id"]))
        await self.store.kv_set("message", self.key(message.source, message.ref),
                                str(delivery.message_id), MESSAGE_REF_TTL)
        await self._notify(
            "livebridge_message_delivered", message=message, contact_id=contact_id,
            conversation_id=conversation_id, livedesk_message_id=delivery.message_id,
        )
        return delivery

    async def _record_thread(self, message: InboundMessage, conversation_id: int) -> None:
        await self._put("thread", f"{self.inbox_id}|{conversation_id}", json.dumps(
            {"source": message.source, "thread_key": message.thread_key,
             "reply_context": message.reply_context}))

    async def thread_of(self, conversation_id: int) -> dict[str, Any] | None:
        """The source, thread key and reply context of a conversation the bridge opened."""
        raw = await self.store.kv_get("thread", f"{self.inbox_id}|{conversation_id}")
        return None if raw is None else dict(json.loads(raw))

    async def _put(self, namespace: str, key: str, value: str) -> None:
        """Record ``value`` in the store, unless this process just wrote the same."""
        if self._recent[namespace].get(key) != value:
            await self.store.kv_set(namespace, key, value)
            self._recent[namespace].put(key, value)

    async def _find_or_create(self, namespace: str, key: str, stale: int | None,
                              create: Callable[[], Awaitable[int]]) -> int:
        recent = self._recent[namespace]
        known = recent.get(key) if stale is None else None
        if known is None:
            known = await self.store.kv_get(namespace, key)
        if known is not None and int(known) != stale:
            recent.put(key, known)
            return int(known)
        async with self.store.lock(f"{namespace}:{key}"):
            known = await self.store.kv_get(namespace, key)
            if known is not None and int(known) != stale:
                recent.put(key, known)
                return int(known)  # another worker or daemon created it meanwhile
            created = await create()
            await self._put(namespace, key, str(created))
            await self.store.kv_delete(f"{namespace}_pending", key)  # the create is settled
            log.info(f"{namespace} mapped", key=key, id=created, replaced=stale)
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

        key = self.key(message.source, message.sender.external_id)
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
                            stale: int | None = None) -> tuple[int, int]:
        """The contact and the conversation of the message's thread: the contact is
        ``contact_id`` unless a conversation had to be created and Livedesk no longer has
        that contact (deleted, or merged into another), then the one resolved again."""
        key = self.key(message.source, message.thread_key)
        tag = f"{message.source}|{message.thread_key}"
        owner = contact_id

        async def create() -> int:
            nonlocal owner
            pending = await self.store.kv_get("conversation_pending", key)
            if pending is not None:
                found = await self._find_conversation(owner, tag, stale)
                if found is not None:
                    log.info("conversation of an unanswered create found, reusing it", id=found)
                    return found
                if time.time() - float(pending) < self.settle:
                    raise Retryable("an earlier conversation create is still unanswered")
            await self.store.kv_set("conversation_pending", key, str(time.time()), PENDING_TTL)
            attributes = {**message.metadata, THREAD_TAG: tag}
            try:
                try:
                    conversation = await self.client.create_conversation(
                        self.inbox_id, owner, custom_attributes=attributes)
                except LivedeskError as exc:
                    if exc.status != 404:  # 404: the mapped contact is gone from Livedesk
                        raise
                    owner = await self._contact(message, stale=owner)
                    conversation = await self.client.create_conversation(
                        self.inbox_id, owner, custom_attributes=attributes)
            except LivedeskError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    # Refused (a 429, say): nothing was created, so the next attempt need not
                    # wait for this one to settle.
                    await self.store.kv_delete("conversation_pending", key)
                raise
            return int(conversation["id"])

        conversation_id = await self._find_or_create("conversation", key, stale, create)
        return owner, conversation_id

    async def _find_conversation(self, contact_id: int, tag: str,
                                 stale: int | None) -> int | None:
        try:
            conversations = await self.client.contact_conversations(contact_id)
        except LivedeskError as exc:
            if exc.retryable:
                raise
            log.warning("cannot list the contact's conversations; creating a new one",
                        contact_id=contact_id, error=str(exc))
            return None
        for conversation in conversations:
            attributes = conversation.get("custom_attributes") or {}
            if attributes.get(THREAD_TAG) == tag and conversation.get("id") != stale:
                return int(conversation["id"])
        return None
