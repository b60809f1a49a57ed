"""``bridge.yaml``: loading, ``${ENV}`` interpolation and validation into typed models.

Every error names the file, the key path (``sources[1].redirect``) and what to do.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from livebridge.exceptions import ConfigError
from livebridge.source import Duration

if TYPE_CHECKING:
    from livebridge.source import Source, SourceSettings

__all__ = ["Config", "load_config", "load_store_config"]

_M = TypeVar("_M", bound=BaseModel)
#: Which ``${VAR}``s (set in the environment) made the value at each key path.
_Origins = dict[str, list[str]]

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BOOL = TypeAdapter(bool)


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _no_host_no_smtp(value: Any) -> Any:
    """``smtp:`` with an empty host (``${SMTP_HOST:-}`` unset) means no SMTP."""
    return None if isinstance(value, dict) and not value.get("host") else value


Optional = BeforeValidator(_empty_to_none)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    """Where the daemon listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Cap on bodies the server reads itself (routes whose source has no cap of its own).
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    #: Time allowed to read a whole request body; past it the request is answered 408.
    body_timeout: Duration = Field(default=60.0, gt=0)
    #: Request line and headers must be complete this long after a connection opens (or
    #: after its previous answer); else it is closed. Also the idle keep-alive timeout.
    header_timeout: Annotated[Duration, Field(gt=0)] = 15.0
    #: Connections open at once from one client address; one more is answered 429 (0: no cap).
    max_connections_per_client: int = Field(default=100, ge=0)


