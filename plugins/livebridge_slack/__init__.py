"""Slack source plugin for livebridge: ``type: slack`` (see ``livebridge_slack.source``)."""

from __future__ import annotations

from livebridge import Source, hookimpl
from livebridge_slack.source import SlackSettings, SlackSource

__all__ = ["SlackSettings", "SlackSource", "livebridge_source_types"]


@hookimpl
def livebridge_source_types() -> list[type[Source]]:
    """The ``slack`` source type."""
    return [SlackSource]
