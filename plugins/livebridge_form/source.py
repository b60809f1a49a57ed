"""The web-form source: ``GET {path}`` serves a contact form, ``POST {path}`` takes it.

A post goes through, in order: the origin check (403 for a cross-site post from an origin
not allowed), the per-IP rate limit (429), the body cap (413), parsing (urlencoded,
multipart or JSON; 400/415), the honeypot (success answered, nothing stored), the empty
check (400), field validation (422 naming each field) and ``bridge.accept``. Browsers get a
303 to the thank-you page, or the form again with the problems and what they typed, in their
language; ``Accept: application/json`` gets JSON.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import ipaddress
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from aiohttp import web

from livebridge import (
    AcceptResult,
    Attachment,
    BodyError,
    Bridge,
    FormPart,
    InboundMessage,
    OutboundReply,
    Overloaded,
    ReplyNotSupported,
    Sender,
    Source,
    SourceSettings,
    StoreUnavailable,
    normalize_phone,
    read_body,
    read_multipart,
    text_codec,
    valid_email,
)
from livebridge_form.page import STYLE_HASH, FieldError, form_page, thanks_page
from livebridge_form.ratelimit import SlidingWindowLimiter, client_key
from livebridge_form.settings import FIELD_KEYS, FormSettings, origin_of
from livebridge_form.texts import LANGUAGES, Language, Texts, negotiate

__all__ = ["FormSource", "normalize_phone", "valid_email"]

_MAX_FIELDS = 100
_MAX_FILES = 10
_MAX_NAME = 200
_MAX_KEY = 255
_IDEMPOTENCY_FIELD = "_idempotency_key"
_NOT_UTF8 = "form is not valid UTF-8"
#: A ``%`` not followed by two hex digits: no browser sends one.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_WHAT = {"name": "a name", "email": "an email address", "phone": "a phone number",
         "message": "a message"}
#: The JSON answer's reason for each field error (browsers get the ``Texts`` message).
_REASONS = {
    "error_email": "not a valid email address",
    "error_phone": "not a valid phone number (use the international format, e.g. +44 20 7946 0000)",
    "error_name_too_long": f"too long (at most {_MAX_NAME} characters)",
}
#: What a browser is told (a ``Texts`` key) when its post is refused, not over a field.
_PROBLEMS = {403: "refused_origin", 413: "refused_size", 429: "refused_rate",
             503: "refused_busy"}
_CORS_ALLOW = {
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Content-Type, Accept, Idempotency-Key",
    "Access-Control-Max-Age": "600",
}


class _Refused(Exception):
    """A refusal: ``reason`` and ``fields`` (posted name → reason) for the log and JSON;
    ``invalid`` (field key → error) for the page."""

    def __init__(self, status: int, reason: str, fields: dict[str, str] | None = None, *,
                 invalid: dict[str, FieldError] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.fields = fields
        self.invalid = invalid or {}


@dataclass
class _Posted:
    values: dict[str, list[str]] = field(default_factory=dict)
    files: list[Attachment] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        if sum(map(len, self.values.values())) >= _MAX_FIELDS:
            raise _Refused(413, f"too many fields (at most {_MAX_FIELDS})")
        self.values.setdefault(_text(name), []).append(_text(value))

    def first(self, name: str) -> str:
        return next((v.strip() for v in self.values.get(name, []) if v.strip()), "")


def _text(value: str) -> str:
    """``value``, refused when it cannot be stored: an unpaired surrogate (from a JSON
    ``\\ud800`` escape, a ``utf-7`` part, or header bytes that are not UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(400, _NOT_UTF8) from None
    return value


def _decode(data: bytes, charset: str) -> str:
    """``data`` decoded with the charset its sender named (a 400 if not a known text charset,
    or if the data is not valid in it)."""
    codec = text_codec(charset)
    if codec is None:  # unknown, not a text encoding ("base64"), or not linear ("punycode")
        raise _Refused(400, "unknown charset")
    try:
        return data.decode(codec)
    except ValueError:  # UnicodeDecodeError, and the codecs' own UnicodeErrors
        raise _Refused(400, _invalid_in(charset)) from None


def _invalid_in(charset: str) -> str:
    """Why text did not decode in ``charset`` (a known one)."""
    utf8 = codecs.lookup(charset).name == "utf-8"
    return _NOT_UTF8 if utf8 else "form is not valid in its charset"


def _urlencoded(body: bytes, charset: str) -> _Posted:
    """An ``application/x-www-form-urlencoded`` body; percent-escapes must be well formed
    and decode in ``charset`` (no silent U+FFFD)."""
    text = _decode(body, charset)
    if _BAD_ESCAPE.search(text):
        raise _Refused(400, "malformed form (bad percent-escape)")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS,
                          encoding=charset, errors="strict")
    except UnicodeDecodeError:
        raise _Refused(400, _invalid_in(charset)) from None
    except ValueError:
        raise _Refused(413, f"too many fields (at most {_MAX_FIELDS})") from None
    posted = _Posted()
    for name, value in pairs:
        posted.add(name, value)
    return posted


