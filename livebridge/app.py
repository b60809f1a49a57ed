"""The daemon: an aiohttp application factory shared by the CLI and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pluggy
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livebridge.config import Config
from livebridge.delivery import Dispatcher
from livebridge.exceptions import ConfigError, Overloaded
from livebridge.forms import BODY_TIMEOUT
from livebridge.livedesk.client import LivedeskClient, TokenBucket
from livebridge.livedesk.emulator import Emulator
from livebridge.livedesk.sink import LivedeskSink
from livebridge.livedesk.webhook import ReplyRouter
from livebridge.mailer import Mailer
from livebridge.metrics import Metrics
from livebridge.model import InboundMessage, OutboundReply
from livebridge.plugins import call_chain, call_each, collect_source_types
from livebridge.source import AcceptResult, Bridge, PluginState, Source
from livebridge.store import OutboxItem, create_store

__all__ = ["CONFIG", "DAEMON", "Daemon", "collect_source_types", "create_app"]

log = structlog.get_logger("livebridge")

CONFIG = web.AppKey("config", Config)
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")

EMULATOR_CREDENTIALS = ("emulator", "emulator", 1)
#: Connections the shared HTTP session allows beyond ``delivery.concurrency``, headroom for
#: its other callers (sources' API calls, reply lookups); aiohttp's default limit.
_CONNECTION_HEADROOM = 100
_EMULATED_WARNING = (
    "LIVEDESK_BASE_URL is not set: messages go to the BUILT-IN LIVEDESK EMULATOR, "
    "nothing reaches the real Livedesk"
)


class Daemon(Bridge):
    """The running bridge: store, Livedesk sink, delivery workers and sources."""

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
        self.emulator: Emulator | None = None
        if self.emulated:
            key, secret, inbox = EMULATOR_CREDENTIALS
            self.emulator = Emulator(api_key=key, api_secret=secret, inbox_id=inbox)
        self.livedesk_url = config.livedesk.base_url or ""
        self.sink: LivedeskSink | None = None
        self.dispatcher: Dispatcher | None = None
        self.replies = ReplyRouter(self)
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
        stored = await self.enqueue("inbound", source.name, kept.event_id,
                                    f"{source.name}\x1f{kept.thread_key}", kept.model_dump_json())
        if not stored:
            self.metrics.labels(self.metrics.deduplicated, source.name).inc()
            return AcceptResult.DUPLICATE
        self.metrics.labels(self.metrics.accepted, source.name).inc()
        return AcceptResult.ACCEPTED

    async def enqueue(self, kind: str, source: str, dedupe_key: str, thread: str,
                      payload: str) -> bool:
        """Store an outbox item unless the outbox is full (``Overloaded``) or it is a
        duplicate (returns False)."""
        if await self.store.depth() >= self.config.delivery.max_outbox:
            raise Overloaded(retry_after=30)
        return await self.store.enqueue(kind, source, dedupe_key, thread, payload,
                                        self.config.store.dedupe_window)

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

    # --- delivery handlers ----------------------------------------------------------------

    async def _deliver_inbound(self, item: OutboxItem) -> None:
        assert self.sink is not None
        await self.sink.deliver(InboundMessage.model_validate_json(item.payload))

    async def _deliver_reply(self, item: OutboxItem) -> None:
        reply = OutboundReply.model_validate_json(item.payload)
        await self.replies.send(reply)

    def _inbox_id(self) -> int:
        if self.emulated:
            return EMULATOR_CREDENTIALS[2]
        assert self.config.livedesk.inbox_id is not None
        return self.config.livedesk.inbox_id

    # --- lifecycle ------------------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: open everything in order, and close it in reverse."""
        async with contextlib.AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            await self.store.release_all()
            # aiohttp's default of 100 connections would cap delivery.concurrency: every
            # delivery worker can hold one, with headroom for the session's other callers.
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=self.config.delivery.concurrency + _CONNECTION_HEADROOM))
            stack.push_async_callback(self.http.close)
            if self.emulator is not None:
                self.livedesk_url = await self._serve_emulator(stack)
                log.warning(_EMULATED_WARNING, emulator_api=self.livedesk_url,
                            emulator_page="/emulator/")
            self.sink = LivedeskSink(self._client(), self.store, self._inbox_id(), self.notify,
                                     settle=2 * self.config.livedesk.timeout,
                                     sources=self.sources)
            self.dispatcher = Dispatcher(
                self.store, {"inbound": self._deliver_inbound, "reply": self._deliver_reply},
                self.config.delivery, self.metrics,
            )
            self.dispatcher.start()
            stack.push_async_callback(self.dispatcher.stop, self.config.delivery.shutdown_timeout)
            await call_each(self.pm.hook.livebridge_startup, bridge=self)
            stack.push_async_callback(self.notify, "livebridge_shutdown", bridge=self)
            for source in self.sources.values():
                await source.start()
                stack.push_async_callback(source.stop)
            purger = asyncio.create_task(self._purge_forever())
            stack.callback(purger.cancel)
            log.info("livebridge started", store=self.store.kind,
                     livedesk="emulator" if self.emulated else self.livedesk_url,
                     sources=[dict(s.describe()) for s in self.sources.values()])
            yield
            log.info("livebridge stopping")

    def _client(self) -> LivedeskClient:
        ld, delivery = self.config.livedesk, self.config.delivery
        if self.emulated:
            key, secret, _ = EMULATOR_CREDENTIALS
        else:
            assert ld.api_key is not None and ld.api_secret is not None
            key, secret = ld.api_key.get_secret_value(), ld.api_secret.get_secret_value()
        return LivedeskClient(
            self.http, self.livedesk_url, key, secret, timeout=ld.timeout, metrics=self.metrics,
            limiter=TokenBucket(delivery.rate_limit, delivery.rate_burst),
        )

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
        """Whether the store and the sink are ready, and what ``/readyz`` shows."""
        info: dict[str, Any] = {"livedesk": "emulator" if self.emulated else "livedesk",
                                "store": self.store.kind}
        if self.emulated:
            info["warning"] = _EMULATED_WARNING
        ready = self.sink is not None
        try:
            await self.store.ping()
            info["store_ok"] = True
        except Exception as exc:
            ready = False
            info["store_ok"] = False
            info["store_error"] = str(exc)
        if self.dispatcher is not None and self.dispatcher.paused_for:
            info["delivery_paused_for"] = round(self.dispatcher.paused_for, 1)
        info["ready"] = ready
        return ready, info


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def _readyz(request: web.Request) -> web.Response:
    ready, info = await request.app[DAEMON].readiness()
    return web.json_response(info, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    m = daemon.metrics
    with contextlib.suppress(Exception):
        stats = await daemon.store.stats()
        m.outbox_depth.set(stats.depth)
        m.outbox_oldest_age.set(time.time() - stats.oldest_created_at
                                if stats.oldest_created_at else 0)
        m.in_flight.set(stats.in_flight)
        m.dead_letters.set(stats.dead_letters)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _index(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    links = [f"<li>{s.type_name}: <code>{s.settings.path or ''}</code></li>"
             for s in daemon.sources.values()]
    if daemon.emulated:
        links.append('<li><a href="emulator/">Livedesk emulator</a> (nothing reaches the real '
                     "Livedesk)</li>")
    html = ("<!doctype html><html lang=en><meta charset=utf-8><title>livebridge</title>"
            f"<h1>livebridge</h1><ul>{''.join(links)}</ul>"
            '<p><a href="healthz">healthz</a> · <a href="readyz">readyz</a> · '
            '<a href="metrics">metrics</a></p></html>')
    return web.Response(text=html, content_type="text/html")


def create_app(config: Config, pm: pluggy.PluginManager) -> web.Application:
    """Build the daemon's application; resources open in its ``cleanup_ctx``."""
    app = web.Application(client_max_size=config.server.max_body_bytes)
    daemon = Daemon(config, pm)
    app[CONFIG] = config
    app[DAEMON] = daemon
    app[BODY_TIMEOUT] = config.server.body_timeout
    app.cleanup_ctx.append(daemon.lifecycle)
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    ld = config.livedesk
    if ld.emulated or ld.webhook_secret is not None or ld.allow_unsigned_webhooks:
        app.router.add_post(ld.webhook_path, daemon.replies.handle_webhook)
    else:
        log.warning("agent replies are OFF: set LIVEDESK_WEBHOOK_SECRET (the channel's webhook "
                    "secret), or livedesk.allow_unsigned_webhooks: true behind a trusted proxy")
    owners: dict[tuple[str, str], str] = {("POST", ld.webhook_path): "the Livedesk webhook"}
    for source in daemon.sources.values():
        routes = source.routes()
        for route in routes:
            key = (route.method, route.path)
            if key in owners:
                raise ConfigError(config.path, [
                    f"sources: {source.name!r} and {owners[key]} both serve {route.method} "
                    f"{route.path}; give one of them another path"])
            owners[key] = repr(source.name)
        app.router.add_routes(routes)
    if daemon.emulator is not None:
        app.add_subapp("/emulator/", daemon.emulator.app())
    return app
