"""Stale Livedesk ids: agents delete, merge and resolve in Livedesk, and the customer writes
again. Each case runs the daemon against its embedded emulator; the agent acts through the
emulator's API over HTTP, with its credentials (or through the page's admin endpoints)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer
from store.redis_server import delete_prefix, redis_answers

from livebridge.daemon import EMULATOR_CREDENTIALS
from livebridge.livedesk.emulator import Emulator, Faults
from livebridge.testing import BridgeHarness

Post = Callable[..., dict[str, Any]]
Agent = Callable[..., Awaitable[Any]]


@pytest.fixture
async def agent() -> AsyncIterator[Callable[[BridgeHarness], Agent]]:
    """``act = agent(bridge)``; ``await act("DELETE", "/contacts/7")``: an agent's API call
    to the bridge's emulator (200 expected); returns the JSON answer, or None if empty."""
    key, secret, _ = EMULATOR_CREDENTIALS
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:

        def bind(bridge: BridgeHarness) -> Agent:
            async def act(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
                url = f"{bridge.daemon.livedesk_url}/api/v2/accounts{path}"
                async with session.request(method, url, json=body) as resp:
                    raw = await resp.read()
                    assert resp.status == 200, raw
                    return json.loads(raw) if raw else None

            return act

        yield bind


async def start(make_bridge: Any, echo: Any) -> BridgeHarness:
    bridge: BridgeHarness = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    return bridge


def texts(bridge: BridgeHarness, conversation_id: int) -> list[str]:
    return [m["content"] for m in bridge.emulator.state.messages_in(conversation_id)]


def owner(bridge: BridgeHarness, conversation_id: int) -> int:
    contact_id: int = bridge.emulator.state.conversations[conversation_id]["account_info"][
        "contact_id"]
    return contact_id


async def write(bridge: BridgeHarness, post: Post, *messages: tuple[int, str, str]) -> None:
    """The customer ann writes ``(event number, thread, text)``, each accepted."""
    for i, thread, text in messages:
        resp = await bridge.client.post("/echo", json=post(i, user="ann", thread=thread,
                                                           text=text, email="ann@example.com"))
        assert resp.status == 200, await resp.text()


async def delivered(bridge: BridgeHarness, count: int) -> None:
    """Wait until ``count`` messages reached Livedesk and the outbox is idle, none dead."""
    state = bridge.emulator.state
    await bridge.wait_for(lambda: len(state.messages) == count)
    await bridge.wait_idle()
    assert await bridge.daemon.store.dead_letters() == []


async def one_call_each(bridge: BridgeHarness, post: Post, *messages: tuple[int, str, str]) -> None:
    """The next messages cost one call each: the maps point at the live ids."""
    state = bridge.emulator.state
    calls, count = len(state.calls), len(state.messages)
    await write(bridge, post, *messages)
    await delivered(bridge, count + len(messages))
    assert len(bridge.emulator.state.calls) - calls == len(messages)


async def test_deleted_contact_is_made_again_once_for_old_and_new_threads(
        make_bridge: Any, echo: Any, echo_post: Post, agent: Any) -> None:
    bridge = await start(make_bridge, echo)
    state, act = bridge.emulator.state, agent(bridge)
    await write(bridge, echo_post, (1, "t1", "first"), (2, "t2", "other"))
    await delivered(bridge, 2)
    [old] = state.contacts
    await act("DELETE", f"/contacts/{old}")  # with both conversations and their messages
    assert state.conversations == {}
    # the same threads and a new one at once: three re-resolutions race for one contact
    await write(bridge, echo_post, (3, "t1", "again"), (4, "t2", "more"), (5, "t3", "new"))
    await delivered(bridge, 3)
    [contact] = state.contacts.values()
    assert contact["id"] != old and contact["email"] == "ann@example.com"
    assert contact["identifier"] == "echo:ann"
    assert sorted(texts(bridge, c) for c in state.conversations) == [
        ["hi: again"], ["hi: more"], ["hi: new"]]
    assert {owner(bridge, c) for c in state.conversations} == {contact["id"]}
    await one_call_each(bridge, echo_post, (6, "t1", "later"), (7, "t3", "later"))


async def test_merged_contact_lands_in_the_base_contacts_conversations(
        make_bridge: Any, echo: Any, echo_post: Post, agent: Any) -> None:
    bridge = await start(make_bridge, echo)
    state, act = bridge.emulator.state, agent(bridge)
    await write(bridge, echo_post, (1, "t1", "first"))
    await delivered(bridge, 1)
    [(mergee, [conversation])] = [(c, list(state.conversations)) for c in state.contacts]
    created = await act("POST", "/contacts", {"inbox_id": 1, "name": "Ann Lee",
                                              "phone_number": "+15550001"})
    base = created["payload"]["contact"]["id"]
    merged = await act("POST", "/actions/contact_merge", {"base_contact_id": base,
                                                          "mergee_contact_id": mergee})
    assert merged["email"] == "ann@example.com"  # the base took the mergee's blank fields
    await write(bridge, echo_post, (2, "t1", "same thread"), (3, "t2", "new thread"))
    await delivered(bridge, 3)
    assert list(state.contacts) == [base]  # no new contact for ann
    assert texts(bridge, conversation) == ["hi: first", "hi: same thread"]
    [new] = set(state.conversations) - {conversation}
    assert texts(bridge, new) == ["hi: new thread"] and owner(bridge, new) == base
    await one_call_each(bridge, echo_post, (4, "t2", "later"))


async def test_deleted_conversation_is_made_again_for_the_live_contact(
        make_bridge: Any, echo: Any, echo_post: Post, agent: Any) -> None:
    bridge = await start(make_bridge, echo)
    state, act = bridge.emulator.state, agent(bridge)
    await write(bridge, echo_post, (1, "t1", "first"))
    await delivered(bridge, 1)
    [contact] = state.contacts
    [old] = state.conversations
    await act("DELETE", f"/conversations/{old}")
    assert state.messages == {}
    await write(bridge, echo_post, (2, "t1", "again"), (3, "t1", "and again"))
    await delivered(bridge, 2)
    [new] = state.conversations
    assert new != old and owner(bridge, new) == contact and list(state.contacts) == [contact]
    assert texts(bridge, new) == ["hi: again", "hi: and again"]
    await one_call_each(bridge, echo_post, (4, "t1", "later"))


async def test_resolved_conversation_is_reopened_by_the_next_message(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await start(make_bridge, echo)
    state = bridge.emulator.state
    await write(bridge, echo_post, (1, "t1", "first"))
    await delivered(bridge, 1)
    [conversation] = state.conversations
    # the agent presses "Resolve" on the emulator's page (a same-origin JSON post)
    resp = await bridge.client.post(f"/emulator/_emulator/conversations/{conversation}/status",
                                    json={"status": "resolved"},
                                    headers={"Origin": bridge.url("/").rstrip("/")})
    assert resp.status == 200, await resp.text()
    assert state.conversations[conversation]["status"] == "resolved"
    await one_call_each(bridge, echo_post, (2, "t1", "one more question"))
    assert state.conversations[conversation]["status"] == "open"
    assert len(state.contacts) == 1 and list(state.conversations) == [conversation]
    assert texts(bridge, conversation) == ["hi: first", "hi: one more question"]


async def test_dead_letter_with_stale_ids_is_replayed(make_bridge: Any, echo: Any,
                                                      echo_post: Post, agent: Any) -> None:
    """A dead letter whose recorded contact and conversation are gone by the time it is
    replayed, as the old behaviour left them (`livebridge dlq replay` calls the store's)."""
    bridge = await start(make_bridge, echo)
    state, act, store = bridge.emulator.state, agent(bridge), bridge.daemon.store
    await write(bridge, echo_post, (1, "t1", "first"))
    await delivered(bridge, 1)
    [old] = state.contacts
    bridge.emulator.faults = Faults(reject_messages=True)
    await write(bridge, echo_post, (2, "t1", "lost?"))
    await bridge.wait_for(lambda: bridge.daemon.metrics.dead_lettered.labels(
        source="echo", kind="inbound")._value.get() == 1)
    bridge.emulator.faults = Faults()
    await act("DELETE", f"/contacts/{old}")
    [letter] = await store.dead_letters()
    assert await store.replay_dead_letter(letter.id)
    await delivered(bridge, 1)
    [contact] = state.contacts
    [conversation] = state.conversations
    assert contact != old and texts(bridge, conversation) == ["hi: lost?"]
    await one_call_each(bridge, echo_post, (3, "t1", "later"))


REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_store() -> Iterator[str]:
    """A store URL on the shared Redis, with a key prefix of this test's own."""
    if not redis_answers(REDIS):
        pytest.skip(f"no Redis answers at {REDIS}")
    prefix = f"lbstale:{uuid.uuid4().hex}:"
    yield f"{REDIS}?prefix={prefix}"
    delete_prefix(REDIS, prefix)


@pytest.mark.redis
async def test_two_daemons_resolve_a_deleted_contact_once(
        make_bridge: Any, echo: Any, echo_post: Post, agent: Any, redis_store: str,
        aiohttp_server: AiohttpServer) -> None:
    """Either daemon may deliver any message and each has its own cache of the maps: the
    store's maps and locks still give one new contact and one conversation per thread."""
    key, secret, _ = EMULATOR_CREDENTIALS
    emulator = Emulator(api_key=key, api_secret=secret, inbox_id=1)
    server = await aiohttp_server(emulator.app())
    config = {"sources": [{"type": "echo"}], "store": {"url": redis_store},
              "livedesk": {"base_url": str(server.make_url("")).rstrip("/"), "api_key": key,
                           "api_secret": secret, "inbox_id": 1}}
    daemons = [await make_bridge(config, plugins=[echo], emulator=emulator) for _ in range(2)]
    state, act = emulator.state, agent(daemons[0])

    async def delivered_by_either(count: int) -> None:
        waits = [asyncio.create_task(d.wait_for(lambda: len(state.messages) == count))
                 for d in daemons]  # each wakes on its own daemon's deliveries
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await done.pop()

    for i, thread in enumerate(["t1", "t2", "t1", "t2"]):
        await write(daemons[i % 2], echo_post, (i, thread, f"before {i}"))
    await delivered_by_either(4)
    [old] = state.contacts
    await act("DELETE", f"/contacts/{old}")
    for i, thread in enumerate(["t1", "t2", "t3", "t1", "t2", "t3"], start=10):
        await write(daemons[i % 2], echo_post, (i, thread, f"after {i}"))
    await delivered_by_either(6)
    [contact] = state.contacts
    assert contact != old
    assert sorted(texts(daemons[0], c) for c in state.conversations) == [
        ["hi: after 10", "hi: after 13"], ["hi: after 11", "hi: after 14"],
        ["hi: after 12", "hi: after 15"]]
    assert {owner(daemons[0], c) for c in state.conversations} == {contact}
    assert await daemons[0].daemon.store.dead_letters() == []
