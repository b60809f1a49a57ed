"""livebridge: routes web-form, Slack and email conversations into EngageLab Livedesk.

The public API for plugin authors is what this module exports (``__all__``), together with
``livebridge.testing`` (the pytest plugin). Every other module is internal and may change.
"""

from livebridge.contacts import normalize_phone, valid_email
from livebridge.exceptions import (
    Busy,
    ConfigError,
    LivebridgeError,
    Overloaded,
    Permanent,
    PluginError,
    Refused,
    ReplyNotSupported,
    Retryable,
    StoreUnavailable,
    Throttled,
    Unavailable,
)
from livebridge.files import FileError, fetch_file
from livebridge.forms import (
    BodyError,
    FormPart,
    read_body,
    read_multipart,
    split_multipart,
    text_codec,
)
from livebridge.hookspecs import hookimpl
from livebridge.http import parse_retry_after
from livebridge.mailer import display_name, mailbox
from livebridge.markup import TextStyle, markdown_to_html, markdown_to_text, render
from livebridge.metrics import Metrics
from livebridge.model import Attachment, InboundMessage, OutboundReply, Sender
from livebridge.signing import equal, hmac_sha256_hex, timestamp_problem
from livebridge.source import (
    AcceptResult,
    Bridge,
    Duration,
    PluginState,
    Source,
    SourceSettings,
    required_secret,
)

__all__ = [
    "AcceptResult",
    "Attachment",
    "BodyError",
    "Bridge",
    "Busy",
    "ConfigError",
    "Duration",
    "FileError",
    "FormPart",
    "InboundMessage",
    "LivebridgeError",
    "Metrics",
    "OutboundReply",
    "Overloaded",
    "Permanent",
    "PluginError",
    "PluginState",
    "Refused",
    "ReplyNotSupported",
    "Retryable",
    "Sender",
    "Source",
    "SourceSettings",
    "StoreUnavailable",
    "TextStyle",
    "Throttled",
    "Unavailable",
    "display_name",
    "equal",
    "fetch_file",
    "hmac_sha256_hex",
    "hookimpl",
    "mailbox",
    "markdown_to_html",
    "markdown_to_text",
    "normalize_phone",
    "parse_retry_after",
    "read_body",
    "read_multipart",
    "render",
    "required_secret",
    "split_multipart",
    "text_codec",
    "timestamp_problem",
    "valid_email",
]
__version__ = "0.1.0"
