"""Fixtures for the web-form source tests: a bridge with one ``type: form`` source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livebridge.livedesk.emulator import Emulator
from livebridge.testing import BridgeHarness

StartForm = Callable[..., Awaitable[BridgeHarness]]


@pytest.fixture
def start_form(make_bridge: Any) -> StartForm:
    """``await start_form(top_level_config, **form_settings, plugins=[...])``."""

    async def start(config: dict[str, Any] | None = None, *, plugins: tuple[object, ...] = (),
                    emulator: Emulator | None = None, **settings: Any) -> BridgeHarness:
        raw = {**(config or {}), "sources": [{"type": "form", **settings}]}
        bridge: BridgeHarness = await make_bridge(raw, plugins=plugins, emulator=emulator)
        return bridge

    return start


@pytest.fixture
def nothing_stored() -> Callable[[BridgeHarness], Awaitable[None]]:
    """Assert that nothing reached the outbox or Livedesk."""

    async def check(bridge: BridgeHarness) -> None:
        await bridge.wait_idle()
        stats = await bridge.daemon.store.stats()
        assert (stats.depth, stats.dead_letters) == (0, 0)
        state = bridge.emulator.state
        assert not state.messages and not state.contacts and not state.conversations

    return check
