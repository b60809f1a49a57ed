"""Malformed posts over real HTTP: every one is answered with a 4xx (never a 500) and stores
nothing. One row per way a client (or an attacker) can get the input wrong."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livebridge.testing import BridgeHarness

JSON = {"Accept": "application/json"}
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
ANN = b"email=ann%40example.com&message=hello"


def multipart(*parts: bytes, boundary: str = "b") -> dict[str, Any]:
    """A hand-built ``multipart/form-data`` body of ``parts`` (headers, blank line, data)."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return {"data": body + b"--" + boundary.encode() + b"--\r\n",
            "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def field(name: str, value: bytes, *, headers: bytes = b"") -> bytes:
    return (b'Content-Disposition: form-data; name="' + name.encode() + b'"\r\n' + headers
            + b"\r\n" + value)


async def raw_post(bridge: BridgeHarness, headers: bytes, body: bytes,
                   host: bytes | None = None) -> tuple[int, str]:
    """POST ``/form`` with header bytes no HTTP client would send (not UTF-8)."""
    server = bridge.client.server
    address = f"{server.host}:{server.port}".encode()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /form HTTP/1.1\r\nHost: " + (host or address) + b"\r\n"
                 b"Accept: application/json\r\nConnection: close\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                 + headers.replace(b"HOST", address) + b"\r\n" + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, text = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), text.decode(errors="replace")


EMAIL = field("email", b"ann@example.com")


