"""The web form under hostile input (issue 13): each request is refused with a clear 4xx at a
cost linear in its size, the health endpoints answer meanwhile, and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from livebridge.testing import BridgeHarness

from .conftest import HealthWatcher, assert_linear_cost, nothing_stored

#: No per-IP limit: the linear-cost checks post the same request many times.
FORM = {"sources": [{"type": "form", "rate_limit": 0}]}
#: Punycode decodes ``-`` followed by n letters in O(n^2) (100 KB: about 0.6 s on the loop).
PUNY = 50_000
JSON_HEADERS = {"Accept": "application/json"}


async def post(bridge: BridgeHarness, data: Any, expected: int, **headers: str
               ) -> dict[str, Any]:
    """POST ``data`` to ``/form`` and check the answer code; the JSON answer."""
    async with bridge.client.post("/form", data=data, headers={**JSON_HEADERS, **headers}
                                  ) as resp:
        body = await resp.read()
        assert resp.status == expected, body[:300]
        return dict(json.loads(body))


def punycode_bomb(n: int) -> bytes:
    return b"message=-" + b"a" * n


BOUNDARY = "hostile-boundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(*parts: tuple[str, str, bytes]) -> bytes:
    """A multipart/form-data body of (name, part Content-Type, data) parts."""
    out = b""
    for name, ctype, data in parts:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def multipart_bomb(n: int) -> bytes:
    return multipart(("email", "text/plain", b"ada@example.com"),
                     ("message", "text/plain; charset=punycode", b"-" + b"a" * n))


async def test_punycode_form_post_is_refused_in_linear_time(
        make_bridge: Any, health: Callable[[BridgeHarness], HealthWatcher]) -> None:
    bridge = await make_bridge(FORM)
    ctype = "application/x-www-form-urlencoded; charset=punycode"
    bomb = punycode_bomb(2 * PUNY)
    answer = await health(bridge).during(lambda: post(bridge, bomb, 400, **{"Content-Type": ctype}))
    assert answer["error"] == "unknown charset"
    await assert_linear_cost(
        lambda n: post(bridge, punycode_bomb(n), 400, **{"Content-Type": ctype}), PUNY)
    await nothing_stored(bridge)


async def test_punycode_multipart_part_is_refused_in_linear_time(
        make_bridge: Any, health: Callable[[BridgeHarness], HealthWatcher]) -> None:
    bridge = await make_bridge(FORM)
    bomb = multipart_bomb(2 * PUNY)
    answer = await health(bridge).during(lambda: post(bridge, bomb, 400, **MULTIPART))
    assert answer["error"] == "unknown charset"
    await assert_linear_cost(lambda n: post(bridge, multipart_bomb(n), 400, **MULTIPART), PUNY)
    await nothing_stored(bridge)


async def test_json_declared_in_an_unknown_charset_is_refused(make_bridge: Any) -> None:
    bridge = await make_bridge(FORM)
    body = json.dumps({"email": "ada@example.com", "message": "hello"}).encode()
    answer = await post(bridge, body, 400, **{"Content-Type": "application/json; charset=punycode"})
    assert answer["error"] == "unknown charset"
    await nothing_stored(bridge)


async def test_json_with_many_fields_that_are_not_text_is_capped(
        make_bridge: Any, health: Callable[[BridgeHarness], HealthWatcher]) -> None:
    """Each value that is not text was listed in the 422 (and its log line): one per key."""
    bridge = await make_bridge(FORM)

    def many(n: int) -> bytes:
        return json.dumps(dict.fromkeys((f"f{i}" for i in range(n)), True)).encode()

    ctype = {"Content-Type": "application/json"}
    body = many(20_000)
    answer = await health(bridge).during(lambda: post(bridge, body, 413, **ctype))
    assert answer["error"].startswith("too many fields")
    await assert_linear_cost(lambda n: post(bridge, many(n), 413, **ctype), 20_000)
    await nothing_stored(bridge)


async def test_deeply_nested_json_is_refused_in_linear_time(make_bridge: Any) -> None:
    bridge = await make_bridge(FORM)

    def nested(n: int) -> bytes:
        return b'{"message": ' + b"[" * n + b"]" * n + b"}"

    ctype = {"Content-Type": "application/json"}
    await post(bridge, nested(100_000), 400, **ctype)
    await assert_linear_cost(lambda n: post(bridge, nested(n), 400, **ctype), 100_000)
    await nothing_stored(bridge)


def empty_parts(n: int) -> bytes:
    """``n`` empty multipart parts: framing only (about 50 bytes each), no part data."""
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n'.encode()
    return part * n + f"--{BOUNDARY}--\r\n".encode()


async def chunked(body: bytes) -> AsyncIterator[bytes]:
    """``body`` sent with chunked encoding (no Content-Length to refuse it by)."""
    for start in range(0, len(body), 65536):
        yield body[start:start + 65536]


async def test_multipart_framing_counts_against_the_body_cap(
        make_bridge: Any, health: Callable[[BridgeHarness], HealthWatcher]) -> None:
    """Chunked, so no Content-Length; only framing, so no part data to count: 2.9 MiB of it
    was parsed for 9.5 s before the 413."""
    bridge = await make_bridge(FORM)
    bomb = empty_parts(24_000)  # 1.2 MiB, past the form's cap of 1 MiB

    async def post_chunked(body: bytes) -> dict[str, Any]:
        return await post(bridge, chunked(body), 413, **MULTIPART)

    answer = await health(bridge).during(lambda: post_chunked(bomb))
    assert answer["error"].startswith("body too large")
    await assert_linear_cost(lambda n: post_chunked(empty_parts(n)), 8_000)
    await nothing_stored(bridge)
