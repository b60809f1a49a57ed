"""Which conversation a mail belongs to, kept in the bridge's store (``bridge.state``).

Records: ``mid:<message-id>`` → thread key for every mail received or sent (so a reply from a
client that rewrites ids still finds its thread through ``References``); ``tok:<token>`` →
thread key for the ``support+TOKEN@`` reply address; ``thread:<key>`` → the thread's token,
subject, recent Message-IDs (for ``References`` on the way out) and participants (who may
join it); ``sent:<livedesk message id>`` → the Message-ID of an agent reply (same on retries).

A mail naming a thread joins it only when its sender is a participant; callers decide that
and hold ``bridge.lock(source, LOCK)`` around a lookup and the ``remember`` that follows.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from livebridge import PluginState
from livebridge_email.parse import normalize_id

__all__ = ["LOCK", "MAX_IDS", "MAX_LOOKUPS", "MAX_PARTICIPANTS", "ThreadInfo", "Threads",
           "tokens_of"]

#: The lock name (per source) that serializes thread lookups and updates.
LOCK = "threads"
#: Message-IDs kept per thread for ``References`` (the first one and the latest ones).
MAX_IDS = 10
#: Participant addresses kept per thread (the first one and the latest ones).
MAX_PARTICIPANTS = 50
#: Reply tokens, and Message-IDs, looked up per mail (the first ones given: callers put the
#: newest References first), so a mail naming thousands holds the thread lock briefly.
MAX_LOOKUPS = 20


@dataclass(slots=True)
class ThreadInfo:
    """What the bridge remembers of one email thread."""

    token: str
    subject: str | None = None
    message_ids: list[str] = field(default_factory=list)
    #: Lowercased addresses whose mail may join the thread.
    participants: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, subject: str | None) -> ThreadInfo:
        """A new thread with a fresh reply-address token."""
        return cls(token=secrets.token_hex(6), subject=subject)

    def add(self, message_id: str) -> None:
        """Append ``message_id``, keeping the first and the latest ones."""
        self.message_ids = _appended(self.message_ids, [message_id], MAX_IDS, move=False)

    def admit(self, addresses: Iterable[str]) -> None:
        """Record ``addresses`` as participants, keeping the first and the latest ones."""
        self.participants = _appended(self.participants, [a.lower() for a in addresses if a],
                                      MAX_PARTICIPANTS, move=True)

    def has(self, address: str | None) -> bool:
        """Whether mail from ``address`` may join the thread."""
        return address is not None and address.lower() in self.participants


def _appended(items: list[str], new: Iterable[str], limit: int, move: bool) -> list[str]:
    """``items`` and then ``new``; past ``limit`` the first and the latest are kept (``move``:
    a known item is moved to the end, as the latest)."""
    seen = dict.fromkeys(items)  # ordered, with O(1) lookups
    first = next(iter(seen), None)
    for item in new:
        if item in seen:
            if move and item != first:
                del seen[item]
                seen[item] = None
            continue
        seen[item] = None
        first = item if first is None else first
    out = list(seen)
    return out if len(out) <= limit else [out[0], *out[-(limit - 1):]]


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

    async def owner(self, message_id: str) -> tuple[str, ThreadInfo] | None:
        """The thread that ``message_id`` was recorded in, with its record."""
        normalized = normalize_id(message_id)
        key = await self.state.get(f"mid:{normalized}") if normalized else None
        info = await self.info(key) if key else None
        return None if key is None or info is None else (key, info)

    async def candidates(self, tokens: Iterable[str],
                         message_ids: Iterable[str | None]) -> list[tuple[str, ThreadInfo]]:
        """The known threads named by ``tokens``, then by ``message_ids``, in that order
        (the first ``MAX_LOOKUPS`` of each)."""
        found: list[tuple[str, ThreadInfo]] = []
        keys: list[str] = []
        for token in itertools.islice(tokens, MAX_LOOKUPS):
            if token and (key := await self.state.get(f"tok:{token.lower()}")):
                keys.append(key)
        for message_id in itertools.islice(message_ids, MAX_LOOKUPS):
            if message_id and (owner := await self.owner(message_id)):
                keys.append(owner[0])
        for key in dict.fromkeys(keys):
            if (info := await self.info(key)) is not None:
                found.append((key, info))
        return found

    async def info(self, thread_key: str) -> ThreadInfo | None:
        """The thread's record, if there is one."""
        raw = await self.state.get(f"thread:{thread_key}")
        if raw is None:
            return None
        data = json.loads(raw)
        return ThreadInfo(token=str(data["token"]), subject=data.get("subject"),
                          message_ids=list(data.get("message_ids") or []),
                          participants=list(data.get("participants") or []))

    async def remember(self, thread_key: str, info: ThreadInfo, message_id: str,
                       claim: Iterable[str] = ()) -> None:
        """Record that ``message_id`` belongs to the thread, and store ``info`` with it;
        ``claim``: ids recorded for the thread too, unless already known."""
        info.add(message_id)
        for other in claim:
            normalized = normalize_id(other)
            if normalized and await self.state.get(f"mid:{normalized}") is None:
                await self.state.set(f"mid:{normalized}", thread_key, self.ttl)
        await self.state.set(f"mid:{normalize_id(message_id)}", thread_key, self.ttl)
        await self.state.set(f"tok:{info.token}", thread_key, self.ttl)
        await self.state.set(f"thread:{thread_key}", json.dumps(asdict(info)), self.ttl)

    async def sent_id(self, livedesk_message_id: int, domain: str) -> str:
        """The Message-ID of an agent reply: random (it names no thread), and the same when
        the reply is sent again."""
        key = f"sent:{livedesk_message_id}"
        if known := await self.state.get(key):
            return known
        message_id = f"<lb.{secrets.token_hex(16)}@{domain}>"
        await self.state.set(key, message_id, self.ttl)
        return message_id
