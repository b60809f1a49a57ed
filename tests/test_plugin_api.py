"""The plugin API end to end: a source type written in the tests (conftest.py), loaded and
used without the core knowing about it; message hooks that drop, change and enrich."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pluggy
import pytest

from livebridge import AcceptResult, InboundMessage, hookimpl
from livebridge import hookspecs as hookspecs_module
from livebridge.exceptions import PluginError
from livebridge.plugins import get_plugin_manager


class FilterPlugin:
    """Drops messages containing 'spam', upper-cases the rest, adds metadata (async)."""

    @hookimpl
    async def livebridge_inbound_message(self, message: InboundMessage) -> Any:
        if "spam" in message.text:
            return False
        message.metadata["checked"] = "yes"
        return message.model_copy(update={"text": message.text.upper()})


async def test_a_plugin_written_here_delivers_end_to_end(make_bridge: Any, echo: Any,
                                                          echo_post: Any) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo", "greeting": "yo"}]},
                               plugins=[echo, FilterPlugin()])
    state = bridge.emulator.state
    resp = await bridge.client.post("/echo", json=echo_post(1))
    assert (await resp.json()) == {"result": "accepted"}
    spam = await bridge.client.post("/echo", json=echo_post(2, text="buy spam"))
    assert (await spam.json()) == {"result": "dropped"}
    again = await bridge.client.post("/echo", json=echo_post(1))
    assert (await again.json()) == {"result": "duplicate"}
    await bridge.wait_for(lambda: len(state.messages) == 1)
    await bridge.wait_idle()
    [message] = state.messages.values()
    assert message["content"] == "YO: HELLO"
    assert message["message_type"] == 0  # incoming
    [conversation] = state.conversations.values()
    assert conversation["custom_attributes"] == {"checked": "yes", "livebridge_thread": "echo|t1"}
    assert len(state.messages) == 1


async def test_known_sender_and_thread_cost_one_call(make_bridge: Any, echo: Any,
                                                     echo_post: Any) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    state = bridge.emulator.state
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: len(state.messages) == 1)
    before = len(state.calls)
    await bridge.client.post("/echo", json=echo_post(2))
    await bridge.wait_for(lambda: len(state.messages) == 2)
    assert len(state.calls) - before == 1
    assert len(state.contacts) == 1 and len(state.conversations) == 1


def test_unknown_hook_fails_at_start_up() -> None:
    class Misspelled:
        @hookimpl
        def livebridge_inbound_mesage(self, message: InboundMessage) -> None:  # typo on purpose
            return None

    with pytest.raises(PluginError, match="livebridge_inbound_mesage"):
        get_plugin_manager([Misspelled()], load_entry_points=False)


def test_builtin_sources_are_entry_points() -> None:
    pm = get_plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"form", "slack", "email"} <= names


def test_every_hook_is_documented_and_tested() -> None:
    """Like datasette's test: each hookspec has a docstring and is used in the tests."""
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.rglob("test_*.py"))
    specs = [n for n, f in inspect.getmembers(hookspecs_module, inspect.isfunction)
             if n.startswith("livebridge_")]
    assert specs
    for name in specs:
        assert getattr(hookspecs_module, name).__doc__, f"{name} has no docstring"
        assert re.search(rf"\b{name}\b", tests.replace(inspect.getsource(
            test_every_hook_is_documented_and_tested), "")), f"{name} is not tested"
    assert isinstance(get_plugin_manager(load_entry_points=False), pluggy.PluginManager)


async def test_accept_result_values() -> None:
    assert {r.value for r in AcceptResult} == {"accepted", "duplicate", "dropped"}


async def test_lifecycle_and_delivered_hooks(make_bridge: Any, echo: Any, echo_post: Any) -> None:
    events: list[tuple[str, Any]] = []

    class Watcher:
        @hookimpl
        async def livebridge_startup(self, bridge: Any) -> None:
            events.append(("startup", bridge.emulated))

        @hookimpl
        def livebridge_message_delivered(self, message: InboundMessage, conversation_id: int,
                                         livedesk_message_id: int) -> None:
            events.append(("delivered", (message.event_id, conversation_id, livedesk_message_id)))

        @hookimpl
        async def livebridge_shutdown(self) -> None:
            events.append(("shutdown", None))

    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo, Watcher()])
    assert events == [("startup", True)]
    await bridge.client.post("/echo", json=echo_post(7))
    await bridge.wait_for(lambda: len(events) == 2)
    [message] = bridge.emulator.state.messages.values()
    assert events[1] == ("delivered", ("ev7", message["conversation_id"], message["id"]))
    await bridge.client.close()
    assert events[-1] == ("shutdown", None)
