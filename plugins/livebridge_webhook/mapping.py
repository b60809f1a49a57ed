"""From a JSON payload to messages, by the JMESPath expressions of the settings.

A payload either maps completely or not at all: ``MappingProblem`` names the expression
(``mapping.thread``) and what was wrong with what it found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jmespath
from jmespath.exceptions import JMESPathError, JMESPathTypeError
from jmespath.parser import ParsedResult

from livebridge import Attachment, Sender, normalize_phone, valid_email
from livebridge_webhook.settings import WebhookSettings

__all__ = ["Mapped", "Mapper", "MappingProblem"]


class MappingProblem(Exception):
    """A payload the mapping cannot read: ``expression`` is the setting's key path."""

    def __init__(self, expression: str, problem: str, item: int | None = None) -> None:
        super().__init__(f"{expression}: {problem}")
        self.expression = expression
        self.problem = problem
        self.item = item


@dataclass(frozen=True, slots=True)
class Mapped:
    """The fields of one message, read from the payload."""

    event_id: str
    thread: str
    sender: Sender
    text: str
    attachments: list[Attachment]
    context: dict[str, Any]
    #: Contact fields found but left out, as Livedesk would refuse them (``mapping.sender.email``).
    left_out: tuple[str, ...] = ()


def _truthy(value: Any) -> bool:
    """JMESPath's truth: null, false and empty strings, arrays and objects are false."""
    return not (value is None or value is False
                or (isinstance(value, str | list | dict) and not value))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean"}.get(type(value), "a value")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:  # "http://[" and the like
        return ""


class Mapper:
    """The compiled expressions of one webhook source."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._max_items = settings.max_items
        m = settings.mapping
        named = {"events": settings.events, "items": settings.items,
                 "mapping.event_id": m.event_id, "mapping.thread": m.thread,
                 "mapping.text": m.text, **{f"mapping.sender.{k}": v for k, v in
                                             m.sender.model_dump().items()},
                 **{f"mapping.context.{k}": v for k, v in m.context.items()}}
        if m.attachments is not None:
            named.update({f"mapping.attachments.{k}": v
                          for k, v in m.attachments.model_dump().items()})
        self._exprs: dict[str, ParsedResult] = {
            key: jmespath.compile(expr) for key, expr in named.items() if expr}
        self._context = list(m.context)

    def _search(self, key: str, data: Any) -> Any:
        expr = self._exprs.get(key)
        if expr is None:
            return None
        try:
            return expr.search(data)
        except JMESPathTypeError as exc:  # not the payload's value: it is logged
            raise MappingProblem(key, f"expression failed: {exc.function_name}() was given "
                                      f"{exc.actual_type}") from None
        except JMESPathError as exc:
            raise MappingProblem(key, f"expression failed: {type(exc).__name__}") from None

    def _text(self, key: str, data: Any) -> str | None:
        """The text an expression finds (numbers as text); None when empty."""
        value = self._search(key, data)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = json.dumps(value)
        if value is not None and not isinstance(value, str):
            raise MappingProblem(key, f"expected text or a number, found {_kind(value)}")
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MappingProblem(key, "text that cannot be stored") from None
        return value or None

    def _required(self, key: str, data: Any) -> str:
        """The text an expression finds; it must find some."""
        value = self._text(key, data)
        if value is None:
            raise MappingProblem(key, "came up empty")
        return value

    def messages(self, payload: Any) -> list[Mapped]:
        """The messages in ``payload``, after ``items`` and the ``events`` filter (maybe none);
        raises ``MappingProblem``."""
        items = [payload]
        if "items" in self._exprs:
            found = self._search("items", payload)
            items = [] if found is None else found
            if not isinstance(items, list):
                raise MappingProblem("items", f"expected an array, found {_kind(items)}")
            if len(items) > self._max_items:
                raise MappingProblem("items", f"more than max_items ({self._max_items})")
        out = []
        for i, item in enumerate(items):
            if "events" in self._exprs and not _truthy(self._search("events", item)):
                continue
            try:
                out.append(self._one(item))
            except MappingProblem as exc:
                exc.item = i if "items" in self._exprs else None
                raise
        return out

    def _one(self, item: Any) -> Mapped:
        event_id = self._required("mapping.event_id", item)
        thread = self._required("mapping.thread", item)
        email = self._text("mapping.sender.email", item)
        phone = self._text("mapping.sender.phone", item)
        e164 = normalize_phone(phone) if phone else None
        left_out = (*(["mapping.sender.email"] if email and not valid_email(email) else []),
                    *(["mapping.sender.phone"] if phone and not e164 else []))
        sender = Sender(
            external_id=self._required("mapping.sender.id", item),
            name=self._text("mapping.sender.name", item),
            email=None if "mapping.sender.email" in left_out else email, phone=e164,
        )
        context = {name: self._search(f"mapping.context.{name}", item) for name in self._context}
        return Mapped(event_id=event_id, thread=thread, sender=sender,
                      text=self._text("mapping.text", item) or "",
                      attachments=self._files(item), context=context, left_out=left_out)

    def _files(self, item: Any) -> list[Attachment]:
        files = self._search("mapping.attachments.each", item)
        if files is None:
            return []
        if not isinstance(files, list):
            raise MappingProblem("mapping.attachments.each",
                                 f"expected an array, found {_kind(files)}")
        out = []
        for file in files:
            url = self._required("mapping.attachments.url", file)
            if _scheme(url) not in ("http", "https"):
                raise MappingProblem("mapping.attachments.url", "expected an http(s) URL")
            name = self._text("mapping.attachments.name", file)
            out.append(Attachment(name=name or url.rsplit("/", 1)[-1] or "file", url=url))
        return out
