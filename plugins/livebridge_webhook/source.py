"""The ``webhook`` source: any chat service that POSTs JSON, mapped by JMESPath expressions.

One request: read within the cap, verify (token or HMAC), parse, map every message of the
payload (all or nothing), accept each durably, then answer 200. Agent replies go out as the
HTTP request of the ``reply:`` template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from livebridge import (
    AcceptResult,
    BodyError,
    Bridge,
    Busy,
    InboundMessage,
    OutboundReply,
    Source,
    read_body,
)
from livebridge_webhook import reply
from livebridge_webhook.mapping import Mapped, Mapper, MappingProblem
from livebridge_webhook.settings import WebhookSettings
from livebridge_webhook.verify import verify_problem

__all__ = ["WebhookSource"]


class WebhookSource(Source[WebhookSettings]):
    """A chat service's JSON webhook, as a livebridge source."""

    type_name = "webhook"

    def __init__(self, settings: WebhookSettings, bridge: Bridge) -> None:
        super().__init__(settings, bridge)
        self._mapper = Mapper(self.settings)

    def routes(self) -> list[web.RouteDef]:
        """The webhook endpoint."""
        return [web.post(self.settings.path, self.handle)]

    def describe(self) -> Mapping[str, Any]:
        """Name, type, path, how requests are verified and whether replies go back."""
        verify = self.settings.verify
        return {**super().describe(),
                "verify": verify if isinstance(verify, str) else verify.header,
                "replies": self.settings.reply is not None}

    async def handle(self, request: web.Request) -> web.Response:
        """``POST`` handler: verify, map, accept, then answer."""
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyError as exc:
            return self.reject(request, exc)
        problem = verify_problem(self.settings.verify, request.headers, body)
        if problem:
            return self.reject(request, 401, problem)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return self.reject(request, 400, "malformed JSON")
        try:
            messages = self._mapper.messages(payload)
        except MappingProblem as exc:
            detail: dict[str, Any] = {"expression": exc.expression, "problem": exc.problem}
            if exc.item is not None:
                detail["item"] = exc.item
            return self.reject(request, 422, "unmapped payload", detail=detail)
        results = {result.value: 0 for result in AcceptResult}
        try:
            for mapped in messages:
                results[(await self.bridge.accept(self._message(mapped), self)).value] += 1
        except Busy as exc:
            return self.reject(request, exc, detail={"retry_after": exc.retry_after})
        if not messages:
            self.log.info("webhook payload ignored (no message in it)")
        return web.json_response({"ok": True, **results})

    def _message(self, mapped: Mapped) -> InboundMessage:
        if mapped.left_out:
            self.log.warning("sender fields left out: not a valid email or E.164 phone",
                             event_id=mapped.event_id, fields=list(mapped.left_out))
        return InboundMessage(
            source=self.name, event_id=mapped.event_id, thread_key=mapped.thread,
            sender=mapped.sender, text=mapped.text, attachments=mapped.attachments,
            reply_context={**mapped.context, "sender_id": mapped.sender.external_id},
        )

    async def send_reply(self, outbound: OutboundReply) -> None:
        """Send the agent's reply as the ``reply:`` request (the base refuses without one)."""
        if self.settings.reply is None:
            await super().send_reply(outbound)
            return
        await reply.send(self.bridge.http, self.settings.reply, outbound)
