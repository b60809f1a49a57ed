"""What a source plugin implements (``Source``) and what it is given (``Bridge``)."""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, get_args, overload

import structlog
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
)
from typing_extensions import TypeVar

from livebridge.exceptions import Busy, Refused, ReplyNotSupported
from livebridge.files import ReplyFiles, fetch_reply_files
from livebridge.http import reject
from livebridge.model import Attachment, InboundMessage, OutboundReply

if TYPE_CHECKING:
    import aiohttp

    from livebridge._config import Config
    from livebridge._store import Store
    from livebridge.mailer import Mailer
    from livebridge.metrics import Metrics

__all__ = [
    "AcceptResult",
    "Bridge",
    "Duration",
    "PluginState",
    "Source",
    "SourceSettings",
    "parse_duration",
    "required_secret",
]

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


#: A settings field in seconds that also takes ``"250ms"``, ``"5m"``, ``"12h"``, ``"7d"``.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


def required_secret(env: str) -> AfterValidator:
    """A check for a ``SecretStr`` setting that must not be empty (``${VAR:-}`` unset): use
    it as ``token: Annotated[SecretStr, required_secret("CHAT_TOKEN")]``; the error names
    the key and ``env``, the variable it usually comes from."""

    def check(value: SecretStr, info: ValidationInfo) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError(f"must not be empty (e.g. {info.field_name}: ${{{env}}})")
        return value

    return AfterValidator(check)


class SourceSettings(BaseModel):
    """Settings every source entry has; a source type subclasses this with its own keys."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = ""
    enabled: bool = True
    path: str | None = Field(default=None, description="URL path the source is mounted at")
    #: The ``inboxes:`` entry its messages go to; unset: the top-level ``livedesk:`` inbox.
    livedesk_inbox: str | None = None


class AcceptResult(enum.Enum):
    """What happened to a message offered to the bridge."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    DROPPED = "dropped"


