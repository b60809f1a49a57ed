"""Embedded Livedesk emulator: a real aiohttp server speaking the Livedesk API channel.

Answers use the shapes of the seed contract (contact, conversation, message) and the
Chatwoot behaviour Livedesk is built on (422 for duplicates and bad input, 404 for unknown
ids, incoming messages reopening resolved conversations, ``message_created`` and
``message_updated`` webhooks, uploaded files served at their absolute ``data_url``, template
messages, agents deleting and merging contacts and deleting conversations). Faults (outage,
latency, 429, 5xx) can be injected into every ``/api/`` call. ``/_emulator/`` holds
unauthenticated admin endpoints for tests and for ``/``, a small HTML page where a person
plays an agent; their POSTs take JSON only and refuse other origins, so no other web page
can drive them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import html
import itertools
import json
import math
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import structlog
from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

log = structlog.get_logger(__name__)

JSON = dict[str, Any]

ACCOUNT_ID = 17623000010928
ACCOUNT_NAME = "Livedesk Emulator"
INBOX_NAME = "Livedesk Emulator API"
PAGE_SIZE = 15
MAX_CONTENT_LENGTH = 150_000
MESSAGE_LIMIT = 200
MAX_ATTACHMENTS = 15
MESSAGE_LIMIT_WINDOW = 60.0
WEBHOOK_TIMEOUT = 5.0
STATUSES = ("open", "snoozed", "resolved", "closed")
HTML_CONVERSATIONS = 50
HTML_MESSAGES = 50
HTML_CONTACTS = 50
AGENT: JSON = {
    "id": 1,
    "name": "Emulator Agent",
    "available_name": "Emulator Agent",
    "email": "agent@livedesk-emulator.invalid",
    "avatar_url": "",
    "thumbnail": "",
    "type": "user",
}

_UNIQUE_LABELS = {"email": "Email", "identifier": "Identifier", "phone_number": "Phone number"}
_STRING_LABELS = {
    "name": "Name",
    "email": "Email",
    "phone_number": "Phone number",
    "avatar_url": "Avatar url",
    "identifier": "Identifier",
}
_ATTRIBUTE_FIELDS = ("custom_attributes", "additional_attributes")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no", ""})
_MERGED_FIELDS = ("identifier", "name", "email", "phone_number", *_ATTRIBUTE_FIELDS)
#: Chatwoot's ``message_type`` enum: the number stored, the name webhooks carry.
INCOMING, OUTGOING, TEMPLATE = 0, 1, 3
#: The ``message_type`` values the API takes (Chatwoot's default is outgoing).
_MESSAGE_TYPES: dict[Any, int] = {
    "incoming": INCOMING,
    "outgoing": OUTGOING,
    INCOMING: INCOMING,
    OUTGOING: OUTGOING,
    None: OUTGOING,
}
_TYPE_NAMES = {INCOMING: "incoming", OUTGOING: "outgoing", TEMPLATE: "template"}
#: Chatwoot's text for a deleted message.
DELETED_CONTENT = "This message was deleted"
#: The keys of an attachment as Chatwoot's webhooks carry it (``Attachment#push_event_data``);
#: the emulator's messages also keep ``name`` and ``content_type``.
PUSH_EVENT_KEYS = ("id", "message_id", "file_type", "account_id", "extension", "data_url",
                   "thumb_url", "file_size", "width", "height")


@dataclass
class Faults:
    """Failures injected into every ``/api/`` call: outage, latency, 429, then 5xx.

    ``rate_limit`` is a token bucket like a SaaS API's: at most that many calls a second
    (``rate_limit_burst`` at once, default one second's worth); beyond it, ``429`` with
    ``Retry-After: retry_after``. ``rate_limit_rate`` instead answers 429 at random.
    """

    latency: float = 0.0
    error_rate: float = 0.0
    rate_limit: float = 0.0
    rate_limit_burst: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    outage_until: float = 0.0
    seed: int | None = None
    #: Answer every message creation with a permanent 422 (until turned off again).
    reject_messages: bool = False


_FAULT_FIELDS = frozenset(f.name for f in dataclasses.fields(Faults))
_RATE_FIELDS = frozenset({"error_rate", "rate_limit_rate"})


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One ``/api/`` call: method, path (relative to the emulator app) and final status."""

    method: str
    path: str
    status: int


class EmulatorError(Exception):
    """An error answer of the emulated API: HTTP status and JSON body."""

    def __init__(self, status: int, body: JSON) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def _not_found() -> EmulatorError:
    return EmulatorError(404, {"error": "Resource could not be found"})


def _invalid(message: str, attribute: str) -> EmulatorError:
    return EmulatorError(422, {"message": message, "attributes": [attribute]})


class _Bucket:
    """The token bucket behind ``Faults.rate_limit``."""

    def __init__(self) -> None:
        self.tokens = -1.0  # full on first use
        self.stamp = 0.0

    def take(self, rate: float, burst: float, now: float) -> bool:
        """Take one token if there is one (refilled at ``rate`` a second, up to ``burst``)."""
        if self.tokens < 0:
            self.tokens = burst
        else:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class EmulatorState:
    """In-memory Livedesk data (dicts keyed by id, insertion-ordered) and the API call log."""

    contacts: dict[int, JSON]
    conversations: dict[int, JSON]
    messages: dict[int, JSON]
    calls: list[CallRecord]
    #: Uploaded attachment bytes; an attachment's ``id`` is its index + 1.
    attachments: list[bytes]
    #: The content type of each uploaded attachment (same index).
    attachment_types: list[str]

    def __init__(self) -> None:
        self._contact_ids = itertools.count(2219259)
        self._conversation_ids = itertools.count(40)
        self._message_ids = itertools.count(1)
        self.clear()

    def clear(self) -> None:
        """Forget all data and calls; ids keep increasing so stale ids never alias new ones."""
        self.contacts = {}
        self.conversations = {}
        self.messages = {}
        self.calls = []
        self.attachments = []
        self.attachment_types = []
        self._call_counts: Counter[tuple[str, int]] = Counter()
        self._unique: dict[str, dict[str, int]] = {key: {} for key in _UNIQUE_LABELS}
        self._search_text: dict[int, str] = {}
        self._sources: dict[str, int] = {}
        self._conversation_sources: dict[int, str] = {}
        self._conversation_messages: dict[int, list[JSON]] = {}
        self._recent: dict[int, deque[float]] = {}

    # -- queries -------------------------------------------------------------------------

    def contacts_list(self) -> list[JSON]:
        """All contacts, oldest first."""
        return list(self.contacts.values())

    def conversations_of(self, contact_id: int) -> list[JSON]:
        """The conversations of one contact, oldest first."""
        return [c for c in self.conversations.values()
                if c["account_info"]["contact_id"] == contact_id]

    def messages_in(self, conversation_id: int) -> list[JSON]:
        """The messages of one conversation, oldest first (empty if unknown)."""
        return list(self._conversation_messages.get(conversation_id, ()))

    def count_calls(self, method: str | None = None, path_prefix: str | None = None) -> int:
        """How many ``/api/`` calls match the method and the path prefix (None: any)."""
        wanted = None if method is None else method.upper()
        return sum(
            1
            for call in self.calls
            if (wanted is None or call.method == wanted)
            and (path_prefix is None or call.path.startswith(path_prefix))
        )

    def call_summary(self) -> dict[str, dict[str, int]]:
        """Call counts keyed by ``"METHOD path-template"``, then by status."""
        summary: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self._call_counts.items()):
            summary.setdefault(route, {})[str(status)] = count
        return summary

    def search_contacts(self, query: str) -> list[JSON]:
        """Contacts whose name, email, phone number or identifier contain the query."""
        needle = query.lower()
        return [self.contacts[cid] for cid, text in self._search_text.items() if needle in text]

    def duplicate_of(self, fields: JSON, own_id: int | None = None) -> str | None:
        """The first unique attribute in ``fields`` another contact already holds."""
        for attribute, index in self._unique.items():
            value = fields.get(attribute)
            if value is not None:
                holder = index.get(_unique_key(attribute, value))
                if holder is not None and holder != own_id:
                    return attribute
        return None

    def contact_for_source(self, source_id: str) -> JSON | None:
        """The contact a conversation's ``source_id`` was first given for."""
        contact_id = self._sources.get(source_id)
        return None if contact_id is None else self.contacts.get(contact_id)

    def conversation_source(self, conversation_id: int) -> str:
        """The ``contact_inbox.source_id`` of a conversation."""
        return self._conversation_sources[conversation_id]

    def recent_message_count(self, conversation_id: int, now: float) -> int:
        """Messages created in the conversation during the last rate-limit window."""
        recent = self._recent.get(conversation_id)
        if recent is None:
            return 0
        while recent and recent[0] <= now - MESSAGE_LIMIT_WINDOW:
            recent.popleft()
        return len(recent)

    # -- changes -------------------------------------------------------------------------

    def record_call(self, method: str, path: str, template: str, status: int) -> None:
        """Log one ``/api/`` call."""
        self.calls.append(CallRecord(method, path, status))
        self._call_counts[(f"{method} {template}", status)] += 1

    def add_contact(self, fields: JSON, now: float) -> JSON:
        """Store a new contact built from validated fields; returns it (seed shape)."""
        contact: JSON = {
            "additional_attributes": fields.get("additional_attributes") or {},
            "availability_status": "offline",
            "email": fields.get("email"),
            "id": next(self._contact_ids),
            "name": fields.get("name"),
            "phone_number": fields.get("phone_number"),
            "blocked": False,
            "identifier": fields.get("identifier"),
            "thumbnail": fields.get("avatar_url") or "",
            "custom_attributes": fields.get("custom_attributes") or {},
            "created_at": int(now),
            "contact_inboxes": [],
        }
        self.contacts[contact["id"]] = contact
        self._index(contact)
        return contact

    def update_contact(self, contact: JSON, fields: JSON) -> None:
        """Apply validated fields to a stored contact; attribute dicts are merged."""
        self._unindex(contact)
        for key in ("name", "email", "phone_number", "identifier"):
            if key in fields:
                contact[key] = fields[key]
        if "avatar_url" in fields:
            contact["thumbnail"] = fields["avatar_url"] or ""
        for key in _ATTRIBUTE_FIELDS:
            if key in fields:
                contact[key] = {**contact[key], **fields[key]}
        self._index(contact)

    def add_conversation(self, conversation: JSON, contact: JSON, source_id: str) -> None:
        """Store a new conversation of ``contact`` reached through ``source_id``."""
        conversation_id: int = conversation["id"]
        self.conversations[conversation_id] = conversation
        self._conversation_messages[conversation_id] = []
        self._conversation_sources[conversation_id] = source_id
        if source_id not in self._sources:
            self._sources[source_id] = contact["id"]
            contact["contact_inboxes"].append(
                {"source_id": source_id, "inbox": {"id": conversation["inbox_id"]}}
            )

    def refresh_copies(self, conversation: JSON) -> JSON:
        """Refresh the copies of its contact inside a stored conversation and return it."""
        contact = self.contacts[conversation["account_info"]["contact_id"]]
        conversation["meta"]["sender"] = _sender_view(contact)
        conversation["account_info"].update(
            contact_name=contact["name"],
            contact_email=contact["email"],
            contact_phone=contact["phone_number"],
            contact_avatar=contact["thumbnail"],
        )
        return conversation

    def delete_conversation(self, conversation_id: int) -> None:
        """Forget a stored conversation and its messages."""
        del self.conversations[conversation_id]
        for message in self._conversation_messages.pop(conversation_id):
            del self.messages[message["id"]]
        del self._conversation_sources[conversation_id]
        self._recent.pop(conversation_id, None)

    def delete_contact(self, contact_id: int) -> None:
        """Forget a stored contact with its conversations and their messages (as Chatwoot
        does); its unique attributes are free again."""
        for conversation in self.conversations_of(contact_id):
            self.delete_conversation(conversation["id"])
        contact = self.contacts.pop(contact_id)
        self._unindex(contact)
        del self._search_text[contact_id]
        for contact_inbox in contact["contact_inboxes"]:
            del self._sources[contact_inbox["source_id"]]

    def merge_contacts(self, base: JSON, mergee: JSON) -> None:
        """Chatwoot's contact merge: the mergee's conversations, messages and contact inboxes
        move to the base contact and the mergee is deleted; the base keeps its own fields and
        takes the mergee's where its own are blank (attribute dicts merged, base first)."""
        if base is mergee:
            return
        moved = self.conversations_of(mergee["id"])
        for conversation in moved:
            conversation["account_info"]["contact_id"] = base["id"]
        for contact_inbox in mergee["contact_inboxes"]:
            self._sources[contact_inbox["source_id"]] = base["id"]
        base["contact_inboxes"].extend(mergee["contact_inboxes"])
        mergee["contact_inboxes"] = []
        self.delete_contact(mergee["id"])
        fields = {key: _deep_merge(mergee[key], base[key]) if key in _ATTRIBUTE_FIELDS
                  else base[key] or mergee[key] for key in _MERGED_FIELDS}
        self.update_contact(base, fields)
        for conversation in self.conversations_of(base["id"]):
            self.refresh_copies(conversation)
        sender = {**_sender_view(base), "type": "contact"}
        for conversation in moved:
            for message in self._conversation_messages[conversation["id"]]:
                if message["sender"].get("type") == "contact":
                    message["sender"] = dict(sender)

    def add_attachment(self, data: bytes, content_type: str) -> int:
        """Keep an uploaded file; returns its attachment id."""
        self.attachments.append(data)
        self.attachment_types.append(content_type)
        return len(self.attachments)

    def next_message_id(self) -> int:
        """Reserve a message id."""
        return next(self._message_ids)

    def next_conversation_id(self) -> int:
        """Reserve a conversation id."""
        return next(self._conversation_ids)

    def add_message(self, message: JSON, now: float) -> None:
        """Store a new message of an existing conversation."""
        conversation_id: int = message["conversation_id"]
        self.messages[message["id"]] = message
        self._conversation_messages[conversation_id].append(message)
        self._recent.setdefault(conversation_id, deque()).append(now)

    def _index(self, contact: JSON) -> None:
        for attribute, index in self._unique.items():
            if contact[attribute] is not None:
                index[_unique_key(attribute, contact[attribute])] = contact["id"]
        searchable = (contact["name"], contact["email"], contact["phone_number"])
        self._search_text[contact["id"]] = "\n".join(
            value.lower() for value in (*searchable, contact["identifier"]) if value
        )

    def _unindex(self, contact: JSON) -> None:
        for attribute, index in self._unique.items():
            if contact[attribute] is not None:
                index.pop(_unique_key(attribute, contact[attribute]), None)


