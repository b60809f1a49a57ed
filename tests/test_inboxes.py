"""Several Livedesk inboxes in one daemon (``inboxes:`` and ``livedesk_inbox``), over real
sockets: each source's messages reach its own inbox (two accounts, each with its key pair),
one contact per customer per inbox; agent replies come back through each inbox's webhook to
the right source; one inbox's outage holds no other's deliveries; ``check`` shows where each
source goes; configuration errors name the key and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from livebridge._config import parse_config
from livebridge._livedesk.emulator import Emulator, Faults
from livebridge._plugins import collect_source_types, get_plugin_manager
from livebridge.exceptions import ConfigError
from livebridge.testing import build_config

Post = Callable[..., dict[str, Any]]
TYPES = collect_source_types(get_plugin_manager())
#: Two echo sources: ``web`` to the default inbox, ``chat`` to the inbox named ``jp``.
SOURCES = [{"type": "echo", "name": "web", "path": "/web"},
           {"type": "echo", "name": "chat", "path": "/chat", "livedesk_inbox": "jp"}]


async def account(aiohttp_server: Any, key: str, inbox_id: int) -> tuple[Emulator, str]:
    """A Livedesk account of its own (key pair ``key``/``key-secret``) with one API inbox."""
    emulator = Emulator(api_key=key, api_secret=f"{key}-secret", inbox_id=inbox_id)
    server = await aiohttp_server(emulator.app())
    return emulator, str(server.make_url("")).rstrip("/")


def livedesk(url: str, key: str, inbox_id: int, webhook_secret: str) -> dict[str, Any]:
    return {"base_url": url, "api_key": key, "api_secret": f"{key}-secret",
            "inbox_id": inbox_id, "webhook_secret": webhook_secret}


async def test_two_sources_reach_two_accounts_inboxes_and_replies_come_back_through_each(
        make_bridge: Any, echo: Any, echo_post: Post, aiohttp_server: Any) -> None:
    home, home_url = await account(aiohttp_server, "home-key", 407)
    japan, japan_url = await account(aiohttp_server, "jp-key", 408)
    bridge = await make_bridge({
        "livedesk": livedesk(home_url, "home-key", 407, "home-hook-secret"),
        "inboxes": {"jp": livedesk(japan_url, "jp-key", 408, "jp-hook-secret")},
        "sources": SOURCES}, plugins=[echo], emulator=home, emulators={"jp": japan})
    # The same customer writes through both sources.
    for path, i in (("/web", 1), ("/chat", 2)):
        resp = await bridge.client.post(path, json=echo_post(i, user="ann", thread="t1",
                                                             text=path))
        assert resp.status == 200
    await bridge.wait_for(lambda: len(home.state.messages) == len(japan.state.messages) == 1)
    assert [m["content"] for m in home.state.messages.values()] == ["hi: /web"]
    assert [m["content"] for m in japan.state.messages.values()] == ["hi: /chat"]
    # One contact per customer per inbox, each made with its own account's key pair.
    assert [c["identifier"] for c in home.state.contacts.values()] == ["web:ann"]
    assert [c["identifier"] for c in japan.state.contacts.values()] == ["chat:ann"]
    assert {c["inbox_id"] for c in home.state.conversations.values()} == {407}
    assert {c["inbox_id"] for c in japan.state.conversations.values()} == {408}

    web = await bridge.conversation_of("web", "t1")
    chat = await bridge.conversation_of("chat", "t1")
    assert web == chat  # two accounts number their conversations alike: the inbox tells
    await bridge.agent_reply(web, "from home")
    await bridge.agent_reply(chat, "from Japan", inbox="jp")
    await bridge.wait_for(lambda: len(echo.sent) == 2)
    assert sorted((r.source, r.thread_key, r.text) for r in echo.sent) == [
        ("chat", "t1", "from Japan"), ("web", "t1", "from home")]
    assert bridge.daemon.routes.keys() >= {"livedesk", "livedesk:jp"}


async def test_each_inbox_webhook_takes_only_its_own_secret(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"inboxes": {"jp": {}}, "sources": SOURCES}, plugins=[echo])
    index = await (await bridge.client.get("/")).text()
    assert 'href="emulator/"' in index and 'href="emulator-jp/"' in index
    page = await bridge.client.get("/emulator-jp/")  # each emulated inbox's page
    assert page.status == 200 and "Livedesk emulator" in await page.text()
    await bridge.client.post("/chat", json=echo_post(1))
    await bridge.wait_for(lambda: len(bridge.emulators["jp"].state.messages) == 1)
    chat = await bridge.conversation_of("chat", "t1")
    event = {"event": "message_created", "id": 99, "content": "forged", "private": False,
             "message_type": "outgoing", "conversation": {"id": chat}}
    resp = await bridge.post_webhook(event, "/livedesk/jp/webhook")  # the default's secret
    assert resp.status == 401
    resp = await bridge.post_webhook(event, "/livedesk/jp/webhook", inbox="jp")
    assert resp.status == 200 and (await resp.json())["queued"] is True
    await bridge.wait_for(lambda: [r.source for r in echo.sent] == ["chat"])


async def test_one_inbox_outage_does_not_hold_the_other_inbox(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"inboxes": {"jp": {}}, "sources": SOURCES,
                                "delivery": {"breaker_threshold": 2, "probe_interval": "100ms",
                                             "probe_cap": "200ms"}}, plugins=[echo])
    home, japan = bridge.emulators["default"], bridge.emulators["jp"]
    assert (home.inbox_id, japan.inbox_id) == (1, 2)
    japan.faults = Faults(outage_until=time.time() + 3600)
    await bridge.client.post("/chat", json=echo_post(1, text="held"))
    routes = bridge.daemon.routes
    await bridge.wait_for(lambda: routes["livedesk:jp"].breaker.state != "closed")
    for i in range(2, 12):
        await bridge.client.post("/web", json=echo_post(i, user=f"u{i}", thread=f"t{i}"))
    await bridge.wait_for(lambda: len(home.state.messages) == 10)
    assert routes["livedesk"].breaker.state == "closed"
    assert japan.state.messages == {}
    ready = await (await bridge.client.get("/readyz")).json()
    assert ready["routes"]["livedesk:jp"]["breaker"] != "closed"
    japan.faults = Faults()
    await bridge.wait_for(lambda: len(japan.state.messages) == 1)
    assert [m["content"] for m in japan.state.messages.values()] == ["hi: held"]


def run_check(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDESK_", "SMTP_"))}
    return subprocess.run([sys.executable, "-m", "livebridge", "check", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_check_shows_which_source_goes_where(tmp_path: Path) -> None:
    result = run_check(tmp_path, {
        "livedesk": {"base_url": "https://ld.example", "api_key": "k", "api_secret": "s1-hidden",
                     "inbox_id": 407},
        "inboxes": {"jp": {"base_url": "https://jp.example", "api_key": "k2",
                           "api_secret": "s2-hidden", "inbox_id": 408},
                    "sales": {"inbox_id": 409}},
        "sources": [{"type": "form", "path": "/f"},
                    {"type": "form", "name": "jp-form", "path": "/j", "livedesk_inbox": "jp"},
                    {"type": "form", "name": "sales-form", "path": "/s",
                     "livedesk_inbox": "sales"}]})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "→" in line]
    assert lines == ["# form → inbox default (407 at https://ld.example)",
                     "# jp-form → inbox jp (408 at https://jp.example)",
                     "# sales-form → inbox sales (409 at https://ld.example)"]
    assert "hidden" not in result.stdout + result.stderr
    yaml.safe_load(result.stdout)  # still YAML


def test_check_shows_emulated_inboxes(tmp_path: Path) -> None:
    result = run_check(tmp_path, {"inboxes": {"jp": {}}, "sources": [
        {"type": "form", "path": "/f"}, {"type": "form", "name": "b", "livedesk_inbox": "jp"}]})
    assert result.returncode == 0, result.stderr
    assert "# form → inbox default (1 at the built-in emulator)" in result.stdout
    assert "# b → inbox jp (2 at the built-in emulator)" in result.stdout


def problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, TYPES, env={})
    return str(info.value)


REAL = {"base_url": "https://ld.example", "api_key": "k", "api_secret": "s", "inbox_id": 407}


def test_an_unknown_inbox_name_is_refused_with_a_suggestion() -> None:
    text = problems({"inboxes": {"support-jp": {}},
                     "sources": [{"type": "form", "livedesk_inbox": "suport-jp"}]})
    assert ("sources[0].livedesk_inbox: unknown inbox 'suport-jp'; did you mean support-jp? "
            "(inboxes: default, support-jp)") in text
    text = problems({"sources": [{"type": "form", "livedesk_inbox": "jp"}]})
    assert "sources[0].livedesk_inbox: unknown inbox 'jp'; check the spelling" in text


@pytest.mark.parametrize(("raw", "expected"), [
    ({"livedesk": REAL, "inboxes": {"jp": {"api_key": "k2"}}},
     "inboxes.jp.inbox_id: required (this inbox's API channel id)"),
    ({"livedesk": REAL, "inboxes": {"jp": {"inbox_id": 407}}},
     "inboxes.jp.inbox_id: 407 is inbox 'default' too; name each inbox once"),
    ({"inboxes": {"jp": {"base_url": "https://jp.example", "api_key": "k", "api_secret": "s",
                         "inbox_id": 408}}},
     "inboxes.jp.base_url: set livedesk.base_url too"),
    ({"inboxes": {"jp": {"base_url": "https://jp.example", "inbox_id": 408}}},
     "inboxes.jp: base_url is set, so api_key, api_secret must be set too"),
    ({"inboxes": {"default": {}}}, "inboxes.default: the top-level livedesk section is the "
                                   "inbox named 'default'; give this one another name"),
    ({"inboxes": {"j p/x": {}}},
     "inboxes.j p/x: name inboxes with letters, digits, '-' and '_' only"),
    ({"inboxes": {"jp": {"inbox_idd": 4}}}, "inboxes.jp.inbox_idd: unknown key; did you mean "
                                            "inbox_id?"),
])
def test_inbox_config_errors_name_the_key_and_the_fix(raw: dict[str, Any], expected: str,
                                                       ) -> None:
    assert expected in problems(raw)


def test_two_inboxes_on_one_webhook_path_are_refused(tmp_path: Path) -> None:
    result = run_check(tmp_path, {"inboxes": {"jp": {"webhook_path": "/livedesk/webhook"}}})
    assert result.returncode == 1
    assert ("inbox 'default' and inbox 'jp' both take their webhook at /livedesk/webhook; "
            "give each inbox its own webhook_path") in result.stderr


def test_an_inbox_takes_the_default_settings_it_does_not_set(tmp_path: Path) -> None:
    config = build_config({"livedesk": {**REAL, "timeout": 3, "webhook_secret": "w",
                                        "allow_unsigned_webhooks": True},
                           "inboxes": {"jp": {"inbox_id": 408}}}, tmp_path)
    jp = config.inbox("jp")
    assert (jp.base_url, jp.inbox_id, jp.timeout) == ("https://ld.example", 408, 3)
    assert jp.api_key is not None and jp.api_key.get_secret_value() == "k"
    assert jp.webhook_path == "/livedesk/jp/webhook"
    # How its webhook is verified is never another inbox's.
    assert jp.webhook_secret is None and not jp.allow_unsigned_webhooks


async def test_an_inbox_without_a_webhook_secret_takes_no_replies(
        make_bridge: Any, echo: Any, aiohttp_server: Any) -> None:
    home, home_url = await account(aiohttp_server, "home-key", 407)
    bridge = await make_bridge({
        "livedesk": livedesk(home_url, "home-key", 407, "home-hook-secret"),
        "inboxes": {"jp": {"inbox_id": 408}}, "sources": SOURCES}, plugins=[echo], emulator=home)
    event = {"event": "message_created", "id": 1, "content": "x", "message_type": "outgoing",
             "conversation": {"id": 1}}
    assert (await bridge.client.post("/livedesk/jp/webhook", json=event)).status == 404
    assert (await bridge.client.post("/livedesk/webhook", json=event)).status == 401
