"""Shared test fixtures: a tiny source type written here, as a third party would write one."""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

import pytest
from aiohttp import web
from smtp_helpers import smtp_server  # noqa: F401 - the fixture, for every test

from livebridge import (
    Attachment,
    InboundMessage,
    OutboundReply,
    Overloaded,
    Permanent,
    Retryable,
    Sender,
    Source,
    SourceSettings,
    StoreUnavailable,
    hookimpl,
)

# Local traffic only: a proxy from the environment must not capture test requests.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)


class EchoSettings(SourceSettings):
    """Settings of the test source."""

    path: str | None = "/echo"
    greeting: str = "hi"


class EchoSource(Source):
    """POST /echo with JSON {id, user, thread, text[, reply_to]}: one message each."""

    type_name = "echo"
    Settings = EchoSettings
    #: Replies "sent back" by every echo source, for the tests to inspect.
    sent: ClassVar[list[OutboundReply]] = []
    hung: ClassVar[list[OutboundReply]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.settings.path or "/echo", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        data = await request.json()
        assert isinstance(self.settings, EchoSettings)
        message = InboundMessage(
            source=self.name, event_id=data["id"], thread_key=data["thread"],
            sender=Sender(external_id=data["user"], name=data["user"],
                          email=data.get("email")),
            text=f"{self.settings.greeting}: {data['text']}", reply_to=data.get("reply_to"),
            reply_context={"thread": data["thread"]},
            attachments=[Attachment(name=name, content_type="text/plain", size=len(body),
                                    data=body.encode())
                         for name, body in data.get("files", {}).items()],
        )
        try:
            result = await self.bridge.accept(message, self)
        except (Overloaded, StoreUnavailable) as exc:
            return self.reject(request, 503, "busy",
                               headers={"Retry-After": str(exc.retry_after)})
        return web.json_response({"result": result.value})


    async def send_reply(self, reply: OutboundReply) -> None:
        """Record the reply; a thread named 'flaky' fails once, 'gone' for good, 'hang'
        never answers the first time."""
        if reply.thread_key == "hang" and not self.hung:
            self.hung.append(reply)
            await asyncio.Event().wait()
        if reply.thread_key == "gone":
            raise Permanent("the customer's channel is gone")
        if reply.thread_key == "flaky" and not any(r.thread_key == "flaky" for r in self.sent):
            self.sent.append(reply.model_copy(update={"text": "(failed attempt)"}))
            raise Retryable("try again", retry_after=0)
        self.sent.append(reply)


class EchoPlugin:
    """Registers ``EchoSource``; ``sent`` holds the replies its sources sent back."""

    sent = EchoSource.sent
    hung = EchoSource.hung

    @hookimpl
    def livebridge_source_types(self) -> list[type[Source]]:
        return [EchoSource]


@pytest.fixture
def echo() -> EchoPlugin:
    """The echo source plugin, to pass as ``make_bridge(..., plugins=[echo])``."""
    EchoSource.sent.clear()
    EchoSource.hung.clear()
    return EchoPlugin()


def echo_post(i: int, user: str = "u1", thread: str = "t1", text: str = "hello",
              **extra: Any) -> dict[str, Any]:
    """A body for POST /echo."""
    return {"id": f"ev{i}", "user": user, "thread": thread, "text": text, **extra}


@pytest.fixture(name="echo_post")
def _echo_post() -> Any:
    return echo_post
