"""livebridge: routes web-form, Slack and email conversations into EngageLab Livedesk.

The public API for plugin authors is what this module exports.
"""

from livebridge.exceptions import (
    ConfigError,
    LivebridgeError,
    Overloaded,
    Permanent,
    ReplyNotSupported,
    Retryable,
    StoreUnavailable,
    Throttled,
    Unavailable,
)
from livebridge.forms import BodyError, FormPart, read_body, read_multipart
from livebridge.hookspecs import hookimpl
from livebridge.model import Attachment, InboundMessage, OutboundReply, Sender
from livebridge.source import AcceptResult, Bridge, PluginState, Source, SourceSettings

__all__ = [
    "AcceptResult",
    "Attachment",
    "BodyError",
    "Bridge",
    "ConfigError",
    "FormPart",
    "InboundMessage",
    "LivebridgeError",
    "OutboundReply",
    "Overloaded",
    "Permanent",
    "PluginState",
    "ReplyNotSupported",
    "Retryable",
    "Sender",
    "Source",
    "SourceSettings",
    "StoreUnavailable",
    "Throttled",
    "Unavailable",
    "hookimpl",
    "read_body",
    "read_multipart",
]
__version__ = "0.1.0"