class LivedeskConfig(_Section):
    """The Livedesk API channel; no ``base_url`` means the built-in emulator."""

    base_url: Annotated[str | None, Optional] = None
    api_key: Annotated[SecretStr | None, Optional] = None
    api_secret: Annotated[SecretStr | None, Optional] = None
    inbox_id: Annotated[int | None, Optional] = None
    timeout: Duration = 10.0
    webhook_path: str = "/livedesk/webhook"
    webhook_secret: Annotated[SecretStr | None, Optional] = None
    webhook_max_age: Duration = 300.0
    #: Take unsigned webhooks from a real Livedesk (only behind a proxy that guards the path).
    allow_unsigned_webhooks: bool = False
    #: Send template messages (out-of-office, CSAT) to customers like agents' replies.
    forward_templates: bool = True
    #: An agent's file larger than this reaches the customer as a link, not as a file.
    max_reply_file_bytes: int = Field(default=20 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _credentials_with_url(self) -> LivedeskConfig:
        if self.base_url:
            missing = [k for k in ("api_key", "api_secret", "inbox_id") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"base_url is set, so {', '.join(missing)} must be set too "
                    "(LIVEDESK_API_KEY, LIVEDESK_API_SECRET, LIVEDESK_INBOX_ID); "
                    "or unset base_url to use the built-in emulator"
                )
        return self

    @property
    def emulated(self) -> bool:
        """True when no real Livedesk is configured."""
        return not self.base_url


class StoreConfig(_Section):
    """The durable store: ``sqlite:///path.db`` or ``redis://host:port/db``."""

    url: str = "sqlite:///var/livebridge.db"
    dedupe_window: Duration = 7 * 86400
    sqlite_synchronous: Literal["full", "normal"] = "full"
    #: Redis connections per daemon; unless set, ``Config`` makes it ``delivery.concurrency``
    #: + ``_STORE_HEADROOM`` (64 for the default concurrency).
    max_connections: int = Field(default=64, ge=2, le=10_000)

    @model_validator(mode="after")
    def _known_scheme(self) -> StoreConfig:
        if not self.url.startswith(("sqlite:///", "redis://", "rediss://")):
            scheme = self.url.partition(":")[0][:20]  # not the URL: it may hold a password
            raise ValueError(
                f"url: unknown scheme {scheme!r}; use sqlite:///path/file.db or "
                "redis://host:port/db"
            )
        return self


class DeliveryConfig(_Section):
    """How the outbox is delivered: concurrency, retries, rate limit, backpressure."""

    concurrency: int = Field(default=32, ge=1, le=1024)
    initial_backoff: Annotated[Duration, Field(gt=0)] = 1.0
    max_backoff: Duration = 300.0
    retry_after_cap: Duration = 300.0
    max_age: Duration = 3 * 86400
    rate_limit: float = Field(default=100.0, ge=0,
                              description="Livedesk calls/s at most (a ceiling); 0 = none")
    rate_burst: int = Field(default=100, ge=1)
    breaker_threshold: int = Field(default=5, ge=1)
    probe_interval: Annotated[Duration, Field(gt=0)] = 1.0
    probe_cap: Duration = 5.0
    reply_concurrency: int = Field(default=8, ge=1, le=1024)
    reply_rate_limit: float = Field(default=0.0, ge=0,
                                    description="replies/s per source at most; 0 = none")
    max_outbox: int = Field(default=100_000, ge=1)
    max_reply_outbox: int = Field(default=1_000_000, ge=1)
    lease: Annotated[Duration, Field(ge=1)] = 120.0
    shutdown_timeout: Duration = 10.0


class SMTPConfig(_Section):
    """Outgoing mail for agent replies to email and web-form customers."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    user: Annotated[str | None, Optional] = None
    password: Annotated[SecretStr | None, Optional] = None
    sender: str = Field(description="the From address, e.g. support@example.com")
    tls: Literal["none", "starttls", "tls"] = "starttls"
    timeout: Duration = 30.0


class LoggingConfig(_Section):
    """Log level and format (``auto``: human on a terminal, JSON otherwise)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


#: Redis connections beyond one per delivery: accepting requests, claims, the work listener.
_STORE_HEADROOM = 32


class Config(_Section):
    """The whole ``bridge.yaml``."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    livedesk: LivedeskConfig = Field(default_factory=LivedeskConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    smtp: Annotated[SMTPConfig | None, BeforeValidator(_no_host_no_smtp)] = None
    #: The enabled source entries, each validated by the plugin that owns its type.
    sources: list[Any] = Field(default_factory=list)
    #: Where the config came from (set by ``load_config``).
    path: str = Field(default="<memory>", exclude=True)

    @model_validator(mode="after")
    def _size_store_pool(self) -> Config:
        if "max_connections" not in self.store.model_fields_set:
            self.store.max_connections = self.delivery.concurrency + _STORE_HEADROOM
        return self

    def secrets(self) -> list[str]:
        """Every secret value in the config (to mask in logs and output)."""
        return [s for s in (*_secret_values(self), *_url_secrets(self.store.url)) if s]

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data, secrets replaced by ``'***'``."""
        data = _masked(self)
        data["store"]["url"] = _masked_url(self.store.url)
        return data


#: Store URL query parameters that never carry a secret; ``check`` masks any other one.
_PLAIN_URL_PARAMS = frozenset({
    "prefix", "db", "username", "protocol", "client_name", "max_connections", "timeout",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval",
    "retry_on_timeout", "ssl_cert_reqs", "ssl_check_hostname", "ssl_min_version", "ssl_ca_certs",
    "ssl_certfile", "ssl_keyfile",
})


def _secret_param(param: str) -> str:
    """The value of one ``name=value`` of a URL query if it may carry a secret, else ``''``."""
    name, _, value = param.partition("=")
    return "" if unquote_plus(name) in _PLAIN_URL_PARAMS else value


def _url_secrets(url: str) -> list[str]:
    """The secrets in a store URL (its password, the values of the parameters not known to
    be plain), as written and as decoded."""
    parts = urlsplit(url)
    written = [parts.password or "", *map(_secret_param, parts.query.split("&"))]
    found = [form for s in written for form in (s, unquote(s), unquote_plus(s))]
    return [s for s in dict.fromkeys(found) if s]


def _masked_url(url: str) -> str:
    """The store URL with its password and secret-carrying parameters as ``***``."""
    if not _url_secrets(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(f"{param.partition('=')[0]}=***" if _secret_param(param) else param
                     for param in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret_values(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict):  # a mapping of secrets, such as HTTP headers
            items = list(value.values())
        for item in items:
            if isinstance(item, SecretStr):
                yield item.get_secret_value()
            elif isinstance(item, BaseModel):
                yield from _secret_values(item)


def _masked(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        if field.exclude:
            continue
        out[name] = _mask_value(getattr(model, name))
    return out


def _mask_value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return _masked(value)
    if isinstance(value, list):
        return [_mask_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    return value


def _interpolate(node: Any, env: Mapping[str, str], loc: str, problems: list[str],
                 origins: _Origins) -> Any:
    """``node`` with ``${VAR}``s replaced; notes in ``origins`` the variables each key used."""
    if isinstance(node, dict):
        return {k: _interpolate(v, env, _join(loc, k), problems, origins)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{loc}[{i}]", problems, origins)
                for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    used: list[str] = []

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            used.append(name)
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{loc}: environment variable {name} is not set "
            f"(set it, or give a default: ${{{name}:-value}})"
        )
        return ""

    value = _ENV.sub(sub, node)
    if used:
        origins[loc] = used
    return value


def _join(loc: str, key: Any) -> str:
    return f"{loc}.{key}" if loc else str(key)


def _loc(prefix: str, parts: tuple[int | str, ...]) -> str:
    out = prefix
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out or "(top level)"


def _types_in(annotation: Any) -> Iterator[Any]:
    """The classes an annotation is made of (``SMTPConfig | None``: SMTPConfig, NoneType)."""
    if isinstance(annotation, type):
        yield annotation
    for arg in get_args(annotation):
        yield from _types_in(arg)


def _keys(classes: list[Any]) -> dict[str, FieldInfo]:
    """The keys a config may set in a value of one of ``classes``."""
    return {name: info for cls in classes if issubclass(cls, BaseModel)
            for name, info in cls.model_fields.items() if not info.exclude}


def _classes_at(model: type[BaseModel], parts: tuple[int | str, ...]) -> list[Any]:
    """The classes the value at key path ``parts`` below ``model`` may be (none if unknown)."""
    classes: list[Any] = [model]
    for part in parts:
        field = _keys(classes).get(part) if isinstance(part, str) else None
        classes = list(_types_in(field.annotation)) if field else []
    return classes


def _did_you_mean(model: type[BaseModel], parts: tuple[int | str, ...]) -> str:
    """``; did you mean port?`` for an unknown key close to one of its section's keys."""
    keys = list(_keys(_classes_at(model, parts[:-1])))
    close = difflib.get_close_matches(str(parts[-1]), keys, n=1)
    return f"; did you mean {close[0]}?" if close else " (check the spelling, or remove it)"


def _describe(prefix: str, exc: ValidationError, model: type[BaseModel],
              origins: _Origins) -> list[str]:
    """One line per error of ``model``'s validation, naming the key path and the fix."""
    problems = []
    for err in exc.errors(include_url=False):
        parts = tuple(err["loc"])
        loc = _loc(prefix, parts)
        if err["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key{_did_you_mean(model, parts)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if loc in origins:  # the fix is in the environment: name the variables, not the key
            secret = SecretStr in _classes_at(model, parts)
            value = "***" if secret and err["input"] else repr(err["input"])
            names = origins[loc]
            msg = (f"{names[0]}={value}: {msg}" if len(names) == 1
                   else f"{value} from {', '.join(names)}: {msg}")
        problems.append(f"{loc}: {msg}")
    return problems


def _validate(model: type[_M], data: Any, prefix: str, problems: list[str],
              origins: _Origins) -> _M | None:
    """``data`` validated as ``model``, or None with its problems added to ``problems``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(prefix, exc, model, origins))
        return None


def _read(path: str | os.PathLike[str]) -> Any:
    """The YAML data in ``path`` (``{}`` for an empty file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from exc
    return {} if raw is None else raw


def _sections(raw: Any, where: str) -> dict[str, Any]:
    """``raw`` if it is a mapping of sections, else a ``ConfigError``."""
    if not isinstance(raw, dict):
        raise ConfigError(where, ["(top level): expected a mapping of sections"])
    return raw


def load_config(
    path: str | os.PathLike[str],
    source_types: Mapping[str, type[Source]],
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, interpolate and validate ``path``; raise ``ConfigError`` listing every problem."""
    return parse_config(_read(path), source_types, env, str(path))


def load_store_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> StoreConfig:
    """Read, interpolate and validate only the ``store:`` section of ``path`` (for commands
    that need nothing else: no source plugins, no secrets of other sections)."""
    where = str(path)
    problems: list[str] = []
    origins: _Origins = {}
    section = _sections(_read(path), where).get("store") or {}
    data = _interpolate(section, os.environ if env is None else env, "store", problems, origins)
    store = _validate(StoreConfig, data, "store", problems, origins)
    if problems or store is None:
        raise ConfigError(where, problems)
    _beside(store, where)
    return store


def parse_config(
    raw: Any,
    source_types: Mapping[str, type[Source]],
    env: Mapping[str, str] | None = None,
    where: str = "<memory>",
) -> Config:
    """Validate already-parsed YAML data (see ``load_config``)."""
    problems: list[str] = []
    origins: _Origins = {}
    data = _interpolate(_sections(raw, where), os.environ if env is None else env, "", problems,
                        origins)
    entries = data.get("sources")
    off = tuple(f"sources[{i}]." for i, entry in enumerate(entries)
                if _switched_off(entry)) if isinstance(entries, list) else ()
    problems = [p for p in problems if not p.startswith(off)]  # their ${VAR}s may be unset
    config = _validate(Config, {**data, "sources": []}, "", problems, origins)
    sources = _parse_sources(data.get("sources") or [], source_types, problems, origins)
    if problems or config is None:
        raise ConfigError(where, problems)
    config.sources = sources
    config.path = where
    _beside(config.store, where)
    return config


def _beside(store: StoreConfig, where: str) -> None:
    """Make a relative SQLite path relative to the config file, wherever the command runs."""
    if store.url.startswith("sqlite:///") and where != "<memory>":
        db = Path(store.url.removeprefix("sqlite:///"))
        if not db.is_absolute():
            store.url = f"sqlite:///{(Path(where).resolve().parent / db)}"


def _switched_off(entry: Any) -> bool:
    """Whether a source entry says ``enabled: false`` (a bad value is reported later)."""
    if not isinstance(entry, dict):
        return False
    try:
        return _BOOL.validate_python(entry.get("enabled", True)) is False
    except ValidationError:
        return False


def _parse_sources(
    entries: Any, source_types: Mapping[str, type[Source]], problems: list[str],
    origins: _Origins,
) -> list[SourceSettings]:
    if not isinstance(entries, list):
        problems.append("sources: expected a list of source entries")
        return []
    settings: list[SourceSettings] = []
    names: dict[str, int] = {}
    available = ", ".join(sorted(source_types)) or "none (no source plugins are installed)"
    for i, entry in enumerate(entries):
        loc = f"sources[{i}]"
        if not isinstance(entry, dict) or "type" not in entry:
            problems.append(f"{loc}: each source needs a 'type' (available: {available})")
            continue
        source_type = source_types.get(entry["type"])
        if source_type is None:
            problems.append(
                f"{loc}.type: unknown source type {entry['type']!r} (available: {available})"
            )
            continue
        try:
            enabled = _BOOL.validate_python(entry.get("enabled", True))
        except ValidationError:
            problems.append(f"{loc}.enabled: expected true or false")
            continue
        if not enabled:  # a switched-off source may lack its secrets; it is not started
            continue
        item = _validate(source_type.Settings, entry, loc, problems, origins)
        if item is None:
            continue
        item.name = item.name or item.type
        if item.name in names:
            problems.append(
                f"{loc}.name: {item.name!r} is already used by sources[{names[item.name]}]; "
                "give each source a unique name"
            )
        names.setdefault(item.name, i)
        settings.append(item)
    return settings
