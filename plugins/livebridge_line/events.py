"""LINE webhook payloads: the fields the bridge reads, checked for their JSON types; chats and
messages as the bridge names and shows them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

__all__ = ["FILE_TYPES", "chat_of", "malformed_field", "readable_line", "storable"]

#: Message types whose content is a file (on LINE's servers, or an external URL).
FILE_TYPES = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/m4a",
              "file": "application/octet-stream"}

_EVENT_TEXT = ("type", "webhookEventId", "mode", "replyToken")
_SOURCE_TEXT = ("type", "userId", "groupId", "roomId")
_MESSAGE_TEXT = ("id", "type", "text", "quotedMessageId", "fileName", "packageId", "stickerId",
                 "title", "address")


def _wrong(obj: Mapping[str, Any], fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` that is present and not a string."""
    return next((k for k in fields if not isinstance(obj.get(k, ""), str)), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _malformed_message(message: Any) -> str | None:
    if not isinstance(message, dict):
        return ""
    wrong = _wrong(message, _MESSAGE_TEXT)
    if wrong:
        return f".{wrong}"
    keywords = message.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        return ".keywords"
    if "fileSize" in message and not (_is_number(message["fileSize"])
                                      and message["fileSize"] >= 0):
        return ".fileSize"
    wrong = next((k for k in ("latitude", "longitude")
                  if k in message and not _is_number(message[k])), None)
    if wrong:
        return f".{wrong}"
    provider = message.get("contentProvider", {})
    if not isinstance(provider, dict):
        return ".contentProvider"
    wrong = _wrong(provider, ("type", "originalContentUrl"))
    return f".contentProvider.{wrong}" if wrong else None


def malformed_field(payload: Mapping[str, Any]) -> str | None:
    """The first field the bridge reads from a webhook body that has the wrong JSON type
    (``events[2].message.text``), or None. LINE never sends such a body."""
    events = payload.get("events")
    if not isinstance(events, list):
        return "events"
    for i, event in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(event, dict):
            return where
        wrong = _wrong(event, _EVENT_TEXT)
        if wrong:
            return f"{where}.{wrong}"
        delivery = event.get("deliveryContext", {})
        if not isinstance(delivery, dict) or not isinstance(
                delivery.get("isRedelivery", False), bool):
            return f"{where}.deliveryContext"
        source = event.get("source", {})
        if not isinstance(source, dict):
            return f"{where}.source"
        wrong = _wrong(source, _SOURCE_TEXT)
        if wrong:
            return f"{where}.source.{wrong}"
        if event.get("type") == "message":
            wrong = _malformed_message(event.get("message"))
            if wrong is not None:
                return f"{where}.message{wrong}"
    return None


def storable(payload: Any) -> bool:
    """Whether every string in ``payload`` can be stored (no unpaired surrogate such as
    ``"\\ud800"``, which JSON can carry and UTF-8 cannot)."""
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def chat_of(source: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The chat an event came from, as ``(chat id, group or room id)``: a 1:1 chat is the
    user's id and has no group. None when the ids are missing."""
    kind = source.get("type")
    if kind == "user":
        user = source.get("userId")
        return (user, None) if user else None
    chat = source.get("groupId") if kind == "group" else source.get("roomId")
    return (chat, chat) if kind in ("group", "room") and chat else None


def readable_line(message: Mapping[str, Any]) -> str:
    """A message that is not text or a file, as a line an agent can read: a sticker (with
    its keywords), a location (with a map link), or the type of anything else."""
    kind = message.get("type")
    if kind == "sticker":
        keywords = ", ".join(message.get("keywords") or [])
        line = f"[sticker {message.get('packageId')}/{message.get('stickerId')}"
        line += f": {keywords}]" if keywords else "]"
        text = message.get("text")
        return f"{line} {text}" if text else line
    if kind == "location":
        place = ", ".join(v for v in (message.get("title"), message.get("address")) if v)
        where = f"{message.get('latitude')},{message.get('longitude')}"
        link = f"https://www.google.com/maps/search/?api=1&query={quote(where)}"
        return f"[location] {place}: {link}" if place else f"[location] {link}"
    return f"[{kind} message]"
