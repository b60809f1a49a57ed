"""Checking the contact fields a source hands to Livedesk, which refuses a malformed email
and any phone number not in E.164."""

from __future__ import annotations

import re

__all__ = ["normalize_phone", "valid_email"]

_NOT_ALLOWED = "[^@\\s\"(),:;<>\\[\\]\\\\"
_EMAIL = re.compile(rf"{_NOT_ALLOWED}]+@(?:{_NOT_ALLOWED}.]+\.)+{_NOT_ALLOWED}.]{{2,}}")
_PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"\+[1-9]\d{6,14}")


def valid_email(value: str) -> bool:
    """A plausible ``local@domain.tld`` address (what a contact form can check)."""
    local = value.rsplit("@", 1)[0]
    return (len(value) <= 254 and len(local) <= 64 and ".." not in value
            and not local.startswith(".") and not local.endswith(".")
            and _EMAIL.fullmatch(value) is not None)


def normalize_phone(value: str) -> str | None:
    """The E.164 form (``+442079460000``) of an international number, or ``None``."""
    digits = _PHONE_PUNCTUATION.sub("", value)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits if _E164.fullmatch(digits) else None
