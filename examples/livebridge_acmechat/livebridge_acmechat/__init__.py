"""AcmeChat for livebridge: customers' chats in, agents' replies back (an example plugin)."""

from __future__ import annotations

import json

from aiohttp import web
from livebridge import (
    Busy,
    InboundMessage,
    OutboundReply,
    Permanent,
    Refused,
    Retryable,
    Sender,
    Source,
    SourceSettings,
    equal,
    hmac_sha256_hex,
    hookimpl,
    parse_retry_after,
    read_body,
)
from pydantic import SecretStr


class AcmeSettings(SourceSettings):
    """``type: acmechat`` in bridge.yaml."""

    path: str = "/acmechat"
    secret: SecretStr  # signs the webhooks (X-Acme-Signature: hex HMAC-SHA256 of the body)
    api_url: str = "https://api.acmechat.example"


class AcmeSource(Source[AcmeSettings]):
    """POST {id, thread, user, name, text}: one message each; replies go to AcmeChat's API."""

    type_name = "acmechat"

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.settings.path, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request, 64 * 1024)
            expected = hmac_sha256_hex(self.settings.secret.get_secret_value(), body)
            if not equal(request.headers.get("X-Acme-Signature", ""), expected):
                raise Refused(401, "bad signature")
            event = json.loads(body)
            message = InboundMessage(
                source=self.name, event_id=str(event["id"]), thread_key=str(event["thread"]),
                sender=Sender(external_id=str(event["user"]), name=str(event["name"])),
                text=str(event["text"]))
            result = await self.bridge.accept(message, self)
        except (Refused, Busy) as exc:
            return self.reject(request, exc)
        except (ValueError, TypeError, KeyError, RecursionError):  # malformed JSON or fields
            return self.reject(request, 400, "malformed event")
        return web.json_response({"result": result.value})

    async def send_reply(self, reply: OutboundReply) -> None:
        """Post the agent's reply to the thread (transport errors are retried by the core)."""
        url = f"{self.settings.api_url}/threads/{reply.thread_key}/messages"
        async with self.bridge.http.post(url, json={"text": reply.text}) as resp:
            if resp.status == 429 or resp.status >= 500:
                raise Retryable(f"AcmeChat: HTTP {resp.status}",
                                retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            if resp.status >= 400:
                raise Permanent(f"AcmeChat: HTTP {resp.status}")


@hookimpl
def livebridge_source_types() -> list[type[Source]]:
    return [AcmeSource]