CASES: dict[str, tuple[int, dict[str, Any]]] = {
    # multipart
    "truncated multipart": (400, {"data": b"--b\r\nxx", "headers": {
        "Content-Type": "multipart/form-data; boundary=b"}}),
    "truncated part headers": (400, {"data": b"--b\r\nContent-Disposition: form-da", "headers": {
        "Content-Type": "multipart/form-data; boundary=b"}}),
    "multipart without a boundary": (400, {"data": b"--x\r\nnonsense", "headers": {
        "Content-Type": "multipart/form-data"}}),
    "part without a name": (400, multipart(EMAIL, b"Content-Disposition: form-data\r\n\r\nhi")),
    "file without a name": (400, multipart(
        EMAIL, b'Content-Disposition: form-data; filename="a.txt"\r\n\r\nhi')),
    "part with an unknown charset": (400, multipart(EMAIL, field(
        "message", b"hi", headers=b"Content-Type: text/plain; charset=no-such-charset\r\n"))),
    "part with a non-text codec": (400, multipart(EMAIL, field(
        "message", b"aGk=", headers=b"Content-Type: text/plain; charset=base64\r\n"))),
    "part not valid in its charset": (400, multipart(EMAIL, field("message", b"\xff\xfe"))),
    "part decoding to a lone surrogate": (400, multipart(EMAIL, field(
        "message", b"+2AA-", headers=b"Content-Type: text/plain; charset=utf-7\r\n"))),
    "part with a bad transfer encoding": (400, multipart(EMAIL, field(
        "message", b"abc", headers=b"Content-Transfer-Encoding: base64\r\n"))),
    "part with an unknown transfer encoding": (400, multipart(EMAIL, field(
        "message", b"hi", headers=b"Content-Transfer-Encoding: rot13\r\n"))),
    "file named in invalid UTF-8": (400, multipart(
        EMAIL, field("message", b"hi"),
        b'Content-Disposition: form-data; name="f"; filename="\xff.txt"\r\n\r\nhi')),
    "nested multipart": (400, multipart(
        EMAIL, b'Content-Disposition: form-data; name="n"\r\n'
               b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--")),
    # JSON
    "JSON array": (400, {"json": [{"email": "ann@example.com", "message": "hi"}]}),
    "JSON string": (400, {"json": "email=ann@example.com"}),
    "JSON number": (400, {"json": 42}),
    "JSON null": (400, {"json": None}),
    "JSON nested too deep": (400, {"data": b"[" * 100_000 + b"]" * 100_000, "headers": {
        "Content-Type": "application/json"}}),
    "JSON huge integer": (400, {"data": b'{"message": ' + b"9" * 5000 + b"}", "headers": {
        "Content-Type": "application/json"}}),
    "JSON not UTF-8": (400, {"data": b'{"email": "ann@example.com", "message": "\xff"}',
                             "headers": {"Content-Type": "application/json"}}),
    "JSON lone surrogate": (400, {"data": b'{"email": "ann@example.com", "message": "\\ud800"}',
                                  "headers": {"Content-Type": "application/json",
                                              "Idempotency-Key": "k1"}}),
    "JSON object as a field": (422, {"json": {"email": "ann@example.com", "message": {"a": 1}}}),
    "JSON list of lists": (422, {"json": {"email": "ann@example.com", "message": [["hi"]]}}),
    "JSON boolean field": (422, {"json": {"email": "ann@example.com", "message": True}}),
    # urlencoded
    "urlencoded not UTF-8": (400, {"data": b"email=ann%40example.com&message=\xff",
                                   "headers": URLENCODED}),
    "urlencoded bad percent-escape": (400, {"data": b"email=ann%40example.com&message=50%zz",
                                            "headers": URLENCODED}),
    "urlencoded cut percent-escape": (400, {"data": ANN + b"%4", "headers": URLENCODED}),
    "urlencoded escape not UTF-8": (400, {"data": ANN + b"%FF", "headers": URLENCODED}),
    "urlencoded escape of a surrogate": (400, {"data": ANN + b"%ED%A0%80",
                                               "headers": URLENCODED}),
    "urlencoded unknown charset": (400, {"data": ANN, "headers": {
        "Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"}}),
    "urlencoded lone surrogate via utf-7": (400, {"data": ANN + b"+2AA-", "headers": {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-7"}}),
    # other
    "unsupported type": (415, {"data": ANN, "headers": {"Content-Type": "text/plain"}}),
    "no content type": (415, {"data": ANN, "headers": {"Content-Type": ""}}),
    "idempotency key not UTF-8": (400, {"data": ANN, "raw": b"Idempotency-Key: k\xff\r\n"}),
    "referer not UTF-8": (403, {"data": ANN, "raw": b"Referer: http://\xff.example/\r\n"}),
    "origin not UTF-8 matching the host": (403, {"data": ANN, "host": b"\xff.example",
                                                 "raw": b"Origin: http://\xff.example\r\n"}),
    "huge header": (400, {"data": ANN, "headers": {**URLENCODED, "X-Junk": "a" * 20_000}}),
    "non-ASCII origin": (403, {"data": ANN, "headers": {
        **URLENCODED, "Origin": "https://\xe9vil.example"}}),
}


@pytest.mark.parametrize("case", CASES)
async def test_malformed_post_is_a_4xx_and_stores_nothing(start_form: Any, nothing_stored: Any,
                                                          case: str) -> None:
    bridge = await start_form()
    status, kwargs = CASES[case]
    kwargs = {**kwargs, "headers": {**JSON, **kwargs.get("headers", {})}}
    if "raw" in kwargs:
        answer = await raw_post(bridge, kwargs["raw"], kwargs["data"], kwargs.get("host"))
    else:
        resp = await bridge.client.post("/form", **kwargs)
        answer = (resp.status, await resp.text())
    assert answer[0] == status, (case, answer)
    await nothing_stored(bridge)
    # The source still works afterwards.
    ok = await bridge.client.post("/form", data=ANN, headers={**JSON, **URLENCODED})
    assert ok.status == 200


async def test_a_same_site_referer_not_in_utf8_is_not_recorded(start_form: Any) -> None:
    """The post is the form's own (its origin is the Host), but the page is left out."""
    bridge = await start_form()
    status, _ = await raw_post(bridge, b"Referer: http://HOST/\xff\r\n", ANN)
    assert status == 200
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    [conversation] = bridge.emulator.state.conversations.values()
    assert "page" not in conversation["custom_attributes"]


async def test_truncated_multipart_is_400_not_500(start_form: Any, nothing_stored: Any) -> None:
    """Regression: aiohttp's InvalidHeader escaped the form's own multipart loop."""
    bridge = await start_form()
    resp = await bridge.client.post("/form", data=b"--b\r\nxx", headers={
        **JSON, "Content-Type": "multipart/form-data; boundary=b"})
    assert (resp.status, (await resp.json())["error"]) == (400, "malformed multipart body")
    await nothing_stored(bridge)


@pytest.mark.parametrize(("charset", "data", "text"), [
    ("iso-8859-1", "caf\xe9".encode("latin-1"), "caf\xe9"),
    ("utf-16", "\u2603 snow".encode("utf-16"), "\u2603 snow"),
    (None, "caf\xe9".encode(), "caf\xe9"),
])
async def test_multipart_text_is_decoded_with_its_charset(start_form: Any, charset: str | None,
                                                          data: bytes, text: str) -> None:
    bridge = await start_form()
    ctype = b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n" if charset else b""
    resp = await bridge.client.post("/form", **{**multipart(EMAIL, field(
        "message", data, headers=ctype)), "headers": {
        **JSON, "Content-Type": "multipart/form-data; boundary=b"}})
    assert resp.status == 200, await resp.text()
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    [message] = bridge.emulator.state.messages.values()
    assert message["content"] == text


async def test_multipart_limits(start_form: Any, nothing_stored: Any) -> None:
    """Per-file cap, file count, total cap: each a 413 naming the limit."""
    bridge = await start_form(max_file_bytes=10, max_body_bytes=4000)

    def upload(*files: bytes) -> dict[str, Any]:
        return multipart(EMAIL, field("message", b"hi"), *(
            b'Content-Disposition: form-data; name="f"; filename="f' + str(i).encode()
            + b'.bin"\r\n\r\n' + data for i, data in enumerate(files)))

    async def refused(kwargs: dict[str, Any]) -> tuple[int, str]:
        resp = await bridge.client.post("/form", data=kwargs["data"],
                                        headers={**JSON, **kwargs["headers"]})
        return resp.status, (await resp.json())["error"]

    assert await refused(upload(b"x" * 11)) == (413, "file too large (at most 10 bytes)")
    assert await refused(upload(*[b"x"] * 11)) == (413, "too many files (at most 10)")
    big = multipart(EMAIL, field("message", b"x" * 5000))
    assert await refused(big) == (413, "body too large (at most 4000 bytes)")
    await nothing_stored(bridge)
    # Empty file inputs (a browser's unused <input type=file>) are skipped, not counted.
    empty = b'Content-Disposition: form-data; name="f"; filename=""\r\n' \
            b"Content-Type: application/octet-stream\r\n\r\n"
    resp = await bridge.client.post("/form", **{**multipart(
        EMAIL, field("message", b"hi"), *[empty] * 12, b'Content-Disposition: form-data; '
        b'name="f"; filename="a.txt"\r\n\r\nhello'), "headers": {
        **JSON, "Content-Type": "multipart/form-data; boundary=b"}})
    assert resp.status == 200, await resp.text()
