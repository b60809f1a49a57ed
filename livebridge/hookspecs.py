"""The livebridge plugin hooks.

A plugin is a module or object with functions named like these hooks and decorated with
``livebridge.hookimpl``; it registers through the ``livebridge`` entry-point group (the
built-in sources do exactly that). Hooks are called with keyword arguments, so an
implementation may accept any subset of them.

How hooks are called (``livebridge.plugins``):

- **chain** hooks (``livebridge_inbound_message``, ``livebridge_outbound_reply``): each
  implementation in turn, the last registered first, each awaited before the next; it returns
  ``None`` to pass the value on (changes made in place count), a replacement for the next ones
  to see, or ``False`` to drop it (the rest are not called). An error propagates: the
  request that brought the message or reply is answered 5xx, so its sender retries.
- **observe** hooks (``livebridge_message_delivered``, ``livebridge_reply_sent``,
  ``livebridge_shutdown``): every implementation in turn; return values are ignored and an
  error is logged, never undoing what happened.
- ``livebridge_startup`` is called like an observe hook, but an error stops the daemon.
- ``livebridge_source_types`` is called once at start-up through pluggy and must be a plain
  ``def``; every other hook may be ``async def``.

Hook wrappers (``wrapper=True``, ``hookwrapper=True``) are refused at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from livebridge.model import InboundMessage, OutboundReply
    from livebridge.source import Bridge, Source

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("livebridge")
hookimpl = pluggy.HookimplMarker("livebridge")


# -------------------------------------------------------------------------
# Start-up: loading source types, then the daemon's resources
# -------------------------------------------------------------------------


@hookspec
def livebridge_source_types() -> list[type[Source]]:
    """Return the source classes this plugin provides (each has a unique ``type_name``)."""
    raise NotImplementedError


@hookspec
async def livebridge_startup(bridge: Bridge) -> None:
    """The daemon has opened its store and Livedesk client; sources are about to start."""
    raise NotImplementedError


# -------------------------------------------------------------------------
# Inbound messages: from a source to Livedesk
# -------------------------------------------------------------------------


@hookspec
def livebridge_inbound_message(
    message: InboundMessage, source: Source
) -> InboundMessage | bool | None:
    """(chain) Inspect a normalized message before it is stored: change it in place or return
    a replacement to enrich it, ``False`` to drop it (the provider still gets its 2xx), or
    ``None`` to let it pass."""
    raise NotImplementedError


@hookspec
def livebridge_message_delivered(
    message: InboundMessage, contact_id: int, conversation_id: int, livedesk_message_id: int
) -> None:
    """(observe) ``message`` is now in Livedesk (called after each successful delivery)."""
    raise NotImplementedError


# -------------------------------------------------------------------------
# Agent replies: from Livedesk back through the source
# -------------------------------------------------------------------------


@hookspec
def livebridge_outbound_reply(reply: OutboundReply) -> OutboundReply | bool | None:
    """(chain) Inspect an agent's reply before it is queued for its source; same rules as
    ``livebridge_inbound_message``."""
    raise NotImplementedError


@hookspec
def livebridge_reply_sent(reply: OutboundReply) -> None:
    """(observe) An agent's reply reached the customer through its source."""
    raise NotImplementedError


# -------------------------------------------------------------------------
# Shutdown
# -------------------------------------------------------------------------


@hookspec
async def livebridge_shutdown(bridge: Bridge) -> None:
    """(observe) The daemon is stopping; release what ``livebridge_startup`` acquired."""
    raise NotImplementedError
