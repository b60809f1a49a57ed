"""Property-based fuzzing of every endpoint's body and headers (issue 13): whatever arrives,
the answer is never a 5xx, comes without hanging, and a refused request stores nothing.

Bounded for CI: a fixed number of examples per endpoint, derandomized (the same examples on
every run), a per-example deadline, and a timeout on each request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livebridge_slack.fake import FakeSlack

from livebridge.replies import sign_webhook
from livebridge.testing import BridgeHarness

sys.path.insert(0, str(Path(__file__).parents[1] / "email"))  # the email tests' helpers

from email_helpers import (
    PASSWORD,
    SIGNING_KEY,
    SUPPORT,
    TOPIC,
    USER,
    SNSKeys,
    sns_keys,  # noqa: F401 - fixture
    sns_notification,
    sns_time,
)

#: Malformed Content-Disposition headers are what this fuzzes; aiohttp warns about each.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionHeader")

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
WEBHOOK_SECRET = "hush-livedesk-webhook-secret"
PROVIDERS = ("mailgun", "sendgrid", "postmark", "ses", "mime")
#: Per request: a hang is a failure, not a slow test.
REQUEST_TIMEOUT = 10.0

FUZZ = settings(max_examples=50, deadline=timedelta(seconds=5), derandomize=True,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])
#: Email has five providers, each with and without credentials: more examples.
FUZZ_EMAIL = settings(FUZZ, max_examples=150)

# --- strategies --------------------------------------------------------------------------------

_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
_charset = st.sampled_from(["utf-8", "UTF-8", "latin-1", "utf-7", "utf-16", "punycode",
                            "base64", "idna", "rot13", "x-unknown", '"utf-8"', ""])
_ctype = st.one_of(
    st.sampled_from(["application/x-www-form-urlencoded", "application/json",
                     "multipart/form-data", "multipart/form-data; boundary=b",
                     "text/plain", "message/rfc822", "multipart/mixed; boundary=b", ""]),
    st.builds("{}; charset={}".format,
              st.sampled_from(["application/x-www-form-urlencoded", "application/json",
                               "text/plain"]), _charset),
    _header_text)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=25)
_fields = st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=8)


@st.composite
def _multipart(draw: st.DrawFn, extra: dict[str, str] | None = None) -> tuple[str, bytes]:
    """A ``multipart/form-data`` body (sometimes broken): its Content-Type and bytes."""
    boundary = draw(st.sampled_from(["b", "----x", "zz" * 40]))
    parts = [*(extra or {}).items(), *draw(_fields).items()]
    out = b""
    for name, value in parts:
        headers = draw(st.sampled_from(["", "Content-Type: text/plain; charset=punycode\r\n",
                                        "Content-Transfer-Encoding: base64\r\n",
                                        "Content-Type: text/plain; charset=utf-16\r\n"]))
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"
                f"{headers}\r\n").encode("utf-8", "surrogatepass") + value.encode(
                    "utf-8", "surrogatepass") + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    if draw(st.booleans()):
        out = out[:draw(st.integers(0, len(out)))]  # truncated
    return f"multipart/form-data; boundary={boundary}", out


@st.composite
def _body(draw: st.DrawFn, extra: dict[str, str] | None = None) -> tuple[str, bytes]:
    """A body and its Content-Type: a form, multipart, JSON, or bytes, under a Content-Type
    that may not match it."""
    kind = draw(st.sampled_from(["form", "multipart", "json", "bytes"]))
    if kind == "multipart":
        ctype, data = draw(_multipart(extra))
    elif kind == "form":
        ctype = "application/x-www-form-urlencoded"
        data = urlencode({**draw(_fields), **(extra or {})}).encode()
    elif kind == "json":
        ctype = "application/json"
        value = draw(_json_values)
        if extra:
            value = {**(value if isinstance(value, dict) else {}), **extra}
        data = json.dumps(value).encode()
    else:
        ctype, data = draw(_ctype), draw(st.binary(max_size=2000))
    if draw(st.integers(0, 4)) == 0:
        ctype = draw(_ctype)  # a Content-Type that does not match the body
    return ctype, data


_extra_headers = st.dictionaries(
    st.sampled_from(["Origin", "Referer", "Accept", "Idempotency-Key", "Authorization",
                     "X-Forwarded-For", "Content-Encoding", "X-Slack-Retry-Num",
                     "X-Slack-Request-Timestamp", "X-Slack-Signature", "X-Chatwoot-Timestamp",
                     "X-Chatwoot-Signature", "x-amz-sns-message-type"]),
    _header_text, max_size=4)

# --- the daemon --------------------------------------------------------------------------------


@pytest.fixture
async def bridge(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
                 make_bridge: Any, sns_keys: SNSKeys) -> BridgeHarness:  # noqa: F811
    """A daemon with every source: the form, Slack (events), email for each provider, and a
    signed Livedesk webhook."""
    slack = await aiohttp_server(FakeSlack().app())
    email: list[dict[str, Any]] = [
        {"type": "email", "name": f"email-{p}", "provider": p,
         **({"signing_key": SIGNING_KEY} if p == "mailgun" else
            {"ses_topic_arns": [TOPIC]} if p == "ses" else
            {"webhook_user": USER, "webhook_password": PASSWORD})}
        for p in PROVIDERS]
    harness: BridgeHarness = await make_bridge({
        "livedesk": {"webhook_secret": WEBHOOK_SECRET},
        "sources": [{"type": "form", "rate_limit": 0},
                    {"type": "slack", "signing_secret": SLACK_SECRET, "bot_token": "xoxb-test",
                     "api_url": str(slack.make_url("/api/"))}, *email]})
    # SNS certificates served offline
    harness.daemon.sources["email-ses"].provider.fetch = sns_keys.fetch  # type: ignore[attr-defined]
    return harness


def _accepted(bridge: BridgeHarness) -> float:
    registry = bridge.daemon.metrics.registry
    return sum(sample.value for metric in registry.collect()
               if metric.name == "livebridge_messages_accepted"
               for sample in metric.samples if sample.name.endswith("_total"))


async def _post(bridge: BridgeHarness, path: str, body: bytes, headers: dict[str, str],
                *, retry_status: int | None = None) -> int:
    """POST, check the answer is no 5xx (but ``retry_status``, a provider's "try again" for a
    refusal that may pass) and came in time, and that a refusal stored nothing; the status."""
    before = _accepted(bridge), (await bridge.daemon.store.stats()).depth
    async with asyncio.timeout(REQUEST_TIMEOUT):
        async with bridge.client.post(path, data=body, headers=headers) as resp:
            await resp.read()
    assert resp.status < 500 or resp.status == retry_status, (
        path, headers, body[:200], resp.status)
    if resp.status >= 400:
        after = _accepted(bridge), (await bridge.daemon.store.stats()).depth
        assert after[0] == before[0] and after[1] <= before[1], (path, resp.status)
    return resp.status


def _headers(ctype: str, extra: dict[str, str]) -> dict[str, str]:
    return {**({"Content-Type": ctype} if ctype else {}), **extra}


# --- the endpoints ------------------------------------------------------------------------------


@FUZZ
@given(body=_body(), extra=_extra_headers)
async def test_form(bridge: BridgeHarness, body: tuple[str, bytes], extra: dict[str, str]
                    ) -> None:
    await _post(bridge, "/form", body[1], _headers(body[0], extra))


def _slack_signed(body: bytes, stamp: int) -> dict[str, str]:
    digest = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": str(stamp),
            "X-Slack-Signature": f"v0={digest.hexdigest()}"}


_slack_event = st.fixed_dictionaries({
    "type": st.sampled_from(["event_callback", "url_verification", "app_rate_limited"]),
    "event_id": st.text(max_size=12) | st.integers(),
    "team_id": st.text(max_size=12) | st.none(),
    "challenge": _json_values,
    "event": _json_values | st.fixed_dictionaries({
        "type": st.sampled_from(["message", "app_mention"]) | _json_values,
        "user": st.text(max_size=12) | _json_values, "channel": st.text(max_size=12),
        "ts": st.text(max_size=20) | _json_values, "text": st.text(max_size=80) | _json_values,
        "files": _json_values}),
    "authorizations": _json_values,
})


@FUZZ
@given(body=_body() | st.builds(lambda e: ("application/json", json.dumps(e).encode()),
                                _slack_event),
       signed=st.booleans(), age=st.sampled_from([0, 0, 400, -400]), extra=_extra_headers)
async def test_slack_events(bridge: BridgeHarness, body: tuple[str, bytes], signed: bool,
                            age: int, extra: dict[str, str]) -> None:
    headers = _headers(body[0], extra)
    if signed:
        headers.update(_slack_signed(body[1], int(time.time()) - age))
    status = await _post(bridge, "/slack/events", body[1], headers)
    if not signed or age:
        assert status == 401


def _mailgun_fields() -> dict[str, str]:
    stamp, token = str(int(time.time())), uuid.uuid4().hex * 2
    digest = hmac.new(SIGNING_KEY.encode(), (stamp + token).encode(), hashlib.sha256)
    return {"timestamp": stamp, "token": token, "signature": digest.hexdigest()}


@st.composite
def _sns(draw: st.DrawFn, keys: SNSKeys) -> dict[str, Any]:
    """A signed SNS notification: an SES one carrying any bytes as the mail, or any JSON."""
    if draw(st.booleans()):
        return sns_notification(draw(st.binary(max_size=2000)), [SUPPORT], keys)
    return keys.sign({"Type": "Notification", "MessageId": str(uuid.uuid4()),
                      "TopicArn": TOPIC, "Message": json.dumps(draw(_json_values)),
                      "Timestamp": sns_time()})


@FUZZ_EMAIL
@given(data=st.data(), provider=st.sampled_from(PROVIDERS), credentials=st.booleans(),
       extra=_extra_headers)
async def test_email(bridge: BridgeHarness, sns_keys: SNSKeys,  # noqa: F811
                     data: st.DataObject, provider: str, credentials: bool,
                     extra: dict[str, str]) -> None:
    signed = _mailgun_fields() if provider == "mailgun" and credentials else None
    ctype, body = data.draw(_body(signed))
    if provider == "ses" and credentials:  # credentials: SNS's signature on what it carries
        ctype, body = "text/plain", json.dumps(data.draw(_sns(sns_keys))).encode()
    headers = _headers(ctype, extra)
    if credentials and provider in ("sendgrid", "postmark", "mime"):
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    # SendGrid, SNS and most relays retry only 5xx: missing credentials (a rotated password)
    # are answered 503 for them, so that the mail is not lost (see the email README).
    retry = None if provider in ("mailgun", "postmark") else 503
    status = await _post(bridge, f"/email/{provider}", body, headers, retry_status=retry)
    if not credentials:
        assert 400 <= status < 500 or status == retry, status  # refused: no credentials


_webhook_event = st.fixed_dictionaries({
    "event": st.sampled_from(["message_created", "conversation_created"]) | _json_values,
    "message_type": st.sampled_from(["outgoing", 1, "incoming"]) | _json_values,
    "private": _json_values, "id": st.integers() | st.text(max_size=30) | _json_values,
    "content": st.text(max_size=80) | _json_values,
    "conversation": st.fixed_dictionaries({"id": st.integers() | _json_values}) | _json_values,
    "sender": _json_values,
})


@FUZZ
@given(body=_body() | st.builds(lambda e: ("application/json", json.dumps(e).encode()),
                                _webhook_event),
       signed=st.booleans(), extra=_extra_headers)
async def test_livedesk_webhook(bridge: BridgeHarness, body: tuple[str, bytes], signed: bool,
                                extra: dict[str, str]) -> None:
    headers = _headers(body[0], extra)
    if signed:
        stamp = str(int(time.time()))
        headers.update({"X-Chatwoot-Timestamp": stamp,
                        "X-Chatwoot-Signature": sign_webhook(WEBHOOK_SECRET, stamp, body[1])})
    status = await _post(bridge, "/livedesk/webhook", body[1], headers)
    if not signed:
        assert status == 401


@pytest.fixture
async def demo(make_bridge: Any) -> BridgeHarness:
    """An emulated daemon without a webhook secret (demo mode)."""
    harness: BridgeHarness = await make_bridge({})
    return harness


@FUZZ
@given(body=_body() | st.builds(lambda e: ("application/json", json.dumps(e).encode()),
                                _webhook_event),
       extra=_extra_headers)
async def test_unsigned_livedesk_webhook_in_demo_mode(
        demo: BridgeHarness, body: tuple[str, bytes], extra: dict[str, str]) -> None:
    await _post(demo, "/livedesk/webhook", body[1], _headers(body[0], extra))


@FUZZ
@given(body=_body(), path=st.sampled_from(["faults", "reset", "conversations/1/reply",
                                           "conversations/999999/reply"]),
       extra=_extra_headers)
async def test_emulator_admin(demo: BridgeHarness, body: tuple[str, bytes], path: str,
                              extra: dict[str, str]) -> None:
    async with asyncio.timeout(REQUEST_TIMEOUT):
        async with demo.client.post(f"/emulator/_emulator/{path}", data=body[1],
                                    headers=_headers(body[0], extra)) as resp:
            await resp.read()
    assert resp.status < 500, (path, body, resp.status)


async def test_deeply_nested_json_to_the_livedesk_webhook(demo: BridgeHarness) -> None:
    await _post(demo, "/livedesk/webhook", b"[" * 100_000, {"Content-Type": "application/json"})


async def test_deeply_nested_json_to_the_emulator_admin(demo: BridgeHarness) -> None:
    await _post(demo, "/emulator/_emulator/faults", b"[" * 100_000,
                {"Content-Type": "application/json"})
