"""Server-level bounds (issue 13): slow headers and slow bodies are cut off, one client address
cannot hold more than its share of connections, a client going away is routine, and running
out of file descriptors does not flood the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from livebridge.testing import BridgeHarness, free_port

from .conftest import HealthWatcher, RawConnection, nothing_stored

Raw = Callable[[BridgeHarness], Awaitable[RawConnection]]
Health = Callable[[BridgeHarness], HealthWatcher]
FORM = {"type": "form", "rate_limit": 0}
#: How long a slow sender keeps going before the test gives up on the daemon closing it:
#: many times the configured timeout (0.5 s).
PATIENCE = 40


async def test_slow_headers_are_cut_off(make_bridge: Any, raw: Raw, health: Health) -> None:
    bridge = await make_bridge({"server": {"header_timeout": 0.5}, "sources": [FORM]})

    async def slow_headers() -> bool:
        # One header byte every 50 ms: the headers never complete within PATIENCE timeouts.
        conn = await raw(bridge)
        return await conn.send_slowly(b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 400,
                                      interval=0.05)

    closed = await health(bridge).during(slow_headers)
    assert closed, "the daemon kept a connection whose headers never completed"


async def test_a_connection_that_sends_nothing_is_closed(make_bridge: Any, raw: Raw) -> None:
    bridge = await make_bridge({"server": {"header_timeout": 0.5}, "sources": [FORM]})
    conn = await raw(bridge)
    assert await asyncio.wait_for(conn.reader.read(), 0.5 * PATIENCE) == b""


async def test_slow_body_is_cut_off(make_bridge: Any, raw: Raw, health: Health) -> None:
    bridge = await make_bridge({"server": {"header_timeout": 0.5, "body_timeout": 0.5},
                                "sources": [FORM]})
    body = b"email=ada%40example.com&message=" + b"a" * 400

    async def slow_body() -> bool:
        conn = await raw(bridge)
        await conn.send(b"POST /form HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body))
        return await conn.send_slowly(body, interval=0.05)

    closed = await health(bridge).during(slow_body)
    assert closed, "the daemon waited for a body sent a byte at a time"
    await nothing_stored(bridge)


async def test_connections_per_client_address_are_capped(make_bridge: Any, raw: Raw,
                                                         health: Health) -> None:
    bridge = await make_bridge({"server": {"max_connections_per_client": 4},
                                "sources": [FORM]})
    held = [await raw(bridge) for _ in range(4)]

    async def one_more() -> int:
        extra = await raw(bridge)
        await extra.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return await extra.status()

    # The watcher polls from another address: this client's cap does not apply to it.
    assert await health(bridge).during(one_more) == 429
    for conn in held:  # the held connections are served
        await conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await conn.status() == 200
    # One held connection ends (the daemon closes it after its answer, so it has counted it
    # gone when this client reads the end): a new one is served.
    await held[0].send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert await held[0].status() == 200
    await held[0].reader.read()
    again = await raw(bridge)
    await again.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await again.status() == 200


async def test_a_client_gone_mid_request_is_logged_at_debug(
        make_bridge: Any, raw: Raw, caplog: pytest.LogCaptureFixture) -> None:
    bridge = await make_bridge({"sources": [FORM]})
    conn = await raw(bridge)
    caplog.set_level(logging.DEBUG)
    gone = asyncio.Event()

    def watch(_logger: Any, _name: str, event: Any) -> Any:
        if event["event"] == "client disconnected mid-request":
            gone.set()
        return event

    with structlog.testing.capture_logs(processors=[watch]) as events:
        await conn.send(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Expect: 100-continue\r\n\r\n")
        assert await conn.status() == 100  # routed: the form's handler is about to read
        await conn.send(b"message=")
        conn.close()
        await asyncio.wait_for(gone.wait(), 10)
    [line] = [e for e in events if e["event"] == "client disconnected mid-request"]
    assert line["log_level"] == "debug" and line["path"] == "/form"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [e for e in events if e["log_level"] in ("error", "critical")]
    await nothing_stored(bridge)


OUT_OF_FDS = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
from livebridge.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


@pytest.mark.slow
def test_running_out_of_file_descriptors_does_not_flood_the_log(tmp_path: Path) -> None:
    """With every descriptor taken by idle connections, each new connection attempt made
    asyncio log a failed ``accept()`` (8,500 lines/s under load): now once a minute."""
    port = free_port()
    config = {"server": {"host": "127.0.0.1", "port": port, "header_timeout": 600,
                         "max_connections_per_client": 0},
              "store": {"url": f"sqlite:///{tmp_path / 'b.db'}"},
              "logging": {"format": "json", "level": "info"}, "sources": [FORM]}
    (tmp_path / "bridge.yaml").write_text(yaml.safe_dump(config))
    limit = 96
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 4 * limit
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", OUT_OF_FDS, str(limit),
                                 str(tmp_path / "bridge.yaml")], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        _exhaust(port, proc, log_path, 3 * limit)
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    out_of_fds = [line for line in lines if "accept" in line["event"]]
    assert len(out_of_fds) == 1, [line["event"] for line in lines][-20:]
    assert len(log_path.read_text().splitlines()) < 50


def _exhaust(port: int, proc: subprocess.Popen[bytes], log_path: Path, attempts: int) -> None:
    """Wait for the daemon, then open idle connections past its descriptor limit until it
    logs that ``accept()`` failed; hold them (queued connections keep it failing) a while."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)  # polling another process's start-up
    held = []
    for _ in range(attempts):  # the last ones wait in the listen queue (the connect may too)
        with contextlib.suppress(OSError):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        if "accept" in log_path.read_text():
            break
    assert "accept" in log_path.read_text(), "the daemon never ran out of descriptors"
    time.sleep(3)  # the window observed: asyncio retries accept() every second
    for sock in held:
        sock.close()
