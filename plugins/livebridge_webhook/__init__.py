"""No-code webhook source plugin for livebridge: ``type: webhook`` (see the README)."""

from __future__ import annotations

from livebridge import Source, hookimpl
from livebridge_webhook.settings import WebhookSettings
from livebridge_webhook.source import WebhookSource

__all__ = ["WebhookSettings", "WebhookSource", "livebridge_source_types"]


@hookimpl
def livebridge_source_types() -> list[type[Source]]:
    """The ``webhook`` source type."""
    return [WebhookSource]
