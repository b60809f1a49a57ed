"""The web-form source (``type: form``): a contact form whose posts become Livedesk
conversations, one contact per customer (by email, else phone)."""

from __future__ import annotations

from livebridge import Source, hookimpl
from livebridge_form.settings import FieldNames, FormSettings
from livebridge_form.source import FormSource

__all__ = ["FieldNames", "FormSettings", "FormSource", "livebridge_source_types"]


@hookimpl
def livebridge_source_types() -> list[type[Source]]:
    """The ``form`` source type."""
    return [FormSource]
