"""Chatterbox, a made-up chat service: its webhook payloads, signed as it signs them, and a
local fake of its message API (over real HTTP) that agent replies reach."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

SECRET = "cbx-signing-secret"
API_TOKEN = "cbx-api-token"
ENV = {"CHATTERBOX_SIGNING_SECRET": SECRET, "CHATTERBOX_API_TOKEN": API_TOKEN}
PATH = "/hooks/chatterbox"
README = Path(__file__).parents[2] / "plugins" / "livebridge_webhook" / "README.md"


def readme_config() -> dict[str, Any]:
    """The example ``bridge.yaml`` block of the plugin's README, as YAML data."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    [block] = [b for b in blocks if "type: webhook" in b and "name: chatterbox" in b]
    data: dict[str, Any] = yaml.safe_load(block)
    return data


def event(event_id: str = "evt_01JD7Q3M2K", *, text: str = "Hi! My order #4411 has not arrived.",
          conversation: str = "conv_7f3a", author: str = "usr_9b1", kind: str = "customer",
          type_: str = "message.created", files: list[dict[str, Any]] | None = None,
          ) -> dict[str, Any]:
    """A ``message.created`` event as Chatterbox POSTs it."""
    return {
        "id": event_id, "type": type_, "created_at": "2026-11-29T14:00:00Z",
        "workspace": {"id": "ws_42", "name": "Acme"},
        "data": {
            "conversation": {"id": conversation, "channel": "support"},
            "author": {"id": author, "kind": kind, "display_name": "Mia Chen",
                       "email": "mia@example.com", "phone": "+81312345678"},
            "message": {"id": f"msg_{event_id}", "text": text, "attachments": files or []},
        },
    }


def sign(body: bytes, *, timestamp: float | None = None, secret: str = SECRET) -> dict[str, str]:
    """Chatterbox's headers: ``v1=`` + hex HMAC-SHA256 of ``{timestamp}.{body}``."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Chatterbox-Timestamp": stamp, "X-Chatterbox-Signature": f"v1={digest}",
            "Content-Type": "application/json"}


def body_of(payload: Any) -> bytes:
    """The raw body, as sent and signed."""
    return json.dumps(payload).encode()


class FakeChatterbox:
    """``POST /v1/conversations/{id}/messages``: records each call; answers the statuses
    queued in ``answers`` first (with their headers), then 201."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, str]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/conversations/{conversation}/messages", self._post)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        self.calls.append({"path": request.path, "headers": dict(request.headers),
                           "json": await request.json()})
        if self.answers:
            status, headers = self.answers.pop(0)
            return web.json_response({"error": "nope"}, status=status, headers=headers)
        return web.json_response({"id": f"msg_{len(self.calls)}"}, status=201)
