"""The running bridge (``Daemon``): what sources use, its routes, and its lifecycle.

Start-up goes store → Livedesk client (and the embedded emulator) → ``livebridge_startup``
hooks → sources' ``start()`` → the dispatcher last, so nothing is delivered (and no
``send_reply`` runs) before everything it needs is up; shutdown goes the reverse way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pluggy
import structlog
from aiohttp import web

from livebridge._config import DEFAULT_INBOX, Config, LivedeskConfig
from livebridge._demo import Demo
from livebridge._livedesk.client import LivedeskClient
from livebridge._livedesk.emulator import Emulator
from livebridge._livedesk.route import ROUTE, LivedeskRoute
from livebridge._livedesk.sink import LivedeskSink
from livebridge._outbox import Breaker, Dispatcher, Flow, RateLimiter, Route
from livebridge._plugins import call_chain, call_each, collect_source_types
from livebridge._replies import ReplyReceiver, ReplyRoute, reply_route
from livebridge._store import create_store
from livebridge.exceptions import Overloaded, ReplyNotSupported
from livebridge.mailer import Mailer
from livebridge.metrics import Metrics
from livebridge.model import InboundMessage, OutboundReply
from livebridge.source import AcceptResult, Bridge, PluginState, Source

__all__ = ["EMULATED_WARNING", "Daemon", "Inbox"]

log = structlog.get_logger("livebridge")

EMULATOR_CREDENTIALS = ("emulator", "emulator", 1)
#: Connections the shared HTTP session allows beyond the routes' concurrency, headroom for
#: its other callers (sources' API calls, reply lookups); aiohttp's default limit.
_CONNECTION_HEADROOM = 100
EMULATED_WARNING = (
    "LIVEDESK_BASE_URL is not set: messages go to the BUILT-IN LIVEDESK EMULATOR, "
    "nothing reaches the real Livedesk"
)


class Inbox:
    """One Livedesk inbox of the daemon: its settings, webhook receiver (the ``ReplyHost``
    of its replies), inbound route name and, in emulated mode, its emulator; its client and
    sink are made at start, each with the inbox's own API key pair."""

    def __init__(self, daemon: Daemon, name: str, config: LivedeskConfig,
                 emulator_id: int) -> None:
        self.daemon = daemon
        self.metrics = daemon.metrics
        self.name = name
        self.config = config
        #: The inbound route's name (the default inbox's is the original ``livedesk``).
        self.route = ROUTE if name == DEFAULT_INBOX else f"{ROUTE}:{name}"
        self.inbox_id = config.inbox_id
        secret = config.webhook_secret.get_secret_value() if config.webhook_secret else None
        self.emulator: Emulator | None = None
        if config.emulated:
            # Demo mode: the embedded emulator signs its webhooks with a secret made now, so
            # the webhook path takes nothing unsigned even when none is configured.
            secret = secret or secrets.token_hex(32)
            key, api_secret, _ = EMULATOR_CREDENTIALS
            self.inbox_id = emulator_id
            self.emulator = Emulator(api_key=key, api_secret=api_secret, inbox_id=emulator_id,
                                     webhook_secret=secret)
        self.replies = ReplyReceiver(self, secret, config.webhook_max_age,
                                     forward_templates=config.forward_templates)
        self.url = config.base_url or ""
        self.sink: LivedeskSink | None = None

    @property
    def emulator_page(self) -> str:
        """Where the daemon serves its emulator's page: ``/emulator/`` for the default inbox,
        ``/emulator-<name>/`` for another."""
        return "/emulator/" if self.name == DEFAULT_INBOX else f"/emulator-{self.name}/"

    def describe(self) -> str:
        """``408 at https://...``: which inbox of which Livedesk (for ``check``)."""
        if self.emulator is not None:
            return f"{self.inbox_id} at the built-in emulator"
        return f"{self.inbox_id} at {self.url}"

    def client(self, http: aiohttp.ClientSession, limiter: RateLimiter) -> LivedeskClient:
        """A client of this inbox's Livedesk, with its key pair, calling at ``limiter``'s rate."""
        if self.emulator is not None:
            key, secret, _ = EMULATOR_CREDENTIALS
        else:
            assert self.config.api_key is not None and self.config.api_secret is not None
            key = self.config.api_key.get_secret_value()
            secret = self.config.api_secret.get_secret_value()
        return LivedeskClient(http, self.url, key, secret, timeout=self.config.timeout,
                              metrics=self.metrics, limiter=limiter)

    async def thread_of(self, conversation_id: int) -> dict[str, Any] | None:
        """The source thread recorded for a conversation of this inbox."""
        assert self.sink is not None
        return await self.sink.thread_of(conversation_id)

    async def queue_reply(self, reply: OutboundReply) -> bool | None:
        """Store an agent reply (``Daemon.queue_reply``)."""
        return await self.daemon.queue_reply(reply)


