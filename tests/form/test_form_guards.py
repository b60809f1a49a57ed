"""Refused posts: each answers a clear 4xx naming the problem, and stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

JSON = {"Accept": "application/json"}
ANN = {"name": "Ann", "email": "ann@example.com", "message": "hello"}
SITE = "https://www.example.com"


@pytest.mark.parametrize("data", [{}, {"name": " ", "email": "", "message": "\n"}])
async def test_empty_form_is_400(start_form: Any, nothing_stored: Any,
                                 data: dict[str, str]) -> None:
    bridge = await start_form()
    for kwargs in ({"data": data}, {"json": data}):
        resp = await bridge.client.post("/form", headers=JSON, **kwargs)
        assert (resp.status, (await resp.json())["error"]) == (400, "empty form")
    await nothing_stored(bridge)


async def test_missing_and_invalid_fields_are_422_naming_each(start_form: Any,
                                                             nothing_stored: Any) -> None:
    bridge = await start_form()

    async def problems(data: dict[str, str]) -> dict[str, str]:
        resp = await bridge.client.post("/form", data=data, headers=JSON)
        assert resp.status == 422
        body = await resp.json()
        assert body["error"] == "invalid fields"
        return dict(body["fields"])

    assert await problems({"email": "ann@", "name": "Ann"}) == {
        "email": "not a valid email address", "message": "required"}
    either = "required: give an email address or a phone number"
    assert await problems({"message": "hi"}) == {"email": either, "phone": either}
    assert (await problems({"phone": "12", "message": "hi"}))["phone"].startswith(
        "not a valid phone number")
    assert await problems({**ANN, "name": "x" * 201}) == {
        "name": "too long (at most 200 characters)"}
    for bad in ("ann example.com", "ann@example", "a..b@example.com", "<a@example.com>"):
        assert await problems({**ANN, "email": bad}) == {"email": "not a valid email address"}
    await nothing_stored(bridge)


async def test_malformed_bodies_are_refused(start_form: Any, nothing_stored: Any) -> None:
    bridge = await start_form()
    post = bridge.client.post
    cases: list[tuple[int, str, dict[str, Any]]] = [
        (400, "malformed JSON", {"data": b"{", "headers": {"Content-Type": "application/json"}}),
        (400, "expected a JSON object of fields", {"json": ["a"]}),
        (422, "invalid fields", {"json": {**ANN, "email": {"x": 1}}}),
        (415, "unsupported content type (use a form post or JSON)",
         {"data": b"hello", "headers": {"Content-Type": "text/plain"}}),
        (400, "malformed multipart body",
         {"data": b"--x\r\nnonsense", "headers": {"Content-Type": "multipart/form-data"}}),
        (400, "malformed multipart body", {"data": b"garbage", "headers": {
            "Content-Type": "multipart/form-data; boundary=zzz"}}),
        (400, "form is not valid UTF-8", {"data": b"message=\xff\xfe", "headers": {
            "Content-Type": "application/x-www-form-urlencoded"}}),
    ]
    for status, error, kwargs in cases:
        headers = {**JSON, **kwargs.pop("headers", {})}
        resp = await post("/form", headers=headers, **kwargs)
        assert (resp.status, (await resp.json())["error"]) == (status, error), kwargs
    await nothing_stored(bridge)


async def test_body_cap_is_413(start_form: Any, nothing_stored: Any) -> None:
    bridge = await start_form(max_body_bytes=1000)
    big = {**ANN, "message": "x" * 2000}
    resp = await bridge.client.post("/form", data=big, headers=JSON)
    assert (resp.status, (await resp.json())["error"]) == (413, "body too large (at most 1000 "
                                                                "bytes)")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"message=" + b"y" * 100 + b"&"

    resp = await bridge.client.post("/form", data=chunked(), headers={
        **JSON, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 413
    form = aiohttp.FormData()
    form.add_field("email", "ann@example.com")
    form.add_field("message", "z" * 2000)
    resp = await bridge.client.post("/form", data=form, headers=JSON)
    assert resp.status == 413
    await nothing_stored(bridge)


async def test_file_cap_is_413(start_form: Any, nothing_stored: Any) -> None:
    bridge = await start_form(max_file_bytes=10)

    def upload(size: int) -> aiohttp.FormData:
        form = aiohttp.FormData()
        for name, value in ANN.items():
            form.add_field(name, value)
        form.add_field("file", b"a" * size, filename="big.bin")
        return form

    resp = await bridge.client.post("/form", data=upload(11), headers=JSON)
    assert (resp.status, (await resp.json())["error"]) == (413, "file too large (at most 10 "
                                                                "bytes)")
    await nothing_stored(bridge)
    resp = await bridge.client.post("/form", data=upload(10), headers=JSON)
    assert resp.status == 200


async def test_rate_limit_is_429_per_client_ip(start_form: Any) -> None:
    bridge = await start_form(rate_limit=2, rate_window="1h")
    for _ in range(2):
        assert (await bridge.client.post("/form", data=ANN, headers=JSON)).status == 200
    resp = await bridge.client.post("/form", data=ANN, headers=JSON)
    assert resp.status == 429
    assert 3590 <= int(resp.headers["Retry-After"]) <= 3600
    # X-Forwarded-For is not trusted unless configured: no way around the limit.
    spoof = await bridge.client.post("/form", data=ANN, headers={
        **JSON, "X-Forwarded-For": "203.0.113.9"})
    assert spoof.status == 429
    await bridge.wait_idle()
    assert len(bridge.emulator.state.messages) == 2


async def test_rate_limit_behind_a_trusted_proxy(start_form: Any) -> None:
    bridge = await start_form(rate_limit=1, trust_forwarded_for=True)

    async def post(forwarded_for: str) -> int:
        resp = await bridge.client.post("/form", data=ANN, headers={
            **JSON, "X-Forwarded-For": forwarded_for})
        return int(resp.status)

    assert await post("203.0.113.9") == 200
    assert await post("198.51.100.1, 203.0.113.9") == 429  # the proxy's (last) hop counts
    assert await post("203.0.113.10") == 200


async def test_forged_cross_site_posts_are_403(start_form: Any, nothing_stored: Any) -> None:
    bridge = await start_form(allowed_origins=[SITE])
    forged = [{"Origin": "https://evil.example"}, {"Origin": "null"},
              {"Referer": "https://evil.example/page"}, {"Origin": "https://www.example.com.evil"},
              {"Origin": "http://www.example.com"}]
    for headers in forged:
        resp = await bridge.client.post("/form", data=ANN, headers={**JSON, **headers})
        assert (resp.status, (await resp.json())["error"]) == (403, "origin not allowed")
        assert "Access-Control-Allow-Origin" not in resp.headers
    browser = await bridge.client.post("/form", data=ANN, headers={"Origin": "https://evil.example"})
    assert browser.status == 403 and browser.content_type == "text/html"
    await nothing_stored(bridge)


async def test_allowed_and_same_origin_posts_pass(start_form: Any) -> None:
    bridge = await start_form(allowed_origins=[SITE])
    own = bridge.url("/").rstrip("/")
    for headers in ({"Origin": SITE}, {"Referer": f"{SITE}/contact"}, {"Origin": own}, {}):
        resp = await bridge.client.post("/form", data=ANN, headers={**JSON, **headers})
        assert resp.status == 200, headers
        assert resp.headers["Vary"] == "Origin"
        if "Origin" in headers:
            assert resp.headers["Access-Control-Allow-Origin"] == headers["Origin"]
    await bridge.wait_idle()
    assert len(bridge.emulator.state.messages) == 4


async def test_cors_preflight(start_form: Any) -> None:
    bridge = await start_form(allowed_origins=[SITE])
    ask = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type, idempotency-key"}
    resp = await bridge.client.options("/form", headers={**ask, "Origin": SITE})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Idempotency-Key" in resp.headers["Access-Control-Allow-Headers"]
    assert resp.headers["Vary"] == "Origin"
    for origin in ("https://evil.example", None):
        resp = await bridge.client.options("/form", headers={
            **ask, **({"Origin": origin} if origin else {})})
        assert resp.status == 403
        assert not any(h.startswith("Access-Control-") for h in resp.headers)
