"""``type: webhook`` settings: the JMESPath mapping, the verification and the reply template.

Every expression is compiled here, so ``livebridge check`` names the key path of a bad one
(``sources[2].mapping.thread: invalid JMESPath expression: ...``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import jmespath
from jmespath.exceptions import (
    IncompleteExpressionError,
    JMESPathError,
    LexerError,
    ParseError,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    field_validator,
)

from livebridge import Duration, SourceSettings, required_secret

__all__ = [
    "REPLY_FIELDS",
    "AttachmentMapping",
    "HmacVerify",
    "MappingSettings",
    "ReplySettings",
    "SenderMapping",
    "TokenVerify",
    "WebhookSettings",
    "placeholders",
]

#: Placeholders every reply template may use, besides the names of ``mapping.context``.
REPLY_FIELDS = ("text", "thread", "sender_id", "agent_name", "conversation_id")
#: ``{name}`` is a placeholder; ``{{`` and ``}}`` are literal braces.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIGNED_PARTS = frozenset({"{timestamp}", "{body}"})


def _why(exc: JMESPathError) -> str:
    """What the JMESPath parser found wrong, and at which column."""
    if isinstance(exc, IncompleteExpressionError):
        return "incomplete expression"
    if isinstance(exc, LexerError):
        return f"{exc.message} at column {exc.lexer_position + 1}"
    if isinstance(exc, ParseError):
        token = f" {exc.token_value!r}" if exc.msg == "invalid token" else ""
        return f"{exc.msg}{token} at column {exc.lex_position + 1}"
    return str(exc).splitlines()[0]


def _compiles(expression: str) -> str:
    """``expression`` if it is valid JMESPath, else a ValueError saying where it is not."""
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression: {_why(exc)} in {expression!r}") from None
    return expression


#: A JMESPath expression, checked at load.
Expression = Annotated[str, Field(min_length=1), AfterValidator(_compiles)]


def placeholders(template: str) -> Iterator[str]:
    """The placeholder names in ``template``."""
    for match in PLACEHOLDER.finditer(template):
        if match.group(1):
            yield match.group(1)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SenderMapping(_Section):
    """Who wrote: ``id`` is required (one Livedesk contact per id)."""

    id: Expression
    name: Expression | None = None
    email: Expression | None = None
    phone: Expression | None = None


class AttachmentMapping(_Section):
    """Files as links: ``each`` picks the list, ``url`` and ``name`` are read from each entry."""

    each: Expression
    url: Expression = "url"
    name: Expression | None = "name"


class MappingSettings(_Section):
    """Where each field of a message is in the payload (in each item, with ``items``)."""

    event_id: Expression
    thread: Expression
    sender: SenderMapping
    text: Expression
    attachments: AttachmentMapping | None = None
    context: dict[str, Expression] = Field(
        default_factory=dict,
        description="values kept with the thread for the reply template: {name: expression}")

    @field_validator("context")
    @classmethod
    def _names(cls, context: dict[str, str]) -> dict[str, str]:
        for name in context:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r}: a context name must be an identifier")
            if name in REPLY_FIELDS:
                raise ValueError(f"{name!r} is a built-in reply placeholder; use another name")
        return context


class TokenVerify(_Section):
    """A shared token in a header, compared in constant time."""

    header: str = Field(min_length=1)
    token: Annotated[SecretStr, required_secret("CHAT_WEBHOOK_TOKEN")]


class HmacVerify(_Section):
    """An HMAC of the signed payload (by default the raw body) in a header."""

    header: str = Field(min_length=1)
    secret: Annotated[SecretStr, required_secret("CHAT_SIGNING_SECRET")]
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="before the signature, e.g. 'sha256='")
    timestamp_header: str | None = None
    signed_payload: str = Field(default="{body}", validate_default=True,
                                description="what is signed, e.g. '{timestamp}.{body}'")
    window: Duration = 300.0

    @field_validator("signed_payload")
    @classmethod
    def _parts(cls, template: str, info: ValidationInfo) -> str:
        parts = set(re.findall(r"\{[^{}]*\}", template))
        if "{body}" not in parts:
            raise ValueError("must contain {body}")
        if parts - _SIGNED_PARTS:
            raise ValueError(f"unknown placeholder {sorted(parts - _SIGNED_PARTS)[0]} "
                             "(known: {timestamp}, {body})")
        if ("{timestamp}" in parts) != bool(info.data.get("timestamp_header")):
            raise ValueError("{timestamp} and timestamp_header go together")
        return template


def _verify_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "token" if "token" in value else "hmac"
    return "none"


Verify = Annotated[
    Annotated[Literal["none"], Tag("none")]
    | Annotated[TokenVerify, Tag("token")]
    | Annotated[HmacVerify, Tag("hmac")],
    Discriminator(_verify_kind),
]


class ReplySettings(_Section):
    """Agent replies as an HTTP request; ``url`` (path and query) and the strings in ``body``
    may hold placeholders: ``{text}``, ``{thread}``, ``{sender_id}``, ``{agent_name}``,
    ``{conversation_id}`` and the names of ``mapping.context``."""

    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="secrets via ${ENV}; masked")
    body: Any = Field(description="a JSON template: a string that is one placeholder keeps "
                                  "its JSON type")
    timeout: Duration = 15.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(PLACEHOLDER.sub("x", url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        if "{" in urlsplit(url).netloc:
            raise ValueError("placeholders may stand in the path and query only, not the host")
        return url

    @field_validator("body")
    @classmethod
    def _json(cls, body: Any) -> Any:
        try:
            json.dumps(body)
        except (TypeError, ValueError):
            raise ValueError("expected JSON data (quote dates and other YAML types)") from None
        return body


def _strings(node: Any, loc: str) -> Iterator[tuple[str, str]]:
    """Every string value in a JSON template, with its key path (keys are kept as they are)."""
    if isinstance(node, str):
        yield loc, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{loc}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{loc}[{i}]")


class WebhookSettings(SourceSettings):
    """``type: webhook``: any chat service that POSTs JSON (see the plugin's README)."""

    path: str = "/webhook"
    verify: Verify = Field(description="none | {header, token} | {header, secret, ...}")
    events: Expression | None = Field(default=None,
                                      description="which items are messages (others ignored)")
    items: Expression | None = Field(default=None,
                                     description="the list of messages in a batched payload")
    max_items: int = Field(default=100, ge=1)
    mapping: MappingSettings
    reply: ReplySettings | None = None
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    @field_validator("reply")
    @classmethod
    def _known_placeholders(cls, reply: ReplySettings | None,
                            info: ValidationInfo) -> ReplySettings | None:
        mapping = info.data.get("mapping")
        if reply is None or mapping is None:
            return reply
        known = (*REPLY_FIELDS, *mapping.context)
        for loc, text in [("url", reply.url), *_strings(reply.body, "body")]:
            unknown = [name for name in placeholders(text) if name not in known]
            if unknown:
                raise ValueError(f"{loc}: unknown placeholder {{{unknown[0]}}} "
                                 f"(known: {', '.join(known)})")
        return reply
