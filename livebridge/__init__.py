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
from livebridge.forms import BodyError, FormPart, read_body, read_multipart, text_codec
from livebridge.hookspecs import hookimpl
from livebridge.markup import TextStyle, markdown_to_html, markdown_to_text, render
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
    "TextStyle",
    "Throttled",
    "Unavailable",
    "hookimpl",
    "markdown_to_html",
    "markdown_to_text",
    "read_body",
    "read_multipart",
    "render",
    "text_codec",
]
__version__ = "0.1.0"
