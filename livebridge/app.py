"""The daemon's HTTP face: ``create_app`` (shared by the CLI and the tests), with health,
readiness, metrics and the index page; the bridge itself is ``livebridge.daemon``."""

from __future__ import annotations

import contextlib
import time

import pluggy
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livebridge.config import Config
from livebridge.daemon import Daemon
from livebridge.exceptions import ConfigError
from livebridge.forms import BODY_TIMEOUT

__all__ = ["CONFIG", "DAEMON", "create_app"]

log = structlog.get_logger("livebridge")

_BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

CONFIG = web.AppKey("config", Config)
DAEMON = web.AppKey("daemon", Daemon)


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
    for name, route in daemon.routes.items():
        m.route_state.labels(name).set(_BREAKER_STATES[route.breaker.state])
        m.route_rate.labels(name).set(route.limiter.rate)
        m.route_paused.labels(name).set(route.paused_for)
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
    if daemon.replies.secret is not None or ld.allow_unsigned_webhooks:
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