def _json(body: bytes, charset: str | None) -> _Posted:
    """A JSON object of fields: each value text, a number, or a list of them. The body is
    read as JSON reads it (UTF-8, or UTF-16/32 by its first bytes); a declared ``charset``
    must still be a known text charset."""
    if charset is not None and text_codec(charset) is None:
        raise _Refused(400, "unknown charset")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise _Refused(400, "malformed JSON") from None
    if not isinstance(data, dict):
        raise _Refused(400, "expected a JSON object of fields")
    posted = _Posted()
    bad: dict[str, str] = {}
    for name, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str | int | float) and not isinstance(item, bool):
                posted.add(name, str(item))
            elif item is not None:
                if len(bad) >= _MAX_FIELDS:  # each is named in the answer and the log
                    raise _Refused(413, f"too many fields (at most {_MAX_FIELDS})")
                bad[_text(name)] = "must be text"
    if bad:
        raise _Refused(422, "invalid fields", bad)
    return posted


def _multipart(parts: list[FormPart]) -> _Posted:
    """The fields and files of a ``multipart/form-data`` body (read within the caps by
    ``read_multipart``); text parts are decoded with their charset (UTF-8 by default)."""
    posted = _Posted()
    for part in parts:
        if not part.name:
            raise _Refused(400, "malformed multipart body")
        if part.filename is None:
            posted.add(part.name, _decode(part.data, part.charset or "utf-8"))
            continue
        if not part.filename and not part.data:
            continue  # a file input left empty
        if len(posted.files) >= _MAX_FILES:
            raise _Refused(413, f"too many files (at most {_MAX_FILES})")
        posted.files.append(Attachment(
            name=_text(part.filename) or "file", size=len(part.data), data=part.data,
            content_type=_text(part.content_type or "application/octet-stream")))
    return posted


