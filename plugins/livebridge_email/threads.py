"""Which conversation a mail belongs to, kept in the bridge's store (``bridge.state``).

Records: ``mid:<message-id>`` → thread key for every mail received or sent (so a reply from a
client that rewrites ids still finds its thread through ``References``); ``tok:<token>`` →
thread key for the ``support+TOKEN@`` reply address; ``thread:<key>`` → the thread's token,
subject and recent Message-IDs (for ``References`` on the way out).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from livebridge import PluginState
from livebridge_email.parse import normalize_id

__all__ = ["MAX_IDS", "ThreadInfo", "Threads", "tokens_of"]

#: Message-IDs kept per thread for ``References`` (the first one and the latest ones).
MAX_IDS = 10


@dataclass(slots=True)
class ThreadInfo:
    """What the bridge remembers of one email thread."""

    token: str
    subject: str | None = None
    message_ids: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, subject: str | None) -> ThreadInfo:
        """A new thread with a fresh reply-address token."""
        return cls(token=secrets.token_hex(6), subject=subject)

    def add(self, message_id: str) -> None:
        """Append ``message_id``, keeping the first and the latest ones."""
        if message_id in self.message_ids:
            return
        ids = [*self.message_ids, message_id]
        self.message_ids = ids if len(ids) <= MAX_IDS else [ids[0], *ids[-(MAX_IDS - 1):]]


def tokens_of(addresses: Iterable[str]) -> list[str]:
    """The ``+tags`` of addresses (``support+TOKEN@example.com`` → ``TOKEN``), lowercased."""
    tags = []
    for address in addresses:
        local = address.rpartition("@")[0]
        if "+" in local:
            tags.append(local.split("+", 1)[1].lower())
    return tags


class Threads:
    """Finds and records email threads in a source's ``PluginState``."""

    def __init__(self, state: PluginState, ttl: float) -> None:
        self.state = state
        self.ttl = ttl

    async def find(self, tokens: Iterable[str], message_ids: Iterable[str]) -> str | None:
        """The thread of the first known token, else of the first known Message-ID."""
        for token in tokens:
            if token and (key := await self.state.get(f"tok:{token.lower()}")):
                return key
        for message_id in message_ids:
            if (normalized := normalize_id(message_id)) and (
                    key := await self.state.get(f"mid:{normalized}")):
                return key
        return None

    async def info(self, thread_key: str) -> ThreadInfo | None:
        """The thread's record, if there is one."""
        raw = await self.state.get(f"thread:{thread_key}")
        return None if raw is None else ThreadInfo(**json.loads(raw))

    async def remember(self, thread_key: str, info: ThreadInfo, message_id: str) -> None:
        """Record that ``message_id`` belongs to the thread, and store ``info`` with it."""
        info.add(message_id)
        await self.state.set(f"mid:{normalize_id(message_id)}", thread_key, self.ttl)
        await self.state.set(f"tok:{info.token}", thread_key, self.ttl)
        await self.state.set(f"thread:{thread_key}", json.dumps(
            {"token": info.token, "subject": info.subject, "message_ids": info.message_ids}),
            self.ttl)
