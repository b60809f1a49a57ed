"""The one normalized message model that every source produces and the sink consumes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Attachment", "InboundMessage", "OutboundReply", "Sender"]


def _now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


class Sender(_Model):
    """Who wrote the message, as the source knows them.

    ``external_id`` is the stable id within the source (a Slack ``team:user``, a lowercased
    email address); the bridge keeps one Livedesk contact per (inbox, source, external_id).
    """

    external_id: str = Field(min_length=1)
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    avatar_url: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class Attachment(_Model):
    """A file that came with a message: a link (``url``), the bytes (``data``), or both.

    ``fetch_ref`` is the source's own handle for fetching the bytes later (a Slack file id,
    say): the source's ``fetch_attachments`` reads it just before delivery. In a reply,
    ``url`` is Livedesk's ``data_url``.
    """

    name: str
    content_type: str = "application/octet-stream"
    size: int | None = None
    url: str | None = None
    data: bytes | None = None
    fetch_ref: str | None = None

    def line(self) -> str:
        """The file as one line of text (name, type, size, link): how a file that is not
        sent as a file still reaches the reader."""
        size = f", {self.size} bytes" if self.size is not None else ""
        return f"[attachment] {self.name} ({self.content_type}{size}): " \
               f"{self.url or '(file not forwarded)'}"


class InboundMessage(_Model):
    """A customer's message, normalized.

    ``event_id`` is the idempotency key within ``source``: the same event offered twice is
    stored once. ``thread_key`` selects the conversation: one Livedesk conversation per
    (inbox, source, thread_key). ``message_ref`` is how later messages of the same source
    refer to this one (``reply_to``); it defaults to ``event_id``. ``reply_context`` is kept
    with the thread, so the source can send agent replies back where the customer wrote.
    ``metadata`` reaches Livedesk as the conversation's custom attributes.
    """

    source: str = Field(min_length=1)
    event_id: str = Field(min_length=1)
    sender: Sender
    thread_key: str = Field(min_length=1)
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list)
    reply_to: str | None = None
    message_ref: str | None = None
    received_at: datetime = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)
    reply_context: dict[str, Any] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        """The reference other messages use to reply to this one."""
        return self.message_ref or self.event_id


#: What an ``OutboundReply`` asks of the source: send a new message, or change or delete the
#: one sent for ``livedesk_message_id``.
ReplyAction = Literal["send", "edit", "delete"]


class OutboundReply(_Model):
    """An agent's reply from Livedesk, on its way back to the source that owns the thread.

    ``action`` is ``send`` for a new message (an agent's reply or a template message such as
    an out-of-office note), ``edit`` or ``delete`` when the agent changed or deleted the
    message ``livedesk_message_id`` the bridge already sent. ``text`` may be empty when the
    reply is only files. ``attachments`` are Livedesk's files (``url`` is the ``data_url``,
    no bytes): the source fetches them when it sends the reply.
    """

    source: str
    thread_key: str
    livedesk_message_id: int
    conversation_id: int
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list)
    action: ReplyAction = "send"
    agent_name: str | None = None
    reply_context: dict[str, Any] = Field(default_factory=dict)
    received_at: datetime = Field(default_factory=_now)

    @property
    def dedupe_key(self) -> str:
        """The outbox idempotency key: one per message, one per edit (by its text), one
        per deletion."""
        if self.action == "send":
            return f"reply:{self.livedesk_message_id}"
        if self.action == "delete":
            return f"delete:{self.livedesk_message_id}"
        digest = hashlib.sha256(self.text.encode()).hexdigest()[:16]
        return f"edit:{self.livedesk_message_id}:{digest}"
