"""Slack Events API payloads of the real shapes, signed the way Slack signs them; and what
reached the Livedesk emulator."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T123ABC456"
USER = "U2147483697"
BOT_USER = "UBOT0001"  # FakeSlack's bot user (auth.test)
DM = "D024BE91L"
CHANNEL = "C2147483705"

URL_VERIFICATION = {
    "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
    "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    "type": "url_verification",
}


def sign(body: bytes, *, timestamp: float | None = None, secret: str = SECRET) -> dict[str, str]:
    """Slack's headers for ``body``: ``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={digest.hexdigest()}"}


def body_of(payload: dict[str, Any]) -> bytes:
    """The raw body Slack would send."""
    return json.dumps(payload, separators=(",", ":")).encode()


def envelope(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An ``event_callback`` envelope around ``event``."""
    return {
        "token": "XXYYZZ",
        "team_id": TEAM,
        "api_app_id": "A0PNCHHK2",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(float(event.get("event_ts") or event.get("ts") or 0)),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER,
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
        "event_context": "4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMTIzQUJDNDU2In0",
    }


def message(text: str, ts: str, *, channel: str = DM, user: str = USER,
            thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``message`` event (message.im by default; pass ``channel=CHANNEL`` for
    message.channels); with ``thread_ts``, a thread reply."""
    event: dict[str, Any] = {
        "client_msg_id": f"5d2c8f33-{ts.replace('.', '')[-12:]}",
        "type": "message",
        "text": text,
        "user": user,
        "ts": ts,
        "blocks": [{"type": "rich_text", "block_id": "Xl8", "elements": [
            {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}],
        "team": TEAM,
        "channel": channel,
        "event_ts": ts,
        "channel_type": "im" if channel.startswith("D") else "channel",
    }
    if thread_ts is not None:
        event.update(thread_ts=thread_ts, parent_user_id=USER)
    event.update(extra)
    return event


def file_share(text: str, ts: str, *, channel: str = DM) -> dict[str, Any]:
    """A ``file_share`` message with one PDF."""
    return message(text, ts, channel=channel, subtype="file_share", upload=False,
                   display_as_bot=False, files=[{
                       "id": "F0123ABCD",
                       "created": int(float(ts)),
                       "timestamp": int(float(ts)),
                       "name": "invoice-42.pdf",
                       "title": "invoice-42.pdf",
                       "mimetype": "application/pdf",
                       "filetype": "pdf",
                       "pretty_type": "PDF",
                       "user": USER,
                       "user_team": TEAM,
                       "mode": "hosted",
                       "editable": False,
                       "is_external": False,
                       "external_type": "",
                       "is_public": False,
                       "size": 52345,
                       "url_private": f"https://files.slack.com/files-pri/{TEAM}-F0123ABCD/"
                                      "invoice-42.pdf",
                       "url_private_download": f"https://files.slack.com/files-pri/{TEAM}-"
                                               "F0123ABCD/download/invoice-42.pdf",
                       "permalink": f"https://test.slack.com/files/{USER}/F0123ABCD/"
                                    "invoice-42.pdf",
                   }])


def bot_message(text: str, ts: str, *, channel: str = CHANNEL) -> dict[str, Any]:
    """A ``bot_message`` from another integration."""
    return {"type": "message", "subtype": "bot_message", "text": text, "ts": ts,
            "username": "ReplyBot", "icons": {"emoji": ":robot_face:"}, "bot_id": "B0OTHER01",
            "channel": channel, "event_ts": ts, "channel_type": "channel"}


def message_changed(ts: str, edited_ts: str, *, channel: str = CHANNEL) -> dict[str, Any]:
    """A ``message_changed`` (hidden) for an edit of the message at ``ts``."""
    old = message("Hello, wrld!", ts, channel=channel)
    new = {**old, "text": "Hello, world!", "edited": {"user": USER, "ts": edited_ts}}
    return {"type": "message", "subtype": "message_changed", "hidden": True, "message": new,
            "previous_message": old, "channel": channel, "ts": edited_ts,
            "event_ts": edited_ts, "channel_type": "channel"}


def channel_join(ts: str, *, channel: str = CHANNEL) -> dict[str, Any]:
    """A ``channel_join`` system message."""
    return {"type": "message", "subtype": "channel_join", "user": USER,
            "text": f"<@{USER}> has joined the channel", "inviter": "U0INVITER", "ts": ts,
            "channel": channel, "event_ts": ts, "channel_type": "channel"}


