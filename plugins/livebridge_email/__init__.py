"""The email source plugin: ``type: email`` with ``provider`` mailgun, sendgrid, postmark,
ses or mime; agent replies go back by SMTP (the ``smtp:`` section)."""

from livebridge import Source, hookimpl
from livebridge_email.source import EmailSettings, EmailSource

__all__ = ["EmailSettings", "EmailSource", "livebridge_source_types"]


@hookimpl
def livebridge_source_types() -> list[type[Source]]:
    """The ``email`` source type."""
    return [EmailSource]
