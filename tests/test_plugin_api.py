"""The plugin API end to end: a source type written in the tests (conftest.py), loaded and
used without the core knowing about it; message hooks that drop, change and enrich."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import livebridge_form
import pluggy
import pytest

from livebridge import AcceptResult, InboundMessage, PluginError, Source, hookimpl
from livebridge import hookspecs as hookspecs_module
from livebridge.config import StoreConfig
from livebridge.plugins import collect_source_types, get_plugin_manager
from livebridge.store import create_store


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

    with pytest.raises(PluginError, match="livebridge_inbound_mesage is not a livebridge hook; "
                       "did you mean livebridge_inbound_message"):
        get_plugin_manager([Misspelled()], load_entry_points=False)


def test_a_hook_without_the_decorator_fails_at_start_up() -> None:
    class Undecorated:
        def livebridge_inbound_message(self, message: InboundMessage) -> None:
            return None

    with pytest.raises(PluginError, match=r"'[\w.<>]*Undecorated': livebridge_inbound_message "
                       "is not decorated with @livebridge.hookimpl"):
        get_plugin_manager([Undecorated()], load_entry_points=False)


@pytest.mark.parametrize("marker", [{"wrapper": True}, {"hookwrapper": True}])
def test_hook_wrappers_are_refused_at_start_up(marker: dict[str, bool]) -> None:
    class Wrapping:
        @hookimpl(**marker)
        def livebridge_inbound_message(self, message: InboundMessage) -> Iterator[None]:
            yield

    with pytest.raises(PluginError, match=r"'[\w.<>]*Wrapping': livebridge_inbound_message "
                       "is a hook wrapper"):
        get_plugin_manager([Wrapping()], load_entry_points=False)


def test_a_source_class_without_type_name_is_named() -> None:
    class Nameless(Source):
        pass

    class Provides:
        @hookimpl
        def livebridge_source_types(self) -> list[type[Source]]:
            return [Nameless]

    pm = get_plugin_manager([Provides()], load_entry_points=False)
    with pytest.raises(PluginError, match=r"source class .*Nameless has no type_name"):
        collect_source_types(pm)


def test_async_source_types_is_refused() -> None:
    class AsyncTypes:
        @hookimpl
        async def livebridge_source_types(self) -> list[type[Source]]:
            return []

    pm = get_plugin_manager([AsyncTypes()], load_entry_points=False)
    with pytest.raises(PluginError, match="must be a plain def"):
        collect_source_types(pm)


def test_a_plugin_installed_by_entry_point_may_also_be_passed() -> None:
    pm = get_plugin_manager([livebridge_form])
    assert [name for name, p in pm.list_name_plugin() if p is livebridge_form] == ["form"]
    assert "form" in collect_source_types(pm)


@pytest.fixture
def broken_plugin(tmp_path: Path) -> dict[str, str]:
    """An installed distribution whose ``livebridge`` entry point cannot be imported."""
    site = tmp_path / "site"
    dist = site / "livebridge_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: livebridge-broken\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text("[livebridge]\nbroken = livebridge_broken\n")
    (site / "livebridge_broken.py").write_text("import no_such_module_anywhere\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livebridge", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


@pytest.mark.slow
async def test_a_broken_plugin_is_one_line_and_spares_store_commands(
        broken_plugin: dict[str, str], tmp_path: Path) -> None:
    store = create_store(StoreConfig(url=f"sqlite:///{tmp_path / 'bridge.db'}"))
    await store.open()
    await store.close()
    config = tmp_path / "bridge.yaml"
    config.write_text(textwrap.dedent(f"""\
        store: {{url: "sqlite:///{tmp_path / 'bridge.db'}"}}
        sources:
          - {{type: form}}
          - {{type: slack, signing_secret: "${{UNSET_SLACK_SECRET}}", bot_token: "${{UNSET_BOT}}"}}
        """))
    env = {k: v for k, v in broken_plugin.items() if not k.startswith("UNSET_")}
    for command in (["check"], ["run"], ["plugins"]):
        refused = run_cli(env, *command, *(["-c", str(config)] if command != ["plugins"] else []))
        assert refused.returncode == 1, refused
        assert refused.stderr.strip().splitlines() == [
            "livebridge: plugin entry point 'broken' (livebridge_broken) cannot be loaded: "
            "ModuleNotFoundError: No module named 'no_such_module_anywhere'"]
    for command in (["status"], ["dlq", "list"]):
        works = run_cli(env, *command, "-c", str(config))
        assert works.returncode == 0, works.stderr
    assert "outbox_depth: 0" in run_cli(env, "status", "-c", str(config)).stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_make_bridge_in_both_asyncio_modes(tmp_path: Path, mode: str) -> None:
    """A plugin author's test file, run by pytest as they would, with an installed plugin."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = "
                                         "function\n")
    (tmp_path / "test_author.py").write_text(textwrap.dedent("""\
        import livebridge_form
        import pytest

        @pytest.mark.asyncio
        async def test_with_mark(make_bridge):
            bridge = await make_bridge({"sources": [{"type": "form"}]},
                                       plugins=[livebridge_form])
            assert (await bridge.client.get("/form")).status == 200

        async def test_without_mark(make_bridge):  # auto mode only
            bridge = await make_bridge({"sources": [{"type": "form"}]})
            assert (await bridge.client.get("/form")).status == 200
        """))
    tests = "test_author.py" if mode == "auto" else "test_author.py::test_with_mark"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "asyncio", f"--asyncio-mode={mode}",
         "-p", "no:cacheprovider", tests],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert ("2 passed" if mode == "auto" else "1 passed") in run.stdout


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
