"""Fixtures for the web-form source tests: a bridge with one ``type: form`` source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import bridge_helpers
import pytest

from livebridge import InboundMessage, StoreUnavailable, hookimpl
from livebridge._livedesk.emulator import Emulator
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


class _StoreDown:
    """A plugin that fails every message as the store does when Redis is down."""

    @hookimpl
    def livebridge_inbound_message(self, message: InboundMessage) -> None:
        raise StoreUnavailable("redis is down")


@pytest.fixture
def store_down() -> object:
    """A plugin (``start_form(plugins=(store_down,))``): the store is unavailable."""
    return _StoreDown()


@pytest.fixture
def nothing_stored() -> Callable[[BridgeHarness], Awaitable[None]]:
    """Assert that nothing reached the outbox or Livedesk."""
    return bridge_helpers.nothing_stored
