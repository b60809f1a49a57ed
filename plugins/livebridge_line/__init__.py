"""LINE source plugin for livebridge: ``type: line`` (see ``livebridge_line.source``)."""

from __future__ import annotations

from livebridge import Source, hookimpl
from livebridge_line.source import LineSettings, LineSource

__all__ = ["LineSettings", "LineSource", "livebridge_source_types"]


@hookimpl
def livebridge_source_types() -> list[type[Source]]:
    """The ``line`` source type."""
    return [LineSource]
