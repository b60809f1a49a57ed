"""Demo mode (the built-in Livedesk emulator): a mail catcher and the state of agent replies,
both shown on the emulator's page (``livebridge._livedesk.emulator.DemoView``)."""

from __future__ import annotations

import email.utils
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from livebridge._config import SMTPConfig
from livebridge._livedesk.client import LivedeskClient
from livebridge._livedesk.emulator import CaughtMail, ReplyState
from livebridge._outbox import Flow, classify
from livebridge._replies import ReplyRoute
from livebridge._store import OutboxItem, Store
from livebridge.exceptions import Retryable
from livebridge.mailer import Mailer
from livebridge.model import Attachment, OutboundReply
from livebridge.source import Source

__all__ = ["CAUGHT_MAIL_LIMIT", "STATES_KEPT", "Demo", "MailCatcher"]

#: How many caught mails the catcher keeps (the oldest go first).
CAUGHT_MAIL_LIMIT = 100
#: How many replies' delivery states are kept (the oldest go first).
STATES_KEPT = 1000
#: How many dead letters the page looks through for the replies' states.
_DEAD_LETTERS_SHOWN = 500
_STATES_KEY = ("demo", "reply_states")
log = structlog.get_logger("livebridge")


class MailCatcher(Mailer):
    """A ``Mailer`` that keeps the last ``limit`` mails in memory instead of sending them."""

    def __init__(self, limit: int = CAUGHT_MAIL_LIMIT) -> None:
        super().__init__(SMTPConfig(host="mail-catcher.invalid",
                                    sender="livebridge@demo.invalid"))
        self.caught: deque[CaughtMail] = deque(maxlen=limit)

    async def send(self, *, to: str, subject: str, text: str, to_name: str | None = None,
                   in_reply_to: str | None = None, references: Sequence[str] = (),
                   reply_to: str | None = None, message_id: str | None = None,
                   from_name: str | None = None, attachments: Sequence[Attachment] = (),
                   markdown: bool = False) -> str:
        """Keep the mail (recipient, subject, text and file names); return its Message-ID."""
        to_header = f"{to_name} <{to}>" if to_name else to
        self.caught.append(CaughtMail(to_header, subject, text,
                                      tuple(a.name for a in attachments)))
        return message_id or email.utils.make_msgid(domain=self.domain)


class _TrackedReplyRoute(ReplyRoute):
    """A reply route that records each attempt's outcome in ``Demo``."""

    def __init__(self, demo: Demo, source: Source, flow: Flow,
                 notify: Callable[..., Awaitable[None]], notes: LivedeskClient | None) -> None:
        super().__init__(source, flow, notify, notes)
        self._demo = demo

    async def deliver(self, item: OutboxItem) -> None:
        message_id = OutboundReply.model_validate_json(item.payload).livedesk_message_id
        try:
            await super().deliver(item)
        except Exception as exc:  # as the dispatcher will take it (the store's dead letters
            outcome = classify(exc)  # also say when retries ran out)
            state = "retrying" if isinstance(outcome, Retryable) else "dead-lettered"
            await self._demo.record(message_id, ReplyState(state, str(outcome)))
            raise
        await self._demo.record(message_id, ReplyState("sent"))


class Demo:
    """What demo mode adds: the mail catcher (None when SMTP is configured) and the replies'
    delivery states; serves as the emulator page's ``DemoView``."""

    def __init__(self, store: Store, *, catch_mail: bool) -> None:
        self.store = store
        self.catcher = MailCatcher() if catch_mail else None
        #: The last attempt's outcome per Livedesk message id, the latest ``STATES_KEPT`` (kept
        #: in the store; its dead letters have the last word).
        self.states: dict[int, ReplyState] = {}

    async def load(self) -> None:
        """Take up the states saved by an earlier run."""
        saved = await self.store.kv_get(*_STATES_KEY)
        if saved is not None:
            self.states = {i: ReplyState(state, detail) for i, state, detail in json.loads(saved)}

    async def record(self, message_id: int, state: ReplyState) -> None:
        """Keep a reply's state (a failure to save it is logged: the delivery stands)."""
        self.states.pop(message_id, None)
        self.states[message_id] = state
        while len(self.states) > STATES_KEPT:
            del self.states[next(iter(self.states))]
        saved = json.dumps([[i, s.state, s.detail] for i, s in self.states.items()])
        try:
            await self.store.kv_set(*_STATES_KEY, saved)
        except Exception as exc:
            log.warning("could not save a reply's delivery state", error=str(exc))

    def reply_route(self, source: Source, flow: Flow, notify: Callable[..., Awaitable[None]],
                    notes: LivedeskClient | None = None) -> ReplyRoute:
        """A source's reply route, recording outcomes here."""
        return _TrackedReplyRoute(self, source, flow, notify, notes)

    def caught_mail(self) -> Sequence[CaughtMail]:
        return list(self.catcher.caught) if self.catcher is not None else []

    async def reply_states(self) -> Mapping[int, ReplyState]:
        states = dict(self.states)
        for letter in await self.store.dead_letters(_DEAD_LETTERS_SHOWN):  # oldest first
            if letter.kind == "reply":
                payload: dict[str, Any] = json.loads(letter.payload)
                states[payload["livedesk_message_id"]] = ReplyState("dead-lettered",
                                                                    letter.reason)
        return states
