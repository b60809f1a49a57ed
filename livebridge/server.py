"""Serving the daemon's application with the server-level bounds on hostile clients.

One runner serves ``livebridge run`` and the test harness (``make_bridge``), so both have:

- a **header read timeout** (``server.header_timeout``): a connection whose request line and
  headers are not complete that long after it opened (or after its previous answer) is closed;
- a **cap on concurrent connections per client address** (``server.max_connections_per_client``):
  one more is answered ``429`` and closed before anything is read;
- **client disconnects logged at debug**, not as an error-level traceback;
- **no log flood when the process runs out of file descriptors**: asyncio logs a failed
  ``accept()`` once per refused connection attempt; that is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from livebridge.config import ServerConfig

__all__ = ["BridgeRunner", "run"]

log = structlog.get_logger("livebridge.server")

#: How often a repeated warning (refused connections, no file descriptors) is logged at most.
WARN_EVERY = 60.0
_REFUSAL = b"too many connections from your address\n"
_TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\n"
             b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
             % (len(_REFUSAL), _REFUSAL))
_ACCEPT_FAILED = "socket.accept() out of system resource"
#: After a failed accept(), asyncio schedules a retry once per connection it could not take;
#: those that fire after the listening socket closed fail too (at shutdown).
_ACCEPT_RETRY = "BaseSelectorEventLoop._start_serving"


class _Every:
    """Lets a repeated event through at most once per ``period`` seconds; counts the rest."""

    def __init__(self, period: float = WARN_EVERY) -> None:
        self.period = period
        self.suppressed = 0
        self._next = 0.0

    def due(self) -> bool:
        """Whether to log now (then ``suppressed`` says how many were not logged before)."""
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.period
        return True

    @property
    def seen(self) -> bool:
        """Whether the event happened at all."""
        return self._next > 0

    def take(self) -> int:
        """The suppressed count, reset."""
        count, self.suppressed = self.suppressed, 0
        return count


class _GuardedServer(web.Server):
    """aiohttp's low-level server, counting connections per client address."""

    def __init__(self, made: web.Server, max_per_client: int, **kwargs: Any) -> None:
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation, **kwargs)
        self.max_per_client = max_per_client
        self._open: Counter[str] = Counter()
        self._address: dict[RequestHandler, str] = {}
        self._refusals = _Every()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self._address[handler] = address
        self._open[address] += 1
        if self.max_per_client and self._open[address] > self.max_per_client:
            transport.write(_TOO_MANY)
            # Closed (the answer flushed first) once the handler's task has taken its first
            # step, two loop turns from now: closed from here, the connection would be gone
            # before that task starts, and it would fail on the missing server.
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, handler.force_close)
            if self._refusals.due():
                log.warning("too many connections from one client address: refused with 429",
                            client=address, limit=self.max_per_client,
                            refused_before=self._refusals.take())

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        address = self._address.pop(handler, None)
        if address is not None:
            self._open[address] -= 1
            if not self._open[address]:
                del self._open[address]
        super().connection_lost(handler, exc)


@web.middleware
async def _quiet_disconnects(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
    """A client gone mid-request is routine: one debug line, not a 500 with a traceback."""
    try:
        return await handler(request)
    except ConnectionError:
        if request.transport is not None and not request.transport.is_closing():
            raise  # the client is still there: a real failure (e.g. an outbound call)
        log.debug("client disconnected mid-request", method=request.method, path=request.path)
        return web.Response(status=499)  # never written: nobody is listening


class BridgeRunner(web.AppRunner):
    """``web.AppRunner`` with the guards of ``server`` (see the module docstring)."""

    def __init__(self, app: web.Application, server: ServerConfig, **kwargs: Any) -> None:
        if _quiet_disconnects not in app.middlewares:
            app.middlewares.append(_quiet_disconnects)
        # aiohttp's keep-alive timer starts when a connection opens and again after each
        # answer, and closes the connection if no complete request arrived by then: with it
        # set to header_timeout, that is the header read timeout (and the idle timeout).
        kwargs = {**kwargs, "keepalive_timeout": server.header_timeout, "access_log": None,
                  "handler_cancellation": False}  # as `livebridge run`: handlers run to the end
        super().__init__(app, **kwargs)
        self._handler_args = {k: v for k, v in kwargs.items() if k not in (
            "handle_signals", "shutdown_timeout", "handler_cancellation")}
        self._max_per_client = server.max_connections_per_client
        self._previous_handler: Any = None
        self._fd_warnings = _Every()

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        return _GuardedServer(made, self._max_per_client, loop=loop, **self._handler_args)

    async def _cleanup_server(self) -> None:
        if not self._fd_warnings.seen:  # else accept() retries may still fire: keep quiet
            asyncio.get_running_loop().set_exception_handler(self._previous_handler)
        await super()._cleanup_server()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if self._fd_warnings.seen and _ACCEPT_RETRY in message:
            return
        if message == _ACCEPT_FAILED:
            if self._fd_warnings.due():
                log.warning("cannot accept connections: out of file descriptors (raise "
                            "`ulimit -n`, or lower server.header_timeout and "
                            "server.max_connections_per_client)",
                            error=str(context.get("exception")),
                            repeated=self._fd_warnings.take())
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)


def run(app: web.Application, server: ServerConfig, *, shutdown_timeout: float) -> None:
    """Serve ``app`` on ``server.host:port`` until SIGINT or SIGTERM, then clean up (giving
    open requests ``shutdown_timeout`` seconds)."""

    async def serve() -> None:
        runner = BridgeRunner(app, server, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, server.host, server.port).start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())
