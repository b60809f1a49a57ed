"""LINE webhook bodies of the shapes LINE sends (as in the Messaging API reference and the
official SDK's fixtures), signed the way LINE signs them; and what reached the emulator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from livebridge.testing import BridgeHarness

SECRET = "8a0d7cbde4b4ebb4f40b7e5e0d8ee2f9"
TOKEN = "line-token"  # FakeLine's channel access token
BOT = "Ub1f2d1e5f6e7a8b9c0d1e2f3a4b5c6d7"
USER = "U206d25c2ea6bd87c17655609a1c37cb8"
OTHER = "U4af4980629ec2d4d2e1e4b0f2f9e8a71"
GROUP = "Ca56f94637cc4347f90a25382909b24b9"
ROOM = "Ra8dbf4673c4c812cd491258042226c99"
PATH = "/line/webhook"


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """LINE's headers for ``body``: ``X-Line-Signature`` = base64(HMAC-SHA256(secret, body))."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"Content-Type": "application/json; charset=utf-8",
            "X-Line-Signature": base64.b64encode(digest).decode()}


def body_of(*events: dict[str, Any]) -> bytes:
    """The raw webhook body carrying ``events``."""
    return json.dumps({"destination": BOT, "events": list(events)}).encode()


def source(user: str = USER, *, group: str | None = None,
           room: str | None = None) -> dict[str, Any]:
    """A 1:1 chat's source, or (``group``/``room``) a member's in a group or room."""
    if group:
        return {"type": "group", "groupId": group, "userId": user}
    if room:
        return {"type": "room", "roomId": room, "userId": user}
    return {"type": "user", "userId": user}


def event(kind: str, event_id: str, *, src: dict[str, Any] | None = None,
          redelivery: bool = False, **fields: Any) -> dict[str, Any]:
    """A webhook event of type ``kind`` with ``fields`` (``message=...``, ``follow=...``)."""
    found: dict[str, Any] = {
        "type": kind,
        "mode": "active",
        "timestamp": 1462629479859,
        "source": src or source(),
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": redelivery},
    }
    if kind not in ("unfollow", "leave", "memberLeft", "unsend"):
        found["replyToken"] = "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA"
    return found | fields


def text(value: str, message_id: str, event_id: str, **kw: Any) -> dict[str, Any]:
    """A text message event."""
    return event("message", event_id, message={
        "id": message_id, "type": "text", "quoteToken": "q3Plxr4AgKd...", "text": value}, **kw)


def image(message_id: str, event_id: str, **kw: Any) -> dict[str, Any]:
    """An image message event whose content is on LINE's servers."""
    return event("message", event_id, message={
        "id": message_id, "type": "image", "quoteToken": "yHAz4Ua2wx7...",
        "contentProvider": {"type": "line"}}, **kw)


def file(message_id: str, event_id: str, name: str, size: int, **kw: Any) -> dict[str, Any]:
    """A file message event."""
    return event("message", event_id, message={
        "id": message_id, "type": "file", "fileName": name, "fileSize": size}, **kw)




async def post(bridge: BridgeHarness, body: bytes, *, headers: dict[str, str] | None = None,
               path: str = PATH) -> tuple[int, dict[str, Any]]:
    """POST ``body`` (signed as LINE does unless ``headers`` are given); status and answer."""
    resp = await bridge.client.post(path, data=body,
                                    headers=sign(body) if headers is None else headers)
    return resp.status, await resp.json()
