"""What tests of every source check in the emulator: the customers' messages delivered, or
nothing stored. A module, not ``conftest.py``: tests import what they use (``tests/`` is on
``sys.path`` by its ``conftest.py``)."""

from __future__ import annotations

from typing import Any

from smtp_helpers import smtp_section

from livebridge import InboundMessage, hookimpl
from livebridge._store.base import DeadLetter
from livebridge.testing import BridgeHarness


class DropAll:
    """A plugin whose inbound hook drops every message."""

    @hookimpl
    def livebridge_inbound_message(self, message: InboundMessage) -> bool:
        return False


def dropped(bridge: BridgeHarness, source: str) -> dict[str, float]:
    """``livebridge_messages_dropped_total`` of ``source``, by reason."""
    return {sample.labels["reason"]: sample.value
            for metric in bridge.daemon.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "livebridge_messages_dropped_total"
            and sample.labels.get("source") == source}


def incoming(bridge: BridgeHarness) -> list[dict[str, Any]]:
    """Customer messages in the emulator (not agent replies)."""
    return [m for m in bridge.emulator.state.messages.values() if m["message_type"] == 0]


async def delivered(bridge: BridgeHarness, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` customer messages are in the emulator and the outbox is empty;
    return them (exactly ``count``)."""
    await bridge.wait_for(lambda: len(incoming(bridge)) >= count)
    await bridge.wait_idle()
    found = incoming(bridge)
    assert len(found) == count
    return found


async def dead_letter(bridge: BridgeHarness) -> DeadLetter:
    """Wait for the one dead letter; return it."""

    async def dead() -> bool:
        return (await bridge.daemon.store.stats()).dead_letters == 1

    await bridge.wait_for(dead)
    [letter] = await bridge.daemon.store.dead_letters()
    return letter


async def nothing_stored(bridge: BridgeHarness) -> None:
    """Nothing reached the outbox or Livedesk."""
    await bridge.wait_idle()
    stats = await bridge.daemon.store.stats()
    assert (stats.depth, stats.dead_letters) == (0, 0)
    state = bridge.emulator.state
    assert not state.messages and not state.contacts and not state.conversations


async def form_customer_wrote(make_bridge: Any, smtp_port: int, **config: Any
                              ) -> tuple[BridgeHarness, int]:
    """A bridge with a web form (replies by mail to ``smtp_port``) where one customer wrote
    and the message is delivered: the bridge and its Livedesk conversation. ``config``: more
    top-level sections."""
    bridge: BridgeHarness = await make_bridge({
        "sources": [{"type": "form", "title": "Acme"}], **config,
        "smtp": smtp_section(smtp_port)})
    resp = await bridge.client.post("/form", headers={"Accept": "application/json"},
                                    data={"email": "ann@example.com", "message": "Invoice?"})
    assert resp.status == 200
    state = bridge.emulator.state
    await bridge.wait_for(lambda: len(state.messages) == 1)
    return bridge, int(next(iter(state.messages.values()))["conversation_id"])
