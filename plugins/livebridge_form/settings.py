"""The ``type: form`` settings, validated when ``bridge.yaml`` is loaded."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from livebridge import Duration, SourceSettings
from livebridge_form.texts import TEXTS, Language, TextOverrides, Texts

__all__ = ["FIELD_KEYS", "FieldNames", "FormSettings", "origin_of"]

#: The fields the form knows; ``fields`` maps each to the name it is posted under.
FIELD_KEYS = ("name", "email", "phone", "message")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL (default port dropped), or ``None``."""
    if "\\" in url or any(c.isspace() or ord(c) < 32 for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


class FieldNames(BaseModel):
    """The posted field name of each form field (to fit an existing HTML form)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "name"
    email: str = "email"
    phone: str = "phone"
    message: str = "message"

    @model_validator(mode="after")
    def _usable(self) -> FieldNames:
        names = [getattr(self, key) for key in FIELD_KEYS]
        for name in names:
            if not name or name.startswith("_"):
                raise ValueError(f"{name!r}: field names must be non-empty and not start "
                                 "with '_' (reserved for control fields such as the honeypot)")
        if len(set(names)) != len(names):
            raise ValueError("each field needs its own posted name")
        return self

    def posted(self, key: str) -> str:
        """The posted name of field ``key``."""
        return str(getattr(self, key))


class FormSettings(SourceSettings):
    """A web contact form: ``GET path`` serves it, ``POST path`` takes submissions."""

    path: str = "/form"
    title: str = Field(default="Contact us", min_length=1, max_length=200)
    fields: FieldNames = Field(default_factory=FieldNames)
    #: Each entry is a field, or alternatives joined by ``|`` (one of them is enough).
    required: list[str] = Field(default_factory=lambda: ["email|phone", "message"])
    #: A field people never see; bots fill it in. Empty disables it.
    honeypot: str | None = "_gotcha"
    #: Exact origins (``https://www.example.com``) that may post and read answers (CORS).
    #: The form's own origin (the request's Host) is always allowed.
    allowed_origins: list[str] = Field(default_factory=list)
    #: Where a browser goes after posting: a path on the bridge, or a URL on an allowed
    #: origin. Default: the built-in page at ``{path}/thanks``.
    thank_you_url: str | None = None
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Largest uploaded file (multipart); 0 refuses files.
    max_file_bytes: int = Field(default=512 * 1024, ge=0)
    #: Posts per ``rate_window`` per client IP (per process); 0 turns the limit off.
    rate_limit: int = Field(default=30, ge=0, le=10_000)
    rate_window: Duration = 3600.0
    #: ``per_customer``: one conversation per customer; ``per_submission``: one per post.
    conversation: Literal["per_customer", "per_submission"] = "per_customer"
    #: Take the client IP from ``X-Forwarded-For`` (only behind a proxy that sets it).
    trust_forwarded_for: bool = False
    #: The pages' language: ``auto`` follows the browser's ``Accept-Language`` (else ``en``).
    language: Literal["auto", Language] = "auto"
    #: Per-language overrides of the pages' texts: ``{ja: {submit: 送信}}``.
    texts: TextOverrides = Field(default_factory=TextOverrides)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str:
        if not value or not value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError(f"{value!r}: use a path such as '/form' (no trailing slash)")
        return value

    @field_validator("required")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        groups = [tuple(k.strip() for k in entry.split("|")) for entry in value]
        for entry, group in zip(value, groups, strict=True):
            unknown = [k for k in group if k not in FIELD_KEYS]
            if unknown:
                raise ValueError(f"{entry!r}: unknown field {unknown[0]!r} "
                                 f"(fields: {', '.join(FIELD_KEYS)}; alternatives: 'email|phone')")
        if not any(set(group) <= {"email", "phone"} for group in groups):
            raise ValueError("must require an email address or a phone number (e.g. "
                             "'email|phone'): the customer's contact is keyed on one of them")
        return ["|".join(group) for group in groups]

    @field_validator("honeypot")
    @classmethod
    def _honeypot(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            origin = origin_of(item)
            authority = item.rstrip("/").partition("://")[2]
            if origin is None or any(c in authority for c in "/?#"):
                raise ValueError(f"{item!r} is not an origin: use scheme://host[:port], such as "
                                 "'https://www.example.com' (no path)")
            out.append(origin)
        return out

    @field_validator("thank_you_url")
    @classmethod
    def _thank_you(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        if value.startswith("/") and not value.startswith("//") and "\\" not in value:
            return value
        origin = origin_of(value)
        if origin is None:
            raise ValueError(f"{value!r}: use a path on the bridge ('/thanks') or an http(s) URL")
        allowed = info.data.get("allowed_origins")
        if allowed is not None and origin not in allowed:
            raise ValueError(f"{value!r} is not on an allowed origin (no open redirects): add "
                             f"{origin!r} to allowed_origins, or use a path such as '/thanks'")
        return value

    @field_validator("rate_window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0 s (to turn the limit off, set rate_limit: 0)")
        return value

    @model_validator(mode="after")
    def _honeypot_is_not_a_field(self) -> FormSettings:
        if self.honeypot and self.honeypot in {self.fields.posted(k) for k in FIELD_KEYS}:
            raise ValueError(f"honeypot {self.honeypot!r} is also a form field; pick another name")
        return self

    @property
    def required_groups(self) -> list[tuple[str, ...]]:
        """``required`` as groups of alternatives: ``[("email", "phone"), ("message",)]``."""
        return [tuple(entry.split("|")) for entry in self.required]

    def texts_for(self, language: Language) -> Texts:
        """The texts in ``language``: built-in, then ``title``, then ``texts`` overrides."""
        return TEXTS[language].model_copy(update={
            **({"title": self.title} if "title" in self.model_fields_set else {}),
            **self.texts.changes(language),
        })

    @property
    def thanks_url(self) -> str:
        """Where browsers are sent after a post."""
        return self.thank_you_url or f"{self.path}/thanks"