class FormSource(Source):
    """A web contact form (``type: form``)."""

    type_name = "form"
    Settings = FormSettings
    settings: FormSettings

    def __init__(self, settings: SourceSettings, bridge: Bridge) -> None:
        assert isinstance(settings, FormSettings)
        super().__init__(settings, bridge)
        self.limiter = SlidingWindowLimiter(settings.rate_limit, settings.rate_window)
        self._names = {key: settings.fields.posted(key) for key in FIELD_KEYS}
        self._texts = {language: settings.texts_for(language) for language in LANGUAGES}

    def routes(self) -> list[web.RouteDef]:
        path = self.settings.path
        return [
            web.get(path, self.form),
            web.post(path, self.submit),
            web.options(path, self.preflight),
            web.get(f"{path}/thanks", self.thanks),
        ]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "conversation": self.settings.conversation}

    # --- pages ----------------------------------------------------------------------------

    async def form(self, request: web.Request) -> web.Response:
        """``GET {path}``: the contact form."""
        language, texts = self._language(request)
        return self._page(form_page(self.settings, texts, language, secrets.token_hex(16)),
                          language)

    async def thanks(self, request: web.Request) -> web.Response:
        """``GET {path}/thanks``: the built-in thank-you page."""
        language, texts = self._language(request)
        return self._page(thanks_page(self.settings, texts, language), language)

    def _language(self, request: web.Request) -> tuple[Language, Texts]:
        """The pages' language (``language:``, or the browser's ``Accept-Language``)."""
        setting = self.settings.language
        language = (negotiate(request.headers.get("Accept-Language")) if setting == "auto"
                    else setting)
        return language, self._texts[language]

    def _page(self, html: str, language: Language, status: int = 200,
              headers: dict[str, str] | None = None) -> web.Response:
        s = self.settings
        headers = {**(headers or {}), "Content-Language": language}
        if s.language == "auto":
            headers["Vary"] = ", ".join(filter(None, [headers.get("Vary"), "Accept-Language"]))
        thanks_origin = origin_of(s.thanks_url)
        targets = " ".join(["'self'", *([thanks_origin] if thanks_origin else [])])
        frames = " ".join(["'self'", *s.allowed_origins])
        csp = (f"default-src 'none'; style-src '{STYLE_HASH}'; base-uri 'none'; "
               f"form-action {targets}; frame-ancestors {frames}")
        return web.Response(status=status, text=html, content_type="text/html", headers={
            "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin", "Cache-Control": "no-store",
            **headers,
        })

    # --- CORS -----------------------------------------------------------------------------

    def _origin(self, request: web.Request) -> str | None:
        """Who is posting: the ``Origin`` header, else the origin of the ``Referer``."""
        if "Origin" in request.headers:
            return request.headers["Origin"]
        referer = request.headers.get("Referer")
        return origin_of(referer) if referer else None

    def _allowed(self, origin: str, request: web.Request) -> bool:
        """An allowed origin, or the form's own (the request's ``Host``)."""
        normal = origin_of(origin) if origin.isascii() else None  # browsers send ASCII
        if normal is None:
            return False
        if normal in self.settings.allowed_origins:
            return True
        hosts = {request.headers.get("Host", "")}
        if self.settings.trust_forwarded_for:
            hosts.add(request.headers.get("X-Forwarded-Host", "").split(",")[0].strip())
        return any(host and origin_of(f"{urlsplit(normal).scheme}://{host.lower()}") == normal
                   for host in hosts)

    async def preflight(self, request: web.Request) -> web.Response:
        """``OPTIONS {path}``: the CORS preflight of a script post from an allowed origin."""
        origin = request.headers.get("Origin")
        if not origin or not self._allowed(origin, request):
            return self._refuse(request, _Refused(403, "origin not allowed"), html=False,
                                headers={"Vary": "Origin"},
                                detail={"origin": (origin or "")[:200]})
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Vary": "Origin", **_CORS_ALLOW})

    # --- submissions ----------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        """``POST {path}``: one submission becomes one incoming message."""
        html = not _wants_json(request)
        headers = {"Vary": "Origin"}
        origin = self._origin(request)
        if origin is not None:
            if not self._allowed(origin, request):
                return self._refuse(request, _Refused(403, "origin not allowed"), html=html,
                                    headers=headers, detail={"origin": origin[:200]})
            headers["Access-Control-Allow-Origin"] = origin
        wait = self.limiter.hit(client_key(self._client_ip(request)))
        if wait is not None:
            return self._refuse(request, _Refused(429, "too many submissions, try again later"),
                                html=html, headers={**headers, "Retry-After": str(int(wait))})
        posted = None
        try:
            posted = await self._read(request)
            if self._honeypot_filled(posted):
                self.bridge.metrics.dropped.labels(source=self.name, reason="honeypot").inc()
                self.log.info("honeypot filled: answered success, stored nothing")
                return self._success(AcceptResult.ACCEPTED, html, headers)
            message = self._message(request, posted)
        except _Refused as exc:
            return self._refuse(request, exc, html=html, headers=headers, posted=posted)
        try:
            result = await self.bridge.accept(message, self)
        except (Overloaded, StoreUnavailable) as exc:
            return self._refuse(request, _Refused(503, "busy, try again later"), html=html,
                                headers={**headers, "Retry-After": str(exc.retry_after)},
                                posted=posted)
        self.log.info("form submission", event_id=message.event_id, result=result.value,
                      attachments=len(message.attachments))
        return self._success(result, html, headers)

    def _success(self, result: AcceptResult, html: bool, headers: dict[str, str]
                 ) -> web.Response:
        if html:
            return web.Response(status=303, headers={**headers,
                                                     "Location": self.settings.thanks_url})
        status = "duplicate" if result is AcceptResult.DUPLICATE else "accepted"
        return web.json_response({"ok": True, "status": status}, headers=headers)

    def _refuse(self, request: web.Request, refused: _Refused, *, html: bool,
                headers: dict[str, str] | None = None, detail: dict[str, Any] | None = None,
                posted: _Posted | None = None) -> web.Response:
        """``reject`` (logged, counted, JSON); browsers get the form again, in their
        language, with the problems and the values they posted (if it was read)."""
        fields = refused.fields
        detail = {**(detail or {}), **({"fields": fields} if fields else {})}
        response = self.reject(request, refused.status, refused.reason, detail=detail,
                               headers=headers)
        if not html:
            return response
        problem = _PROBLEMS.get(refused.status, "refused_unreadable")
        values = {key: posted.first(name) for key, name in self._names.items()} if posted else {}
        language, texts = self._language(request)
        page = form_page(self.settings, texts, language, secrets.token_hex(16), values=values,
                         errors=refused.invalid, problem=None if refused.invalid else problem)
        return self._page(page, language, refused.status, headers)

    def _client_ip(self, request: web.Request) -> str:
        if self.settings.trust_forwarded_for:
            hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
            last = hops[-1].strip()  # the address our own proxy saw; earlier ones are claims
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass
        return request.remote or "unknown"

    # --- parsing --------------------------------------------------------------------------

    async def _read(self, request: web.Request) -> _Posted:
        ctype = request.content_type
        s = self.settings
        limit = s.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, f"body too large (at most {limit} bytes)")
        try:
            if ctype == "multipart/form-data":
                return _multipart(await read_multipart(
                    request, limit, max_file=s.max_file_bytes, max_files=_MAX_FIELDS))
            body = await read_body(request, limit)
        except BodyError as exc:
            if exc.status == 400:  # the core's reason names aiohttp's exception: not a label
                raise _Refused(400, "malformed multipart body") from None
            raise _Refused(exc.status, exc.reason) from None
        if not body.strip():
            raise _Refused(400, "empty form")
        if ctype == "application/x-www-form-urlencoded":
            return _urlencoded(body, request.charset or "utf-8")
        if ctype == "application/json":
            return _json(body, request.charset)
        raise _Refused(415, "unsupported content type (use a form post or JSON)")

    # --- validation -----------------------------------------------------------------------

    def _honeypot_filled(self, posted: _Posted) -> bool:
        trap = self.settings.honeypot
        return bool(trap and posted.first(trap))

    def _message(self, request: web.Request, posted: _Posted) -> InboundMessage:
        s = self.settings
        names = self._names
        value = {key: posted.first(name) for key, name in names.items()}
        extras = {k: [v for v in vs if v.strip()] for k, vs in posted.values.items()
                  if k not in names.values() and not k.startswith("_") and k != s.honeypot}
        extras = {k: vs for k, vs in extras.items() if vs}
        errors: dict[str, FieldError] = {}
        email, phone = value["email"], None
        if email and not valid_email(email):
            errors["email"] = FieldError("error_email")
        if value["phone"]:
            phone = normalize_phone(value["phone"])
            if phone is None:
                errors["phone"] = FieldError("error_phone")
        if len(value["name"]) > _MAX_NAME:
            errors["name"] = FieldError("error_name_too_long")
        for group in s.required_groups:
            if not any(value[key] for key in group):
                text = f"error_required_{group[0]}" if len(group) == 1 else "error_one_of"
                for key in group:
                    errors.setdefault(key, FieldError(text, group))
        if not any(value.values()) and not extras and not posted.files:
            raise _Refused(400, "empty form", invalid=errors)
        if errors:
            raise _Refused(422, "invalid fields",
                           {names[key]: _reason(error) for key, error in errors.items()},
                           invalid=errors)
        sender_id = email.lower() if email else phone
        assert sender_id  # settings guarantee email or phone is required
        text = "\n\n".join(p for p in [value["message"], _render(extras)] if p)
        event_id = self._event_id(request, posted, sender_id, text)
        referer = _page(request.headers.get("Referer"))
        return InboundMessage(
            source=self.name, event_id=event_id,
            thread_key=sender_id if s.conversation == "per_customer" else event_id,
            sender=Sender(external_id=sender_id, name=value["name"] or None,
                          email=email or None, phone=phone),
            text=text, attachments=posted.files,
            metadata={"form": self.name, **({"page": referer} if referer else {})},
            reply_context={k: v for k, v in (("email", email), ("name", value["name"])) if v},
        )

    def _event_id(self, request: web.Request, posted: _Posted, sender_id: str, text: str
                  ) -> str:
        """``Idempotency-Key`` (or the page's hidden key) scoped to the sender and content,
        so a double submit is stored once and one customer's key never hides another's."""
        key = request.headers.get("Idempotency-Key") or posted.first(_IDEMPOTENCY_FIELD)
        if not key:
            return secrets.token_hex(16)
        if len(key) > _MAX_KEY or not key.isprintable():
            raise _Refused(400, f"bad Idempotency-Key (printable, at most {_MAX_KEY} characters)")
        digest = hashlib.sha256()
        for part in (sender_id, key, text, *(f"{a.name}:{a.size}" for a in posted.files)):
            digest.update(part.encode() + b"\x1f")
        return "idem-" + base64.b32encode(digest.digest()[:20]).decode().lower()

    # --- replies --------------------------------------------------------------------------

    async def send_reply(self, reply: OutboundReply) -> None:
        """Email an agent's reply to the customer (needs the ``smtp:`` section)."""
        mailer = self.bridge.mailer
        if mailer is None:
            raise ReplyNotSupported(f"source {self.name!r}: no smtp: section, so replies to "
                                    "web-form customers cannot be emailed")
        to = reply.reply_context.get("email")
        if not to:
            raise ReplyNotSupported("the customer left no email address")
        name = " ".join(str(reply.reply_context.get("name") or "").split())
        prepared = await self.bridge.reply_files(reply)
        await mailer.send(to=str(to), to_name=name,
                          subject=f"Re: your message to {self.settings.title}",
                          text=prepared.text, from_name=reply.agent_name,
                          attachments=prepared.files)


def _wants_json(request: web.Request) -> bool:
    return ("application/json" in request.headers.get("Accept", "")
            or request.content_type == "application/json")


def _reason(error: FieldError) -> str:
    """The JSON answer's reason for a field error."""
    if len(error.group) > 1:
        return "required: give " + " or ".join(_WHAT[key] for key in error.group)
    return "required" if error.group else _REASONS[error.text]


def _render(extras: dict[str, list[str]]) -> str:
    """Fields beyond the mapped ones (a customer's own form), as ``name: value`` lines."""
    return "\n".join(f"{name}: {', '.join(values)}" for name, values in extras.items())


def _page(referer: str | None) -> str | None:
    """The posting page without query or fragment (they may hold tokens)."""
    if not referer or not referer.isascii() or origin_of(referer) is None:
        return None
    parts = urlsplit(referer)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))[:500]