class Daemon(Bridge):
    """The running bridge: store, Livedesk inboxes (sinks), routes, dispatcher and sources."""

    def __init__(self, config: Config, pm: pluggy.PluginManager) -> None:
        self.config = config
        self.pm = pm
        self.metrics = Metrics()
        self.emulated = config.livedesk.emulated
        types = collect_source_types(pm)
        self.sources: dict[str, Source] = {
            s.name: types[s.type](s, self) for s in config.sources
        }
        self.store = create_store(config.store)
        # Emulated inboxes are numbered in order: the default is inbox 1, as before.
        self.inboxes = {name: Inbox(self, name, config.inbox(name), EMULATOR_CREDENTIALS[2] + i)
                        for i, name in enumerate([DEFAULT_INBOX, *config.inboxes])}
        default = self.inboxes[DEFAULT_INBOX]
        #: The default inbox's emulator, webhook receiver and Livedesk URL.
        self.emulator = default.emulator
        self.replies = default.replies
        #: Demo mode's mail catcher (without ``smtp:``) and reply states, on the default
        #: inbox's emulator page.
        self.demo: Demo | None = None
        if self.emulator is not None:
            self.emulator.view = self.demo = Demo(self.store, catch_mail=config.smtp is None)
        self.routes: dict[str, Route] = {}
        self.dispatcher: Dispatcher | None = None
        self.mailer: Mailer | None = Mailer(config.smtp) if config.smtp is not None else (
            self.demo.catcher if self.demo is not None else None)
        self.started_at = time.time()

    # --- Bridge (what sources use) --------------------------------------------------------

    async def accept(self, message: InboundMessage, source: Source) -> AcceptResult:
        self.metrics.labels(self.metrics.received, source.name).inc()
        message.source = source.name
        kept = await call_chain(self.pm.hook.livebridge_inbound_message, message, "message",
                                source=source)
        if kept is None:
            self.metrics.labels(self.metrics.dropped, source.name, "hook").inc()
            log.info("message dropped by a plugin hook", source=source.name,
                     event_id=message.event_id)
            return AcceptResult.DROPPED
        stored = await self._enqueue(
            "inbound", source.name, kept.event_id, f"{source.name}\x1f{kept.thread_key}",
            kept.model_dump_json(), self.inbox_of(source).route, self.config.delivery.max_outbox)
        if not stored:
            self.metrics.labels(self.metrics.deduplicated, source.name).inc()
            return AcceptResult.DUPLICATE
        self.metrics.labels(self.metrics.accepted, source.name).inc()
        return AcceptResult.ACCEPTED

    async def _enqueue(self, kind: str, source: str, dedupe_key: str, thread: str,
                       payload: str, route: str, bound: int) -> bool:
        """Store an outbox item unless the outbox holds ``bound`` items (``Overloaded``) or
        it is a duplicate (returns False)."""
        if await self.store.depth() >= bound:
            raise Overloaded(retry_after=30)
        return await self.store.enqueue(kind, source, dedupe_key, thread, payload,
                                        self.config.store.dedupe_window, route=route)

    async def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observe-only hook; its errors are logged, never undo what happened."""
        try:
            await call_each(getattr(self.pm.hook, hook), **kwargs)
        except Exception:
            log.exception("a plugin's hook failed", hook=hook)

    async def seen(self, source: Source, event_id: str) -> bool:
        return await self.store.seen(source.name, event_id)

    async def conversation_of(self, source: Source, thread_key: str) -> int | None:
        return await self._sink_of(source).mapped("conversation", source.name, thread_key)

    async def livedesk_message_of(self, source: Source, message_ref: str) -> int | None:
        return await self._sink_of(source).mapped("message", source.name, message_ref)

    def inbox_of(self, source: Source) -> Inbox:
        """The inbox ``source``'s messages go to."""
        return self.inboxes[self.config.inbox_of(source.settings)]

    def _sink_of(self, source: Source) -> LivedeskSink:
        sink = self.inbox_of(source).sink
        assert sink is not None
        return sink

    @property
    def sink(self) -> LivedeskSink | None:
        """The default inbox's sink (None until started)."""
        return self.inboxes[DEFAULT_INBOX].sink

    @property
    def livedesk_url(self) -> str:
        """The default inbox's Livedesk API URL (the emulator's once started)."""
        return self.inboxes[DEFAULT_INBOX].url

    def state(self, source: Source) -> PluginState:
        return PluginState(self.store, source.name)

    def lock(self, source: Source, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.store.lock(f"plugin:{source.name}:{name}")

    # --- what each inbox's webhook receiver uses --------------------------------------------

    async def queue_reply(self, reply: OutboundReply) -> bool | None:
        """Run the reply hooks and store the reply, up to ``delivery.max_reply_outbox``;
        ``ReplyNotSupported`` if its source is not configured (any more)."""
        kept = await call_chain(self.pm.hook.livebridge_outbound_reply, reply, "reply")
        if kept is None:
            return None
        source = self.sources.get(kept.source)
        if source is None:  # its route would never run
            raise ReplyNotSupported(f"source {kept.source!r} is no longer configured")
        if kept.action != "send" and not source.edits_replies:
            self.metrics.labels(self.metrics.dropped, source.name,
                                f"reply {kept.action} not supported").inc()
            raise ReplyNotSupported(f"source {source.name!r} cannot {kept.action} a sent reply")
        return await self._enqueue(
            "reply", kept.source, kept.dedupe_key,
            f"reply\x1f{kept.source}\x1f{kept.thread_key}", kept.model_dump_json(),
            reply_route(kept.source), self.config.delivery.max_reply_outbox)

    # --- lifecycle ------------------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: open everything in order, and close it in reverse."""
        delivery = self.config.delivery
        async with contextlib.AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            await self.store.release_all()
            # aiohttp's default of 100 connections would cap the routes' concurrency: every
            # delivery worker can hold one, with headroom for the session's other callers.
            workers = (delivery.concurrency * len(self.inboxes)
                       + delivery.reply_concurrency * len(self.sources))
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=workers + _CONNECTION_HEADROOM))
            stack.push_async_callback(self.http.close)
            routes: list[Route] = []
            for inbox in self.inboxes.values():
                if inbox.emulator is not None:
                    # its data lives with the store's, so the ids the store maps stay true
                    key = "snapshot" if inbox.name == DEFAULT_INBOX else f"snapshot:{inbox.name}"
                    await stack.enter_async_context(inbox.emulator.persisted(
                        functools.partial(self.store.kv_get, "emulator", key),
                        functools.partial(self.store.kv_set, "emulator", key)))
                    inbox.url = await self._serve_emulator(inbox.emulator, stack)
                    log.warning(EMULATED_WARNING, inbox=inbox.name, emulator_api=inbox.url,
                                emulator_page=inbox.emulator_page)
                # Each inbox has its own rate and breaker: one account's trouble holds no other.
                limiter = RateLimiter(delivery.rate_limit, delivery.rate_burst)
                assert inbox.inbox_id is not None
                inbox.sink = LivedeskSink(inbox.client(self.http, limiter),
                                          self.store, inbox.inbox_id, self.notify,
                                          settle=2 * inbox.config.timeout, sources=self.sources)
                routes.append(LivedeskRoute(inbox.sink, self._flow(delivery.concurrency,
                                                                   limiter), inbox.route))
            if self.demo is not None:
                await self.demo.load()
            if self.mailer is None:
                log.warning("no smtp: host configured (SMTP_HOST in the shipped bridge.yaml): "
                            "agent replies to email and web-form customers cannot be sent")
            reply_route = self.demo.reply_route if self.demo is not None else ReplyRoute
            routes += [reply_route(source, self._flow(delivery.reply_concurrency, RateLimiter(
                delivery.reply_rate_limit, delivery.rate_burst)), self.notify,
                self._notes_client(source)) for source in self.sources.values()]
            self.routes = {route.name: route for route in routes}
            await call_each(self.pm.hook.livebridge_startup, bridge=self)
            stack.push_async_callback(self.notify, "livebridge_shutdown", bridge=self)
            for source in self.sources.values():
                await source.start()
                stack.push_async_callback(source.stop)
            self.dispatcher = Dispatcher(self.store, routes, delivery, self.metrics)
            self.dispatcher.start()
            stack.push_async_callback(self.dispatcher.stop, delivery.shutdown_timeout)
            purger = asyncio.create_task(self._purge_forever())
            stack.callback(purger.cancel)
            log.info("livebridge started", store=self.store.kind,
                     livedesk="emulator" if self.emulated else self.livedesk_url,
                     inboxes={name: inbox.describe() for name, inbox in self.inboxes.items()},
                     sources=[dict(s.describe()) for s in self.sources.values()])
            yield
            log.info("livebridge stopping")

    def _notes_client(self, source: Source) -> LivedeskClient | None:
        """Where a dead-lettered reply of ``source`` leaves its private note: its inbox's
        client (None when ``livedesk.note_failed_replies`` is off)."""
        inbox = self.inbox_of(source)
        if not inbox.config.note_failed_replies or inbox.sink is None:
            return None
        return inbox.sink.client

    def _flow(self, concurrency: int, limiter: RateLimiter) -> Flow:
        delivery = self.config.delivery
        return Flow(concurrency, Breaker(delivery.breaker_threshold, delivery.probe_interval,
                                         delivery.probe_cap), limiter,
                    # a throttle's pause must end well within an attempt that waits it out
                    min(delivery.retry_after_cap, delivery.attempt_timeout / 2))

    async def _serve_emulator(self, emulator: Emulator, stack: contextlib.AsyncExitStack) -> str:
        runner = web.AppRunner(emulator.app(), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(3600)
            with contextlib.suppress(Exception):
                await self.store.purge_expired()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the store can write and the sink is up, and each route's state: what
        ``/readyz`` shows. A failing receiver does not make the daemon unready (it still
        accepts and queues); its route says so."""
        info: dict[str, Any] = {"livedesk": "emulator" if self.emulated else "livedesk",
                                "store": self.store.kind}
        if self.emulated:
            info["warning"] = EMULATED_WARNING
        ready = self.sink is not None and self.dispatcher is not None
        try:
            await self.store.ping()
            info["store_ok"] = True
        except Exception as exc:
            ready = False
            info["store_ok"] = False
            info["store_error"] = str(exc)
        info["routes"] = {name: route.describe() for name, route in self.routes.items()}
        info["ready"] = ready
        return ready, info