def _unique_key(attribute: str, value: str) -> str:
    return value.lower() if attribute == "email" else value


def _deep_merge(low: JSON, high: JSON) -> JSON:
    """``low`` updated with ``high``, nested dicts merged alike (Ruby's ``deep_merge``)."""
    merged = dict(low)
    for key, value in high.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def _sender_view(contact: JSON) -> JSON:
    """A contact as it appears in ``meta.sender`` (no ``contact_inboxes``)."""
    return {key: value for key, value in contact.items() if key != "contact_inboxes"}


def _as_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _contact_fields(body: JSON) -> JSON:
    """The contact fields present in ``body``, validated and normalised (blank -> None)."""
    fields: JSON = {}
    for key, label in _STRING_LABELS.items():
        if key not in body:
            continue
        value = body[key]
        if value is not None and not isinstance(value, str):
            raise _invalid(f"{label} is invalid", key)
        fields[key] = value.strip() or None if value is not None else None
    if fields.get("email") is not None and not _EMAIL.fullmatch(fields["email"]):
        raise _invalid("Email is invalid", "email")
    for key in _ATTRIBUTE_FIELDS:
        if key in body:
            fields[key] = _attributes(body, key)
    return fields


def _attributes(body: JSON, key: str) -> JSON:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{key.replace('_', ' ').capitalize()} must be an object", key)
    return value


