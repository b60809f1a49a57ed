"""``bridge.yaml``: loading, ``${ENV}`` interpolation and validation into typed models.

Every error names the file, the key path (``sources[1].redirect``) and what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

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

from livebridge.exceptions import ConfigError

if TYPE_CHECKING:
    from livebridge.source import Source, SourceSettings

__all__ = ["Config", "Duration", "load_config", "parse_duration"]

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BOOL = TypeAdapter(bool)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> Any:
    """Turn ``"300ms"``, ``"5m"``, ``"7d"`` or a number of seconds into seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30, 250ms, 5m, 12h or 7d")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _no_host_no_smtp(value: Any) -> Any:
    """``smtp:`` with an empty host (``${SMTP_HOST:-}`` unset) means no SMTP."""
    return None if isinstance(value, dict) and not value.get("host") else value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Optional = BeforeValidator(_empty_to_none)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    """Where the daemon listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
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

    @model_validator(mode="after")
    def _known_scheme(self) -> StoreConfig:
        if not self.url.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError(
                f"url {self.url!r}: use sqlite:///path/file.db or redis://host:port/db"
            )
        return self


class DeliveryConfig(_Section):
    """How the outbox is delivered: concurrency, retries, rate limit, backpressure."""

    concurrency: int = Field(default=32, ge=1, le=1024)
    initial_backoff: Annotated[Duration, Field(gt=0)] = 1.0
    max_backoff: Duration = 300.0
    retry_after_cap: Duration = 300.0
    max_age: Duration = 3 * 86400
    rate_limit: float = Field(default=100.0, ge=0, description="Livedesk calls/s; 0 = none")
    rate_burst: int = Field(default=100, ge=1)
    breaker_threshold: int = Field(default=5, ge=1)
    max_outbox: int = Field(default=100_000, ge=1)
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

    def secrets(self) -> list[str]:
        """Every secret value in the config (to mask in logs and output)."""
        password = urlsplit(self.store.url).password
        return [s for s in (*_secret_values(self), password) if s]

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data, secrets replaced by ``'***'``."""
        data = _masked(self)
        password = urlsplit(self.store.url).password
        if password:
            data["store"]["url"] = self.store.url.replace(f":{password}@", ":***@", 1)
        return data


def _secret_values(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
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
    return value


def _interpolate(node: Any, env: Mapping[str, str], loc: str, problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, env, _join(loc, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{loc}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{loc}: environment variable {name} is not set "
            f"(set it, or give a default: ${{{name}:-value}})"
        )
        return ""

    return _ENV.sub(sub, node)


def _join(loc: str, key: Any) -> str:
    return f"{loc}.{key}" if loc else str(key)


def _loc(prefix: str, parts: tuple[int | str, ...]) -> str:
    out = prefix
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out or "(top level)"


def _describe(prefix: str, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _loc(prefix, tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key (check the spelling, or remove it)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}")
    return problems


def load_config(
    path: str | os.PathLike[str],
    source_types: Mapping[str, type[Source]],
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, interpolate and validate ``path``; raise ``ConfigError`` listing every problem."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(where, [f"cannot read the file: {exc.strerror}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(where, [f"not valid YAML: {exc}"]) from exc
    return parse_config(raw if raw is not None else {}, source_types, env, where)


def parse_config(
    raw: Any,
    source_types: Mapping[str, type[Source]],
    env: Mapping[str, str] | None = None,
    where: str = "<memory>",
) -> Config:
    """Validate already-parsed YAML data (see ``load_config``)."""
    if not isinstance(raw, dict):
        raise ConfigError(where, ["(top level): expected a mapping of sections"])
    problems: list[str] = []
    data = _interpolate(raw, os.environ if env is None else env, "", problems)
    entries = data.get("sources")
    off = tuple(f"sources[{i}]." for i, entry in enumerate(entries)
                if _switched_off(entry)) if isinstance(entries, list) else ()
    problems = [p for p in problems if not p.startswith(off)]  # their ${VAR}s may be unset
    try:
        config = Config.model_validate({**data, "sources": []})
    except ValidationError as exc:
        problems.extend(_describe("", exc))
        config = None
    sources = _parse_sources(data.get("sources") or [], source_types, problems)
    if problems or config is None:
        raise ConfigError(where, problems)
    config.sources = sources
    config.path = where
    if config.store.url.startswith("sqlite:///") and where != "<memory>":
        db = Path(config.store.url.removeprefix("sqlite:///"))
        if not db.is_absolute():  # relative to the config file, wherever the command runs
            config.store.url = f"sqlite:///{(Path(where).resolve().parent / db)}"
    return config


def _switched_off(entry: Any) -> bool:
    """Whether a source entry says ``enabled: false`` (a bad value is reported later)."""
    if not isinstance(entry, dict):
        return False
    try:
        return _BOOL.validate_python(entry.get("enabled", True)) is False
    except ValidationError:
        return False


def _parse_sources(
    entries: Any, source_types: Mapping[str, type[Source]], problems: list[str]
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
        try:
            item = source_type.Settings.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_describe(loc, exc))
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