class PluginState:
    """A source's own small key-value records, kept in the bridge's store (survive restarts)."""

    def __init__(self, store: Store, namespace: str) -> None:
        self._store = store
        self._ns = f"plugin:{namespace}"

    async def get(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None``."""
        return await self._store.kv_get(self._ns, key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, forgotten after ``ttl`` seconds if given."""
        await self._store.kv_set(self._ns, key, value, ttl)

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        await self._store.kv_delete(self._ns, key)


class Bridge(ABC):
    """The daemon as a source sees it: accept messages, keep state, log and count."""

    #: True when Livedesk is the built-in emulator, not the real service.
    emulated: bool
    #: The daemon's shared outbound HTTP session (for provider APIs).
    http: aiohttp.ClientSession
    metrics: Metrics
    #: Sends mail when the ``smtp:`` section is configured; else None (with the built-in
    #: emulator: a catcher that shows the mail on its page).
    mailer: Mailer | None
    config: Config

    async def reply_files(self, reply: OutboundReply) -> ReplyFiles:
        """Fetch an agent's reply files from Livedesk (``livedesk.max_reply_file_bytes`` each,
        over the shared session): those fetched, and the reply's text listing the others."""
        return await fetch_reply_files(self.http, reply,
                                       self.config.livedesk.max_reply_file_bytes)

    @abstractmethod
    async def accept(self, message: InboundMessage, source: Source) -> AcceptResult:
        """Run the message hooks, then store ``message`` durably (deduplicated).

        Returns only once the message is committed; answer the provider 2xx after this.
        Raises ``Overloaded`` or ``StoreUnavailable``: answer 503 so the provider retries.
        """

    @abstractmethod
    async def seen(self, source: Source, event_id: str) -> bool:
        """Whether ``event_id`` of ``source`` was already accepted (within the dedupe window)."""

    @abstractmethod
    async def conversation_of(self, source: Source, thread_key: str) -> int | None:
        """The Livedesk conversation id of a thread, once a message of it was delivered."""

    @abstractmethod
    async def livedesk_message_of(self, source: Source, message_ref: str) -> int | None:
        """The Livedesk message id of a delivered message, by its ``message_ref``."""

    @abstractmethod
    def state(self, source: Source) -> PluginState:
        """The source's own key-value records."""

    @abstractmethod
    def lock(self, source: Source, name: str) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion on ``name`` of ``source`` among all daemons sharing the store
        (raises ``TimeoutError`` when not acquired in time)."""


SettingsT = TypeVar(  # noqa: PLC0105 (covariant: a Source[Mine] is a Source)
    "SettingsT", bound=SourceSettings, default=SourceSettings, covariant=True)


class Source(Generic[SettingsT]):
    """A kind of place customers write from. Subclass it as ``Source[MySettings]``, then
    return the class from the ``livebridge_source_types`` hook.

    The daemon makes one instance per entry in ``sources:`` with its settings validated by
    ``MySettings`` (``self.settings``, typed as ``MySettings``), mounts ``routes()``, awaits
    ``start()`` and, on shutdown, ``stop()``.
    """

    #: The ``type:`` that selects this source in ``bridge.yaml``.
    type_name: ClassVar[str]
    #: The pydantic model of this source's settings (unknown keys are rejected); taken from
    #: the ``Source[MySettings]`` parameter.
    Settings: ClassVar[type[SourceSettings]] = SourceSettings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            args = get_args(base)
            if args and isinstance(args[0], type) and issubclass(args[0], SourceSettings):
                if cls.__dict__.get("Settings", args[0]) is not args[0]:
                    raise TypeError(f"{cls.__qualname__}: Settings differs from the "
                                    f"Source[{args[0].__name__}] parameter; drop Settings")
                cls.Settings = args[0]

    def __init__(self, settings: SettingsT, bridge: Bridge) -> None:
        self.settings = settings
        self.bridge = bridge
        self.name = settings.name or self.type_name
        self.log = structlog.get_logger("livebridge.source").bind(source=self.name)

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes to mount on the daemon's server (none by default)."""
        return []

    async def start(self) -> None:
        """Start background work, such as a Socket Mode connection (nothing by default)."""

    async def stop(self) -> None:
        """Stop what ``start`` started."""

    #: Whether ``send_reply`` takes ``edit`` and ``delete`` replies (else they are logged,
    #: counted and dropped at the webhook: a mail cannot be unsent).
    edits_replies: ClassVar[bool] = False

    async def send_reply(self, reply: OutboundReply) -> None:
        """Send an agent's reply back to the customer. Raise ``ReplyNotSupported`` if the
        source cannot; raise ``livebridge.Retryable`` for trouble worth retrying.

        ``reply.attachments`` carry no bytes: ``self.bridge.reply_files(reply)`` fetches them.
        """
        raise ReplyNotSupported(f"source {self.name!r} ({self.type_name}) cannot send replies")

    async def fetch_attachments(self, message: InboundMessage) -> list[Attachment]:
        """The message's attachments just before delivery, with the bytes of those this
        source fetches late (by ``fetch_ref``); as they are by default. Never raises: a file
        that cannot be fetched stays a link."""
        return message.attachments

    def describe(self) -> Mapping[str, Any]:
        """A short summary for ``livebridge plugins`` and the start-up log."""
        return {"name": self.name, "type": self.type_name, "path": self.settings.path}

    def count_dropped(self, reason: str) -> None:
        """Count a message dropped on purpose (``livebridge_messages_dropped_total``)."""
        metrics = self.bridge.metrics
        metrics.labels(metrics.dropped, self.name, reason).inc()

    @overload
    def reject(self, request: web.Request, error: Refused | Busy, *,
               detail: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None) -> web.Response: ...

    @overload
    def reject(self, request: web.Request, error: int, reason: str, *,
               detail: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None) -> web.Response: ...

    def reject(
        self,
        request: web.Request,
        error: int | Refused | Busy,
        reason: str | None = None,
        *,
        detail: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """Log why a request is refused, count it and answer a JSON error: either
        ``reject(request, exc)`` for a ``Refused`` (its status) or a ``Busy`` (503 with
        ``Retry-After``), or ``reject(request, status, reason)``."""
        return reject(self.log, self.bridge.metrics, self.name, request, error, reason,
                      detail=detail, headers=headers)