def _flag(value: Any, key: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _invalid(f"{key.capitalize()} is invalid", key)


def _content(value: Any, *, optional: bool = False) -> str | None:
    """Validated message content; blank is refused, or None when ``optional`` (a message
    with files)."""
    if optional and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    if not isinstance(value, str) or not value.strip():
        raise _invalid("Content can't be blank", "content")
    if len(value) > MAX_CONTENT_LENGTH:
        raise _invalid(
            f"Content is too long (maximum is {MAX_CONTENT_LENGTH} characters)", "content"
        )
    return value


def _base64_file(value: Any) -> tuple[str, str, bytes]:
    """``name``, ``content_type`` and the bytes of a file the page sent as base64."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or \
            not isinstance(value.get("data"), str):
        raise _invalid("Attachments need a name and base64 data", "attachments")
    kind = value.get("content_type")
    try:
        data = base64.b64decode(value["data"], validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Attachment data is not base64", "attachments") from None
    return value["name"], kind if isinstance(kind, str) and kind else \
        "application/octet-stream", data


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _json_body(request: web.Request) -> JSON:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise EmulatorError(400, {"error": f"Malformed JSON body: {exc}"}) from None
    if not isinstance(body, dict):
        raise EmulatorError(400, {"error": "JSON body must be an object"})
    return body


def _error_response(status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers)


def _authority(url: str) -> str | None:
    """The ``host[:port]`` of a URL (without the scheme's default port), None if it has none."""
    try:
        return URL(url).host_port_subcomponent or None
    except ValueError:
        return None


def _admin_refusal(request: web.Request) -> web.Response | None:
    """The answer refusing an admin POST sent from another origin (403: the ``Origin``, else
    the ``Referer``, names another host) or in anything but JSON (415), else None."""
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if claimed is not None:
        origin = _authority(claimed)
        if origin is None or origin != _authority(f"{request.scheme}://{request.host}"):
            log.warning("livedesk_emulator.admin_refused", path=request.path,
                        reason="foreign origin", origin=claimed[:200])
            return _error_response(403, "Requests from another origin are refused")
    if request.content_type != "application/json":
        log.warning("livedesk_emulator.admin_refused", path=request.path, reason="not JSON",
                    content_type=request.content_type[:100])
        return _error_response(415, "Admin endpoints take JSON only (application/json)")
    return None


class Emulator:
    """The emulated Livedesk account with one API inbox; ``app()`` serves it over HTTP."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        inbox_id: int,
        faults: Faults | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.inbox_id = inbox_id
        self.faults = faults if faults is not None else Faults()
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.state = EmulatorState()
        self._credentials = f"{api_key}:{api_secret}".encode()
        self._initial_faults = dataclasses.replace(self.faults)
        self._rng_faults: Faults | None = None
        self._rng = random.Random()
        self._bucket = _Bucket()
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._running_apps = 0

    # -- app -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        """Build the aiohttp app (usable as root app or via ``add_subapp``)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app[EMULATOR] = self
        index = app.router.add_resource("/")
        index.add_route("GET", self._index_page)
        app.middlewares.append(self._middleware(index))
        app.cleanup_ctx.append(self._client_session)
        base = "/api/v2/accounts"
        app.router.add_post(f"{base}/contacts", self._create_contact)
        app.router.add_get(f"{base}/contacts", self._list_contacts)
        app.router.add_get(f"{base}/contacts/{{id:\\d+}}", self._get_contact)
        app.router.add_patch(f"{base}/contacts/{{id:\\d+}}", self._update_contact)
        app.router.add_delete(f"{base}/contacts/{{id:\\d+}}", self._delete_contact)
        app.router.add_post(f"{base}/actions/contact_merge", self._merge_contacts)
        app.router.add_get(f"{base}/contacts/{{id:\\d+}}/conversations",
                           self._contact_conversations)
        app.router.add_post(f"{base}/conversations", self._create_conversation)
        app.router.add_get(f"{base}/conversations/{{id:\\d+}}", self._get_conversation)
        app.router.add_delete(f"{base}/conversations/{{id:\\d+}}", self._delete_conversation)
        app.router.add_post(f"{base}/conversations/{{id:\\d+}}/toggle_status", self._toggle)
        app.router.add_post(f"{base}/conversations/{{id:\\d+}}/messages", self._create_message)
        app.router.add_get(f"{base}/conversations/{{id:\\d+}}/messages", self._list_messages)
        app.router.add_get("/_emulator/state", self._admin_state)
        app.router.add_post("/_emulator/faults", self._admin_faults)
        app.router.add_post("/_emulator/reset", self._admin_reset)
        app.router.add_post("/_emulator/conversations/{id:\\d+}/reply", self._admin_reply)
        app.router.add_post("/_emulator/conversations/{id:\\d+}/template", self._admin_template)
        app.router.add_post("/_emulator/messages/{id:\\d+}/edit", self._admin_edit)
        app.router.add_post("/_emulator/messages/{id:\\d+}/delete", self._admin_delete_message)
        app.router.add_get("/_emulator/files/{id:\\d+}/{name}", self._file, name="file")
        # An agent's actions on the page: the API's handlers, without credentials.
        app.router.add_post("/_emulator/conversations/{id:\\d+}/status", self._toggle)
        app.router.add_post("/_emulator/conversations/{id:\\d+}/delete",
                            self._delete_conversation)
        app.router.add_post("/_emulator/contacts/{id:\\d+}/delete", self._delete_contact)
        app.router.add_post("/_emulator/actions/contact_merge", self._merge_contacts)
        return app

    def _middleware(self, index: web.Resource) -> Middleware:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            prefix = index.canonical[:-1]  # "/" once mounted becomes "<prefix>/"
            path = request.path[len(prefix) :]
            if not path.startswith("/api/"):
                admin = request.method == "POST" and path.startswith("/_emulator/")
                refused = _admin_refusal(request) if admin else None
                if refused is not None:
                    return refused
                try:
                    return await handler(request)
                except EmulatorError as exc:
                    return web.json_response(exc.body, status=exc.status)
            response = await self._api_call(request, handler)
            resource = request.match_info.route.resource
            template = path if resource is None else resource.canonical[len(prefix) :]
            self.state.record_call(request.method, path, template, response.status)
            return response

        return middleware

    async def _api_call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = self.faults
        now = time.time()
        if now < faults.outage_until:
            retry = str(math.ceil(faults.outage_until - now))
            return _error_response(503, "Service Unavailable", {"Retry-After": retry})
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        rng = self._random()
        limited = faults.rate_limit > 0 and not self._bucket.take(
            faults.rate_limit, faults.rate_limit_burst or faults.rate_limit, time.monotonic())
        if limited or (faults.rate_limit_rate > 0 and rng.random() < faults.rate_limit_rate):
            retry = str(math.ceil(faults.retry_after))
            return _error_response(429, "Too Many Requests", {"Retry-After": retry})
        if faults.error_rate > 0 and rng.random() < faults.error_rate:
            status = rng.choice((500, 502, 503))
            return _error_response(status, HTTPStatus(status).phrase)
        if not self._authorized(request.headers.get("Authorization")):
            return _error_response(401, "Invalid Access Token")
        if faults.reject_messages and request.method == "POST" and request.path.endswith(
            "/messages"
        ):
            return web.json_response({"message": "Message could not be processed"}, status=422)
        try:
            return await handler(request)
        except EmulatorError as exc:
            return web.json_response(exc.body, status=exc.status)
        except web.HTTPException as exc:
            error = "Resource could not be found" if exc.status == 404 else exc.reason
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error_response(exc.status, error, allow)

    def _random(self) -> random.Random:
        """The fault RNG, reseeded whenever ``self.faults`` is replaced."""
        if self._rng_faults is not self.faults:
            self._rng_faults = self.faults
            self._rng = random.Random(self.faults.seed)
        return self._rng

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            credentials = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(credentials, self._credentials)

    async def _client_session(self, app: web.Application) -> AsyncIterator[None]:
        """One webhook session shared by all running apps of this emulator."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)
            self._session = aiohttp.ClientSession(timeout=timeout)
        self._running_apps += 1
        try:
            yield
        finally:
            self._running_apps -= 1
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)
            if self._running_apps == 0 and self._session is not None:
                await self._session.close()
                self._session = None

    # -- domain --------------------------------------------------------------------------

    def _check_inbox(self, body: JSON) -> None:
        value = body.get("inbox_id")
        if _blank(value):
            raise _invalid("Inbox can't be blank", "inbox_id")
        if isinstance(value, bool) or str(value).strip() != str(self.inbox_id):
            raise _not_found()

    def _contact(self, contact_id: Any) -> JSON:
        contact = self.state.contacts.get(_as_id(contact_id) or -1)
        if contact is None:
            raise _not_found()
        return contact

    def _conversation(self, conversation_id: int) -> JSON:
        conversation = self.state.conversations.get(conversation_id)
        if conversation is None:
            raise _not_found()
        return conversation

    def _check_unique(self, fields: JSON, own_id: int | None = None) -> None:
        taken = self.state.duplicate_of(fields, own_id)
        if taken is not None:
            raise _invalid(f"{_UNIQUE_LABELS[taken]} has already been taken", taken)

    def _new_conversation(self, contact: JSON, body: JSON, source_id: str, now: float) -> JSON:
        conversation: JSON = {
            "meta": {
                "sender": _sender_view(contact),
                "channel": "Channel::Api",
                "hmac_verified": False,
            },
            "id": self.state.next_conversation_id(),
            "messages": [],
            "account_id": ACCOUNT_ID,
            "uuid": str(uuid.uuid4()),
            "inbox_id": self.inbox_id,
            "additional_attributes": _attributes(body, "additional_attributes"),
            "agent_last_seen_at": 0,
            "assignee_last_seen_at": 0,
            "can_reply": True,
            "contact_last_seen_at": 0,
            "custom_attributes": _attributes(body, "custom_attributes"),
            "labels": [],
            "muted": False,
            "snoozed_until": None,
            "status": "open",
            "priority": None,
            "conversation_category": "chat",
            "chat_mode": "private_chat",
            "is_forum": False,
            "created_at": int(now),
            "updated_at": now,
            "timestamp": int(now),
            "first_reply_created_at": 0,
            "unread_count": 0,
            "last_non_activity_message": None,
            "last_activity_at": int(now),
            "waiting_since": int(now),
            "sla_policy_id": None,
            "ticket_id": None,
            "over_limit": False,
            "content_preview": {"content": None, "message_type": None, "created_at": None},
            "platform": {
                "channel_type": "Channel::Api",
                "inbox_name": INBOX_NAME,
                "inbox_id": self.inbox_id,
            },
            "account_info": {
                "contact_name": contact["name"],
                "contact_email": contact["email"],
                "contact_phone": contact["phone_number"],
                "contact_id": contact["id"],
                "contact_avatar": contact["thumbnail"],
            },
            "assignment": {
                "assignee_id": None,
                "assignee_name": None,
                "assignee_email": None,
                "team_id": None,
                "team_name": None,
            },
        }
        self.state.add_conversation(conversation, contact, source_id)
        return conversation

    def _post_message(
        self,
        conversation: JSON,
        content: str | None,
        *,
        message_type: int,
        private: bool = False,
        content_attributes: JSON | None = None,
        attachments: list[JSON] | None = None,
    ) -> JSON:
        """Store a message, update its conversation and return the message."""
        now = time.time()
        contact = self.state.contacts[conversation["account_info"]["contact_id"]]
        incoming = message_type == INCOMING
        sender: JSON | None = {
            INCOMING: {**_sender_view(contact), "type": "contact"}, OUTGOING: dict(AGENT),
        }.get(message_type)  # a template is sent by an automation: no sender
        message_id = self.state.next_message_id()
        message: JSON = {
            "id": message_id,
            "content": content,
            "inbox_id": self.inbox_id,
            "conversation_id": conversation["id"],
            "message_type": message_type,
            "content_type": "text",
            "content_attributes": content_attributes or {},
            "created_at": int(now),
            "private": private,
            "source_id": None,
            "sender": sender,
            "attachments": [{**a, "message_id": message_id} for a in attachments or ()],
        }
        self.state.add_message(message, now)
        if incoming and conversation["status"] in ("resolved", "snoozed"):
            conversation["status"] = "open"
            conversation["snoozed_until"] = None
        if message_type == OUTGOING and not private and not conversation["first_reply_created_at"]:
            conversation["first_reply_created_at"] = int(now)
        conversation.update(
            updated_at=now,
            timestamp=int(now),
            last_activity_at=int(now),
            last_non_activity_message=message,
            content_preview={
                "content": content,
                "message_type": message["message_type"],
                "created_at": int(now),
            },
        )
        return message

    def _event(self, conversation: JSON, message: JSON,
               event: str = "message_created") -> JSON:
        """The Chatwoot webhook event of a new (or, ``message_updated``, changed) message;
        ``attachments`` only when it has files, as Chatwoot sends them."""
        contact = self.state.contacts[conversation["account_info"]["contact_id"]]
        sender = message["sender"]
        data: JSON = {
            "event": event,
            "id": message["id"],
            "content": message["content"],
            "created_at": _iso(message["created_at"]),
            "message_type": _TYPE_NAMES[message["message_type"]],
            "content_type": "text",
            "content_attributes": message["content_attributes"],
            "source_id": None,
            "private": message["private"],
            "sender": None if sender is None else {
                "id": sender["id"],
                "name": sender["name"],
                "email": sender["email"],
                "type": sender["type"],
            },
            "conversation": {
                "id": conversation["id"],
                "inbox_id": self.inbox_id,
                "status": conversation["status"],
                "channel": "Channel::Api",
                "contact_inbox": {"source_id": self.state.conversation_source(conversation["id"])},
                "meta": {"sender": _sender_view(contact)},
            },
            "account": {"id": ACCOUNT_ID, "name": ACCOUNT_NAME},
            "inbox": {"id": self.inbox_id, "name": INBOX_NAME},
        }
        if message["attachments"]:
            data["attachments"] = [{key: a[key] for key in PUSH_EVENT_KEYS}
                                   for a in message["attachments"]]
        return data

    async def agent_reply(self, conversation_id: int, content: str | None, private: bool = False,
                          *, attachments: list[JSON] | None = None,
                          message_type: int = OUTGOING) -> JSON:
        """Post an agent's outgoing message (or, ``message_type=TEMPLATE``, an automation's
        template message) and its webhook; returns the message. ``attachments`` are made by
        ``attachment`` (the content may then be blank).

        Raises EmulatorError (404 unknown conversation, 422 blank or too long content).
        Returns once the webhook POST has been attempted.
        """
        conversation = self._conversation(conversation_id)
        message = self._post_message(
            conversation,
            _content(content, optional=bool(attachments)),
            message_type=message_type,
            private=private,
            attachments=attachments,
        )
        await self._webhook(conversation, message)
        return message

    async def update_message(self, message_id: int, content: str | None = None, *,
                             delete: bool = False) -> JSON:
        """An agent edits a message (new ``content``) or deletes it (Chatwoot keeps it as
        "This message was deleted", ``content_attributes.deleted``, without its files);
        sends ``message_updated`` and returns the message (404 if unknown)."""
        message = self.state.messages.get(message_id)
        if message is None:
            raise _not_found()
        if delete:
            message.update(content=DELETED_CONTENT, attachments=[],
                           content_attributes={**message["content_attributes"], "deleted": True})
        else:
            message["content"] = _content(content)
        await self._webhook(self._conversation(message["conversation_id"]), message,
                            "message_updated")
        return message

    def attachment(self, request: web.Request, name: str, content_type: str,
                   data: bytes) -> JSON:
        """Keep an uploaded file; returns it as a message's attachment, ``data_url`` the
        absolute URL the emulator serves it at (as Chatwoot's are)."""
        name = name.replace("/", "_") or "file"
        attachment_id = self.state.add_attachment(data, content_type)
        path = request.app.router["file"].url_for(id=str(attachment_id), name=name)
        url = str(request.url.origin().with_path(path.path))
        major = content_type.split("/", 1)[0]
        file_type = major if major in ("image", "audio", "video") else "file"
        return {
            "id": attachment_id, "message_id": None, "file_type": file_type,
            "account_id": ACCOUNT_ID,
            "extension": name.rsplit(".", 1)[-1] if "." in name else None,
            "data_url": url, "thumb_url": url if file_type == "image" else "",
            "file_size": len(data), "width": None, "height": None,
            "name": name, "content_type": content_type,
        }

    async def _webhook(self, conversation: JSON, message: JSON,
                       event: str = "message_created") -> None:
        if self.webhook_url is not None:
            await self._send_webhook(self.webhook_url, self._event(conversation, message, event))

    def _schedule_webhook(self, url: str, event: JSON) -> None:
        """Send the webhook in the background; cleanup awaits it."""
        task = asyncio.create_task(self._send_webhook(url, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_webhook(self, url: str, event: JSON) -> None:
        """POST one event, once; failures are logged, never raised."""
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret:
            timestamp = str(int(time.time()))
            digest = hmac.new(
                self.webhook_secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
            headers["X-Chatwoot-Timestamp"] = timestamp
            headers["X-Chatwoot-Delivery"] = str(uuid.uuid4())
            headers["X-Chatwoot-Signature"] = f"sha256={digest}"
        try:
            if self._session is not None:
                await self._deliver(self._session, url, body, headers)
            else:
                timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    await self._deliver(session, url, body, headers)
        except Exception as exc:  # a webhook failure must never reach the API caller
            log.warning(
                "livedesk_emulator.webhook_failed", url=url, message_id=event["id"], error=repr(exc)
            )

    @staticmethod
    async def _deliver(
        session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> None:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status >= 300:
                log.warning("livedesk_emulator.webhook_rejected", url=url, status=response.status)

    # -- API handlers --------------------------------------------------------------------

    async def _create_contact(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        self._check_inbox(body)
        fields = _contact_fields(body)
        self._check_unique(fields)
        contact = self.state.add_contact(fields, time.time())
        return web.json_response(
            {"payload": {"contact": contact, "contact_inbox": {"inbox": None, "source_id": None}}}
        )

    async def _list_contacts(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        page = _as_id(request.query.get("page", "1")) or 1
        start = (page - 1) * PAGE_SIZE
        if query:
            matches = self.state.search_contacts(query)
            count, contacts = len(matches), matches[start : start + PAGE_SIZE]
        else:
            count = len(self.state.contacts)
            contacts = list(
                itertools.islice(self.state.contacts.values(), start, start + PAGE_SIZE)
            )
        return web.json_response(
            {"meta": {"count": count, "current_page": page}, "payload": contacts}
        )

    async def _get_contact(self, request: web.Request) -> web.Response:
        return web.json_response({"payload": self._contact(request.match_info["id"])})

    async def _update_contact(self, request: web.Request) -> web.Response:
        contact = self._contact(request.match_info["id"])
        fields = _contact_fields(await _json_body(request))
        self._check_unique(fields, contact["id"])
        self.state.update_contact(contact, fields)
        return web.json_response({"payload": contact})

    async def _delete_contact(self, request: web.Request) -> web.Response:
        """Delete a contact with its conversations and their messages (Chatwoot's)."""
        contact = self._contact(request.match_info["id"])
        self.state.delete_contact(contact["id"])
        return web.Response()  # Chatwoot answers ``head :ok``

    async def _merge_contacts(self, request: web.Request) -> web.Response:
        """Merge ``mergee_contact_id`` into ``base_contact_id``; answers the base contact."""
        body = await _json_body(request)
        base = self._contact(body.get("base_contact_id"))
        mergee = self._contact(body.get("mergee_contact_id"))
        self.state.merge_contacts(base, mergee)
        return web.json_response(base)

    async def _create_conversation(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        self._check_inbox(body)
        contact_id, source_id = body.get("contact_id"), body.get("source_id")
        if _blank(contact_id) and _blank(source_id):
            raise _invalid("Contact can't be blank", "contact_id")
        source = None if _blank(source_id) else str(source_id).strip()
        if not _blank(contact_id):
            contact = self.state.contacts.get(_as_id(contact_id) or -1)
        else:
            contact = self.state.contact_for_source(str(source))
        if contact is None:
            raise _not_found()
        conversation = self._new_conversation(
            contact, body, source or str(uuid.uuid4()), time.time()
        )
        return web.json_response(conversation)

    async def _get_conversation(self, request: web.Request) -> web.Response:
        conversation = self._conversation(int(request.match_info["id"]))
        return web.json_response(self.state.refresh_copies(conversation))

    async def _delete_conversation(self, request: web.Request) -> web.Response:
        """Delete a conversation and its messages."""
        conversation = self._conversation(int(request.match_info["id"]))
        self.state.delete_conversation(conversation["id"])
        return web.Response()  # Chatwoot answers ``head :ok``

    async def _toggle(self, request: web.Request) -> web.Response:
        conversation = self._conversation(int(request.match_info["id"]))
        status = (await _json_body(request)).get("status")
        if status not in STATUSES:
            raise _invalid("Status is not included in the list", "status")
        conversation["status"] = status
        if status != "snoozed":
            conversation["snoozed_until"] = None
        payload = {
            "success": True,
            "conversation_id": conversation["id"],
            "current_status": status,
            "snoozed_until": conversation["snoozed_until"],
        }
        return web.json_response({"meta": {}, "payload": payload})

    async def _create_message(self, request: web.Request) -> web.Response:
        conversation = self._conversation(int(request.match_info["id"]))
        attachments: list[JSON] = []
        if request.content_type == "multipart/form-data":
            body, attachments = await self._multipart_message(request)
        else:
            body = await _json_body(request)
        content = _content(body.get("content"), optional=bool(attachments))
        message_type = body.get("message_type", "outgoing")
        if isinstance(message_type, bool) or message_type not in _MESSAGE_TYPES:
            raise _invalid("Message type is not included in the list", "message_type")
        private = _flag(body.get("private"), "private")
        content_attributes = _attributes(body, "content_attributes")
        now = time.time()
        if self.state.recent_message_count(conversation["id"], now) >= MESSAGE_LIMIT:
            raise EmulatorError(422, {"message": "Too many messages"})
        message = self._post_message(
            conversation,
            content,
            message_type=_MESSAGE_TYPES[message_type],
            private=private,
            content_attributes=content_attributes,
            attachments=attachments,
        )
        if self.webhook_url is not None:
            self._schedule_webhook(self.webhook_url, self._event(conversation, message))
        return web.json_response(message)

    async def _multipart_message(self, request: web.Request) -> tuple[JSON, list[JSON]]:
        """A message posted as ``multipart/form-data`` with ``attachments[]`` files (Chatwoot)."""
        body: JSON = {}
        attachments: list[JSON] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise EmulatorError(400, {"error": "Malformed multipart body"})
            data = await part.read(decode=True)
            if part.name == "attachments[]":
                if len(attachments) == MAX_ATTACHMENTS:
                    raise _invalid(f"At most {MAX_ATTACHMENTS} attachments", "attachments")
                kind = part.headers.get("Content-Type", "application/octet-stream")
                attachments.append(self.attachment(request, part.filename or "file", kind,
                                                   bytes(data)))
            elif part.name.startswith("content_attributes[") and part.name.endswith("]"):
                value = data.decode()
                body.setdefault("content_attributes", {})[part.name[19:-1]] = (
                    int(value) if value.isdigit() else value)
            else:
                text = data.decode()
                body[part.name] = {"true": True, "false": False}.get(text, text)
        return body, attachments

    async def _contact_conversations(self, request: web.Request) -> web.Response:
        contact_id = self._contact(request.match_info["id"])["id"]
        return web.json_response({"payload": self.state.conversations_of(contact_id)})

    async def _list_messages(self, request: web.Request) -> web.Response:
        conversation = self._conversation(int(request.match_info["id"]))
        return web.json_response({"payload": self.state.messages_in(conversation["id"])})

    # -- admin handlers ------------------------------------------------------------------

    async def _admin_state(self, request: web.Request) -> web.Response:
        state = self.state
        return web.json_response(
            {
                "contacts": state.contacts_list(),
                "conversations": list(state.conversations.values()),
                "messages": list(state.messages.values()),
                "calls": state.call_summary(),
                "faults": dataclasses.asdict(self.faults),
            }
        )

    async def _admin_faults(self, request: web.Request) -> web.Response:
        """Merge the given fault fields into the current faults (``outage_seconds``: from now)."""
        body = await _json_body(request)
        unknown = sorted(set(body) - _FAULT_FIELDS - {"outage_seconds"})
        if unknown:
            raise EmulatorError(400, {"error": f"Unknown fault field(s): {', '.join(unknown)}"})
        changes: JSON = {}
        for name, value in body.items():
            if name == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise EmulatorError(400, {"error": "seed must be an integer or null"})
                changes[name] = value
                continue
            if name == "reject_messages":
                if not isinstance(value, bool):
                    raise EmulatorError(400, {"error": "reject_messages must be true or false"})
                changes[name] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise EmulatorError(400, {"error": f"{name} must be a number >= 0"})
            if name in _RATE_FIELDS and value > 1:
                raise EmulatorError(400, {"error": f"{name} must be between 0 and 1"})
            if name == "outage_seconds":
                changes["outage_until"] = time.time() + value
            else:
                changes[name] = float(value)
        self.faults = dataclasses.replace(self.faults, **changes)
        return web.json_response({"faults": dataclasses.asdict(self.faults)})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        """Clear all data and calls and restore the faults given at start-up."""
        self.state.clear()
        self.faults = dataclasses.replace(self._initial_faults)
        return web.json_response({"ok": True})

    async def _admin_reply(self, request: web.Request) -> web.Response:
        """An agent's reply: ``content``, ``private`` and ``attachments`` (each ``name``,
        ``content_type`` and base64 ``data``, as the page sends files)."""
        conversation_id = int(request.match_info["id"])
        self._conversation(conversation_id)
        body = await _json_body(request)
        files = body.get("attachments") or []
        if not isinstance(files, list) or len(files) > MAX_ATTACHMENTS:
            raise _invalid(f"Attachments must be a list of at most {MAX_ATTACHMENTS}",
                           "attachments")
        attachments = [self.attachment(request, *_base64_file(f)) for f in files]
        message = await self.agent_reply(
            conversation_id, body.get("content"), _flag(body.get("private"), "private"),
            attachments=attachments,
        )
        return web.json_response(message)

    async def _admin_template(self, request: web.Request) -> web.Response:
        """A template message (out-of-office, CSAT) with ``content``, as automations send."""
        body = await _json_body(request)
        message = await self.agent_reply(int(request.match_info["id"]), body.get("content"),
                                         message_type=TEMPLATE)
        return web.json_response(message)

    async def _admin_edit(self, request: web.Request) -> web.Response:
        """An agent edits a message's ``content`` (``message_updated``)."""
        body = await _json_body(request)
        message = await self.update_message(int(request.match_info["id"]), body.get("content"))
        return web.json_response(message)

    async def _admin_delete_message(self, request: web.Request) -> web.Response:
        """An agent deletes a message (``message_updated``, ``deleted: true``)."""
        return web.json_response(
            await self.update_message(int(request.match_info["id"]), delete=True))

    async def _file(self, request: web.Request) -> web.Response:
        """An uploaded file at its ``data_url`` (unauthenticated, like a signed blob URL)."""
        index = int(request.match_info["id"]) - 1
        if not 0 <= index < len(self.state.attachments):
            raise _not_found()
        return web.Response(body=self.state.attachments[index],
                            content_type=self.state.attachment_types[index])

    # -- HTML page -----------------------------------------------------------------------

    async def _index_page(self, request: web.Request) -> web.Response:
        state = self.state
        shown = list(itertools.islice(reversed(state.conversations.values()),
                                      HTML_CONVERSATIONS))
        contacts = list(itertools.islice(reversed(state.contacts.values()), HTML_CONTACTS))
        summary = (
            f"{len(state.conversations)} conversations, {len(state.contacts)} contacts, "
            f"{len(state.messages)} messages"
        )
        if len(state.conversations) > len(shown) or len(state.contacts) > len(contacts):
            summary += (f"; showing the newest {len(shown)} conversations and "
                        f"{len(contacts)} contacts")
        page = _PAGE.format(
            summary=html.escape(summary),
            sections="\n".join(self._conversation_html(c) for c in shown)
            or "<p>No conversations yet.</p>",
            contacts="\n".join(_contact_html(c) for c in contacts) or "<li>No contacts yet.</li>",
            script=_SCRIPT,
        )
        return web.Response(text=page, content_type="text/html")

    def _conversation_html(self, conversation: JSON) -> str:
        cid = conversation["id"]
        contact = self.state.contacts[conversation["account_info"]["contact_id"]]
        messages = self.state.messages_in(cid)[-HTML_MESSAGES:]
        items = "\n".join(_message_html(m) for m in messages)
        resolved = conversation["status"] == "resolved"
        return _SECTION.format(
            id=cid,
            status=html.escape(conversation["status"]),
            who=html.escape(_who(contact)),
            contact_id=contact["id"],
            messages=f'<ol class="messages">\n{items}\n</ol>' if items else "<p>No messages.</p>",
            new_status="open" if resolved else "resolved",
            toggle="Reopen" if resolved else "Resolve",
        )


def _who(contact: JSON) -> str:
    who: str = contact["name"] or "(no name)"
    return f"{who} <{contact['email']}>" if contact["email"] else who


def _contact_html(contact: JSON) -> str:
    details = ", ".join(f"{label} {contact[key]}" for key, label in (
        ("phone_number", "phone"), ("identifier", "identifier")) if contact[key])
    return _CONTACT.format(id=contact["id"], who=html.escape(_who(contact)),
                           details=html.escape(f" ({details})" if details else ""))


def _message_html(message: JSON) -> str:
    kind = _TYPE_NAMES[message["message_type"]]
    label = f"{kind} (private note)" if message["private"] else kind
    when = datetime.fromtimestamp(message["created_at"], UTC)
    files = "".join(f' <a class="file" href="{html.escape(a["data_url"])}">'
                    f'{html.escape(a["name"])}</a>' for a in message["attachments"])
    actions = ""
    if kind != "incoming" and not message["content_attributes"].get("deleted"):
        actions = _MESSAGE_ACTIONS.format(id=message["id"])
    return (
        f'<li class="{kind}"><span class="kind">{label}</span> '
        f'<time datetime="{_iso(message["created_at"])}">'
        f"{when.strftime('%Y-%m-%d %H:%M:%S UTC')}</time> "
        f'<span class="content">{html.escape(message["content"] or "")}</span>{files}'
        f"{actions}</li>"
    )


EMULATOR: web.AppKey[Emulator] = web.AppKey("livedesk_emulator", Emulator)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Livedesk emulator</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f6; }}
.banner {{ margin: 0; padding: .75rem 1rem; background: #fff3cd;
  border-bottom: 1px solid #d4b106; }}
#status {{ position: sticky; top: 0; margin: 0; padding: .25rem 1rem; background: #e8f0fe; }}
#status:empty {{ display: none; }}
main {{ max-width: 60rem; margin: 0 auto; padding: 1rem; }}
section {{ background: #fff; border: 1px solid #ccc; border-radius: 4px; margin: 1rem 0;
  padding: .5rem 1rem; }}
h2 {{ font-size: 1.1rem; }}
.messages {{ list-style: none; padding: 0; }}
.messages li {{ padding: .25rem 0; border-top: 1px solid #eee; }}
.kind {{ font-weight: bold; }}
.outgoing .kind {{ color: #0b5394; }}
.content {{ white-space: pre-wrap; }}
time {{ color: #555; font-size: .9em; }}
textarea {{ width: 100%; box-sizing: border-box; }}
.actions, .contacts li {{ display: flex; flex-wrap: wrap; gap: .5rem; align-items: center;
  margin: .5rem 0; }}
</style>
</head>
<body>
<p class="banner" role="note"><strong>Livedesk emulator — nothing here reaches the real \
Livedesk</strong></p>
<p id="status" role="status" aria-live="polite"></p>
<main>
<h1>Conversations</h1>
<p>{summary}. Machine-readable: <a href="_emulator/state">_emulator/state</a>.</p>
{sections}
<h1>Contacts</h1>
<ul class="contacts">
{contacts}
</ul>
</main>
<script>
{script}
</script>
</body>
</html>
"""

_SECTION = """<section aria-labelledby="conversation-{id}">
<h2 id="conversation-{id}">Conversation {id} ({status})</h2>
<p>Contact {contact_id}: {who}</p>
{messages}
<form method="post" action="_emulator/conversations/{id}/reply"
 data-label="Reply to conversation {id}">
<label for="reply-{id}">Reply as agent</label>
<textarea id="reply-{id}" name="content" rows="2"></textarea>
<label>Attach files <input type="file" name="attachments" multiple></label>
<label><input type="checkbox" name="private" value="true"> Private note</label>
<button type="submit">Send reply</button>
</form>
<div class="actions">
<form method="post" action="_emulator/conversations/{id}/template"
 data-label="Template message in conversation {id}">
<input name="content" value="We are away right now and will reply soon." size="40" required>
<button type="submit">Send template message</button>
</form>
<form method="post" action="_emulator/conversations/{id}/status"
 data-label="{toggle} conversation {id}">
<input type="hidden" name="status" value="{new_status}">
<button type="submit">{toggle}</button>
</form>
<form method="post" action="_emulator/conversations/{id}/delete"
 data-label="Delete conversation {id}" data-confirm="Delete conversation {id} and its messages?">
<button type="submit">Delete conversation</button>
</form>
</div>
</section>"""

_MESSAGE_ACTIONS = """<span class="actions">
<form method="post" action="_emulator/messages/{id}/edit" data-label="Edit message {id}">
<input name="content" aria-label="New text of message {id}" required>
<button type="submit">Edit</button>
</form>
<form method="post" action="_emulator/messages/{id}/delete" data-label="Delete message {id}"
 data-confirm="Delete message {id}?">
<button type="submit">Delete</button>
</form>
</span>"""

_CONTACT = """<li id="contact-{id}"><span>Contact {id}: {who}{details}</span>
<form method="post" action="_emulator/contacts/{id}/delete" data-label="Delete contact {id}"
 data-confirm="Delete contact {id} with its conversations and their messages?">
<button type="submit">Delete contact</button>
</form>
<form method="post" action="_emulator/actions/contact_merge" data-label="Merge contact {id}">
<input type="hidden" name="mergee_contact_id" value="{id}">
<label>Merge into contact <input name="base_contact_id" inputmode="numeric" pattern="[0-9]+"
 size="9" required></label>
<button type="submit">Merge</button>
</form>
</li>"""

# Every form posts its fields as JSON (the admin endpoints take nothing else; files as
# base64), then shows the answer and the page as it is now.
_SCRIPT = """const base64 = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result.split(",", 2)[1]);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(file);
});
document.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
  const status = document.getElementById("status");
  status.textContent = `${form.dataset.label}…`;
  try {
    const body = {};
    for (const field of form.elements) {
      if (!field.name) continue;
      if (field.type === "file") {
        body[field.name] = await Promise.all([...field.files].map(async (file) => (
          {name: file.name, content_type: file.type, data: await base64(file)})));
      } else {
        body[field.name] = field.type === "checkbox" ? field.checked : field.value;
      }
    }
    const response = await fetch(form.action, {method: "POST", body: JSON.stringify(body),
                                                headers: {"Content-Type": "application/json"}});
    const text = await response.text();
    if (!response.ok) {
      let why = text;
      try { const answer = JSON.parse(text); why = answer.message || answer.error || text; }
      catch {}
      status.textContent = `${form.dataset.label}: failed (${response.status}): ${why}`;
      return;
    }
    const now = await (await fetch(location.href)).text();
    const main = new DOMParser().parseFromString(now, "text/html").querySelector("main");
    document.querySelector("main").replaceWith(main);
    status.textContent = `${form.dataset.label}: done.`;
  } catch (error) {
    status.textContent = `${form.dataset.label}: failed: ${error}`;
  }
});"""
