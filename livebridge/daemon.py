"""The running bridge (``Daemon``): what sources use, its routes, and its lifecycle.

Start-up goes store → Livedesk client (and the embedded emulator) → ``livebridge_startup``
hooks → sources' ``start()`` → the dispatcher last, so nothing is delivered (and no
``send_reply`` runs) before everything it needs is up; shutdown goes the reverse way.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pluggy
import structlog
from aiohttp import web

from livebridge.config import Config
from livebridge.exceptions import Overloaded, ReplyNotSupported
from livebridge.livedesk.client import LivedeskClient
from livebridge.livedesk.emulator import Emulator
from livebridge.livedesk.route import ROUTE, LivedeskRoute
from livebridge.livedesk.sink import LivedeskSink
from livebridge.mailer import Mailer
from livebridge.metrics import Metrics
from livebridge.model import InboundMessage, OutboundReply
from livebridge.outbox import Breaker, Dispatcher, Flow, RateLimiter, Route
from livebridge.plugins import call_chain, call_each, collect_source_types
from livebridge.replies import ReplyReceiver, ReplyRoute, reply_route
from livebridge.source import AcceptResult, Bridge, PluginState, Source
from livebridge.store import create_store

__all__ = ["EMULATED_WARNING", "Daemon"]

log = structlog.get_logger("livebridge")

EMULATOR_CREDENTIALS = ("emulator", "emulator", 1)
#: Connections the shared HTTP session allows beyond the routes' concurrency, headroom for
#: its other callers (sources' API calls, reply lookups); aiohttp's default limit.
_CONNECTION_HEADROOM = 100
EMULATED_WARNING = (
    "LIVEDESK_BASE_URL is not set: messages go to the BUILT-IN LIVEDESK EMULATOR, "
    "nothing reaches the real Livedesk"
)


class Daemon(Bridge):
    """The running bridge: store, Livedesk sink, routes, dispatcher and sources."""

    def __init__(self, config: Config, pm: pluggy.PluginManager) -> None:
        self.config = config
        self.pm = pm
        self.metrics = Metrics()
        ld = config.livedesk
        self.emulated = ld.emulated
        types = collect_source_types(pm)
        self.sources: dict[str, Source] = {
            s.name: types[s.type](s, self) for s in config.sources
        }
        self.store = create_store(config.store)
        secret = ld.webhook_secret.get_secret_value() if ld.webhook_secret else None
        self.emulator: Emulator | None = None
        if self.emulated:
            # Demo mode: the embedded emulator signs its webhooks with a secret made now, so
            # the webhook path takes nothing unsigned even when none is configured.
            secret = secret or secrets.token_hex(32)
            key, api_secret, inbox = EMULATOR_CREDENTIALS
            self.emulator = Emulator(api_key=key, api_secret=api_secret, inbox_id=inbox,
                                     webhook_secret=secret)
        self.replies = ReplyReceiver(self, secret, ld.webhook_max_age,
                                     forward_templates=ld.forward_templates)
        self.livedesk_url = ld.base_url or ""
        self.sink: LivedeskSink | None = None
        self.routes: dict[str, Route] = {}
        self.dispatcher: Dispatcher | None = None
        self.mailer = Mailer(config.smtp) if config.smtp is not None else None
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
            kept.model_dump_json(), ROUTE, self.config.delivery.max_outbox)
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
        assert self.sink is not None
        return await self.sink.mapped("conversation", source.name, thread_key)

    async def livedesk_message_of(self, source: Source, message_ref: str) -> int | None:
        assert self.sink is not None
        return await self.sink.mapped("message", source.name, message_ref)

    def state(self, source: Source) -> PluginState:
        return PluginState(self.store, source.name)

    def lock(self, source: Source, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.store.lock(f"plugin:{source.name}:{name}")

    # --- ReplyHost (what the webhook receiver uses) ---------------------------------------

    async def thread_of(self, conversation_id: int) -> dict[str, Any] | None:
        """The source thread recorded for a Livedesk conversation."""
        assert self.sink is not None
        return await self.sink.thread_of(conversation_id)

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
            workers = delivery.concurrency + delivery.reply_concurrency * len(self.sources)
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=workers + _CONNECTION_HEADROOM))
            stack.push_async_callback(self.http.close)
            if self.emulator is not None:
                self.livedesk_url = await self._serve_emulator(stack)
                log.warning(EMULATED_WARNING, emulator_api=self.livedesk_url,
                            emulator_page="/emulator/")
            limiter = RateLimiter(delivery.rate_limit, delivery.rate_burst)
            self.sink = LivedeskSink(self._client(limiter), self.store, self._inbox_id(),
                                     self.notify, settle=2 * self.config.livedesk.timeout,
                                     sources=self.sources)
            routes: list[Route] = [LivedeskRoute(self.sink, self._flow(
                delivery.concurrency, limiter))]
            routes += [ReplyRoute(source, self._flow(delivery.reply_concurrency, RateLimiter(
                delivery.reply_rate_limit, delivery.rate_burst)), self.notify)
                for source in self.sources.values()]
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
                     sources=[dict(s.describe()) for s in self.sources.values()])
            yield
            log.info("livebridge stopping")

    def _flow(self, concurrency: int, limiter: RateLimiter) -> Flow:
        delivery = self.config.delivery
        return Flow(concurrency, Breaker(delivery.breaker_threshold, delivery.probe_interval,
                                         delivery.probe_cap), limiter, delivery.retry_after_cap)

    def _client(self, limiter: RateLimiter) -> LivedeskClient:
        ld = self.config.livedesk
        if self.emulated:
            key, secret, _ = EMULATOR_CREDENTIALS
        else:
            assert ld.api_key is not None and ld.api_secret is not None
            key, secret = ld.api_key.get_secret_value(), ld.api_secret.get_secret_value()
        return LivedeskClient(self.http, self.livedesk_url, key, secret, timeout=ld.timeout,
                              metrics=self.metrics, limiter=limiter)

    def _inbox_id(self) -> int:
        if self.emulated:
            return EMULATOR_CREDENTIALS[2]
        assert self.config.livedesk.inbox_id is not None
        return self.config.livedesk.inbox_id

    async def _serve_emulator(self, stack: contextlib.AsyncExitStack) -> str:
        assert self.emulator is not None
        runner = web.AppRunner(self.emulator.app(), access_log=None)
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
