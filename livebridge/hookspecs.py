"""The livebridge plugin hooks.

A plugin is a module or object with functions named like these hooks and decorated with
``livebridge.hookimpl``; it registers through the ``livebridge`` entry-point group (the
built-in sources do exactly that). Hooks are called with keyword arguments, so an
implementation may accept any subset of them. Any hook may be ``async def``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from livebridge.model import InboundMessage, OutboundReply
    from livebridge.source import Bridge, Source

hookspec = pluggy.HookspecMarker("livebridge")
hookimpl = pluggy.HookimplMarker("livebridge")


# --- registration -------------------------------------------------------------------------


@hookspec
def livebridge_source_types() -> list[type[Source]]:
    """Return the source classes this plugin provides (each has a unique ``type_name``)."""
    raise NotImplementedError


# --- the message path -----------------------------------------------------------------------


@hookspec
def livebridge_inbound_message(
    message: InboundMessage, source: Source
) -> InboundMessage | bool | None:
    """Inspect a normalized message before it is stored.

    Called in turn for each plugin: change ``message`` in place or return a replacement to
    enrich it, return ``False`` to drop it (the provider still gets its 2xx), or return
    ``None`` to let it pass. Later plugins see what earlier ones returned.
    """
    raise NotImplementedError


@hookspec
def livebridge_message_delivered(
    message: InboundMessage, contact_id: int, conversation_id: int, livedesk_message_id: int
) -> None:
    """Learn that ``message`` is now in Livedesk (called after each successful delivery)."""
    raise NotImplementedError


@hookspec
def livebridge_outbound_reply(reply: OutboundReply) -> OutboundReply | bool | None:
    """Inspect an agent's reply before it is queued for its source; same rules as inbound."""
    raise NotImplementedError


@hookspec
def livebridge_reply_sent(reply: OutboundReply) -> None:
    """Learn that an agent's reply reached the customer through its source."""
    raise NotImplementedError


# --- lifecycle ------------------------------------------------------------------------------


@hookspec
async def livebridge_startup(bridge: Bridge) -> None:
    """The daemon has opened its store and Livedesk client; sources are about to start."""
    raise NotImplementedError


@hookspec
async def livebridge_shutdown(bridge: Bridge) -> None:
    """The daemon is stopping; release what ``livebridge_startup`` acquired."""
    raise NotImplementedError
